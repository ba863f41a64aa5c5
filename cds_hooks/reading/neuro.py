"""ICANS findings: FHIR Observations and ICE QuestionnaireResponses -> typed neurologic findings.

Kept apart from ``extract.py`` (CRS) because ICANS reads other resources and other codes, and a
site maps them on its own schedule: no LOINC code exists for the ICE or CAPD score, so every
assessment code comes from ``mappings/icans.yaml`` (kind ``neurologic``) and the ICE form's item
linkIds from ``mappings/ice-questionnaire.yaml``. The status rules mirror the CRS extractor: an
entered-in-error, cancelled or unfinished record is reported as not evidence, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.reading.reader import OBSERVATION_EVIDENCE_STATUSES, SourcedResource
from cds_hooks.reading.record import NotEvidence
from cds_hooks.reading.terminology import BUILTIN_MAPPINGS_DIR, ConceptKind, MappingError, Terminology

QUESTIONNAIRE_RESPONSE_EVIDENCE_STATUSES = frozenset({"completed", "amended"})
"""An ``in-progress`` or ``stopped`` form is not a score; ``entered-in-error`` is not evidence."""

ICE_QUESTIONNAIRE_FILE = BUILTIN_MAPPINGS_DIR / "ice-questionnaire.yaml"

ICE_MAX_POINTS = 10
"""ICE: orientation 4, naming 3, commands 1, writing 1, attention 1 (Lee 2019)."""
CAPD_MAX_POINTS = 32
"""CAPD: 8 items scored 0-4."""


class Domain(StrEnum):
    """The ASTCT ICANS domains, plus the Glasgow coma score shown as support only."""

    ICE = "ice_score"
    CAPD = "capd_score"
    CONSCIOUSNESS = "level_of_consciousness"
    SEIZURE = "seizure"
    MOTOR = "motor_weakness"
    EDEMA = "cerebral_edema"
    GCS = "glasgow_coma_score"


ANSWER_DOMAIN: Mapping[str, Domain] = {
    **dict.fromkeys(
        (
            "loc_alert",
            "loc_awakens_spontaneously",
            "loc_awakens_to_voice",
            "loc_awakens_to_tactile",
            "loc_unarousable",
        ),
        Domain.CONSCIOUSNESS,
    ),
    **dict.fromkeys(
        (
            "seizure_none",
            "seizure_rapidly_resolving",
            "seizure_nonconvulsive_resolved",
            "seizure_prolonged",
            "seizure_repetitive",
        ),
        Domain.SEIZURE,
    ),
    **dict.fromkeys(("motor_none", "motor_deep_focal_weakness"), Domain.MOTOR),
    **dict.fromkeys(
        (
            "edema_none",
            "edema_focal",
            "edema_diffuse",
            "posturing",
            "cranial_nerve_vi_palsy",
            "papilledema",
            "cushings_triad",
        ),
        Domain.EDEMA,
    ),
}
"""Which domain each coded answer belongs to (an answer charted under another domain is refused)."""

SCORE_RANGES: Mapping[Domain, tuple[float, float]] = {
    Domain.ICE: (0, ICE_MAX_POINTS),
    Domain.CAPD: (0, CAPD_MAX_POINTS),
    Domain.GCS: (3, 15),
}


@dataclass(frozen=True, slots=True)
class NeuroFinding:
    """One charted ICANS fact: a score, a coded answer, or a yes/no for a domain."""

    domain: Domain
    time: datetime
    reference: str
    score: float | None = None
    answer: str | None = None
    """The answer concept id (``loc_awakens_to_voice``), for coded values."""
    present: bool | None = None
    """valueBoolean: the finding is present (type unknown) or absent."""
    display: str | None = None


@dataclass
class IcansFindings:
    """Everything ICANS grading reads for one patient, sorted by time."""

    birth_date: date | None = None
    findings: list[NeuroFinding] = field(default_factory=list)
    not_evidence: list[NotEvidence] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Data the EHR could not supply (prefetch key -> reason)."""


# -- the ICE questionnaire configuration -------------------------------------------------------


