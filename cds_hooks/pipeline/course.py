"""A patient's CRS course: the ASTCT grade at every data time, with the findings beside it.

The groundwork for the SMART app (issue 8) and ``crs-cds grade --timeline``. A clinician reviewing
a grade wants to see how it got there: when the fever came, when the pressure fell, when the
pressor ran and when the oxygen went up. So the course re-applies the same rules the card uses
(``AstctGrader.assess``, public methods only) at every data time in the look-back window, and lays
the raw tracks (temperatures, pressures, oxygen, vasopressors, therapies) on the same time axis,
each point with the FHIR reference it came from. Pure: no I/O, no clock (the caller passes ``at``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_hooks.grading.astct import MASKING_ROLES, PRESSOR_ROLES, AstctGrader, low_pressure, systolic_threshold
from cds_hooks.grading.astct import SYSTEM as ASTCT
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import Status
from cds_hooks.pipeline.evaluate import Evaluation
from cds_hooks.reading.fhir_time import age_in_years, iso
from cds_hooks.reading.record import Administration, PatientRecord, SupportLevel
from cds_hooks.reading.terminology import MedicationRole

SUPPORT_NAMES = {
    SupportLevel.ROOM_AIR: "room air",
    SupportLevel.LOW_FLOW: "low flow",
    SupportLevel.HIGH_FLOW: "high flow",
    SupportLevel.POSITIVE_PRESSURE: "positive pressure",
}
"""The oxygen support levels as the course names them (ASTCT hypoxia grades 0, 2, 3, 4)."""

THERAPY_KINDS = {
    MedicationRole.ANTI_CYTOKINE: "anti-cytokine",
    MedicationRole.CORTICOSTEROID: "corticosteroid",
    MedicationRole.ANTIPYRETIC: "antipyretic",
    MedicationRole.CRS_THERAPY: "crs-therapy",
}
"""Markers on the time axis: what can mask a fever (tocilizumab, steroids, antipyretics) and the
CAR-T / T-cell engager dose that started it all."""


@dataclass(frozen=True, slots=True)
class GradePoint:
    """The ASTCT rules applied at one data time: a grade, or indeterminate with a floor."""

    time: datetime
    grade: int | None
    at_least: int | None
    fever: str
    """``met``, ``not met``, ``unknown`` or ``masked`` (fever not required after CRS + therapy)."""
    hypotension_grade: int
    hypoxia_grade: int
    support: str
    references: tuple[str, ...] = ()
    """The resources charted at this moment (what made it a data time)."""
    missing: tuple[str, ...] = ()

    @property
    def indeterminate(self) -> bool:
        return self.grade is None

    @property
    def worst_value(self) -> int | None:
        return self.grade if self.grade is not None else self.at_least

    def to_json(self) -> dict[str, Any]:
        # ``grade: null`` is kept on purpose: an indeterminate point must never read as grade 0.
        body: dict[str, Any] = {"time": iso(self.time), "grade": self.grade}
        if self.grade is None:
            body["indeterminate"] = True
        body.update(
            {
                "atLeast": self.at_least,
                "fever": self.fever,
                "hypotensionGrade": self.hypotension_grade,
                "hypoxiaGrade": self.hypoxia_grade,
                "support": self.support,
                "references": list(self.references),
                "missing": list(self.missing),
            }
        )
        return _compact(body, keep=("grade",))


@dataclass(frozen=True, slots=True)
class TemperaturePoint:
    time: datetime
    celsius: float
    original: str
    reference: str
    fever: bool

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "time": iso(self.time),
                "celsius": self.celsius,
                "original": self.original,
                "fever": self.fever,
                "reference": self.reference,
            }
        )


@dataclass(frozen=True, slots=True)
class PressurePoint:
    """One blood pressure with the hypotension thresholds in force for the patient's age then."""

    time: datetime
    reference: str
    systolic_mmhg: float | None
    mean_mmhg: float | None
    diastolic_mmhg: float | None
    systolic_threshold_mmhg: float
    mean_threshold_mmhg: float | None
    """None where MAP is not used (known age of 10 years or less)."""
    low: bool

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "time": iso(self.time),
                "systolic": self.systolic_mmhg,
                "mean": self.mean_mmhg,
                "diastolic": self.diastolic_mmhg,
                "systolicThreshold": self.systolic_threshold_mmhg,
                "meanThreshold": self.mean_threshold_mmhg,
                "low": self.low,
                "reference": self.reference,
            }
        )


@dataclass(frozen=True, slots=True)
class OxygenPoint:
    """Oxygen support from this time until the next point: a step in the support track."""

    time: datetime
    support: str
    hypoxia_grade: int
    flow_l_min: float | None
    device: str | None
    references: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "time": iso(self.time),
                "support": self.support,
                "hypoxiaGrade": self.hypoxia_grade,
                "flowLMin": self.flow_l_min,
                "device": self.device,
                "references": list(self.references),
            }
        )


