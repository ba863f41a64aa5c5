"""Persist every issued card and every feedback item, so what clinicians accepted or overrode can
be audited and joined to what was shown. SQLite by default (WAL; committed before the 200);
PostgreSQL through the same setting (``postgresql://...``) when several replicas share a store.

Feedback is idempotent: each item is keyed by a hash of its canonical JSON, so a resent item is
stored once. Feedback for a card this instance never issued is kept and marked unmatched (another
replica or a restart may have issued it). No tokens are stored; patient ids only as a hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cds_hooks.stores.database import Database, Transaction, sqlite_path

__all__ = [
    "FeedbackItem",
    "FeedbackRequest",
    "FeedbackStore",
    "IssuedCard",
    "patient_hash",
    "sqlite_path",
]

_CARD_TABLE = """
CREATE TABLE IF NOT EXISTS issued_card (
    card_uuid TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    hook_instance TEXT NOT NULL,
    patient_hash TEXT NOT NULL,
    system TEXT NOT NULL,
    grade INTEGER,
    grade_at_least INTEGER,
    evaluated_at TEXT NOT NULL,
    evidence_references TEXT NOT NULL,
    suggestions TEXT NOT NULL,
    issued_at TEXT NOT NULL
)"""
_FEEDBACK_TABLE = """
CREATE TABLE IF NOT EXISTS feedback (
    id {identity},
    item_key TEXT NOT NULL UNIQUE,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    accepted_suggestions TEXT NOT NULL,
    override_system TEXT,
    override_code TEXT,
    user_comment TEXT,
    outcome_timestamp TEXT NOT NULL,
    received_at TEXT NOT NULL,
    matched INTEGER NOT NULL
)"""
_FEEDBACK_INDEX = "CREATE INDEX IF NOT EXISTS feedback_card ON feedback (card_uuid)"

_INSERT_CARD = "INSERT INTO issued_card VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (card_uuid) DO NOTHING"
_INSERT_FEEDBACK = (
    "INSERT INTO feedback (item_key, service_id, card_uuid, outcome, accepted_suggestions, override_system, "
    "override_code, user_comment, outcome_timestamp, received_at, matched) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item_key) DO NOTHING"
)


# -- the CDS Hooks 2.0 feedback body --------------------------------------------------------


class _OverrideCoding(BaseModel):
    model_config = ConfigDict(extra="allow")
    system: str | None = None
    code: str = Field(min_length=1, max_length=200)
    display: str | None = None


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="allow")
    reason: _OverrideCoding | None = None
    userComment: str | None = Field(default=None, max_length=4000)


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=128)


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    card: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: datetime

    def key(self, service_id: str) -> str:
        canonical = json.dumps([service_id, self.model_dump(mode="json", exclude_none=True)], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=100)


# -- storage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCard:
    card_uuid: str
    service_id: str
    hook_instance: str
    patient_hash: str
    system: str
    grade: int | None
    grade_at_least: int | None
    evaluated_at: datetime
    evidence_references: Sequence[str]
    suggestions: Sequence[tuple[str, str]]
    """(suggestion uuid, label)."""


class FeedbackStore:
    """Cards and feedback in one database (see :class:`~cds_hooks.stores.database.Database`).

    SQL is written once with ``?`` placeholders and ``ON CONFLICT DO NOTHING`` (both SQLite and
    PostgreSQL understand it), so a write retried after a reconnect is stored once.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self.description = database.description
        identity = (
            "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
            if database.postgres
            else "INTEGER PRIMARY KEY AUTOINCREMENT"
        )
        database.ensure_schema([_CARD_TABLE, _FEEDBACK_TABLE.format(identity=identity), _FEEDBACK_INDEX])

    @classmethod
    def open(cls, database_url: str) -> FeedbackStore:
        """SQLite (``sqlite:///path``; WAL) or PostgreSQL (``postgresql://...``)."""
        return cls(Database(database_url))

    def close(self) -> None:
        self.database.close()

    def record_cards(self, cards: Sequence[IssuedCard]) -> None:
        """Committed before it returns; raises StoreUnavailable when the database is down."""
        now = datetime.now(UTC).isoformat()

        def write(tx: Transaction) -> None:
            for c in cards:
                tx.execute(
                    _INSERT_CARD,
                    (
                        c.card_uuid,
                        c.service_id,
                        c.hook_instance,
                        c.patient_hash,
                        c.system,
                        c.grade,
                        c.grade_at_least,
                        c.evaluated_at.isoformat(),
                        json.dumps(list(c.evidence_references)),
                        json.dumps([list(s) for s in c.suggestions]),
                        now,
                    ),
                )

        self.database.run(write)

    def record_feedback(self, service_id: str, items: Sequence[FeedbackItem]) -> int:
        """Store each item once; returns how many were new. Committed before it returns."""
        now = datetime.now(UTC).isoformat()

        def write(tx: Transaction) -> int:
            added = 0
            for item in items:
                found = tx.execute("SELECT 1 FROM issued_card WHERE card_uuid = ?", (item.card,))
                matched = found.fetchone() is not None
                reason = item.overrideReason.reason if item.overrideReason else None
                cursor = tx.execute(
                    _INSERT_FEEDBACK,
                    (
                        item.key(service_id),
                        service_id,
                        item.card,
                        item.outcome,
                        json.dumps([s.id for s in item.acceptedSuggestions or []]),
                        reason.system if reason else None,
                        reason.code if reason else None,
                        item.overrideReason.userComment if item.overrideReason else None,
                        item.outcomeTimestamp.isoformat(),
                        now,
                        1 if matched else 0,
                    ),
                )
                added += max(cursor.rowcount, 0)
            return added

        return self.database.run(write)

    def _query(self, statement: str) -> list[dict[str, Any]]:
        def read(tx: Transaction) -> list[dict[str, Any]]:
            cursor = tx.execute(statement)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return self.database.run(read)

    def feedback_rows(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM feedback ORDER BY id")

    def card_rows(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM issued_card ORDER BY issued_at, card_uuid")

    def report(self) -> dict[str, Any]:
        """Acceptance and override rates by grade and by suggestion label."""
        rows = self._query(
            "SELECT f.outcome, f.accepted_suggestions, c.grade, c.suggestions, f.matched "
            "FROM feedback f LEFT JOIN issued_card c ON c.card_uuid = f.card_uuid"
        )
        by_grade: dict[str, dict[str, int]] = {}
        by_suggestion: dict[str, dict[str, int]] = {}
        unmatched = 0
        for row in rows:
            matched = bool(row["matched"])
            unmatched += 0 if matched else 1
            label = "unmatched" if not matched else ("indeterminate" if row["grade"] is None else str(row["grade"]))
            bucket = by_grade.setdefault(label, {"accepted": 0, "overridden": 0})
            bucket[row["outcome"]] += 1
            offered = dict(json.loads(row["suggestions"])) if row["suggestions"] else {}
            accepted = set(json.loads(row["accepted_suggestions"]))
            for uid, name in offered.items():
                stats = by_suggestion.setdefault(name, {"offered": 0, "accepted": 0})
                stats["offered"] += 1
                stats["accepted"] += 1 if uid in accepted else 0
        return {"total": len(rows), "unmatched": unmatched, "byGrade": by_grade, "bySuggestion": by_suggestion}


def patient_hash(patient_id: str) -> str:
    """Patient ids never appear in clear in logs or the store."""
    return hashlib.sha256(f"crs-cds:{patient_id}".encode()).hexdigest()[:16]
