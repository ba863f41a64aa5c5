"""The HTTP surface: routes only, no clinical logic. ``create_app(settings) -> FastAPI``.

Every error answers with a short JSON OperationOutcome and the status a CDS client can act on;
no stack trace ever reaches a response, and request bodies, tokens and patient ids are never
logged (patient ids only as a hash).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.advice.cards import CardOptions
from cds_hooks.cds import CdsRequest
from cds_hooks.errors import (
    BadRequest,
    ConfigurationError,
    PayloadTooLarge,
    ServiceError,
    UnknownService,
    UnprocessableRequest,
)
from cds_hooks.pipeline.course import course_document
from cds_hooks.pipeline.evaluate import Grading, IcansOptions
from cds_hooks.pipeline.hook import HOOK, SERVICE_ID, CrsService, HookOutcome
from cds_hooks.reading.fhir_client import FetchPolicy, FhirFetcher
from cds_hooks.reading.neuro import ICE_QUESTIONNAIRE_FILE, load_ice_questionnaire
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.stores.feedback_store import FeedbackRequest, FeedbackStore, IssuedCard, patient_hash
from cds_hooks.web.auth import ClientAuthenticator, JwksCache, Unauthorized, parse_trusted_issuers
from cds_hooks.web.smart_app import smart_enabled, smart_router

log = logging.getLogger("crs_cds.app")

_ISSUE_CODE = {400: "invalid", 401: "login", 404: "not-found", 412: "incomplete", 413: "too-long", 422: "required"}


class Unauthenticated(ServiceError):
    status = 401


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


def icans_options(settings: Settings) -> IcansOptions | None:
    """ICANS grading as configured; the ICE form map is checked here, at start-up."""
    if not settings.icans:
        return None
    path = settings.ice_questionnaire_file or ICE_QUESTIONNAIRE_FILE
    return IcansOptions(
        load_ice_questionnaire(path),
        timedelta(hours=settings.icans_window_hours),
        overdue_after=timedelta(hours=settings.icans_overdue_hours),
        followed_for=timedelta(days=settings.icans_followed_days),
    )


def build_service(settings: Settings, fetcher: FhirFetcher | None = None) -> CrsService:
    """Load and check mappings and settings; raises before the app serves anything."""
    grading = Grading(
        terminology=load_terminology(settings.mapping_files),
        units=load_units(),
        config=settings.grading_config(),
        systems=tuple(settings.systems),
        icans=icans_options(settings),
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


def check_security(settings: Settings) -> None:
    """Secure by default: no trusted issuer means no service, unless explicitly in development."""
    if settings.trusted_issuers:
        if settings.public_base_url is None:
            raise ConfigurationError(
                "CRS_CDS_PUBLIC_BASE_URL is required with trusted issuers: the token audience is never "
                "taken from the request"
            )
        try:
            parse_trusted_issuers(settings.trusted_issuers)
        except ValueError as exc:
            raise ConfigurationError(f"CRS_CDS_TRUSTED_ISSUERS: {exc}") from exc
    elif not settings.allow_unauthenticated:
        raise ConfigurationError(
            "no trusted CDS client issuer configured (CRS_CDS_TRUSTED_ISSUERS); set "
            "CRS_CDS_ALLOW_UNAUTHENTICATED=true only for local development"
        )


@dataclass
class _Runtime:
    """What the lifespan opens: the shared HTTP client's users and the store."""

    authenticator: ClientAuthenticator | None = None
    store: FeedbackStore | None = None
    http: httpx.AsyncClient | None = None
    """The shared outbound client (also used by the SMART app's discovery and token calls)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    check_security(settings)
    service = build_service(settings)
    runtime = _Runtime()
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
        store = FeedbackStore.open(settings.database_url)
        async with httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False) as client:
            service.fetcher = FhirFetcher(client, policy)
            runtime.http = client
            runtime.store = store
            if settings.trusted_issuers and settings.public_base_url is not None:
                runtime.authenticator = ClientAuthenticator(
                    issuers=parse_trusted_issuers(settings.trusted_issuers),
                    public_base_url=settings.public_base_url,
                    jwks=JwksCache(client),
                    leeway_seconds=settings.clock_leeway_seconds,
                    max_token_age_seconds=settings.token_max_age_seconds,
                )
            else:
                log.warning("CDS client authentication is OFF (CRS_CDS_ALLOW_UNAUTHENTICATED): development only")
            # Everything loaded so far (mappings, models, the app) lives as long as the process:
            # keep the cyclic collector from rescanning it under every large request.
            gc.freeze()
            try:
                yield
            finally:
                service.fetcher = None
                runtime.http = None
                runtime.authenticator = None
                runtime.store = None
                store.close()

    app = FastAPI(
        title="CRS grading CDS Hooks service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.runtime = runtime
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return OrjsonResponse(error_body(exc.status, exc.reason), status_code=exc.status, headers=headers)

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

    async def authenticate(request: Request) -> None:
        if runtime.authenticator is None:
            return
        try:
            await runtime.authenticator.verify(request.headers.get("authorization"), request.scope["path"])
        except Unauthorized as exc:
            log.warning("authentication failed", extra={"reason": exc.reason, "path": request.scope["path"]})
            raise Unauthenticated("unauthorized") from None

    if smart_enabled(settings):
        app.include_router(smart_router(settings, service, policy, lambda: runtime.http))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return OrjsonResponse({"status": "ok"})

    @app.get("/cds-services")
    async def discovery(request: Request) -> Response:
        await authenticate(request)
        return OrjsonResponse(service.discovery().dump())

    @app.post(f"/cds-services/{SERVICE_ID}/course")
    async def course(request: Request) -> Response:
        """The CRS course (grade at every data time, with findings) for the SMART app.

        Same body, authentication, data path and errors as the patient-view hook; no cards, and
        nothing stored (it issues no advice).
        """
        await authenticate(request)
        started = time.perf_counter()
        hook_request = await _read_hook_request(request, settings.max_body_bytes)
        if hook_request.hook != HOOK:
            raise BadRequest(f"the course takes a '{HOOK}' request, not '{hook_request.hook}'")
        evaluation = await service.gather_and_evaluate(hook_request)
        body = course_document(evaluation, service.grading.config, hook_request.context.patientId)
        log.info(
            "course answered",
            extra={
                "patient": patient_hash(hook_request.context.patientId),
                "points": len(body["course"].get("grades", [])),
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return OrjsonResponse(body)

    @app.post("/cds-services/{service_id}")
    async def call_service(service_id: str, request: Request) -> Response:
        await authenticate(request)
        started = time.perf_counter()
        hook_request = await _read_hook_request(request, settings.max_body_bytes)
        outcome = await service.call(service_id, hook_request)
        body = outcome.response.dump()
        if runtime.store is not None and outcome.response.cards:
            await asyncio.to_thread(runtime.store.record_cards, _issued(service_id, hook_request, outcome))
        primary = outcome.evaluation.primary
        log.info(
            "hook answered",
            extra={
                "service": service_id,
                "hook_instance": hook_request.hookInstance,
                "patient": patient_hash(hook_request.context.patientId),
                "grade": primary.grade,
                "grade_at_least": primary.grade_at_least,
                "cards": len(body["cards"]),
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return OrjsonResponse(body)

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str, request: Request) -> Response:
        await authenticate(request)
        if service_id not in service.service_ids:
            raise UnknownService(f"no CDS service '{service_id}'")
        payload = await read_json_body(request, settings.max_body_bytes)
        try:
            items = FeedbackRequest.model_validate(payload).feedback
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise BadRequest(f"invalid feedback at '{where}': {first['msg']}") from None
        if runtime.store is None:
            raise ServiceError("feedback store unavailable")
        added = await asyncio.to_thread(runtime.store.record_feedback, service_id, items)
        log.info("feedback stored", extra={"service": service_id, "items": len(items), "new": added})
        return OrjsonResponse({})

    return app


def _issued(service_id: str, request: CdsRequest, outcome: HookOutcome) -> list[IssuedCard]:
    primary = outcome.evaluation.primary
    return [
        IssuedCard(
            card_uuid=card.uuid,
            service_id=service_id,
            hook_instance=request.hookInstance,
            patient_hash=patient_hash(request.context.patientId),
            system=primary.system,
            grade=primary.grade,
            grade_at_least=primary.grade_at_least,
            evaluated_at=primary.at,
            evidence_references=primary.references,
            suggestions=[(s.uuid or "", s.label) for s in card.suggestions or []],
        )
        for card in outcome.response.cards
    ]


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
        return orjson.loads(body)  # orjson reads the bytearray in place: no copy of a multi-MB body
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
