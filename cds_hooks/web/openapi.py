"""The OpenAPI schema published at ``/openapi.json``: real models for every CDS operation.

Why declared by hand: the routes read their bodies themselves (``web/bodies.py``: a size limit
on the bytes read, 400/413/422 with a short reason), so FastAPI cannot infer the request models
from the signatures. Each route names its request model with :func:`json_body` and its answers
with :func:`answers`; :func:`install_openapi` adds the request models' JSON schemas to the
components. The CDS Hooks models stay in ``cds_hooks.cds``; health and SMART pages stay out.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Path
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from cds_hooks.cds import CdsRequest, OperationOutcome
from cds_hooks.pipeline.hook import SERVICE_HOOKS
from cds_hooks.stores.feedback_store import FeedbackRequest

REQUEST_MODELS: tuple[type[BaseModel], ...] = (CdsRequest, FeedbackRequest)
_REF = "#/components/schemas/{model}"

_ERRORS = {
    400: "the body is not JSON, not an object, or not a valid request",
    401: "no valid CDS client JWT (when authentication is on)",
    404: "no such CDS service",
    412: "data the grade needs could not be obtained (prefetch or FHIR server), with the reason",
    413: "the body is larger than the configured limit",
    422: "the request does not have the CDS Hooks shape",
    431: "the request headers are too large",
    503: "the store is temporarily unavailable (Retry-After)",
}


class CourseDocument(BaseModel):
    """``POST /cds-services/crs-grade/course``: the CRS grade at every data time, with findings."""

    model_config = ConfigDict(extra="allow")

    patient: str
    at: str
    course: dict[str, Any]


class EmptyObject(BaseModel):
    """The feedback answer once stored: ``{}``."""

    model_config = ConfigDict(extra="forbid")


SERVICE_ID_PARAMETER = Path(
    description="A CDS service id from discovery; any other id is a 404.",
    json_schema_extra={"enum": sorted(SERVICE_HOOKS)},
)
"""The ``{service_id}`` of a CDS call or feedback, with the ids the service offers (for codegen)."""


_EMPTY_SEARCH = {"resourceType": "Bundle", "type": "searchset", "entry": []}
EXAMPLE_HOOK_REQUEST: dict[str, Any] = {
    "hook": "patient-view",
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {"patientId": "example", "userId": "Practitioner/example"},
    "prefetch": {
        "patient": {"resourceType": "Patient", "id": "example"},
        **{
            key: _EMPTY_SEARCH
            for key in (
                "observations",
                "oxygenDevices",
                "vitalSigns",
                "medicationAdministrations",
                "procedures",
                "conditions",
                "icansAssessments",
                "iceQuestionnaires",
                "labResults",
            )
        },
    },
}
"""A patient-view call with nothing charted (graded indeterminate): the schema's example, which
code generators show and fuzzers send first, so they reach the grading path."""


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` naming a route's JSON request body (read by the route, not by FastAPI)."""
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def answers(ok: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: its 200 model and every error as the OperationOutcome sent."""
    responses: dict[int | str, dict[str, Any]] = {200: {"model": ok, "description": description}}
    for status, reason in _ERRORS.items():
        responses[status] = {"model": OperationOutcome, "description": reason}
    return responses


def install_openapi(app: FastAPI) -> None:
    """Build the schema once, on first request, with the request models in its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, definitions = models_json_schema([(m, "validation") for m in REQUEST_MODELS], ref_template=_REF)
        components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in definitions.get("$defs", {}).items():
            if name in components and components[name] != definition:
                raise RuntimeError(f"OpenAPI component '{name}' is defined twice, differently")
            components[name] = definition
        components["CdsRequest"]["examples"] = [EXAMPLE_HOOK_REQUEST]
        components_root: dict[str, Any] = schema["components"]
        components_root["securitySchemes"] = {
            "cdsClientJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (CDS Hooks client)"}
        }
        # A fresh JWT per call when issuers are trusted; none when authentication is off (development).
        schema["security"] = [{"cdsClientJwt": []}, {}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
