"""Time-indexed views of a patient record, built once per grading, queried per moment.

The worst grade re-applies the rules at every data time in the look-back window, so each rule's
question ("the hottest temperature in the 24 h before t", "the latest device since the last
room-air record") is answered in O(log n) from precomputed tables instead of a scan: the cost of
a grading grows with n log n, not n squared.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TimeSeries(Generic[T]):
    """Records sorted by time, with window and "latest before" queries."""

    def __init__(self, records: Sequence[T], time_of: Callable[[T], datetime]) -> None:
        self.records = sorted(records, key=time_of)
        self.times = [time_of(r) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def span(self, start: datetime, end: datetime, *, include_start: bool = False) -> tuple[int, int]:
        """Index range of records in (start, end], or [start, end] with ``include_start``."""
        lo = bisect_left(self.times, start) if include_start else bisect_right(self.times, start)
        return lo, bisect_right(self.times, end)

    def latest(self, end: datetime, *, not_before: datetime, strictly_after: datetime | None = None) -> T | None:
        """The latest record at or before ``end`` and at or after ``not_before`` (and, when given,
        strictly after ``strictly_after``)."""
        index = bisect_right(self.times, end) - 1
        if index < 0:
            return None
        moment = self.times[index]
        if moment < not_before or (strictly_after is not None and moment <= strictly_after):
            return None
        return self.records[index]

    def first(self, start: datetime, end: datetime, *, include_start: bool) -> T | None:
        """The earliest record in the window."""
        lo, hi = self.span(start, end, include_start=include_start)
        return self.records[lo] if lo < hi else None


class RangeBest(Generic[T]):
    """The best record of any index range in O(1): a sparse table over a fixed list.

    ``rank(record)`` orders the records: the best has the highest rank, and among equal ranks
    the later record wins. Ranks are computed once per record and the table is built by
    comparing them directly, so building it costs n log n comparisons of plain values rather
    than n log n calls of a comparison function (the table is rebuilt at every grading). It is
    built at the first query: a grading that never asks (an afebrile course never asks for the
    lowest pressure in the episode scan) never pays for it.
    """

    def __init__(self, records: Sequence[T], rank: Callable[[T], Any]) -> None:
        self._records = list(records)
        self._rank = rank
        self._ranks: list[Any] = []
        self._levels: list[list[int]] | None = None

    def _build(self) -> list[list[int]]:
        ranks = self._ranks = [self._rank(r) for r in self._records]
        levels: list[list[int]] = [list(range(len(self._records)))]
        width = 1
        while 2 * width <= len(self._records):
            previous = levels[-1]
            levels.append([a if ranks[a] > ranks[b] else b for a, b in zip(previous, previous[width:], strict=False)])
            width *= 2
        self._levels = levels
        return levels

    def best(self, lo: int, hi: int) -> T | None:
        """The best record with index in [lo, hi), or None for an empty range."""
        if lo >= hi:
            return None
        levels = self._levels if self._levels is not None else self._build()
        level = (hi - lo).bit_length() - 1
        row = levels[level]
        a, b = row[lo], row[hi - (1 << level)]
        return self._records[a if self._ranks[a] > self._ranks[b] else b]
