"""What replicas share and how they live through their database: card records spooled while it
is down and replayed when it returns, and the JWT replay check shared across replicas.

The shared cases run on a real PostgreSQL server (started by the test); the outage cases on a
real SQLite file behind a connection that can be cut, the seam ``Database(connect=...)`` offers.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.stores.card_spool import CardRecorder
from cds_hooks.stores.database import Database
from cds_hooks.stores.feedback_store import FeedbackStore, IssuedCard
from cds_hooks.stores.replay_store import SharedReplayCache
from cds_hooks.web.auth import InMemoryReplayCache

from pg_server import RunningPostgres


class Cuttable:
    """A real SQLite connection that fails like a dead server while ``down`` is set."""

    down = False

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if Cuttable.down:
            raise sqlite3.OperationalError("server closed the connection unexpectedly")
        return self._conn.execute(sql, params)

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def cuttable(tmp_path: Path) -> Iterator[tuple[FeedbackStore, list[float]]]:
    Cuttable.down = False
    clock = [0.0]

    def connect() -> Cuttable:
        if Cuttable.down:
            raise sqlite3.OperationalError("connection refused")
        return Cuttable(tmp_path / "store.sqlite3")

    store = FeedbackStore(Database(f"sqlite:///{tmp_path / 'store.sqlite3'}", connect=connect, clock=lambda: clock[0]))
    yield store, clock
    Cuttable.down = False
    store.close()


def _card() -> IssuedCard:
    return IssuedCard(
        card_uuid=str(uuid.uuid4()),
        service_id="crs-grade",
        hook_instance=str(uuid.uuid4()),
        patient_hash="ab12",
        system="ASTCT-2019",
        grade=2,
        grade_at_least=None,
        evaluated_at=datetime(2025, 3, 4, 8, tzinfo=UTC),
        evidence_references=["Observation/t1"],
        suggestions=[],
    )


def test_records_wait_in_the_spool_while_the_store_is_down(cuttable: tuple[FeedbackStore, list[float]]) -> None:
    store, clock = cuttable
    recorder = CardRecorder(store)
    first = _card()
    assert recorder.record([first]) is True
    Cuttable.down = True
    during = [_card(), _card()]
    assert recorder.record(during) is False
    assert recorder.pending == 2 and store.database.health().state == "down"
    Cuttable.down = False
    clock[0] += 60.0  # the backoff has passed
    assert recorder.flush() == 2
    assert recorder.pending == 0
    assert {r["card_uuid"] for r in store.card_rows()} == {first.card_uuid, *(c.card_uuid for c in during)}


def test_a_full_spool_counts_what_it_loses(cuttable: tuple[FeedbackStore, list[float]]) -> None:
    store, _ = cuttable
    recorder = CardRecorder(store, capacity=3)
    Cuttable.down = True
    assert recorder.record([_card(), _card()]) is False
    assert recorder.record([_card(), _card()]) is False
    assert (recorder.pending, recorder.dropped) == (3, 1)


def test_the_next_write_replays_the_spool_first(cuttable: tuple[FeedbackStore, list[float]]) -> None:
    store, clock = cuttable
    recorder = CardRecorder(store)
    Cuttable.down = True
    waiting = _card()
    recorder.record([waiting])
    Cuttable.down = False
    clock[0] += 60.0
    later = _card()
    assert recorder.record([later]) is True
    assert recorder.pending == 0
    assert {r["card_uuid"] for r in store.card_rows()} == {waiting.card_uuid, later.card_uuid}


# -- the JWT replay check across replicas --------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[RunningPostgres]:
    with RunningPostgres() as server:
        yield server


@pytest.fixture
def databases(postgres: RunningPostgres) -> Iterator[list[Database]]:
    """Two connections to one PostgreSQL: two replicas' view of the shared store."""
    opened = [Database(postgres.url), Database(postgres.url)]
    yield opened
    for database in opened:
        database.close()


def test_a_jwt_replayed_to_another_replica_is_refused(databases: list[Database]) -> None:
    replica_a = SharedReplayCache(databases[0], InMemoryReplayCache())
    replica_b = SharedReplayCache(databases[1], InMemoryReplayCache())
    jti = str(uuid.uuid4())
    expires = datetime.now(UTC).timestamp() + 300
    assert replica_a.first_sighting("https://ehr.example.org", jti, expires) is True
    assert replica_b.first_sighting("https://ehr.example.org", jti, expires) is False
    assert replica_b.first_sighting("https://other-ehr.example.org", jti, expires) is True


def test_replay_check_falls_back_to_this_replica_during_an_outage(
    cuttable: tuple[FeedbackStore, list[float]],
) -> None:
    store, _ = cuttable
    cache = SharedReplayCache(store.database, InMemoryReplayCache())
    expires = datetime.now(UTC).timestamp() + 300
    assert cache.first_sighting("iss", "before-outage", expires) is True
    Cuttable.down = True
    assert cache.first_sighting("iss", "during-outage", expires) is True
    assert cache.first_sighting("iss", "during-outage", expires) is False  # same replica: still refused
    assert cache.first_sighting("iss", "before-outage", expires) is False


def test_expired_jti_rows_are_removed(databases: list[Database]) -> None:
    now = [1_000_000.0]
    database = databases[0]
    cache = SharedReplayCache(database, InMemoryReplayCache(), clock=lambda: now[0])
    cache.first_sighting("iss", "old", now[0] + 10)
    now[0] += 3600
    cache.first_sighting("iss", "new", now[0] + 10)
    rows = database.run(lambda tx: tx.execute("SELECT jti FROM seen_jti WHERE issuer = ?", ("iss",)).fetchall())
    assert [r[0] for r in rows] == ["new"]
