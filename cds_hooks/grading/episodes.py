"""CRS and ICANS episodes over a whole course: onset, worst grade, resolution, treatments.

Pure over the clinical record (no I/O, no clock: the caller passes ``until``, the end of the data
or the evaluation time). The rules are clinical-reference.md section 5 (copied into
``docs/clinical-reference.md``), all **[choices]**, configurable in :class:`EpisodeConfig`:

- the course is the grade at every data time, by the same rules as the card;
- onset is the first data time graded >= 1 (or proven >= 1 while indeterminate); the CRS-causing
  therapy is the last one given before onset, and the onset day counts from it (day 0);
- a sign ends at its last reading (fever, low pressure), at the end of its administration (a
  vasopressor), or, for oxygen, at the first room-air record after it, the end of its period, or
  the oxygen recency window after its last record;
- an episode resolves at its latest sign end once 24 h have followed with no sign and at least one
  temperature (an ICANS assessment graded 0 for ICANS); without those data it stays unresolved,
  never "resolved" for want of data; a sign after a resolution starts a new episode;
- treatments are counted between onset and resolution (or the end of the data).

Registries (CIBMTR form 4100, the EBMT day-100 form) and the order checks (tocilizumab's four
doses per CRS event) read these episodes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import NamedTuple

from cds_hooks.grading import GRADERS
from cds_hooks.grading.astct import PRESSOR_ROLES, AstctGrader, low_pressure
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.icans import DEFAULT_WINDOW as ICANS_WINDOW
from cds_hooks.grading.icans import grade_icans
from cds_hooks.grading.result import Status
from cds_hooks.reading.record import Administration, PatientRecord, SupportLevel
from cds_hooks.reading.terminology import MedicationRole

CRS_SYSTEM = "ASTCT-2019"
ICANS_SYSTEM = "ASTCT-2019-ICANS"
TOCILIZUMAB = "tocilizumab"


@dataclass(frozen=True, slots=True)
class EpisodeConfig:
    """The episode rules' windows [choices, clinical-reference.md section 5]."""

    sign_free_hours: float = 24.0
    """An episode resolves once this long has followed its last sign with data and no sign."""

    @property
    def sign_free(self) -> timedelta:
        return timedelta(hours=self.sign_free_hours)


@dataclass(frozen=True)
class Episode:
    """One CRS or ICANS episode; times are UTC, unknown values None."""

    system: str
    number: int
    onset: datetime
    max_grade: int
    max_grade_at: datetime
    indeterminate: bool
    """The worst grade rests on an indeterminate point: ``max_grade`` is what the data prove at least."""
    resolved: bool
    resolution: datetime | None
    therapy: str | None = None
    therapy_at: datetime | None = None
    onset_day: int | None = None
    fever_onset: datetime | None = None
    hypotension_onset: datetime | None = None
    vasopressors_max: int = 0
    vasopressor_start: datetime | None = None
    low_flow_oxygen_start: datetime | None = None
    high_flow_oxygen_start: datetime | None = None
    positive_pressure_start: datetime | None = None
    tocilizumab_doses: int = 0
    tocilizumab_first: datetime | None = None
    corticosteroid_first: datetime | None = None
    other_anticytokine: tuple[str, ...] = ()
    references: tuple[str, ...] = ()

    @property
    def end(self) -> datetime | None:
        return self.resolution

    @property
    def duration_hours(self) -> float | None:
        if self.resolution is None:
            return None
        return (self.resolution - self.onset).total_seconds() / 3600

    def covers(self, moment: datetime) -> bool:
        """``moment`` falls between onset and resolution (an unresolved episode has no end)."""
        return self.onset <= moment and (self.resolution is None or moment <= self.resolution)


@dataclass(frozen=True)
class EpisodeCourse:
    """Every episode of one system for one patient, and whether the data could decide."""

    system: str
    episodes: tuple[Episode, ...]
    decided: bool
    """False when the data cannot say whether there was an episode (no temperatures at all)."""
    missing: tuple[str, ...] = ()

    def current(self, at: datetime) -> Episode | None:
        """The episode in progress at ``at`` (onset before it, not resolved before it)."""
        return next((e for e in reversed(self.episodes) if e.covers(at)), None)


class _Point(NamedTuple):
    """The course at one data time (a tuple: built at every data time of every patient)."""

    time: datetime
    value: int | None
    """The grade, or what it is at least when indeterminate (None: nothing proven)."""
    graded: bool
    sign: bool
    """A sign of the syndrome is present at this moment (not only still inside a window)."""
    support: SupportLevel = SupportLevel.ROOM_AIR
    hypotension: bool = False
    references: tuple[str, ...] = ()


