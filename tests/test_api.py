"""The HTTP API as an EHR sees it: discovery, patient-view cards for the public vignettes, golden
request/response files, and clear 4xx answers for bad input."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from card_checks import check_card, empty_values
from hook_requests import patient_view, prefetch_from_bundle
from vignette_data import FIXTURES, vignette_bundle, vignette_expected, vignette_ids

GOLDEN = FIXTURES / "golden"
SERVICE = "/cds-services/crs-grade"
EXPECTED = vignette_expected()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def vignette_request(vignette_id: str) -> dict[str, Any]:
    bundle = vignette_bundle(vignette_id)
    patient_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return patient_view(patient_id, prefetch=prefetch_from_bundle(bundle), at=EXPECTED[vignette_id]["evaluation_time"])


def grading_of(card: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = card["extension"]["crs-cds-hooks.grading"][0]
    return result


def test_discovery_lists_patient_view_with_prefetch(client: TestClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    body = response.json()
    assert empty_values(body) == []
    service = next(s for s in body["services"] if s["id"] == "crs-grade")
    assert {s["id"] for s in body["services"]} == {"crs-grade", "crs-order-select", "crs-order-sign"}
    assert service["hook"] == "patient-view" and service["id"] == "crs-grade"
    assert service["description"] and service["title"]
    assert set(service["prefetch"]) == {
        "patient",
        "observations",
        "oxygenDevices",
        "vitalSigns",
        "medicationAdministrations",
        "procedures",
        "conditions",
        "icansAssessments",
        "iceQuestionnaires",
        "labResults",
    }
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert "http://loinc.org|8310-5" in service["prefetch"]["observations"]
    assert "value-concept=" in service["prefetch"]["oxygenDevices"]
    # Issue 18: the lab key asks only for the mapped lab codes, never every Observation.
    assert "code=http://loinc.org|1988-5," in service["prefetch"]["labResults"]
    assert "8310-5" not in service["prefetch"]["labResults"]


@pytest.mark.parametrize("vignette_id", vignette_ids())
def test_vignette_cards(client: TestClient, vignette_id: str) -> None:
    expected = EXPECTED[vignette_id]
    response = client.post(SERVICE, json=vignette_request(vignette_id))
    assert response.status_code == 200
    body = response.json()
    assert empty_values(body) == []
    grade = expected["astct_crs_grade"]
    if grade == 0:
        assert body == {"cards": []}
        return
    (card,) = body["cards"]
    check_card(card)
    result = grading_of(card)
    assert result["grade"] == grade
    assert result["worstGrade"] == expected.get("astct_crs_max_grade_episode", grade)
    assert card["indicator"] == {1: "info", 2: "warning", 3: "critical", 4: "critical"}[grade]
    assert card["summary"].startswith(f"CRS grade {grade} (ASTCT)")
    assert all(
        e["reference"].split("/")[0] in {"Observation", "MedicationAdministration", "Procedure", "Condition"}
        for e in result["evidence"]
    )
    if "tocilizumab_dose_mg" in expected:
        doses = [
            a["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"]
            for s in card["suggestions"]
            for a in s["actions"]
            if a["resource"].get("medicationCodeableConcept", {}).get("text") == "tocilizumab"
        ]
        assert doses == [expected["tocilizumab_dose_mg"]]


def _normalise(body: Any) -> Any:
    """Random uuids replaced, so the golden file pins everything else."""
    text = json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False)
    return json.loads(re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", text))


@pytest.mark.parametrize("vignette_id", ["V01", "V23", "V34"])
def test_golden_response(client: TestClient, vignette_id: str) -> None:
    """Golden files: regenerate with UPDATE_GOLDEN=1 after an intended change, and review the diff."""
    request_file = GOLDEN / f"{vignette_id}.request.json"
    response_file = GOLDEN / f"{vignette_id}.response.json"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not request_file.exists():
        GOLDEN.mkdir(parents=True, exist_ok=True)
        request = vignette_request(vignette_id)
        request["hookInstance"] = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
        request_file.write_text(json.dumps(request, indent=1, ensure_ascii=False) + "\n")
        response_file.write_text(
            json.dumps(
                _normalise(client.post(SERVICE, json=request).json()), indent=1, sort_keys=True, ensure_ascii=False
            )
            + "\n"
        )
    request = json.loads(request_file.read_text())
    response = client.post(SERVICE, json=request)
    assert response.status_code == 200
    assert _normalise(response.json()) == json.loads(response_file.read_text())


def test_grade_zero_with_complete_data_gives_no_card(client: TestClient) -> None:
    response = client.post(SERVICE, json=vignette_request("V03"))
    assert response.json() == {"cards": []}


def test_operation_outcome_in_prefetch_is_named_and_grade_not_claimed(client: TestClient) -> None:
    request = vignette_request("V02")
    request["prefetch"]["medicationAdministrations"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "MAR service timed out"}],
    }
    response = client.post(SERVICE, json=request)
    assert response.status_code == 200
    (card,) = response.json()["cards"]
    result = grading_of(card)
    assert "grade" not in result
    assert result["gradeAtLeast"] == 1
    assert any("MedicationAdministration data unavailable" in m for m in result["missing"])
    assert "indeterminate" in card["summary"]


def test_null_prefetch_key_means_no_data_not_a_fetch(client: TestClient) -> None:
    request = vignette_request("V02")
    request["prefetch"]["procedures"] = None
    request["prefetch"]["conditions"] = None
    response = client.post(SERVICE, json=request)
    assert response.status_code == 200
    assert grading_of(response.json()["cards"][0])["grade"] == 1


def test_missing_blood_pressure_makes_fever_indeterminate(client: TestClient) -> None:
    request = vignette_request("V02")
    for key in ("observations", "vitalSigns"):
        searchset = request["prefetch"][key]
        searchset["entry"] = [e for e in searchset["entry"] if e["resource"]["code"]["coding"][0]["code"] != "85354-9"]
    (card,) = client.post(SERVICE, json=request).json()["cards"]
    result = grading_of(card)
    assert "grade" not in result and result["gradeAtLeast"] == 1
    assert card["indicator"] == "info"
    assert "blood pressure" in card["summary"]


def test_garbage_resources_never_cause_a_server_error(client: TestClient) -> None:
    request = vignette_request("V01")
    entries = request["prefetch"]["observations"]["entry"]
    entries += [
        {"resource": {"resourceType": "Observation", "id": "junk1", "status": "final", "code": {"coding": "nope"}}},
        {
            "resource": {
                "resourceType": "Observation",
                "id": "junk2",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                "effectiveDateTime": "yesterday",
                "valueQuantity": {"value": "hot"},
            }
        },
        {"resource": "not a resource"},
        {"fullUrl": "x"},
        7,
    ]
    response = client.post(SERVICE, json=request)
    assert response.status_code == 200
    result = grading_of(response.json()["cards"][0])
    assert result["grade"] == 3
    assert any(n["reference"] == "Observation/junk2" for n in result["notEvidence"])


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        pytest.param(b"{not json", 400, "not valid JSON", id="malformed-json->400"),
        pytest.param(b"", 400, "empty", id="empty-body->400"),
        pytest.param(b"[1, 2]", 400, "JSON object", id="array-body->400"),
        pytest.param(b'{"hook": "patient-view"}', 422, "hookInstance", id="missing-fields->422"),
        pytest.param(
            b'{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "a/b"}}',
            422,
            "patientId",
            id="bad-patient-id->422",
        ),
        pytest.param(
            b'{"hook": "order-sign", "hookInstance": "x", "context": {"patientId": "p1"}}',
            400,
            "patient-view",
            id="wrong-hook->400",
        ),
        pytest.param(
            b'{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p1"}}',
            412,
            "prefetch",
            id="no-prefetch-no-fhirServer->412",
        ),
        pytest.param(
            b'{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p1"}, '
            b'"prefetch": {"patient": "p1"}}',
            400,
            "must be a FHIR resource",
            id="prefetch-not-a-resource->400",
        ),
        pytest.param(
            b'{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p1"}, '
            b'"extension": {"crs-cds-hooks.at": "tomorrow"}}',
            400,
            "crs-cds-hooks.at",
            id="bad-evaluation-time->400",
        ),
    ],
)
def test_bad_requests_get_a_short_json_reason(client: TestClient, body: bytes, status: int, reason: str) -> None:
    response = client.post(SERVICE, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    payload = response.json()
    assert payload["resourceType"] == "OperationOutcome"
    diagnostics = payload["issue"][0]["diagnostics"]
    assert reason in diagnostics
    assert "Traceback" not in response.text and len(response.text) < 600


def test_unknown_service_is_404(client: TestClient) -> None:
    response = client.post("/cds-services/nope", json=vignette_request("V01"))
    assert response.status_code == 404
    assert response.json()["issue"][0]["diagnostics"] == "no CDS service 'nope'"


def test_oversized_body_is_413() -> None:
    with TestClient(create_app(Settings(max_body_bytes=2048))) as small:
        response = small.post(SERVICE, json=vignette_request("V01"))
    assert response.status_code == 413


def test_grade_zero_card_on_request_of_the_setting() -> None:
    with TestClient(create_app(Settings(card_for_grade_zero=True))) as verbose:
        (card,) = verbose.post(SERVICE, json=vignette_request("V03")).json()["cards"]
    check_card(card)
    assert grading_of(card)["grade"] == 0 and "suggestions" not in card


def test_client_evaluation_time_can_be_disabled() -> None:
    """With the extension ignored, 2025 data graded now are stale: never 'no CRS'."""
    with TestClient(create_app(Settings(allow_client_evaluation_time=False))) as strict:
        (card,) = strict.post(SERVICE, json=vignette_request("V01")).json()["cards"]
    assert "grade" not in grading_of(card)
