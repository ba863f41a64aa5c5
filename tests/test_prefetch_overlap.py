"""Overlapping prefetch searches (issue 11): a resource sent under several keys is read once.

The Observation templates overlap on purpose (by code, by coded value, by the vital-signs
category), so an EHR sends most rows two or three times. Each resource must reach the reader
once, the first key's copy winning (as the later de-duplication always did), and a duplicate is
neither malformed nor a reason for a 412.
"""

from __future__ import annotations

from typing import Any

import pytest
from cds_hooks.reading.prefetch import build_prefetch, classify
from cds_hooks.reading.terminology import load_terminology

KEYS = build_prefetch(load_terminology())


def _temperature(rid: str, celsius: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "effectiveDateTime": "2025-03-04T06:00:00Z",
        "valueQuantity": {"value": celsius, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
    }


def _searchset(*resources: dict[str, Any], full_urls: bool = False) -> dict[str, Any]:
    entries = [{"resource": r, **({"fullUrl": f"urn:uuid:{r.get('id', 'x')}"} if full_urls else {})} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


T1, T1_COPY, T2 = _temperature("t1", 39.1), _temperature("t1", 39.1), _temperature("t2", 37.0)
NO_ID = _temperature("x", 38.5)
del NO_ID["id"]

CASES = [
    pytest.param(
        {"observations": _searchset(T1, T2), "vitalSigns": _searchset(T1_COPY, T2)},
        ["Observation/t1", "Observation/t2"],
        0,
        id="observations+vitalSigns-overlap->each-once",
    ),
    pytest.param(
        {"observations": _searchset(T1), "vitalSigns": _searchset(T1_COPY), "oxygenDevices": _searchset(T1_COPY)},
        ["Observation/t1"],
        0,
        id="three-keys-same-row->once",
    ),
    pytest.param(
        {"observations": _searchset(T1, T1_COPY)},
        ["Observation/t1"],
        0,
        id="same-row-twice-in-one-bundle->once",
    ),
    pytest.param(
        {"observations": _searchset(NO_ID, full_urls=True), "vitalSigns": _searchset(NO_ID, full_urls=True)},
        ["urn:uuid:x"],
        0,
        id="no-id-same-fullUrl->once-by-fullUrl",
    ),
    pytest.param(
        {"observations": _searchset(NO_ID), "vitalSigns": _searchset(NO_ID)},
        [],
        2,
        id="no-id-no-fullUrl->malformed-each-time",
    ),
    pytest.param(
        {"observations": _searchset(T1), "vitalSigns": _searchset(T2)},
        ["Observation/t1", "Observation/t2"],
        0,
        id="no-overlap->all-kept",
    ),
]


@pytest.mark.parametrize(("prefetch", "references", "malformed"), CASES)
def test_each_resource_once_first_key_wins(prefetch: dict[str, Any], references: list[str], malformed: int) -> None:
    state = classify(prefetch, KEYS)
    assert [r.reference for r in state.resources] == references
    if references:
        first = prefetch["observations"]["entry"][0]["resource"]
        assert state.resources[0].resource is first, "the first key's copy is the one read"
    assert sum(state.malformed.values()) == malformed
    assert not state.unavailable
