"""Prefetch templates, built from the mappings, and the classification of what a client sent.

CDS Hooks 2.0 prefetch semantics: a key that is **absent** must be fetched from ``fhirServer``;
a key that is **null** means the client has no data (not re-queried); a value that is (or holds)
an OperationOutcome means the data are unavailable and is re-fetched when a server is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from cds_hooks.errors import BadRequest
from cds_hooks.reading.bundles import flatten
from cds_hooks.reading.labs import LabTable
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.record import DataSource
from cds_hooks.reading.terminology import ConceptKind, Terminology


@dataclass(frozen=True)
class PrefetchKey:
    name: str
    template: str
    source: DataSource
    required: bool
    """Without it the grade cannot be computed at all (412 when it cannot be had)."""
    optional: bool = False
    """Absent with no fhirServer: the data are unavailable (said on the result), not a 412. For
    keys added after clients were written (ICANS), so their requests keep working."""


VITAL_SIGNS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


def _codes(pairs: list[tuple[str, str]]) -> str:
    return ",".join(f"{system}|{code}" for system, code in pairs)


def build_prefetch(terminology: Terminology) -> tuple[PrefetchKey, ...]:
    """The templates, narrowed by code where that is valid FHIR search.

    Device Observations are found by their coded value (``value-concept``), since sites use
    different Observation codes for them, and vital-sign rows by category, which also brings
    device and room-air rows charted with a local code and a text value. The three Observation
    searches overlap; resources are de-duplicated by reference. Medications are not narrowed,
    because contained and text-only medications cannot be searched by code.
    """
    observation_codes = terminology.codes_for(*terminology.concepts_of_kind(ConceptKind.OBSERVATION))
    support_codes = terminology.codes_for(*terminology.concepts_of_kind(ConceptKind.OXYGEN_SUPPORT))
    condition_codes = terminology.codes_for(*terminology.concepts_of_kind(ConceptKind.CONDITION))
    patient = "{{context.patientId}}"
    return (
        PrefetchKey("patient", f"Patient/{patient}", DataSource.PATIENT, required=True),
        PrefetchKey(
            "observations",
            f"Observation?patient={patient}&code={_codes(observation_codes)}",
            DataSource.OBSERVATIONS,
            True,
        ),
        PrefetchKey(
            "oxygenDevices",
            f"Observation?patient={patient}&value-concept={_codes(support_codes)}",
            DataSource.OBSERVATIONS,
            True,
        ),
        PrefetchKey(
            "vitalSigns",
            f"Observation?patient={patient}&category={VITAL_SIGNS}",
            DataSource.OBSERVATIONS,
            True,
        ),
        PrefetchKey(
            "medicationAdministrations", f"MedicationAdministration?patient={patient}", DataSource.MEDICATIONS, True
        ),
        PrefetchKey(
            "procedures", f"Procedure?patient={patient}&code={_codes(support_codes)}", DataSource.PROCEDURES, False
        ),
        PrefetchKey(
            "conditions", f"Condition?patient={patient}&code={_codes(condition_codes)}", DataSource.CONDITIONS, False
        ),
    )


def build_lab_prefetch(labs: LabTable, terminology: Terminology | None = None) -> tuple[PrefetchKey, ...]:
    """Laboratory values, asking only for the codes ``mappings/labs.yaml`` maps, and the blood
    culture codes of the terminology (a positive culture keeps sepsis in view on the CRS card).
    Optional, as for ICANS: a client that predates it gets its CRS card as before and no lab
    score. (CDS Hooks 2.0 has no date token; a 3.0 client could narrow by date.)"""
    patient = "{{context.patientId}}"
    cultures = terminology.codes_for(*terminology.concepts_of_kind(ConceptKind.LABORATORY)) if terminology else []
    return (
        PrefetchKey(
            "labResults",
            f"Observation?patient={patient}&code={_codes([*labs.codes(), *cultures])}",
            DataSource.LAB_RESULTS,
            False,
            optional=True,
        ),
    )


def build_icans_prefetch(terminology: Terminology) -> tuple[PrefetchKey, ...]:
    """ICANS: Observations by the mapped neurologic codes, and the patient's QuestionnaireResponses
    (the ICE form is recognised by its canonical or item linkIds, which FHIR search cannot narrow
    portably). Both optional: a client that predates ICANS gets its CRS card as before."""
    patient = "{{context.patientId}}"
    neuro_codes = terminology.codes_for(*terminology.concepts_of_kind(ConceptKind.NEUROLOGIC))
    return (
        PrefetchKey(
            "icansAssessments",
            f"Observation?patient={patient}&code={_codes(neuro_codes)}",
            DataSource.ICANS,
            False,
            optional=True,
        ),
        PrefetchKey(
            "iceQuestionnaires",
            f"QuestionnaireResponse?patient={patient}",
            DataSource.ICANS,
            False,
            optional=True,
        ),
    )


def render(template: str, context: Mapping[str, object]) -> str:
    """Substitute ``{{context.x}}`` tokens, URL-encoded (ids were validated before)."""
    out = template
    for key, value in context.items():
        if isinstance(value, str):
            out = out.replace("{{context." + key + "}}", quote(value, safe=""))
    return out


@dataclass
class PrefetchState:
    resources: list[SourcedResource] = field(default_factory=list)
    to_fetch: list[PrefetchKey] = field(default_factory=list)
    unavailable: dict[DataSource, str] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)


def classify(prefetch: Mapping[str, object] | None, keys: tuple[PrefetchKey, ...]) -> PrefetchState:
    """Sort each key into present (resources), null (nothing), unavailable or absent (fetch)."""
    state = PrefetchState()
    given = prefetch or {}
    seen: set[str] = set()  # overlapping searches: each resource is taken once, from the first key
    for key in keys:
        if key.name not in given:
            state.to_fetch.append(key)
            continue
        value = given[key.name]
        if value is None:
            continue
        if not isinstance(value, dict):
            raise BadRequest(f"prefetch '{key.name}' must be a FHIR resource, a Bundle or null")
        flat = flatten(value, seen)
        state.resources.extend(flat.resources)
        if flat.malformed:
            state.malformed[key.name] = flat.malformed
        if flat.outcome is not None:
            state.unavailable[key.source] = f"prefetch '{key.name}': {flat.outcome}"
            state.to_fetch.append(key)
    return state


ORDER_ONLY_SOURCES = frozenset({DataSource.LABORATORY, DataSource.ACTIVE_CONDITIONS})
"""Data only the order checks read: their absence never changes a grade."""


def build_order_prefetch(terminology: Terminology) -> tuple[PrefetchKey, ...]:
    """The patient-view templates plus what the order checks need besides.

    Active Conditions are searched by clinical status, not by code, because infection is also
    recognised by text; blood cultures by the laboratory codes in the mappings.
    """
    patient = "{{context.patientId}}"
    culture_codes = terminology.codes_for(*terminology.concepts_of_kind(ConceptKind.LABORATORY))
    extra = [
        PrefetchKey(
            "activeConditions",
            f"Condition?patient={patient}&clinical-status=active",
            DataSource.ACTIVE_CONDITIONS,
            False,
        )
    ]
    if culture_codes:
        extra.append(
            PrefetchKey(
                "bloodCultures",
                f"Observation?patient={patient}&code={_codes(culture_codes)}",
                DataSource.LABORATORY,
                False,
            )
        )
    return (*build_prefetch(terminology), *extra)
