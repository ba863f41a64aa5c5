"""End to end in a real headless Chromium: SMART launch -> authorize -> callback -> the course page.

Why a browser: only a browser proves the cookie attributes, the redirects and the page together
(SameSite and HttpOnly behaviour, the 302/303 chain, the SVG actually rendering). Chromium is
driven with Debian's ``chromium`` + ``chromium-driver`` over the W3C WebDriver protocol, spoken
directly with httpx (no extra client library to pin). The service runs as deployed
(``crs-cds serve`` with settings from the environment). A screenshot is saved to
``test-artifacts/smart-app.png`` only (git-ignored): a test run never rewrites a tracked file; the
README's ``docs/smart-app.png`` is refreshed by hand from it when the page changes.

Like the FHIR server, a missing browser fails rather than skips: ``.ci/setup`` (run by ``make test``
and ``.ci/run``) installs it.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cds_hooks.stores.feedback_store import patient_hash
from cds_hooks.stores.watch_store import WatchStore
from cds_hooks.watch.rules import CRS, ICANS, PatientView, SystemView
from cds_hooks.watch.snapshot import board_snapshot

from fhir_server import RunningFhirServer
from service_process import PROJECT_ROOT, RunningService, free_loopback_port
from smart_auth_server import RunningAuthServer

pytestmark = pytest.mark.integration

VIGNETTE = PROJECT_ROOT / "tests" / "fixtures" / "vignettes" / "V31.bundle.json"
AT = "2025-03-04T08:00:00Z"
CLIENT_ID = "crs-course-e2e"
BOARD_PATIENT = "v31"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1100,1500",
]


class SmartService(RunningService):
    """``crs-cds serve`` whose SMART redirect URL names the port it is given (known only at launch)."""

    def _launch(self, port: int) -> None:
        self._env["CRS_CDS_SMART_REDIRECT_URL"] = f"http://127.0.0.1:{port}/smart/callback"
        super()._launch(port)


class WebDriver:
    """Just enough W3C WebDriver over HTTP: a session, navigate, run a script, screenshot."""

    def __init__(self, driver_url: str, profile: str) -> None:
        self._http = httpx.Client(base_url=driver_url, timeout=60.0)
        capabilities = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": shutil.which("chromium") or "/usr/bin/chromium",
                        "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"],
                    },
                }
            }
        }
        self.session = self._call("POST", "/session", capabilities)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        value = response.json().get("value")
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {method} {path}: {response.status_code} {value}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def url(self) -> str:
        return str(self._call("GET", f"/session/{self.session}/url"))

    def script(self, source: str) -> Any:
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": source, "args": []})

    def delete_cookies(self) -> None:
        self._call("DELETE", f"/session/{self.session}/cookie")

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))

    def quit(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self._http.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.fail(
            "Debian's chromium and chromium-driver are needed (make test runs .ci/setup, which installs them)",
            pytrace=False,
        )
    port = free_loopback_port()
    profile = tempfile.TemporaryDirectory(prefix="crs-cds-chromium-")
    proc = subprocess.Popen(
        [driver_path, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/status", timeout=2).json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("chromedriver did not become ready", pytrace=False)
            time.sleep(0.1)
        driver = WebDriver(f"http://127.0.0.1:{port}", profile.name)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        profile.cleanup()


@pytest.fixture(scope="module")
def database() -> Iterator[tempfile.TemporaryDirectory[str]]:
    """The service's database, shared with the test so that it can stand in for the watcher."""
    folder = tempfile.TemporaryDirectory(prefix="crs-cds-board-")
    try:
        yield folder
    finally:
        folder.cleanup()


@pytest.fixture(scope="module")
def servers(
    fhir_server: RunningFhirServer, database: tempfile.TemporaryDirectory[str]
) -> Iterator[tuple[SmartService, RunningAuthServer]]:
    bundle = json.loads(VIGNETTE.read_text())
    fhir_server.load([entry["resource"] for entry in bundle["entry"]])
    auth = RunningAuthServer(CLIENT_ID, fhir_server.base_url, patient="v31").start()
    env = {
        "CRS_CDS_ALLOW_UNAUTHENTICATED": "true",
        "CRS_CDS_FHIR_SERVER_ALLOWLIST": auth.iss,
        "CRS_CDS_ALLOW_INSECURE_FHIR_SERVER": "true",
        "CRS_CDS_FHIR_REQUEST_TIMEOUT_SECONDS": "20",
        "CRS_CDS_HOOK_TIME_BUDGET_SECONDS": "40",
        "CRS_CDS_SMART_CLIENT_ID": CLIENT_ID,
        "CRS_CDS_WATCH_PATIENTS": BOARD_PATIENT,
        "CRS_CDS_DATABASE_URL": f"sqlite:///{database.name}/crs-cds.sqlite3",
    }
    try:
        with SmartService(env) as service:
            auth.state.redirect_uri = f"{service.base_url}/smart/callback"
            yield service, auth
    finally:
        auth.stop()


