"""Issue 16, order safety as the labels say, through the order-sign hook: an engager held during
CRS, ICANS or a fever; every product known by any name (US suffixes, biosimilars, short names,
products added in 2024-2025); an administration whose drug cannot be identified is named; a cell
therapy with an active infection is critical. Each table row reproduces a fault the pharmacist's
review found."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from cds_hooks.reading.products import PRODUCTS_DIR, ProductRulesError, load_products
from cds_hooks.reading.terminology import ConceptKind, load_terminology
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import (
    PATIENT_ID,
    Resource,
    atc,
    bp_panel,
    concept,
    medication_administration,
    patient,
    rxnorm,
    temperature,
    text_concept,
    weight,
    when,
)
from test_order_hooks import PREMEDS_GIVEN, TECLISTAMAB, adult, call, check_of, client, draft, order_request, topic

__all__ = ["client"]  # the module-scoped TestClient fixture, shared with test_order_hooks

ICANS = "http://hospital.example.org/fhir/CodeSystem/icans"
NOREPINEPHRINE = rxnorm("7512", "norepinephrine")
EPCORITAMAB = atc("L01FX27", "epcoritamab")
AXI_CEL = atc("L01XL03", "axicabtagene ciloleucel")
TOCI = rxnorm("612865", "tocilizumab")


def ice(rid: str, score: int, *, hours_before: float = 1.0) -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": concept(ICANS, "ICE-TOTAL"),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when(hours_before),
        "valueInteger": score,
    }


def pressor_running(rid: str = "ne1") -> Resource:
    return medication_administration(rid, NOREPINEPHRINE, status="in-progress", period=(5, None))


NORMAL_BP = bp_panel("bp1", 120, 80, hours_before=1)


# -- item 1: hold the engager ------------------------------------------------------------


@dataclass(frozen=True)
class HoldCase:
    record: list[Resource]
    product: dict[str, Any]
    hold: str | None
    """The hold card's outcome (``crs``, ``possible-crs``, ``icans``, ``fever``, joined by +)."""
    cited: tuple[str, ...] = ()
    """References the hold card must cite."""
    says: str = ""


HOLD_CASES: dict[str, HoldCase] = {
    "teclistamab+fever+norepinephrine->hold-crs-grade-3": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 38.6, hours_before=2), pressor_running(), NORMAL_BP],
        TECLISTAMAB,
        "crs+fever",
        ("MedicationAdministration/ne1", "Observation/t1"),
        "CRS grade 3",
    ),
    "teclistamab+ice-5->hold-icans-grade-2": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 37.0), NORMAL_BP, ice("ice1", 5)],
        TECLISTAMAB,
        "icans",
        ("Observation/ice1",),
        "ICANS grade 2",
    ),
    "teclistamab+38.6-three-days-after-step-up->hold": HoldCase(
        [
            *adult(75),
            *PREMEDS_GIVEN,
            medication_administration("sud1", TECLISTAMAB, hours_before=72),
            temperature("t1", 38.6, hours_before=3),
            NORMAL_BP,
        ],
        TECLISTAMAB,
        "crs+fever",
        ("Observation/t1",),
        "CRS grade 1",
    ),
    "epcoritamab+crs-grade-1->hold-even-at-grade-1": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 38.1, hours_before=1), NORMAL_BP],
        EPCORITAMAB,
        "crs+fever",
        ("Observation/t1",),
        "at grade 1 too",
    ),
    "teclistamab+pressor-no-temperature->hold-possible-crs": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, pressor_running()],
        TECLISTAMAB,
        "possible-crs",
        ("MedicationAdministration/ne1",),
        "possible CRS",
    ),
    "teclistamab+premedication+hypotension-afebrile->hold-possible-crs-masked": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 37.1), bp_panel("bp2", 82, 48, hours_before=0.5)],
        TECLISTAMAB,
        "possible-crs",
        ("Observation/bp2",),
        "possible CRS",
    ),
    "teclistamab-afebrile-normal->no-hold": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 37.2), NORMAL_BP, ice("ice1", 10)], TECLISTAMAB, None
    ),
    "teclistamab-37.9->no-hold": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 37.9), NORMAL_BP], TECLISTAMAB, None
    ),
    "teclistamab-fever-25h-ago->no-hold": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t0", 38.5, hours_before=25), temperature("t1", 37.0), NORMAL_BP],
        TECLISTAMAB,
        None,
    ),
    "axi-cel+ice-5->no-hold-card-cell-therapy": HoldCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 37.0), NORMAL_BP, ice("ice1", 5)], AXI_CEL, None
    ),
}


