"""Temperatures as the record keeps them (issue 11 shortened the common path; the values must
not move): half-up to 0.1 Cel on the digits as charted, Fahrenheit converted exactly first, and
a value already charted to 0.1 kept as it is. The card shows these numbers and the fever
threshold (38.0 Cel) is compared with them, so 37.95 must become 38.0, never 37.9.

And the reader's cheap skip of Observations no rule reads (heart rate, respiratory rate...):
they are neither findings nor "not evidence", while a device charted as text is still read.
"""

from __future__ import annotations

import pytest
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

from fhir_builders import LOINC, PATIENT_ID, concept, observation, quantity, reference, room_air, temperature

TERMS, UNITS = load_terminology(), load_units()


@pytest.mark.parametrize(
    ("value", "unit", "celsius", "charted"),
    [
        pytest.param(38.0, "Cel", 38.0, "38 Cel", id="38.0-Cel-kept"),
        pytest.param(38.5, "Cel", 38.5, "38.5 Cel", id="one-decimal-kept"),
        pytest.param(37.95, "Cel", 38.0, "37.95 Cel", id="37.95-half-up->38.0-fever"),
        pytest.param(37.94, "Cel", 37.9, "37.94 Cel", id="37.94->37.9-no-fever"),
        pytest.param(38.05, "Cel", 38.1, "38.05 Cel", id="38.05-half-up-on-charted-digits->38.1"),
        pytest.param(39, "Cel", 39.0, "39 Cel", id="integer-value"),
        pytest.param(100.4, "[degF]", 38.0, "100.4 [degF]", id="100.4-degF-exactly-38.0"),
        pytest.param(101.3, "[degF]", 38.5, "101.3 [degF]", id="101.3-degF->38.5"),
        pytest.param(36.666666, "Cel", 36.7, "36.6667 Cel", id="many-decimals->36.7"),
    ],
)
def test_temperature_rounding(value: float, unit: str, celsius: float, charted: str) -> None:
    resource = temperature("t1", value, unit)
    record = extract_record([SourcedResource(resource, reference(resource))], TERMS, UNITS, patient_id=PATIENT_ID)
    (reading,) = record.temperatures
    assert reading.celsius == celsius
    assert reading.original == charted


def _unmapped(rid: str, loinc: str, value: float, unit: str, **changes: object) -> dict[str, object]:
    resource = observation(rid, concept(LOINC, loinc, "unmapped vital sign"))
    resource["valueQuantity"] = quantity(value, unit)
    resource.update(changes)
    return resource


@pytest.mark.parametrize(
    ("resource", "oxygen_rows", "not_evidence"),
    [
        pytest.param(_unmapped("hr", "8867-4", 88, "/min"), 0, 0, id="heart-rate->not-read"),
        pytest.param(
            _unmapped("rr", "9279-1", 22, "/min", status="entered-in-error", effectiveDateTime="2025"),
            0,
            0,
            id="respiratory-rate-bad-status-and-time->not-read-not-rejected",
        ),
        pytest.param(
            _unmapped("dev", "8867-4", 0, "/min", valueString="Room air"),
            1,
            0,
            id="unmapped-code-with-room-air-text->device-row",
        ),
        pytest.param(
            {**room_air("ra"), "status": "cancelled"},
            0,
            1,
            id="room-air-text-cancelled->not-evidence",
        ),
    ],
)
def test_observations_no_rule_reads_are_skipped_and_device_text_still_read(
    resource: dict[str, object], oxygen_rows: int, not_evidence: int
) -> None:
    record = extract_record([SourcedResource(resource, reference(resource))], TERMS, UNITS, patient_id=PATIENT_ID)
    assert len(record.oxygen) == oxygen_rows
    assert len(record.not_evidence) == not_evidence
    assert not record.temperatures and not record.blood_pressures and not record.spo2
