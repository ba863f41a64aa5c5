"""The monitoring panel on the CRS card while a CRS episode is active (issue 18 item 2).

ASCO 2021 (Santomasso, J Clin Oncol 2021;39:3978, Table 1) lists the labs to follow during CRS of
any grade; how often is not fixed by the sources: daily is this service's default [choice].
For each listed lab the mappings know (``asco: true`` in ``mappings/labs.yaml``): the latest
value and time, whether it is outside the Observation's reference range, and whether it is
overdue (never charted, or older than the interval). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.labs import LabTable
from cds_hooks.reading.record import LabResult, PatientRecord

OVERDUE_AFTER = timedelta(hours=24)
"""A lab is overdue when its latest value is older than this during an active episode [choice]."""
ASCO_UNMAPPED = ("magnesium", "phosphorus", "uric acid", "electrolytes (metabolic panel)")
"""ASCO-listed labs with no verified code in the mappings yet: named, never silently dropped."""


@dataclass(frozen=True, slots=True)
class PanelRow:
    lab: str
    display: str
    latest: LabResult | None
    flag: str | None
    """"high" / "low" against the Observation's reference range; None inside it or without one."""
    overdue: bool


@dataclass(frozen=True)
class MonitoringPanel:
    at: datetime
    overdue_after: timedelta
    rows: tuple[PanelRow, ...]

    @property
    def abnormal(self) -> tuple[PanelRow, ...]:
        return tuple(r for r in self.rows if r.flag is not None)

    @property
    def overdue(self) -> tuple[PanelRow, ...]:
        return tuple(r for r in self.rows if r.overdue)


def _flag(value: LabResult) -> str | None:
    if value.reference_high is not None and value.value > value.reference_high:
        return "high"
    if value.reference_low is not None and value.value < value.reference_low:
        return "low"
    return None


def monitoring_panel(
    record: PatientRecord, at: datetime, table: LabTable, overdue_after: timedelta = OVERDUE_AFTER
) -> MonitoringPanel:
    """The latest value of each ASCO lab up to ``at``, flagged and checked for being overdue."""
    rows: list[PanelRow] = []
    for lab in table.labs.values():
        if not lab.asco:
            continue
        charted = [r for r in record.labs if r.lab == lab.id and r.time <= at]
        latest = max(charted, key=lambda r: r.time) if charted else None
        overdue = latest is None or at - latest.time > overdue_after
        rows.append(PanelRow(lab.id, lab.display, latest, _flag(latest) if latest else None, overdue))
    return MonitoringPanel(at, overdue_after, tuple(rows))


def panel_lines(panel: MonitoringPanel) -> list[str]:
    """The panel in the card's markdown: abnormal and overdue first, then the table."""
    hours = f"{panel.overdue_after.total_seconds() / 3600:g} h"
    lines = ["", f"**Monitoring labs during CRS** (ASCO 2021; overdue after {hours} [choice])"]
    if panel.abnormal:
        lines.append("- Outside the reference range: " + ", ".join(f"{r.display} ({r.flag})" for r in panel.abnormal))
    if panel.overdue:
        lines.append("- Overdue or not charted: " + ", ".join(r.display for r in panel.overdue))
    charted = [row for row in panel.rows if row.latest is not None]
    if charted:  # a lab never charted is named once, in the line above, not as an empty row (issue 13)
        lines += ["", "| Lab | Latest | Time | Flag | Reference |", "|---|---|---|---|---|"]
    for row in charted:
        if row.latest is None:
            continue
        flag = ", ".join(f for f in (row.flag, "overdue" if row.overdue else None) if f)
        latest = row.latest
        lines.append(
            f"| {row.display} | {latest.value:g} {latest.unit} | {iso(latest.time)} | {flag} | {latest.reference} |"
        )
    lines.append("- Not mapped yet (no verified code): " + ", ".join(ASCO_UNMAPPED) + ".")
    return lines
