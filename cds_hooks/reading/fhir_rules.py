"""The FHIR rules every reading shares: which statuses are evidence, whose resource it is, when.

One place for them, so the vital signs, the medications, the neurologic assessments and the
infection signs are judged alike (clinical-reference.md section 2). The reader (``reader.py``)
applies them; nothing downstream of the record sees a raw resource again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from cds_hooks.reading.fhir_time import parse_instant

OBSERVATION_EVIDENCE_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
"""clinical-reference.md section 2; ``entered-in-error``, ``cancelled`` and others are not evidence."""

ADMINISTRATION_EVIDENCE_STATUSES = frozenset({"in-progress", "completed", "stopped", "on-hold"})
"""``stopped`` counts for the period it ran; ``on-hold`` is not in effect while on hold."""

PROCEDURE_EVIDENCE_STATUSES = frozenset({"in-progress", "completed", "stopped", "on-hold"})

QUESTIONNAIRE_RESPONSE_EVIDENCE_STATUSES = frozenset({"completed", "amended"})
"""An ``in-progress`` or ``stopped`` form is not a score; ``entered-in-error`` is not evidence."""

ACTIVE_CONDITION_STATUSES = frozenset({"active", "recurrence", "relapse"})
REFUTED_VERIFICATION = frozenset({"refuted", "entered-in-error"})


class SourcedResource(NamedTuple):
    """A resource with the reference evidence will cite (``Type/id``, or its fullUrl).

    A named tuple (immutable like the frozen dataclass it was): one is made for every resource
    of every call, and a frozen dataclass's ``__init__`` costs several times more (issue 11).
    """

    resource: Mapping[str, Any]
    reference: str


def reference_of(resource: Mapping[str, Any], full_url: str | None = None) -> str | None:
    kind = resource.get("resourceType")
    rid = resource.get("id")
    if isinstance(kind, str) and isinstance(rid, str) and rid:
        return f"{kind}/{rid}"
    return full_url if isinstance(full_url, str) and full_url else None


def codings(concept: object) -> list[Any]:
    """A CodeableConcept's ``coding`` list, or empty when absent or malformed."""
    if isinstance(concept, dict):
        found = concept.get("coding")
        if isinstance(found, list):
            return found
    return []


def text_candidates(concept: object) -> list[str]:
    """A CodeableConcept's text, then each coding's display: what a name fallback may read."""
    texts: list[str] = []
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str):
            texts.append(concept["text"])
        for coding in codings(concept):
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                texts.append(coding["display"])
    return texts


def text_field(value: object) -> str | None:
    """A string field, or None when the field is absent or of the wrong JSON type."""
    return value if isinstance(value, str) else None


def status_codes(concept: object) -> list[str | None]:
    """The codes of a status CodeableConcept (``clinicalStatus``, ``verificationStatus``)."""
    return [text_field(c.get("code")) for c in codings(concept) if isinstance(c, dict)]


def subject_reference(resource: Mapping[str, Any]) -> str | None:
    """``subject.reference`` (or ``patient.reference``), when the resource names its patient."""
    subject = resource.get("subject") or resource.get("patient")
    if isinstance(subject, dict) and isinstance(subject.get("reference"), str):
        return str(subject["reference"]).rstrip("/")
    return None


def belongs_to_patient(resource: Mapping[str, Any], patient_id: str | None, *, require_subject: bool = False) -> bool:
    """False when the resource names another patient: two patients' data must never mix.

    A resource without a subject came from a search that was already by patient; assessments
    that stand alone (``require_subject``) must name their patient.
    """
    return PatientCheck(patient_id)(resource, require_subject=require_subject)


class PatientCheck:
    """:func:`belongs_to_patient` for one patient, its two reference forms built once (the
    reader asks it for every resource of a call)."""

    __slots__ = ("_exact", "_local", "_patient_id", "_suffix")

    def __init__(self, patient_id: str | None) -> None:
        self._patient_id = patient_id
        self._local = f"Patient/{patient_id}"
        self._suffix = f"/Patient/{patient_id}"
        # ``subject.reference`` exactly as it comes when it is this patient (the common case).
        self._exact = self._local if patient_id is not None and not self._local.endswith("/") else None

    def __call__(self, resource: Mapping[str, Any], *, require_subject: bool = False) -> bool:
        if self._patient_id is None:
            return True
        subject = resource.get("subject")
        if self._exact is not None and isinstance(subject, dict):
            given = subject.get("reference")
            if isinstance(given, str) and given == self._exact:
                return True  # what the general rule below says of it, without the string work
        ref = subject_reference(resource)
        if ref is None:
            return not require_subject
        return ref == self._local or ref.endswith(self._suffix)


def observation_time(resource: Mapping[str, Any]) -> datetime | str:
    """When an Observation was made, or why it cannot be placed in time.

    A period that has ended is read at its end (the latest value it vouches for).
    """
    if "effectiveDateTime" in resource:
        return parse_instant(resource["effectiveDateTime"])
    if "effectiveInstant" in resource:
        return parse_instant(resource["effectiveInstant"])
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        return parse_instant(period.get("end") or period.get("start"))
    return "no effective time"
