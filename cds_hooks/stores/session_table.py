"""Server-side sessions every replica can read, encrypted at rest.

The SMART app keeps its sessions (a pending launch's ``state`` and PKCE verifier; a signed-in
session's access token) on the server. With several replicas behind a load balancer they live in
the shared database, so a session works on every replica without sticky routing. The payload is
encrypted with Fernet (AES-128-CBC + HMAC-SHA256, the ``cryptography`` package) under a key from
the settings: a copy of the database alone does not reveal a token. Session ids are stored only as
a SHA-256 hash, so neither can a stolen table be replayed as cookies.

Pending launches and signed-in sessions are bounded apart (each kind drops its oldest beyond its
limit), so unauthenticated launches cannot evict a clinician's session.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from cryptography.fernet import Fernet, InvalidToken

from cds_hooks.errors import ConfigurationError
from cds_hooks.stores.database import Database, Transaction

SessionKind = Literal["pending", "signed-in"]

_SESSION_TABLE = """
CREATE TABLE IF NOT EXISTS smart_session (
    id_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    payload TEXT NOT NULL
)"""
_SESSION_INDEX = "CREATE INDEX IF NOT EXISTS smart_session_kind ON smart_session (kind, created)"


def new_session_key() -> str:
    """A fresh key for ``CRS_CDS_SESSION_KEY`` (``crs-cds`` prints one on request)."""
    return Fernet.generate_key().decode("ascii")


def is_session_key(key: str) -> bool:
    """A usable Fernet key (checked at start-up: a bad key must stop the service, not a sign-in)."""
    try:
        Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return True


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


SQLITE_RETURNING = (3, 35, 0)
"""A launch is spent in one statement (``take``); SQLite has RETURNING from 3.35."""


class EncryptedSessionTable:
    """Sessions by id in the database; payloads are JSON objects, encrypted.

    Times are wall-clock seconds (``time.time``): replicas must agree on them.
    """

    def __init__(
        self,
        database: Database,
        key: str,
        *,
        limits: Mapping[SessionKind, int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not database.postgres and sqlite3.sqlite_version_info < SQLITE_RETURNING:
            raise ConfigurationError(
                f"SMART sessions in SQLite need SQLite >= 3.35 (DELETE ... RETURNING); this Python has "
                f"{sqlite3.sqlite_version}: use PostgreSQL or a newer SQLite"
            )
        self._database = database
        self._fernet = Fernet(key.encode("ascii"))
        self._limits = dict(limits)
        self._clock = clock
        self._last_created = 0.0
        self._stamping = threading.Lock()  # callers run in worker threads: stamps stay strictly rising
        database.ensure_schema([_SESSION_TABLE, _SESSION_INDEX])

    def now(self) -> float:
        return self._clock()

    def put(self, kind: SessionKind, session_id: str, expires: float, payload: Mapping[str, Any]) -> None:
        """Store (or replace) a session, purge expired ones, and keep ``kind`` within its limit."""
        now = self._clock()
        with self._stamping:
            created = self._last_created = max(now, self._last_created + 1e-6)  # newest sorts first, even on ties
        sealed = self._fernet.encrypt(json.dumps(dict(payload)).encode()).decode("ascii")
        limit = self._limits[kind]

        def write(tx: Transaction) -> None:
            tx.execute("DELETE FROM smart_session WHERE expires <= ?", (now,))
            tx.execute("DELETE FROM smart_session WHERE id_hash = ?", (_id_hash(session_id),))
            tx.execute(
                "INSERT INTO smart_session (id_hash, kind, created, expires, payload) VALUES (?, ?, ?, ?, ?)",
                (_id_hash(session_id), kind, created, expires, sealed),
            )
            # Pruned at every put, so only a few rows are ever past the limit.
            extra = tx.execute(
                "SELECT id_hash FROM smart_session WHERE kind = ? ORDER BY created DESC, id_hash LIMIT 1000 OFFSET ?",
                (kind, limit),
            ).fetchall()
            for (old_hash,) in extra:
                tx.execute("DELETE FROM smart_session WHERE id_hash = ?", (old_hash,))

        self._database.run(write)

    def get(self, session_id: str) -> tuple[SessionKind, dict[str, Any]] | None:
        """The session's kind and payload; None when unknown, expired, or not readable with the key."""
        now = self._clock()

        def read(tx: Transaction) -> tuple[str, str] | None:
            row = tx.execute(
                "SELECT kind, payload FROM smart_session WHERE id_hash = ? AND expires > ?",
                (_id_hash(session_id), now),
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        found = self._database.run(read)
        return None if found is None else self._opened(*found)

    def take(self, session_id: str) -> tuple[SessionKind, dict[str, Any]] | None:
        """Read and delete in one statement: of two replicas spending the same launch at once,
        exactly one gets it (``DELETE ... RETURNING``: PostgreSQL, SQLite >= 3.35)."""
        now = self._clock()

        def spend(tx: Transaction) -> tuple[str, str, float] | None:
            row = tx.execute(
                "DELETE FROM smart_session WHERE id_hash = ? RETURNING kind, payload, expires",
                (_id_hash(session_id),),
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]), float(row[2]))

        found = self._database.run(spend)
        if found is None or found[2] <= now:
            return None  # unknown, or expired (deleted all the same)
        return self._opened(found[0], found[1])

    def _opened(self, kind: str, sealed: str) -> tuple[SessionKind, dict[str, Any]] | None:
        try:
            payload = json.loads(self._fernet.decrypt(sealed.encode("ascii")))
        except (InvalidToken, ValueError):
            return None  # written under another key (rotated): the user signs in again
        if not isinstance(payload, dict) or kind not in ("pending", "signed-in"):
            return None
        return ("pending" if kind == "pending" else "signed-in"), payload

    def delete(self, session_id: str) -> None:
        self._database.run(
            lambda tx: tx.execute("DELETE FROM smart_session WHERE id_hash = ?", (_id_hash(session_id),))
        )

    def counts(self) -> tuple[int, int]:
        """(pending, signed-in) sessions not yet expired."""
        now = self._clock()

        def count(tx: Transaction) -> tuple[int, int]:
            rows = tx.execute(
                "SELECT kind, COUNT(*) FROM smart_session WHERE expires > ? GROUP BY kind", (now,)
            ).fetchall()
            found = {str(kind): int(n) for kind, n in rows}
            return found.get("pending", 0), found.get("signed-in", 0)

        return self._database.run(count)
