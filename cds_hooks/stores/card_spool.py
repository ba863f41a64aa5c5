"""Issued-card records that wait in a bounded spool while the store is down.

Cards matter more than their records: a ``patient-view`` card is served while the database is
down, and its record waits here until the store returns (replayed by :meth:`CardRecorder.flush`,
which the service calls on a timer and before each new write). The spool is bounded: what does
not fit is counted and logged, never silently lost. While the store is up, a record is committed
before the card is answered (nothing answered is lost to a SIGKILL).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

from cds_hooks.stores.database import StoreUnavailable
from cds_hooks.stores.feedback_store import FeedbackStore, IssuedCard

log = logging.getLogger("crs_cds.store")

DEFAULT_SPOOL_CARDS = 10_000
"""About 10 MB of records: hours of a busy hospital's chart opens [choice]."""


class CardRecorder:
    """Writes card records through, or spools them while the store is unavailable."""

    def __init__(self, store: FeedbackStore, *, capacity: int = DEFAULT_SPOOL_CARDS) -> None:
        self._store = store
        self._capacity = capacity
        self._spool: deque[IssuedCard] = deque()
        self._lock = threading.Lock()
        self.dropped = 0
        """Records that did not fit in the spool while the store was down (logged as they go)."""

    @property
    def pending(self) -> int:
        return len(self._spool)

    def record(self, cards: Sequence[IssuedCard]) -> bool:
        """True when committed now; False when spooled (the store is down)."""
        if not cards:
            return True
        if self._spool:
            self.flush()
        try:
            self._store.record_cards(cards)
        except StoreUnavailable:
            self._keep(cards)
            return False
        return True

    def flush(self) -> int:
        """Replay spooled records while the store accepts them; returns how many were stored."""
        stored = 0
        while True:
            with self._lock:
                batch = [self._spool[i] for i in range(min(len(self._spool), 100))]
            if not batch:
                return stored
            try:
                self._store.record_cards(batch)
            except StoreUnavailable:
                return stored
            with self._lock:
                for _ in batch:
                    if self._spool:
                        self._spool.popleft()
            stored += len(batch)
            log.info("spooled card records stored", extra={"stored": len(batch), "pending": len(self._spool)})

    def _keep(self, cards: Sequence[IssuedCard]) -> None:
        with self._lock:
            room = self._capacity - len(self._spool)
            kept = list(cards[: max(room, 0)])
            self._spool.extend(kept)
            lost = len(cards) - len(kept)
            self.dropped += lost
            pending, dropped = len(self._spool), self.dropped
        if lost:
            log.error("card records lost: spool full", extra={"lost": lost, "dropped_total": dropped})
        log.warning("card records spooled: store unavailable", extra={"spooled": len(kept), "pending": pending})
