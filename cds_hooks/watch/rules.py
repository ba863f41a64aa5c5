"""The alert rules: (what was alerted before, what the chart says now) -> (new state, alerts).

Pure (no I/O, no clock: the view carries its ``at``), so every rule is a row in a table test.

- ``grade-rise``: the current grade of a system (ASTCT CRS, ASTCT ICANS) rose above the value last
  alerted in the current episode; the first value >= 1 of an episode alerts. The alerted value
  belongs to an episode (its onset): it resets when that episode has resolved, so a recurrence
  alerts again, and it is kept while the episode goes on, so late-charted data that move the onset
  do not repeat an alert. An indeterminate grade counts as what the data prove at least
  (``grade_at_least``): a proven rise is never held back for want of the rest.
- ``stale-data``: a patient in an unresolved episode (CRS or ICANS) has had no temperature for
  longer than ``stale_after``, or, in an unresolved ICANS episode, no neurologic assessment for that
  long [choice]; once per gap (the gap is named by the last data time), so new data that go stale
  again alert again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

CRS = "ASTCT-2019"
ICANS = "ASTCT-2019-ICANS"
_NAMES = {CRS: "CRS (ASTCT 2019)", ICANS: "ICANS (ASTCT 2019)"}
_DATA = {CRS: "temperature", ICANS: "neurologic assessment (ICE, CAPD or other)"}


class AlertKind(StrEnum):
    GRADE_RISE = "grade-rise"
    STALE_DATA = "stale-data"


@dataclass(frozen=True)
class SystemView:
    """One system's state in the chart now, as the hook would grade it."""

    system: str
    grade: int | None
    """The current grade; None when indeterminate."""
    grade_at_least: int | None = None
    """What the data prove at least while the grade is indeterminate."""
    episode_onset: datetime | None = None
    """Onset of the episode in progress (unresolved); None when none is."""
    resolved: tuple[tuple[datetime, datetime], ...] = ()
    """(onset, resolution) of every resolved episode in the course."""
    references: tuple[str, ...] = ()
    """FHIR references the current grade rests on."""
    last_data_at: datetime | None = None
    """The last temperature (CRS) or neurologic assessment (ICANS)."""
    last_data_reference: str | None = None

    @property
    def value(self) -> int | None:
        """The grade, or what it is at least when indeterminate."""
        return self.grade if self.grade is not None else self.grade_at_least


@dataclass(frozen=True)
class PatientView:
    at: datetime
    crs: SystemView
    icans: SystemView | None = None
    """None when ICANS is not graded (``CRS_CDS_ICANS=false``)."""

    def systems(self) -> tuple[SystemView, ...]:
        return (self.crs,) if self.icans is None else (self.crs, self.icans)


