"""The CRS course (groundwork for the SMART app, issue 8): the ASTCT grade at every data time with
the tracks beside it, through the pure function, ``crs-cds grade --timeline`` and
``POST /cds-services/crs-grade/course``; and the card's ``smart`` link."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from cds_hooks.cli import main
from cds_hooks.pipeline.course import Course, crs_course
from cds_hooks.pipeline.evaluate import Grading, evaluate
from cds_hooks.reading.bundles import flatten
from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import (
    PATIENT_ID,
    atc,
    bp_panel,
    medication_administration,
    o2_flow,
    patient,
    reference,
    rxnorm,
    temperature,
)
from hook_requests import patient_view, prefetch_from_bundle
from test_auth import JWKS, JWKS_URL, PUBLIC, _settings, claims, sign
from vignette_data import FIXTURES, vignette_bundle

V31_AT = "2025-03-04T08:00:00Z"
COURSE_PATH = "/cds-services/crs-grade/course"
NOREPINEPHRINE = rxnorm("7512", "norepinephrine")
VASOPRESSIN = rxnorm("11149", "vasopressin")
DEXAMETHASONE = rxnorm("3264", "dexamethasone")
ACETAMINOPHEN = atc("N02BE01", "paracetamol")


def _instant(text: str) -> Any:
    parsed = parse_instant(text)
    assert not isinstance(parsed, str), parsed
    return parsed


def _course_of(grading: Grading, resources: Sequence[SourcedResource], patient_id: str, at: str) -> Course:
    evaluation = evaluate(resources, patient_id=patient_id, at=_instant(at), grading=grading)
    return crs_course(evaluation.record, at=evaluation.at, config=grading.config)


def _v31(grading: Grading) -> Course:
    return _course_of(grading, flatten(vignette_bundle("V31")).resources, "v31", V31_AT)


def _built(grading: Grading, *resources: dict[str, Any]) -> Course:
    sourced = [SourcedResource(copy.deepcopy(r), reference(r)) for r in resources]
    return _course_of(grading, sourced, PATIENT_ID, V31_AT)


def _grade_at(course: dict[str, Any], time: str) -> dict[str, Any]:
    points: list[dict[str, Any]] = [p for p in course["grades"] if p["time"] == time]
    assert len(points) == 1, points
    return points[0]


# -- the pure function, table-driven ----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Grading], Course]
    check: Callable[[dict[str, Any]], None]


def _check_v31(course: dict[str, Any]) -> None:
    assert course["system"] == "ASTCT-2019"
    assert course["at"] == V31_AT
    assert course["windowStart"] == "2025-03-01T08:00:00Z"
    assert course["feverThresholdCelsius"] == 38.0
    # Grade 3 while norepinephrine ran (01:30-05:00), 2 after it stopped and at the end.
    assert _grade_at(course, "2025-03-04T01:30:00Z")["grade"] == 3
    assert _grade_at(course, "2025-03-04T05:00:00Z")["grade"] == 3
    assert _grade_at(course, "2025-03-04T06:00:00Z")["grade"] == 2
    assert course["grades"][-1]["time"] == V31_AT
    assert course["grades"][-1]["grade"] == 2
    assert (course["worstGrade"], course["worstGradeAt"]) == (3, "2025-03-04T01:30:00Z")
    assert course["vasopressors"] == [
        {
            "agent": "norepinephrine",
            "start": "2025-03-04T01:30:00Z",
            "end": "2025-03-04T05:00:00Z",
            "running": False,
            "vasopressin": False,
            "reference": "MedicationAdministration/v31-med-1",
        }
    ]
    temperatures = [(t["time"], t["celsius"], t["fever"], t["reference"]) for t in course["temperatures"]]
    assert temperatures == [
        ("2025-03-03T23:00:00Z", 39.0, True, "Observation/v31-obs-1"),
        ("2025-03-04T06:00:00Z", 37.8, False, "Observation/v31-obs-3"),
    ]
    assert course["pressures"][0]["low"] is True
    assert course["pressures"][0]["systolicThreshold"] == 90.0
    assert course["pressures"][0]["meanThreshold"] == 65.0
    last_oxygen = course["oxygen"][-1]
    assert (last_oxygen["support"], last_oxygen["flowLMin"]) == ("low flow", 2.0)
    assert "Observation/v31-obs-6" in last_oxygen["references"]
    kinds = {(m["kind"], m["agent"]) for m in course["therapies"]}
    assert ("anti-cytokine", "tocilizumab") in kinds
    assert "2025-03-04T01:30:00Z" in [p["time"] for p in course["grades"]]


def _check_no_temperature(course: dict[str, Any]) -> None:
    assert course["grades"]
    for point in course["grades"]:
        assert point["grade"] is None, point
        assert point["indeterminate"] is True
        assert point["fever"] == "unknown"
        assert any("no usable body temperature" in m for m in point["missing"])
    assert "temperatures" not in course  # empty tracks are left out
    assert "worstGrade" not in course


def _check_vasopressin_running(course: dict[str, Any]) -> None:
    pressors = {p["agent"]: p for p in course["vasopressors"]}
    assert set(pressors) == {"norepinephrine", "vasopressin"}
    assert pressors["vasopressin"]["vasopressin"] is True
    assert pressors["norepinephrine"]["vasopressin"] is False
    for interval in pressors.values():
        assert interval["running"] is True
        assert "end" not in interval
    # Vasopressin does not count toward "more than one vasopressor": grade 3, not 4.
    assert course["grades"][-1]["grade"] == 3
    assert course["grades"][-1]["hypotensionGrade"] == 3


def _check_oxygen_steps(course: dict[str, Any]) -> None:
    steps = [(s["time"], s["support"], s.get("flowLMin")) for s in course["oxygen"]]
    assert steps == [
        ("2025-03-04T03:00:00Z", "room air", None),
        ("2025-03-04T05:00:00Z", "low flow", 4.0),
        ("2025-03-04T07:00:00Z", "high flow", 10.0),
    ]
    assert course["oxygen"][-1]["references"] == ["Observation/o2-10"]
    assert [p["grade"] for p in course["grades"]] == [1, 2, 3, 3]


def _check_child_thresholds(course: dict[str, Any]) -> None:
    (reading,) = course["pressures"]
    assert reading["systolicThreshold"] == 80.0  # 70 + 2 x 5 years
    assert "meanThreshold" not in reading  # MAP is not used at 10 years or younger
    assert reading["low"] is True


def _check_markers(course: dict[str, Any]) -> None:
    markers = [(m["kind"], m["agent"], m["reference"]) for m in course["therapies"]]
    assert markers == [
        ("corticosteroid", "dexamethasone", "MedicationAdministration/dex"),
        ("antipyretic", "acetaminophen", "MedicationAdministration/apap"),
    ]
    assert course["therapies"][0]["time"] == "2025-03-04T04:00:00Z"


CASES = [
    Case("V31-grade-3-on-norepinephrine-then-2", _v31, _check_v31),
    Case(
        "no-temperature-is-indeterminate-never-0",
        lambda g: _built(g, patient(45), bp_panel("bp", 85, 50, hours_before=3)),
        _check_no_temperature,
    ),
    Case(
        "vasopressin-running-is-marked-and-not-counted",
        lambda g: _built(
            g,
            patient(45),
            temperature("t", 38.6, hours_before=3),
            bp_panel("bp", 85, 50, hours_before=3),
            medication_administration("ne", NOREPINEPHRINE, status="in-progress", period=(2.0, None)),
            medication_administration("avp", VASOPRESSIN, status="in-progress", period=(1.5, None)),
        ),
        _check_vasopressin_running,
    ),
    Case(
        "oxygen-steps-room-air-low-high-flow",
        lambda g: _built(
            g,
            patient(45),
            temperature("t", 38.6, hours_before=5),
            bp_panel("bp", 120, 80, hours_before=5),
            o2_flow("o2-4", 4, hours_before=3),
            o2_flow("o2-10", 10, hours_before=1),
        ),
        _check_oxygen_steps,
    ),
    Case(
        "child-systolic-threshold-by-age-no-map",
        lambda g: _built(g, patient(5), temperature("t", 38.6, hours_before=2), bp_panel("bp", 78, 40, mean=52)),
        _check_child_thresholds,
    ),
    Case(
        "steroid-and-antipyretic-markers",
        lambda g: _built(
            g,
            patient(45),
            temperature("t", 38.6, hours_before=5),
            bp_panel("bp", 120, 80, hours_before=5),
            medication_administration("dex", DEXAMETHASONE, hours_before=4, dose=(10, "mg")),
            medication_administration("apap", ACETAMINOPHEN, hours_before=2),
        ),
        _check_markers,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_course(grading: Grading, case: Case) -> None:
    case.check(case.build(grading).to_json())


def test_course_grades_match_the_card_at_the_end(grading: Grading) -> None:
    """The last point is the card's current grade: the course explains the card, never contradicts it."""
    resources = flatten(vignette_bundle("V31")).resources
    evaluation = evaluate(resources, patient_id="v31", at=_instant(V31_AT), grading=grading)
    course = crs_course(evaluation.record, at=evaluation.at, config=grading.config)
    assert course.current is not None and course.worst is not None
    assert course.current.grade == evaluation.primary.grade
    assert course.worst.worst_value == evaluation.primary.worst_grade


