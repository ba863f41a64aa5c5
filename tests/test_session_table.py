"""SMART sessions shared by replicas: readable from every replica, encrypted at rest, bounded apart.

Runs on a real PostgreSQL server (what several replicas share) and on SQLite (one host).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cds_hooks.errors import ConfigurationError
from cds_hooks.stores.database import Database
from cds_hooks.stores.session_table import EncryptedSessionTable, SessionKind, new_session_key
from cds_hooks.web.smart.sessions import SharedSessionStore, SmartSession

from pg_server import RunningPostgres

KEY = new_session_key()
TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-access-token"


@pytest.fixture(scope="module")
def postgres() -> Iterator[RunningPostgres]:
    with RunningPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    server: RunningPostgres = request.getfixturevalue("postgres")
    database = Database(server.url)
    database.ensure_schema(["CREATE TABLE IF NOT EXISTS smart_session (id_hash TEXT)"])
    database.run(lambda tx: tx.execute("DROP TABLE smart_session"))
    database.close()
    return server.url


CLOCK = [1_000.0]


@pytest.fixture
def replicas(url: str) -> Iterator[tuple[EncryptedSessionTable, EncryptedSessionTable]]:
    CLOCK[0] = 1_000.0
    clock = CLOCK
    a, b = Database(url), Database(url)
    limits: dict[SessionKind, int] = {"pending": 3, "signed-in": 2}
    yield (
        EncryptedSessionTable(a, KEY, limits=limits, clock=lambda: clock[0]),
        EncryptedSessionTable(b, KEY, limits=limits, clock=lambda: clock[0]),
    )
    a.close()
    b.close()


def test_a_session_created_on_one_replica_is_read_on_another(
    replicas: tuple[EncryptedSessionTable, EncryptedSessionTable],
) -> None:
    one, other = replicas
    one.put("signed-in", "cookie-id-1", 2_000.0, {"iss": "https://ehr.example.org", "access_token": TOKEN})
    assert other.get("cookie-id-1") == ("signed-in", {"iss": "https://ehr.example.org", "access_token": TOKEN})
    other.delete("cookie-id-1")
    assert one.get("cookie-id-1") is None


def test_tokens_and_ids_are_not_stored_in_clear(url: str) -> None:
    database = Database(url)
    try:
        table = EncryptedSessionTable(database, KEY, limits={"pending": 3, "signed-in": 2})
        table.put("signed-in", "cookie-id-secret", table.now() + 600, {"access_token": TOKEN})
        dumped = repr(database.run(lambda tx: tx.execute("SELECT * FROM smart_session").fetchall()))
    finally:
        database.close()
    assert TOKEN not in dumped and "cookie-id-secret" not in dumped and "access_token" not in dumped


def test_expired_sessions_are_gone(replicas: tuple[EncryptedSessionTable, EncryptedSessionTable]) -> None:
    one, _ = replicas
    one.put("pending", "launch", one.now() + 10, {"state": "s"})
    assert one.get("launch") is not None
    CLOCK[0] += 11.0
    assert one.get("launch") is None


def test_launches_never_evict_signed_in_sessions(
    replicas: tuple[EncryptedSessionTable, EncryptedSessionTable],
) -> None:
    one, _ = replicas
    one.put("signed-in", "clinician", 5_000.0, {"access_token": TOKEN})
    for n in range(10):
        one.put("pending", f"launch-{n}", 5_000.0, {"state": str(n)})
    assert one.counts() == (3, 1)
    assert one.get("clinician") is not None
    assert one.get("launch-9") is not None and one.get("launch-0") is None


def test_a_session_sealed_under_another_key_reads_as_signed_out(url: str) -> None:
    database = Database(url)
    EncryptedSessionTable(database, new_session_key(), limits={"pending": 3, "signed-in": 2}).put(
        "signed-in", "old", 10**10, {"access_token": TOKEN}
    )
    try:
        assert EncryptedSessionTable(database, KEY, limits={"pending": 3, "signed-in": 2}).get("old") is None
    finally:
        database.close()


def test_a_launch_is_spent_once_across_replicas(url: str) -> None:
    """Four replicas' callbacks racing on one launch (each its own connection): exactly one signs
    in, whatever the interleaving (one statement: DELETE ... RETURNING); an expired launch is
    spent by nobody."""
    databases = [Database(url) for _ in range(4)]
    try:
        stores = [
            SharedSessionStore(EncryptedSessionTable(d, KEY, limits={"pending": 50, "signed-in": 5})) for d in databases
        ]
        for n in range(30):
            launch = stores[0].create(
                SmartSession(iss="https://ehr.example.org", expires=stores[0].now() + 600, state=str(n))
            )
            barrier = threading.Barrier(len(stores))

            def spend(store: SharedSessionStore, launch: str = launch, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait()
                return store.pop(launch) is not None

            with ThreadPoolExecutor(max_workers=len(stores)) as pool:
                spent = list(pool.map(spend, stores))
            assert spent.count(True) == 1, f"round {n}: {spent.count(True)} replicas spent one launch"
        late = stores[1].create(SmartSession(iss="https://ehr.example.org", expires=stores[1].now() - 1, state="x"))
        assert stores[2].pop(late) is None and stores[3].pop(late) is None
    finally:
        for database in databases:
            database.close()


def test_an_sqlite_without_returning_is_refused_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spending a launch needs DELETE ... RETURNING: an older SQLite is a clear start-up error,
    not a store that reads as down (503) at every SMART callback."""
    database = Database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    monkeypatch.setattr("cds_hooks.stores.session_table.sqlite3.sqlite_version_info", (3, 31, 1))
    try:
        with pytest.raises(ConfigurationError, match=r"3\.35"):
            EncryptedSessionTable(database, KEY, limits={"pending": 3, "signed-in": 2})
    finally:
        database.close()
