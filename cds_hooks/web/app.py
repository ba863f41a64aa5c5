"""The HTTP surface composed in one place: ``create_app(settings) -> FastAPI``.

Routes live in one router per surface (``web/routes/``: health, CDS services, course, feedback;
``web/smart/``: the SMART app), and reach what they share through FastAPI dependencies
(``web/state.py``); CDS client authentication is a dependency of each CDS router
(``web/security.py``). This module checks the settings, builds the service, opens and closes
what lives as long as the app (the shared HTTP client, the authenticator, the store) and maps
every error to a short JSON OperationOutcome with the status a CDS client can act on: no stack
trace ever reaches a response, and request bodies, tokens and patient ids are never logged
(patient ids only as a hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cds_hooks.advice.cards import CardOptions
from cds_hooks.errors import ConfigurationError, ServiceError
from cds_hooks.grading.dic import DicConfig
from cds_hooks.logging_setup import protect_library_loggers
from cds_hooks.pipeline.evaluate import Grading, IcansOptions, LabOptions
from cds_hooks.pipeline.hook import CrsService
from cds_hooks.reading.fhir_client import FetchPolicy, FhirFetcher
from cds_hooks.reading.neuro import ICE_QUESTIONNAIRE_FILE, load_ice_questionnaire
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.stores.card_spool import CardRecorder
from cds_hooks.stores.database import Database, StoreUnavailable
from cds_hooks.stores.feedback_store import FeedbackStore
from cds_hooks.stores.replay_store import SharedReplayCache
from cds_hooks.stores.session_table import EncryptedSessionTable
from cds_hooks.web.auth import ClientAuthenticator, InMemoryReplayCache, JwksCache, parse_trusted_issuers
from cds_hooks.web.board import routes as board_routes
from cds_hooks.web.middleware import RequestHeaderLimit
from cds_hooks.web.openapi import install_openapi
from cds_hooks.web.responses import OrjsonResponse, error_body
from cds_hooks.web.routes import cds_services, course, docs, feedback, health
from cds_hooks.web.server import MAX_REQUEST_HEADER_BYTES
from cds_hooks.web.smart import routes as smart_routes
from cds_hooks.web.smart import smart_enabled
from cds_hooks.web.smart.context import SmartApp
from cds_hooks.web.smart.sessions import MAX_SESSIONS, SharedSessionStore
from cds_hooks.web.state import WebState

log = logging.getLogger("crs_cds.app")


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


def lab_options(settings: Settings) -> LabOptions | None:
    """Lab reading and scores as configured (issue 18); None leaves labs out entirely."""
    if not settings.labs:
        return None
    dic = DicConfig(
        window=timedelta(hours=settings.dic_window_hours),
        pt_normal_s=settings.dic_pt_normal_s,
        d_dimer_feu_uln_mg_l=settings.dic_d_dimer_feu_uln_mg_l,
        d_dimer_ddu_uln_mg_l=settings.dic_d_dimer_ddu_uln_mg_l,
        inr_normal_pt_s=settings.dic_inr_normal_pt_s,
        inr_isi=settings.dic_inr_isi,
    )
    return LabOptions(dic=dic, overdue_after=timedelta(hours=settings.lab_overdue_hours))


def build_service(settings: Settings, fetcher: FhirFetcher | None = None) -> CrsService:
    """Load and check mappings and settings; raises before the app serves anything."""
    grading = Grading(
        terminology=load_terminology(settings.mapping_files),
        units=load_units(),
        config=settings.grading_config(),
        systems=tuple(settings.systems),
        icans=icans_options(settings),
        labs=lab_options(settings),
    )
    return CrsService(
        grading,
        card_options=CardOptions(
            card_for_grade_zero=settings.card_for_grade_zero,
            smart_app_url=settings.smart_app_url,
            site_timezone=settings.site_timezone,
            choices_url=f"{settings.public_base_url.rstrip('/')}/docs/choices" if settings.public_base_url else None,
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


def fetch_policy(settings: Settings) -> FetchPolicy:
    """Which FHIR servers the service may call back, and how long and how far it may read."""
    return FetchPolicy(
        allowlist=frozenset(settings.fhir_server_allowlist),
        allow_insecure=settings.allow_insecure_fhir_server,
        request_timeout_seconds=settings.fhir_request_timeout_seconds,
        budget_seconds=settings.hook_time_budget_seconds,
        max_pages=settings.fhir_max_pages,
    )


STORE_RETRY_AFTER_SECONDS = 5


def shared_sessions(settings: Settings, database: Database) -> SharedSessionStore | None:
    """SMART sessions in the database when a key seals them (every replica reads them); else None
    (in this process's memory: one replica or sticky routing)."""
    if settings.session_key is None:
        return None
    table = EncryptedSessionTable(
        database,
        settings.session_key.get_secret_value(),
        limits={"pending": MAX_SESSIONS, "signed-in": MAX_SESSIONS},
    )
    return SharedSessionStore(table)


def _lifespan(state: WebState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        settings = state.settings
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        database = state.database
        store = FeedbackStore(database)
        if database.check().state != "up" and not database.postgres:
            # A local SQLite file that cannot be opened is a configuration error, not an outage.
            raise ConfigurationError(f"cannot open the store ({database.description})")
        recorder = CardRecorder(store, capacity=settings.card_spool_capacity)
        async with httpx.AsyncClient(limits=limits, follow_redirects=False, trust_env=False) as client:
            state.service.fetcher = FhirFetcher(client, state.policy)
            state.http = client
            state.store = store
            state.recorder = recorder
            if settings.trusted_issuers and settings.public_base_url is not None:
                state.authenticator = ClientAuthenticator(
                    issuers=parse_trusted_issuers(settings.trusted_issuers),
                    public_base_url=settings.public_base_url,
                    jwks=JwksCache(client),
                    leeway_seconds=settings.clock_leeway_seconds,
                    max_token_age_seconds=settings.token_max_age_seconds,
                    replay=SharedReplayCache(database, InMemoryReplayCache()),
                )
            else:
                log.warning("CDS client authentication is OFF (CRS_CDS_ALLOW_UNAUTHENTICATED): development only")
            # Everything loaded so far (mappings, models, the app) lives as long as the process:
            # keep the cyclic collector from rescanning it under every large request.
            gc.freeze()
            replayer = asyncio.create_task(_replay_spool(recorder))
            try:
                yield
            finally:
                replayer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replayer
                await asyncio.to_thread(recorder.flush)
                state.service.fetcher = None
                state.http = None
                state.authenticator = None
                state.recorder = None
                state.store = None
                database.close()

    return lifespan


SPOOL_REPLAY_SECONDS = 5.0


async def _replay_spool(recorder: CardRecorder) -> None:
    """Card records spooled while the store was down are stored as soon as it is back."""
    while True:
        await asyncio.sleep(SPOOL_REPLAY_SECONDS)
        if recorder.pending:
            await asyncio.to_thread(recorder.flush)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, exc: StoreUnavailable) -> Response:
        # The database is restarting or failing over: a temporary condition the client may retry.
        return OrjsonResponse(
            error_body(503, "the store is temporarily unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service as configured; raises :class:`ConfigurationError` on unsafe settings."""
    settings = settings or Settings()
    check_security(settings)
    protect_library_loggers()  # also when embedded without configure_logging: no ids from httpx
    state = WebState(
        settings=settings,
        service=build_service(settings),
        policy=fetch_policy(settings),
        database=Database(settings.database_url),
    )
    app = FastAPI(
        title="CRS grading CDS Hooks service",
        version="0.1.0",
        lifespan=_lifespan(state),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.openapi else None,
        description=(
            "CDS Hooks 2.0 service grading cytokine release syndrome (ASTCT 2019, CTCAE) and ICANS "
            "from FHIR R4 data. Errors are a short FHIR OperationOutcome."
        ),
    )
    app.state.web = state
    app.add_middleware(RequestHeaderLimit, max_bytes=MAX_REQUEST_HEADER_BYTES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    _add_error_handlers(app)
    if smart_enabled(settings):
        app.state.smart = SmartApp(state, sessions=shared_sessions(settings, state.database))
        app.include_router(smart_routes.router)
        app.include_router(board_routes.router)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(cds_services.router)
    app.include_router(course.router)
    app.include_router(feedback.router)
    if settings.openapi:
        install_openapi(app)
    return app
