"""A period of oxygen support ended by a room-air record stays ended (found by the worst-grade
property test in tests/test_properties.py, kept here as a readable case).

A CPAP Procedure charted 05:00-19:00 and a room-air record at 06:00: the room-air record ends the
CPAP from 06:00 on. It used to count again once the room-air record was older than the 12 h
recency window (at 19:00 the child read as on CPAP, grade 4 while fever was masked), and the
worst-grade scan at events disagreed with the scan at every data time.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cds_hooks.grading import astct
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

from fhir_builders import (
    PATIENT_ID,
    T,
    concept,
    condition,
    medication_administration,
    patient,
    reference,
    room_air,
    rxnorm,
    temperature,
)

SNOMED = "http://snomed.info/sct"


def cpap(start_hours_before: float, end_hours_before: float) -> dict[str, object]:
    return {
        "resourceType": "Procedure",
        "id": "cpap",
        "status": "completed",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "code": concept(SNOMED, "47545007", "Continuous positive airway pressure ventilation treatment"),
        "performedPeriod": {
            "start": (T - timedelta(hours=start_hours_before)).isoformat().replace("+00:00", "Z"),
            "end": (T - timedelta(hours=end_hours_before)).isoformat().replace("+00:00", "Z"),
        },
    }


@pytest.mark.parametrize("exhaustive", [False, True], ids=["scan-at-events", "scan-at-every-data-time"])
def test_room_air_ends_a_support_period_for_good(exhaustive: bool) -> None:
    chart = [
        patient(1),
        cpap(27, 13),  # 05:00 -> 19:00 the day before T
        room_air("ra", hours_before=26),  # 06:00: ends the CPAP
        condition("crs", onset_hours_before=15),  # CRS established 17:00
        medication_administration("toci", rxnorm("612865", "tocilizumab"), hours_before=14),  # 18:00: masking
        temperature("t", 36.8, hours_before=0),
    ]
    record = extract_record(
        [SourcedResource(r, reference(r)) for r in chart], load_terminology(), load_units(), patient_id=PATIENT_ID
    )
    result = astct.grade(record, at=T, exhaustive=exhaustive)
    assert result.worst_grade == 0
