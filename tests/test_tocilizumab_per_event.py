"""The 4-dose tocilizumab limit counted per CRS event (issue 16 item 3), through the order hook:
the current episode (``grading/episodes.py``) and any episode resolved < 7 days before it, plus
every dose of the last 7 days; the card names where the count starts and the next steps."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from fhir_builders import (
    Resource,
    bp_panel,
    medication_administration,
    temperature,
)
from test_order_hooks import TOCI, adult, call, check_of, client, draft, topic

__all__ = ["client"]


def normal(hours_before: float, rid: str) -> list[Resource]:
    """A normal temperature and pressure charted together (data, no sign)."""
    return [
        temperature(f"t{rid}", 37.0, hours_before=hours_before),
        bp_panel(f"b{rid}", 120, 80, hours_before=hours_before),
    ]


def fever(hours_before: float, rid: str, celsius: float = 38.6) -> list[Resource]:
    return [
        temperature(f"f{rid}", celsius, hours_before=hours_before),
        bp_panel(f"fb{rid}", 118, 76, hours_before=hours_before),
    ]


def toci(rid: str, hours_before: float) -> Resource:
    return medication_administration(rid, TOCI, hours_before=hours_before, dose=(600, "mg"))


# -- the 4-dose limit per CRS event, through the order hook --------------------------------


def old_episode_with_four_doses(days_ago: float) -> list[Resource]:
    """Fever, four doses over the episode, then normal data: resolved ``days_ago`` - 3 days."""
    start = days_ago * 24
    return [
        *fever(start, "o1"),
        toci("g1", start - 1),
        toci("g2", start - 10),
        *fever(start - 12, "o2"),
        toci("g3", start - 20),
        toci("g4", start - 30),
        *fever(start - 36, "o3"),
        *normal(start - 50, "o4"),
        *normal(start - 70, "o5"),
    ]


@pytest.mark.parametrize(
    ("record", "outcome"),
    [
        pytest.param(
            [*adult(75), *old_episode_with_four_doses(81), *fever(2, "n1")],
            "ok",
            id="4-doses-60-81-days-ago-new-episode->ok",
        ),
        pytest.param(
            [*adult(75), *old_episode_with_four_doses(6), *fever(2, "n1")],
            "no-dose-allowed",
            id="4-doses-in-episode-resolved-under-7-days-before->blocked",
        ),
        pytest.param(
            [*adult(75), *old_episode_with_four_doses(4)],
            "no-dose-allowed",
            id="4-doses-in-current-episode->blocked",
        ),
        pytest.param(
            [*adult(75), toci("g1", 100), toci("g2", 80), toci("g3", 60), toci("g4", 30)],
            "no-dose-allowed",
            id="4-doses-last-7-days-no-temperature->blocked",
        ),
    ],
)
def test_tocilizumab_total_counted_per_crs_event(client: TestClient, record: list[Resource], outcome: str) -> None:
    cards = call(client, "order-sign", record, [draft("mr1", TOCI, 600)])
    (card,) = topic(cards, "tocilizumab-order")
    assert check_of(card)["outcome"] == outcome
    assert "dose count:" in card["detail"]
    if outcome == "no-dose-allowed":
        assert "per event" in card["detail"]
        assert "anakinra" in card["detail"] and "siltuximab" in card["detail"] and "corticosteroid" in card["detail"]