class _IceItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    link_id: str = Field(min_length=1)
    domain: Literal["orientation", "naming", "commands", "writing", "attention"]
    points: int = Field(ge=1, le=4)


class _IceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["crs-cds-ice-questionnaire/1"] = Field(alias="schema")
    name: str
    version: str
    questionnaires: tuple[str, ...] = ()
    items: tuple[_IceItem, ...]

    @model_validator(mode="after")
    def _ten_points(self) -> _IceFile:
        total = sum(item.points for item in self.items)
        if total != ICE_MAX_POINTS:
            raise ValueError(f"ICE items must add up to {ICE_MAX_POINTS} points, not {total}")
        ids = [item.link_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("ICE item linkIds must be unique")
        return self


@dataclass(frozen=True)
class IceQuestionnaire:
    """Which QuestionnaireResponses are ICE assessments, and how many points each item is worth."""

    version: str
    questionnaires: frozenset[str]
    points: Mapping[str, int]


def load_ice_questionnaire(path: Path = ICE_QUESTIONNAIRE_FILE) -> IceQuestionnaire:
    """Load and check the ICE item map; a bad file stops start-up (no silent default)."""
    try:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise MappingError(f"cannot read ICE questionnaire file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"ICE questionnaire file {path} is not valid YAML: {exc}") from exc
    try:
        parsed = _IceFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise MappingError(f"ICE questionnaire file {path} is invalid at {where}: {first['msg']}") from exc
    return IceQuestionnaire(
        version=parsed.version,
        questionnaires=frozenset(_canonical(q) for q in parsed.questionnaires),
        points={item.link_id: item.points for item in parsed.items},
    )


def _canonical(url: str) -> str:
    """``http://x/Questionnaire/ice|2.0`` -> ``http://x/Questionnaire/ice`` (any version)."""
    return url.split("|", 1)[0].strip().rstrip("/")


# -- extraction ---------------------------------------------------------------------------


def _codings(concept: object) -> list[Any]:
    if isinstance(concept, dict) and isinstance(concept.get("coding"), list):
        return list(concept["coding"])
    return []


def _subject_id(resource: Mapping[str, Any]) -> str | None:
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    return reference.rsplit("/", 1)[-1] if isinstance(reference, str) else None


class _Reader:
    def __init__(
        self, terminology: Terminology, questionnaire: IceQuestionnaire, patient_id: str | None, skip: Mapping[str, str]
    ) -> None:
        self._skip = skip
        self._terms = terminology
        self._form = questionnaire
        self._patient_id = patient_id
        self.out = IcansFindings()

    def _reject(self, reference: str, reason: str) -> None:
        self.out.not_evidence.append(NotEvidence(reference, reason))

    def _common(
        self, resource: Mapping[str, Any], reference: str, statuses: frozenset[str], time_field: str
    ) -> datetime | None:
        """Status, patient and time checks shared by both resource types (as the CRS extractor)."""
        if reference in self._skip:
            self._reject(reference, self._skip[reference])
            return None
        status = resource.get("status")
        if status not in statuses:
            self._reject(reference, f"{resource.get('resourceType')} status is {status!r}")
            return None
        if self._patient_id is not None and _subject_id(resource) not in (None, self._patient_id):
            self._reject(reference, "belongs to another patient")
            return None
        if self._patient_id is not None and _subject_id(resource) is None:
            self._reject(reference, "no subject")
            return None
        time = parse_instant(resource.get(time_field))
        if isinstance(time, str):
            self._reject(reference, time)
            return None
        return time

    def observation(self, resource: Mapping[str, Any], reference: str) -> None:
        match = self._terms.lookup_codings(_codings(resource.get("code")), ConceptKind.NEUROLOGIC)
        if match is None or match.concept.id not in Domain._value2member_map_:
            return  # not an ICANS assessment
        domain = Domain(match.concept.id)
        time = self._common(resource, reference, OBSERVATION_EVIDENCE_STATUSES, "effectiveDateTime")
        if time is None:
            return
        if domain in SCORE_RANGES:
            self._score(resource, reference, domain, time)
        else:
            self._coded(resource, reference, domain, time)

    def _score(self, resource: Mapping[str, Any], reference: str, domain: Domain, time: datetime) -> None:
        value: object = resource.get("valueInteger")
        quantity = resource.get("valueQuantity")
        if value is None and isinstance(quantity, dict):
            value = quantity.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._reject(reference, f"{domain.value}: no numeric value")
            return
        low, high = SCORE_RANGES[domain]
        if not low <= value <= high or value != int(value):
            self._reject(reference, f"{domain.value} {value:g} is outside {low:g}-{high:g}")
            return
        self.out.findings.append(NeuroFinding(domain, time, reference, score=float(value)))

    def _coded(self, resource: Mapping[str, Any], reference: str, domain: Domain, time: datetime) -> None:
        present = resource.get("valueBoolean")
        if isinstance(present, bool):
            if domain is Domain.CONSCIOUSNESS:
                self._reject(reference, "level of consciousness needs a coded answer, not yes/no")
                return
            self.out.findings.append(NeuroFinding(domain, time, reference, present=present))
            return
        value = resource.get("valueCodeableConcept")
        answer = self._terms.lookup_codings(_codings(value), ConceptKind.NEUROLOGIC)
        if answer is None or ANSWER_DOMAIN.get(answer.concept.id) is not domain:
            self._reject(reference, f"{domain.value}: answer not mapped to an ICANS {domain.value} answer")
            return
        display = next(
            (c.get("display") for c in _codings(value) if isinstance(c, dict) and isinstance(c.get("display"), str)),
            None,
        )
        self.out.findings.append(NeuroFinding(domain, time, reference, answer=answer.concept.id, display=display))

    def questionnaire_response(self, resource: Mapping[str, Any], reference: str) -> None:
        answers = dict(_answers(resource.get("item")))
        canonical = resource.get("questionnaire")
        is_ice = (isinstance(canonical, str) and _canonical(canonical) in self._form.questionnaires) or any(
            link in self._form.points for link in answers
        )
        if not is_ice:
            return
        time = self._common(resource, reference, QUESTIONNAIRE_RESPONSE_EVIDENCE_STATUSES, "authored")
        if time is None:
            return
        total = 0
        missing: list[str] = []
        for link_id, points in self._form.points.items():
            got = _points(answers.get(link_id), points)
            if got is None:
                missing.append(link_id)
            else:
                total += got
        if missing:
            self._reject(reference, f"ICE questionnaire incomplete (no usable answer for {', '.join(missing)})")
            return
        self.out.findings.append(NeuroFinding(Domain.ICE, time, reference, score=float(total), display="ICE form"))


def _answers(items: object) -> Iterable[tuple[str, object]]:
    """(linkId, first answer value) for every answered item, nested groups included."""
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        answers = item.get("answer")
        if isinstance(item.get("linkId"), str) and isinstance(answers, list) and answers:
            first = answers[0]
            if isinstance(first, dict):
                value = next((v for k, v in first.items() if k.startswith("value")), None)
                yield item["linkId"], value
            if isinstance(first, dict) and "item" in first:
                yield from _answers(first["item"])
        yield from _answers(item.get("item"))


def _points(value: object, points: int) -> int | None:
    """An item's points: true/false, or a number of points within 0..points."""
    if isinstance(value, bool):
        return points if value else 0
    if isinstance(value, int | float) and 0 <= value <= points and value == int(value):
        return int(value)
    return None


def extract_icans(
    resources: Sequence[SourcedResource],
    terminology: Terminology,
    questionnaire: IceQuestionnaire,
    *,
    patient_id: str | None,
    birth_date: date | None,
    skip: Mapping[str, str] | None = None,
) -> IcansFindings:
    """ICANS findings from one patient's resources; ``skip`` maps references failing R4
    validation to the reason, reported as not evidence when they are ICANS assessments."""
    reader = _Reader(terminology, questionnaire, patient_id, skip or {})
    reader.out.birth_date = birth_date
    for item in resources:
        kind = item.resource.get("resourceType")
        if kind == "Observation":
            reader.observation(item.resource, item.reference)
        elif kind == "QuestionnaireResponse":
            reader.questionnaire_response(item.resource, item.reference)
    reader.out.findings.sort(key=lambda f: f.time)
    return reader.out
