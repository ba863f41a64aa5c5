"""The unit board (issue 15 item 4): the watcher's per-patient snapshot, its store, and ``/board``
behind a user-level sign-in (no session -> sign in; patient context -> 403; user session -> rows).

The browser run against a real ``crs-cds serve`` and authorization server is
``tests/integration/test_smart_e2e.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.advice.display import site_zone
from cds_hooks.settings import Settings
from cds_hooks.stores.feedback_store import patient_hash
from cds_hooks.stores.watch_store import StoredAlert, WatchStore
from cds_hooks.watch.rules import CRS, ICANS, PatientView, SystemView
from cds_hooks.watch.snapshot import board_snapshot
from cds_hooks.web.app import create_app
from cds_hooks.web.board.page import render_board
from cds_hooks.web.smart.sessions import BOARD_COOKIE, SmartSession
from fastapi.testclient import TestClient

FHIR = "http://127.0.0.1:8998/fhir"
NOW = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
ONSET = NOW - timedelta(hours=10)


def _view(
    at: datetime,
    crs: int | None,
    *,
    at_least: int | None = None,
    onset: datetime | None = ONSET,
    icans: int | None = 0,
) -> PatientView:
    return PatientView(
        at=at,
        crs=SystemView(CRS, crs, at_least, episode_onset=onset, last_data_at=at - timedelta(hours=1)),
        icans=SystemView(ICANS, icans, episode_onset=None, last_data_at=None) if icans is not None else None,
    )


# -- the snapshot: trend, worst, tocilizumab -------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "now_view", "worst", "trend"),
    [
        pytest.param([], _view(NOW, 1), 1, [1], id="first-cycle->worst-is-current"),
        pytest.param(
            [_view(NOW - timedelta(hours=2), 3)], _view(NOW, 1), 3, [3, 1], id="same-episode->worst-carried-3"
        ),
        pytest.param(
            [_view(NOW - timedelta(hours=2), 3)],
            _view(NOW, 1, onset=NOW - timedelta(hours=1)),
            1,
            [3, 1],
            id="new-episode->worst-resets",
        ),
        pytest.param(
            [_view(NOW - timedelta(hours=25), 3), _view(NOW - timedelta(hours=3), 2, onset=None)],
            _view(NOW, 0, onset=None),
            2,
            [2, 0],
            id="no-episode->worst-of-24h-older-point-dropped",
        ),
        pytest.param([], _view(NOW, None, at_least=1), 1, [1], id="indeterminate->at-least-kept-as-floor"),
    ],
)
def test_snapshot_trend_and_worst(
    history: list[PatientView], now_view: PatientView, worst: int, trend: list[int]
) -> None:
    snapshot: dict[str, Any] | None = None
    for view in history:
        snapshot = board_snapshot(snapshot, view, tocilizumab_given=0)
    snapshot = board_snapshot(snapshot, now_view, tocilizumab_given=0)
    assert snapshot["crs"]["worst"] == worst
    assert [p["crs"] for p in snapshot["trend"]] == trend
    assert snapshot["trend"][-1]["crsIndeterminate"] is (now_view.crs.grade is None)


@pytest.mark.parametrize(
    ("given", "left"),
    [
        pytest.param(0, 4, id="none-given->4-left"),
        pytest.param(3, 1, id="3-given->1-left"),
        pytest.param(5, 0, id="over-limit->0-left-never-negative"),
    ],
)
def test_snapshot_tocilizumab_left(given: int, left: int) -> None:
    snapshot = board_snapshot(None, _view(NOW, 2), tocilizumab_given=given)
    assert snapshot["tocilizumab"] == {"given": given, "left": left, "limit": 4}


# -- the store ------------------------------------------------------------------------------------


def test_store_keeps_last_snapshot_and_open_alerts(tmp_path: Path) -> None:
    store = WatchStore.open(f"sqlite:///{tmp_path / 'w.sqlite3'}")
    first = board_snapshot(None, _view(NOW - timedelta(hours=1), 1), tocilizumab_given=0)
    second = board_snapshot(first, _view(NOW, 2), tocilizumab_given=1)
    alert = StoredAlert("a1", "h1", "grade-rise", CRS, 2, NOW, {"id": "a1", "summary": "CRS grade 2"})
    store.save_cycle("h1", {"systems": {}}, [], first)
    store.save_cycle("h1", {"systems": {}}, [alert], second)
    store.save_cycle("h2", {"systems": {}}, [])  # a cycle without a board row leaves none
    assert set(store.board_rows()) == {"h1"}
    assert store.board_rows()["h1"]["crs"]["grade"] == 2
    assert [a.alert_id for a in store.alerts_for("h1", ONSET)] == ["a1"]
    assert store.alerts_for("h1", NOW + timedelta(minutes=1)) == []
    store.close()


# -- /board: sign-in and authorisation ------------------------------------------------------------

PATIENTS = ["p-ward-1", "p-ward-2"]
USER_SCOPE = "openid fhirUser user/Patient.rs user/Observation.rs"


@pytest.fixture
def board_app(tmp_path: Path) -> Iterator[tuple[TestClient, WatchStore]]:
    settings = Settings(
        allow_unauthenticated=True,
        database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        fhir_server_allowlist=[FHIR],
        allow_insecure_fhir_server=True,
        smart_client_id="crs-board-test",
        smart_redirect_url="http://127.0.0.1:8999/smart/callback",
        watch_patients=",".join(PATIENTS),
    )
    store = WatchStore.open(settings.database_url)
    now = datetime.now(UTC)
    onset = now - timedelta(hours=6)
    view = PatientView(
        at=now - timedelta(minutes=4),
        crs=SystemView(CRS, None, 2, episode_onset=onset, last_data_at=now - timedelta(hours=9)),
        icans=SystemView(ICANS, 1, episode_onset=onset, last_data_at=now - timedelta(minutes=30)),
    )
    alert = StoredAlert(
        "a1",
        patient_hash(PATIENTS[0]),
        "grade-rise",
        CRS,
        2,
        now - timedelta(hours=1),
        {"id": "a1", "summary": "CRS (ASTCT 2019) rose to at least grade 2"},
    )
    store.save_cycle(
        patient_hash(PATIENTS[0]), {"systems": {}}, [alert], board_snapshot(None, view, tocilizumab_given=1)
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client, store
    store.close()


def _sign_in(client: TestClient, **session: Any) -> None:
    values: dict[str, Any] = {
        "iss": FHIR,
        "expires": 10**12,
        "access_token": "user-token-xyz",
        "scope": USER_SCOPE,
        "purpose": "board",
    }
    values.update(session)
    smart = client.app.state.smart  # type: ignore[attr-defined]
    values["expires"] = smart.sessions.now() + 600
    client.cookies.set(BOARD_COOKIE, smart.sessions.create(SmartSession(**values)))


@pytest.mark.parametrize(
    ("session", "status", "shows"),
    [
        pytest.param(None, 303, "/board/launch", id="no-session->redirect-to-sign-in"),
        pytest.param({"patient": "p-ward-1"}, 403, "needs a user-level sign-in", id="patient-context->403"),
        pytest.param(
            {"patient": "p-ward-1", "purpose": "course", "scope": "launch/patient patient/Observation.rs"},
            403,
            "needs a user-level sign-in",
            id="course-page-session->403",
        ),
        pytest.param({"scope": "openid patient/Observation.rs"}, 403, "user/ scopes", id="patient-scopes-only->403"),
        pytest.param({}, 200, "Patient/p-ward-1", id="user-session->rows"),
    ],
)
def test_board_sign_in_and_authorisation(
    board_app: tuple[TestClient, WatchStore], session: dict[str, Any] | None, status: int, shows: str
) -> None:
    client, _ = board_app
    if session is not None:
        _sign_in(client, **session)
    response = client.get("/board")
    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"
    if status == 303:
        assert response.headers["location"] == shows
    else:
        assert shows in response.text
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "<script" not in response.text


def test_board_rows_say_what_the_ward_needs(
    board_app: tuple[TestClient, WatchStore], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = board_app
    _sign_in(client)
    with caplog.at_level(logging.DEBUG):
        text = client.get("/board").text
    assert '<meta http-equiv="refresh" content="60">' in text
    assert "indeterminate (at least 2)" in text, "an indeterminate CRS grade is never shown as a number alone"
    assert "overdue: 9 h 00 min ago" in text, "no temperature for 9 h in an open episode is overdue (8 h)"
    assert "1 given, 3 left" in text
    assert "rose to at least grade 2" in text
    assert "<svg" in text and "@media print" in text
    assert "Not graded yet by the watcher" in text, "the second patient has no row yet: not 'no CRS'"
    ours = [r for r in caplog.records if r.name.startswith("crs_cds")]
    assert ours and not any("p-ward" in str(r.__dict__) or "user-token-xyz" in str(r.__dict__) for r in ours), (
        "no patient id or token in any log line"
    )


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        pytest.param("?launch=abc", 400, "not from one patient", id="ehr-launch->400"),
        pytest.param("?iss=https://evil.example.org/fhir", 400, "not registered", id="unknown-iss->400"),
    ],
)
def test_board_launch_refusals(board_app: tuple[TestClient, WatchStore], query: str, status: int, says: str) -> None:
    client, _ = board_app
    response = client.get(f"/board/launch{query}")
    assert response.status_code == status
    assert says in response.text


@pytest.mark.parametrize(
    ("zone", "stamp"),
    [
        pytest.param(None, "As of 2025-03-04 08:00 UTC.", id="no-site-zone->UTC-named"),
        pytest.param("Europe/Paris", "As of 2025-03-04 09:00 CET.", id="paris-winter->CET"),
        pytest.param("America/New_York", "As of 2025-03-04 03:00 EST.", id="new-york->EST"),
    ],
)
def test_board_stamp_reads_in_the_site_clock(zone: str | None, stamp: str) -> None:
    """The ward reads "As of" against its own clocks (CRS_CDS_SITE_TIMEZONE), as the cards do."""
    page = render_board([], now=NOW, refresh_s=60, overdue_after=timedelta(hours=8), zone=site_zone(zone))
    assert stamp in page
