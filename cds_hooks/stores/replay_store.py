"""The JWT replay check shared by every replica: each ``jti`` is kept in the database until it expires.

A CDS client's JWT may be used once (CDS Hooks 2.0). With several replicas behind a load
balancer, a replayed JWT must be refused by whichever replica receives it, so the ``jti`` values
live in the shared database (PostgreSQL). While the database is unreachable the check falls back
to this replica's own memory: a replay to another replica is then possible, and only then
(docs/decisions.md). Every ``jti`` is also remembered locally, so a replay to the same replica is
refused during an outage too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from cds_hooks.stores.database import Database, StoreUnavailable, Transaction

log = logging.getLogger("crs_cds.store")

_JTI_TABLE = """
CREATE TABLE IF NOT EXISTS seen_jti (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (issuer, jti)
)"""
_JTI_INDEX = "CREATE INDEX IF NOT EXISTS seen_jti_expiry ON seen_jti (expires_at)"


class LocalReplayCache(Protocol):
    def first_sighting(self, issuer: str, jti: str, expires_at: float) -> bool: ...


class SharedReplayCache:
    """``first_sighting`` across replicas; the local cache serves during a database outage."""

    def __init__(self, database: Database, local: LocalReplayCache, *, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._local = local
        self._clock = clock
        database.ensure_schema([_JTI_TABLE, _JTI_INDEX])

    def first_sighting(self, issuer: str, jti: str, expires_at: float) -> bool:
        first_here = self._local.first_sighting(issuer, jti, expires_at)
        now = self._clock()

        def claim(tx: Transaction) -> bool:
            tx.execute("DELETE FROM seen_jti WHERE expires_at < ?", (now,))
            cursor = tx.execute(
                "INSERT INTO seen_jti (issuer, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING",
                (issuer, jti, expires_at),
            )
            return bool(cursor.rowcount == 1)

        try:
            return self._database.run(claim) and first_here
        except StoreUnavailable:
            log.warning("replay check on this replica only: store unavailable")
            return first_here
