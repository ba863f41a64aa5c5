"""The HTTP surface: routes only, no clinical logic. ``create_app(settings) -> FastAPI``.

Every error answers with a short JSON OperationOutcome and the status a CDS client can act on;
no stack trace ever reaches a response, and request bodies are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .cards import CardOptions
from .cds import CdsRequest
from .errors import BadRequest, PayloadTooLarge, ServiceError, UnprocessableRequest
from .evaluate import Grading
from .fhir_client import FetchPolicy, FhirFetcher
from .service import CrsService
from .settings import Settings
from .terminology import load_terminology
from .units import load_units

log = logging.getLogger("crs_cds.app")

_ISSUE_CODE = {400: "invalid", 404: "not-found", 412: "incomplete", 413: "too-long", 422: "required"}


def error_body(status: int, reason: str) -> dict[str, Any]:
    """A short OperationOutcome (what the next CDS Hooks release proposes for errors)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": _ISSUE_CODE.get(status, "exception"), "diagnostics": reason}],
    }


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def build_service(settings: Settings, fetcher: FhirFetcher | None = None) -> CrsService:
    """Load and check mappings and settings; raises before the app serves anything."""
    grading = Grading(
        terminology=load_terminology(settings.mapping_files),
        units=load_units(),
        config=settings.grading_config(),
        systems=tuple(settings.systems),
    )
    return CrsService(
        grading,
        card_options=CardOptions(
            card_for_grade_zero=settings.card_for_grade_zero, smart_app_url=settings.smart_app_url
        ),
        fixed_time=settings.evaluation_time,
        allow_client_time=settings.allow_client_evaluation_time,
        fetcher=fetcher,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    service = build_service(settings)
    policy = FetchPolicy(
        allowlist=frozenset(settings.fhir_server_allowlist),
        allow_insecure=settings.allow_insecure_fhir_server,
        request_timeout_seconds=settings.fhir_request_timeout_seconds,
        budget_seconds=settings.hook_time_budget_seconds,
        max_pages=settings.fhir_max_pages,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        async with httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False) as client:
            service.fetcher = FhirFetcher(client, policy)
            yield
        service.fetcher = None

    app = FastAPI(
        title="CRS grading CDS Hooks service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.settings = settings

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> Response:
        return OrjsonResponse(error_body(exc.status, exc.reason), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        reason = exc.detail if isinstance(exc.detail, str) else "request failed"
        return OrjsonResponse(error_body(exc.status_code, reason), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return OrjsonResponse(error_body(422, "request does not match the expected shape"), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", extra={"error_type": type(exc).__name__})
        return OrjsonResponse(error_body(500, "internal error"), status_code=500)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return OrjsonResponse({"status": "ok"})

    @app.get("/cds-services")
    async def discovery() -> Response:
        return OrjsonResponse(service.discovery().dump())

    @app.post("/cds-services/{service_id}")
    async def call_service(service_id: str, request: Request) -> Response:
        hook_request = await _read_hook_request(request, settings.max_body_bytes)
        outcome = await service.call(service_id, hook_request)
        return OrjsonResponse(outcome.response.dump())

    return app


async def read_json_body(request: Request, limit: int) -> Any:
    """The JSON body, refusing oversize (413) and malformed (400) input with a short reason."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    if not body:
        raise BadRequest("request body is empty; a JSON object is required")
    try:
        return orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None


async def _read_hook_request(request: Request, limit: int) -> CdsRequest:
    payload = await read_json_body(request, limit)
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return CdsRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UnprocessableRequest(f"invalid CDS Hooks request at '{where}': {first['msg']}") from None
