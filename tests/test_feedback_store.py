"""The store itself, on both backends a site can choose: SQLite (default) and PostgreSQL (several
replicas). The PostgreSQL server is real: started by the test, on a Unix socket only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cds_hooks.stores.feedback_store import FeedbackItem, FeedbackStore, IssuedCard

from pg_server import RunningPostgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[RunningPostgres]:
    with RunningPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedbackStore]:
    if request.param == "sqlite":
        opened = FeedbackStore.open(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    else:
        server: RunningPostgres = request.getfixturevalue("postgres")
        opened = FeedbackStore.open(server.url)
        opened.database.run(lambda tx: [tx.execute(f"DELETE FROM {table}") for table in ("feedback", "issued_card")])
    yield opened
    opened.close()


def _card(grade: int | None = 3) -> IssuedCard:
    return IssuedCard(
        card_uuid=str(uuid.uuid4()),
        service_id="crs-grade",
        hook_instance=str(uuid.uuid4()),
        patient_hash="ab12",
        system="ASTCT-2019",
        grade=grade,
        grade_at_least=None if grade is not None else 1,
        evaluated_at=datetime(2025, 3, 4, 8, tzinfo=UTC),
        evidence_references=["Observation/t1"],
        suggestions=[("s-toci", "Tocilizumab 600 mg IV over 1 h"), ("s-icu", "Transfer to intensive care")],
    )


def _item(card: str, outcome: str = "accepted", accepted: tuple[str, ...] = ("s-toci",)) -> FeedbackItem:
    return FeedbackItem.model_validate(
        {
            "card": card,
            "outcome": outcome,
            "outcomeTimestamp": "2025-03-04T08:05:00Z",
            "acceptedSuggestions": [{"id": a} for a in accepted] if outcome == "accepted" else None,
        }
    )


def test_feedback_joins_the_card_it_answers(store: FeedbackStore) -> None:
    card = _card()
    store.record_cards([card])
    assert store.record_feedback("crs-grade", [_item(card.card_uuid)]) == 1
    (row,) = store.feedback_rows()
    assert row["card_uuid"] == card.card_uuid and row["matched"] == 1 and row["outcome"] == "accepted"


def test_resent_feedback_is_stored_once(store: FeedbackStore) -> None:
    card = _card()
    store.record_cards([card, card])
    items = [_item(card.card_uuid), _item(card.card_uuid, "overridden")]
    assert store.record_feedback("crs-grade", items) == 2
    assert store.record_feedback("crs-grade", items) == 0
    assert len(store.feedback_rows()) == 2
    assert len(store.card_rows()) == 1


def test_unknown_card_is_kept_unmatched(store: FeedbackStore) -> None:
    assert store.record_feedback("crs-grade", [_item("from-another-replica")]) == 1
    assert store.feedback_rows()[0]["matched"] == 0


def test_report_rates(store: FeedbackStore) -> None:
    grade_3, indeterminate = _card(3), _card(None)
    store.record_cards([grade_3, indeterminate])
    store.record_feedback(
        "crs-grade",
        [_item(grade_3.card_uuid), _item(indeterminate.card_uuid, "overridden"), _item("elsewhere", "overridden")],
    )
    report = store.report()
    assert report["total"] == 3 and report["unmatched"] == 1
    assert report["byGrade"]["3"] == {"accepted": 1, "overridden": 0}
    assert report["byGrade"]["indeterminate"] == {"accepted": 0, "overridden": 1}
    assert report["bySuggestion"]["Tocilizumab 600 mg IV over 1 h"] == {"offered": 2, "accepted": 1}


def test_the_service_stores_feedback_in_postgres_when_configured(postgres: RunningPostgres) -> None:
    from cds_hooks.settings import Settings
    from cds_hooks.web.app import create_app
    from fastapi.testclient import TestClient

    settings = Settings(allow_unauthenticated=True, database_url=postgres.url)
    body = {"feedback": [{"card": "pg-card", "outcome": "overridden", "outcomeTimestamp": "2025-03-04T08:05:00Z"}]}
    with TestClient(create_app(settings)) as client:
        assert client.post("/cds-services/crs-grade/feedback", json=body).status_code == 200
    check = FeedbackStore.open(postgres.url)
    try:
        rows = [r for r in check.feedback_rows() if r["card_uuid"] == "pg-card"]
        assert len(rows) == 1 and rows[0]["outcome"] == "overridden"
    finally:
        check.close()


# -- the database restarts: the store reconnects by itself --------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[RunningPostgres]:
    """A server of its own: these tests stop and restart it."""
    with RunningPostgres() as server:
        yield server


def test_postgres_restart_is_survived_without_reopening_the_store(own_postgres: RunningPostgres) -> None:
    store = FeedbackStore.open(own_postgres.url)
    try:
        before = _card()
        store.record_cards([before])
        own_postgres.restart()  # every open connection is cut
        after = _card()
        store.record_cards([after])  # reconnects by itself, no restart of the service
        assert {r["card_uuid"] for r in store.card_rows()} == {before.card_uuid, after.card_uuid}
        assert store.database.health().state == "up"
    finally:
        store.close()


def test_postgres_down_is_a_clear_unavailable_then_recovers(own_postgres: RunningPostgres) -> None:
    from cds_hooks.stores.database import Database, StoreUnavailable

    clock = [0.0]
    store = FeedbackStore(Database(own_postgres.url, clock=lambda: clock[0]))
    try:
        own_postgres.pause()
        with pytest.raises(StoreUnavailable):
            store.record_cards([_card()])
        assert store.database.health().state == "down"
        with pytest.raises(StoreUnavailable):  # inside the backoff: no new connection attempt
            store.record_feedback("crs-grade", [_item("x")])
        own_postgres.resume()
        clock[0] += 60.0  # past the backoff, without sleeping in a test
        card = _card()
        store.record_cards([card])
        assert [r["card_uuid"] for r in store.card_rows()] == [card.card_uuid]
        assert store.database.health().state == "up"
    finally:
        store.close()