@pytest.mark.parametrize("case_id", list(HOLD_CASES))
def test_engager_is_held_during_crs_icans_or_fever(client: TestClient, case_id: str) -> None:
    case = HOLD_CASES[case_id]
    cards = call(client, "order-sign", case.record, [draft("tce1", case.product, 4.5)])
    hold = topic(cards, "hold-crs-therapy")
    if case.hold is None:
        assert hold == []
        return
    (card,) = hold
    assert card["indicator"] == "critical"
    assert check_of(card) == {"check": "hold", "outcome": case.hold, "draft": "MedicationRequest/tce1"}
    assert card["summary"].startswith("Hold ")
    for reference in case.cited:
        assert reference in card["detail"]
    assert case.says in card["detail"]
    assert "not verified against the current US label" in card["detail"]
    (suggestion,) = card["suggestions"]
    assert suggestion["actions"][0] == {
        "type": "delete",
        "description": suggestion["actions"][0]["description"],
        "resourceId": "MedicationRequest/tce1",
    }


# -- items 2 and 9: every product by any name ----------------------------------------------


@pytest.mark.parametrize(
    ("medication", "product"),
    [
        pytest.param(text_concept("teclistamab-cqyv 1.5 mg/kg SC"), "teclistamab", id="teclistamab-cqyv"),
        pytest.param(text_concept("talquetamab-tgvs 0.01 mg/kg"), "talquetamab", id="talquetamab-tgvs"),
        pytest.param(text_concept("elranatamab-bcmm 12 mg"), "elranatamab", id="elranatamab-bcmm"),
        pytest.param(text_concept("epcoritamab-bysp 0.16 mg"), "epcoritamab", id="epcoritamab-bysp"),
        pytest.param(text_concept("glofitamab-gxbm 2.5 mg"), "glofitamab", id="glofitamab-gxbm"),
        pytest.param(text_concept("mosunetuzumab-axgb 1 mg"), "mosunetuzumab", id="mosunetuzumab-axgb"),
        pytest.param(text_concept("tarlatamab-dlle 1 mg"), "tarlatamab", id="tarlatamab-dlle"),
        pytest.param(text_concept("Lynozyfic 5 mg"), "linvoseltamab", id="linvoseltamab-by-brand"),
        pytest.param(atc("L01FX37", "linvoseltamab"), "linvoseltamab", id="linvoseltamab-by-atc"),
        pytest.param(atc("L01FX34", "odronextamab"), "odronextamab", id="odronextamab-by-atc"),
        pytest.param(text_concept("tebentafusp-tebn 20 mcg"), "tebentafusp", id="tebentafusp-tebn"),
        pytest.param(atc("L01XX75", "tebentafusp"), "tebentafusp", id="tebentafusp-by-atc"),
        pytest.param(text_concept("Tecelra infusion"), "afamitresgene autoleucel", id="afami-cel-by-brand"),
        pytest.param(text_concept("axi-cel infusion"), "axicabtagene ciloleucel", id="axi-cel-short-name"),
        pytest.param(text_concept("cilta-cel infusion"), "ciltacabtagene autoleucel", id="cilta-cel-short-name"),
        pytest.param(text_concept("liso-cel infusion"), "lisocabtagene maraleucel", id="liso-cel-short-name"),
    ],
)
def test_products_known_by_any_name(client: TestClient, medication: dict[str, Any], product: str) -> None:
    cards = call(client, "order-sign", [*adult(75), *PREMEDS_GIVEN], [draft("tce1", medication, 1)])
    (monitoring,) = topic(cards, "crs-therapy-monitoring")
    assert monitoring["summary"].lower().startswith(product)


@dataclass(frozen=True)
class TociNameCase:
    record: list[Resource]
    medication: dict[str, Any]
    dose_mg: float
    outcome: str
    extra: list[Resource] = field(default_factory=list)


