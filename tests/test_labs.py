"""Issue 18 item 1: laboratory Observations read like vitals into the one PatientRecord.

Codes and units are data (``mappings/labs.yaml``); every value is converted to its lab's
canonical unit or is not evidence; the reference range is kept; statuses, patient and time
follow the shared FHIR rules.
"""

from __future__ import annotations

from typing import Any

import pytest
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.labs import builtin_labs
from cds_hooks.reading.prefetch import build_lab_prefetch
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.record import PatientRecord
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

from fhir_builders import PATIENT_ID, Resource, lab, patient, reference


def read(*resources: Resource) -> PatientRecord:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), *resources]]
    return extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)


@pytest.mark.parametrize(
    ("loinc", "charted", "expected"),
    [
        pytest.param("1988-5", (12.0, "mg/L", True), ("crp", 12.0, "mg/L"), id="crp-mg/L"),
        pytest.param("1988-5", (1.2, "mg/dL", True), ("crp", 12.0, "mg/L"), id="crp-mg/dL->x10"),
        pytest.param("1988-5", (1.2, "mg/dl", False), ("crp", 12.0, "mg/L"), id="crp-text-unit-mg/dl"),
        pytest.param("3255-7", (1.5, "g/L", True), ("fibrinogen", 1.5, "g/L"), id="fibrinogen-g/L"),
        pytest.param("3255-7", (150, "mg/dL", True), ("fibrinogen", 1.5, "g/L"), id="fibrinogen-mg/dL->/100"),
        pytest.param("777-3", (45, "10*9/L", True), ("platelets", 45.0, "10*9/L"), id="platelets-10*9/L"),
        pytest.param("777-3", (45, "10*3/uL", True), ("platelets", 45.0, "10*9/L"), id="platelets-10*3/uL"),
        pytest.param("26515-7", (45, "K/uL", False), ("platelets", 45.0, "10*9/L"), id="platelets-text-K/uL"),
        pytest.param("2160-0", (88.42, "umol/L", True), ("creatinine", 1.0, "mg/dL"), id="creatinine-umol/L"),
        pytest.param("48065-7", (1500, "ng/mL", True), ("d_dimer_feu", 1.5, "mg/L"), id="d-dimer-feu-ng/mL"),
        pytest.param("6301-6", (1.4, "{INR}", True), ("inr", 1.4, "{INR}"), id="inr"),
        pytest.param("2276-4", (12000, "ug/L", True), ("ferritin", 12000.0, "ng/mL"), id="ferritin-ug/L"),
        pytest.param("718-7", (85, "g/L", True), ("hemoglobin", 8.5, "g/dL"), id="haemoglobin-g/L"),
    ],
)
def test_lab_units_are_converted_to_the_canonical_unit(
    loinc: str, charted: tuple[float, str, bool], expected: tuple[str, float, str]
) -> None:
    value, unit, ucum = charted
    lab_id, canonical_value, canonical = expected
    record = read(lab("l1", loinc, value, unit, ucum=ucum))
    assert [(r.lab, r.unit) for r in record.labs] == [(lab_id, canonical)]
    assert record.labs[0].value == pytest.approx(canonical_value)
    assert record.labs[0].reference == "Observation/l1"
    assert record.not_evidence == []  # labs never reach the CRS card's "not used" list


def _broken(change: dict[str, Any], drop: str | None = None) -> Resource:
    out = lab("bad", "777-3", 45, "10*9/L")
    out.update(change)
    if drop is not None:
        out.pop(drop)
    return out


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        pytest.param(lab("bad", "777-3", 45, "mg/dL"), "not a Platelets unit", id="wrong-unit"),
        pytest.param(lab("bad", "777-3", 3, "furlongs", ucum=False), "unknown unit", id="unknown-text-unit"),
        pytest.param(_broken({"status": "entered-in-error"}), "status", id="entered-in-error"),
        pytest.param(_broken({"status": "registered"}), "status", id="registered-not-a-result"),
        pytest.param(_broken({"subject": {"reference": "Patient/other"}}), "another patient", id="other-patient"),
        pytest.param(_broken({}, drop="effectiveDateTime"), "no effective time", id="no-time"),
        pytest.param(
            _broken({"valueQuantity": {"value": 45, "comparator": "<", "unit": "10*9/L"}}),
            "comparator",
            id="comparator",
        ),
        pytest.param(
            _broken({"dataAbsentReason": {"text": "clotted"}}, drop="valueQuantity"), "dataAbsentReason", id="absent"
        ),
    ],
)
def test_unusable_lab_values_are_named_not_read(resource: Resource, reason: str) -> None:
    record = read(resource)
    assert record.labs == []
    assert [(lab_id, n.reference) for lab_id, n in record.lab_not_evidence] == [("platelets", "Observation/bad")]
    assert reason in record.lab_not_evidence[0][1].reason


@pytest.mark.parametrize(
    ("unit", "low", "high", "expected"),
    [
        pytest.param("s", 11.0, 13.5, (11.0, 13.5), id="pt-range-kept"),
        pytest.param("s", None, 13.5, (None, 13.5), id="pt-high-only"),
    ],
)
def test_reference_range_is_kept_in_canonical_units(
    unit: str, low: float | None, high: float | None, expected: tuple[float | None, float | None]
) -> None:
    record = read(lab("pt1", "5902-2", 16.0, unit, reference_range=(low, high)))
    assert (record.labs[0].reference_low, record.labs[0].reference_high) == expected


def test_d_dimer_reference_range_converted_with_the_value() -> None:
    record = read(lab("dd", "48065-7", 2500, "ng/mL", reference_range=(None, 500)))
    assert record.labs[0].value == pytest.approx(2.5)
    assert record.labs[0].reference_high == pytest.approx(0.5)


def test_lab_prefetch_asks_only_for_mapped_codes() -> None:
    (key,) = build_lab_prefetch(builtin_labs())
    assert key.name == "labResults" and key.optional and not key.required
    codes = key.template.split("&code=", 1)[1].split(",")
    assert set(codes) == {f"{s}|{c}" for s, c in builtin_labs().codes()}
    assert "http://loinc.org|8310-5" not in codes  # no vital sign
