"""What the SMART routes share: the registered client, the session store, and the outbound steps
(issuer check, SMART configuration discovery, the token exchange) with their checks.

Why these checks, in this order:

* ``iss`` must be on the SMART issuer allow-list *and* pass the FHIR fetch policy before anything
  is fetched, so a crafted launch link cannot make the service call (or send a code to) an
  arbitrary server;
* the authorization and token endpoints are discovered from ``{iss}/.well-known/smart-configuration``
  (no redirects followed, bounded time, https unless insecure servers are allowed for tests);
* no token, code or verifier is ever logged or rendered, and error pages show only the
  authorization server's ``error`` / ``error_description`` (escaped, shortened).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from cds_hooks.cds import FHIR_ID
from cds_hooks.reading.fhir_client import FhirServerRejected
from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.settings import is_loopback_host
from cds_hooks.web.smart.page import error_page
from cds_hooks.web.smart.sessions import COOKIE, COOKIE_PATH, Sessions, SessionStore, SmartSession
from cds_hooks.web.state import WebState

_ERROR_TEXT_MAX = 300
SECURITY_HEADERS = {
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


def short(value: object) -> str:
    """An authorization server's text, cut short before it is shown (escaped by the page)."""
    text = str(value) if value is not None else ""
    return text[:_ERROR_TEXT_MAX]


def insecure_cookie_ok(redirect_url: str) -> bool:
    """Only a plain-http loopback redirect URL (local development and tests) drops ``Secure``."""
    parts = urlsplit(redirect_url)
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


def page(status: int, body: str) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def failure(exc: SmartError) -> HTMLResponse:
    return page(exc.status, error_page(exc.title, exc.detail))


SMART_CONFIG_TTL_SECONDS = 300.0
"""How long an issuer's SMART configuration is reused before it is read again [choice]."""
SMART_CONFIG_FAILURE_TTL_SECONDS = 10.0
"""How long a failed read is answered from memory before the issuer is asked again [choice]."""


@dataclass
class _CachedConfig:
    expires: float
    config: dict[str, Any] | None = None
    error: SmartError | None = None

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            raise SmartError(self.error.status, self.error.title, self.error.detail)
        assert self.config is not None
        return dict(self.config)


