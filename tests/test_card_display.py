"""Issue 13, "The card a clinician reads": display units, site-local times, a short detail.

A nurse reads °C and mmHg on the ward clock; the grading keeps UCUM and UTC, and so does the RESULT
extension a machine reads. Each row is what a clinician (or the EHR) would notice on the card.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from cds_hooks.advice.cards import CardOptions, build_cards
from cds_hooks.advice.display import display_quantity, display_text, local_time, site_zone
from cds_hooks.cds import Card
from cds_hooks.grading import GradingConfig
from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import T, bp_panel, medication_administration, patient, reference, rxnorm, temperature

DST_CHANGE_AT = datetime(2025, 3, 30, 2, 0, tzinfo=UTC)
"""Paris moves from CET (+01:00) to CEST (+02:00) at 01:00 UTC on 30 March 2025."""

CHOICES_URL = "https://cds.example.org/docs/choices"
GRADE_3_MAX_WORDS = 300
"""A grade-3 card is read in under a minute: a few hundred words at most, however much was charted."""


def grading() -> Grading:
    return Grading(load_terminology(), load_units(), GradingConfig(), systems=("ASTCT-2019",))


def run(resources: Sequence[dict[str, Any]], at: datetime = T) -> Evaluation:
    sourced = [SourcedResource(copy.deepcopy(r), reference(r)) for r in resources]
    return evaluate(sourced, patient_id="p1", at=at, grading=grading())


def only_card(evaluation: Evaluation, options: CardOptions | None = None) -> Card:
    cards = build_cards(evaluation, options)
    assert len(cards) == 1, f"expected one CRS card, got {len(cards)}"
    return cards[0]


def at_time(resource: dict[str, Any], instant: str) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    out["effectiveDateTime"] = instant
    return out


def grade_3(extra: Sequence[dict[str, Any]] = ()) -> Evaluation:
    """Fever, hypotension, one vasopressor running: ASTCT grade 3."""
    norepinephrine = medication_administration(
        "norepi", rxnorm("7512", "norepinephrine"), status="in-progress", hours_before=2.0
    )
    return run([patient(45), temperature("t1", 39.5), bp_panel("bp1", 84, 50), norepinephrine, *extra])


# -- the rendering helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code", "detail", "shown"),
    [
        pytest.param(38.5, "Cel", None, "38.5 °C", id="Cel->°C"),
        pytest.param(84.0, "mm[Hg]", None, "84 mmHg", id="mm[Hg]->mmHg"),
        pytest.param(6.0, "L/min", None, "6 L/min", id="L/min-kept"),
        pytest.param(6.0, "l/min", None, "6 L/min", id="l/min->L/min"),
        pytest.param(88.0, "%", None, "88 %", id="percent-kept"),
        pytest.param(
            38.5,
            "Cel",
            "highest temperature in the fever window, charted as 101.3 [degF]",
            "38.5 °C (charted 101.3 °F)",
            id="charted-°F-shown-beside-°C",
        ),
        pytest.param(
            38.5, "Cel", "highest temperature in the fever window, charted as 38.5 Cel", "38.5 °C", id="charted-°C-once"
        ),
        pytest.param(3.0, "unheard-of", None, "3 unheard-of", id="unknown-unit-as-charted"),
        pytest.param(0.4, "10*9/L", None, "0.4 ×10⁹/L", id="10*9/L->×10⁹/L"),
        pytest.param(1.3, "{INR}", None, "1.3", id="INR-unitless"),
    ],
)
def test_display_quantity(value: float, code: str, detail: str | None, shown: str) -> None:
    assert display_quantity(value, code, detail) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param(
            "temperature >= 38.0 Cel in the 24 h before T", "temperature >= 38.0 °C in the 24 h before T", id="Cel"
        ),
        pytest.param("systolic < 90 mm[Hg] or MAP < 65 mm[Hg]", "systolic < 90 mmHg or MAP < 65 mmHg", id="mm[Hg]x2"),
        pytest.param("Cel is the UCUM code", "Cel is the UCUM code", id="word-not-after-number-kept"),
        pytest.param("ANC 0.4 10*9/L at T", "ANC 0.4 ×10⁹/L at T", id="lab-10*9/L"),
        pytest.param("INR 1.3 {INR}, fibrinogen", "INR 1.3, fibrinogen", id="lab-INR"),
    ],
)
def test_display_text(text: str, shown: str) -> None:
    assert display_text(text) == shown


@pytest.mark.parametrize(
    ("instant", "zone", "shown"),
    [
        pytest.param("2025-03-30T00:30:00Z", "Europe/Paris", "2025-03-30 01:30 CET", id="paris-before-dst"),
        pytest.param("2025-03-30T01:30:00Z", "Europe/Paris", "2025-03-30 03:30 CEST", id="paris-after-dst"),
        pytest.param("2025-03-09T07:30:00Z", "America/New_York", "2025-03-09 03:30 EDT", id="new-york-after-dst"),
        pytest.param("2025-03-04T08:00:00Z", None, "2025-03-04 08:00 UTC", id="no-zone->UTC-said"),
    ],
)
def test_local_time(instant: str, zone: str | None, shown: str) -> None:
    assert local_time(datetime.fromisoformat(instant), site_zone(zone)) == shown


# -- the card -------------------------------------------------------------------------------


def test_card_reads_celsius_mmhg_and_paris_time_across_dst_with_utc_in_extension() -> None:
    fever = at_time(temperature("t-fever", 38.8), "2025-03-30T00:30:00Z")  # 01:30 CET
    low_bp = at_time(bp_panel("bp-low", 84, 50), "2025-03-30T01:30:00Z")  # 03:30 CEST
    card = only_card(run([patient(45), fever, low_bp], at=DST_CHANGE_AT), CardOptions(site_timezone="Europe/Paris"))
    detail = card.detail or ""
    assert "38.8 °C" in detail and "84 mmHg" in detail
    assert "Cel" not in detail and "mm[Hg]" not in detail, detail
    assert "2025-03-30 01:30 CET" in detail and "2025-03-30 03:30 CEST" in detail
    assert "at 2025-03-30 04:00 CEST" in detail  # the evaluation time, on the same clock
    assert "Times in Europe/Paris." in detail
    assert card.extension is not None
    result = card.extension["crs-cds-hooks.grading"][0]
    assert result["at"] == "2025-03-30T02:00:00Z"
    times = {e["reference"]: e["time"] for e in result["evidence"] if "time" in e}
    assert times["Observation/t-fever"] == "2025-03-30T00:30:00Z"
    assert times["Observation/bp-low"] == "2025-03-30T01:30:00Z"
    assert any(e.get("unit") == "Cel" for e in result["evidence"])  # UCUM kept for machines


def test_card_without_zone_says_utc() -> None:
    card = only_card(grade_3())
    assert "at 2025-03-04 08:00 UTC" in (card.detail or "")
    assert "Times in UTC (no site time zone configured)." in (card.detail or "")


@pytest.mark.parametrize(
    ("options", "where", "link"),
    [
        pytest.param(CardOptions(choices_url=CHOICES_URL), f"[{CHOICES_URL}]({CHOICES_URL})", True, id="page-linked"),
        pytest.param(CardOptions(), 'README, "Clinical choices"', False, id="no-public-url->README-named"),
    ],
)
def test_choices_in_one_line_with_where_explained(options: CardOptions, where: str, link: bool) -> None:
    card = only_card(grade_3(), options)
    detail = card.detail or ""
    lines = [line for line in detail.splitlines() if "Choices in force" in line]
    assert len(lines) == 1 and where in lines[0], lines
    assert "feverWindow" not in detail and "priorCrs" not in detail  # the list is not on the card
    assert any(lnk.url == CHOICES_URL for lnk in card.links or []) is link
    assert card.extension is not None
    choices = card.extension["crs-cds-hooks.grading"][0]["choices"]
    assert {"feverWindow", "hypotension", "oxygen", "worstGrade"} <= set(choices)  # full list kept


def test_grade_3_detail_is_short_even_with_much_unusable_data() -> None:
    unusable = [temperature(f"t-bad-{i}", 39.0, "furlongs") for i in range(30)]
    card = only_card(grade_3(unusable), CardOptions(site_timezone="Europe/Paris"))
    detail = card.detail or ""
    assert card.indicator == "critical" and "grade 3" in card.summary
    words = sum(1 for token in detail.split() if re.search(r"\w", token))  # table pipes are not words
    assert words <= GRADE_3_MAX_WORDS, f"{words} words:\n{detail}"
    assert "Observation/t-bad-0, Observation/t-bad-1, Observation/t-bad-2 and 27 more: body temperature" in detail
    assert "**Suggested management**" in detail and "Observation/t1" in detail  # what to do, and why
    assert "Overdue or not charted: C-reactive protein" in detail  # what is missing, named once
    assert "| not charted |" not in detail  # not again as fourteen empty table rows
    assert card.extension is not None
    assert len(card.extension["crs-cds-hooks.grading"][0]["notEvidence"]) >= 30


def test_choices_page_in_display_units() -> None:
    with TestClient(create_app(Settings(site_timezone="Europe/Paris"))) as client:
        response = client.get("/docs/choices")
    assert response.status_code == 200
    assert "°C" in response.text and "mmHg" in response.text
    assert " Cel " not in response.text and "mm[Hg]" not in response.text
    assert "Europe/Paris" in response.text and "Clinical choices" in response.text


def test_more_reasons_than_the_card_lists_are_counted_not_dropped() -> None:
    units = ["furlongs", "parsec", "kPa", "g", "mol", "J", "Hz", "cd", "lm", "Sv"]
    unusable = [temperature(f"t-odd-{unit}", 39.0, unit) for unit in units]
    card = only_card(grade_3(unusable))
    detail = card.detail or ""
    assert "- … and 2 more (in the result extension)" in detail
    assert "Observation/t-odd-furlongs" in detail


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        pytest.param("Europe/Paris", "before 2025-03-04 09:00 CET", id="paris"),
        pytest.param(None, "before 2025-03-04 08:00 UTC", id="no-zone->UTC"),
    ],
)
def test_times_inside_missing_text_are_on_the_site_clock_also_in_the_summary(zone: str | None, shown: str) -> None:
    card = only_card(run([patient(45), temperature("t1", 38.5)]), CardOptions(site_timezone=zone))
    detail = card.detail or ""
    assert shown in detail and "T08:00:00Z" not in detail, detail
    assert shown in card.summary, card.summary  # was cut at the first ":" to "...before 2025-03-04T08"
    assert card.extension is not None
    missing = card.extension["crs-cds-hooks.grading"][0]["missing"]
    assert any("2025-03-04T08:00:00Z" in item for item in missing)  # machines keep UTC


def test_order_card_times_on_the_site_clock_with_utc_kept_in_the_check() -> None:
    from test_order_hooks import TOCI, adult, draft, order_request, toci_given

    request = order_request("order-sign", [*adult(75), toci_given("g1", 7)], [draft("mr1", TOCI, 600)])
    with TestClient(create_app(Settings(site_timezone="Europe/Paris"))) as client:
        response = client.post("/cds-services/crs-order-sign", json=request)
    assert response.status_code == 200, response.text
    (card,) = [c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "tocilizumab-order"]
    detail = card["detail"]
    assert "at 2025-03-04 09:00 CET" in detail  # the current grade line
    assert "last dose at 2025-03-04 02:00 CET" in detail, detail  # 7 h before T, Paris clock
    assert "Weight 75 kg at 2025-03-04 07:00 CET" in detail
    assert not re.search(r"\d{2}:\d{2}:\d{2}Z", detail), detail


@pytest.mark.parametrize(
    ("zone", "evaluated", "evidence_time"),
    [
        pytest.param("Europe/Paris", "2025-03-04 09:00 CET", "2025-03-04 08:00 CET", id="paris"),
        pytest.param(None, "2025-03-04 08:00 UTC", "2025-03-04 07:00 UTC", id="no-zone->UTC"),
    ],
)
def test_smart_page_on_the_same_clock_and_units_as_the_card(
    zone: str | None, evaluated: str, evidence_time: str
) -> None:
    from cds_hooks.pipeline.course import course_document
    from cds_hooks.web.smart.page import render_page

    evaluation = grade_3()
    page = render_page(course_document(evaluation, GradingConfig(), "p1"), evaluation, zone)
    assert f"evaluated {evaluated}" in page
    assert evidence_time in page  # the fever, 1 h before T
    assert "39.5 °C" in page and "84 mmHg" in page
    assert "mm[Hg]" not in page and "T08:00:00Z" not in page