def test_browser_launch_shows_grade_and_tracks(
    browser: WebDriver, servers: tuple[SmartService, RunningAuthServer]
) -> None:
    service, auth = servers
    browser.get(f"{service.base_url}/smart/launch?{urlencode({'iss': auth.iss, 'launch': 'e2e-1', 'at': AT})}")
    assert browser.url().startswith(f"{service.base_url}/smart/app"), service.log()
    text = str(browser.script("return document.body.innerText"))
    assert "Current: Grade 2" in text, text
    assert "Worst in window: Grade 3" in text
    tracks = browser.script(
        "return Array.from(document.querySelectorAll('svg g.track')).map(g => g.getAttribute('aria-label'))"
    )
    assert tracks == [
        "ASTCT grade",
        "Temperature (°C)",
        "Blood pressure (mmHg)",
        "Oxygen support",
        "Vasopressors",
        "Therapies",
    ]
    assert browser.script("return document.cookie") == ""  # the session cookie is HttpOnly
    assert auth.state.authorize_requests[-1]["launch"] == "e2e-1"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.screenshot()
    assert shot.startswith(b"\x89PNG")
    (ARTIFACTS / "smart-app.png").write_bytes(shot)
    for token in auth.state.tokens:
        assert token not in service.full_log()


def _watcher_cycle(database: tempfile.TemporaryDirectory[str]) -> None:
    """What ``crs-cds watch`` writes for the board after a cycle (the watcher itself is proved in
    ``test_watch_integration``): CRS grade 2 in an episode, ICANS 0, one tocilizumab dose."""
    store = WatchStore.open(f"sqlite:///{database.name}/crs-cds.sqlite3")
    now = datetime.now(UTC)
    onset = now - timedelta(hours=5)
    snapshot = None
    for minutes_ago, grade in ((240, 1), (120, 2), (5, 2)):
        at = now - timedelta(minutes=minutes_ago)
        view = PatientView(
            at=at,
            crs=SystemView(CRS, grade, episode_onset=onset, last_data_at=at - timedelta(minutes=20)),
            icans=SystemView(ICANS, 0, last_data_at=at - timedelta(minutes=50)),
        )
        snapshot = board_snapshot(snapshot, view, tocilizumab_given=1)
        store.save_cycle(patient_hash(BOARD_PATIENT), {"systems": {}}, [], snapshot)
    store.close()


def test_browser_board_needs_a_user_level_sign_in(
    browser: WebDriver,
    servers: tuple[SmartService, RunningAuthServer],
    database: tempfile.TemporaryDirectory[str],
) -> None:
    service, auth = servers
    _watcher_cycle(database)
    browser.delete_cookies()
    browser.get(f"{service.base_url}/board")
    # /board -> /board/launch -> /authorize -> /smart/callback -> /board, all in the browser.
    assert browser.url() == f"{service.base_url}/board", service.log()
    scopes = auth.state.authorize_requests[-1]["scope"].split()
    assert "user/Observation.rs" in scopes and not {"launch", "launch/patient"} & set(scopes)
    text = str(browser.script("return document.body.innerText"))
    assert "CRS / ICANS unit board" in text, text
    assert f"Patient/{BOARD_PATIENT}" in text
    assert "1 given, 3 left" in text
    row = browser.script("return Array.from(document.querySelectorAll('tbody tr td')).map(td => td.innerText)")
    assert row[:4] == ["2", "2", "0", "0"], row  # CRS now, CRS worst, ICANS now, ICANS worst
    assert browser.script("return document.querySelectorAll('tbody svg polyline').length") >= 1
    assert browser.script("return document.querySelector('meta[http-equiv=refresh]').content") == "60"
    assert browser.script("return document.cookie") == ""  # the board's session cookie is HttpOnly
    # Readable on a ward screen: the whole board fits the window's width (no sideways scrolling).
    assert browser.script("return document.documentElement.scrollWidth <= window.innerWidth") is True
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "board.png").write_bytes(browser.screenshot())

    # A server that puts the sign-in in one patient's context: the board refuses it.
    browser.delete_cookies()
    auth.state.patient_context_always = True
    try:
        browser.get(f"{service.base_url}/board")
    finally:
        auth.state.patient_context_always = False
    text = str(browser.script("return document.body.innerText"))
    assert "Not authorised for the unit board" in text, text
    assert f"Patient/{BOARD_PATIENT}" not in text
    full_log = service.full_log()
    for token in auth.state.tokens:
        assert token not in full_log
    assert BOARD_PATIENT not in full_log.replace(auth.iss, "")