class SmartApp:
    """The SMART app's configuration and steps; one per ``create_app``, on ``app.state.smart``."""

    def __init__(
        self, state: WebState, sessions: Sessions | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        settings = state.settings
        assert settings.smart_client_id is not None and settings.smart_redirect_url is not None
        self.state = state
        self.settings = settings
        self.client_id: str = settings.smart_client_id
        self.redirect_url: str = settings.smart_redirect_url
        self.sessions: Sessions = sessions if sessions is not None else SessionStore()  # empty is falsy
        self.issuers = frozenset(settings.smart_issuer_allowlist or settings.fhir_server_allowlist)
        self.secure_cookie = not insecure_cookie_ok(self.redirect_url)
        self.timeout = httpx.Timeout(settings.fhir_request_timeout_seconds)
        self.clock = clock
        self._configs: dict[str, _CachedConfig] = {}
        self._config_locks: dict[str, asyncio.Lock] = {}

    # The session store, always from a worker thread: the shared store waits for the database
    # (up to its connect timeout), and a wait on the event loop would hold every CDS Hooks call
    # of this replica behind one SMART page. One code path for both stores; ``StoreUnavailable``
    # comes out of the thread unchanged (503 with Retry-After).

    async def create_session(self, session: SmartSession) -> str:
        """A new session id for ``session`` (pending or signed in), stored off the event loop."""
        return await asyncio.to_thread(self.sessions.create, session)

    async def find_session(self, session_id: str | None) -> SmartSession | None:
        """The live session behind a cookie, read off the event loop."""
        return await asyncio.to_thread(self.sessions.get, session_id)

    async def spend_session(self, session_id: str | None) -> SmartSession | None:
        """Remove and return the session (None when another request spent it first)."""
        return await asyncio.to_thread(self.sessions.pop, session_id)

    def http(self) -> httpx.AsyncClient:
        """The lifespan's shared client; 503 before start-up finished."""
        shared = self.state.http
        if shared is None:
            raise SmartError(503, "Service starting", "The service is not ready; try again in a moment.")
        return shared

    def set_cookie(self, response: Response, session_id: str, *, name: str = COOKIE, path: str = COOKIE_PATH) -> None:
        response.set_cookie(
            name,
            session_id,
            max_age=int(self.settings.smart_session_minutes * 60),
            path=path,
            httponly=True,
            secure=self.secure_cookie,
            samesite="lax",
        )

    def check_issuer(self, iss: str | None) -> str:
        if not iss:
            raise SmartError(400, "Launch refused", "The launch did not name a FHIR server (iss).")
        base = iss.strip().rstrip("/")
        if base not in self.issuers:
            raise SmartError(400, "Launch refused", "This FHIR server (iss) is not registered for this app.")
        try:
            return self.state.policy.check(base)
        except FhirServerRejected as exc:
            raise SmartError(400, "Launch refused", f"This FHIR server (iss) cannot be used: {exc}.") from None

    def check_endpoint(self, url: object, name: str) -> str:
        if not isinstance(url, str):
            raise SmartError(502, "Authorization server misconfigured", f"smart-configuration lacks {name}.")
        parts = urlsplit(url)
        if not parts.netloc or parts.username or parts.password:
            raise SmartError(502, "Authorization server misconfigured", f"{name} is not an absolute URL.")
        if parts.scheme != "https" and not (parts.scheme == "http" and self.settings.allow_insecure_fhir_server):
            raise SmartError(502, "Authorization server misconfigured", f"{name} must use https.")
        return url

    async def discover(self, iss: str) -> dict[str, Any]:
        """The issuer's SMART configuration, from the cache while it is fresh.

        Why cached: a launch needs no authentication, so fetching on every launch let anyone make
        the service send requests to the issuer at will. A good configuration is kept for
        ``SMART_CONFIG_TTL_SECONDS``, a failure for ``SMART_CONFIG_FAILURE_TTL_SECONDS`` (the page
        says the same thing again without asking); the issuers are the configured few, so the
        cache is bounded by the allow-list.
        """
        cached = self._configs.get(iss)
        if cached is not None and self.clock() < cached.expires:
            return cached.result()
        async with self._config_locks.setdefault(iss, asyncio.Lock()):
            cached = self._configs.get(iss)
            if cached is not None and self.clock() < cached.expires:
                return cached.result()
            try:
                config = await self._fetch_configuration(iss)
            except SmartError as exc:
                self._configs[iss] = _CachedConfig(self.clock() + SMART_CONFIG_FAILURE_TTL_SECONDS, error=exc)
                raise
            self._configs[iss] = _CachedConfig(self.clock() + SMART_CONFIG_TTL_SECONDS, config=config)
            return config

    async def _fetch_configuration(self, iss: str) -> dict[str, Any]:
        """The issuer's ``.well-known/smart-configuration``, checked for PKCE S256."""
        url = f"{iss}/.well-known/smart-configuration"
        try:
            response = await self.http().get(url, headers={"Accept": "application/json"}, timeout=self.timeout)
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

    def evaluation_time(self, value: str | None) -> str | None:
        """A replay time from the URL (``at``), when the settings allow clients to choose it."""
        if value is None or value == "":
            return None
        if not self.settings.allow_client_evaluation_time:
            raise SmartError(400, "Evaluation time refused", "This service grades at the current time only.")
        if isinstance(parse_instant(value), str):
            raise SmartError(400, "Evaluation time refused", "'at' must be an instant with a time zone.")
        return value

    async def exchange(self, session: SmartSession, code: str, *, require_patient: bool = True) -> dict[str, Any]:
        """The token response for ``code`` with this session's PKCE verifier, checked for a patient
        unless the launch was a user-level one (the unit board), which the board checks itself."""
        assert session.token_endpoint is not None and session.verifier is not None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_url,
            "client_id": self.client_id,
            "code_verifier": session.verifier,
        }
        try:
            response = await self.http().post(
                session.token_endpoint, data=form, headers={"Accept": "application/json"}, timeout=self.timeout
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
                description = short(body.get("error_description"))
                detail = f"The token endpoint answered {short(body['error'])}" + (
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
        if not require_patient:
            return body
        if not isinstance(patient, str) or not FHIR_ID.match(patient):
            raise SmartError(
                502,
                "No patient selected",
                "The token response names no patient (launch/patient context): open the app from a patient's chart.",
            )
        return body


def smart_app(request: Request) -> SmartApp:
    return cast(SmartApp, request.app.state.smart)
