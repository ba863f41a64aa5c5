"""CRS episodes (clinical reference section 5): onset, sign end times, resolution after 24 h of data
without a sign, recurrence, worst grade with its references, treatments; then the 4-dose
tocilizumab limit counted per CRS event through the order hook (issue 16 item 3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.episodes import episodes
from cds_hooks.pipeline.evaluate import Grading, evaluate
from cds_hooks.reading.reader import SourcedResource
from fastapi.testclient import TestClient

from fhir_builders import (
    Resource,
    T,
    bp_panel,
    medication_administration,
    patient,
    reference,
    rxnorm,
    temperature,
)
from test_order_hooks import TOCI, adult, call, check_of, client, draft, topic

__all__ = ["client"]

NOREPINEPHRINE = rxnorm("7512", "norepinephrine")
TECLISTAMAB_ATC = {"coding": [{"system": "http://www.whocc.no/atc", "code": "L01FX24"}]}


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


@dataclass(frozen=True)
class EpisodeCase:
    record: list[Resource]
    count: int
    resolved: tuple[bool, ...] = ()
    onset_hours_before: tuple[float, ...] = ()
    max_grades: tuple[int, ...] = ()
    toci_doses: tuple[int, ...] = ()


EPISODE_CASES: dict[str, EpisodeCase] = {
    "no-fever->no-episode": EpisodeCase([patient(45), *normal(30, "1"), *normal(2, "2")], 0),
    "fever-then-24h-normal->resolved": EpisodeCase(
        [patient(45), *fever(60, "1"), *fever(50, "2"), *normal(30, "3"), *normal(20, "4")],
        1,
        (True,),
        (60,),
        (1,),
    ),
    "fever-then-temperature-only-after-24h->unresolved": EpisodeCase(
        [patient(45), *fever(60, "1"), *normal(30, "2")], 1, (False,), (60,), (1,)
    ),
    "fever-then-no-temperature->unresolved-for-want-of-data": EpisodeCase(
        [patient(45), *fever(60, "1"), bp_panel("b9", 120, 80, hours_before=20)], 1, (False,), (60,), (1,)
    ),
    "fever-12h-ago->unresolved-less-than-24h": EpisodeCase(
        [patient(45), *fever(12, "1"), *normal(2, "2")], 1, (False,), (12,), (1,)
    ),
    "fever-again-after-resolution->two-episodes": EpisodeCase(
        [patient(45), *fever(100, "1"), *normal(80, "2"), *normal(70, "3"), *fever(10, "4"), *normal(1, "5")],
        2,
        (True, False),
        (100, 10),
        (1, 1),
    ),
    "fever-gap-under-24h->one-episode": EpisodeCase(
        [patient(45), *fever(40, "1"), *normal(30, "2"), *fever(20, "3"), *normal(2, "4")],
        1,
        (False,),
        (40,),
        (1,),
    ),
    "pressor-running->unresolved-grade-3": EpisodeCase(
        [
            patient(45),
            *fever(30, "1"),
            medication_administration("ne1", NOREPINEPHRINE, status="in-progress", period=(29, None)),
            *normal(1, "2"),
        ],
        1,
        (False,),
        (30,),
        (3,),
    ),
    "tocilizumab-in-episode->counted": EpisodeCase(
        [patient(45), *fever(60, "1"), toci("g1", 59), *normal(45, "2"), *normal(20, "3")],
        1,
        (True,),
        (60,),
        (1,),
        (1,),
    ),
}


@pytest.mark.parametrize("case_id", list(EPISODE_CASES))
def test_episode_rules(grading: Grading, case_id: str) -> None:
    case = EPISODE_CASES[case_id]
    sourced = [SourcedResource(r, reference(r)) for r in case.record]
    record = evaluate(sourced, patient_id="p1", at=T, grading=grading).record
    found = episodes(record, GradingConfig(), until=T)
    assert len(found) == case.count
    assert tuple(e.resolved for e in found) == case.resolved
    assert tuple(e.resolution is not None for e in found) == case.resolved
    assert tuple(round((T - e.onset).total_seconds() / 3600) for e in found) == case.onset_hours_before
    assert tuple(e.max_grade for e in found) == case.max_grades
    for episode in found:
        assert episode.onset_references and episode.max_grade_references
        assert episode.resolved or episode.unresolved_reason
    if case.toci_doses:
        assert tuple(len(e.tocilizumab_doses) for e in found) == case.toci_doses


def test_onset_day_from_the_therapy(grading: Grading) -> None:
    record_resources = [
        patient(45),
        medication_administration("tec1", TECLISTAMAB_ATC, hours_before=72),
        *fever(30, "1"),
        *normal(2, "2"),
    ]
    sourced = [SourcedResource(r, reference(r)) for r in record_resources]
    record = evaluate(sourced, patient_id="p1", at=T, grading=grading).record
    (episode,) = episodes(record, GradingConfig(), until=T)
    assert episode.therapy is not None and episode.therapy.reference == "MedicationAdministration/tec1"
    assert (
        episode.onset_day == (T - timedelta(hours=30)).date().toordinal() - (T - timedelta(hours=72)).date().toordinal()
    )


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
