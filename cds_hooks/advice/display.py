"""What a clinician reads on a card: display units and site-local times, in one place.

The grading keeps UCUM codes (``Cel``, ``mm[Hg]``) and UTC instants: they are exact and they stay
in the machine-readable RESULT extension. A nurse reads °C, mmHg and the ward clock, so every card
(CRS, ICANS, order checks) renders quantities and times through these helpers only. The site zone
is ``CRS_CDS_SITE_TIMEZONE``, the one setting used wherever a local day or time matters; without
it, times are shown in UTC and say so.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

DISPLAY_UNITS: dict[str, str] = {
    "Cel": "°C",
    "[degF]": "°F",
    "mm[Hg]": "mmHg",
    "L/min": "L/min",
    "l/min": "L/min",
    "%": "%",
    "kg": "kg",
    "[lb_av]": "lb",
    "mg": "mg",
    "mg/kg": "mg/kg",
    "/min": "/min",
    "10*9/L": "×10⁹/L",
    "{INR}": "",
}
"""UCUM code -> what a clinician reads; a code not listed is shown as charted."""

_UCUM_IN_TEXT = re.compile(r"(?<=\d) (Cel|\[degF\]|mm\[Hg\]|l/min|\[lb_av\]|10\*9/L|\{INR\})(?![\w\[])")
"""A UCUM code right after a number in prose (``38.0 Cel``, ``< 90 mm[Hg]``)."""

_UTC_INSTANT = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z\b")
"""A UTC instant as ``fhir_time.iso`` writes it."""

_CHARTED_AS = re.compile(r"charted as (?P<value>-?\d+(?:\.\d+)?) (?P<unit>\S+)")


def display_unit(code: str | None) -> str:
    """``mm[Hg]`` -> ``mmHg``; unknown codes unchanged, ``None`` -> empty."""
    if not code:
        return ""
    return DISPLAY_UNITS.get(code, code)


def display_text(text: str, zone: tzinfo | None = None) -> str:
    """Prose with UCUM codes after numbers replaced by display units (choices, reasons, gaps) and,
    given the site zone, UTC instants (``2025-03-04T08:00:00Z``) on the site clock: the graders
    write UTC, which the RESULT extension keeps; the card shows the ward's time."""
    shown = _UCUM_IN_TEXT.sub(lambda match: _spaced(DISPLAY_UNITS[match.group(1)]), text)
    if zone is None:
        return shown
    return _UTC_INSTANT.sub(lambda match: local_time(datetime.fromisoformat(match.group(0)), zone), shown)


def _spaced(unit: str) -> str:
    """`` °C`` after a number; nothing for a unitless code such as ``{INR}``."""
    return f" {unit}" if unit else ""


def display_quantity(value: float, code: str | None, detail: str | None = None) -> str:
    """``38.5 °C``, and ``38.5 °C (charted 101.3 °F)`` when the chart used another unit: the
    nurse recognises the number she charted."""
    unit = display_unit(code)
    shown = f"{value:g} {unit}".strip()
    charted = _CHARTED_AS.search(detail or "")
    if charted is not None and charted.group("unit") != code:
        shown += f" (charted {charted.group('value')} {display_unit(charted.group('unit'))})"
    return shown


def site_zone(name: str | None) -> tzinfo:
    """The configured IANA zone (validated at start-up by ``settings.py``), else UTC."""
    return ZoneInfo(name) if name else UTC


def local_time(moment: datetime, zone: tzinfo) -> str:
    """``2025-03-30 03:30 CEST`` in the site zone; the abbreviation follows daylight saving time,
    so two readings across a clock change are never ambiguous."""
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or 'UTC'}"
