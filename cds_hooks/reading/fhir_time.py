"""FHIR date and dateTime parsing, strict about precision and range.

A vital sign needs a time to the minute to fall in a 24 h window; a bare date cannot say whether
a fever was inside it, so such values are rejected with a reason rather than guessed. A valid but
extreme dateTime (year 1 or 9999 with an offset) is rejected the same way: its UTC value or the
window arithmetic on it would not be representable.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from functools import lru_cache

EARLIEST_SUPPORTED = datetime(2, 1, 1, tzinfo=UTC)
LATEST_SUPPORTED = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""Instants outside this range are not evidence, and not an evaluation time: FHIR allows years 1 to
9999 with any offset, but some of those are not representable in UTC (0001-01-01T00:30+01:00), and
every window the graders subtract or add (at most 90 days of look-back, hours of look-ahead) must
stay representable. A year of margin on each side covers every window, with no clinical loss."""
_RANGE_TEXT = "years 0002 to 9998 UTC"

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_instant(raw: object) -> datetime | str:
    """A timezone-aware datetime, or the reason the value cannot place an event in time.

    FHIR requires a zone when a time is given; a value without one is read as UTC (documented
    in README) rather than rejected, since some EHR exports drop it.
    """
    if not isinstance(raw, str):
        return "no time"
    return _parse_text(raw)


@lru_cache(maxsize=8192)
def _parse_text(raw: str) -> datetime | str:
    # Charts repeat timestamps (a panel, its device row, its SpO2): parse each string once.
    text = raw.strip()
    if _DATE.match(text) or re.match(r"^\d{4}(-\d{2})?$", text):
        return f"time {text!r} is a date only (too imprecise for a time window)"
    if not _DATETIME.match(text):
        return f"time {text!r} is not a FHIR dateTime"
    try:
        parsed = datetime.fromisoformat(_trim_fraction(text))
    except ValueError:
        return f"time {text!r} is not a valid dateTime"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        moment = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:30:00+01:00 is in year 0 in UTC
        return f"time {text!r} is outside the supported range ({_RANGE_TEXT})"
    if not EARLIEST_SUPPORTED <= moment <= LATEST_SUPPORTED:
        return f"time {text!r} is outside the supported range ({_RANGE_TEXT})"
    return moment


def _trim_fraction(text: str) -> str:
    # Python accepts at most 6 fractional digits; FHIR allows more.
    return re.sub(r"(\.\d{6})\d+", r"\1", text)


def parse_date(raw: object) -> date | None:
    """A full calendar date (``birthDate``), or None when absent or partial."""
    if not isinstance(raw, str) or not _DATE.match(raw.strip()):
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        return None


def age_in_years(birth: date, at: datetime) -> int:
    """Completed years of age at ``at`` (the paediatric thresholds use whole years)."""
    today = at.date()
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years


def iso(moment: datetime) -> str:
    """The UTC ISO-8601 form used in every output (``2025-03-04T08:00:00Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
