"""The SMART app's page: the CRS course as server-rendered HTML with inline SVG tracks.

Why this shape: a ward PC may be old and locked down, so there is no script, no web font and no
external asset (the Content-Security-Policy forbids them); it prints on one page. Nothing depends
on colour alone: every grade band carries its number and a hatch pattern, thresholds are labelled
lines, vasopressin bars are hatched and named, therapy markers have distinct shapes and text.
Every string from the record or a server is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from html import escape
from typing import Any

from cds_hooks.advice.display import display_quantity, display_text, display_unit, local_time, site_zone
from cds_hooks.pipeline.evaluate import Evaluation

WIDTH = 1000
LEFT = 170
RIGHT = 110
TRACK = 90
SUPPORT_LEVELS = ("room air", "low flow", "high flow", "positive pressure")
_STYLE = """
body{font:14px/1.4 system-ui,Arial,sans-serif;margin:1rem;color:#111;max-width:1040px}
h1{font-size:1.3rem;margin:.2rem 0} h2{font-size:1.05rem;margin:1rem 0 .3rem}
.grades{display:flex;gap:2rem;margin:.5rem 0} .grades div{border:2px solid #111;padding:.3rem .8rem}
.grades strong{font-size:1.6rem} table{border-collapse:collapse;width:100%} td,th{border:1px solid #888;
padding:2px 6px;text-align:left;vertical-align:top} svg{width:100%;height:auto;border:1px solid #888}
.note{color:#333;font-size:.9rem} .err{border:2px solid #900;padding:1rem}
@media print{body{margin:0;max-width:none} a{color:#000;text-decoration:none} svg{break-inside:avoid}}
"""
_PATTERNS = """<defs>
<pattern id="p0" width="8" height="8" patternUnits="userSpaceOnUse"><rect width="8" height="8" fill="#fff"/></pattern>
<pattern id="p1" width="8" height="8" patternUnits="userSpaceOnUse"><rect width="8" height="8" fill="#fff3c4"/>
<path d="M0 8L8 0" stroke="#555" stroke-width="1"/></pattern>
<pattern id="p2" width="8" height="8" patternUnits="userSpaceOnUse"><rect width="8" height="8" fill="#ffd08a"/>
<path d="M0 8L8 0M0 0L8 8" stroke="#444" stroke-width="1"/></pattern>
<pattern id="p3" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="#ff9a7a"/>
<circle cx="3" cy="3" r="1.6" fill="#222"/></pattern>
<pattern id="p4" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="#e0524f"/>
<path d="M0 3H6M3 0V6" stroke="#000" stroke-width="1.5"/></pattern>
<pattern id="pu" width="8" height="8" patternUnits="userSpaceOnUse"><rect width="8" height="8" fill="#ddd"/>
<path d="M0 4H8" stroke="#777" stroke-width="1" stroke-dasharray="2 2"/></pattern>
<pattern id="vaso" width="6" height="6" patternUnits="userSpaceOnUse"><rect width="6" height="6" fill="#fff"/>
<path d="M0 6L6 0" stroke="#000" stroke-width="1.5"/></pattern>
</defs>"""


def _local(value: str, zone: tzinfo) -> str:
    """A course time (UTC ISO) as the ward clock shows it."""
    return local_time(_t(value), zone)


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _grade_text(grade: int | None, at_least: int | None) -> str:
    if grade is not None:
        return f"Grade {grade}"
    if at_least is not None:
        return f"Indeterminate (at least grade {at_least})"
    return "Indeterminate"


class _Axis:
    """Maps times in (start, end] to x positions shared by every track, so they line up."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 1.0)

    def x(self, when: datetime) -> float:
        ratio = (when - self.start).total_seconds() / self.span
        return round(LEFT + max(0.0, min(1.0, ratio)) * (WIDTH - LEFT - RIGHT), 1)


def _track(top: float, title: str, body: Sequence[str], note: str = "") -> str:
    label = f'<text x="8" y="{top + 16}" font-weight="bold">{escape(title)}</text>'
    if note:
        label += f'<text x="8" y="{top + 32}" font-size="11">{escape(note)}</text>'
    frame = (
        f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{TRACK - 10}" fill="none" stroke="#bbb"/>'
    )
    return f'<g class="track" aria-label="{escape(title)}">{frame}{label}{"".join(body)}</g>'


def _scale(value: float, low: float, high: float, top: float) -> float:
    ratio = (value - low) / (high - low) if high > low else 0.5
    return round(top + (TRACK - 14) - max(0.0, min(1.0, ratio)) * (TRACK - 22), 1)


def _timeline(course: dict[str, Any], zone: tzinfo) -> str:
    start, end = _t(course["windowStart"]), _t(course["at"])
    axis = _Axis(start, end)
    parts: list[str] = []
    top = 10.0

    # ASTCT grade band: each grade from its data time to the next one.
    grades = course.get("grades", [])
    band: list[str] = []
    for i, point in enumerate(grades):
        x0 = axis.x(_t(point["time"]))
        x1 = axis.x(_t(grades[i + 1]["time"])) if i + 1 < len(grades) else axis.x(end)
        grade = point.get("grade")
        fill = f"url(#p{grade})" if grade is not None else "url(#pu)"
        text = f"G{grade}" if grade is not None else f"≥{point.get('atLeast') or 0}?"
        band.append(
            f'<rect x="{x0}" y="{top}" width="{max(x1 - x0, 1)}" height="{TRACK - 10}" fill="{fill}" stroke="#333">'
            f"<title>{escape(_local(point['time'], zone))}: "
            f"{escape(_grade_text(grade, point.get('atLeast')))}</title></rect>"
        )
        if x1 - x0 >= 22:
            band.append(
                f'<text x="{x0 + 3}" y="{top + 45}" font-weight="bold" paint-order="stroke" stroke="#fff" '
                f'stroke-width="3">{escape(text)}</text>'
            )
    parts.append(_track(top, "ASTCT grade", band, "G = grade, ? = indeterminate"))
    top += TRACK

    # Temperature with the fever line.
    temps = course.get("temperatures", [])
    threshold = float(course.get("feverThresholdCelsius", 38.0))
    values = [float(p["celsius"]) for p in temps] + [threshold]
    low, high = min(35.0, *values), max(41.0, *values)
    y_line = _scale(threshold, low, high, top)
    body = [
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y_line}" y2="{y_line}" stroke="#000" stroke-dasharray="6 4"/>',
        f'<text x="{WIDTH - RIGHT + 4}" y="{y_line + 4}" font-size="11">fever {threshold:.1f} °C</text>',
    ]
    points = [(axis.x(_t(p["time"])), _scale(float(p["celsius"]), low, high, top), p) for p in temps]
    if len(points) > 1:
        body.append('<polyline fill="none" stroke="#333" points="' + " ".join(f"{x},{y}" for x, y, _ in points) + '"/>')
    for x, y, p in points:
        shape = "#000" if p.get("fever") else "#fff"
        body.append(
            f'<circle cx="{x}" cy="{y}" r="4" fill="{shape}" stroke="#000"><title>{escape(_local(p["time"], zone))} '
            f"{float(p['celsius']):g} °C</title></circle>"
            f'<text x="{x + 5}" y="{y - 5}" font-size="10">{float(p["celsius"]):g}</text>'
        )
    parts.append(_track(top, "Temperature (°C)", body, "filled = fever"))
    top += TRACK

    # Blood pressure: systolic (circle) and mean (square), with the thresholds in force.
    pressures = course.get("pressures", [])
    all_values = [float(v) for p in pressures for v in (p.get("systolic"), p.get("mean")) if v is not None]
    limits = [float(p["systolicThreshold"]) for p in pressures] + [
        float(p["meanThreshold"]) for p in pressures if p.get("meanThreshold") is not None
    ]
    low, high = min([40.0, *all_values, *limits]), max([140.0, *all_values, *limits])
    body = []
    systolic_limit = max((float(p["systolicThreshold"]) for p in pressures), default=None)
    mean_limit = max((float(p["meanThreshold"]) for p in pressures if p.get("meanThreshold")), default=None)
    for limit, name, dash in ((systolic_limit, "systolic limit", "6 4"), (mean_limit, "MAP limit", "2 3")):
        if limit is None:
            continue
        y = _scale(limit, low, high, top)
        body.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#000" stroke-dasharray="{dash}"/>'
            f'<text x="{WIDTH - RIGHT + 4}" y="{y + 4}" font-size="11">{name} {limit:g}</text>'
        )
    for p in pressures:
        x = axis.x(_t(p["time"]))
        if p.get("systolic") is not None:
            y = _scale(float(p["systolic"]), low, high, top)
            fill = "#000" if p.get("low") else "#fff"
            body.append(
                f'<circle cx="{x}" cy="{y}" r="4" fill="{fill}" stroke="#000"><title>systolic {p["systolic"]:g}'
                f"</title></circle>"
                f'<text x="{x + 5}" y="{y - 4}" font-size="10">{float(p["systolic"]):g}</text>'
            )
        if p.get("mean") is not None:
            y = _scale(float(p["mean"]), low, high, top)
            body.append(
                f'<rect x="{x - 3.5}" y="{y - 3.5}" width="7" height="7" fill="#fff" stroke="#000">'
                f"<title>mean {p['mean']:g}</title></rect>"
            )
    parts.append(_track(top, "Blood pressure (mmHg)", body, "● systolic ■ mean; filled = low"))
    top += TRACK

    # Oxygen support as a step line over the four levels.
    oxygen = course.get("oxygen", [])
    body = []
    step = (TRACK - 22) / 3
    for i, name in enumerate(SUPPORT_LEVELS):
        y = round(top + TRACK - 14 - i * step, 1)
        body.append(f'<text x="{LEFT + 3}" y="{y - 2}" font-size="9" fill="#555">{escape(name)}</text>')
    for i, p in enumerate(oxygen):
        x0 = axis.x(_t(p["time"]))
        x1 = axis.x(_t(oxygen[i + 1]["time"])) if i + 1 < len(oxygen) else axis.x(end)
        level = SUPPORT_LEVELS.index(p["support"]) if p["support"] in SUPPORT_LEVELS else 0
        y = round(top + TRACK - 14 - level * step, 1)
        body.append(f'<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#000" stroke-width="3"/>')
        flow = f" {p['flowLMin']:g} L/min" if p.get("flowLMin") is not None else ""
        body.append(f'<text x="{x0 + 2}" y="{y - 4}" font-size="10">{escape(p["support"] + flow)}</text>')
    parts.append(_track(top, "Oxygen support", body, "level and flow"))
    top += TRACK

    # Vasopressors: one bar per administration; vasopressin hatched and named.
    pressors = course.get("vasopressors", [])
    body = []
    lane = (TRACK - 20) / max(len(pressors), 1)
    for i, p in enumerate(pressors):
        x0 = axis.x(_t(p["start"]))
        x1 = axis.x(_t(p["end"])) if p.get("end") else axis.x(end)
        y = round(top + 4 + i * lane, 1)
        fill = "url(#vaso)" if p.get("vasopressin") else "#888"
        name = p["agent"] + (" (vasopressin)" if p.get("vasopressin") else "")
        name += " running" if p.get("running") else ""
        body.append(
            f'<rect x="{x0}" y="{y}" width="{max(x1 - x0, 2)}" height="{max(lane - 4, 6)}" '
            f'fill="{fill}" stroke="#000"/>'
            f'<text x="{x0 + 3}" y="{y + min(lane - 6, 12)}" font-size="10" paint-order="stroke" stroke="#fff" '
            f'stroke-width="3">{escape(name)}</text>'
        )
    if not pressors:
        body.append(f'<text x="{LEFT + 6}" y="{top + 40}" font-size="11">none</text>')
    parts.append(_track(top, "Vasopressors", body, "hatched = vasopressin"))
    top += TRACK

    # Therapy markers: a distinct shape and a label per kind.
    shapes = {"anti-cytokine": "▲", "corticosteroid": "◆", "antipyretic": "●", "crs-therapy": "★"}
    body = []
    for i, p in enumerate(course.get("therapies", [])):
        x = axis.x(_t(p["time"]))
        y = top + 24 + (i % 3) * 20
        dose = f" {p['doseMg']:g} mg" if p.get("doseMg") is not None else ""
        body.append(
            f'<line x1="{x}" x2="{x}" y1="{top}" y2="{top + TRACK - 10}" stroke="#999"/>'
            f'<text x="{x}" y="{y}" font-size="11"><tspan font-size="13">{shapes.get(p["kind"], "■")}</tspan> '
            f"{escape(p['agent'] + dose)}</text>"
        )
    parts.append(_track(top, "Therapies", body, "▲ anti-IL-6 ◆ steroid ● antipyretic ★ CAR-T"))
    top += TRACK

    # Time axis, ticks every 6 hours from the window start.
    ticks: list[str] = []
    hours = int(axis.span // 3600)
    every = 6 if hours <= 36 else 12 if hours <= 96 else 24
    for h in range(0, hours + 1, every):
        when = start.timestamp() + h * 3600
        x = axis.x(datetime.fromtimestamp(when, tz=start.tzinfo))
        label = datetime.fromtimestamp(when, tz=zone).strftime("%d %b %H:%M")
        ticks.append(
            f'<line x1="{x}" x2="{x}" y1="10" y2="{top}" stroke="#eee"/>'
            f'<text x="{x}" y="{top + 14}" font-size="10" text-anchor="middle">{label}</text>'
        )
    height = top + 24
    return (
        f'<svg role="img" aria-label="CRS course timeline" viewBox="0 0 {WIDTH} {height}" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="Arial,sans-serif">{_PATTERNS}{"".join(ticks)}'
        f"{''.join(parts)}</svg>"
    )


def _when(value: str, zone: tzinfo) -> str:
    """A short time for a trend cell, on the site clock like every other time on the page."""
    return f"{_t(value).astimezone(zone):%d %b %H:%M}"


def _lab_sections(document: dict[str, Any], zone: tzinfo) -> str:
    """Lab trends (oldest to newest, with the range of the latest) and the lab scores (issue 18),
    as tables: nothing when the course carries none."""
    out = ""
    labs: dict[str, list[dict[str, Any]]] = document.get("labs", {})
    if labs:
        rows = []
        for lab, points in labs.items():
            trend = " → ".join(f"{p['value']:g} ({_when(p['time'], zone)})" for p in points)
            last = points[-1]
            low, high = last.get("referenceLow"), last.get("referenceHigh")
            normal = (
                ""
                if low is None and high is None
                else f"{'' if low is None else f'{low:g}'}–{'' if high is None else f'{high:g}'}"
            )
            rows.append(
                f"<tr><td>{escape(lab)}</td><td>{escape(trend)} {escape(display_unit(last['unit']))}</td>"
                f"<td>{escape(normal)}</td><td>{escape(last['reference'])}</td></tr>"
            )
        out += (
            '<h2>Laboratory trends</h2><table id="lab-trends"><tr><th>Lab</th><th>Values (oldest to newest)</th>'
            f"<th>Range</th><th>Latest source</th></tr>{''.join(rows)}</table>"
        )
    scores: list[dict[str, Any]] = document.get("scores", [])
    if scores:
        rows = []
        for score in scores:
            shown = score.get("score", score.get("value"))
            value = f"{shown:g}" if shown is not None else f"at least {score.get('scoreAtLeast', 0):g}"
            rows.append(
                f"<tr><td>{escape(score['system'])}</td><td>{escape(score['status'])}</td><td>{escape(value)}</td>"
                f"<td>{escape(score.get('interpretation', ''))}</td></tr>"
            )
        out += (
            '<h2>Lab scores (information, not a diagnosis)</h2><table id="lab-scores"><tr><th>Score</th>'
            f"<th>Status</th><th>Value</th><th>Reading</th></tr>{''.join(rows)}</table>"
        )
    return out


def render_page(document: dict[str, Any], evaluation: Evaluation, site_timezone: str | None = None) -> str:
    """The whole page for one patient: grades, timeline, evidence, missing data, other systems.
    Times in ``site_timezone`` (``CRS_CDS_SITE_TIMEZONE``, as on the cards); UTC when unset."""
    zone = site_zone(site_timezone)
    course = document["course"]
    primary = evaluation.primary
    current = _grade_text(primary.grade, primary.grade_at_least)
    worst = "—" if primary.worst_grade is None else f"Grade {primary.worst_grade}"
    worst_at = f" at {local_time(primary.worst_grade_at, zone)}" if primary.worst_grade_at else ""
    evidence_rows = "".join(
        f"<tr><td>{escape(e.criterion)}</td><td>{escape(e.status.value)}</td>"
        f"<td>{escape(_value(e.value, e.unit, e.detail))}</td>"
        f"<td>{escape(display_text(e.threshold or ''))}</td>"
        f"<td>{escape(local_time(e.time, zone) if e.time else '')}</td>"
        f"<td>{escape(e.reference)}</td></tr>"
        for e in primary.evidence
    )
    missing = "".join(f"<li>{escape(display_text(m, zone))}</li>" for m in primary.missing) or "<li>nothing</li>"
    others = "".join(
        f"<tr><td>{escape(r.system)}</td><td>{escape(_grade_text(r.grade, r.grade_at_least))}</td>"
        f"<td>{escape('—' if r.worst_grade is None else str(r.worst_grade))}</td></tr>"
        for r in evaluation.results[1:]
    )
    other_section = (
        f"<h2>Other grading systems</h2><table><tr><th>System</th><th>Current</th><th>Worst</th></tr>{others}</table>"
        if others
        else ""
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>CRS course</title>
<style>{_STYLE}</style></head><body>
<h1>Cytokine release syndrome — {escape(primary.system)}</h1>
<p class="note">{escape(document["patient"])} · evaluated {escape(_local(document["at"], zone))} · look-back from
{escape(_local(course["windowStart"], zone))}</p>
<div class="grades"><div>Current: <strong id="current-grade">{escape(current)}</strong></div>
<div>Worst in window: <strong id="worst-grade">{escape(worst)}</strong>{escape(worst_at)}</div></div>
<h2>Course</h2>{_timeline(course, zone)}
<h2>Evidence for the current grade</h2>
<table><tr><th>Criterion</th><th>Status</th><th>Value</th><th>Threshold</th><th>Time</th><th>Source</th></tr>
{evidence_rows}</table>
<h2>Missing data</h2><ul id="missing">{missing}</ul>
{other_section}
{_lab_sections(document, zone)}
<p class="note">Decision support only: check against the chart. Grading rules: ASTCT 2019 consensus.</p>
</body></html>"""


def _value(value: float | str | None, unit: str | None, detail: str | None) -> str:
    if isinstance(value, float):
        return display_quantity(value, unit, detail)
    return "" if value is None else str(value)


def error_page(title: str, detail: str) -> str:
    """A short, escaped page: what went wrong and what to do, never a secret or a trace."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>{_STYLE}</style></head><body><div class="err" role="alert"><h1>{escape(title)}</h1>
<p>{escape(detail)}</p></div></body></html>"""
