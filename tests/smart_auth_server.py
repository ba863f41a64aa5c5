"""A small SMART authorization server and FHIR facade the SMART app tests start on loopback.

Why a real server and not mocks: the launch must be proved over sockets as an EHR runs it
(discovery, a browser redirect to ``/authorize``, a form POST to ``/token``, then Bearer-token FHIR
reads). It is strict where a real server is: ``/authorize`` checks client id, redirect URI, ``aud``
and that a S256 challenge is present; ``/token`` checks the code once, the redirect URI and the PKCE
verifier against the challenge. The FHIR facade at ``/fhir`` serves the smart-configuration and
passes reads through to the sekmet FHIR server only with an access token it issued, so a test also
proves the app sent the token (and only to the launch's ``iss``). ``/authorize`` auto-approves.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

LOOPBACK = "127.0.0.1"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class Grant:
    challenge: str
    redirect_uri: str
    client_id: str
    scope: str


@dataclass
class AuthState:
    """What the server was configured with and what it saw (for assertions)."""

    client_id: str
    patient: str | None
    upstream: str
    redirect_uri: str = ""
    codes: dict[str, Grant] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    fhir_requests: list[str] = field(default_factory=list)
    configuration_requests: int = 0
    """How often ``.well-known/smart-configuration`` was read."""
    patient_context_always: bool = False
    """Name the patient in every token response, even for a user-scope sign-in."""
    authorize_error: str | None = None
    """Set to e.g. ``access_denied`` to make ``/authorize`` refuse."""


def _asks_patient_context(scope: str) -> bool:
    """A patient in the token only when the launch asked for patient context (``launch`` from a
    chart, ``launch/patient`` standalone); a user-scope standalone sign-in (the unit board) gets none.
    """
    return bool({"launch", "launch/patient"} & set(scope.split()))


def build_auth_app(state: AuthState, base_url: str) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    fhir_base = f"{base_url}/fhir"

    @app.get("/fhir/.well-known/smart-configuration")
    async def smart_configuration() -> Response:
        state.configuration_requests += 1
        return JSONResponse(
            {
                "issuer": base_url,
                "authorization_endpoint": f"{base_url}/authorize",
                "token_endpoint": f"{base_url}/token",
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"],
                "capabilities": ["launch-ehr", "launch-standalone", "context-ehr-patient", "client-public"],
            }
        )

    @app.get("/authorize")
    async def authorize(request: Request) -> Response:
        params = dict(request.query_params)
        state.authorize_requests.append(params)
        ok = (
            params.get("response_type") == "code"
            and params.get("client_id") == state.client_id
            and params.get("redirect_uri") == state.redirect_uri
            and params.get("aud") == fhir_base
            and params.get("code_challenge_method") == "S256"
            and len(params.get("code_challenge", "")) == 43
            and params.get("state")
        )
        if not ok:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        query: dict[str, str] = {"state": params["state"]}
        if state.authorize_error:
            query["error"] = state.authorize_error
            query["error_description"] = "The user declined."
        else:
            code = secrets.token_urlsafe(16)
            state.codes[code] = Grant(
                params["code_challenge"], params["redirect_uri"], state.client_id, params["scope"]
            )
            query["code"] = code
        return RedirectResponse(f"{state.redirect_uri}?{urlencode(query)}", status_code=302)

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        state.token_requests.append(form)
        grant = state.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown or used code"}, 400)
        if form.get("redirect_uri") != grant.redirect_uri or form.get("client_id") != grant.client_id:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, 400)
        if s256(form.get("code_verifier", "")) != grant.challenge:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verification failed"}, 400)
        access = "at-" + secrets.token_urlsafe(24)
        state.tokens.add(access)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": grant.scope,
        }
        if state.patient is not None and (state.patient_context_always or _asks_patient_context(grant.scope)):
            body["patient"] = state.patient
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.get("/fhir/{path:path}")
    async def fhir(path: str, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in state.tokens:
            return JSONResponse({"resourceType": "OperationOutcome"}, status_code=401)
        state.fhir_requests.append(path)
        async with httpx.AsyncClient(timeout=20.0) as client:
            upstream = await client.get(
                f"{state.upstream}/{path}", params=request.query_params, headers={"Accept": "application/fhir+json"}
            )
        text = upstream.text.replace(state.upstream, fhir_base)
        return Response(text, status_code=upstream.status_code, media_type="application/fhir+json")

    return app


class RunningAuthServer:
    """The app above on a free loopback port, served by uvicorn in a daemon thread."""

    def __init__(self, client_id: str, upstream: str, patient: str | None) -> None:
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            self.port: int = sock.getsockname()[1]
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.iss = f"{self.base_url}/fhir"
        self.state = AuthState(client_id=client_id, patient=patient, upstream=upstream.rstrip("/"))
        config = uvicorn.Config(
            build_auth_app(self.state, self.base_url),
            host=LOOPBACK,
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> RunningAuthServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test authorization server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