# -- the CLI ------------------------------------------------------------------------------


def test_cli_timeline_prints_the_course(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = FIXTURES / "vignettes" / "V31.bundle.json"
    assert main(["grade", str(bundle), "--at", V31_AT, "--timeline"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["patient"] == "Patient/v31"
    assert output["at"] == V31_AT
    _check_v31(output["course"])


# -- the HTTP route -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def _v31_request(**extra: Any) -> dict[str, Any]:
    return patient_view("v31", prefetch=prefetch_from_bundle(vignette_bundle("V31")), at=V31_AT, **extra)


def test_route_answers_the_course(client: TestClient) -> None:
    response = client.post(COURSE_PATH, json=_v31_request())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["patient"], body["at"]) == ("Patient/v31", V31_AT)
    _check_v31(body["course"])


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        pytest.param(patient_view("v31", prefetch=None, at=V31_AT), 412, "prefetch keys missing", id="no-data-412"),
        pytest.param(
            {**_v31_request(), "hook": "order-sign"}, 400, "takes a 'patient-view' request", id="other-hook-400"
        ),
        pytest.param({"hook": "patient-view", "context": {}}, 422, "invalid CDS Hooks request", id="no-context-422"),
        pytest.param(_v31_request(extension={"crs-cds-hooks.at": "yesterday"}), 400, "crs-cds-hooks.at", id="bad-at"),
    ],
)
def test_route_errors_are_operation_outcomes(
    client: TestClient, body: dict[str, Any], status: int, reason: str
) -> None:
    response = client.post(COURSE_PATH, json=body)
    assert response.status_code == status
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert reason in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("token", "status"),
    [
        pytest.param(None, 401, id="no-token-401"),
        pytest.param(lambda: sign(claims(aud=PUBLIC + "/cds-services/crs-grade")), 401, id="hook-audience-401"),
        pytest.param(lambda: sign(claims(aud=PUBLIC + COURSE_PATH)), 200, id="course-audience-200"),
    ],
)
def test_route_is_authenticated_like_the_hook(tmp_path: Path, token: Callable[[], str] | None, status: int) -> None:
    with respx.mock(assert_all_called=False) as router:
        router.get(JWKS_URL).mock(return_value=httpx.Response(200, json=JWKS))
        with TestClient(create_app(_settings(tmp_path))) as secured:
            headers = {"Authorization": f"Bearer {token()}"} if token is not None else {}
            response = secured.post(COURSE_PATH, json=_v31_request(), headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


# -- the card's link to the app -------------------------------------------------------------


@pytest.mark.parametrize(
    ("smart_app_url", "expected"),
    [
        pytest.param(
            "https://apps.example.org/crs-course/launch",
            [{"label": "CRS course (SMART app)", "url": "https://apps.example.org/crs-course/launch", "type": "smart"}],
            id="enabled-smart-link",
        ),
        pytest.param(None, [], id="disabled-no-smart-link"),
    ],
)
def test_card_links_to_the_app_when_enabled(smart_app_url: str | None, expected: list[dict[str, str]]) -> None:
    with TestClient(create_app(Settings(smart_app_url=smart_app_url))) as app_client:
        response = app_client.post("/cds-services/crs-grade", json=_v31_request())
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    assert [link for link in card["links"] if link["type"] == "smart"] == expected
    assert all(link["type"] == "absolute" for link in card["links"] if link not in expected)
