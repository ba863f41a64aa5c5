"""Published FHIR examples (US Core 3.x and 9, FHIR R4 core, mCODE), read as an EHR sends them.

Each example is placed beside a fever (and, where needed, a low pressure) at an evaluation time
chosen inside the example's own time, and must give the outcome a clinician would expect:
evidence used, or named with the reason it is not, and never "normal" for want of a reading.
Provenance of the files: tests/fixtures/published/README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

PUBLISHED = Path(__file__).parent / "fixtures" / "published"


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PUBLISHED / name).read_text(encoding="utf-8"))
    return loaded


def _vital(rid: str, patient: str, at: datetime, *, loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": (at - timedelta(hours=1)).isoformat(),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def grade(resource: dict[str, Any], at: datetime, *, low_pressure: bool = False) -> Evaluation:
    patient = str(resource["subject"]["reference"]).removeprefix("Patient/")
    chart = [
        {"resourceType": "Patient", "id": patient, "birthDate": "1970-01-01"},
        resource,
        _vital("fever", patient, at, loinc="8310-5", value=39.0, unit="Cel"),
    ]
    if low_pressure:
        chart.append(_vital("sbp", patient, at, loinc="8480-6", value=85, unit="mm[Hg]"))
    sourced = [SourcedResource(r, f"{r['resourceType']}/{r['id']}") for r in chart]
    return evaluate(sourced, patient_id=patient, at=at, grading=Grading(load_terminology(), load_units()))


@dataclass(frozen=True)
class Case:
    file: str
    at: datetime
    grade: int | None
    at_least: int | None = None
    evidence: str | None = None
    """A reference the grade must cite."""
    not_evidence: str | None = None
    """Words the not-evidence reason for the example must contain."""
    missing: str | None = None
    assumption: str | None = None


CASES = [
    pytest.param(
        Case(
            "r4-Observation-map-sitting.json",
            datetime(2018, 4, 3, 12, tzinfo=UTC),
            2,
            evidence="Observation/map-sitting",
        ),
        id="r4-map-sitting-period-covering-T->MAP-60-counts-grade-2",
    ),
    pytest.param(
        Case(
            "r4-Observation-map-sitting.json",
            datetime(2018, 4, 5, 12, tzinfo=UTC),
            2,
            evidence="Observation/map-sitting",
        ),
        id="r4-map-sitting-period-ended-within-24h->read-at-its-end-grade-2",
    ),
    pytest.param(
        Case(
            "uscore9-Observation-average-blood-pressure.json",
            datetime(2023, 8, 6, 14, tzinfo=UTC),
            None,
            at_least=1,
            not_evidence="average blood pressure over a period",
            missing="no blood pressure charted",
        ),
        id="uscore9-average-bp->named-not-used-and-bp-missing",
    ),
    pytest.param(
        Case(
            "uscore9-observation-satO2-fiO2.json",
            datetime(2014, 12, 5, 10, tzinfo=UTC),
            2,
            evidence="Observation/satO2-fiO2",
            assumption="no oxygen device charted",
        ),
        id="uscore9-flow-6-no-device->low-flow-grade-2-device-assumption-said",
    ),
    pytest.param(
        Case(
            "uscore3-observation-satO2-fiO2.json",
            datetime(2014, 12, 5, 10, tzinfo=UTC),
            2,
            evidence="Observation/satO2-fiO2",
        ),
        id="uscore3-flow-6-l/min->read-as-litres-grade-2",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_published_example(case: Case) -> None:
    result = grade(example(case.file), case.at).primary
    assert (result.grade, result.grade_at_least) == (case.grade, case.at_least)
    if case.evidence is not None:
        assert case.evidence in result.references
    if case.not_evidence is not None:
        assert any(case.not_evidence in n.reason for n in result.not_evidence)
    if case.missing is not None:
        assert any(case.missing in m for m in result.missing)
    if case.assumption is not None:
        assert any(case.assumption in a for a in result.assumptions)


def test_unreadable_oxygen_flow_is_unknown_never_room_air() -> None:
    """US Core 3.x pulse oximetry with a flow unit no one can read: the oxygen criterion is unknown."""
    resource = example("uscore3-observation-satO2-fiO2.json")
    resource["component"][0]["valueQuantity"]["code"] = "[drp]/min"  # drops per minute: not a gas flow
    result = grade(resource, datetime(2014, 12, 5, 10, tzinfo=UTC), low_pressure=True).primary
    assert result.grade is None and result.grade_at_least == 2
    assert any("could not be read" in m and "not room air" in m for m in result.missing)
    assert result.components["hypoxiaGrade"] == 0  # proven so far; the unread record may raise it


def test_date_only_body_weight_doses_and_says_its_date() -> None:
    """mCODE weight dated by day only (the day before): used for the dose, its date on the card."""
    evaluation = grade(
        example("mcode-Observation-bodyweight-jenny-m-2018-04-22.json"),
        datetime(2018, 4, 23, 8, tzinfo=UTC),
        low_pressure=True,
    )
    advice = evaluation.tocilizumab
    assert evaluation.primary.grade == 2
    assert advice.dose_mg == 544  # 150 lb = 68.04 kg x 8 mg/kg, floored
    assert "2018-04-22 (date only)" in advice.calculation
    assert "Observation/bodyweight-jenny-m-2018-04-22" in advice.calculation
