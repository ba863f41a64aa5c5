"""ASTCT 2019 consensus CRS grading: a pure function of the findings and the time ``at``.

Source: Lee DW, Santomasso BD, Locke FL, et al. ASTCT consensus grading for cytokine release
syndrome and neurologic toxicity. Biol Blood Marrow Transplant 2019;25:625-638. Rules, windows
and the choices this service makes where the text is silent: clinical-reference.md section 1,
docs/decisions.md. No I/O and no clock: the caller passes ``at``.

  grade | fever     | hypotension                         | hypoxia (support required)
  1     | >= 38.0 C | none                                | none
  2     | >= 38.0 C | not requiring vasopressors          | low-flow nasal cannula <= 6 L/min, blow-by
  3     | >= 38.0 C | one vasopressor +/- vasopressin     | high-flow cannula > 6 L/min, face mask, NRB, Venturi
  4     | >= 38.0 C | > 1 vasopressor (not vasopressin)   | positive pressure (CPAP, BiPAP, ventilation)
Grade 5 (death due to CRS) needs a clinician's attribution and is never inferred.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from operator import attrgetter
from typing import NamedTuple

from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import Evidence, GradeResult, Status
from cds_hooks.grading.timeline import RangeBest, TimeSeries
from cds_hooks.reading.fhir_time import EARLIEST_OFFSET, LATEST_OFFSET, age_in_years, iso
from cds_hooks.reading.record import (
    Administration,
    BloodPressure,
    DataSource,
    OxygenRecord,
    PatientRecord,
    SupportLevel,
    Temperature,
)
from cds_hooks.reading.terminology import MedicationRole

SYSTEM = "ASTCT-2019"
CITATION = "Lee DW et al. ASTCT consensus grading for CRS. Biol Blood Marrow Transplant 2019;25:625-638"

PAEDIATRIC_BASE_SYSTOLIC_MMHG = 70.0
"""Paediatric CARTOX (Mahadeo 2019): systolic < 70 + 2 x age for ages 1-10, < 70 under 1 year."""

MASKING_ROLES = (MedicationRole.ANTI_CYTOKINE, MedicationRole.CORTICOSTEROID, MedicationRole.ANTIPYRETIC)
PRESSOR_ROLES = (MedicationRole.VASOPRESSOR, MedicationRole.VASOPRESSIN_ANALOGUE)

_SUPPORT_LABEL = {
    SupportLevel.ROOM_AIR: "room air",
    SupportLevel.LOW_FLOW: "low-flow oxygen",
    SupportLevel.HIGH_FLOW: "high-flow oxygen or face mask",
    SupportLevel.POSITIVE_PRESSURE: "positive pressure ventilation",
}


@dataclass(slots=True)
class _Assessment:
    """The rules evaluated at one moment; evidence is collected as the rules run."""

    at: datetime
    fever: Status = Status.UNKNOWN
    masked: bool = False
    hypotension_grade: int = 0
    hypoxia_grade: int = 0
    pressor_in_effect: bool = False
    pressure_charted: bool = False
    grade: int | None = None
    at_least: int | None = None
    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    support: SupportLevel = SupportLevel.ROOM_AIR
    oxygen_device: str | None = None
    """The mapped device class that set ``support`` (other systems read it, e.g. CPAP vs ventilator)."""
    oxygen_device_display: str | None = None
    oxygen_flow_l_min: float | None = None
    oxygen_fio2: OxygenRecord | None = None
    """The FiO2 record in force with the support, if one was charted (FiO2-based systems read it)."""
    oxygen_records: tuple[OxygenRecord, ...] = ()
    collect: bool = True
    """Build evidence and notes; the worst-grade scan needs only the grade until its winner."""
    possible_grade: int | None = None
    """Indeterminate only: the grade if the unknown is CRS (masked fever, no temperature)."""
    prophylaxis: Administration | None = None
    """A masking drug given before any CRS whose window covers ``at`` (fever may be masked)."""
    masking_unknown: Administration | None = None
    """A masking drug whose imprecise time may fall before or after CRS onset."""
    fever_imprecise: Temperature | None = None
    """A date-only fever that may or may not fall in the fever window."""
    unknown_support: list[str] = field(default_factory=list)
    """Imprecise findings that may raise the grade (pressor, low pressure, oxygen): 'at least'."""
    first_sign: datetime | None = None
    """The first CRS sign (fever, or a CRS Condition's onset) the support is compared with."""
    hypotension_without_prior: int = 0
    hypoxia_without_prior: int = 0
    """The sign grades counting only support that began after the first CRS sign."""
    prior_support: list[str] = field(default_factory=list)
    """References of support that began before the first CRS sign (possibly another cause)."""

    @property
    def worst_value(self) -> int | None:
        return self.grade if self.grade is not None else self.at_least

    @property
    def grade_without_prior_support(self) -> int | None:
        """The grade counting only support that began after CRS: grade-4 orders rest on it."""
        if self.grade is None:
            return None
        base = 1 if self.fever is Status.MET else 0
        return max(base, self.hypotension_without_prior, self.hypoxia_without_prior)


@dataclass(frozen=True, slots=True)
class _Onset:
    """Prior CRS onset: a time (None for a Condition without one), its source, and the end of
    its interval when the time is a date only."""

    time: datetime | None
    reference: str
    latest: datetime | None = None


class _Masking(NamedTuple):
    """The masking rule's findings at one moment (fever not met)."""

    onset: _Onset | None
    """Prior CRS (before the fever window), if any."""
    given: Sequence[Administration]
    """Masking drugs surely given by the moment."""
    after: Sequence[Administration]
    """Those surely given after the onset: fever is masked."""
    prophylaxis: Administration | None
    unknown: Administration | None
    """A masking drug that may fall before or after the onset."""


_NO_MASKING = _Masking(None, (), (), None, None)


class _Pressures(NamedTuple):
    """The low-pressure rule's findings at one moment."""

    low: bool
    charted: bool
    """A pressure that counts was charted in the window (else hypotension cannot be excluded)."""
    systolic: BloodPressure | None
    mean: BloodPressure | None


class _Support(NamedTuple):
    """The oxygen rule's findings at one moment."""

    level: SupportLevel
    notes: Sequence[str]
    """Assumptions the classification made (e.g. a cannula without a flow)."""
    used: Sequence[OxygenRecord]
    """The records that set the level."""
    device: OxygenRecord | None
    fio2: OxygenRecord | None
    room_air: OxygenRecord | None
    """The latest room-air record in the recency window."""


_ROOM_AIR = _Support(SupportLevel.ROOM_AIR, (), (), None, None, None)
"""The support of a record without any oxygen record."""

_TIME = attrgetter("time")
"""Sort key of every timed record (C-level: the tables are rebuilt at every grading)."""


class _Timeline:
    """The record indexed for the rules: sorted series and range tables, built once."""

    def __init__(self, record: PatientRecord, config: GradingConfig) -> None:
        self.record = record
        # Date-only findings are intervals: kept apart, asked "surely / possibly" (section 1).
        self.imprecise_temperatures = [t for t in record.temperatures if t.latest is not None]
        self.imprecise_pressures = [b for b in record.blood_pressures if b.latest is not None]
        self.imprecise_oxygen = [o for o in record.oxygen if o.latest is not None and not o.is_period]
        precise_temperatures = [t for t in record.temperatures if t.latest is None]
        precise_pressures = [b for b in record.blood_pressures if b.latest is None]
        self.temperatures = TimeSeries(precise_temperatures, _TIME)
        # Hottest first; among equals the later reading, so the evidence is the most recent.
        self.hottest = RangeBest(self.temperatures.records, attrgetter("celsius", "time"))
        self.fevers = TimeSeries(
            [t for t in precise_temperatures if t.celsius >= config.fever_threshold_celsius], _TIME
        )
        self.systolic = TimeSeries([b for b in precise_pressures if b.systolic_mmhg is not None], _TIME)
        self.lowest_systolic = RangeBest(self.systolic.records, lambda b: _lowness(b.systolic_mmhg))
        self.mean = TimeSeries([b for b in precise_pressures if b.mean_mmhg is not None], _TIME)
        self.lowest_mean = RangeBest(self.mean.records, lambda b: _lowness(b.mean_mmhg))
        points = [o for o in record.oxygen if not o.is_period and o.latest is None]
        # A support record and a room-air record charted at the same moment: support wins.
        support_instants = {o.time for o in points if o.is_support}
        self.room_air = TimeSeries([o for o in points if o.room_air and o.time not in support_instants], _TIME)
        supports = [o for o in points if o.is_support]
        self.devices = TimeSeries([o for o in supports if o.device is not None], _TIME)
        self.flows = TimeSeries([o for o in supports if o.flow_l_min is not None], _TIME)
        self.fio2s = TimeSeries([o for o in supports if o.fio2_percent is not None], _TIME)
        self.period_oxygen = [o for o in record.oxygen if o.is_period]
        self.support_points = supports
        self.spo2 = TimeSeries(record.spo2, _TIME)
        self.pressors = record.administrations_with(*PRESSOR_ROLES)
        self.imprecise_pressors = [a for a in self.pressors if a.imprecise]
        self.masking_therapies = record.administrations_with(*MASKING_ROLES)
        self.crs_therapy_starts = [a.start for a in record.administrations_with(MedicationRole.CRS_THERAPY)]
        self.first_crs_therapy = min(self.crs_therapy_starts, default=None)
        # Each masking drug with the end of its window of action (prophylaxis), computed once.
        self.masking_until = [
            (a, a.latest_start + config.masking_window(a.agent, a.role.value)) for a in self.masking_therapies
        ]
        # Without any oxygen record the support rule reads, every moment is room air.
        self.any_oxygen = bool(self.room_air or supports or self.period_oxygen)


def _lowness(value: float | None) -> float:
    """Rank for "lowest wins": the lower the pressure, the higher the rank; none charted ranks last."""
    return -value if value is not None else float("-inf")


def _pressor_grade(counted: set[str]) -> int:
    """ASTCT: more than one vasopressor (vasopressin not counted) is grade 4, one is grade 3."""
    return 4 if len(counted) >= 2 else 3


def _map_applies(age_years: int | None) -> bool:
    """The mean arterial pressure counts above 10 years of age, and when the age is unknown."""
    return age_years is None or age_years > 10


def systolic_threshold(age_years: int | None, config: GradingConfig) -> float:
    """Systolic hypotension threshold; unknown age uses the adult value, the most sensitive."""
    if age_years is None or age_years > 10:
        return config.adult_systolic_threshold_mmhg
    if age_years < 1:
        return PAEDIATRIC_BASE_SYSTOLIC_MMHG
    return PAEDIATRIC_BASE_SYSTOLIC_MMHG + 2.0 * age_years


def low_pressure(systolic: float | None, mean: float | None, age: int | None, config: GradingConfig) -> bool:
    """Hypotension's low pressure: systolic below the age's threshold, or a mean arterial pressure
    below its limit where it counts (above 10 years of age, or age unknown)."""
    if systolic is not None and systolic < systolic_threshold(age, config):
        return True
    return _map_applies(age) and mean is not None and mean < config.mean_arterial_threshold_mmhg


def _lowest_pressure_evidence(
    result: _Assessment, reading: BloodPressure, value: float, limit: float, kind: str
) -> None:
    """The lowest reading of ``kind``, recorded as evidence whether or not it is below ``limit``."""
    met = value < limit
    detail = f"lowest {kind} pressure in the window"
    if kind == "mean arterial" and reading.mean_derived:
        detail += (
            f"; derived from systolic {_fmt(reading.systolic_mmhg or 0)} / diastolic "
            f"{_fmt(reading.diastolic_mmhg or 0)} charted together: (SBP + 2 x DBP) / 3"
        )
    if reading.latest is not None:
        detail += "; date-only time, wholly inside the window"
    result.evidence.append(
        Evidence(
            "hypotension",
            Status.MET if met else Status.NOT_MET,
            reading.reference,
            value=value,
            unit="mm[Hg]",
            threshold=f"{kind} pressure < {_fmt(limit)} mm[Hg]",
            time=reading.time,
            detail=detail,
        )
    )


def _pressure_unknown(pressor_in_effect: bool, support: SupportLevel, pressure_charted: bool) -> bool:
    """No pressure charted where hypotension could still raise the grade (no pressor in effect,
    no oxygen support at grade 2 or above): the grade is only "at least"."""
    return not pressor_in_effect and support is SupportLevel.ROOM_AIR and not pressure_charted


def _verdict(
    fever: Status, masked: bool, worst_sign: int, may_be_masked: bool, pressure_unknown: bool
) -> tuple[int | None, int | None]:
    """(grade, at least) from the signs, before date-only and unavailable data are weighed:
    fever (or masking after CRS) makes CRS, graded by its worst sign; no fever is grade 0 unless a
    masking drug may hide it; an unknown fever proves nothing."""
    if fever is Status.MET or masked:
        grade = max(1, worst_sign) if fever is Status.MET else worst_sign
        return (None, grade) if pressure_unknown else (grade, None)
    if fever is Status.NOT_MET:
        return (None, 0) if worst_sign > 0 and may_be_masked else (0, None)
    return None, None


def _anniversary(birth: date, year: int, like: datetime) -> datetime:
    """Midnight (UTC) of the birthday in ``year``; 29 February falls on 1 March."""
    try:
        day = birth.replace(year=year)
    except ValueError:
        day = date(year, 3, 1)
    return datetime(day.year, day.month, day.day, tzinfo=like.tzinfo)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _met(evidence: list[Evidence]) -> tuple[Evidence, ...]:
    return tuple(e for e in evidence if e.status is Status.MET)


def _duration(window: timedelta) -> str:
    hours = window.total_seconds() / 3600.0
    return f"{_fmt(hours / 24.0)} days" if hours >= 48 and hours % 24 == 0 else f"{_fmt(hours)} h"


def _prior_support_note(result: _Assessment) -> str:
    first = iso(result.first_sign) if result.first_sign is not None else "the first CRS sign"
    return (
        f"began before the first CRS sign ({first}): possibly due to another cause "
        "(ASTCT counts signs not attributable to any other cause)"
    )


class AstctGrader:
    """Grades one patient record at ``at``: current grade, worst grade, evidence, gaps."""

    def __init__(self, record: PatientRecord, config: GradingConfig) -> None:
        self.record = record
        self.config = config
        self.timeline = _Timeline(record, config)
        self._age_span: tuple[datetime, datetime, int] | None = None
        timeline = self.timeline
        # Date-only pressors, pressures and oxygen, unreadable oxygen and unavailable data can
        # make a grade "at least": the scan takes them the way of ``assess``, whole.
        self._scan_by_assess = bool(
            timeline.imprecise_pressors
            or timeline.imprecise_pressures
            or timeline.imprecise_oxygen
            or record.unreadable_oxygen
            or record.unavailable
        )

    def age_at(self, at: datetime) -> int | None:
        """Completed years at ``at`` (None without a birth date); the age holds from one birthday
        to the next, so it is computed once per year of age the moments fall in."""
        birth = self.record.birth_date
        if birth is None:
            return None
        span = self._age_span
        if span is not None and at.tzinfo is span[0].tzinfo and span[0] <= at < span[1]:
            return span[2]
        age = age_in_years(birth, at)
        try:
            start = _anniversary(birth, at.year, at)
            if start > at:
                start = _anniversary(birth, at.year - 1, at)
            self._age_span = (start, _anniversary(birth, start.year + 1, at), age)
        except (ValueError, OverflowError):
            pass  # a birthday outside the calendar (year 1 or 9999): not cached
        return age

    # -- the rules at one moment ---------------------------------------------------------

    def scan(self, at: datetime) -> tuple[int | None, bool, SupportLevel, bool]:
        """(worst value, graded, oxygen support, pressor in effect) at ``at``: what the episode
        scan reads, by the rule helpers of :meth:`assess` without its evidence and notes.

        Records with date-only pressors, pressures or oxygen, unreadable oxygen or unavailable
        data go through :meth:`assess` itself. tests/test_astct_scan.py checks both agree.
        """
        if self._scan_by_assess:
            full = self.assess(at, collect=False)
            return full.worst_value, full.grade is not None, full.support, full.pressor_in_effect
        fever = self._fever_reading(at)[0]
        masking = _NO_MASKING if fever is Status.MET else self._masking_state(at)
        masked = masking.onset is not None and bool(masking.after)
        may_be_masked = not masked and (masking.prophylaxis is not None or masking.unknown is not None)
        running, counted = self._pressors_running(at) if self.timeline.pressors else ([], set())
        support = self._support_in_force(at).level
        worst_sign, pressure_unknown = 0, False
        if fever is Status.MET or masked or (fever is Status.NOT_MET and may_be_masked):
            # Only here do the signs' grades and a missing pressure change the verdict (no fever
            # and nothing masking it is grade 0; an unknown fever, unmasked, proves nothing).
            pressures = self._pressures(at, self.age_at(at))
            hypotension = _pressor_grade(counted) if running else 2 if pressures.low else 0
            worst_sign = max(hypotension, int(support))
            pressure_unknown = _pressure_unknown(bool(running), support, pressures.charted)
        grade, at_least = _verdict(fever, masked, worst_sign, may_be_masked, pressure_unknown)
        return (grade if grade is not None else at_least), grade is not None, support, bool(running)

    def assess(self, at: datetime, *, collect: bool = True) -> _Assessment:
        """The rules at ``at``; ``collect=False`` skips the evidence and notes (worst-grade scan)."""
        result = _Assessment(at=at, collect=collect)
        age = self.age_at(at)
        if age is None:
            result.assumptions.append("birth date unknown: adult hypotension thresholds used")
        self._fever(result)
        self._masking(result)
        result.first_sign = self._first_sign(result.at)
        self._hypotension(result, age)
        self._hypoxia(result)
        self._imprecise_signs(result, age)
        self._combine(result)
        return result

    def _fever_reading(self, at: datetime) -> tuple[Status, Temperature | None, Temperature | None]:
        """(fever status, the hottest reading in the window, the date-only fever that makes it
        unknown): the fever rule, shared by the card and the episode scan."""
        timeline = self.timeline
        times = timeline.temperatures.times  # the window (at - 24 h, at]
        hottest = timeline.hottest.best(bisect_right(times, at - self.config.fever_window), bisect_right(times, at))
        surely, possibly = self._imprecise_temperatures(at) if timeline.imprecise_temperatures else (None, None)
        if hottest is None or (surely is not None and surely.celsius > hottest.celsius):
            hottest = surely
        if hottest is None:
            return Status.UNKNOWN, None, possibly
        if hottest.celsius >= self.config.fever_threshold_celsius:
            return Status.MET, hottest, None
        if possibly is not None:
            return Status.UNKNOWN, hottest, possibly  # a date-only fever may fall in the window: unknown
        return Status.NOT_MET, hottest, None

    def _fever(self, result: _Assessment) -> None:
        cfg = self.config
        result.fever, hottest, result.fever_imprecise = self._fever_reading(result.at)
        if hottest is None:
            return
        if result.collect:
            result.evidence.append(
                Evidence(
                    "fever",
                    result.fever,
                    hottest.reference,
                    value=hottest.celsius,
                    unit="Cel",
                    threshold=f">= {cfg.fever_threshold_celsius:.1f} Cel",
                    time=hottest.time,
                    detail=f"highest temperature in the fever window, charted as {hottest.original}"
                    + ("; date-only time, wholly inside the window" if hottest.latest is not None else ""),
                )
            )

    def _imprecise_temperatures(self, at: datetime) -> tuple[Temperature | None, Temperature | None]:
        """(hottest date-only reading wholly inside the fever window, a date-only fever only
        partly inside it): the first counts, the second makes fever unknown."""
        start = at - self.config.fever_window
        threshold = self.config.fever_threshold_celsius
        surely: Temperature | None = None
        possibly: Temperature | None = None
        for reading in self.timeline.imprecise_temperatures:
            latest = reading.latest or reading.time
            if reading.time > start and latest <= at:
                if surely is None or reading.celsius > surely.celsius:
                    surely = reading
            elif reading.time <= at and latest > start and reading.celsius >= threshold:
                possibly = reading
        if surely is not None and surely.celsius >= threshold:
            possibly = None
        return surely, possibly

    def _prior_crs_onset(self, at: datetime) -> _Onset | None:
        """When CRS was established before the fever window, and the resource that shows it."""
        cfg = self.config
        window_start = at - cfg.fever_window
        candidates: list[_Onset] = []
        therapy_start = self.timeline.first_crs_therapy
        earliest = window_start - cfg.prior_crs_lookback
        if therapy_start is not None and therapy_start > earliest:
            first = self.timeline.fevers.first(therapy_start, window_start, include_start=True)
        else:
            first = self.timeline.fevers.first(earliest, window_start, include_start=False)
        if first is not None:
            candidates.append(_Onset(first.time, first.reference))  # the earliest qualifying fever is the onset
        lower = therapy_start if therapy_start is not None and therapy_start > earliest else earliest
        for reading in self.timeline.imprecise_temperatures:
            # A date-only fever wholly before the fever window and not before the lookback (or therapy).
            latest = reading.latest or reading.time
            if reading.celsius >= cfg.fever_threshold_celsius and reading.time >= lower and latest <= window_start:
                candidates.append(_Onset(reading.time, reading.reference, latest))
        for condition in self.record.conditions:
            if condition.onset is None or condition.onset <= at:
                candidates.append(_Onset(condition.onset, condition.reference))
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        return min(candidates, key=lambda c: c.time or datetime.min.replace(tzinfo=at.tzinfo))

    def _surely_after(self, therapy: Administration, onset: _Onset) -> bool:
        """Given surely after the onset. Two date-only times of one site share its unknown UTC
        offset, so the later calendar day is after the earlier one whatever that offset is."""
        if onset.time is None:
            return True
        if onset.latest is None:
            return therapy.start > onset.time
        if therapy.start_latest is None:
            return therapy.start > onset.latest
        shared = timedelta(0) if self.config.site_timezone else EARLIEST_OFFSET + LATEST_OFFSET
        return therapy.start >= onset.latest - shared

    def _masking_state(self, at: datetime) -> _Masking:
        """The masking rule at ``at`` (fever not met), shared by the card and the episode scan."""
        if not self.timeline.masking_therapies:
            return _NO_MASKING  # nothing given that could mask a fever
        onset = self._prior_crs_onset(at)
        given = [a for a in self.timeline.masking_therapies if a.surely_given_by(at)]
        after = [] if onset is None else [a for a in given if self._surely_after(a, onset)]
        unknown: Administration | None = None
        if onset is not None and onset.time is not None and not after:
            first_fever = onset.time
            unknown = next(
                (a for a in reversed(given) if (a.imprecise or onset.latest) and a.latest_start > first_fever), None
            )
        prophylaxis = self._prophylaxis(at) if onset is None or not after else None
        return _Masking(onset, given, after, prophylaxis, unknown)

    def _masking(self, result: _Assessment) -> None:
        """ASTCT: after CRS and then antipyretic/anti-cytokine/steroid, fever is not required."""
        if result.fever is Status.MET:
            return
        onset, given, after, prophylaxis, result.masking_unknown = self._masking_state(result.at)
        if onset is None or not after:
            result.prophylaxis = prophylaxis
            recent = [a for a in given if a.start > result.at - self.config.worst_grade_window]
            if result.prophylaxis is not None and result.prophylaxis not in recent:
                recent.append(result.prophylaxis)
            if recent:
                names = ", ".join(sorted({a.agent for a in recent}))
                result.alerts.append(
                    f"fever may be masked: {names} given without CRS established before it "
                    "(premedication does not lift the fever requirement)"
                )
            return
        onset_time, onset_reference = onset.time, onset.reference
        therapy = after[-1]
        result.masked = True
        result.evidence.append(
            Evidence(
                "prior CRS",
                Status.MET,
                onset_reference,
                time=onset_time,
                detail="CRS established before the fever window",
            )
        )
        result.evidence.append(
            Evidence(
                "masking therapy",
                Status.MET,
                therapy.reference,
                value=therapy.agent,
                time=therapy.start,
                detail=f"{therapy.role.value.replace('_', '-')} given after CRS onset: fever not required",
            )
        )

    def _prophylaxis(self, at: datetime) -> Administration | None:
        """The masking drug, given before any CRS, whose window of action covers ``at``: fever may
        be suppressed for as long as it acts (section 1, "Masked fever after prophylaxis")."""
        acting = [a for a, until in self.timeline.masking_until if a.start <= at < until]
        return max(acting, key=lambda a: a.start, default=None)

    def _first_sign(self, at: datetime) -> datetime | None:
        """The first CRS sign before ``at``: the first fever of the look-back (after a CRS therapy
        when one is charted) or an active CRS Condition's onset; support begun earlier may have
        another cause."""
        cfg = self.config
        earliest = at - cfg.fever_window - cfg.prior_crs_lookback
        therapy_start = self.timeline.first_crs_therapy
        if therapy_start is not None and therapy_start > earliest:
            first = self.timeline.fevers.first(therapy_start, at, include_start=True)
        else:
            first = self.timeline.fevers.first(earliest, at, include_start=False)
        candidates = [first.time] if first is not None else []
        candidates += [c.onset for c in self.record.conditions if c.onset is not None and c.onset <= at]
        return min(candidates, default=None)

    def _began_before_crs(self, result: _Assessment, start: datetime) -> bool:
        """Began more than the margin (12 h) before the first CRS sign: possibly another cause."""
        return result.first_sign is not None and start < result.first_sign - self.config.support_before_crs_margin

    def _pressors_running(self, at: datetime) -> tuple[list[Administration], set[str]]:
        """The vasopressors surely in effect at ``at``, and the counted agents among them
        (vasopressin is not counted toward "more than one")."""
        running = [a for a in self.timeline.pressors if a.in_effect_at(at)]
        return running, {a.agent for a in running if a.role is MedicationRole.VASOPRESSOR}

    def _pressures(self, at: datetime, age: int | None) -> _Pressures:
        """The low-pressure rule at ``at``: the lowest systolic and mean pressure in the window."""
        timeline = self.timeline
        window_start = at - self.config.hypotension_window
        times = timeline.systolic.times
        systolic = timeline.lowest_systolic.best(bisect_right(times, window_start), bisect_right(times, at))
        times = timeline.mean.times
        mean = timeline.lowest_mean.best(bisect_right(times, window_start), bisect_right(times, at))
        low = low_pressure(
            systolic.systolic_mmhg if systolic is not None else None,
            mean.mean_mmhg if mean is not None else None,
            age,
            self.config,
        )
        return _Pressures(low, systolic is not None or (mean is not None and _map_applies(age)), systolic, mean)

    def _hypotension(self, result: _Assessment, age: int | None) -> None:
        running, counted = self._pressors_running(result.at)
        if running:
            result.pressor_in_effect = True
            result.hypotension_grade = _pressor_grade(counted)
            later = [a for a in running if not self._began_before_crs(result, a.start)]
            later_counted = {a.agent for a in later if a.role is MedicationRole.VASOPRESSOR}
            result.hypotension_without_prior = _pressor_grade(later_counted) if later else 0
            for admin in running:
                if self._began_before_crs(result, admin.start):
                    result.prior_support.append(admin.reference)
            if result.collect:
                result.evidence.extend(self._pressor_evidence(admin, len(counted), result) for admin in running)
        low, result.pressure_charted, lowest_systolic, lowest_mean = self._pressures(result.at, age)
        if result.collect:
            self._pressure_evidence(result, lowest_systolic, lowest_mean, age)
        if low and not running:
            result.hypotension_grade = 2
        if low:
            result.hypotension_without_prior = max(result.hypotension_without_prior, 2)

    def _pressure_evidence(
        self,
        result: _Assessment,
        lowest_systolic: BloodPressure | None,
        lowest_mean: BloodPressure | None,
        age: int | None,
    ) -> None:
        """The lowest pressures as evidence, met or not (the mean only where it counts)."""
        cfg = self.config
        if lowest_systolic is not None and lowest_systolic.systolic_mmhg is not None:
            _lowest_pressure_evidence(
                result, lowest_systolic, lowest_systolic.systolic_mmhg, systolic_threshold(age, cfg), "systolic"
            )
        if _map_applies(age) and lowest_mean is not None and lowest_mean.mean_mmhg is not None:
            limit = cfg.mean_arterial_threshold_mmhg
            if lowest_mean.mean_mmhg < limit or lowest_systolic is None:
                _lowest_pressure_evidence(result, lowest_mean, lowest_mean.mean_mmhg, limit, "mean arterial")
                if lowest_mean.mean_derived:
                    result.assumptions.append(
                        f"mean arterial pressure {_fmt(lowest_mean.mean_mmhg)} mm[Hg] derived from systolic "
                        f"{_fmt(lowest_mean.systolic_mmhg or 0)} / diastolic {_fmt(lowest_mean.diastolic_mmhg or 0)} "
                        f"charted together ({lowest_mean.reference}): (SBP + 2 x DBP) / 3, no MAP charted"
                    )

    def _pressor_evidence(self, admin: Administration, counted: int, result: _Assessment) -> Evidence:
        if admin.role is MedicationRole.VASOPRESSIN_ANALOGUE:
            detail = "vasopressin-type: not counted toward 'more than one vasopressor'"
        else:
            detail = f"vasopressor in effect ({counted} counted)"
        if admin.by_text:
            detail += "; identified by name in text only, no recognised code"
        if admin.route_note:
            detail += f"; {admin.route_note}"
        if admin.start_latest is not None:
            detail += "; date-only start, surely before T"
        if self._began_before_crs(result, admin.start):
            detail += "; " + _prior_support_note(result)
        return Evidence(
            "vasopressor",
            Status.MET,
            admin.reference,
            value=admin.agent,
            time=admin.start,
            detail=detail,
        )

    def _support_in_force(self, at: datetime) -> _Support:
        """The oxygen support in force at ``at``: the latest point records since the last room-air
        record (within the recency window), or a period covering ``at``, whichever is higher."""
        timeline = self.timeline
        if not timeline.any_oxygen:
            return _ROOM_AIR
        oldest = at - self.config.oxygen_recency
        room_air = timeline.room_air.latest(at, not_before=oldest)
        last_room_air = room_air.time if room_air is not None else None
        device = timeline.devices.latest(at, not_before=oldest, strictly_after=last_room_air)
        since = device.time if device is not None else oldest
        flow = timeline.flows.latest(at, not_before=since, strictly_after=last_room_air)
        fio2 = timeline.fio2s.latest(at, not_before=since, strictly_after=last_room_air)
        level, notes = self._classify(
            device.device if device else None,
            flow.flow_l_min if flow else None,
            fio2.fio2_percent if fio2 else None,
        )
        used = [r for r in (device, flow) if r is not None] or ([fio2] if fio2 is not None else [])
        chosen_device, chosen_fio2 = device, fio2
        for period in timeline.period_oxygen:
            if period.time <= at and (period.period_end is None or at <= period.period_end):
                if timeline.room_air.latest(at, not_before=period.time, strictly_after=period.time) is not None:
                    continue  # a later room-air record ends it, however long ago it was charted
                period_level, period_notes = self._classify(period.device, period.flow_l_min, period.fio2_percent)
                if period.is_support and period_level > level:
                    level, used, notes = period_level, [period], period_notes
                    chosen_device = period
                    chosen_fio2 = period if period.fio2_percent is not None else None
        return _Support(level, notes, used, chosen_device, chosen_fio2, room_air)

    def _hypoxia(self, result: _Assessment) -> None:
        level, classified, used, chosen_device, chosen_fio2, room_air = self._support_in_force(result.at)
        notes = list(classified)
        result.support = level
        if level is not SupportLevel.ROOM_AIR:
            result.oxygen_records = tuple(used)
            if chosen_device is not None and chosen_device.device is not None:
                result.oxygen_device = chosen_device.device
                result.oxygen_device_display = chosen_device.device_display
            flows = [r.flow_l_min for r in used if r.flow_l_min is not None]
            result.oxygen_flow_l_min = flows[-1] if flows else None
            result.oxygen_fio2 = chosen_fio2
        result.hypoxia_grade = int(level)
        result.hypoxia_without_prior = int(level)
        if level is not SupportLevel.ROOM_AIR and result.collect and result.first_sign is not None:
            # Only where the grade is reported (current and worst): a scan over the history.
            since = self._support_since(level, used)
            if self._began_before_crs(result, since):
                result.hypoxia_without_prior = 0
                result.prior_support.extend(r.reference for r in used)
        if not result.collect:
            return
        if level is SupportLevel.ROOM_AIR:
            if room_air is not None:
                result.evidence.append(
                    Evidence(
                        "oxygen",
                        Status.NOT_MET,
                        room_air.reference,
                        value="room air",
                        time=room_air.time,
                        detail="room-air record",
                    )
                )
        else:
            prior = result.hypoxia_without_prior == 0
            for record in dict.fromkeys(used):
                evidence = self._oxygen_evidence(record, level)
                if prior:
                    evidence = replace(evidence, detail=f"{evidence.detail}; {_prior_support_note(result)}")
                result.evidence.append(evidence)
            if chosen_device is None and result.oxygen_flow_l_min is not None:
                notes.append(
                    f"no oxygen device charted: {_fmt(result.oxygen_flow_l_min)} L/min graded as "
                    f"{_SUPPORT_LABEL[level]} by the flow alone (ASTCT: high flow is > "
                    f"{_fmt(self.config.low_flow_max_l_min)} L/min)"
                )
            if chosen_device is not None and result.oxygen_flow_l_min is not None:
                notes.append(
                    f"{chosen_device.device_display or chosen_device.device} with "
                    f"{_fmt(result.oxygen_flow_l_min)} L/min charted: graded as {_SUPPORT_LABEL[level]}"
                )
        result.assumptions.extend(notes)
        self._spo2_alert(result)

    def _support_since(self, level: SupportLevel, used: Sequence[OxygenRecord]) -> datetime:
        """When support at ``level`` or above began: the earliest such record (point or period)
        after the last room-air record before the one in force; a room-air record ends a run."""
        since = min(r.time for r in used)
        room_air = self.timeline.room_air.latest(since, not_before=datetime.min.replace(tzinfo=since.tzinfo))
        floor = room_air.time if room_air is not None else None
        for record in (*self.timeline.support_points, *self.timeline.period_oxygen):
            if not record.is_support or record.time >= since or (floor is not None and record.time <= floor):
                continue
            if self._classify(record.device, record.flow_l_min, record.fio2_percent)[0] >= level:
                since = record.time
        return since

    def _classify(self, device: str | None, flow: float | None, fio2: float | None) -> tuple[SupportLevel, list[str]]:
        limit = self.config.low_flow_max_l_min
        if device == "positive_pressure":
            return SupportLevel.POSITIVE_PRESSURE, []
        if device in ("nasal_cannula", "high_flow_nasal_cannula") and flow is not None and flow > 0:
            # Section 1: with any nasal cannula the charted flow decides (ASTCT footnote: > 6 L/min).
            return (SupportLevel.HIGH_FLOW if flow > limit else SupportLevel.LOW_FLOW), []
        if device in ("high_flow_nasal_cannula", "face_mask"):
            return SupportLevel.HIGH_FLOW, []
        if device in ("blow_by", "low_flow"):
            return SupportLevel.LOW_FLOW, []
        if flow is not None and flow > 0:
            return (SupportLevel.HIGH_FLOW if flow > limit else SupportLevel.LOW_FLOW), []
        if device == "nasal_cannula":
            return SupportLevel.LOW_FLOW, ["nasal cannula with no flow charted: graded as low flow"]
        if device == "oxygen_unspecified" or (fio2 is not None and fio2 > 21.0):
            return SupportLevel.LOW_FLOW, [
                "supplemental oxygen of unknown kind (no device or flow charted): "
                "graded only as low flow, the least it proves"
            ]
        return SupportLevel.ROOM_AIR, []

    def _oxygen_evidence(self, record: OxygenRecord, level: SupportLevel) -> Evidence:
        value: float | str | None
        unit: str | None = None
        if record.device is not None and record.device != "oxygen_unspecified":
            value = record.device_display or record.device
        elif record.flow_l_min is not None:
            value, unit = record.flow_l_min, "L/min"
        elif record.fio2_percent is not None:
            value, unit = record.fio2_percent, "%"
        else:
            value = record.device_display
        detail = _SUPPORT_LABEL[level]
        if record.flow_l_min is not None and record.device is not None:
            detail += f", flow {_fmt(record.flow_l_min)} L/min"
        if record.by_text:
            detail += "; identified by text only"
        return Evidence("oxygen", Status.MET, record.reference, value=value, unit=unit, time=record.time, detail=detail)

    def _spo2_alert(self, result: _Assessment) -> None:
        if result.support is not SupportLevel.ROOM_AIR:
            return
        latest = self.timeline.spo2.latest(result.at, not_before=result.at - self.config.oxygen_recency)
        if latest is None:
            return
        if latest.percent < self.config.spo2_alert_percent:
            result.alerts.append(
                f"SpO2 {_fmt(latest.percent)} % on room air at {iso(latest.time)} ({latest.reference}): "
                "low saturation raises no ASTCT grade by itself; assess the need for oxygen"
            )

    def _imprecise_signs(self, result: _Assessment, age: int | None) -> None:
        """Date-only pressors, pressures and oxygen records that may, but need not, raise the grade
        now: the grade becomes "at least" with what each is (section 1, imprecise times)."""
        at = result.at
        for admin in self.timeline.imprecise_pressors:
            if result.pressor_in_effect or not admin.possibly_in_effect_at(at) or admin.in_effect_at(at):
                continue
            result.unknown_support.append(
                f"{admin.agent} ({admin.reference}) has a date-only time: it may or may not be in effect at "
                f"{iso(at)} (it would make hypotension grade 3)"
            )
        if result.hypotension_grade < 2:
            window_start = at - self.config.hypotension_window
            for reading in self.timeline.imprecise_pressures:
                latest = reading.latest or reading.time
                low = low_pressure(reading.systolic_mmhg, reading.mean_mmhg, age, self.config)
                if not low or reading.time > at or latest <= window_start:
                    continue
                if reading.time > window_start and latest <= at:
                    result.hypotension_grade = 2
                    result.hypotension_without_prior = max(result.hypotension_without_prior, 2)
                    if result.collect:
                        value = reading.systolic_mmhg if reading.systolic_mmhg is not None else reading.mean_mmhg
                        result.evidence.append(
                            Evidence(
                                "hypotension",
                                Status.MET,
                                reading.reference,
                                value=value,
                                unit="mm[Hg]",
                                time=reading.time,
                                detail="low pressure with a date-only time, wholly inside the window",
                            )
                        )
                    break
                result.unknown_support.append(
                    f"low blood pressure ({reading.reference}) has a date-only time: it may or may not fall in the "
                    f"{_fmt(self.config.hypotension_window_hours)} h window (it would make hypotension grade 2)"
                )
        oldest = at - self.config.oxygen_recency
        for record in self.timeline.imprecise_oxygen:
            if not record.is_support or record.time > at or (record.latest or record.time) <= oldest:
                continue
            level, _ = self._classify(record.device, record.flow_l_min, record.fio2_percent)
            if level > result.support:
                result.unknown_support.append(
                    f"oxygen support ({record.device_display or 'oxygen'}, {record.reference}) has a date-only time: "
                    f"it may or may not be in force at {iso(at)} (it would make hypoxia grade {int(level)})"
                )
        if result.support is not SupportLevel.POSITIVE_PRESSURE:
            for unreadable in self.record.unreadable_oxygen:
                if not oldest < unreadable.time <= at or self._superseded(unreadable.time, at):
                    continue
                result.unknown_support.append(
                    f"oxygen record {unreadable.reference} could not be read ({unreadable.reason}): the oxygen "
                    f"support at {iso(at)} is unknown, not room air (it could raise the hypoxia grade)"
                )

    def _superseded(self, moment: datetime, at: datetime) -> bool:
        """A readable oxygen record charted after ``moment`` (and by ``at``) is the one in force."""
        return any(moment < o.time <= at for o in self.record.oxygen if not o.is_period)

    def _combine(self, result: _Assessment) -> None:
        worst_sign = max(result.hypotension_grade, result.hypoxia_grade)
        may_be_masked = result.prophylaxis is not None or result.masking_unknown is not None
        pressure_unknown = _pressure_unknown(result.pressor_in_effect, result.support, result.pressure_charted)
        result.grade, result.at_least = _verdict(
            result.fever, result.masked, worst_sign, may_be_masked, pressure_unknown
        )
        febrile_or_masked = result.fever is Status.MET or result.masked
        if febrile_or_masked:
            if result.fever is not Status.MET and worst_sign == 0:
                result.alerts.append(
                    "fever may be masked by anti-cytokine, steroid or antipyretic therapy: no active sign of CRS now"
                )
            if pressure_unknown:
                window = _fmt(self.config.hypotension_window_hours)
                result.missing.append(
                    f"no blood pressure charted in the {window} h before {iso(result.at)}: hypotension cannot be "
                    "excluded"
                )
        elif result.fever is Status.NOT_MET:
            if worst_sign > 0 and may_be_masked:
                self._possible_masked(result, worst_sign)
                self._unavailable(result)
                return
        else:
            self._fever_unknown(result, worst_sign)
            self._unavailable(result)
            return
        if result.unknown_support and febrile_or_masked:
            result.missing.extend(result.unknown_support)
            if result.grade is not None:
                result.at_least = result.grade
                result.grade = None
        self._unavailable(result)

    def _possible_masked(self, result: _Assessment, worst_sign: int) -> None:
        """No fever, a sign of CRS, and a masking drug that may hide the fever: never "no CRS"."""
        result.grade = None
        result.at_least = 0
        result.possible_grade = worst_sign
        therapy = result.prophylaxis or result.masking_unknown
        assert therapy is not None
        if result.prophylaxis is not None:
            window = self.config.masking_window(therapy.agent, therapy.role.value)
            why = (
                f"{therapy.agent} given {iso(therapy.start)} ({therapy.reference}) before any CRS may suppress fever "
                f"for {_duration(window)}"
            )
        else:
            why = f"{therapy.agent} ({therapy.reference}) has a date-only time: before or after CRS onset is unknown"
        result.missing.append(f"possible CRS with masked fever: grade {worst_sign} if CRS; {why}")
        if result.collect:
            result.evidence.append(
                Evidence(
                    "masking therapy",
                    Status.UNKNOWN,
                    therapy.reference,
                    value=therapy.agent,
                    time=therapy.start,
                    detail=why,
                )
            )

    def _fever_unknown(self, result: _Assessment, worst_sign: int) -> None:
        window = _fmt(self.config.fever_window_hours)
        if result.fever_imprecise is not None:
            reading = result.fever_imprecise
            result.missing.append(
                f"fever cannot be judged: {reading.original} ({reading.reference}) has a date-only time that may "
                f"or may not fall in the {window} h before {iso(result.at)}; take a temperature now"
            )
        else:
            result.missing.append(
                f"no usable body temperature in the {window} h before {iso(result.at)}: fever cannot be judged; "
                "take a temperature now"
            )
        result.grade = None
        result.at_least = None
        if worst_sign > 0:
            result.possible_grade = worst_sign
            if result.prophylaxis is not None:
                result.missing.append(
                    f"{result.prophylaxis.agent} ({result.prophylaxis.reference}) given before any CRS may mask fever"
                )

    def _unavailable(self, result: _Assessment) -> None:
        """Data the EHR could not supply make the grade indeterminate where they could raise it."""
        febrile_or_masked = result.fever is Status.MET or result.masked
        current = result.grade if result.grade is not None else result.at_least
        for source, reason in self.record.unavailable.items():
            if source is DataSource.PATIENT:
                continue  # age unknown: the adult thresholds are already the most sensitive
            if source is DataSource.PROCEDURES and not febrile_or_masked:
                continue  # oxygen support cannot make an afebrile, unmasked patient CRS
            if source is DataSource.CONDITIONS and febrile_or_masked:
                continue  # conditions only matter for masking
            if current is not None and current >= 4:
                continue
            result.missing.append(f"{source.value} data unavailable ({reason}): it could change the grade")
            if result.grade is not None:
                result.at_least = result.grade
                result.grade = None

    # -- current and worst ---------------------------------------------------------------

    def evaluation_times(self, at: datetime, *, exhaustive: bool = False) -> list[datetime]:
        """Where to re-apply the rules for the worst grade over (at - 72 h, at].

        The reference evaluates at every data time in the window and at ``at`` (``exhaustive``).
        The same maximum is reached at fewer moments: a grade at any time rests on findings (a
        fever, a low pressure, a pressor or support started, a masking therapy, a CRS onset) that
        all still hold at the latest of their own times, so only those moments, the first data time
        in the window (for findings older than the window), the first data time after a birthday
        (the thresholds change with age) and ``at`` are needed. tests/test_properties.py checks that
        both give the same worst grade.
        """
        start = at - self.config.worst_grade_window
        record = self.record
        all_times = [
            *(t.time for t in record.temperatures),
            *(b.time for b in record.blood_pressures),
            *(o.time for o in record.oxygen),
            *(o.period_end for o in record.oxygen if o.period_end is not None),
            *(a.start for a in record.administrations),
            *(a.end for a in record.administrations if a.end is not None),
            *(c.onset for c in record.conditions if c.onset is not None),
        ]
        in_window = sorted(moment for moment in all_times if start < moment <= at)
        if exhaustive:
            return sorted({at, *in_window})
        timeline = self.timeline
        adult_systolic = self.config.adult_systolic_threshold_mmhg
        mean_limit = self.config.mean_arterial_threshold_mmhg
        events: set[datetime] = {at}
        if in_window:
            events.add(in_window[0])
        events.update(t.time for t in timeline.fevers.records)
        # A date-only fever counts from the end of its interval (wholly inside the window then).
        events.update(t.latest for t in timeline.imprecise_temperatures if t.latest is not None)
        events.update(
            b.time
            for b in record.blood_pressures
            if (b.systolic_mmhg is not None and b.systolic_mmhg < adult_systolic)
            or (b.mean_mmhg is not None and b.mean_mmhg < mean_limit)
        )
        events.update(o.time for o in record.oxygen if o.is_support)
        events.update(a.start for a in (*timeline.pressors, *timeline.masking_therapies))
        events.update(c.onset for c in record.conditions if c.onset is not None)
        if record.birth_date is not None:
            for year in {start.year, at.year}:
                # The first data time on or after a birthday: the thresholds change with age.
                birthday = _anniversary(record.birth_date, year, at)
                index = bisect_left(in_window, birthday)
                if index < len(in_window):
                    events.add(in_window[index])
        return sorted(moment for moment in events if start < moment <= at)

    def _worst(self, at: datetime, current: _Assessment, *, exhaustive: bool) -> _Assessment | None:
        """The first moment with the highest grade (or floor), with its evidence. Only the value is
        needed to find it, so the other moments go through :meth:`scan` (the same rules without
        evidence and notes; tests/test_astct_scan.py proves its value equals ``assess``'s) and
        only the winner, unless it is ``at`` itself, is assessed again with its evidence."""
        best: int | None = None
        best_at: datetime | None = None
        scan = self.scan
        for moment in self.evaluation_times(at, exhaustive=exhaustive):
            value = current.worst_value if moment == at else scan(moment)[0]
            if value is not None and (best is None or value > best):
                best, best_at = value, moment
        if best_at is None:
            return None
        return current if best_at == at else self.assess(best_at)

    def grade(self, at: datetime, *, exhaustive: bool = False) -> GradeResult:
        current = self.assess(at)
        worst = self._worst(at, current, exhaustive=exhaustive)
        if worst is None and not exhaustive:
            # Nothing graded at the event moments: only a "grade 0" elsewhere can be found, so
            # look everywhere (rare: every moment indeterminate or without fever).
            worst = self._worst(at, current, exhaustive=True)
        components: dict[str, str | int] = {
            "fever": "masked" if current.masked and current.fever is not Status.MET else current.fever.value,
            "hypotensionGrade": current.hypotension_grade,
            "hypoxiaGrade": current.hypoxia_grade,
            "oxygenSupport": _SUPPORT_LABEL[current.support],
        }
        alerts = list(dict.fromkeys(current.alerts))
        if self.record.deceased:
            alerts.append(
                "patient is deceased: grade 5 (death due to CRS) needs a clinician's attribution and is never inferred"
            )
        if current.prior_support:
            alerts.append(
                "support in force began before the first CRS sign ("
                + ", ".join(dict.fromkeys(current.prior_support))
                + "): possibly due to another cause; the grade follows the ASTCT table, but no grade-4 order rests "
                "on it alone"
            )
        for admin in self.record.administrations_with(MedicationRole.INOTROPE, MedicationRole.VASOACTIVE_NOT_COUNTED):
            if admin.in_effect_at(at):
                alerts.append(
                    f"{admin.agent} in effect ({admin.reference}): not counted as an ASTCT vasopressor "
                    f"({'an inotrope' if admin.role is MedicationRole.INOTROPE else 'outside the reference list'})"
                )
        return GradeResult(
            system=SYSTEM,
            at=at,
            grade=current.grade,
            grade_at_least=current.at_least,
            components=components,
            evidence=tuple(current.evidence),
            missing=tuple(dict.fromkeys(current.missing)),
            worst_grade=worst.worst_value if worst is not None else None,
            worst_grade_at=worst.at if worst is not None else None,
            worst_grade_references=tuple(dict.fromkeys(e.reference for e in worst.evidence if e.status is Status.MET))
            if worst is not None
            else (),
            not_evidence=tuple(self.record.not_evidence),
            assumptions=tuple(dict.fromkeys(current.assumptions)),
            alerts=tuple(alerts),
            choices=self.config.describe(),
            citation=CITATION,
            possible_grade=current.possible_grade,
            worst_grade_evidence=_met(worst.evidence) if worst is not None else (),
            support_before_crs=tuple(dict.fromkeys(current.prior_support)),
            grade_without_prior_support=current.grade_without_prior_support if current.prior_support else None,
        )


def grade(
    record: PatientRecord, *, at: datetime, config: GradingConfig | None = None, exhaustive: bool = False
) -> GradeResult:
    """The ASTCT grade at ``at``, with the worst grade over the look-back window."""
    return AstctGrader(record, config or GradingConfig()).grade(at, exhaustive=exhaustive)
