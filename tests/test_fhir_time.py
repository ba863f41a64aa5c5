"""The FHIR dateTime fast path (issue 14) answers exactly as the full parser does.

Why: every resource's time is parsed, so the common shape (``2025-03-01T10:00:00Z``) is read by
``datetime.fromisoformat`` alone behind a strict regex. A fast path may only take what it can
prove identical: these tests hold it to the full parser's answer, the same instant or the same
reason, on a table of edge cases and on generated strings, most of them invalid.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cds_hooks.reading.fhir_time import _parse_full, parse_instant, parse_when
from hypothesis import given, settings
from hypothesis import strategies as st


def same_answer(fast: datetime | str, full: datetime | str) -> bool:
    """Equal instants in the same zone object, or the same reason text."""
    if isinstance(fast, datetime) and isinstance(full, datetime):
        return fast == full and fast.tzinfo is full.tzinfo and fast.fold == full.fold
    return fast == full


EDGE_CASES = [
    pytest.param("2025-03-01T10:00:00Z", id="utc-seconds"),
    pytest.param("2025-03-01T10:00:00.123Z", id="milliseconds"),
    pytest.param("2025-03-01T10:00:00.123456Z", id="six-fraction-digits"),
    pytest.param("2025-03-01T10:00:00.1234567Z", id="seven-fraction-digits-full-parser-trims"),
    pytest.param("2025-03-01T10:00:00+02:00", id="positive-offset"),
    pytest.param("2025-03-01T10:00:00-05:30", id="negative-offset"),
    pytest.param("2025-03-01T10:00:00-00:00", id="minus-zero-offset"),
    pytest.param("2025-03-01T10:00:00+14:00", id="largest-offset-in-use"),
    pytest.param("2025-03-01T10:00:00+23:59", id="odd-offset"),
    pytest.param("2025-03-01T10:00:00+24:00", id="offset-out-of-range"),
    pytest.param("2025-03-01T10:00Z", id="no-seconds-full-parser"),
    pytest.param("2025-03-01T10:00:00", id="no-zone-read-as-utc"),
    pytest.param(" 2025-03-01T10:00:00Z", id="leading-space"),
    pytest.param("2025-03-01T10:00:00Z\n", id="trailing-newline"),
    pytest.param("2025-03-01", id="date-only"),
    pytest.param("2025-03", id="year-month"),
    pytest.param("2025", id="year"),
    pytest.param("2025-13-01T10:00:00Z", id="month-13"),
    pytest.param("2025-02-30T10:00:00Z", id="february-30"),
    pytest.param("2025-03-01T24:00:00Z", id="hour-24"),
    pytest.param("2025-03-01T10:00:60Z", id="leap-second"),
    pytest.param("0001-01-01T00:00:00Z", id="year-1"),
    pytest.param("0001-01-01T00:30:00+01:00", id="year-0-in-utc"),
    pytest.param("0002-01-01T00:00:00Z", id="first-supported-instant"),
    pytest.param("9998-12-31T23:59:59.999999Z", id="last-supported-instant"),
    pytest.param("9999-01-01T00:00:00Z", id="year-9999"),
    pytest.param("9999-12-31T23:30:00-01:00", id="year-10000-in-utc"),
    pytest.param("\u0662\u0660\u0662\u0665-03-01T10:00:00Z", id="arabic-indic-digits"),
    pytest.param("2025-W09-1T10:00:00Z", id="iso-week-date"),
    pytest.param("20250301T100000Z", id="iso-basic-format"),
    pytest.param("2025-03-01t10:00:00z", id="lower-case-t-and-z"),
    pytest.param("2025-03-01T10:00:00,5Z", id="comma-fraction"),
    pytest.param("2025-03-01T10:00:00.Z", id="empty-fraction"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_the_fast_path_gives_the_full_parsers_answer(text: str) -> None:
    assert same_answer(parse_instant(text), _parse_full(text))


def test_the_common_shape_is_an_instant_in_utc() -> None:
    assert parse_instant("2025-03-01T12:00:00+02:00") == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_instant("2025-03-01T10:00:00Z").tzinfo is UTC  # type: ignore[union-attr]


DIGIT = st.sampled_from("0123456789")
PIECE = st.one_of(
    st.text(DIGIT, min_size=1, max_size=5),
    st.sampled_from(["-", ":", "T", "Z", "+", ".", " ", "t", "W", ",", "\u0663", "+14:00", "-12:00", "+00:00"]),
)


@st.composite
def date_times(draw: st.DrawFn) -> str:
    """Mostly well-shaped FHIR dateTimes with one part bent, and random near misses."""
    year = draw(st.integers(0, 9999))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
    fraction = draw(st.sampled_from(["", ".1", ".123", ".123456", ".1234567", ".123456789"]))
    zone = draw(st.sampled_from(["Z", "", "+00:00", "-00:00", "+02:00", "-05:30", "+14:00", "+23:59", "+24:00"]))
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(PIECE) + text[cut + draw(st.integers(0, 2)) :]
    return text


@settings(max_examples=3000, deadline=None)
@given(text=st.one_of(date_times(), st.text(max_size=30), st.lists(PIECE, max_size=12).map("".join)))
def test_generated_strings_get_the_full_parsers_answer(text: str) -> None:
    assert same_answer(parse_instant(text), _parse_full(text))


@settings(max_examples=500, deadline=None)
@given(text=date_times())
def test_an_instant_is_its_own_interval(text: str) -> None:
    moment, when = parse_instant(text), parse_when(text)
    if isinstance(moment, datetime):
        assert not isinstance(when, str)
        assert when.earliest == when.latest == moment