TOCI_NAME_CASES: dict[str, TociNameCase] = {
    "tocilizumab-aazg-900mg-75kg->critical": TociNameCase(
        adult(75), text_concept("tocilizumab-aazg 20 mg/mL"), 900, "dose-too-high"
    ),
    "tyenne-900mg-75kg->critical": TociNameCase(adult(75), text_concept("Tyenne 400 mg/20 mL"), 900, "dose-too-high"),
    "tofidence-900mg-75kg->critical": TociNameCase(adult(75), text_concept("Tofidence"), 900, "dose-too-high"),
    "avtozma-600mg-75kg->ok": TociNameCase(adult(75), text_concept("Avtozma"), 600, "ok"),
    "tyenne-charted-2h-ago->no-dose-allowed": TociNameCase(
        [*adult(75), medication_administration("g1", text_concept("Tyenne (tocilizumab-aazg)"), hours_before=2)],
        TOCI,
        600,
        "no-dose-allowed",
    ),
    "tocilizumab-bavi-contained-2h-ago->no-dose-allowed": TociNameCase(
        [
            *adult(75),
            medication_administration("g1", text_concept("tocilizumab-bavi"), hours_before=2, contained=True),
        ],
        TOCI,
        600,
        "no-dose-allowed",
    ),
}


@pytest.mark.parametrize("case_id", list(TOCI_NAME_CASES))
def test_tocilizumab_biosimilars_counted_as_tocilizumab(client: TestClient, case_id: str) -> None:
    case = TOCI_NAME_CASES[case_id]
    cards = call(client, "order-sign", case.record, [draft("mr1", case.medication, case.dose_mg)])
    (card,) = topic(cards, "tocilizumab-order")
    assert check_of(card)["outcome"] == case.outcome


def unresolvable(rid: str) -> Resource:
    out = medication_administration(rid, TOCI, hours_before=2)
    del out["medicationCodeableConcept"]
    out["medicationReference"] = {"reference": "Medication/not-in-prefetch"}
    return out


def uncoded(rid: str) -> Resource:
    out = medication_administration(rid, TOCI, hours_before=2, contained=True)
    out["contained"][0]["code"] = {"coding": [{"system": "http://example.org/formulary"}]}
    return out


@pytest.mark.parametrize(
    ("administration", "reason"),
    [
        pytest.param(unresolvable("u1"), "not in the data read", id="reference-nothing-resolves->named"),
        pytest.param(uncoded("u1"), "no code and no text", id="contained-medication-without-code->named"),
    ],
)
def test_unidentified_administration_is_named_on_the_card(
    client: TestClient, administration: Resource, reason: str
) -> None:
    cards = call(client, "order-sign", [*adult(75), administration], [draft("mr1", TOCI, 600)])
    (card,) = topic(cards, "tocilizumab-order")
    assert check_of(card)["outcome"] == "ok"
    assert card["indicator"] == "warning"
    assert "MedicationAdministration/u1" in card["detail"] and reason in card["detail"]
    assert "unidentified drug" in card["summary"]


def test_identified_other_drug_is_not_named(client: TestClient) -> None:
    vancomycin = medication_administration("v1", rxnorm("11124", "vancomycin"), hours_before=2)
    cards = call(client, "order-sign", [*adult(75), vancomycin], [draft("mr1", TOCI, 600)])
    (card,) = topic(cards, "tocilizumab-order")
    assert card["indicator"] == "info" and "MedicationAdministration/v1" not in card["detail"]


# -- item 6: cell therapy with an active infection ---------------------------------------


def test_active_infection_before_car_t_is_critical(client: TestClient) -> None:
    record = [*adult(75), *PREMEDS_GIVEN[1:], temperature("t1", 38.4, hours_before=3), NORMAL_BP]
    cards = call(client, "order-sign", record, [draft("car1", AXI_CEL, 1)])
    (card,) = topic(cards, "infection-before-crs-therapy")
    assert card["indicator"] == "critical"
    assert card["summary"].startswith("Do not give axicabtagene ciloleucel")
    assert topic(cards, "hold-crs-therapy") == []
    (monitoring,) = topic(cards, "crs-therapy-monitoring")
    assert "4 weeks" not in monitoring["detail"] and "REMS:" not in monitoring["detail"]
    assert "2 weeks" in monitoring["detail"] and "driving" in monitoring["detail"]


# -- the rules as data: validated at start-up --------------------------------------------

