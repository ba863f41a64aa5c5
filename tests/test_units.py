"""UCUM spellings: every spelling UCUM defines for a unit in use is read, and only those.

Why: UCUM is case-sensitive and spells some units more than one way. The litre is both ``l`` and
``L``, so US Core 3.x's pulse oximetry example charts its inhaled oxygen flow as ``l/min``; refusing
it dropped the flow. Spellings UCUM does not define (``degF``, ``mmHg``, ``L/MIN``) stay refused as
codes: a code the service does not know is not evidence, never a guess.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cds_hooks.pipeline.evaluate import Grading, evaluate
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import UCUM_SYSTEM, Converted, Quantity, UnitTable, load_units

from fhir_builders import T, bp_panel, device, patient, reference, spo2, temperature


@pytest.fixture(scope="module")
def units() -> UnitTable:
    return load_units()


def ucum(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM_SYSTEM, "code": code}


ACCEPTED = [
    pytest.param("oxygen_flow", ucum(6, "L/min"), 6.0, id="flow-L/min"),
    pytest.param("oxygen_flow", ucum(6, "l/min"), 6.0, id="flow-l/min-US-Core-3.x"),
    pytest.param("oxygen_flow", ucum(6, "L.min-1"), 6.0, id="flow-L.min-1"),
    pytest.param("oxygen_flow", ucum(6, "l.min-1"), 6.0, id="flow-l.min-1"),
    pytest.param("oxygen_flow", ucum(6000, "mL/min"), 6.0, id="flow-mL/min"),
    pytest.param("oxygen_flow", ucum(6500, "ml/min"), 6.5, id="flow-ml/min"),
    pytest.param("oxygen_flow", ucum(8000, "mL.min-1"), 8.0, id="flow-mL.min-1"),
    pytest.param("oxygen_flow", ucum(8000, "ml.min-1"), 8.0, id="flow-ml.min-1"),
    pytest.param("oxygen_flow", {"value": 6, "unit": "liters/min"}, 6.0, id="flow-text-liters/min-without-code"),
    pytest.param("temperature", ucum(38.0, "Cel"), 38.0, id="temperature-Cel"),
    pytest.param("temperature", ucum(100.4, "[degF]"), 38.0, id="temperature-[degF]-exactly-38.0"),
    pytest.param("temperature", {"value": 100.4, "unit": "degF"}, 38.0, id="temperature-text-degF-without-code"),
    pytest.param("pressure", ucum(85, "mm[Hg]"), 85.0, id="pressure-mm[Hg]"),
    pytest.param("pressure", {"value": 85, "unit": "mmHg"}, 85.0, id="pressure-text-mmHg-without-code"),
    pytest.param("oxygen_fraction", ucum(40, "%"), 40.0, id="fio2-%"),
    pytest.param("oxygen_fraction", ucum(0.4, "1"), 40.0, id="fio2-unity-1"),
    pytest.param("saturation", ucum(95, "%"), 95.0, id="spo2-%"),
    pytest.param("mass", ucum(75, "kg"), 75.0, id="weight-kg"),
    pytest.param("mass", ucum(75000, "g"), 75.0, id="weight-g"),
    pytest.param("mass", ucum(100, "[lb_av]"), 45.359237, id="weight-[lb_av]"),
    pytest.param("drug_mass", ucum(600, "mg"), 600.0, id="dose-mg"),
    pytest.param("drug_mass", ucum(0.6, "g"), 600.0, id="dose-g"),
]


@pytest.mark.parametrize(("quantity", "raw", "canonical"), ACCEPTED)
def test_ucum_spellings_are_read(units: UnitTable, quantity: Quantity, raw: dict[str, Any], canonical: float) -> None:
    converted = units.convert(quantity, raw)
    assert isinstance(converted, Converted), converted
    assert converted.value == pytest.approx(canonical, abs=1e-9)


REFUSED = [
    pytest.param("oxygen_flow", ucum(6, "L/MIN"), "is not an oxygen flow unit", id="flow-upper-case-MIN-not-UCUM"),
    pytest.param("oxygen_flow", ucum(6, "LPM"), "is not an oxygen flow unit", id="flow-LPM-not-UCUM-as-code"),
    pytest.param("oxygen_flow", ucum(6, "L/h"), "is not an oxygen flow unit", id="flow-L/h-not-in-use"),
    pytest.param("temperature", ucum(100.4, "degF"), "is not a temperature unit", id="temperature-degF-not-UCUM"),
    pytest.param("temperature", ucum(38.0, "CEL"), "is not a temperature unit", id="temperature-CEL-case-matters"),
    pytest.param("pressure", ucum(85, "mmHg"), "is not a pressure unit", id="pressure-mmHg-not-UCUM"),
    pytest.param("mass", ucum(75, "KG"), "is not a mass unit", id="weight-KG-case-matters"),
    pytest.param("mass", ucum(165, "lb"), "is not a mass unit", id="weight-lb-not-UCUM"),
    pytest.param(
        "oxygen_flow",
        {"value": 6, "unit": "l/min", "system": "http://example.org/units", "code": "l/min"},
        "not from UCUM",
        id="flow-l/min-from-another-system",
    ),
]


@pytest.mark.parametrize(("quantity", "raw", "reason"), REFUSED)
def test_spellings_ucum_does_not_define_are_refused(
    units: UnitTable, quantity: Quantity, raw: dict[str, Any], reason: str
) -> None:
    converted = units.convert(quantity, raw)
    assert isinstance(converted, str)
    assert reason in converted


# -- US Core 3.x pulse oximetry, as an EHR sends it ----------------------------------------------
# The published US Core pulse oximetry example (Observation "satO2-fiO2"): SpO2 95 % with the inhaled
# oxygen flow as a component, 6, charted in UCUM `l/min` in US Core 3.x (issue 13; later versions
# chart `L/min`). The FiO2 component of 40 % is the profile's own example value ("as inhaled oxygen
# concentration (e.g., 40% oxygen)", US Core pulse oximetry profile guidance).


def _grade(resources: list[dict[str, Any]], systems: tuple[str, ...] = ("ASTCT-2019",)) -> list[dict[str, Any]]:
    grading = Grading(load_terminology(), load_units(), systems=systems)
    sourced = [SourcedResource(copy.deepcopy(r), reference(r)) for r in resources]
    evaluation = evaluate(sourced, patient_id="p1", at=T, grading=grading)
    return [r.to_json() for r in evaluation.results]


def _fever_with(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [patient(45), temperature("t", 38.5), bp_panel("bp", 120, 80), *extra]


NC = device("nc", "336623009", "Oxygen nasal cannula")

US_CORE_CASES = [
    pytest.param(
        _fever_with(NC, spo2("ox", 95, flow=6, flow_unit="l/min", fio2_percent=40)),
        2,
        2,
        id="fever+NC+US-Core-3.x-6-l/min->grade-2",
    ),
    pytest.param(
        _fever_with(NC, spo2("ox", 95, flow=8, flow_unit="l/min", fio2_percent=40)),
        3,
        3,
        id="fever+NC+8-l/min->grade-3",
    ),
    pytest.param(
        _fever_with(spo2("ox", 95, flow=8000, flow_unit="ml/min")),
        3,
        3,
        id="fever+no-device+8000-ml/min->grade-3",
    ),
    pytest.param(
        _fever_with(NC, spo2("ox", 95, flow=6, flow_unit="L.min-1")),
        2,
        2,
        id="fever+NC+6-L.min-1->grade-2",
    ),
]


@pytest.mark.parametrize(("resources", "grade", "hypoxia_grade"), US_CORE_CASES)
def test_pulse_oximetry_flow_in_every_ucum_spelling_grades(
    resources: list[dict[str, Any]], grade: int, hypoxia_grade: int
) -> None:
    (astct,) = _grade(resources)
    assert astct["grade"] == grade
    assert astct["components"]["hypoxiaGrade"] == hypoxia_grade
    assert "Observation/ox" in {e["reference"] for e in astct["evidence"]}
    assert not any("unit" in n["reason"] for n in astct.get("notEvidence", []))


def test_us_core_3x_flow_reaches_the_fio2_systems() -> None:
    """The same example graded by FiO2 (CTCAE v5.0 reads the charted 40 %): >= 40 % is grade 3."""
    resources = _fever_with(NC, spo2("ox", 95, flow=6, flow_unit="l/min", fio2_percent=40))
    astct, ctcae = _grade(resources, ("ASTCT-2019", "CTCAE-5.0"))
    assert (astct["grade"], ctcae["grade"]) == (2, 3)


@pytest.mark.parametrize(
    ("raw", "remembered"),
    [
        pytest.param(ucum(38.0, "Cel"), True, id="real-ucum-spelling->remembered"),
        pytest.param(
            {"value": 38.0, "system": UCUM_SYSTEM, "code": "Cel", "unit": "x" * 10_000}, False, id="huge-unit->not-kept"
        ),
    ],
)
def test_only_short_unit_spellings_stay_in_memory(raw: dict[str, Any], remembered: bool) -> None:
    """A client's strings of any length must not stay in the shared table across calls; the
    answer is the same either way."""
    fresh = load_units()
    converted = fresh.convert("temperature", raw)
    assert isinstance(converted, Converted) and converted.value == pytest.approx(38.0)
    assert (len(fresh._memo) == 1) is remembered
