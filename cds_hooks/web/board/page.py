"""The unit board as HTML: one row per watched patient, a 24 h trend as inline SVG, no script.

Why this shape: it hangs on a ward screen (large type, reloads itself with
``<meta http-equiv="refresh">``) and is printed for handover (print CSS: black on white, no
reload). Nothing depends on colour alone: grades are numbers, an indeterminate grade says so in
words, stale data says "overdue". Every string from the store is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from html import escape
from typing import Any

from cds_hooks.advice.display import local_time

TREND_WIDTH = 240
TREND_HEIGHT = 48
TREND_HOURS = 24
_STYLE = """
body{font:17px/1.3 system-ui,Arial,sans-serif;margin:.8rem;color:#111;background:#fff}
h1{font-size:1.5rem;margin:.2rem 0} table{border-collapse:collapse;width:100%}
th,td{border:1px solid #777;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee} .g{font-size:1.4rem;font-weight:bold} .ind{font-weight:bold;text-decoration:underline}
.over{font-weight:bold;border:2px solid #900;padding:0 3px} .note{font-size:.9rem;color:#333}
svg{width:100%;max-width:240px;min-width:120px;height:auto;border:1px solid #999} .none{color:#333;font-style:italic}
@media print{body{font-size:11pt;margin:0} th{background:none} tr{break-inside:avoid}
.screen{display:none} .over{border:1px solid #000}}
"""


@dataclass(frozen=True)
class BoardRow:
    """One watched patient: a label the ward knows, its last snapshot (None: not graded yet), open alerts."""

    label: str
    snapshot: Mapping[str, Any] | None
    alerts: Sequence[Mapping[str, Any]] = ()


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def since(value: object, now: datetime) -> str:
    """'2 h 05 min ago' (or 'none charted'): how long since a charted time."""
    when = _parse(value)
    if when is None:
        return "none charted"
    minutes = max(int((now - when).total_seconds() // 60), 0)
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min ago" if hours else f"{rest} min ago"


def grade_text(system: Mapping[str, Any] | None) -> str:
    """The current grade as HTML; an indeterminate grade is never shown as a number alone."""
    if system is None:
        return '<span class="none">not graded</span>'
    grade = system.get("grade")
    if isinstance(grade, int):
        return f'<span class="g">{grade}</span>'
    at_least = system.get("gradeAtLeast")
    floor = f" (at least {at_least})" if isinstance(at_least, int) else ""
    return f'<span class="ind">indeterminate{floor}</span>'


def worst_text(system: Mapping[str, Any] | None) -> str:
    worst = None if system is None else system.get("worst")
    return f'<span class="g">{worst}</span>' if isinstance(worst, int) else '<span class="none">unknown</span>'


def trend_svg(points: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """CRS (solid) and ICANS (dashed) values over the last 24 h, grade 0 at the bottom, 4 at the top.

    An indeterminate point (what the data prove at least) is drawn as a hollow circle.
    """
    start = now - timedelta(hours=TREND_HOURS)

    def xy(point: Mapping[str, Any], value: int) -> tuple[float, float]:
        when = _parse(point.get("at")) or now
        fraction = min(max((when - start) / timedelta(hours=TREND_HOURS), 0.0), 1.0)
        return round(4 + fraction * (TREND_WIDTH - 8), 1), round(TREND_HEIGHT - 4 - value * (TREND_HEIGHT - 8) / 4, 1)

    shapes: list[str] = []
    labels: list[str] = []
    for key, dash, name in (("crs", "", "CRS"), ("icans", ' stroke-dasharray="4 3"', "ICANS")):
        coords: list[tuple[float, float]] = []
        for point in points:
            value = point.get(key)
            if not isinstance(value, int):
                continue
            x, y = xy(point, value)
            coords.append((x, y))
            fill = "#fff" if point.get(f"{key}Indeterminate") else "#000"
            shapes.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{fill}" stroke="#000"/>')
        if len(coords) > 1:
            path = " ".join(f"{x},{y}" for x, y in coords)
            shapes.append(f'<polyline points="{path}" fill="none" stroke="#000" stroke-width="1.5"{dash}/>')
        values = [p.get(key) for p in points if isinstance(p.get(key), int)]
        labels.append(f"{name} {'-'.join(str(v) for v in values) if values else 'none'}")
    title = escape("24 h trend: " + "; ".join(labels))
    grid = "".join(
        f'<line x1="0" x2="{TREND_WIDTH}" y1="{TREND_HEIGHT - 4 - g * (TREND_HEIGHT - 8) / 4}" '
        f'y2="{TREND_HEIGHT - 4 - g * (TREND_HEIGHT - 8) / 4}" stroke="#ccc"/>'
        for g in range(5)
    )
    return (
        f'<svg viewBox="0 0 {TREND_WIDTH} {TREND_HEIGHT}" role="img" aria-label="{title}">'
        f"<title>{title}</title>{grid}{''.join(shapes)}</svg>"
    )


def _data_age(value: object, now: datetime, overdue_after: timedelta, in_episode: bool) -> str:
    text = escape(since(value, now))
    when = _parse(value)
    overdue = in_episode and (when is None or now - when > overdue_after)
    return f'<span class="over">overdue: {text}</span>' if overdue else text


def _alerts_cell(alerts: Sequence[Mapping[str, Any]]) -> str:
    if not alerts:
        return '<span class="none">none</span>'
    items = "".join(f"<li>{escape(str(a.get('summary') or a.get('kind') or 'alert'))}</li>" for a in alerts)
    return f"<ul>{items}</ul>"


def _row(row: BoardRow, now: datetime, overdue_after: timedelta) -> str:
    label = escape(row.label)
    snap = row.snapshot
    if snap is None:
        return (
            f"<tr><th scope=row>{label}</th><td colspan=9 class=ind>Not graded yet by the watcher: "
            "no grade is known (this is not 'no CRS').</td></tr>"
        )
    crs = snap.get("crs")
    icans = snap.get("icans")
    crs_open = isinstance(crs, Mapping) and crs.get("episodeOnset") is not None
    icans_open = isinstance(icans, Mapping) and icans.get("episodeOnset") is not None
    toci = snap.get("tocilizumab") or {}
    trend = [p for p in snap.get("trend", []) if isinstance(p, Mapping)]
    graded = escape(since(snap.get("at"), now))
    return (
        f"<tr><th scope=row>{label}<div class=note>graded {graded}</div></th>"
        f"<td>{grade_text(crs)}</td><td>{worst_text(crs)}</td>"
        f"<td>{grade_text(icans)}</td><td>{worst_text(icans)}</td>"
        f"<td>{trend_svg(trend, now)}</td>"
        f"<td>{_data_age(crs.get('lastDataAt') if isinstance(crs, Mapping) else None, now, overdue_after, crs_open)}"
        f"</td><td>{_icans_age(icans, now, overdue_after, icans_open)}</td>"
        f"<td>{int(toci.get('given', 0))} given, {int(toci.get('left', 0))} left "
        f"<span class=note>(of {int(toci.get('limit', 0))} per CRS event)</span></td>"
        f"<td>{_alerts_cell(row.alerts)}</td></tr>"
    )


def _icans_age(icans: object, now: datetime, overdue_after: timedelta, in_episode: bool) -> str:
    if not isinstance(icans, Mapping):
        return '<span class="none">ICANS not graded</span>'
    return _data_age(icans.get("lastDataAt"), now, overdue_after, in_episode)


def render_board(
    rows: Sequence[BoardRow],
    *,
    now: datetime,
    refresh_s: int,
    overdue_after: timedelta,
    unlisted: int = 0,
    zone: tzinfo = UTC,
) -> str:
    """The whole page; ``unlisted`` counts watched patients this service cannot name (not shown).
    ``zone``: the site clock (``CRS_CDS_SITE_TIMEZONE``), so "As of" reads as the ward's clocks do."""
    body = "".join(_row(r, now, overdue_after) for r in rows) or (
        "<tr><td colspan=10 class=ind>No watched patient has been graded yet: is crs-cds watch running?</td></tr>"
    )
    stamp = escape(local_time(now, zone))
    note = (
        f"<p class=ind>{unlisted} more watched patient(s) are graded but not named in this service's "
        "CRS_CDS_WATCH_PATIENTS: they are not shown.</p>"
        if unlisted
        else ""
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{int(refresh_s)}"><title>CRS / ICANS unit board</title>
<style>{_STYLE}</style></head><body>
<h1>CRS / ICANS unit board</h1>
<p class=note>As of {stamp}. Grades ASTCT 2019 as the watcher last graded them; worst = highest in the
episode in progress (else the last 24 h). Trend: CRS solid, ICANS dashed, hollow = indeterminate (at least).
<span class=screen>This page reloads every {int(refresh_s)} s.</span></p>{note}
<table><thead><tr><th scope=col>Patient</th><th scope=col>CRS now</th><th scope=col>CRS worst</th>
<th scope=col>ICANS now</th><th scope=col>ICANS worst</th><th scope=col>24 h trend</th>
<th scope=col>Last temperature</th><th scope=col>Last neuro assessment</th>
<th scope=col>Tocilizumab</th><th scope=col>Open alerts</th></tr></thead>
<tbody>{body}</tbody></table></body></html>"""