GOOD_RULE = (Path(__file__).resolve().parents[1] / "mappings" / "products" / "other-engagers.yaml").read_text()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda text: text.replace("verified: false", "verified: maybe"), "invalid", id="bad-verified"),
        pytest.param(
            lambda text: text.replace("agent: tarlatamab", "agent: tarlatamabb"),
            "not a crs_therapy",
            id="unknown-agent",
        ),
        pytest.param(
            lambda text: text.replace("agent: tarlatamab", "agent: blinatumomab"), "two files", id="agent-twice"
        ),
        pytest.param(
            lambda text: text.replace("roles: [corticosteroid]", "roles: [vasopressor]"),
            "premedication",
            id="premedication-role-not-a-premedication",
        ),
        pytest.param(lambda text: "products: [", "not valid YAML", id="broken-yaml"),
    ],
)
def test_bad_product_rules_stop_start_up(tmp_path: Path, mutate: Callable[[str], str], message: str) -> None:
    source = GOOD_RULE.replace("family: other-engagers", "family: site")
    for name in ("bcma-gprc5d-engagers.yaml", "cd20-engagers.yaml", "cell-therapies.yaml", "other-engagers.yaml"):
        (tmp_path / name).write_text((PRODUCTS_DIR / name).read_text())
    (tmp_path / "site.yaml").write_text(mutate(source))
    (tmp_path / "other-engagers.yaml").unlink()
    if "two files" in message:
        (tmp_path / "other-engagers.yaml").write_text((PRODUCTS_DIR / "other-engagers.yaml").read_text())
    with pytest.raises(ProductRulesError, match=message):
        load_products(load_terminology(), directory=tmp_path)


def test_a_product_without_a_rule_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "only.yaml").write_text((PRODUCTS_DIR / "other-engagers.yaml").read_text())
    with pytest.raises(ProductRulesError, match=r"without a rule.*teclistamab"):
        load_products(load_terminology(), directory=tmp_path)


@pytest.mark.parametrize(
    ("text", "agent"),
    [
        pytest.param("teclistamab-cqyv", "teclistamab", id="engager-with-suffix"),
        pytest.param("TOCILIZUMAB-AAZG 400 mg", "tocilizumab", id="biosimilar-upper-case"),
        pytest.param("diphenhydramine-zinc lotion", None, id="no-suffix-for-small-molecules"),
        pytest.param("teclistamab-cqyvx", None, id="suffix-is-four-letters"),
    ],
)
def test_us_suffix_only_for_biologics(text: str, agent: str | None) -> None:
    match = load_terminology().lookup_name_in_text(text, ConceptKind.MEDICATION)
    assert (match.concept.id if match else None) == agent


# -- item 7: tocilizumab route, schedule, vials, rounding, old weights ---------------------

SNOMED_CT = "http://snomed.info/sct"


def toci_draft(dose_mg: float, **dosage: Any) -> Resource:
    out = draft("mr1", TOCI, dose_mg)
    out["dosageInstruction"][0].update(dosage)
    return out


