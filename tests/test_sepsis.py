"""Issue 18 item 5: sepsis stays in view on the CRS card (CRS is a diagnosis of exclusion).

With fever and neutropenia, a positive blood culture or an active infection, the CRS card says
so and names the finding with its reference; otherwise the card is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cds_hooks.advice.sepsis import sepsis_findings
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.labs import builtin_labs
from cds_hooks.reading.prefetch import build_lab_prefetch
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import PATIENT_ID, Resource, T, lab, patient, reference, temperature, when
from hook_requests import patient_view, prefetch_from_bundle
from test_order_hooks import blood_culture, infection_condition


def anc(value: float, unit: str = "10*9/L", **kw: Any) -> Resource:
    return lab("anc", "751-8", value, unit, **kw)


@pytest.mark.parametrize(
    ("resources", "fever", "expected"),
    [
        pytest.param((anc(0.3),), True, ["Observation/anc"], id="fever+anc-0.3->neutropenia"),
        pytest.param((anc(0.49, "10*3/uL"),), True, ["Observation/anc"], id="fever+anc-0.49-10*3/uL->neutropenia"),
        pytest.param((anc(0.5),), True, [], id="fever+anc-0.5->not-neutropenic"),
        pytest.param((anc(0.3),), False, [], id="no-fever+anc-0.3->nothing"),
        pytest.param((anc(0.3, hours_before=49),), True, [], id="fever+anc-older-than-48h->nothing"),
        pytest.param((blood_culture("bc", positive=True),), False, ["Observation/bc"], id="positive-culture"),
        pytest.param((blood_culture("bc", positive=False),), True, [], id="negative-culture->nothing"),
        pytest.param(
            (blood_culture("bc", positive=True, hours_before=24 * 8),), True, [], id="culture-older-than-7-days"
        ),
        pytest.param((infection_condition("inf", "Pneumonia"),), False, ["Condition/inf"], id="active-infection"),
    ],
)
def test_sepsis_findings(resources: tuple[Resource, ...], fever: bool, expected: list[str]) -> None:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), *resources]]
    record = extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)
    assert [f.reference for f in sepsis_findings(record, T, fever=fever)] == expected


def test_lab_prefetch_also_asks_for_blood_cultures() -> None:
    (key,) = build_lab_prefetch(builtin_labs(), load_terminology())
    assert "http://loinc.org|600-7" in key.template


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("extra", "shown", "named"),
    [
        pytest.param([anc(0.2)], True, "ANC 0.2 x10^9/L", id="fever+neutropenia->exclusion-line"),
        pytest.param([blood_culture("bc", positive=True)], True, "positive blood culture", id="fever+culture"),
        pytest.param([anc(2.0)], False, "", id="fever+normal-anc->no-line"),
    ],
)
def test_crs_card_keeps_sepsis_in_view(client: TestClient, extra: list[Resource], shown: bool, named: str) -> None:
    resources = [patient(45), temperature("t1", 38.9, hours_before=1), *extra]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    response = client.post(
        "/cds-services/crs-grade", json=patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(bundle), at=when(0))
    )
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert ("CRS is a diagnosis of exclusion" in card["detail"]) is shown
    assert named in card["detail"]
