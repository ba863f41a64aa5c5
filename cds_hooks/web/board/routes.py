"""``/board`` and ``/board/launch``: the unit board and its user-level sign-in.

Why a user-level sign-in of its own: the board lists every watched patient, so the signed-in
person must be authorised for patients in general (``user/...`` scopes), not for the one patient
of a chart. A session from a launch in one patient's context (``launch/patient``: the token names
a ``patient``), a course-page session, or a grant with only ``patient/`` scopes is refused with a
403 page. The sign-in reuses the SMART app's discovery, PKCE, ``state`` and server-side sessions
(``web/smart``); the board's session has its own cookie, scoped to ``/board``.

No patient identifier is logged here: the page's rows are counted, never named.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from cds_hooks.advice.display import site_zone
from cds_hooks.stores.feedback_store import patient_hash
from cds_hooks.stores.watch_store import WatchStore
from cds_hooks.web.board.page import BoardRow, render_board
from cds_hooks.web.smart.context import SECURITY_HEADERS, SmartApp, SmartError, failure, page, smart_app
from cds_hooks.web.smart.routes import start_authorization
from cds_hooks.web.smart.sessions import BOARD_COOKIE, PURPOSE_BOARD, SmartSession

log = logging.getLogger("crs_cds.board")

SmartDep = Annotated[SmartApp, Depends(smart_app)]
router = APIRouter(prefix="/board", include_in_schema=False)

OPEN_ALERTS_WITHOUT_EPISODE = timedelta(hours=24)
"""With no episode in progress, alerts of the last 24 h are still shown as open [choice]."""


def board_issuer(smart: SmartApp) -> str | None:
    """The FHIR server whose users sign in to the board: configured, else the watched server,
    else the only SMART issuer (None: the sign-in link must name ``iss``)."""
    settings = smart.settings
    chosen = settings.board_issuer or settings.watch_fhir_server
    if chosen is not None:
        return chosen.strip().rstrip("/")
    return next(iter(smart.issuers)) if len(smart.issuers) == 1 else None


def user_level(session: SmartSession) -> bool:
    """A board session: signed in for the board, no patient context, and a ``user/`` scope granted."""
    scopes = session.scope.split()
    return (
        session.access_token is not None
        and session.purpose == PURPOSE_BOARD
        and session.patient is None
        and any(s.startswith("user/") for s in scopes)
    )


def _store(request: Request, smart: SmartApp) -> WatchStore:
    """The watcher's tables in the service's database, opened once per app."""
    store = getattr(request.app.state, "board_store", None)
    if store is None:
        store = WatchStore(smart.state.database)
        request.app.state.board_store = store
    assert isinstance(store, WatchStore)
    return store


@router.get("/launch")
async def board_launch(request: Request, smart: SmartDep) -> Response:
    """The standalone sign-in with the board's user scopes (never an EHR launch in a chart)."""
    query = request.query_params
    try:
        if query.get("launch") is not None:
            raise SmartError(
                400, "Sign-in refused", "The unit board opens with its own sign-in, not from one patient's chart."
            )
        iss = smart.check_issuer(query.get("iss") or board_issuer(smart))
        config = await smart.discover(iss)
        authorize = smart.check_endpoint(config.get("authorization_endpoint"), "authorization_endpoint")
        token_endpoint = smart.check_endpoint(config.get("token_endpoint"), "token_endpoint")
    except SmartError as exc:
        log.warning("board sign-in refused", extra={"reason": exc.title})
        return failure(exc)
    return await start_authorization(
        smart,
        iss=iss,
        authorize=authorize,
        token_endpoint=token_endpoint,
        scope=smart.settings.board_scopes,
        at=None,
        launch_token=None,
        purpose=PURPOSE_BOARD,
    )


@router.get("")
async def board_page(request: Request, smart: SmartDep) -> Response:
    """The board: 303 to the sign-in without a session, 403 for a session that is not user-level."""
    session = await smart.find_session(request.cookies.get(BOARD_COOKIE))
    if session is None or session.access_token is None:
        response = RedirectResponse("/board/launch", status_code=303)
        response.headers.update(SECURITY_HEADERS)
        return response
    if not user_level(session):
        log.warning("board refused: not a user-level session", extra={"purpose": session.purpose})
        return failure(
            SmartError(
                403,
                "Not authorised for the unit board",
                "The board lists every watched patient: it needs a user-level sign-in (user/ scopes). "
                "A sign-in in one patient's context cannot open it.",
            )
        )
    now = datetime.now(UTC)
    # The watcher's tables are in the same database as the sessions: read off the event loop too.
    rows, unlisted = await asyncio.to_thread(
        lambda: board_rows(_store(request, smart), smart.settings.watch_patients, now)
    )
    log.info("board shown", extra={"rows": len(rows), "unlisted": unlisted})
    overdue = timedelta(hours=smart.settings.watch_stale_after_hours)
    return page(
        200,
        render_board(
            rows,
            now=now,
            refresh_s=smart.settings.board_refresh_s,
            overdue_after=overdue,
            unlisted=unlisted,
            zone=site_zone(smart.settings.site_timezone),
        ),
    )


def board_rows(store: WatchStore, patients: list[str], now: datetime) -> tuple[list[BoardRow], int]:
    """One row per configured patient (in the configured order), and how many graded patients
    the store holds that this service cannot name (the store keeps hashes only)."""
    snapshots = store.board_rows()
    rows: list[BoardRow] = []
    named: set[str] = set()
    for patient_id in dict.fromkeys(patients):
        hashed = patient_hash(patient_id)
        named.add(hashed)
        snapshot = snapshots.get(hashed)
        alerts = store.alerts_for(hashed, _open_since(snapshot, now)) if snapshot is not None else []
        rows.append(BoardRow(f"Patient/{patient_id}", snapshot, [a.body for a in alerts]))
    unlisted = sum(1 for h in snapshots if h not in named)
    return rows, unlisted


def _open_since(snapshot: dict[str, object], now: datetime) -> datetime:
    """Alerts count as open from the onset of the earliest episode in progress (CRS or ICANS)."""
    onsets: list[datetime] = []
    for key in ("crs", "icans"):
        system = snapshot.get(key)
        onset = system.get("episodeOnset") if isinstance(system, dict) else None
        if isinstance(onset, str):
            try:
                onsets.append(datetime.fromisoformat(onset.replace("Z", "+00:00")))
            except ValueError:
                continue
    return min(onsets) if onsets else now - OPEN_ALERTS_WITHOUT_EPISODE