@dataclass(frozen=True, slots=True)
class PressorInterval:
    agent: str
    start: datetime
    end: datetime | None
    """None while it is still running."""
    vasopressin: bool
    """Vasopressin-type: not counted toward 'more than one vasopressor' (grade 4)."""
    reference: str

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "agent": self.agent,
                "start": iso(self.start),
                "end": iso(self.end) if self.end is not None else None,
                "running": self.end is None,
                "vasopressin": self.vasopressin,
                "reference": self.reference,
            }
        )


@dataclass(frozen=True, slots=True)
class TherapyMarker:
    kind: str
    """``anti-cytokine`` (tocilizumab...), ``corticosteroid``, ``antipyretic`` or ``crs-therapy``."""
    agent: str
    time: datetime
    end: datetime | None
    dose_mg: float | None
    reference: str

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "kind": self.kind,
                "agent": self.agent,
                "time": iso(self.time),
                "end": iso(self.end) if self.end is not None and self.end != self.time else None,
                "doseMg": self.dose_mg,
                "reference": self.reference,
            }
        )


@dataclass(frozen=True, slots=True)
class Course:
    """The grade and its findings over (window_start, at]."""

    at: datetime
    window_start: datetime
    fever_threshold_celsius: float
    grades: tuple[GradePoint, ...]
    temperatures: tuple[TemperaturePoint, ...]
    pressures: tuple[PressurePoint, ...]
    oxygen: tuple[OxygenPoint, ...]
    vasopressors: tuple[PressorInterval, ...]
    therapies: tuple[TherapyMarker, ...]
    system: str = ASTCT

    @property
    def current(self) -> GradePoint | None:
        return self.grades[-1] if self.grades else None

    @property
    def worst(self) -> GradePoint | None:
        """The first point with the highest grade (or floor), as the card's worst grade."""
        worst: GradePoint | None = None
        for point in self.grades:
            value = point.worst_value
            if value is not None and (worst is None or value > (worst.worst_value or 0)):
                worst = point
        return worst

    def to_json(self) -> dict[str, Any]:
        worst = self.worst
        return _compact(
            {
                "system": self.system,
                "at": iso(self.at),
                "windowStart": iso(self.window_start),
                "feverThresholdCelsius": self.fever_threshold_celsius,
                "worstGrade": worst.worst_value if worst is not None else None,
                "worstGradeAt": iso(worst.time) if worst is not None else None,
                "grades": [p.to_json() for p in self.grades],
                "temperatures": [p.to_json() for p in self.temperatures],
                "pressures": [p.to_json() for p in self.pressures],
                "oxygen": [p.to_json() for p in self.oxygen],
                "vasopressors": [p.to_json() for p in self.vasopressors],
                "therapies": [p.to_json() for p in self.therapies],
            }
        )


def crs_course(record: PatientRecord, *, at: datetime, config: GradingConfig) -> Course:
    """The course over the look-back window: the same rules as the card, at every data time."""
    start = at - config.worst_grade_window
    grader = AstctGrader(record, config)
    charted = _charted_at(record)
    grades: list[GradePoint] = []
    oxygen: list[OxygenPoint] = []
    for moment in grader.evaluation_times(at, exhaustive=True):
        point = grader.assess(moment, collect=False)
        masked = point.masked and point.fever is not Status.MET
        grades.append(
            GradePoint(
                time=moment,
                grade=point.grade,
                at_least=point.at_least,
                fever="masked" if masked else point.fever.value,
                hypotension_grade=point.hypotension_grade,
                hypoxia_grade=point.hypoxia_grade,
                support=SUPPORT_NAMES[point.support],
                references=tuple(charted.get(moment, ())),
                missing=tuple(dict.fromkeys(point.missing)),
            )
        )
        step = OxygenPoint(
            time=moment,
            support=SUPPORT_NAMES[point.support],
            hypoxia_grade=point.hypoxia_grade,
            flow_l_min=point.oxygen_flow_l_min,
            device=point.oxygen_device_display or point.oxygen_device,
            references=tuple(dict.fromkeys(r.reference for r in point.oxygen_records))
            or _room_air_references(record, moment, point.support),
        )
        if not oxygen or _oxygen_key(oxygen[-1]) != _oxygen_key(step):
            oxygen.append(step)
    return Course(
        at=at,
        window_start=start,
        fever_threshold_celsius=config.fever_threshold_celsius,
        grades=tuple(grades),
        temperatures=tuple(
            TemperaturePoint(t.time, t.celsius, t.original, t.reference, t.celsius >= config.fever_threshold_celsius)
            for t in record.temperatures
            if start < t.time <= at
        ),
        pressures=tuple(_pressures(record, start, at, config)),
        oxygen=tuple(oxygen),
        vasopressors=tuple(
            PressorInterval(a.agent, a.start, a.end, a.role is MedicationRole.VASOPRESSIN_ANALOGUE, a.reference)
            for a in record.administrations_with(*PRESSOR_ROLES)
            if _overlaps(a, start, at)
        ),
        therapies=tuple(
            TherapyMarker(THERAPY_KINDS[a.role], a.agent, a.start, a.end, a.dose_mg, a.reference)
            for a in record.administrations_with(*MASKING_ROLES, MedicationRole.CRS_THERAPY)
            if _overlaps(a, start, at)
        ),
    )