# -- CRS ---------------------------------------------------------------------------------------


def crs_episodes(
    record: PatientRecord,
    *,
    until: datetime,
    config: GradingConfig,
    episode_config: EpisodeConfig | None = None,
    system: str = CRS_SYSTEM,
) -> EpisodeCourse:
    """The CRS episodes in the record up to ``until``, by ASTCT 2019 or another CRS ``system``
    (CTCAE-5.0, LEE-2014, PENN, MSKCC, CARTOX): the same data times, signs and resolution rule;
    only the grade at each data time (and the evidence cited for it) is that system's."""
    rules = episode_config or EpisodeConfig()
    grader = AstctGrader(record, config)
    signs = _SignTimes.of(grader)
    points = _crs_points(grader, signs, _crs_times(record, until, config))
    evidence: Callable[[datetime], list[str]] = partial(_evidence_references, grader, {})
    if system != CRS_SYSTEM:
        points, evidence = _graded_by(system, record, points, config)
    temperatures = [t.time for t in record.temperatures if t.time <= until]
    spans = _episode_spans(points, temperatures, until, rules)
    episodes = tuple(
        _crs_episode(grader, points, span, number=number, config=config, system=system, evidence=evidence)
        for number, span in enumerate(spans, start=1)
    )
    decided = bool(temperatures) or bool(episodes)
    missing = () if decided else ("no temperature charted: whether CRS occurred cannot be decided",)
    return EpisodeCourse(system, episodes, decided, missing)


def _graded_by(
    system: str, record: PatientRecord, points: Sequence[_Point], config: GradingConfig
) -> tuple[list[_Point], Callable[[datetime], list[str]]]:
    """The points re-graded by another system at each data time (signs unchanged)."""
    grade = GRADERS[system]
    results = {p.time: grade(record, p.time, config) for p in points}
    regraded = [
        p._replace(
            value=results[p.time].grade if results[p.time].grade is not None else results[p.time].grade_at_least,
            graded=results[p.time].grade is not None,
        )
        for p in points
    ]

    def evidence(moment: datetime) -> list[str]:
        return [e.reference for e in results[moment].evidence if e.status is Status.MET]

    return regraded, evidence


def _crs_times(record: PatientRecord, until: datetime, config: GradingConfig) -> list[datetime]:
    """Every data time, plus the moment each point oxygen record expires (its sign may end then)."""
    moments = {
        *(t.time for t in record.temperatures),
        *(b.time for b in record.blood_pressures),
        *(o.time for o in record.oxygen),
        *(o.period_end for o in record.oxygen if o.period_end is not None),
        *(o.time + config.oxygen_recency for o in record.oxygen if not o.is_period and o.is_support),
        *(a.start for a in record.administrations),
        *(a.end for a in record.administrations if a.end is not None),
        *(c.onset for c in record.conditions if c.onset is not None),
    }
    return sorted(m for m in moments if m <= until)


@dataclass(frozen=True, slots=True)
class _SignTimes:
    """The moments a fever or a low pressure was charted (a sign at that very time)."""

    fevers: frozenset[datetime]
    low_pressures: frozenset[datetime]

    @classmethod
    def of(cls, grader: AstctGrader) -> _SignTimes:
        record, config = grader.record, grader.config
        fevers = frozenset(t.time for t in record.temperatures if t.celsius >= config.fever_threshold_celsius)
        low = frozenset(
            b.time
            for b in record.blood_pressures
            if low_pressure(b.systolic_mmhg, b.mean_mmhg, grader.age_at(b.time), config)
        )
        return cls(fevers, low)


def _crs_points(grader: AstctGrader, signs: _SignTimes, moments: Iterable[datetime]) -> list[_Point]:
    """The course at each moment: the grade by the card's rules, and whether a sign is present."""
    scan, fevers, low_pressures = grader.scan, signs.fevers, signs.low_pressures
    points: list[_Point] = []
    for moment in moments:
        value, graded, support, pressor_in_effect = scan(moment)
        low_now = moment in low_pressures
        sign = moment in fevers or low_now or pressor_in_effect or support is not SupportLevel.ROOM_AIR
        points.append(_Point(moment, value, graded, sign, support, low_now or pressor_in_effect))
    return points


@dataclass(frozen=True, slots=True)
class _Span:
    onset_index: int
    end_index: int
    """The last point inside the episode (its latest sign, or the end of the data)."""
    resolution: datetime | None


