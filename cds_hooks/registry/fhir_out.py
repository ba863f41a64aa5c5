"""Each episode as FHIR R4 resources a registry pipeline can load: a Condition and an Observation.

- Condition: ICD-10-CM by worst grade (CRS D89.831-D89.834, ICANS G92.01-G92.04; "grade
  unspecified", D89.839 / G92.00, when the worst grade is indeterminate), ``onsetDateTime``,
  ``abatementDateTime`` when resolved, ``clinicalStatus`` resolved/active, ``verificationStatus``
  provisional (derived by software from the chart, not confirmed by a clinician [choice]), and
  every reference the episode rests on as ``evidence.detail``.
- Observation: the worst grade (``valueInteger``; an indeterminate grade has no value but a note
  "at least N"), ``effectivePeriod`` onset-resolution, ``focus`` on the Condition, and the
  Observations/QuestionnaireResponses it was graded from as ``derivedFrom`` (the types R4 allows
  there; administrations stay on the Condition's evidence).

Ids are name-based UUIDs of (patient, system, episode): re-running on the same export gives the same
ids, so a load is idempotent. Every resource is validated with the R4B models before it is
written. Patients without an episode, and undecided ones, produce no resource (the rows say it);
neither do the other CRS systems' rows (the ICD-10-CM grade codes follow ASTCT).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import IO, Any

import orjson

from cds_hooks.grading.episodes import CRS_SYSTEM, ICANS_SYSTEM
from cds_hooks.registry.rows import INDETERMINATE, Row

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
GRADE_SYSTEM = "https://crs-cds-hooks.example.org/CodeSystem/episode-grade"
NAMESPACE = uuid.UUID("6f1c2b7e-3a4d-5e8f-9a0b-1c2d3e4f5a6b")
DERIVED_FROM_TYPES = ("Observation/", "QuestionnaireResponse/")

_CODES: dict[str, tuple[str, str, dict[int, str], str]] = {
    # system: (name, code of unspecified grade, code by grade, grade-code display)
    CRS_SYSTEM: (
        "Cytokine release syndrome",
        "D89.839",
        {1: "D89.831", 2: "D89.832", 3: "D89.833", 4: "D89.834"},
        "ASTCT 2019 CRS worst grade in the episode",
    ),
    ICANS_SYSTEM: (
        "Immune effector cell-associated neurotoxicity syndrome",
        "G92.00",
        {1: "G92.01", 2: "G92.02", 3: "G92.03", 4: "G92.04"},
        "ASTCT 2019 ICANS worst grade in the episode",
    ),
}


def episode_resources(row: Row) -> list[dict[str, Any]]:
    """The Condition and Observation of one episode row ([] for a row without an episode)."""
    episode = row["episode"]
    system = str(row["system"])
    if not isinstance(episode, int) or episode < 1 or system not in _CODES:
        return []
    name, unspecified, by_grade, grade_display = _CODES[system]
    grade = row["maxGrade"] if isinstance(row["maxGrade"], int) else 0
    known = row["status"] != INDETERMINATE
    code = by_grade.get(grade, unspecified) if known else unspecified
    code_display = f"{name}, grade {grade}" if code != unspecified else f"{name}, grade unspecified"
    patient = str(row["patient"])
    references = [str(r) for r in row["references"]] if isinstance(row["references"], list) else []
    base = f"{patient}|{system}|{episode}"
    condition_id = str(uuid.uuid5(NAMESPACE, base + "|Condition"))
    observation_id = str(uuid.uuid5(NAMESPACE, base + "|Observation"))
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "id": condition_id,
        "clinicalStatus": {
            "coding": [{"system": CLINICAL_STATUS, "code": "resolved" if row["resolved"] else "active"}]
        },
        "verificationStatus": {"coding": [{"system": VERIFICATION_STATUS, "code": "provisional"}]},
        "code": {"coding": [{"system": ICD10CM, "code": code, "display": code_display}], "text": code_display},
        "subject": {"reference": patient},
        "onsetDateTime": row["onset"],
        "note": [{"text": f"{system} episode {episode}, derived from the chart by crs-cds (episode rules)"}],
    }
    if row["resolved"] and isinstance(row["resolution"], str):
        condition["abatementDateTime"] = row["resolution"]
    if references:
        condition["evidence"] = [{"detail": [{"reference": r} for r in references]}]
    period = {"start": row["onset"]} | ({"end": row["resolution"]} if isinstance(row["resolution"], str) else {})
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id,
        "status": "final" if known else "preliminary",
        "code": {"coding": [{"system": GRADE_SYSTEM, "code": system, "display": grade_display}], "text": grade_display},
        "subject": {"reference": patient},
        "focus": [{"reference": f"Condition/{condition_id}"}],
        "effectivePeriod": period,
    }
    if known:
        observation["valueInteger"] = grade
    else:
        observation["dataAbsentReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}]
        }
        observation["note"] = [{"text": f"indeterminate: at least grade {grade}"}]
    derived = [r for r in references if r.startswith(DERIVED_FROM_TYPES)]
    if derived:
        observation["derivedFrom"] = [{"reference": r} for r in derived]
    return [_validated(condition), _validated(observation)]


def _validated(resource: dict[str, Any]) -> dict[str, Any]:
    """Raises pydantic's ValidationError if the R4B model refuses it (a bug here, never data)."""
    if resource["resourceType"] == "Condition":
        from fhir.resources.R4B.condition import Condition

        Condition.model_validate(resource)
    else:
        from fhir.resources.R4B.observation import Observation

        Observation.model_validate(resource)
    return resource


class FhirWriter:
    """``Condition.ndjson`` and ``Observation.ndjson`` in ``out_dir`` (Bulk Data layout)."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {
            kind: (out_dir / f"{kind}.ndjson").open("wb") for kind in ("Condition", "Observation")
        }
        self.written = 0

    def write(self, row: Row) -> None:
        for resource in episode_resources(row):
            self._files[resource["resourceType"]].write(orjson.dumps(resource) + b"\n")
            self.written += 1

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
