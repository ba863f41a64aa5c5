"""FHIR date and dateTime parsing, strict about precision.

A vital sign needs a time to the minute to fall in a 24 h window; a bare date cannot say whether
a fever was inside it, so such values are rejected with a reason rather than guessed.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2}){0,2}$")
"""A year, a year-month or a date: FHIR dateTime values without a time."""
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_instant(raw: object) -> datetime | str:
    """A timezone-aware datetime, or the reason the value cannot place an event in time.

    FHIR requires a zone when a time is given; a value without one is read as UTC (documented
    in README) rather than rejected, since some EHR exports drop it. Every resource's time
    passes here, so the common case is one regex match and one C parse, with no memo: a bulk
    export holds more distinct timestamps than any bounded memo, and the parse is ~1 us.
    """
    if not isinstance(raw, str):
        return "no time"
    text = raw.strip()
    if not _DATETIME.match(text):
        if _PARTIAL_DATE.match(text):
            return f"time {text!r} is a date only (too imprecise for a time window)"
        return f"time {text!r} is not a FHIR dateTime"
    try:
        # Python accepts at most 6 fractional digits; FHIR allows more.
        parsed = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", text) if "." in text else text)
    except ValueError:
        return f"time {text!r} is not a valid dateTime"
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


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
