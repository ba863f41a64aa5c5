"""SMART App Launch 2.x for the CRS course page (issue 8): EHR and standalone launch, server-side.

Why server-side (a confidential-style backend holding the tokens): the access token reads a
patient's chart, so it never reaches the browser. The browser holds one random, HttpOnly session
id; the token, the PKCE verifier and the ``state`` live in this process's memory only and are
looked up by that id. Why these checks, in this order:

* ``iss`` must be on the SMART issuer allow-list *and* pass the FHIR fetch policy before anything
  is fetched, so a crafted launch link cannot make the service call (or send a code to) an
  arbitrary server;
* the authorization and token endpoints are discovered from ``{iss}/.well-known/smart-configuration``
  (no redirects followed, bounded time, https unless insecure servers are allowed for tests);
* ``state`` (256 bits, one use, bound to the browser's session cookie) defeats login CSRF and
  code injection; PKCE S256 binds the code to this session's verifier;
* the session id is replaced after the token exchange (no session fixation);
* no token, code or verifier is ever logged or rendered, and error pages show only the
  authorization server's ``error`` / ``error_description`` (escaped, shortened).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cds_hooks.cds import FHIR_ID, CdsRequest
from cds_hooks.errors import ServiceError
from cds_hooks.pipeline.course import course_document
from cds_hooks.pipeline.hook import AT_EXTENSION, HOOK, CrsService
from cds_hooks.reading.fhir_client import FetchPolicy, FhirServerRejected
from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.settings import Settings
from cds_hooks.stores.feedback_store import patient_hash
from cds_hooks.web.smart_page import error_page, render_page

log = logging.getLogger("crs_cds.smart")

COOKIE = "crs_smart_session"
COOKIE_PATH = "/smart"
PENDING_SECONDS = 600.0
"""A launch must come back from the authorization server within this time."""
MAX_SESSIONS = 10_000
"""Oldest sessions are dropped beyond this: launches cannot grow memory without bound."""
_ERROR_TEXT_MAX = 300
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'self'",
}


class SmartError(Exception):
    """A launch that cannot go on: shown to the user as a short page, never with a secret."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail


@dataclass
class SmartSession:
    """One browser's launch: pending (state + verifier) until the callback, then signed in."""

    iss: str
    expires: float
    state: str | None = None
    verifier: str | None = None
    token_endpoint: str | None = None
    at: str | None = None
    access_token: str | None = field(default=None, repr=False)
    scope: str = ""
    patient: str | None = None


class SessionStore:
    """In-memory sessions keyed by a random id (``secrets.token_urlsafe``); one process only.

    Several replicas would need sticky sessions or a shared store; the page is a convenience for
    one ward, and keeping tokens out of any database is the safer default.
    """

    def __init__(self, limit: int = MAX_SESSIONS, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions: OrderedDict[str, SmartSession] = OrderedDict()
        self._limit = limit
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def create(self, session: SmartSession) -> str:
        self._purge()
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = session
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str | None) -> SmartSession | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def pop(self, session_id: str | None) -> SmartSession | None:
        session = self.get(session_id)
        if session is not None and session_id is not None:
            del self._sessions[session_id]
        return session

    def __len__(self) -> int:
        return len(self._sessions)

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (86 characters of 512 random bits) and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def smart_enabled(settings: Settings) -> bool:
    return bool(settings.smart_client_id and settings.smart_redirect_url)


def _short(value: object) -> str:
    text = str(value) if value is not None else ""
    return text[:_ERROR_TEXT_MAX]


