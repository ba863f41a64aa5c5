"""SMART and board pages never stall the replica: a session store that hangs holds up only its page.

Why: with several replicas the session store is the shared database. A store call made on the
event loop let one SMART page with a slow or dead database hold every CDS Hooks call of that
replica behind it. Here a store blocks (on an event the test holds) inside a SMART page's call,
while discovery and a hook call on the same server must still answer; the page then completes
as it always did. The server is real (uvicorn on a loopback socket, in a thread of this process,
so the test can hand the app its blocking store); a stall is seen as a liveness timeout (10 s),
not as a speed.

The stores are now called from worker threads, so the in-memory one must stay consistent when
many threads create, read and spend sessions at once, and a launch must be spent only once (two
callbacks of one launch, or many threads popping one shared session).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from cds_hooks.settings import Settings
from cds_hooks.stores.database import Database
from cds_hooks.stores.session_table import EncryptedSessionTable, new_session_key
from cds_hooks.web.app import create_app
from cds_hooks.web.smart.sessions import BOARD_COOKIE, COOKIE, SessionStore, SharedSessionStore, SmartSession
from fastapi import FastAPI

from hook_requests import patient_view, prefetch_from_bundle
from smart_auth_server import LOOPBACK, RunningAuthServer
from vignette_data import vignette_bundle, vignette_expected

LIVENESS_S = 10.0
"""How long a CDS Hooks call may take while a SMART page is held: generous, it only detects a stall."""
HOLD_LIMIT_S = 60.0
"""A held store call gives up after this, so a failing test cannot hang the run."""
CLIENT_ID = "crs-loop-test"
REDIRECT = "http://127.0.0.1:8999/smart/callback"
USER_SCOPE = "openid fhirUser user/Patient.rs user/Observation.rs"


class HeldSessions:
    """A :class:`SessionStore` whose chosen calls wait for the test to open the gate."""

    def __init__(self) -> None:
        self.inner = SessionStore()
        self.held: set[str] = set()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.waiting = 0
        self._count = threading.Lock()

    def hold(self, method: str) -> None:
        self.held = {method}
        self.entered.clear()
        self.gate.clear()
        self.waiting = 0

    def release(self) -> None:
        self.held = set()
        self.gate.set()

    def _wait(self, method: str) -> None:
        if method in self.held:
            with self._count:
                self.waiting += 1
            self.entered.set()
            self.gate.wait(HOLD_LIMIT_S)

    def now(self) -> float:
        return self.inner.now()

    def create(self, session: SmartSession) -> str:
        self._wait("create")
        return self.inner.create(session)

    def get(self, session_id: str | None) -> SmartSession | None:
        self._wait("get")
        return self.inner.get(session_id)

    def pop(self, session_id: str | None) -> SmartSession | None:
        self._wait("pop")
        return self.inner.pop(session_id)

    def counts(self) -> tuple[int, int]:
        return self.inner.counts()


@dataclass
class Served:
    base_url: str
    sessions: HeldSessions
    auth: RunningAuthServer


def _serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.02)
    assert server.started, "the service did not start"
    return server, thread, f"http://{LOOPBACK}:{port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    auth = RunningAuthServer(CLIENT_ID, "http://127.0.0.1:9/unused", patient="p-loop").start()
    auth.state.redirect_uri = REDIRECT
    settings = Settings(
        allow_unauthenticated=True,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('loop') / 'store.sqlite3'}",
        fhir_server_allowlist=[auth.iss],
        allow_insecure_fhir_server=True,
        smart_client_id=CLIENT_ID,
        smart_redirect_url=REDIRECT,
        watch_patients="p-ward-1",
    )
    app = create_app(settings)
    sessions = HeldSessions()
    app.state.smart.sessions = sessions
    server, thread, base_url = _serve(app)
    try:
        yield Served(base_url, sessions, auth)
    finally:
        sessions.release()
        server.should_exit = True
        thread.join(timeout=20)
        auth.stop()


# -- what each held page needs beforehand, and what it must answer once released ----------------------


def _launch(served: Served) -> httpx.Response:
    return httpx.get(
        f"{served.base_url}/smart/launch", params={"iss": served.auth.iss, "launch": "ehr-1"}, timeout=HOLD_LIMIT_S
    )


def _prepare_launch(served: Served) -> Callable[[], httpx.Response]:
    return lambda: _launch(served)


def _check_launch(response: httpx.Response, served: Served) -> None:
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith(f"{served.auth.base_url}/authorize?")
    assert served.sessions.inner.get(response.cookies[COOKIE]) is not None


def _prepare_callback(served: Served) -> Callable[[], httpx.Response]:
    """A real launch and authorize hop first (store not held): the held call is the callback's."""
    launched = _launch(served)
    hop = httpx.get(launched.headers["location"], follow_redirects=False, timeout=LIVENESS_S)
    back = {k: v[0] for k, v in parse_qs(urlsplit(hop.headers["location"]).query).items()}
    cookie = launched.cookies[COOKIE]
    return lambda: httpx.get(
        f"{served.base_url}/smart/callback", params=back, cookies={COOKIE: cookie}, timeout=HOLD_LIMIT_S
    )


