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

from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import attrgetter

from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import Evidence, GradeResult, Status
from cds_hooks.grading.timeline import RangeBest, TimeSeries
from cds_hooks.reading.fhir_time import age_in_years, iso
from cds_hooks.reading.record import (
    Administration,
    BloodPressure,
    DataSource,
    OxygenRecord,
    PatientRecord,
    SupportLevel,
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

    @property
    def worst_value(self) -> int | None:
        return self.grade if self.grade is not None else self.at_least


_TIME = attrgetter("time")
"""Sort key of every timed record (C-level: the tables are rebuilt at every grading)."""


class _Timeline:
    """The record indexed for the rules: sorted series and range tables, built once."""

    def __init__(self, record: PatientRecord, config: GradingConfig) -> None:
        self.record = record
        self.temperatures = TimeSeries(record.temperatures, _TIME)
        # Hottest first; among equals the later reading, so the evidence is the most recent.
        self.hottest = RangeBest(self.temperatures.records, attrgetter("celsius", "time"))
        self.fevers = TimeSeries(
            [t for t in record.temperatures if t.celsius >= config.fever_threshold_celsius], lambda t: t.time
        )
        self.systolic = TimeSeries([b for b in record.blood_pressures if b.systolic_mmhg is not None], _TIME)
        self.lowest_systolic = RangeBest(self.systolic.records, lambda b: _lowness(b.systolic_mmhg))
        self.mean = TimeSeries([b for b in record.blood_pressures if b.mean_mmhg is not None], _TIME)
        self.lowest_mean = RangeBest(self.mean.records, lambda b: _lowness(b.mean_mmhg))
        points = [o for o in record.oxygen if not o.is_period]
        # A support record and a room-air record charted at the same moment: support wins.
        support_instants = {o.time for o in points if o.is_support}
        self.room_air = TimeSeries(
            [o for o in points if o.room_air and o.time not in support_instants], lambda o: o.time
        )
        supports = [o for o in points if o.is_support]
        self.devices = TimeSeries([o for o in supports if o.device is not None], _TIME)
        self.flows = TimeSeries([o for o in supports if o.flow_l_min is not None], _TIME)
        self.fio2s = TimeSeries([o for o in supports if o.fio2_percent is not None], _TIME)
        self.period_oxygen = [o for o in record.oxygen if o.is_period]
        self.spo2 = TimeSeries(record.spo2, _TIME)
        self.pressors = record.administrations_with(*PRESSOR_ROLES)
        self.masking_therapies = record.administrations_with(*MASKING_ROLES)
        self.crs_therapy_starts = [a.start for a in record.administrations_with(MedicationRole.CRS_THERAPY)]


def _lowness(value: float | None) -> float:
    """Rank for "lowest wins": the lower the pressure, the higher the rank; none charted ranks last."""
    return -value if value is not None else float("-inf")


def systolic_threshold(age_years: int | None, config: GradingConfig) -> float:
    """Systolic hypotension threshold; unknown age uses the adult value, the most sensitive."""
    if age_years is None or age_years > 10:
        return config.adult_systolic_threshold_mmhg
    if age_years < 1:
        return PAEDIATRIC_BASE_SYSTOLIC_MMHG
    return PAEDIATRIC_BASE_SYSTOLIC_MMHG + 2.0 * age_years


def _pressure_check(result: _Assessment, reading: BloodPressure, value: float, limit: float, kind: str) -> bool:
    """Whether the lowest reading of ``kind`` is below ``limit``, recorded as evidence either way."""
    met = value < limit
    if result.collect:
        result.evidence.append(
            Evidence(
                "hypotension",
                Status.MET if met else Status.NOT_MET,
                reading.reference,
                value=value,
                unit="mm[Hg]",
                threshold=f"{kind} pressure < {_fmt(limit)} mm[Hg]",
                time=reading.time,
                detail=f"lowest {kind} pressure in the window",
            )
        )
    return met


def _anniversary(birth: date, year: int, like: datetime) -> datetime:
    """Midnight (UTC) of the birthday in ``year``; 29 February falls on 1 March."""
    try:
        day = birth.replace(year=year)
    except ValueError:
        day = date(year, 3, 1)
    return datetime(day.year, day.month, day.day, tzinfo=like.tzinfo)


def _fmt(value: float) -> str:
    return f"{value:g}"


class AstctGrader:
    """Grades one patient record at ``at``: current grade, worst grade, evidence, gaps."""

    def __init__(self, record: PatientRecord, config: GradingConfig) -> None:
        self.record = record
        self.config = config
        self.timeline = _Timeline(record, config)

    # -- the rules at one moment ---------------------------------------------------------

    def assess(self, at: datetime, *, collect: bool = True) -> _Assessment:
        """The rules at ``at``; ``collect=False`` skips the evidence and notes (worst-grade scan)."""
        result = _Assessment(at=at, collect=collect)
        age = age_in_years(self.record.birth_date, at) if self.record.birth_date else None
        if age is None:
            result.assumptions.append("birth date unknown: adult hypotension thresholds used")
        self._fever(result)
        self._masking(result)
        self._hypotension(result, age)
        self._hypoxia(result)
        self._combine(result)
        return result

    def _fever(self, result: _Assessment) -> None:
        cfg = self.config
        lo, hi = self.timeline.temperatures.span(result.at - cfg.fever_window, result.at)
        hottest = self.timeline.hottest.best(lo, hi)
        if hottest is None:
            result.fever = Status.UNKNOWN
            return
        result.fever = Status.MET if hottest.celsius >= cfg.fever_threshold_celsius else Status.NOT_MET
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
                    detail=f"highest temperature in the fever window, charted as {hottest.original}",
                )
            )

    def _prior_crs_onset(self, at: datetime) -> tuple[datetime | None, str] | None:
        """When CRS was established before the fever window, and the resource that shows it."""
        cfg = self.config
        window_start = at - cfg.fever_window
        candidates: list[tuple[datetime | None, str]] = []
        therapy_start = min(self.timeline.crs_therapy_starts, default=None)
        earliest = window_start - cfg.prior_crs_lookback
        if therapy_start is not None and therapy_start > earliest:
            first = self.timeline.fevers.first(therapy_start, window_start, include_start=True)
        else:
            first = self.timeline.fevers.first(earliest, window_start, include_start=False)
        if first is not None:
            candidates.append((first.time, first.reference))  # the earliest qualifying fever is the onset
        for condition in self.record.conditions:
            if condition.onset is None or condition.onset <= at:
                candidates.append((condition.onset, condition.reference))
        if not candidates:
            return None
        return min(candidates, key=lambda c: c[0] or datetime.min.replace(tzinfo=at.tzinfo))

    def _masking(self, result: _Assessment) -> None:
        """ASTCT: after CRS and then antipyretic/anti-cytokine/steroid, fever is not required."""
        if result.fever is Status.MET:
            return
        onset = self._prior_crs_onset(result.at)
        given = [a for a in self.timeline.masking_therapies if a.start <= result.at]
        after = [] if onset is None else [a for a in given if onset[0] is None or a.start > onset[0]]
        if onset is None or not after:
            recent = [a for a in given if a.start > result.at - self.config.worst_grade_window]
            if recent:
                names = ", ".join(sorted({a.agent for a in recent}))
                result.alerts.append(
                    f"fever may be masked: {names} given without CRS established before it "
                    "(premedication does not lift the fever requirement)"
                )
            return
        onset_time, onset_reference = onset
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

    def _hypotension(self, result: _Assessment, age: int | None) -> None:
        cfg = self.config
        running = [a for a in self.timeline.pressors if a.in_effect_at(result.at)]
        counted = {a.agent for a in running if a.role is MedicationRole.VASOPRESSOR}
        if running:
            result.pressor_in_effect = True
            result.hypotension_grade = 4 if len(counted) >= 2 else 3
            if result.collect:
                result.evidence.extend(self._pressor_evidence(admin, len(counted)) for admin in running)
        threshold = systolic_threshold(age, cfg)
        use_map = age is None or age > 10
        window_start = result.at - cfg.hypotension_window
        lowest_systolic = self.timeline.lowest_systolic.best(*self.timeline.systolic.span(window_start, result.at))
        lowest_mean = self.timeline.lowest_mean.best(*self.timeline.mean.span(window_start, result.at))
        result.pressure_charted = lowest_systolic is not None or (lowest_mean is not None and use_map)
        low = False
        if lowest_systolic is not None and lowest_systolic.systolic_mmhg is not None:
            low = _pressure_check(result, lowest_systolic, lowest_systolic.systolic_mmhg, threshold, "systolic")
        if use_map and lowest_mean is not None and lowest_mean.mean_mmhg is not None:
            limit = cfg.mean_arterial_threshold_mmhg
            if lowest_mean.mean_mmhg < limit or lowest_systolic is None:
                low = _pressure_check(result, lowest_mean, lowest_mean.mean_mmhg, limit, "mean arterial") or low
        if low and not running:
            result.hypotension_grade = 2

    @staticmethod
    def _pressor_evidence(admin: Administration, counted: int) -> Evidence:
        if admin.role is MedicationRole.VASOPRESSIN_ANALOGUE:
            detail = "vasopressin-type: not counted toward 'more than one vasopressor'"
        else:
            detail = f"vasopressor in effect ({counted} counted)"
        if admin.by_text:
            detail += "; identified by name in text only, no recognised code"
        return Evidence(
            "vasopressor",
            Status.MET,
            admin.reference,
            value=admin.agent,
            time=admin.start,
            detail=detail,
        )

    def _hypoxia(self, result: _Assessment) -> None:
        cfg = self.config
        at = result.at
        oldest = at - cfg.oxygen_recency
        timeline = self.timeline
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
                if last_room_air is not None and last_room_air > period.time:
                    continue  # a later room-air record ends it
                period_level, period_notes = self._classify(period.device, period.flow_l_min, period.fio2_percent)
                if period.is_support and period_level > level:
                    level, used, notes = period_level, [period], period_notes
                    chosen_device = period
                    chosen_fio2 = period if period.fio2_percent is not None else None
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
            for record in dict.fromkeys(used):
                result.evidence.append(self._oxygen_evidence(record, level))
        result.assumptions.extend(notes)
        self._spo2_alert(result)

    def _classify(self, device: str | None, flow: float | None, fio2: float | None) -> tuple[SupportLevel, list[str]]:
        limit = self.config.low_flow_max_l_min
        if device == "positive_pressure":
            return SupportLevel.POSITIVE_PRESSURE, []
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

    def _combine(self, result: _Assessment) -> None:
        worst_sign = max(result.hypotension_grade, result.hypoxia_grade)
        if result.fever is Status.MET:
            result.grade = max(1, worst_sign)
        elif result.masked:
            result.grade = worst_sign
            if worst_sign == 0:
                result.alerts.append(
                    "fever may be masked by anti-cytokine, steroid or antipyretic therapy: no active sign of CRS now"
                )
        elif result.fever is Status.NOT_MET:
            result.grade = 0
        else:
            window = _fmt(self.config.fever_window_hours)
            result.missing.append(
                f"no usable body temperature in the {window} h before {iso(result.at)}: fever cannot be judged"
            )
            result.grade = None
            result.at_least = None
            self._unavailable(result)
            return
        could_raise_by_pressure = not result.pressor_in_effect and result.hypoxia_grade < 2 and result.grade is not None
        if could_raise_by_pressure and not result.pressure_charted and (result.fever is Status.MET or result.masked):
            window = _fmt(self.config.hypotension_window_hours)
            result.missing.append(
                f"no blood pressure charted in the {window} h before {iso(result.at)}: hypotension cannot be excluded"
            )
            result.at_least = result.grade
            result.grade = None
        self._unavailable(result)

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
        worst: _Assessment | None = None
        for moment in self.evaluation_times(at, exhaustive=exhaustive):
            point = current if moment == at else self.assess(moment, collect=False)
            value = point.worst_value
            if value is not None and (worst is None or worst.worst_value is None or value > worst.worst_value):
                worst = point
        return worst

    def grade(self, at: datetime, *, exhaustive: bool = False) -> GradeResult:
        current = self.assess(at)
        worst = self._worst(at, current, exhaustive=exhaustive)
        if worst is None and not exhaustive:
            # Nothing graded at the event moments: only a "grade 0" elsewhere can be found, so
            # look everywhere (rare: every moment indeterminate or without fever).
            worst = self._worst(at, current, exhaustive=True)
        if worst is not None and not worst.collect:
            worst = self.assess(worst.at)  # again, with its evidence
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
        )


def grade(
    record: PatientRecord, *, at: datetime, config: GradingConfig | None = None, exhaustive: bool = False
) -> GradeResult:
    """The ASTCT grade at ``at``, with the worst grade over the look-back window."""
    return AstctGrader(record, config or GradingConfig()).grade(at, exhaustive=exhaustive)