def _insecure_cookie_ok(redirect_url: str) -> bool:
    """Only a plain-http loopback redirect URL (local development and tests) drops ``Secure``."""
    parts = urlsplit(redirect_url)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def smart_router(
    settings: Settings,
    service: CrsService,
    policy: FetchPolicy,
    client: Callable[[], httpx.AsyncClient | None],
    store: SessionStore | None = None,
) -> APIRouter:
    """The ``/smart/...`` routes; ``client`` returns the lifespan's shared HTTP client."""
    assert settings.smart_client_id is not None and settings.smart_redirect_url is not None
    client_id: str = settings.smart_client_id
    redirect_url: str = settings.smart_redirect_url
    sessions = store or SessionStore()
    issuers = frozenset(settings.smart_issuer_allowlist or settings.fhir_server_allowlist)
    secure_cookie = not _insecure_cookie_ok(redirect_url)
    timeout = httpx.Timeout(settings.fhir_request_timeout_seconds)
    router = APIRouter(prefix="/smart", include_in_schema=False)

    def http() -> httpx.AsyncClient:
        shared = client()
        if shared is None:
            raise SmartError(503, "Service starting", "The service is not ready; try again in a moment.")
        return shared

    def set_cookie(response: Response, session_id: str) -> None:
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(settings.smart_session_minutes * 60),
            path=COOKIE_PATH,
            httponly=True,
            secure=secure_cookie,
            samesite="lax",
        )

    def page(status: int, body: str) -> HTMLResponse:
        return HTMLResponse(body, status_code=status, headers=_SECURITY_HEADERS)

    def failure(exc: SmartError) -> HTMLResponse:
        return page(exc.status, error_page(exc.title, exc.detail))

    def check_issuer(iss: str | None) -> str:
        if not iss:
            raise SmartError(400, "Launch refused", "The launch did not name a FHIR server (iss).")
        base = iss.strip().rstrip("/")
        if base not in issuers:
            raise SmartError(400, "Launch refused", "This FHIR server (iss) is not registered for this app.")
        try:
            return policy.check(base)
        except FhirServerRejected as exc:
            raise SmartError(400, "Launch refused", f"This FHIR server (iss) cannot be used: {exc}.") from None

    def check_endpoint(url: object, name: str) -> str:
        if not isinstance(url, str):
            raise SmartError(502, "Authorization server misconfigured", f"smart-configuration lacks {name}.")
        parts = urlsplit(url)
        if not parts.netloc or parts.username or parts.password:
            raise SmartError(502, "Authorization server misconfigured", f"{name} is not an absolute URL.")
        if parts.scheme != "https" and not (parts.scheme == "http" and settings.allow_insecure_fhir_server):
            raise SmartError(502, "Authorization server misconfigured", f"{name} must use https.")
        return url

    async def discover(iss: str) -> dict[str, Any]:
        url = f"{iss}/.well-known/smart-configuration"
        try:
            response = await http().get(url, headers={"Accept": "application/json"}, timeout=timeout)
        except httpx.HTTPError as exc:
            raise SmartError(
                502, "FHIR server unreachable", f"Could not read its SMART configuration ({type(exc).__name__})."
            ) from None
        if response.status_code != 200:
            raise SmartError(
                502, "No SMART configuration", f"The FHIR server answered {response.status_code} for {url}."
            )
        try:
            config = response.json()
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise SmartError(502, "No SMART configuration", "The SMART configuration is not a JSON object.")
        methods = config.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise SmartError(502, "Authorization server unsupported", "It does not offer PKCE with S256.")
        return config

    def evaluation_time(value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not settings.allow_client_evaluation_time:
            raise SmartError(400, "Evaluation time refused", "This service grades at the current time only.")
        if isinstance(parse_instant(value), str):
            raise SmartError(400, "Evaluation time refused", "'at' must be an instant with a time zone.")
        return value

    @router.get("/launch")
    async def launch(request: Request) -> Response:
        """EHR launch (``iss`` + ``launch``) or standalone launch (``iss`` only): off to authorize."""
        query = request.query_params
        try:
            iss = check_issuer(query.get("iss"))
            at = evaluation_time(query.get("at"))
            launch_token = query.get("launch")
            config = await discover(iss)
            authorize = check_endpoint(config.get("authorization_endpoint"), "authorization_endpoint")
            token_endpoint = check_endpoint(config.get("token_endpoint"), "token_endpoint")
        except SmartError as exc:
            log.warning("smart launch refused", extra={"reason": exc.title})
            return failure(exc)
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(32)
        scope = settings.smart_scopes
        if launch_token is None:
            # Standalone: no EHR context to bind; ask the authorization server for a patient picker.
            scope = " ".join(s for s in scope.split() if s != "launch")
        session_id = sessions.create(
            SmartSession(
                iss=iss,
                expires=sessions.now() + PENDING_SECONDS,
                state=state,
                verifier=verifier,
                token_endpoint=token_endpoint,
                at=at,
            )
        )
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_url,
            "scope": scope,
            "state": state,
            "aud": iss,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if launch_token is not None:
            params["launch"] = launch_token
        separator = "&" if urlsplit(authorize).query else "?"
        response = RedirectResponse(f"{authorize}{separator}{urlencode(params)}", status_code=302)
        response.headers.update(_SECURITY_HEADERS)
        set_cookie(response, session_id)
        log.info("smart launch", extra={"kind": "ehr" if launch_token is not None else "standalone"})
        return response

    @router.get("/callback")
    async def callback(request: Request) -> Response:
        """Back from authorize: check ``state``, exchange the code with the PKCE verifier."""
        query = request.query_params
        # One use: whatever happens next, this pending launch is spent.
        session = sessions.pop(request.cookies.get(COOKIE))
        try:
            if session is None or session.state is None or session.verifier is None:
                raise SmartError(
                    400, "Launch expired or unknown", "No launch is pending in this browser; start it again."
                )
            given_state = query.get("state") or ""
            if not hmac.compare_digest(given_state.encode(), session.state.encode()):
                raise SmartError(400, "Launch refused", "The state does not match this browser's launch.")
            if "error" in query:
                description = _short(query.get("error_description"))
                raise SmartError(
                    400,
                    "Authorization refused",
                    f"The authorization server answered {_short(query.get('error'))}"
                    + (f": {description}" if description else "."),
                )
            code = query.get("code")
            if not code:
                raise SmartError(400, "Launch refused", "The authorization server sent no code.")
            token = await exchange(session, code)
        except SmartError as exc:
            log.warning("smart callback refused", extra={"reason": exc.title})
            refused = failure(exc)
            refused.delete_cookie(COOKIE, path=COOKIE_PATH)
            return refused
        lifetime = settings.smart_session_minutes * 60
        expires_in = token.get("expires_in")
        if isinstance(expires_in, int | float) and expires_in > 0:
            lifetime = min(lifetime, float(expires_in))
        signed_in = SmartSession(
            iss=session.iss,
            expires=sessions.now() + lifetime,
            at=session.at,
            access_token=str(token["access_token"]),
            scope=str(token.get("scope") or ""),
            patient=str(token["patient"]),
        )
        target = "/smart/app" + (f"?{urlencode({'at': session.at})}" if session.at else "")
        response = RedirectResponse(target, status_code=303)
        response.headers.update(_SECURITY_HEADERS)
        set_cookie(response, sessions.create(signed_in))  # a new id: no session fixation
        log.info("smart signed in", extra={"patient": patient_hash(signed_in.patient or "")})
        return response

    async def exchange(session: SmartSession, code: str) -> dict[str, Any]:
        assert session.token_endpoint is not None and session.verifier is not None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_url,
            "client_id": client_id,
            "code_verifier": session.verifier,
        }
        try:
            response = await http().post(
                session.token_endpoint, data=form, headers={"Accept": "application/json"}, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise SmartError(
                502, "Token request failed", f"The token endpoint could not be reached ({type(exc).__name__})."
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            if isinstance(body, dict) and "error" in body:
                description = _short(body.get("error_description"))
                detail = f"The token endpoint answered {_short(body['error'])}" + (
                    f": {description}" if description else "."
                )
            else:
                detail = f"The token endpoint answered HTTP {response.status_code}."
            raise SmartError(502, "Token request refused", detail)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise SmartError(502, "Token request failed", "The token response has no access_token.")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise SmartError(502, "Token request failed", "The token response is not a Bearer token.")
        patient = body.get("patient")
        if not isinstance(patient, str) or not FHIR_ID.match(patient):
            raise SmartError(
                502,
                "No patient selected",
                "The token response names no patient (launch/patient context): open the app from a patient's chart.",
            )
        return body

    def signed_in(request: Request) -> SmartSession:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None or session.access_token is None or session.patient is None:
            raise SmartError(401, "Not signed in", "This session has ended or never started; launch the app again.")
        return session

    async def document(request: Request) -> tuple[dict[str, Any], Any]:
        session = signed_in(request)
        at = evaluation_time(request.query_params.get("at")) or session.at
        hook_request = CdsRequest.model_validate(
            {
                "hook": HOOK,
                "hookInstance": f"smart-{secrets.token_hex(8)}",
                "context": {"patientId": session.patient},
                "fhirServer": session.iss,
                "fhirAuthorization": {
                    "access_token": session.access_token,
                    "token_type": "Bearer",
                    "scope": session.scope or settings.smart_scopes,
                    "subject": client_id,
                    "patient": session.patient,
                },
                "extension": {AT_EXTENSION: at} if at else None,
            }
        )
        try:
            evaluation = await service.gather_and_evaluate(hook_request)
        except ServiceError as exc:
            raise SmartError(502, "Patient data could not be read", exc.reason) from None
        return course_document(evaluation, service.grading.config, session.patient or ""), evaluation

    @router.get("/app")
    async def app_page(request: Request) -> Response:
        """The course page: server-rendered HTML and inline SVG, no scripts, no external assets."""
        try:
            body, evaluation = await document(request)
        except SmartError as exc:
            return failure(exc)
        return page(200, render_page(body, evaluation))

    @router.get("/course")
    async def course_json(request: Request) -> Response:
        """The JSON behind the page (``course_document``), for the signed-in session only."""
        try:
            body, _ = await document(request)
        except SmartError as exc:
            return JSONResponse(
                {"error": exc.title, "detail": exc.detail}, status_code=exc.status, headers=_SECURITY_HEADERS
            )
        return JSONResponse(body, headers=_SECURITY_HEADERS)

    return router
