"""Temperatures as the record keeps them (issue 11 shortened the common path; the values must
not move): half-up to 0.1 Cel on the digits as charted, Fahrenheit converted exactly first, and
a value already charted to 0.1 kept as it is. The card shows these numbers and the fever
threshold (38.0 Cel) is compared with them, so 37.95 must become 38.0, never 37.9.
"""

from __future__ import annotations

import pytest
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

from fhir_builders import PATIENT_ID, reference, temperature

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