def _episode_spans(
    points: Sequence[_Point], confirmations: Sequence[datetime], until: datetime, rules: EpisodeConfig
) -> list[_Span]:
    """Cut the course into episodes: onset at a point graded >= 1, resolution after a sign-free,
    confirmed stretch (``confirmations``: the data times that can show the absence of signs)."""
    spans: list[_Span] = []
    sign_free = rules.sign_free
    # Where the graded (>= 1) points and the signs are, found by bisection instead of a scan each.
    graded = [i for i, p in enumerate(points) if (p.value or 0) >= 1]
    signs = [i for i, p in enumerate(points) if p.sign]
    first_confirmed = _first_after(confirmations)
    index = 0
    while index < len(points):
        found = bisect_left(graded, index)
        if found == len(graded):
            break
        onset = graded[found]
        last_sign = onset
        cursor = onset + 1
        resolution: datetime | None = None
        while cursor <= len(points):
            last_time = points[last_sign].time
            found = bisect_left(signs, cursor)
            next_sign = signs[found] if found < len(signs) else None
            confirmed = first_confirmed(last_time)
            quiet_until = max(last_time + sign_free, confirmed) if confirmed is not None else None
            if next_sign is not None and (quiet_until is None or points[next_sign].time <= quiet_until):
                last_sign = next_sign
                cursor = next_sign + 1
                continue
            if quiet_until is not None and quiet_until <= until:
                resolution = last_time
            break
        spans.append(_Span(onset, last_sign, resolution))
        if resolution is None:
            break
        quiet_end = resolution + sign_free
        index = next((i for i in range(last_sign + 1, len(points)) if points[i].time > quiet_end), len(points))
    return spans


def _first_after(moments: Sequence[datetime]) -> Callable[[datetime], datetime | None]:
    """The first of ``moments`` (in their order) later than a given time: by bisection when they
    are sorted (as the reader leaves them), else by a scan."""
    ordered = all(a <= b for a, b in pairwise(moments))

    def first(after: datetime) -> datetime | None:
        if ordered:
            found = bisect_right(moments, after)
            return moments[found] if found < len(moments) else None
        return next((m for m in moments if m > after), None)

    return first


def _crs_episode(
    grader: AstctGrader,
    points: Sequence[_Point],
    span: _Span,
    *,
    number: int,
    config: GradingConfig,
    system: str,
    evidence: Callable[[datetime], list[str]],
) -> Episode:
    record = grader.record
    base = _episode_frame(record, points, span, system=system, number=number)
    onset, end, inside = base.onset, span.resolution or points[-1].time, points[span.onset_index : span.end_index + 1]
    given = _given_between(record, onset, end)
    toci = [a for a in given if a.agent == TOCILIZUMAB]
    steroids = [a for a in given if a.role is MedicationRole.CORTICOSTEROID]
    others = [a for a in given if a.role is MedicationRole.ANTI_CYTOKINE and a.agent != TOCILIZUMAB]
    pressors = [a for a in record.administrations_with(*PRESSOR_ROLES) if _overlaps(a, onset, end)]
    fevers = [t for t in record.temperatures if onset <= t.time <= end and t.celsius >= config.fever_threshold_celsius]
    references = [
        *base.references,
        *evidence(onset),
        *evidence(base.max_grade_at),
        *(a.reference for a in (*toci, *steroids, *others, *pressors)),
    ]
    return replace(
        base,
        fever_onset=fevers[0].time if fevers else None,
        hypotension_onset=next((p.time for p in inside if p.hypotension), None),
        vasopressors_max=_most_at_once(pressors, onset, end),
        vasopressor_start=min((a.start for a in pressors), default=None),
        low_flow_oxygen_start=_first_support(inside, SupportLevel.LOW_FLOW),
        high_flow_oxygen_start=_first_support(inside, SupportLevel.HIGH_FLOW),
        positive_pressure_start=_first_support(inside, SupportLevel.POSITIVE_PRESSURE),
        tocilizumab_doses=len(toci),
        tocilizumab_first=toci[0].start if toci else None,
        corticosteroid_first=steroids[0].start if steroids else None,
        other_anticytokine=tuple(dict.fromkeys(a.agent for a in others)),
        references=tuple(dict.fromkeys(references)),
    )


