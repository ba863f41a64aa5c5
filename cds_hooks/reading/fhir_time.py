"""FHIR date and dateTime parsing, strict about precision and range.

A vital sign needs a time to the minute to fall in a 24 h window. A bare date (or year-month, or
year) is not an error but an interval: the whole calendar day in the site's time zone when one is
configured, otherwise wide enough for every UTC offset (-12:00 to +14:00). ``parse_instant`` keeps
refusing such values for the places that need an instant; ``parse_when`` returns the interval
(clinical-reference.md section 1, "Imprecise times are intervals, not errors"). A valid but
extreme value (year 1 or 9999 with an offset, or an interval reaching past them) is refused with a
reason: its UTC value or the window arithmetic on it would not be representable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

EARLIEST_SUPPORTED = datetime(2, 1, 1, tzinfo=UTC)
LATEST_SUPPORTED = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""Instants outside this range are not evidence, and not an evaluation time: FHIR allows years 1 to
9999 with any offset, but some of those are not representable in UTC (0001-01-01T00:30+01:00), and
every window the graders subtract or add (at most 90 days of look-back, hours of look-ahead) must
stay representable. A year of margin on each side covers every window, with no clinical loss."""
_RANGE_TEXT = "years 0002 to 9998 UTC"

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
"""A year, a year-month or a date: FHIR dateTime values without a time."""
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")
_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
"""The shape nearly every charted time has (``2025-03-01T10:00:00Z``, ``...:00.123+02:00``): a
strict subset of ``_DATETIME`` (ASCII digits, seconds and zone present, at most 6 fractional
digits, no surrounding space), so ``datetime.fromisoformat`` reads it as the full parser would."""

EARLIEST_OFFSET = timedelta(hours=14)
"""The most advanced UTC offset in use (UTC+14): a local midnight is at the earliest 14 h before UTC's."""
LATEST_OFFSET = timedelta(hours=12)
"""The most retarded UTC offset in use (UTC-12): a local midnight is at the latest 12 h after UTC's."""


@dataclass(frozen=True, slots=True)
class When:
    """A FHIR time read as an interval: ``earliest == latest`` for a precise dateTime."""

    earliest: datetime
    latest: datetime

    @property
    def precise(self) -> bool:
        return self.earliest == self.latest


def parse_when(raw: object, site_zone: tzinfo | None = None) -> When | str:
    """A precise instant, or the interval a date-only (or year-month, year) value covers.

    Without a site time zone the interval is widened by the extreme UTC offsets, so a dose dated
    ``2025-03-03`` covers every instant that was 3 March somewhere on Earth.
    """
    moment = parse_instant(raw)  # the common case first: a full dateTime (a date never parses here)
    if not isinstance(moment, str):
        return When(moment, moment)
    if not isinstance(raw, str):
        return moment
    text = raw.strip()
    partial = _PARTIAL_DATE.match(text)
    if partial is None:
        return moment
    return _date_interval(text, partial, site_zone)


def _date_interval(text: str, partial: re.Match[str], site_zone: tzinfo | None) -> When | str:
    year, month, day = partial.group(1), partial.group(2), partial.group(3)
    try:
        first = date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return f"time {text!r} is not a valid date"
    try:
        if day is not None:
            after = first + timedelta(days=1)
        elif month is not None:
            after = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        else:
            after = date(first.year + 1, 1, 1)
        zone = site_zone or UTC
        start = datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(UTC)
        end = datetime(after.year, after.month, after.day, tzinfo=zone).astimezone(UTC) - timedelta(microseconds=1)
        if site_zone is None:
            start, end = start - EARLIEST_OFFSET, end + LATEST_OFFSET
    except (OverflowError, ValueError):  # e.g. the day after 9999-12-31, or 0001-01-01 minus 14 h
        return f"time {text!r} is outside the supported range ({_RANGE_TEXT})"
    if start < EARLIEST_SUPPORTED or end > LATEST_SUPPORTED:
        return f"time {text!r} is outside the supported range ({_RANGE_TEXT})"
    return When(start, end)


def parse_instant(raw: object) -> datetime | str:
    """A timezone-aware datetime, or the reason the value cannot place an event in time.

    FHIR requires a zone when a time is given; a value without one is read as UTC (documented
    in README) rather than rejected, since some EHR exports drop it. Every resource's time passes
    here: a value of ``_INSTANT``'s shape that parses into the supported range is answered by
    ``datetime.fromisoformat`` alone, as the full parser would answer it (tests/test_fhir_time.py
    checks that they agree on generated strings, invalid ones included); anything else goes to
    :func:`_parse_full`. No memo (issue 11): an export holds more distinct times than a memo.
    """
    if not isinstance(raw, str):
        return "no time"
    if _INSTANT.fullmatch(raw) is not None:  # the common shape: one regex and one C parse
        try:
            moment = datetime.fromisoformat(raw).astimezone(UTC)
        except (ValueError, OverflowError):
            return _parse_full(raw)
        if EARLIEST_SUPPORTED <= moment <= LATEST_SUPPORTED:
            return moment
    return _parse_full(raw)


def _parse_full(raw: str) -> datetime | str:
    """Any FHIR dateTime text: the instant in UTC, or why it cannot place an event in time."""
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
        parsed = parsed.replace(tzinfo=UTC)
    try:
        moment = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:30:00+01:00 is in year 0 in UTC
        return f"time {text!r} is outside the supported range ({_RANGE_TEXT})"
    if not EARLIEST_SUPPORTED <= moment <= LATEST_SUPPORTED:
        return f"time {text!r} is outside the supported range ({_RANGE_TEXT})"
    return moment


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
