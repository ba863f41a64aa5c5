"""CRS episodes: onset, resolution, worst grade and treatments, as registries and trials report them.

Clinical reference section 5 (CIBMTR form 4100, EBMT day-100 form), choices configurable and
shown in the output:

- **Onset**: the first data time at which the ASTCT grade is >= 1 (or at least 1): the first
  fever reading, or the first sign while fever is masked. The CRS-causing therapy given last
  before it, and the day of onset counted from it (infusion day 0).
- **Sign end times**: a fever at its reading; hypotension at its low reading; a vasopressor at
  the end of its administration (still running: no end); oxygen support at the first room-air
  record after it, the end of its period, or, with neither, the oxygen recency window after it.
- **Resolution**: the latest sign end time, once 24 h have followed with data (at least one
  temperature) and no sign. Without those 24 h of data the episode is unresolved: never
  "resolved" for want of data. A sign after a resolution starts a new episode.
- **Worst grade**: the highest grade between onset and resolution (or ``until``), first time.
- **Treatments** from onset until the 24 h after resolution ended [choice: the treatment of the
  last sign comes after it]: tocilizumab doses, the first corticosteroid, other anti-cytokine agents.

Pure: no I/O and no clock (the caller passes ``until``). Reused by the order checks (tocilizumab
doses per CRS event) and meant for registry exports; ICANS episodes are not built here yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_hooks.grading.astct import PRESSOR_ROLES, AstctGrader, systolic_threshold
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import Status
from cds_hooks.reading.fhir_time import age_in_years
from cds_hooks.reading.record import Administration, OxygenRecord, PatientRecord
from cds_hooks.reading.terminology import MedicationRole

RESOLUTION_AFTER = timedelta(hours=24)
"""[choice] An episode resolves once 24 h with data and no sign have followed its last sign."""


@dataclass(frozen=True, slots=True)
class Sign:
    """One CRS sign over the time it held; ``end`` None while it still holds (a running pressor)."""

    kind: str
    """``fever``, ``hypotension``, ``vasopressor`` or ``oxygen``."""
    start: datetime
    end: datetime | None
    reference: str


@dataclass(frozen=True)
class Episode:
    """One CRS episode with what a registry asks for, each fact with its FHIR references."""

    onset: datetime
    onset_references: tuple[str, ...]
    resolved: bool
    resolution: datetime | None
    """The latest sign end time, when resolved; None while unresolved."""
    max_grade: int
    max_grade_at: datetime
    max_grade_indeterminate: bool
    """The worst grade is a floor ("at least") at that time, not a decided grade."""
    max_grade_references: tuple[str, ...]
    signs: tuple[Sign, ...]
    therapy: Administration | None
    """The CRS-causing therapy given last before onset, if charted."""
    tocilizumab_doses: tuple[Administration, ...]
    first_corticosteroid: Administration | None
    other_anti_cytokines: tuple[Administration, ...]
    unresolved_reason: str | None = None

    @property
    def onset_day(self) -> int | None:
        """Days from the CRS-causing therapy to onset (infusion day 0)."""
        if self.therapy is None:
            return None
        return (self.onset.date() - self.therapy.start.date()).days

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.onset_references, *self.max_grade_references)))


def signs(record: PatientRecord, config: GradingConfig, *, until: datetime) -> list[Sign]:
    """Every CRS sign charted by ``until``, with its end time (section 5 "sign end times")."""
    out: list[Sign] = [
        Sign("fever", t.time, t.time, t.reference)
        for t in record.temperatures
        if t.time <= until and t.celsius >= config.fever_threshold_celsius
    ]
    for bp in record.blood_pressures:
        if bp.time > until:
            continue
        age = age_in_years(record.birth_date, bp.time) if record.birth_date else None
        low_systolic = bp.systolic_mmhg is not None and bp.systolic_mmhg < systolic_threshold(age, config)
        low_mean = (
            (age is None or age > 10)
            and bp.mean_mmhg is not None
            and bp.mean_mmhg < config.mean_arterial_threshold_mmhg
        )
        if low_systolic or low_mean:
            out.append(Sign("hypotension", bp.time, bp.time, bp.reference))
    for admin in record.administrations_with(*PRESSOR_ROLES):
        if admin.start <= until:
            out.append(Sign("vasopressor", admin.start, admin.end, admin.reference))
    room_air = [o.time for o in record.oxygen if o.room_air]
    for oxygen in record.oxygen:
        if oxygen.is_support and oxygen.time <= until:
            out.append(Sign("oxygen", oxygen.time, _oxygen_end(oxygen, room_air, config), oxygen.reference))
    return sorted(out, key=lambda s: s.start)


def _oxygen_end(record: OxygenRecord, room_air: Sequence[datetime], config: GradingConfig) -> datetime | None:
    later_room_air = min((t for t in room_air if t > record.time), default=None)
    if record.is_period:
        end = record.period_end
        if later_room_air is not None and (end is None or later_room_air < end):
            return later_room_air
        return end
    recency_end = record.time + config.oxygen_recency
    if later_room_air is not None and later_room_air < recency_end:
        return later_room_air
    return recency_end


def episodes(
    record: PatientRecord,
    config: GradingConfig,
    *,
    until: datetime,
    resolution_after: timedelta = RESOLUTION_AFTER,
) -> list[Episode]:
    """The CRS episodes charted by ``until``, oldest first (see the module docstring)."""
    grader = AstctGrader(record, config)
    all_signs = signs(record, config, until=until)
    temperature_times = [t.time for t in record.temperatures if t.time <= until]
    times = _data_times(record, until)
    found: list[Episode] = []
    not_before: datetime | None = None
    for moment in times:
        if not_before is not None and moment <= not_before:
            continue
        point = grader.assess(moment, collect=False)
        level = point.worst_value
        if level is None or level < 1:
            continue
        episode = _episode(
            grader,
            moment,
            all_signs=all_signs,
            temperature_times=temperature_times,
            times=times,
            until=until,
            resolution_after=resolution_after,
        )
        found.append(episode)
        if episode.resolution is None:
            break  # unresolved: every later sign belongs to it
        not_before = episode.resolution + resolution_after
    return found


def _data_times(record: PatientRecord, until: datetime) -> list[datetime]:
    moments = [
        *(t.time for t in record.temperatures),
        *(b.time for b in record.blood_pressures),
        *(o.time for o in record.oxygen),
        *(a.start for a in record.administrations),
        *(a.end for a in record.administrations if a.end is not None),
        *(c.onset for c in record.conditions if c.onset is not None),
    ]
    return sorted({m for m in moments if m <= until})


def _has_temperature(times: Sequence[datetime], after: datetime, through: datetime) -> bool:
    return any(after < t <= through for t in times)


def _episode(
    grader: AstctGrader,
    onset: datetime,
    *,
    all_signs: Sequence[Sign],
    temperature_times: Sequence[datetime],
    times: Sequence[datetime],
    until: datetime,
    resolution_after: timedelta,
) -> Episode:
    record = grader.record
    member: list[Sign] = []
    last_end: datetime | None = onset
    for sign in all_signs:
        if sign.end is not None and sign.end < onset:
            continue  # over before the episode began
        if last_end is None:
            member.append(sign)  # an open-ended sign (a running pressor) holds the episode open
            continue
        quiet_day_with_data = _has_temperature(temperature_times, last_end, last_end + resolution_after)
        if sign.start > last_end + resolution_after and quiet_day_with_data:
            break  # resolved before this sign: it belongs to a later episode
        member.append(sign)
        last_end = None if sign.end is None else max(last_end, sign.end)
    resolved = (
        last_end is not None
        and until >= last_end + resolution_after
        and _has_temperature(temperature_times, last_end, last_end + resolution_after)
    )
    resolution = last_end if resolved else None
    reason = None
    if not resolved:
        if last_end is None:
            reason = "a sign still holds (a running vasopressor or an open oxygen period)"
        elif until < last_end + resolution_after:
            reason = f"less than {resolution_after.total_seconds() / 3600:g} h since the last sign"
        else:
            reason = f"no temperature charted in the {resolution_after.total_seconds() / 3600:g} h after the last sign"
    end = resolution if resolution is not None else until
    worst_at, worst_level, worst_indeterminate = onset, 0, False
    for moment in (t for t in times if onset <= t <= end):
        point = grader.assess(moment, collect=False)
        level = point.worst_value
        if level is not None and level > worst_level:
            worst_at, worst_level, worst_indeterminate = moment, level, point.grade is None
    onset_point = grader.assess(onset)
    worst_point = grader.assess(worst_at)
    # Treatment for the last sign comes after it: count what was given until the quiet 24 h ended
    # (no later episode can begin before then).
    treated_until = resolution + resolution_after if resolution is not None else until
    in_episode = [a for a in record.administrations if onset <= a.start <= treated_until]
    therapies = [a for a in record.administrations if a.role is MedicationRole.CRS_THERAPY and a.start <= onset]
    return Episode(
        onset=onset,
        onset_references=tuple(dict.fromkeys(e.reference for e in onset_point.evidence if e.status is Status.MET)),
        resolved=resolved,
        resolution=resolution,
        max_grade=worst_level,
        max_grade_at=worst_at,
        max_grade_indeterminate=worst_indeterminate,
        max_grade_references=tuple(dict.fromkeys(e.reference for e in worst_point.evidence if e.status is Status.MET)),
        signs=tuple(member),
        therapy=therapies[-1] if therapies else None,
        tocilizumab_doses=tuple(a for a in in_episode if a.agent == "tocilizumab"),
        first_corticosteroid=next((a for a in in_episode if a.role is MedicationRole.CORTICOSTEROID), None),
        other_anti_cytokines=tuple(
            a for a in in_episode if a.role is MedicationRole.ANTI_CYTOKINE and a.agent != "tocilizumab"
        ),
        unresolved_reason=reason,
    )