@dataclass(frozen=True)
class SystemState:
    """What was alerted for one system of one patient."""

    episode_onset: datetime | None = None
    """Onset of the episode the alerted grade belongs to."""
    alerted_grade: int = 0
    """The last grade alerted in that episode (0: none yet)."""
    stale_gap: str | None = None
    """The data gap already alerted as stale (its last data time, or ``none@<onset>``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "episodeOnset": self.episode_onset.isoformat() if self.episode_onset else None,
            "alertedGrade": self.alerted_grade,
            "staleGap": self.stale_gap,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SystemState:
        onset = data.get("episodeOnset")
        return cls(
            episode_onset=datetime.fromisoformat(onset) if isinstance(onset, str) else None,
            alerted_grade=int(data.get("alertedGrade") or 0),
            stale_gap=data.get("staleGap") if isinstance(data.get("staleGap"), str) else None,
        )


@dataclass(frozen=True)
class PatientState:
    systems: Mapping[str, SystemState] = field(default_factory=dict)

    def of(self, system: str) -> SystemState:
        return self.systems.get(system, SystemState())

    def to_json(self) -> dict[str, Any]:
        return {"systems": {name: state.to_json() for name, state in sorted(self.systems.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> PatientState:
        systems = (data or {}).get("systems") or {}
        return cls({name: SystemState.from_json(value) for name, value in systems.items()})


@dataclass(frozen=True)
class AlertDraft:
    """An alert before it has an id and a patient (the worker adds both)."""

    kind: AlertKind
    system: str
    grade: int | None
    previous_grade: int | None
    at: datetime
    references: tuple[str, ...]
    summary: str
    indeterminate: bool
    event: str
    """What makes this alert one event (episode onset and grade, or the stale gap): its id derives
    from it, so the same event always has the same id."""


@dataclass(frozen=True)
class Decision:
    state: PatientState
    alerts: tuple[AlertDraft, ...]


@dataclass(frozen=True)
class AlertRules:
    stale_after: timedelta = timedelta(hours=8)


def decide(previous: PatientState, view: PatientView, rules: AlertRules) -> Decision:
    """The alerts the new view calls for, given what was alerted, and the state to keep."""
    states: dict[str, SystemState] = dict(previous.systems)
    alerts: list[AlertDraft] = []
    for system in view.systems():
        state, rise = _grade_rise(previous.of(system.system), system, view.at)
        states[system.system] = state
        if rise is not None:
            alerts.append(rise)
    for system in view.systems():
        state, stale = _stale(states[system.system], system, view, rules)
        states[system.system] = state
        if stale is not None:
            alerts.append(stale)
    return Decision(PatientState(states), tuple(alerts))


def _episode_ended(onset: datetime, resolved: tuple[tuple[datetime, datetime], ...]) -> bool:
    return any(start <= onset <= end for start, end in resolved)


def _grade_rise(state: SystemState, view: SystemView, at: datetime) -> tuple[SystemState, AlertDraft | None]:
    if state.episode_onset is not None and _episode_ended(state.episode_onset, view.resolved):
        state = SystemState()  # the alerted episode resolved: a recurrence alerts again
    value = view.value
    if view.episode_onset is None and (value is None or value < 1):
        return SystemState(), None  # no episode in progress: nothing alerted is still in force
    onset = state.episode_onset or view.episode_onset or at
    state = replace(state, episode_onset=onset)
    if value is None or value < 1 or value <= state.alerted_grade:
        return state, None
    previous = state.alerted_grade or None
    indeterminate = view.grade is None
    shown = f"at least {value} (indeterminate: data missing)" if indeterminate else str(value)
    was = f"last alerted {previous}" if previous else "first alert of this episode"
    summary = f"{_NAMES[view.system]} grade {shown}; {was}; episode since {_iso(onset)}."
    alert = AlertDraft(
        kind=AlertKind.GRADE_RISE,
        system=view.system,
        grade=value,
        previous_grade=previous,
        at=at,
        references=view.references,
        summary=summary,
        indeterminate=indeterminate,
        event=f"{_iso(onset)}|{value}",
    )
    return replace(state, alerted_grade=value), alert


def _stale(
    state: SystemState, view: SystemView, patient: PatientView, rules: AlertRules
) -> tuple[SystemState, AlertDraft | None]:
    """Temperatures go stale in any unresolved episode; neurologic assessments in an ICANS one."""
    if view.system == CRS:
        open_onsets = [s.episode_onset for s in patient.systems() if s.episode_onset is not None]
    else:
        open_onsets = [view.episode_onset] if view.episode_onset is not None else []
    if not open_onsets:
        return replace(state, stale_gap=None), None
    onset = min(open_onsets)
    since = view.last_data_at if view.last_data_at is not None else onset
    gap = _iso(view.last_data_at) if view.last_data_at is not None else f"none@{_iso(onset)}"
    if patient.at - since <= rules.stale_after or state.stale_gap == gap:
        return state, None
    hours = (patient.at - since).total_seconds() / 3600
    last = f"last at {_iso(view.last_data_at)}" if view.last_data_at is not None else "none since the episode began"
    summary = (
        f"No {_DATA[view.system]} charted for {hours:.1f} h ({last}) in an unresolved episode since {_iso(onset)}: "
        f"the {_NAMES[view.system]} grade may be out of date."
    )
    alert = AlertDraft(
        kind=AlertKind.STALE_DATA,
        system=view.system,
        grade=view.value,
        previous_grade=None,  # not a change of grade: the grade now, for context
        at=patient.at,
        references=(view.last_data_reference,) if view.last_data_reference else (),
        summary=summary,
        indeterminate=view.grade is None,
        event=gap,
    )
    return replace(state, stale_gap=gap), alert


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
