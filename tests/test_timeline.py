"""The range tables the worst-grade scan queries (``grading/timeline.py``): the evidence a grade
cites depends on which record wins a window, so ties and gaps are pinned down here.

RangeBest ranks each record once (issue 11: the table is rebuilt at every grading); every range
of every case is checked against a plain scan, and the tie rule (the later record wins, so the
evidence is the most recent of equal readings) is checked by name.
"""

from __future__ import annotations

import random

import pytest
from cds_hooks.grading.timeline import RangeBest


def _scan(values: list[float | None], lo: int, hi: int) -> int | None:
    """Index of the lowest value in [lo, hi), later index on ties, None (no value) ranking last."""
    best: int | None = None
    for i in range(lo, hi):
        if best is None:
            best = i
            continue
        v, b = values[i], values[best]
        if (v if v is not None else float("inf")) <= (b if b is not None else float("inf")):
            best = i
    return best


def _rank(value: float | None) -> float:
    return -value if value is not None else float("-inf")


CASES = [
    pytest.param([], id="empty"),
    pytest.param([90.0], id="one"),
    pytest.param([90.0, 90.0, 90.0], id="all-equal->latest"),
    pytest.param([None, 85.0, None], id="gaps-rank-last"),
    pytest.param([None, None], id="only-gaps->latest"),
    pytest.param([120.0, 80.0, 95.0, 80.0, 101.0], id="tie-at-the-low->later"),
    pytest.param([float(x) for x in random.Random(7).choices(range(60, 70), k=37)], id="random-37-many-ties"),
]


@pytest.mark.parametrize("values", CASES)
def test_lowest_of_every_range_matches_a_scan(values: list[float | None]) -> None:
    table = RangeBest(list(range(len(values))), lambda i: _rank(values[i]))
    for lo in range(len(values) + 1):
        for hi in range(len(values) + 1):
            expected = _scan(values, lo, hi) if lo < hi else None
            assert table.best(lo, hi) == expected, (lo, hi)


def test_hottest_tie_goes_to_the_later_reading() -> None:
    readings = [(39.0, "t1"), (38.2, "t2"), (39.0, "t3")]
    table = RangeBest(readings, lambda r: r[0])
    assert table.best(0, 3) == (39.0, "t3")
    assert table.best(0, 2) == (39.0, "t1")