@pytest.mark.parametrize(
    ("record", "order", "expected", "says"),
    [
        pytest.param(
            adult(75),
            toci_draft(162, route=concept(SNOMED_CT, "34206005", "Subcutaneous route"), text="162 mg"),
            ("wrong-route", "critical"),
            "intravenously",
            id="162mg-subcutaneous-coded->critical",
        ),
        pytest.param(
            adult(75),
            toci_draft(162, text="162 mg subcutaneous weekly"),
            ("wrong-route", "critical"),
            "intravenously",
            id="162mg-subcutaneous-in-text->critical",
        ),
        pytest.param(
            adult(75),
            toci_draft(600, timing={"repeat": {"frequency": 1, "period": 4, "periodUnit": "h"}}),
            ("interval-too-short", "critical"),
            "every 4 h",
            id="600mg-every-4h-timing->critical",
        ),
        pytest.param(
            adult(75),
            toci_draft(600, text="600 mg IV q4h"),
            ("interval-too-short", "critical"),
            "every 4 h",
            id="600mg-q4h-text->critical",
        ),
        pytest.param(
            adult(75),
            toci_draft(600, timing={"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}}),
            ("ok", "info"),
            "repeat only if no clinical improvement",
            id="600mg-every-8h->ok-with-caution",
        ),
        pytest.param(
            adult(75),
            toci_draft(601),
            ("dose-too-high", "critical"),
            "whole-vial dose within 600 mg is 600 mg",
            id="601mg-75kg->critical-with-vial-note",
        ),
        pytest.param(
            [patient(45), weight("w1", 44.85)],
            toci_draft(358.8),
            ("ok", "info"),
            "whole-vial dose within 358.8 mg is 320 mg",
            id="358.8mg-44.85kg->ok-max-358.8",
        ),
        pytest.param(
            [patient(45), weight("w1", 44.85)],
            toci_draft(359),
            ("dose-too-high", "critical"),
            "358.8 mg",
            id="359mg-44.85kg->critical-max-358.8",
        ),
        pytest.param(
            [patient(45), weight("w1", 75, hours_before=400 * 24)],
            toci_draft(600),
            ("weight-too-old", "warning"),
            "older than 90 days",
            id="weight-400-days-old->no-dose-checked",
        ),
        pytest.param(
            [patient(45), weight("w1", 75, hours_before=60 * 24)],
            toci_draft(600),
            ("ok", "info"),
            "confirm it",
            id="weight-60-days-old->ok-confirm",
        ),
    ],
)
def test_tocilizumab_order_details(
    client: TestClient, record: list[Resource], order: Resource, expected: tuple[str, str], says: str
) -> None:
    """``expected``: (outcome, indicator); ``says``: text the card must carry."""
    cards = call(client, "order-sign", record, [order])
    (card,) = topic(cards, "tocilizumab-order")
    assert (check_of(card)["outcome"], card["indicator"]) == expected
    assert says in card["detail"] + card["summary"]
    if "44.85" in str(record):  # the summary's maximum is the one the dose was checked against
        assert "max 358.8 mg" in card["summary"]


# -- item 6: a corticosteroid with a cell therapy; item 8: glofitamab 72 h after CRS ---------

DEXAMETHASONE = rxnorm("3264", "dexamethasone")
TISA_CEL = atc("L01XL04", "tisagenlecleucel")
GLOFITAMAB = atc("L01FX28", "glofitamab")


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        pytest.param(AXI_CEL, ("allowed", "info"), id="dexamethasone+axi-cel->info-label-permits"),
        pytest.param(TISA_CEL, ("avoid", "warning"), id="dexamethasone+tisa-cel->warning-label-advises-against"),
    ],
)
def test_corticosteroid_ordered_with_a_cell_therapy(
    client: TestClient, product: dict[str, Any], expected: tuple[str, str]
) -> None:
    record = [*adult(75), *PREMEDS_GIVEN[1:], temperature("t1", 36.8), NORMAL_BP]
    cards = call(client, "order-sign", record, [draft("car1", product, 1), draft("dex1", DEXAMETHASONE, 10)])
    (card,) = topic(cards, "steroid-with-cell-therapy")
    assert (check_of(card)["outcome"], card["indicator"]) == expected
    assert "dexamethasone" in card["detail"]


def crs_resolved(hours_ago: float) -> list[Resource]:
    """A CRS episode whose last fever was ``hours_ago``, with normal readings since."""
    normals = [
        item
        for k, h in enumerate(x for x in (hours_ago - 6, hours_ago - 20, 8, 2) if 0 < x < hours_ago)
        for item in (temperature(f"n{k}", 37.0, hours_before=h), bp_panel(f"nb{k}", 120, 80, hours_before=h))
    ]
    return [
        temperature("f1", 38.7, hours_before=hours_ago + 10),
        temperature("f2", 38.4, hours_before=hours_ago),
        *normals,
    ]


@pytest.mark.parametrize(
    ("record", "hold"),
    [
        pytest.param(crs_resolved(48), "crs-recent", id="glofitamab-crs-resolved-48h-ago->hold"),
        pytest.param(crs_resolved(120), None, id="glofitamab-crs-resolved-5-days-ago->no-hold"),
    ],
)
def test_glofitamab_waits_72h_after_crs(client: TestClient, record: list[Resource], hold: str | None) -> None:
    cards = call(client, "order-sign", [*adult(75), *PREMEDS_GIVEN, *record], [draft("g1", GLOFITAMAB, 10)])
    found = topic(cards, "hold-crs-therapy")
    assert [check_of(c)["outcome"] for c in found] == ([hold] if hold else [])


# -- item 8: premedication per product and per dose ------------------------------------------


def earlier_doses(product: dict[str, Any], days_ago: tuple[float, ...]) -> list[Resource]:
    return [medication_administration(f"d{k}", product, hours_before=d * 24) for k, d in enumerate(days_ago)]


