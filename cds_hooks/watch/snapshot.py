"""What the unit board shows of one watched patient, written by the watcher each cycle.

Pure: (the last snapshot, this cycle's view, the tocilizumab count) -> the new snapshot, a JSON
object stored beside the alert state (``watch_board``). Why a snapshot and not a re-read: the
board must answer at once for a whole ward from the service's own database, never by grading
every chart on each refresh, and it must show the same grades the alerts rest on.

The 24 h trend is the list of (time, CRS value, ICANS value) of the cycles of the last 24 hours;
a value is the grade, or what the data prove at least while the grade is indeterminate, with the
indeterminate flag kept so the board never draws "at least 1" as a plain 1. "Worst" is the
highest value of the episode in progress (carried across cycles while its onset is the same),
or of the last 24 h when no episode is in progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cds_hooks.advice.dosing import MAX_DOSES_TOTAL
from cds_hooks.watch.rules import PatientView, SystemView

TREND_WINDOW = timedelta(hours=24)
SNAPSHOT_VERSION = 1


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _trend(previous: Mapping[str, Any] | None, view: PatientView) -> list[dict[str, Any]]:
    """The previous points still within 24 h of ``view.at``, then this cycle's point."""
    kept: list[dict[str, Any]] = []
    for point in (previous or {}).get("trend", []):
        when = _parse(point.get("at")) if isinstance(point, dict) else None
        if when is not None and view.at - TREND_WINDOW <= when < view.at:
            kept.append(dict(point))
    kept.append(
        {
            "at": _iso(view.at),
            "crs": view.crs.value,
            "crsIndeterminate": view.crs.grade is None,
            "icans": view.icans.value if view.icans is not None else None,
            "icansIndeterminate": view.icans is not None and view.icans.grade is None,
        }
    )
    return kept


def _worst(system: SystemView, previous: Mapping[str, Any] | None, trend: list[dict[str, Any]], key: str) -> int | None:
    """Highest value of the episode in progress, else of the 24 h trend (None: nothing known)."""
    values: list[int] = [v for v in (p.get(key) for p in trend) if isinstance(v, int)]
    if system.episode_onset is not None:
        before = (previous or {}).get(key) or {}
        same_episode = _parse(before.get("episodeOnset")) == system.episode_onset
        carried = before.get("worst") if same_episode else None
        episode_values = [v for v in (system.value, carried) if isinstance(v, int)]
        return max(episode_values, default=None)
    return max(values, default=None)


def _system(
    system: SystemView | None, previous: Mapping[str, Any] | None, trend: list[dict[str, Any]], key: str
) -> dict[str, Any] | None:
    if system is None:
        return None
    return {
        "grade": system.grade,
        "gradeAtLeast": system.grade_at_least,
        "worst": _worst(system, previous, trend, key),
        "episodeOnset": _iso(system.episode_onset),
        "lastDataAt": _iso(system.last_data_at),
        "references": list(system.references),
    }


def board_snapshot(previous: Mapping[str, Any] | None, view: PatientView, *, tocilizumab_given: int) -> dict[str, Any]:
    """The board's row for one patient after this cycle (see the module docstring)."""
    trend = _trend(previous, view)
    return {
        "version": SNAPSHOT_VERSION,
        "at": _iso(view.at),
        "crs": _system(view.crs, previous, trend, "crs"),
        "icans": _system(view.icans, previous, trend, "icans"),
        "tocilizumab": {
            "given": tocilizumab_given,
            "left": max(MAX_DOSES_TOTAL - tocilizumab_given, 0),
            "limit": MAX_DOSES_TOTAL,
        },
        "trend": trend,
    }
