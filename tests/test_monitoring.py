"""Issue 18 item 2: the ASCO monitoring labs on the CRS card while a CRS episode is active.

The latest value and time of each lab, the ones outside the Observation's reference range, and
the ones overdue (never charted, or older than 24 h [choice]); no panel without an episode or
when the client offers no lab results.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cds_hooks.advice.monitoring import monitoring_panel
from cds_hooks.pipeline.course import course_document
from cds_hooks.pipeline.evaluate import Grading, evaluate
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.labs import builtin_labs
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from cds_hooks.web.smart.page import render_page
from fastapi.testclient import TestClient

from card_checks import check_card
from fhir_builders import PATIENT_ID, Resource, T, lab, patient, reference, temperature, when
from hook_requests import patient_view, prefetch_from_bundle


def crp(value: float, **kw: Any) -> Resource:
    return lab("crp", "1988-5", value, "mg/L", **kw)


def platelets(value: float, **kw: Any) -> Resource:
    return lab("plt", "777-3", value, "10*9/L", reference_range=(150, 400), **kw)


@pytest.mark.parametrize(
    ("resource", "row", "flag", "overdue"),
    [
        pytest.param(crp(40, hours_before=24), "crp", None, False, id="24h-old->not-overdue"),
        pytest.param(crp(40, hours_before=24.02), "crp", None, True, id="24h+1min-old->overdue"),
        pytest.param(platelets(120), "platelets", "low", False, id="below-range->low"),
        pytest.param(platelets(450), "platelets", "high", False, id="above-range->high"),
        pytest.param(platelets(150), "platelets", None, False, id="at-range-low->normal"),
        pytest.param(crp(400), "crp", None, False, id="no-range->no-flag"),
    ],
)
def test_panel_rows(resource: Resource, row: str, flag: str | None, overdue: bool) -> None:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), resource]]
    record = extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)
    panel = monitoring_panel(record, T, builtin_labs(), timedelta(hours=24))
    rows = {r.lab: r for r in panel.rows}
    assert (rows[row].flag, rows[row].overdue) == (flag, overdue)
    assert rows["ferritin"].latest is None and rows["ferritin"].overdue  # never charted -> overdue
    assert "d_dimer_feu" not in rows  # ASCO 2021 Table 1 does not list it


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def _card(client: TestClient, resources: list[Resource], *, with_labs: bool = True) -> dict[str, Any]:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    prefetch = prefetch_from_bundle(bundle)
    if not with_labs:
        prefetch.pop("labResults")
    response = client.post("/cds-services/crs-grade", json=patient_view(PATIENT_ID, prefetch=prefetch, at=when(0)))
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    check_card(card)
    detail: dict[str, Any] = card
    return detail


def test_panel_on_the_crs_card_during_an_episode(client: TestClient) -> None:
    card = _card(
        client,
        [patient(45), temperature("t1", 38.9, hours_before=1), platelets(90), crp(80, hours_before=30)],
    )
    detail = card["detail"]
    assert "**Monitoring labs during CRS**" in detail
    assert "Outside the reference range: Platelets (low)" in detail
    assert "Overdue or not charted: C-reactive protein, Ferritin" in detail
    assert "| Platelets | 90 ×10⁹/L |" in detail and "Observation/plt" in detail
    assert "magnesium" in detail  # ASCO-listed, not mapped: named, not dropped


def test_no_panel_without_lab_results_from_the_client(client: TestClient) -> None:
    card = _card(client, [patient(45), temperature("t1", 38.9, hours_before=1)], with_labs=False)
    assert "Monitoring labs during CRS" not in card["detail"]


def test_course_route_carries_lab_trends_and_scores(client: TestClient) -> None:
    resources = [
        patient(45),
        temperature("t1", 38.9, hours_before=1),
        lab("p1", "777-3", 140, "10*9/L", hours_before=30, reference_range=(150, 400)),
        lab("p2", "777-3", 45, "10*3/uL", hours_before=2, reference_range=(150, 400)),
        lab("dd", "48065-7", 2.5, "mg/L", reference_range=(None, 0.5)),
    ]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    request = patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(bundle), at=when(0))
    response = client.post("/cds-services/crs-grade/course", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(p["value"], p["reference"]) for p in body["labs"]["platelets"]] == [
        (140, "Observation/p1"),
        (45, "Observation/p2"),
    ]
    dic = next(s for s in body["scores"] if s["system"] == "ISTH-DIC-2001")
    assert dic["status"] == "indeterminate" and dic["scoreAtLeast"] == 5


def test_smart_page_shows_lab_trends_and_scores() -> None:
    resources = [
        patient(45),
        temperature("t1", 38.9, hours_before=1),
        lab("p1", "777-3", 140, "10*9/L", hours_before=30, reference_range=(150, 400)),
        lab("p2", "777-3", 45, "10*3/uL", hours_before=2, reference_range=(150, 400)),
        lab("dd", "48065-7", 2.5, "mg/L", reference_range=(None, 0.5)),
        lab("<script>", "1988-5", 12, "mg/L"),
    ]
    sourced = [SourcedResource(r, reference(r)) for r in resources]
    grading = Grading(load_terminology(), load_units())
    evaluation = evaluate(sourced, patient_id=PATIENT_ID, at=T, grading=grading)
    page = render_page(course_document(evaluation, grading.config, PATIENT_ID), evaluation)
    assert 'id="lab-trends"' in page and "140 (03 Mar 02:00) → 45 (04 Mar 06:00) ×10⁹/L" in page
    assert "150–400" in page
    assert 'id="lab-scores"' in page and "ISTH-DIC-2001" in page and "at least 5" in page
    assert "<script>" not in page  # every string from the record is escaped


def test_smart_page_without_labs_has_no_lab_sections() -> None:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), temperature("t1", 38.9, hours_before=1)]]
    grading = Grading(load_terminology(), load_units())
    evaluation = evaluate(sourced, patient_id=PATIENT_ID, at=T, grading=grading)
    page = render_page(course_document(evaluation, grading.config, PATIENT_ID), evaluation)
    assert "lab-trends" not in page and "lab-scores" not in page
