"""The episode scan (``AstctGrader.scan``) and the card's rules (``AstctGrader.assess``) are one
set of rules: on generated records, at every data time, the scan's worst value, "graded", oxygen
support and pressor-in-effect equal what ``assess`` (with and without evidence) says, and the
card's worst grade (found with the scan) equals the one ``assess`` at every scanned moment finds.

Records are built directly (not from FHIR) so every shape the rules read is reachable: date-only
times, periods, in-progress and unfinished administrations, masking drugs of each role, CRS
Conditions, unreadable oxygen, unavailable data groups, children and unknown ages.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import pytest
from cds_hooks.grading.astct import AstctGrader
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.episodes import _crs_times
from cds_hooks.grading.result import Status
from cds_hooks.reading.fhir_time import age_in_years
from cds_hooks.reading.record import (
    Administration,
    BloodPressure,
    CrsCondition,
    DataSource,
    OxygenRecord,
    PatientRecord,
    Temperature,
    UnreadableOxygen,
)
from cds_hooks.reading.terminology import MedicationRole
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

START = datetime(2025, 3, 1, tzinfo=UTC)
CONFIG = GradingConfig()
EXAMPLES = int(os.environ.get("CRS_CDS_PROPERTY_EXAMPLES", "400"))

hours = st.integers(0, 4 * 24 * 4).map(lambda quarter: START + timedelta(minutes=15 * quarter))
"""A moment in a 4-day course, on a 15-minute grid (so moments coincide, as charted data do)."""


@st.composite
def date_only(draw: st.DrawFn, precise: bool) -> timedelta | None:
    """The width of a date-only interval, or None for a precise time."""
    if precise or draw(st.integers(0, 5)) != 0:
        return None
    return timedelta(hours=draw(st.sampled_from([24, 26, 50])))


@st.composite
def temperatures(draw: st.DrawFn, precise: bool) -> Temperature:
    at = draw(hours)
    width = draw(date_only(precise))
    celsius = draw(st.sampled_from([36.5, 37.9, 38.0, 39.2]))
    return Temperature(at, celsius, f"{celsius} Cel", f"Observation/t{at:%d%H%M}", latest=at + width if width else None)


@st.composite
def pressures(draw: st.DrawFn, precise: bool) -> BloodPressure:
    at = draw(hours)
    width = draw(date_only(precise))
    systolic = draw(st.none() | st.sampled_from([60.0, 72.0, 85.0, 95.0, 120.0]))
    mean = draw(st.none() | st.sampled_from([55.0, 64.0, 70.0]))
    return BloodPressure(
        at,
        f"Observation/bp{at:%d%H%M}",
        systolic_mmhg=systolic if systolic is not None or mean is not None else 100.0,
        mean_mmhg=mean,
        diastolic_mmhg=40.0 if mean is not None else None,
        mean_derived=mean is not None and draw(st.booleans()),
        latest=at + width if width else None,
    )


DEVICES = [None, "nasal_cannula", "high_flow_nasal_cannula", "face_mask", "blow_by", "low_flow"]
DEVICES += ["positive_pressure", "oxygen_unspecified", "room_air"]


@st.composite
def oxygen(draw: st.DrawFn, precise: bool) -> OxygenRecord:
    at = draw(hours)
    kind = draw(st.sampled_from(["point", "point", "room air", "period"]))
    if kind == "room air":
        return OxygenRecord(at, f"Observation/ra{at:%d%H%M}", room_air=True)
    width = draw(date_only(precise))
    period = kind == "period"
    end = draw(st.none() | st.integers(1, 60).map(lambda h: at + timedelta(hours=h))) if period else None
    return OxygenRecord(
        at,
        f"Procedure/o{at:%d%H%M}",
        device=draw(st.sampled_from(DEVICES)),
        flow_l_min=draw(st.none() | st.sampled_from([0.0, 2.0, 6.0, 10.0])),
        fio2_percent=draw(st.none() | st.sampled_from([21.0, 30.0, 50.0])),
        period_end=end,
        is_period=period,
        latest=at + width if width and not period else None,
    )


AGENTS = [
    ("norepinephrine", MedicationRole.VASOPRESSOR),
    ("epinephrine", MedicationRole.VASOPRESSOR),
    ("vasopressin", MedicationRole.VASOPRESSIN_ANALOGUE),
    ("tocilizumab", MedicationRole.ANTI_CYTOKINE),
    ("anakinra", MedicationRole.ANTI_CYTOKINE),
    ("dexamethasone", MedicationRole.CORTICOSTEROID),
    ("acetaminophen", MedicationRole.ANTIPYRETIC),
    ("axicabtagene ciloleucel", MedicationRole.CRS_THERAPY),
    ("dobutamine", MedicationRole.INOTROPE),
]


@st.composite
def administrations(draw: st.DrawFn, precise: bool) -> Administration:
    agent, role = draw(st.sampled_from(AGENTS))
    start = draw(hours)
    end = draw(st.none() | st.integers(0, 40).map(lambda h: start + timedelta(hours=h)))
    start_width = draw(date_only(precise))
    end_width = draw(date_only(precise)) if end is not None else None
    return Administration(
        agent,
        role,
        start,
        end,
        f"MedicationAdministration/{agent[:4]}{start:%d%H%M}",
        "in-progress" if end is None else "completed",
        start_latest=start + start_width if start_width else None,
        end_earliest=end - end_width if end is not None and end_width else None,
    )


@st.composite
def records(draw: st.DrawFn, precise: bool) -> PatientRecord:
    birth = draw(
        st.none()
        | st.sampled_from([date(1960, 5, 2), date(2016, 2, 29), date(2024, 3, 2), date(2020, 3, 3)])
        | st.dates(date(2014, 2, 20), date(2025, 3, 5))
    )
    record = PatientRecord(
        birth_date=birth,
        temperatures=draw(st.lists(temperatures(precise), max_size=10)),
        blood_pressures=draw(st.lists(pressures(precise), max_size=8)),
        oxygen=draw(st.lists(oxygen(precise), max_size=6)),
        administrations=draw(st.lists(administrations(precise), max_size=6)),
        conditions=draw(
            st.lists(
                st.builds(CrsCondition, st.none() | hours, st.just("Condition/crs"), st.just("D89.832")), max_size=1
            )
        ),
    )
    if not precise:
        record.unreadable_oxygen = draw(
            st.lists(st.builds(UnreadableOxygen, hours, st.just("Observation/u"), st.just("unit")), max_size=1)
        )
        if draw(st.integers(0, 4)) == 0:
            record.unavailable = {draw(st.sampled_from(list(DataSource))): "OperationOutcome"}
    record.sort()
    return record


GRADED_AT = [START + timedelta(days=days, minutes=7) for days in (2, 5, 8)]
"""Moments the card is asked about: their 72-h windows together cover every generated time."""


def _card_moments(grader: AstctGrader) -> set[datetime]:
    """Every moment the card's worst-grade search scans (e.g. the end of a date-only fever)."""
    return {
        moment
        for at in GRADED_AT
        for exhaustive in (False, True)
        for moment in grader.evaluation_times(at, exhaustive=exhaustive)
    }


