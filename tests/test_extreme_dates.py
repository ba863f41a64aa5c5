"""Valid but extreme FHIR dateTimes (issue 12): never a 500 on any surface.

FHIR allows years 0001 to 9999 with any offset; ``0001-01-01T00:30:00+01:00`` is in year 0 in UTC
and ``9999-12-31T23:30:00-01:00`` in year 10000, which Python cannot represent, and windows
subtracted from an evaluation time near year 1 overflow too. The answer: a charted time outside
years 0002-9998 UTC is not evidence, with a reason; an evaluation time outside them is a 400.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient
from pydantic import ValidationError

import test_order_hooks as orders
from card_checks import check_card
from fhir_builders import Resource, medication_administration, patient, rxnorm, temperature, weight
from hook_requests import patient_view, prefetch_from_bundle
from vignette_data import vignette_bundle

AT = "2025-03-04T08:00:00Z"
OUT_OF_RANGE = "outside the supported range"
NOREPINEPHRINE = rxnorm("7512", "norepinephrine")

EXTREME_DATA_TIMES: list[Any] = [
    pytest.param("0001-01-01T00:30:00+01:00", id="year-0-in-utc"),
    pytest.param("9999-12-31T23:30:00-01:00", id="year-10000-in-utc"),
    pytest.param("0001-01-01T00:00:00Z", id="first-instant-of-year-1"),
    pytest.param("9999-12-31T23:59:59.999999Z", id="last-instant-of-year-9999"),
    pytest.param("0001-01-01T00:30:00", id="no-zone-year-1"),
    # Date-only values are intervals to some readers: their edges must not overflow either.
    pytest.param("0001-01-01", id="date-only-first-day"),
    pytest.param("9999-12-31", id="date-only-last-day"),
    pytest.param("9999-12", id="year-month-last-month"),
    pytest.param("0001", id="year-only-first-year"),
]

EXTREME_EVALUATION_TIMES: list[Any] = [
    pytest.param("0001-01-01T00:30:00+01:00", id="at-year-0-in-utc"),
    pytest.param("9999-12-31T23:30:00-01:00", id="at-year-10000-in-utc"),
    pytest.param("0001-01-03T00:00:00Z", id="at-2-days-after-year-1-windows-underflow"),
    pytest.param("9999-12-31T23:59:59Z", id="at-end-of-year-9999"),
    pytest.param("0001-01-03T00:00:00", id="at-without-zone-near-year-1"),
]

EDGE_EVALUATION_TIMES: list[Any] = [
    pytest.param("0002-01-01T00:00:00Z", id="at-first-supported-instant"),
    pytest.param("9998-12-31T23:59:59Z", id="at-last-supported-second"),
]

ORDER_SERVICES = [
    pytest.param("order-select", id="order-select"),
    pytest.param("order-sign", id="order-sign"),
]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def _hook_body(extra: list[Resource], at: str = AT) -> dict[str, Any]:
    bundle = copy.deepcopy(vignette_bundle("V01"))
    bundle["entry"] += [{"resource": resource} for resource in extra]
    return patient_view("v01", prefetch=prefetch_from_bundle(bundle), at=at)


def _order_body(hook: str, effective: str | None, at: str = AT) -> dict[str, Any]:
    charted: list[Resource] = [
        temperature("xt", 39.4),
        orders.blood_culture("xbc", positive=True),
        weight("xw", 70),
        orders.toci_given("xtg", 2),
    ]
    if effective is not None:
        for resource in charted:
            resource["effectiveDateTime"] = effective
    draft = orders.draft("d1", orders.TOCI, 560) if hook == "order-select" else orders.draft("d1", orders.TECLISTAMAB)
    body = orders.order_request(hook, [patient(), *charted], [draft])
    body["extension"]["crs-cds-hooks.at"] = at
    return body


def _not_evidence(card: dict[str, Any]) -> dict[str, str]:
    grading = card["extension"]["crs-cds-hooks.grading"][0]
    return {item["reference"]: item["reason"] for item in grading.get("notEvidence", [])}


@pytest.mark.parametrize("effective", EXTREME_DATA_TIMES)
def test_patient_view_sets_an_extreme_time_aside_with_a_reason(client: TestClient, effective: str) -> None:
    fever = temperature("xt", 39.5, effective=effective, patient_id="v01")
    dose = medication_administration("xm", orders.TOCI, dose=(600, "mg"), patient_id="v01")
    dose["effectiveDateTime"] = effective
    pressor = medication_administration("xp", NOREPINEPHRINE, patient_id="v01")
    pressor.pop("effectiveDateTime", None)
    pressor["effectivePeriod"] = {"start": effective}
    response = client.post("/cds-services/crs-grade", json=_hook_body([fever, dose, pressor]))
    assert response.status_code == 200, response.text
    card = response.json()["cards"][0]
    assert card["summary"].startswith("CRS grade 3"), "the rest of the chart still grades"
    reason = _not_evidence(card)["Observation/xt"]
    if "T" in effective:
        assert OUT_OF_RANGE in reason


@pytest.mark.parametrize("effective", EXTREME_DATA_TIMES)
def test_course_leaves_an_extreme_time_off_the_tracks(client: TestClient, effective: str) -> None:
    fever = temperature("xt", 39.5, effective=effective, patient_id="v01")
    response = client.post("/cds-services/crs-grade/course", json=_hook_body([fever]))
    assert response.status_code == 200, response.text
    assert "Observation/xt" not in response.text
    assert response.json()["course"]["worstGrade"] == 3


@pytest.mark.parametrize("effective", EXTREME_DATA_TIMES)
@pytest.mark.parametrize("hook", ORDER_SERVICES)
def test_order_hooks_answer_with_extreme_charted_times(client: TestClient, hook: str, effective: str) -> None:
    response = client.post(f"/cds-services/crs-{hook}", json=_order_body(hook, effective))
    assert response.status_code == 200, response.text
    for card in response.json()["cards"]:
        check_card(card)


@pytest.mark.parametrize("at", EXTREME_EVALUATION_TIMES)
@pytest.mark.parametrize(
    "path", ["/cds-services/crs-grade", "/cds-services/crs-grade/course", "order-select", "order-sign"]
)
def test_extreme_evaluation_time_is_a_400_with_the_reason(client: TestClient, path: str, at: str) -> None:
    if path.startswith("order-"):
        response = client.post(f"/cds-services/crs-{path}", json=_order_body(path, None, at=at))
    else:
        response = client.post(path, json=_hook_body([], at=at))
    assert response.status_code == 400, response.text
    assert OUT_OF_RANGE in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("at", EDGE_EVALUATION_TIMES)
@pytest.mark.parametrize(
    "path", ["/cds-services/crs-grade", "/cds-services/crs-grade/course", "order-select", "order-sign"]
)
def test_evaluation_time_at_the_supported_edges_is_graded(client: TestClient, path: str, at: str) -> None:
    if path.startswith("order-"):
        response = client.post(f"/cds-services/crs-{path}", json=_order_body(path, at, at=at))
    else:
        response = client.post(path, json=_hook_body([temperature("xt", 39.5, effective=at, patient_id="v01")], at=at))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "fixed",
    [
        pytest.param(datetime(1, 1, 1, tzinfo=UTC), id="year-1"),
        pytest.param(datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), id="year-0-in-utc"),
        pytest.param(datetime(9999, 12, 31, 23, 0, tzinfo=UTC), id="end-of-year-9999"),
    ],
)
def test_fixed_evaluation_time_out_of_range_stops_the_start(fixed: datetime) -> None:
    with pytest.raises(ValidationError, match=OUT_OF_RANGE):
        Settings(evaluation_time=fixed)
