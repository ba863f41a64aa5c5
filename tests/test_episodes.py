"""CRS and ICANS episodes (clinical-reference.md section 5): what a registry abstractor would write.

Each case is a course charted relative to T (the end of the data here); the assertions are the
fields of CIBMTR form 4100 / the EBMT day-100 form: onset, worst grade and when, resolved or not
and when, the therapy before onset and the onset day, and the treatments counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.episodes import Episode, EpisodeCourse, crs_episodes, icans_episodes
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.record import PatientRecord
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

from fhir_builders import (
    PATIENT_ID,
    Resource,
    T,
    atc,
    concept,
    medication_administration,
    patient,
    reference,
    rxnorm,
    systolic_bp,
    temperature,
    when,
)

ICANS = "http://hospital.example.org/fhir/CodeSystem/icans"


def hours(h: float) -> datetime:
    return T - timedelta(hours=h)


def record_of(*resources: Resource) -> PatientRecord:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), *resources]]
    return extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)


def temps(prefix: str, celsius: float, *hours_before: float) -> list[Resource]:
    return [temperature(f"{prefix}{i}", celsius, hours_before=h) for i, h in enumerate(hours_before)]


def car_t(hours_before: float) -> Resource:
    return medication_administration("cart", atc("L01XL03", "axicabtagene ciloleucel"), hours_before=hours_before)


def tocilizumab(rid: str, hours_before: float) -> Resource:
    return medication_administration(rid, rxnorm("612865", "tocilizumab"), hours_before=hours_before, dose=(600, "mg"))


def norepinephrine(rid: str, start: float, end: float | None) -> Resource:
    return medication_administration(
        rid, rxnorm("7512", "norepinephrine"), status="in-progress" if end is None else "completed", period=(start, end)
    )


def crs(*resources: Resource) -> EpisodeCourse:
    return crs_episodes(record_of(*resources), until=T, config=GradingConfig())


@dataclass(frozen=True)
class Expected:
    onset: datetime
    max_grade: int
    max_grade_at: datetime
    resolution: datetime | None


def summary(episode: Episode) -> Expected:
    return Expected(episode.onset, episode.max_grade, episode.max_grade_at, episode.resolution)


SINGLE = [
    car_t(120),
    *temps("fever", 39.0, 96, 90, 86),
    *temps("normal", 37.0, 92, 84, 76, 70, 60, 50),
    systolic_bp("low", 85, hours_before=90),
    systolic_bp("ok", 118, hours_before=76),
    norepinephrine("ne", 89, 80),
    tocilizumab("toci1", 88),
]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            SINGLE,
            [Expected(hours(96), 3, hours(89), hours(80))],
            id="fever+pressor+tocilizumab->one-episode-grade-3-resolved-at-pressor-end",
        ),
        pytest.param(
            [*temps("f", 38.5, 96, 40), *temps("n", 36.8, 90, 80, 70, 30, 20)],
            [Expected(hours(96), 1, hours(96), hours(96)), Expected(hours(40), 1, hours(40), hours(40))],
            id="fever-resolved-then-new-fever->two-episodes",
        ),
        pytest.param(
            [*temps("f", 38.5, 10), *temps("n", 36.8, 5)],
            [Expected(hours(10), 1, hours(10), None)],
            id="fever-10h-before-end-of-data->unresolved",
        ),
        pytest.param(
            [
                *temps("f", 38.6, 60),
                tocilizumab("toci1", 58),
                *temps("n", 36.9, 55, 50, 40, 30, 20),
                systolic_bp("low", 82, hours_before=44),
            ],
            [Expected(hours(60), 2, hours(44), hours(44))],
            id="masked-fever-after-tocilizumab-low-pressure->same-episode-grade-2",
        ),
        pytest.param(
            [*temps("fever", 38.4, 30), systolic_bp("ok", 120, hours_before=30)],
            [Expected(hours(30), 1, hours(30), None)],
            id="fever-without-24h-of-later-temperatures->unresolved-never-resolved-for-want-of-data",
        ),
        pytest.param([*temps("n", 36.9, 60, 40, 20)], [], id="normal-temperatures->no-episode"),
    ],
)
def test_crs_episodes(resources: list[Resource], expected: list[Expected]) -> None:
    course = crs(*resources)
    assert course.decided
    assert [summary(e) for e in course.episodes] == expected
    assert all(e.resolved == (e.resolution is not None) for e in course.episodes)


def test_treatments_and_therapy_of_an_episode() -> None:
    (episode,) = crs(*SINGLE).episodes
    assert (episode.therapy, episode.therapy_at, episode.onset_day) == ("axicabtagene_ciloleucel", hours(120), 1)
    assert (episode.tocilizumab_doses, episode.tocilizumab_first) == (1, hours(88))
    assert (episode.vasopressors_max, episode.vasopressor_start) == (1, hours(89))
    assert (episode.fever_onset, episode.hypotension_onset) == (hours(96), hours(90))
    assert episode.duration_hours == 16.0
    assert {"MedicationAdministration/ne", "MedicationAdministration/toci1", "Observation/fever0"} <= set(
        episode.references
    )
    assert "MedicationAdministration/cart" in episode.references


def test_two_pressors_at_once_are_counted() -> None:
    resources = [
        *temps("f", 39.0, 20, 12),
        norepinephrine("ne", 18, None),
        medication_administration("epi", rxnorm("3992", "epinephrine"), status="in-progress", period=(15, None)),
    ]
    (episode,) = crs(*resources).episodes
    assert (episode.max_grade, episode.vasopressors_max, episode.resolved) == (4, 2, False)


def test_no_temperature_cannot_decide() -> None:
    course = crs(systolic_bp("ok", 120, hours_before=10))
    assert not course.decided and not course.episodes
    assert course.missing


def test_current_episode_at_a_time() -> None:
    course = crs(*SINGLE)
    assert course.current(hours(85)) is course.episodes[0]
    assert course.current(hours(10)) is None


def _ice(rid: str, score: int, hours_before: float) -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": concept(ICANS, "ICE-TOTAL"),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when(hours_before),
        "valueInteger": score,
    }


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        pytest.param(
            [(7, 48), (5, 40), (10, 30), (10, 10)],
            [Expected(hours(48), 2, hours(40), hours(40))],
            id="ice-7-then-5-then-10->one-episode-grade-2-resolved",
        ),
        pytest.param(
            [(10, 48), (8, 6)],
            [Expected(hours(6), 1, hours(6), None)],
            id="ice-8-six-hours-before-end->unresolved",
        ),
        pytest.param([(10, 48), (10, 20)], [], id="ice-10-throughout->no-episode"),
    ],
)
def test_icans_episodes(scores: list[tuple[int, float]], expected: list[Expected]) -> None:
    record = record_of(*(_ice(f"ice{i}", s, h) for i, (s, h) in enumerate(scores)))
    course = icans_episodes(record, until=T)
    assert course.decided
    assert [summary(e) for e in course.episodes] == expected


def test_icans_without_assessments_cannot_decide() -> None:
    course = icans_episodes(record_of(*temps("n", 36.9, 10)), until=T)
    assert not course.decided and course.missing


@pytest.mark.parametrize(
    ("system", "resources", "expected", "indeterminate"),
    [
        pytest.param(
            "LEE-2014",
            SINGLE,
            [Expected(hours(96), 2, hours(90), hours(80))],
            False,
            id="lee-2014:low-pressure-then-one-vasopressor->same-episode-grade-2",
        ),
        pytest.param(
            "CTCAE-5.0",
            [*temps("f", 38.5, 96, 40), *temps("n", 36.8, 90, 80, 70, 30, 20)],
            [Expected(hours(96), 1, hours(96), hours(96)), Expected(hours(40), 1, hours(40), hours(40))],
            True,
            id="ctcae:fever-twice->two-episodes-at-least-grade-1-(organ-toxicity-unseen)",
        ),
    ],
)
def test_other_systems_share_the_episode_rules(
    system: str, resources: list[Resource], expected: list[Expected], indeterminate: bool
) -> None:
    """Another CRS system: same data times, signs, onset and resolution; its own grade."""
    course = crs_episodes(record_of(*resources), until=T, config=GradingConfig(), system=system)
    assert course.system == system
    assert [summary(e) for e in course.episodes] == expected
    assert {e.indeterminate for e in course.episodes} == {indeterminate}
    assert all(e.system == system for e in course.episodes)


def test_icans_worst_grade_is_only_at_least_when_a_later_moment_may_be_worse() -> None:
    """ICE 5 (grade 2) 48 h before the end, then "awakens to voice" 20 h before with no ICE in
    the window: that moment is at least grade 2 and could be 3 (an ICE of 0-2 is not excluded).
    The episode's worst grade is 2 first seen at 48 h, but only "at least": indeterminate."""
    voice = {
        "resourceType": "Observation",
        "id": "loc1",
        "status": "final",
        "code": concept(ICANS, "LOC"),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when(20),
        "valueCodeableConcept": concept(ICANS, "LOC-VOICE"),
    }
    course = icans_episodes(record_of(_ice("ice0", 5, 48), voice), until=T)
    [episode] = course.episodes
    assert (episode.max_grade, episode.max_grade_at, episode.resolution) == (2, hours(48), None)
    assert episode.indeterminate