@pytest.mark.parametrize(
    ("product", "record", "expected"),
    [
        pytest.param(
            TECLISTAMAB,
            [],
            ("missing:corticosteroid,antihistamine,antipyretic", "warning"),
            id="teclistamab-step-up-1-no-premed->warning",
        ),
        pytest.param(
            TECLISTAMAB,
            earlier_doses(TECLISTAMAB, (6, 4)),
            ("missing:corticosteroid,antihistamine,antipyretic", "warning"),
            id="teclistamab-first-treatment-dose-3-no-premed->warning",
        ),
        pytest.param(
            TECLISTAMAB,
            earlier_doses(TECLISTAMAB, (20, 13, 9, 6)),
            ("missing:corticosteroid,antihistamine,antipyretic", "info"),
            id="teclistamab-maintenance-dose-5->info-optional",
        ),
        pytest.param(
            atc("L01FX33", "tarlatamab"), [], ("missing:corticosteroid", "warning"), id="tarlatamab->dexamethasone-only"
        ),
        pytest.param(
            atc("L01FX07", "blinatumomab"),
            [],
            ("missing:corticosteroid", "warning"),
            id="blinatumomab->dexamethasone-only",
        ),
        pytest.param(atc("L01XX75", "tebentafusp"), [], None, id="tebentafusp->no-premedication-asked"),
        pytest.param(
            atc("L01FX32", "elranatamab"),
            [medication_administration("p1", DEXAMETHASONE, hours_before=2)],
            ("missing:corticosteroid,antihistamine,antipyretic", "warning"),
            id="elranatamab-steroid-2h-before->outside-1h-window",
        ),
    ],
)
def test_premedication_per_product(
    client: TestClient, product: dict[str, Any], record: list[Resource], expected: tuple[str, str] | None
) -> None:
    base = [*adult(75), temperature("t1", 36.9), NORMAL_BP]
    cards = call(client, "order-sign", [*base, *record], [draft("tce1", product, 1)])
    premed = topic(cards, "premedication")
    if expected is None:
        assert premed == []
        return
    (card,) = premed
    assert (check_of(card)["outcome"], card["indicator"]) == expected
    assert "Rule: mappings/products" in card["detail"]


# -- items 2 and 9: a Medication referenced but not in the prefetch is read from the server ----

EHR_BASE = "https://ehr.example.org/fhir"


def toci_by_reference(rid: str, hours_before: float) -> Resource:
    out = medication_administration(rid, TOCI, hours_before=hours_before, dose=(600, "mg"))
    del out["medicationCodeableConcept"]
    out["medicationReference"] = {"reference": "Medication/med-toci"}
    return out


@pytest.mark.parametrize(
    ("server_answer", "expected"),
    [
        pytest.param(
            httpx.Response(200, json={"resourceType": "Medication", "id": "med-toci", "code": TOCI}),
            ("no-dose-allowed", "critical"),
            id="medication-read-from-server->dose-2h-ago-counted",
        ),
        pytest.param(
            httpx.Response(
                404, json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
            ),
            ("ok", "warning"),
            id="medication-not-found->administration-named-warning",
        ),
    ],
)
def test_referenced_medication_is_fetched(server_answer: httpx.Response, expected: tuple[str, str]) -> None:
    request = order_request("order-sign", [*adult(75), toci_by_reference("g1", 2)], [draft("mr1", TOCI, 600)])
    request["fhirServer"] = EHR_BASE
    settings = Settings(fhir_server_allowlist=[EHR_BASE])
    with respx.mock(assert_all_called=True) as router:
        route = router.get(f"{EHR_BASE}/Medication/med-toci").mock(return_value=server_answer)
        with TestClient(create_app(settings)) as local:
            response = local.post("/cds-services/crs-order-sign", json=request)
    assert route.call_count == 1
    assert response.status_code == 200, response.text
    (card,) = topic(response.json()["cards"], "tocilizumab-order")
    assert (check_of(card)["outcome"], card["indicator"]) == expected
    if expected[0] == "ok":
        assert "MedicationAdministration/g1" in card["detail"]


@pytest.mark.parametrize(
    ("assessments", "named"),
    [
        pytest.param([], True, id="no-ICE-charted->monitoring-card-says-ICANS-unchecked"),
        pytest.param([ice("ice1", 10)], False, id="ICE-10-charted->ICANS-checked"),
    ],
)
def test_engager_card_says_when_icans_could_not_be_checked(
    client: TestClient, assessments: list[Resource], named: bool
) -> None:
    record = [*adult(75), *PREMEDS_GIVEN, temperature("t1", 36.9), NORMAL_BP, *assessments]
    cards = call(client, "order-sign", record, [draft("tce1", TECLISTAMAB, 1)])
    (monitoring,) = topic(cards, "crs-therapy-monitoring")
    assert ("ICANS indeterminate" in monitoring["detail"]) is named