def _episode_frame(
    record: PatientRecord, points: Sequence[_Point], span: _Span, *, system: str, number: int
) -> Episode:
    """What every episode has, CRS or ICANS: onset, worst grade, resolution, the therapy before it.

    ``references`` holds the therapy's only; each system adds its own evidence and treatments.
    """
    inside = points[span.onset_index : span.end_index + 1]
    onset = inside[0].time
    worst = max(inside, key=lambda p: (p.value or 0, -p.time.timestamp()))
    therapy = _therapy_before(record, onset)
    return Episode(
        system=system,
        number=number,
        onset=onset,
        max_grade=worst.value or 0,
        max_grade_at=worst.time,
        indeterminate=_worst_uncertain(inside, worst),
        resolved=span.resolution is not None,
        resolution=span.resolution,
        therapy=therapy.agent if therapy is not None else None,
        therapy_at=therapy.start if therapy is not None else None,
        onset_day=(onset.date() - therapy.start.date()).days if therapy is not None else None,
        references=(therapy.reference,) if therapy is not None else (),
    )


def _worst_uncertain(inside: Sequence[_Point], worst: _Point) -> bool:
    """The episode's worst grade is only "at least": a moment inside it is indeterminate with a
    proven minimum that reaches the worst (the truth there may be higher), or the worst itself is."""
    return any(not p.graded and (p.value or 0) >= (worst.value or 0) for p in inside)


def _evidence_references(grader: AstctGrader, known: dict[datetime, list[str]], moment: datetime) -> list[str]:
    """The met evidence at ``moment`` (``known``: moments already assessed; an episode's onset is
    often its worst moment)."""
    if moment not in known:
        known[moment] = [e.reference for e in grader.assess(moment).evidence if e.status is Status.MET]
    return known[moment]


def _therapy_before(record: PatientRecord, onset: datetime) -> Administration | None:
    given = [a for a in record.administrations_with(MedicationRole.CRS_THERAPY) if a.start <= onset]
    return max(given, key=lambda a: a.start) if given else None


def _given_between(record: PatientRecord, start: datetime, end: datetime) -> list[Administration]:
    return [a for a in record.administrations if start <= a.start <= end]


def _overlaps(admin: Administration, start: datetime, end: datetime) -> bool:
    return admin.start <= end and (admin.end is None or admin.end >= start)


def _most_at_once(pressors: Iterable[Administration], start: datetime, end: datetime) -> int:
    """The most vasopressors running at one moment within [start, end] (a sweep over starts/ends)."""
    events: list[tuple[datetime, int]] = []
    for admin in pressors:
        events.append((max(admin.start, start), 1))
        events.append((min(admin.end, end) if admin.end is not None else end, -1))
    running = best = 0
    for _, step in sorted(events, key=lambda e: (e[0], -e[1])):
        running += step
        best = max(best, running)
    return best


def _first_support(points: Iterable[_Point], level: SupportLevel) -> datetime | None:
    return next((p.time for p in points if p.support is level), None)


# -- ICANS -------------------------------------------------------------------------------------


def icans_episodes(
    record: PatientRecord,
    *,
    until: datetime,
    window: timedelta = ICANS_WINDOW,
    episode_config: EpisodeConfig | None = None,
) -> EpisodeCourse:
    """The ICANS episodes (ASTCT 2019) up to ``until``: the ICANS grade at every assessment time;
    resolution needs an assessment graded 0 in the sign-free stretch."""
    rules = episode_config or EpisodeConfig()
    view = record.icans_view()
    times = sorted({f.time for f in view.findings if f.time <= until})
    points: list[_Point] = []
    for moment in times:
        result = grade_icans(view, moment, window)
        value = result.grade if result.grade is not None else result.grade_at_least
        points.append(_Point(moment, value, result.grade is not None, (value or 0) >= 1, references=result.references))
    confirmations = [p.time for p in points if p.graded and p.value == 0]
    spans = _episode_spans(points, confirmations, until, rules)
    episodes: list[Episode] = []
    for number, span in enumerate(spans, start=1):
        base = _episode_frame(record, points, span, system=ICANS_SYSTEM, number=number)
        end = span.resolution or points[-1].time
        steroids = [a for a in _given_between(record, base.onset, end) if a.role is MedicationRole.CORTICOSTEROID]
        worst = next(p for p in points[span.onset_index : span.end_index + 1] if p.time == base.max_grade_at)
        onset_point = points[span.onset_index]
        references = [*base.references, *onset_point.references, *worst.references, *(a.reference for a in steroids)]
        episodes.append(
            replace(
                base,
                corticosteroid_first=steroids[0].start if steroids else None,
                references=tuple(dict.fromkeys(references)),
            )
        )
    decided = bool(points)
    missing = () if decided else ("no ICE, CAPD or other ICANS assessment charted",)
    return EpisodeCourse(ICANS_SYSTEM, tuple(episodes), decided, missing)