def _check_callback(response: httpx.Response, served: Served) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/smart/app"
    signed_in = served.sessions.inner.get(response.cookies[COOKIE])
    assert signed_in is not None and signed_in.patient == "p-loop" and signed_in.access_token is not None


def _prepare_course(served: Served) -> Callable[[], httpx.Response]:
    return lambda: httpx.get(
        f"{served.base_url}/smart/course", cookies={COOKIE: "no-such-session"}, timeout=HOLD_LIMIT_S
    )


def _check_course(response: httpx.Response, served: Served) -> None:
    assert response.status_code == 401
    assert response.json()["error"] == "Not signed in"


def _prepare_board(served: Served) -> Callable[[], httpx.Response]:
    store = served.sessions.inner
    board = SmartSession(
        iss=served.auth.iss, expires=store.now() + 600, access_token="t", scope=USER_SCOPE, purpose="board"
    )
    cookie = store.create(board)
    return lambda: httpx.get(f"{served.base_url}/board", cookies={BOARD_COOKIE: cookie}, timeout=HOLD_LIMIT_S)


def _check_board(response: httpx.Response, served: Served) -> None:
    assert response.status_code == 200, response.text
    assert "Patient/p-ward-1" in response.text


Prepare = Callable[[Served], Callable[[], httpx.Response]]
Check = Callable[[httpx.Response, Served], None]


def _hook_request() -> dict[str, Any]:
    bundle = vignette_bundle("V01")
    patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return patient_view(
        patient, prefetch=prefetch_from_bundle(bundle), at=vignette_expected()["V01"]["evaluation_time"]
    )


@pytest.mark.parametrize(
    ("held", "prepare", "check"),
    [
        pytest.param("create", _prepare_launch, _check_launch, id="launch-held-in-create->302-to-authorize"),
        pytest.param("pop", _prepare_callback, _check_callback, id="callback-held-in-pop->303-signed-in"),
        pytest.param("get", _prepare_course, _check_course, id="course-json-held-in-get->401"),
        pytest.param("get", _prepare_board, _check_board, id="board-held-in-get->200-rows"),
    ],
)
def test_cds_hooks_answer_while_a_smart_page_waits_for_the_store(
    served: Served, held: str, prepare: Prepare, check: Check
) -> None:
    smart_call = prepare(served)
    served.sessions.hold(held)
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            page: Future[httpx.Response] = pool.submit(smart_call)
            assert served.sessions.entered.wait(LIVENESS_S), f"the page never reached the store's {held}"

            discovery = httpx.get(f"{served.base_url}/cds-services", timeout=LIVENESS_S)
            assert discovery.status_code == 200
            assert any(s["hook"] == "patient-view" for s in discovery.json()["services"])
            hook = httpx.post(f"{served.base_url}/cds-services/crs-grade", json=_hook_request(), timeout=LIVENESS_S)
            assert hook.status_code == 200
            (card,) = hook.json()["cards"]
            assert card["summary"].startswith("CRS grade 3 (ASTCT)")

            assert not page.done(), "the SMART page answered while its store call was still held"
        finally:
            served.sessions.release()
        check(page.result(timeout=HOLD_LIMIT_S), served)


