"""The OpenAPI schema at ``/openapi.json`` (issue 13) and CDS Hooks 3.0's ``hookVersion``.

The schema must name real models for every CDS operation (clients generate code from it, tools
fuzz it); the fuzzing itself runs against a real ``crs-cds serve`` process in
``tests/integration/test_openapi_fuzz.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.cds import CdsRequest
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from hook_requests import patient_view

OPERATIONS = [
    pytest.param("/cds-services", "get", None, "Discovery", id="discovery"),
    pytest.param("/cds-services/{service_id}", "post", "CdsRequest", "CdsResponse", id="service-call"),
    pytest.param("/cds-services/crs-grade/course", "post", "CdsRequest", "CourseDocument", id="course"),
    pytest.param("/cds-services/{service_id}/feedback", "post", "FeedbackRequest", "EmptyObject", id="feedback"),
]
ERROR_STATUSES = ("400", "401", "404", "412", "413", "422", "431", "503")


def _client(tmp_path: Path, **overrides: Any) -> TestClient:
    settings = Settings(allow_unauthenticated=True, database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}", **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def schema(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with _client(tmp_path) as client:
        response = client.get("/openapi.json")
        assert response.status_code == 200
        yield response.json()


def _ref(content: dict[str, Any]) -> str:
    ref: str = content["application/json"]["schema"]["$ref"]
    return ref.removeprefix("#/components/schemas/")


@pytest.mark.parametrize(("path", "method", "request_model", "response_model"), OPERATIONS)
def test_every_cds_operation_names_its_models(
    schema: dict[str, Any], path: str, method: str, request_model: str | None, response_model: str
) -> None:
    operation = schema["paths"][path][method]
    if request_model is not None:
        assert operation["requestBody"]["required"] is True
        assert _ref(operation["requestBody"]["content"]) == request_model
    assert _ref(operation["responses"]["200"]["content"]) == response_model
    for status in ERROR_STATUSES:
        assert _ref(operation["responses"][status]["content"]) == "OperationOutcome", status
    components = schema["components"]["schemas"]
    for model in (request_model, response_model, "OperationOutcome"):
        assert model is None or model in components


def test_only_the_cds_operations_are_published(schema: dict[str, Any]) -> None:
    assert sorted(schema["paths"]) == sorted(str(p.values[0]) for p in OPERATIONS)  # no /healthz, /readyz, /smart
    assert schema["components"]["securitySchemes"]["cdsClientJwt"]["scheme"] == "bearer"


def test_request_schema_is_the_model_the_service_validates_with(schema: dict[str, Any]) -> None:
    published = schema["components"]["schemas"]["CdsRequest"]
    assert set(published["required"]) == {"hook", "hookInstance", "context"}
    assert set(published["properties"]) == set(CdsRequest.model_fields)
    assert published["properties"]["context"]["$ref"] == "#/components/schemas/HookContext"


def test_schema_can_be_turned_off(tmp_path: Path) -> None:
    with _client(tmp_path, openapi=False) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_declared_body_still_goes_through_the_size_limit(tmp_path: Path) -> None:
    """Declaring the models must not let FastAPI read the body: 413 with a short reason, as before."""
    body = patient_view(
        "v02",
        prefetch={"patient": {"resourceType": "Patient", "id": "v02", "x": "a" * 5000}},
        at="2025-03-04T08:00:00Z",
    )
    with _client(tmp_path, max_body_bytes=2048) as client:
        response = client.post("/cds-services/crs-grade", json=body)
        empty = client.post("/cds-services/crs-grade", content=b"", headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "larger than 2048 bytes" in response.json()["issue"][0]["diagnostics"]
    assert empty.status_code == 400


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param(False, None, id="default->cds-hooks-2.0-shape-without-hookVersion"),
        pytest.param(True, "1.0", id="discovery_hook_version->hookVersion-per-service"),
    ],
)
def test_hook_version_in_discovery_only_when_asked(tmp_path: Path, setting: bool, expected: str | None) -> None:
    with _client(tmp_path, discovery_hook_version=setting) as client:
        services = client.get("/cds-services").json()["services"]
    assert services
    for service in services:
        assert service.get("hookVersion") == expected, service["id"]
        assert service["hook"] in ("patient-view", "order-select", "order-sign")


def test_the_published_example_request_is_graded(tmp_path: Path) -> None:
    """The schema's example call (sent first by fuzzers) reaches grading: nothing charted is
    indeterminate with a card, never "no CRS"."""
    with _client(tmp_path) as client:
        example = client.get("/openapi.json").json()["components"]["schemas"]["CdsRequest"]["examples"][0]
        response = client.post("/cds-services/crs-grade", json=example)
    assert response.status_code == 200, response.text
    (card, *_) = response.json()["cards"]
    assert "indeterminate" in card["summary"]
