"""The ``/smart/...`` routes: launch, callback, the course page and its JSON.

Why this flow: ``state`` (256 bits, one use, bound to the browser's session cookie) defeats login
CSRF and code injection; PKCE S256 binds the code to this session's verifier; the session id is
replaced after the token exchange (no session fixation).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from cds_hooks.cds import CdsRequest
from cds_hooks.errors import ServiceError
from cds_hooks.pipeline.course import course_document
from cds_hooks.pipeline.evaluate import Evaluation
from cds_hooks.pipeline.hook import AT_EXTENSION, HOOK
from cds_hooks.stores.feedback_store import patient_hash
from cds_hooks.web.smart.context import SECURITY_HEADERS, SmartApp, SmartError, failure, page, short, smart_app
from cds_hooks.web.smart.page import render_page
from cds_hooks.web.smart.sessions import (
    BOARD_COOKIE,
    BOARD_COOKIE_PATH,
    COOKIE,
    COOKIE_PATH,
    PENDING_SECONDS,
    PURPOSE_BOARD,
    PURPOSE_COURSE,
    SmartSession,
    pkce_pair,
)

log = logging.getLogger("crs_cds.smart")

SmartDep = Annotated[SmartApp, Depends(smart_app)]

router = APIRouter(prefix="/smart", include_in_schema=False)


@router.get("/launch")
async def launch(request: Request, smart: SmartDep) -> Response:
    """EHR launch (``iss`` + ``launch``) or standalone launch (``iss`` only): off to authorize."""
    query = request.query_params
    try:
        iss = smart.check_issuer(query.get("iss"))
        at = smart.evaluation_time(query.get("at"))
        launch_token = query.get("launch")
        config = await smart.discover(iss)
        authorize = smart.check_endpoint(config.get("authorization_endpoint"), "authorization_endpoint")
        token_endpoint = smart.check_endpoint(config.get("token_endpoint"), "token_endpoint")
    except SmartError as exc:
        log.warning("smart launch refused", extra={"reason": exc.title})
        return failure(exc)
    scope = smart.settings.smart_scopes
    if launch_token is None:
        # Standalone: no EHR context to bind; ask the authorization server for a patient picker.
        scope = " ".join(s for s in scope.split() if s != "launch")
    return await start_authorization(
        smart,
        iss=iss,
        authorize=authorize,
        token_endpoint=token_endpoint,
        scope=scope,
        at=at,
        launch_token=launch_token,
        purpose=PURPOSE_COURSE,
    )


async def start_authorization(
    smart: SmartApp,
    *,
    iss: str,
    authorize: str,
    token_endpoint: str,
    scope: str,
    at: str | None,
    launch_token: str | None,
    purpose: str,
) -> Response:
    """A pending launch (state + PKCE verifier, server-side) and the redirect to ``authorize``.

    Shared by the course page's launch and the unit board's sign-in: the pending session says
    which of them the callback completes (``purpose``).
    """
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    session_id = await smart.create_session(
        SmartSession(
            iss=iss,
            expires=smart.sessions.now() + PENDING_SECONDS,
            state=state,
            verifier=verifier,
            token_endpoint=token_endpoint,
            at=at,
            purpose=purpose,
        )
    )
    params = {
        "response_type": "code",
        "client_id": smart.client_id,
        "redirect_uri": smart.redirect_url,
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
    response.headers.update(SECURITY_HEADERS)
    smart.set_cookie(response, session_id)
    kind = "ehr" if launch_token is not None else "standalone"
    log.info("smart launch", extra={"kind": kind, "purpose": purpose})
    return response


@router.get("/callback")
async def callback(request: Request, smart: SmartDep) -> Response:
    """Back from authorize: check ``state``, exchange the code with the PKCE verifier."""
    query = request.query_params
    sessions = smart.sessions
    session_id = request.cookies.get(COOKIE)
    session = await smart.find_session(session_id)
    spent = False
    try:
        if session is None or session.state is None or session.verifier is None:
            # Nothing pending (or a signed-in session): change nothing, a GET any page can trigger
            # must not sign the clinician out.
            raise SmartError(400, "Launch expired or unknown", "No launch is pending in this browser; start it again.")
        given_state = query.get("state") or ""
        if not hmac.compare_digest(given_state.encode(), session.state.encode()):
            # Without the state check passed, nothing changes: the real callback can still come.
            raise SmartError(400, "Launch refused", "The state does not match this browser's launch.")
        # One use: from here on, whatever happens next, this pending launch is spent. The store
        # is read off the loop, so a second callback may have spent it since: then it is refused.
        if await smart.spend_session(session_id) is None:
            raise SmartError(400, "Launch expired or unknown", "No launch is pending in this browser; start it again.")
        spent = True
        if "error" in query:
            description = short(query.get("error_description"))
            raise SmartError(
                400,
                "Authorization refused",
                f"The authorization server answered {short(query.get('error'))}"
                + (f": {description}" if description else "."),
            )
        code = query.get("code")
        if not code:
            raise SmartError(400, "Launch refused", "The authorization server sent no code.")
        board = session.purpose == PURPOSE_BOARD
        token = await smart.exchange(session, code, require_patient=not board)
    except SmartError as exc:
        log.warning("smart callback refused", extra={"reason": exc.title})
        refused = failure(exc)
        if spent:
            refused.delete_cookie(COOKIE, path=COOKIE_PATH)
        return refused
    lifetime = smart.settings.smart_session_minutes * 60
    expires_in = token.get("expires_in")
    if isinstance(expires_in, int | float) and expires_in > 0:
        lifetime = min(lifetime, float(expires_in))
    if board:
        return await _board_signed_in(smart, session, token, lifetime)
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
    response.headers.update(SECURITY_HEADERS)
    smart.set_cookie(response, await smart.create_session(signed_in))  # a new id: no session fixation
    log.info("smart signed in", extra={"patient": patient_hash(signed_in.patient or "")})
    return response


async def _board_signed_in(smart: SmartApp, pending: SmartSession, token: dict[str, Any], lifetime: float) -> Response:
    """The unit board's session: its own cookie (path ``/board``), never the course page's.

    A patient in the token response is kept, not dropped: the board refuses such a session (a
    launch in one patient's context cannot authorise a list of every watched patient).
    """
    patient = token.get("patient")
    signed_in = SmartSession(
        iss=pending.iss,
        expires=smart.sessions.now() + lifetime,
        access_token=str(token["access_token"]),
        scope=str(token.get("scope") or ""),
        patient=patient if isinstance(patient, str) and patient else None,
        purpose=PURPOSE_BOARD,
    )
    response = RedirectResponse("/board", status_code=303)
    response.headers.update(SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)  # the pending launch is spent
    session_id = await smart.create_session(signed_in)
    smart.set_cookie(response, session_id, name=BOARD_COOKIE, path=BOARD_COOKIE_PATH)
    log.info("board signed in", extra={"patient_context": signed_in.patient is not None})
    return response


async def _signed_in(request: Request, smart: SmartApp) -> SmartSession:
    session = await smart.find_session(request.cookies.get(COOKIE))
    if session is None or session.access_token is None or session.patient is None or session.purpose != PURPOSE_COURSE:
        raise SmartError(401, "Not signed in", "This session has ended or never started; launch the app again.")
    return session


async def _document(request: Request, smart: SmartApp) -> tuple[dict[str, Any], Evaluation]:
    """The course document for the signed-in patient, read with the session's own token."""
    session = await _signed_in(request, smart)
    at = smart.evaluation_time(request.query_params.get("at")) or session.at
    hook_request = CdsRequest.model_validate(
        {
            "hook": HOOK,
            "hookInstance": f"smart-{secrets.token_hex(8)}",
            "context": {"patientId": session.patient},
            "fhirServer": session.iss,
            "fhirAuthorization": {
                "access_token": session.access_token,
                "token_type": "Bearer",
                "scope": session.scope or smart.settings.smart_scopes,
                "subject": smart.client_id,
                "patient": session.patient,
            },
            "extension": {AT_EXTENSION: at} if at else None,
        }
    )
    service = smart.state.service
    try:
        evaluation = await service.gather_and_evaluate(hook_request)
    except ServiceError as exc:
        raise SmartError(502, "Patient data could not be read", exc.reason) from None
    return course_document(evaluation, service.grading.config, session.patient or ""), evaluation


@router.get("/app")
async def app_page(request: Request, smart: SmartDep) -> Response:
    """The course page: server-rendered HTML and inline SVG, no scripts, no external assets."""
    try:
        body, evaluation = await _document(request, smart)
    except SmartError as exc:
        return failure(exc)
    return page(200, render_page(body, evaluation, smart.settings.site_timezone))


@router.get("/course")
async def course_json(request: Request, smart: SmartDep) -> Response:
    """The JSON behind the page (``course_document``), for the signed-in session only."""
    try:
        body, _ = await _document(request, smart)
    except SmartError as exc:
        return JSONResponse(
            {"error": exc.title, "detail": exc.detail}, status_code=exc.status, headers=SECURITY_HEADERS
        )
    return JSONResponse(body, headers=SECURITY_HEADERS)
