"""The ward watcher's memory: last alerted grades and open episodes per patient, every alert, every
delivery attempt, and the lease that lets only one watcher work at a time.

Same database as the feedback store (``CRS_CDS_DATABASE_URL``: SQLite or PostgreSQL), same SQL
dialect trick (``?`` placeholders, ``ON CONFLICT``). Patients appear only as
:func:`~cds_hooks.stores.feedback_store.patient_hash`: an alert's body is stored without its
``patient`` field and completed at delivery from the watched list, so the store holds no patient id.

Why a lease row and not an advisory lock: a PostgreSQL advisory lock dies with its session, so a
watcher that reconnects (or a pooler that hands its session to another) silently loses or shares
it; a row with an expiry, renewed by the worker each cycle, survives reconnects and says who works.
The connection is :class:`~cds_hooks.stores.database.Database` (one transaction per use, reopened
after a database restart); every write here is keyed, so a retried transaction is stored once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cds_hooks.stores.database import Database, Transaction

_STATE_TABLE = """
CREATE TABLE IF NOT EXISTS watch_state (
    patient_hash TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at TEXT NOT NULL
)"""
_ALERT_TABLE = """
CREATE TABLE IF NOT EXISTS watch_alert (
    alert_id TEXT PRIMARY KEY,
    patient_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    system TEXT NOT NULL,
    grade INTEGER,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL,
    delivered_at TEXT,
    writeback_status TEXT,
    writeback_reference TEXT
)"""
_DELIVERY_TABLE = """
CREATE TABLE IF NOT EXISTS watch_delivery (
    id {identity},
    alert_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    attempted_at TEXT NOT NULL,
    status_code INTEGER,
    error TEXT,
    delivered INTEGER NOT NULL
)"""
_LEASE_TABLE = """
CREATE TABLE IF NOT EXISTS watch_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)"""
_BOARD_TABLE = """
CREATE TABLE IF NOT EXISTS watch_board (
    patient_hash TEXT PRIMARY KEY,
    snapshot TEXT NOT NULL,
    updated_at TEXT NOT NULL
)"""
_UPSERT_BOARD = (
    "INSERT INTO watch_board (patient_hash, snapshot, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (patient_hash) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at"
)
_DELIVERY_INDEX = "CREATE INDEX IF NOT EXISTS watch_delivery_alert ON watch_delivery (alert_id)"

_UPSERT_STATE = (
    "INSERT INTO watch_state (patient_hash, state, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (patient_hash) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
)
_INSERT_ALERT = (
    "INSERT INTO watch_alert (alert_id, patient_hash, kind, system, grade, created_at, body, writeback_status) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id) DO NOTHING"
)
_TAKE_LEASE = (
    "INSERT INTO watch_lease (name, holder, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE watch_lease.holder = excluded.holder OR watch_lease.expires_at < ?"
)
_SELECT_ALERTS = (
    "SELECT alert_id, patient_hash, kind, system, grade, created_at, body, writeback_status "
    "FROM watch_alert WHERE {where} ORDER BY created_at, alert_id"
)
"""``where`` is one of this module's own conditions, never outside text."""
_INSERT_DELIVERY = (
    "INSERT INTO watch_delivery (alert_id, attempt, attempted_at, status_code, error, delivered) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_MARK_DELIVERED = "UPDATE watch_alert SET delivered_at = ? WHERE alert_id = ? AND delivered_at IS NULL"
_RELEASE_LEASE = "DELETE FROM watch_lease WHERE name = ? AND holder = ?"
WRITEBACK_PENDING = "pending"
WRITEBACK_DONE = "done"


@dataclass(frozen=True)
class StoredAlert:
    """One alert as stored: its body without the patient (added back at delivery)."""

    alert_id: str
    patient_hash: str
    kind: str
    system: str
    grade: int | None
    created_at: datetime
    body: Mapping[str, Any]
    writeback_status: str | None = None


class WatchStore:
    """The watcher's tables in the service's database; raises ``StoreUnavailable`` while it is down."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.description = database.description
        identity = (
            "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
            if database.postgres
            else "INTEGER PRIMARY KEY AUTOINCREMENT"
        )
        database.ensure_schema(
            [
                _STATE_TABLE,
                _ALERT_TABLE,
                _DELIVERY_TABLE.format(identity=identity),
                _LEASE_TABLE,
                _BOARD_TABLE,
                _DELIVERY_INDEX,
            ]
        )

    @classmethod
    def open(cls, database_url: str) -> WatchStore:
        """SQLite (``sqlite:///path``; WAL) or PostgreSQL (``postgresql://...``), as the feedback store."""
        return cls(Database(database_url))

    def close(self) -> None:
        self.database.close()

    def _rows(self, statement: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        def read(tx: Transaction) -> list[dict[str, Any]]:
            cursor = tx.execute(statement, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return self.database.run(read)

    # -- per-patient state and alerts ---------------------------------------------------------

    def load_state(self, patient_hash: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT state FROM watch_state WHERE patient_hash = ?", (patient_hash,))
        if not rows:
            return None
        state: dict[str, Any] = json.loads(rows[0]["state"])
        return state

    def save_cycle(
        self,
        patient_hash: str,
        state: Mapping[str, Any],
        alerts: Sequence[StoredAlert],
        board: Mapping[str, Any] | None = None,
    ) -> None:
        """The patient's new state, its new alerts and its board row in one transaction: an alert
        is never stored without the state that stops it repeating, nor the state without its
        alert, and the board never shows a grade the alerts have not seen."""
        now = datetime.now(UTC).isoformat()

        def write(tx: Transaction) -> None:
            tx.execute(_UPSERT_STATE, (patient_hash, json.dumps(state, sort_keys=True), now))
            if board is not None:
                tx.execute(_UPSERT_BOARD, (patient_hash, json.dumps(dict(board), sort_keys=True), now))
            for alert in alerts:
                tx.execute(
                    _INSERT_ALERT,
                    (
                        alert.alert_id,
                        alert.patient_hash,
                        alert.kind,
                        alert.system,
                        alert.grade,
                        alert.created_at.isoformat(),
                        json.dumps(dict(alert.body), sort_keys=True),
                        alert.writeback_status,
                    ),
                )

        self.database.run(write)

    def _alerts(self, where: str, params: Sequence[Any] = ()) -> list[StoredAlert]:
        rows = self._rows(_SELECT_ALERTS.format(where=where), params)
        return [
            StoredAlert(
                alert_id=r["alert_id"],
                patient_hash=r["patient_hash"],
                kind=r["kind"],
                system=r["system"],
                grade=r["grade"],
                created_at=datetime.fromisoformat(r["created_at"]),
                body=json.loads(r["body"]),
                writeback_status=r["writeback_status"],
            )
            for r in rows
        ]

    def load_board(self, patient_hash: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT snapshot FROM watch_board WHERE patient_hash = ?", (patient_hash,))
        if not rows:
            return None
        snapshot: dict[str, Any] = json.loads(rows[0]["snapshot"])
        return snapshot

    def board_rows(self) -> dict[str, dict[str, Any]]:
        """The last board snapshot of every patient the watcher has graded, by patient hash."""
        rows = self._rows("SELECT patient_hash, snapshot FROM watch_board")
        return {r["patient_hash"]: json.loads(r["snapshot"]) for r in rows}

    def alerts_for(self, patient_hash: str, since: datetime) -> list[StoredAlert]:
        """The patient's alerts raised at or after ``since`` (what the board shows as open)."""
        return self._alerts("patient_hash = ? AND created_at >= ?", (patient_hash, since.astimezone(UTC).isoformat()))

    def undelivered(self) -> list[StoredAlert]:
        """Alerts not yet accepted by the webhook, oldest first (retried with the same id)."""
        return self._alerts("delivered_at IS NULL")

    def pending_writebacks(self) -> list[StoredAlert]:
        return self._alerts("writeback_status = ?", (WRITEBACK_PENDING,))

    def record_delivery(
        self, alert_id: str, *, attempt: int, status_code: int | None, error: str | None, delivered: bool
    ) -> None:
        """One delivery attempt; a delivered alert is marked so that it is never sent again."""
        now = datetime.now(UTC).isoformat()

        def write(tx: Transaction) -> None:
            tx.execute(_INSERT_DELIVERY, (alert_id, attempt, now, status_code, error, 1 if delivered else 0))
            if delivered:
                tx.execute(
                    "UPDATE watch_alert SET delivered_at = ? WHERE alert_id = ? AND delivered_at IS NULL",
                    (now, alert_id),
                )

        self.database.run(write)

    def attempts_so_far(self, alert_id: str) -> int:
        rows = self._rows("SELECT COUNT(*) AS n FROM watch_delivery WHERE alert_id = ?", (alert_id,))
        return int(rows[0]["n"])

    def record_writeback(self, alert_id: str, *, status: str, reference: str | None) -> None:
        self.database.run(
            lambda tx: tx.execute(
                "UPDATE watch_alert SET writeback_status = ?, writeback_reference = ? WHERE alert_id = ?",
                (status, reference, alert_id),
            )
        )

    def alert_rows(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM watch_alert ORDER BY created_at, alert_id")

    def delivery_rows(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM watch_delivery ORDER BY id")

    # -- the lease ---------------------------------------------------------------------------

    def take_lease(self, name: str, holder: str, *, ttl_s: float, now_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now_s + ttl_s``; True when held.

        Another holder's lease is taken over only once it has expired (its worker stopped renewing).
        ``now_s`` is this machine's clock (seconds since the epoch): watchers need synchronised clocks.
        """

        def take(tx: Transaction) -> bool:
            tx.execute(_TAKE_LEASE, (name, holder, now_s + ttl_s, now_s))
            row = tx.execute("SELECT holder FROM watch_lease WHERE name = ?", (name,)).fetchone()
            return row is not None and row[0] == holder

        return self.database.run(take)

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up on a clean stop, so a standby watcher need not wait for the expiry."""
        self.database.run(
            lambda tx: tx.execute("DELETE FROM watch_lease WHERE name = ? AND holder = ?", (name, holder))
        )

    def lease_holder(self, name: str, *, now_s: float) -> str | None:
        rows = self._rows("SELECT holder, expires_at FROM watch_lease WHERE name = ?", (name,))
        if not rows or float(rows[0]["expires_at"]) < now_s:
            return None
        holder: str = rows[0]["holder"]
        return holder