def _assert_scan_equals_assess(record: PatientRecord) -> None:
    grader = AstctGrader(record, CONFIG)
    until = START + timedelta(days=5)
    extra = START + timedelta(hours=30, minutes=7)
    for moment in sorted({*_crs_times(record, until, CONFIG), extra, *_card_moments(grader)}):
        for collect in (True, False):
            full = grader.assess(moment, collect=collect)
            expected = (full.worst_value, full.grade is not None, full.support, full.pressor_in_effect)
            assert grader.scan(moment) == expected, (moment, collect)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(precise=True))
def test_scan_equals_assess_at_every_data_time_with_precise_times(record: PatientRecord) -> None:
    _assert_scan_equals_assess(record)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(precise=False))
def test_scan_equals_assess_at_every_data_time_with_date_only_and_missing_data(record: PatientRecord) -> None:
    _assert_scan_equals_assess(record)


def _worst_by_assess(grader: AstctGrader, at: datetime) -> tuple[int | None, datetime | None, tuple[str, ...]]:
    """The card's worst grade found the plain way: ``assess`` at every moment it scans, the first
    highest value wins, nothing graded at the event moments looks at every data time; then the
    winner's references."""
    for exhaustive in (False, True):
        best: int | None = None
        best_at: datetime | None = None
        for moment in grader.evaluation_times(at, exhaustive=exhaustive):
            value = grader.assess(moment, collect=False).worst_value
            if value is not None and (best is None or value > best):
                best, best_at = value, moment
        if best_at is not None:
            met = [e.reference for e in grader.assess(best_at).evidence if e.status is Status.MET]
            return best, best_at, tuple(dict.fromkeys(met))
    return None, None, ()


def _assert_card_worst_equals_assess(record: PatientRecord) -> None:
    for at in [*GRADED_AT, START + timedelta(days=3, hours=11)]:
        result = AstctGrader(record, CONFIG).grade(at)
        expected = _worst_by_assess(AstctGrader(record, CONFIG), at)
        assert (result.worst_grade, result.worst_grade_at, result.worst_grade_references) == expected, at


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(precise=True))
def test_card_worst_grade_equals_assess_with_precise_times(record: PatientRecord) -> None:
    _assert_card_worst_equals_assess(record)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records(precise=False))
def test_card_worst_grade_equals_assess_with_date_only_and_missing_data(record: PatientRecord) -> None:
    _assert_card_worst_equals_assess(record)


@pytest.mark.parametrize(
    ("birth", "moments"),
    [
        pytest.param(
            date(2016, 2, 29),
            ["2019-02-28T23:59", "2019-03-01T00:00", "2020-02-28T12:00", "2020-02-29T00:00"],
            id="born-29-february",
        ),
        pytest.param(
            date(2015, 6, 10),
            ["2025-06-09T23:59", "2025-06-10T00:00", "2024-06-10T00:00", "2026-01-01T00:00"],
            id="birthday-crossed-both-ways",
        ),
        pytest.param(date(1, 1, 1), ["0001-06-01T00:00", "0002-01-01T00:00"], id="first-year-of-the-calendar"),
        pytest.param(date(9990, 12, 31), ["9999-12-31T23:00", "9999-06-01T00:00"], id="last-year-of-the-calendar"),
    ],
)
def test_age_held_between_birthdays_equals_age_in_years(birth: date, moments: list[str]) -> None:
    grader = AstctGrader(PatientRecord(birth_date=birth), CONFIG)
    for text in moments:
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        assert grader.age_at(moment) == age_in_years(birth, moment), text