def course_document(evaluation: Evaluation, config: GradingConfig, patient_id: str) -> dict[str, Any]:
    """What the HTTP route and ``crs-cds grade --timeline`` answer: one shape for both."""
    course = crs_course(evaluation.record, at=evaluation.at, config=config)
    document: dict[str, Any] = {
        "patient": evaluation.patient_reference or f"Patient/{patient_id}",
        "at": iso(evaluation.at),
        "course": course.to_json(),
    }
    trends = lab_trends(evaluation.record, start=course.window_start, at=evaluation.at)
    if trends:
        document["labs"] = trends
    scores = [score.to_json() for score in evaluation.scores]
    if scores:
        document["scores"] = scores
    return document


def lab_trends(record: PatientRecord, *, start: datetime, at: datetime) -> dict[str, list[dict[str, Any]]]:
    """Each lab's values over the course window, oldest first, each with its reference and the
    Observation's range (issue 18: the trends beside the grade). Empty when no lab is charted."""
    trends: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for value in record.labs:
        if start < value.time <= at:
            trends[value.lab].append(
                _compact(
                    {
                        "time": iso(value.time),
                        "value": value.value,
                        "unit": value.unit,
                        "original": value.original,
                        "referenceLow": value.reference_low,
                        "referenceHigh": value.reference_high,
                        "reference": value.reference,
                    }
                )
            )
    return dict(trends)


def _charted_at(record: PatientRecord) -> dict[datetime, list[str]]:
    """Data time -> the resources charted then (the same moments ``evaluation_times`` uses)."""
    by_time: defaultdict[datetime, list[str]] = defaultdict(list)
    for time, reference in (
        *((t.time, t.reference) for t in record.temperatures),
        *((b.time, b.reference) for b in record.blood_pressures),
        *((o.time, o.reference) for o in record.oxygen),
        *((o.period_end, o.reference) for o in record.oxygen if o.period_end is not None),
        *((a.start, a.reference) for a in record.administrations),
        *((a.end, a.reference) for a in record.administrations if a.end is not None),
        *((c.onset, c.reference) for c in record.conditions if c.onset is not None),
    ):
        if reference not in by_time[time]:
            by_time[time].append(reference)
    return by_time


def _pressures(record: PatientRecord, start: datetime, at: datetime, config: GradingConfig) -> list[PressurePoint]:
    points: list[PressurePoint] = []
    for reading in record.blood_pressures:
        if not start < reading.time <= at:
            continue
        age = age_in_years(record.birth_date, reading.time) if record.birth_date else None
        systolic_limit = systolic_threshold(age, config)
        mean_limit = config.mean_arterial_threshold_mmhg if age is None or age > 10 else None
        low = low_pressure(reading.systolic_mmhg, reading.mean_mmhg, age, config)
        points.append(
            PressurePoint(
                reading.time,
                reading.reference,
                reading.systolic_mmhg,
                reading.mean_mmhg,
                reading.diastolic_mmhg,
                systolic_limit,
                mean_limit,
                low,
            )
        )
    return points


def _room_air_references(record: PatientRecord, moment: datetime, support: SupportLevel) -> tuple[str, ...]:
    if support is not SupportLevel.ROOM_AIR:
        return ()
    return tuple(o.reference for o in record.oxygen if o.room_air and o.time == moment)


def _oxygen_key(point: OxygenPoint) -> tuple[str, float | None, str | None]:
    return point.support, point.flow_l_min, point.device


def _overlaps(admin: Administration, start: datetime, at: datetime) -> bool:
    """Given or running within (start, at]: a pressor started before the window still shows."""
    return admin.start <= at and (admin.end is None or admin.end > start)


def _compact(body: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Drop None and empty values (as CDS Hooks asks of its own JSON), except ``keep``."""
    return {k: v for k, v in body.items() if k in keep or (v is not None and v not in ([], {}))}