def test_two_callbacks_of_one_launch_spend_it_once(served: Served) -> None:
    """Both callbacks read the pending launch before either spends it (held in ``pop``): the
    store's read is off the loop now, so the spend must decide: one signs in, the other is refused."""
    callback = _prepare_callback(served)
    tokens_before = len(served.auth.state.token_requests)
    served.sessions.hold("pop")
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            calls = [pool.submit(callback) for _ in range(2)]
            for _ in range(int(LIVENESS_S / 0.02)):
                if served.sessions.waiting == 2:
                    break
                threading.Event().wait(0.02)
            assert served.sessions.waiting == 2, "both callbacks must reach the spend"
        finally:
            served.sessions.release()
        answers = sorted((c.result(timeout=HOLD_LIMIT_S) for c in calls), key=lambda r: r.status_code)
    assert [r.status_code for r in answers] == [303, 400]
    assert "Launch expired or unknown" in answers[1].text
    assert "set-cookie" not in answers[1].headers  # the winner's cookie is not cleared
    assert len(served.auth.state.token_requests) == tokens_before + 1


# -- the in-memory store under threads ---------------------------------------------------------------

THREADS = 8
ROUNDS = 300
PENDING_LIMIT = 40


def _worker(store: SessionStore, now: Callable[[], float], worker: int) -> list[tuple[str, SmartSession]]:
    """Churn pending launches (short-lived, over their bound) and keep signed-in sessions; every
    signed-in session must read back as itself, a pending one as itself or as gone."""
    kept: list[tuple[str, SmartSession]] = []
    for n in range(ROUNDS):
        pending = SmartSession(iss="https://ehr", expires=now() + 0.5, state=f"{worker}-{n}", verifier="v")
        pending_id = store.create(pending)
        assert store.get(pending_id) in (pending, None)
        signed_in = SmartSession(iss="https://ehr", expires=now() + 3600, access_token=f"t{worker}-{n}")
        signed_in_id = store.create(signed_in)
        assert store.get(signed_in_id) is signed_in
        assert store.pop(pending_id) in (pending, None)
        assert store.get(pending_id) is None
        pending_count, _ = store.counts()
        assert pending_count <= PENDING_LIMIT
        kept.append((signed_in_id, signed_in))
        if n % 3 == 0:
            spent_id, spent = kept.pop(0)
            assert store.pop(spent_id) is spent
            assert store.get(spent_id) is None
    return kept


def test_memory_store_stays_consistent_under_threads() -> None:
    ticks = iter(range(10**9))
    lock = threading.Lock()

    def now() -> float:
        """Advances on every read (0.01 s), so pending launches keep expiring while threads run."""
        with lock:
            return next(ticks) * 0.01

    store = SessionStore(limit=THREADS * ROUNDS, clock=now, pending_limit=PENDING_LIMIT)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as the interpreter allows
    try:
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            kept = [s for f in [pool.submit(_worker, store, now, w) for w in range(THREADS)] for s in f.result()]
    finally:
        sys.setswitchinterval(switch)
    pending_count, signed_in_count = store.counts()
    assert pending_count <= PENDING_LIMIT
    assert signed_in_count == len(kept)
    for session_id, session in kept:
        assert store.get(session_id) is session


def test_memory_store_bounds_hold_under_threads() -> None:
    """Over its limit, each kind ends at exactly its limit, however the threads interleave."""
    store = SessionStore(limit=50, pending_limit=20)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:

        def fill(worker: int) -> None:
            for n in range(200):
                store.create(SmartSession(iss="https://ehr", expires=store.now() + 600, access_token=f"{worker}-{n}"))
                store.create(SmartSession(iss="https://ehr", expires=store.now() + 600, state=f"{worker}-{n}"))

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            for done in [pool.submit(fill, w) for w in range(THREADS)]:
                done.result()
    finally:
        sys.setswitchinterval(switch)
    assert store.counts() == (20, 50)


def test_shared_store_spends_a_launch_once_across_threads(tmp_path: Path) -> None:
    """Many threads of one replica pop the same pending launch: exactly one gets it back."""
    table = EncryptedSessionTable(
        Database(f"sqlite:///{tmp_path / 's.sqlite3'}"), new_session_key(), limits={"pending": 10, "signed-in": 10}
    )
    store = SharedSessionStore(table)
    for _ in range(5):
        launch_id = store.create(SmartSession(iss="https://ehr", expires=store.now() + 600, state="s", verifier="v"))
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            spent = list(pool.map(store.pop, [launch_id] * THREADS))
        assert sum(s is not None for s in spent) == 1
        assert store.get(launch_id) is None
