"""Issue 17: the CRS card, safe where a clinician would be.

Each table pins one rule of clinical-reference.md section 1, "Safety rules settled after a
clinical review (2026-11-30)", as a bedside reviewer would check it: the grade (or "indeterminate",
"at least", "possible grade N"), the resources it cites or refuses, and what the card says and
offers (indicator, summary, guidance text, one-click suggestions). Rows are written from the rule,
not only from the issue's examples.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from cds_hooks.advice.cards import build_cards
from cds_hooks.cds import Card
from cds_hooks.cli import as_text
from cds_hooks.grading import GradingConfig
from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.reader import SourcedResource, product_components
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from pydantic import ValidationError

from fhir_builders import (
    RXNORM,
    SNOMED,
    Resource,
    T,
    atc,
    bp_panel,
    concept,
    device,
    medication_administration,
    o2_flow,
    patient,
    procedure,
    reference,
    room_air,
    rxnorm,
    temperature,
    text_concept,
    weight,
)
from test_astct_rules import Expect, check

# -- shared pieces -------------------------------------------------------------------------

ADULT = patient(45)
FEVER = temperature("t-fever", 38.5)
AFEBRILE = temperature("t-afebrile", 37.0)
NORMAL_BP = bp_panel("bp-normal", 120, 80)
LOW_BP = bp_panel("bp-84", 84, 50)
NOREPINEPHRINE = rxnorm("7512", "norepinephrine")
EPINEPHRINE = rxnorm("3992", "epinephrine")
PHENYLEPHRINE = rxnorm("8163", "phenylephrine")
TOCILIZUMAB = rxnorm("612865", "tocilizumab")
DEXAMETHASONE = rxnorm("3264", "dexamethasone")
IV = concept(SNOMED, "47625008", "Intravenous route")
IO = concept(SNOMED, "60213007", "Intraosseous route")
OPHTHALMIC = concept(SNOMED, "54485002", "Ophthalmic route")
INTRAMUSCULAR = concept(SNOMED, "78421000", "Intramuscular route")
NRB = ("427591007", "Nonrebreather oxygen mask")
HFNC = ("426854004", "High flow oxygen nasal cannula")
NC = ("336623009", "Oxygen nasal cannula")
ETT = ("26412008", "Endotracheal tube")


def running(rid: str, medication: dict[str, Any], *, route: dict[str, Any] | None = None, **kw: Any) -> Resource:
    """An infusion in progress since 2 h before T, with a charted route when given."""
    out = medication_administration(rid, medication, status="in-progress", hours_before=2.0, **kw)
    if route is not None:
        out.setdefault("dosage", {})["route"] = route
    return out


def dated(resource: Resource, day: str) -> Resource:
    """The same resource with a date-only effective time (``2025-03-03``)."""
    out = copy.deepcopy(resource)
    out.pop("effectivePeriod", None)
    out["effectiveDateTime"] = day
    return out


def infant(months: int, rid: str = "p1") -> Resource:
    """A Patient ``months`` old at T (born on the 1st of a month)."""
    year, month = T.year, T.month - months
    while month < 1:
        year, month = year - 1, month + 12
    return {"resourceType": "Patient", "id": rid, "birthDate": f"{year:04d}-{month:02d}-01"}


def grading_with(**config: Any) -> Grading:
    return Grading(load_terminology(), load_units(), GradingConfig(**config), systems=("ASTCT-2019", "MSKCC"))


@pytest.fixture(scope="module")
def grading() -> Grading:
    return grading_with()


def run(grading: Grading, resources: Sequence[Resource]) -> Evaluation:
    sourced = [SourcedResource(copy.deepcopy(r), reference(r)) for r in resources]
    return evaluate(sourced, patient_id="p1", at=T, grading=grading)


@dataclass(frozen=True)
class CardExpect:
    """What the CRS card must show and offer."""

    indicator: str
    summary: tuple[str, ...] = ()
    detail: tuple[str, ...] = ()
    not_detail: tuple[str, ...] = ()
    offers: tuple[str, ...] = ()
    """Fragments each found in some suggestion label."""
    not_offers: tuple[str, ...] = ()


def crs_card(evaluation: Evaluation) -> Card:
    cards = build_cards(evaluation)
    assert len(cards) == 1, f"expected one CRS card, got {len(cards)}"
    return cards[0]


def check_card(card: Card, expect: CardExpect) -> None:
    assert card.indicator == expect.indicator, f"indicator {card.indicator}, summary {card.summary!r}"
    for fragment in expect.summary:
        assert fragment.lower() in card.summary.lower(), f"summary {card.summary!r} lacks {fragment!r}"
    detail = card.detail or ""
    for fragment in expect.detail:
        assert fragment.lower() in detail.lower(), f"detail lacks {fragment!r}:\n{detail}"
    for fragment in expect.not_detail:
        assert fragment.lower() not in detail.lower(), f"detail shows {fragment!r}:\n{detail}"
    labels = [s.label for s in card.suggestions or []]
    for fragment in expect.offers:
        assert any(fragment.lower() in label.lower() for label in labels), f"{fragment!r} not offered: {labels}"
    for fragment in expect.not_offers:
        assert not any(fragment.lower() in label.lower() for label in labels), f"{fragment!r} offered: {labels}"


# -- 2. route decides what a vasopressor is; whole names; the worst grade's evidence ----------

ROUTE_CASES = [
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("phe", PHENYLEPHRINE, route=OPHTHALMIC)],
        Expect(1, worst=1, rejected={"MedicationAdministration/phe": "ophthalmic"}),
        id="phenylephrine-eye-drops-coded-ophthalmic->not-pressor->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("phe", PHENYLEPHRINE, route=text_concept("Both eyes"))],
        Expect(1, worst=1, rejected={"MedicationAdministration/phe": "not vasopressor support"}),
        id="phenylephrine-route-text-both-eyes->not-pressor->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("phe", text_concept("Phenylephrine 2.5% ophthalmic solution"))],
        Expect(1, worst=1, rejected={"MedicationAdministration/phe": "not vasopressor support"}),
        id="phenylephrine-ophthalmic-by-name-no-route->not-pressor->grade-1",
    ),
    pytest.param(
        [
            ADULT,
            FEVER,
            NORMAL_BP,
            running("phe", concept(RXNORM, "8163", "Phenylephrine 2.5 % eye drops", text="Phenylephrine")),
        ],
        Expect(1, rejected={"MedicationAdministration/phe": "not vasopressor support"}),
        id="phenylephrine-code-with-eye-drops-display-no-route->not-pressor->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("lido", text_concept("Lidocaine 1% with epinephrine 1:100,000"))],
        Expect(1, worst=1, rejected={"MedicationAdministration/lido": "combination product"}),
        id="lidocaine-with-epinephrine->not-pressor->grade-1",
    ),
    pytest.param(
        [
            ADULT,
            FEVER,
            NORMAL_BP,
            running("lido", text_concept("lidocaine HCl 10 MG/ML / epinephrine 0.01 MG/ML Injectable Solution")),
        ],
        Expect(1, worst=1, rejected={"MedicationAdministration/lido": "combination product"}),
        id="lidocaine/epinephrine-RxNorm-style-name->not-pressor->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("bupi", text_concept("bupivacaine-epinephrine"))],
        Expect(1, worst=1, not_cited=("MedicationAdministration/bupi",)),
        id="bupivacaine-epinephrine-hyphenated->not-pressor->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("epi", EPINEPHRINE, route=INTRAMUSCULAR)],
        Expect(1, rejected={"MedicationAdministration/epi": "intramuscular"}),
        id="epinephrine-intramuscular->not-pressor-support->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("ne", text_concept("Norepinephrine 4 mg in 250 mL sodium chloride 0.9%"))],
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="norepinephrine-in-saline-by-name->pressor->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("ne", text_concept("Norepinephrine 4 mg/250 mL in dextrose 5%"))],
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="norepinephrine-dextrose-premix-diluent-not-a-second-drug->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("ne", NOREPINEPHRINE, route=IV)],
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="norepinephrine-intravenous->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("ne", NOREPINEPHRINE, route=IO)],
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="norepinephrine-intraosseous->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("ne", NOREPINEPHRINE)],
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="norepinephrine-route-not-charted->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, running("ne", NOREPINEPHRINE, route=text_concept("via PICC"))],
        Expect(3, details={"MedicationAdministration/ne": "not recognised"}),
        id="norepinephrine-unrecognised-route-counted-and-said->grade-3",
    ),
    pytest.param(
        [
            ADULT,
            FEVER,
            NORMAL_BP,
            running("ne", NOREPINEPHRINE, route=IV),
            running("phe", PHENYLEPHRINE, route=OPHTHALMIC),
        ],
        Expect(3, cited=("MedicationAdministration/ne",), not_cited=("MedicationAdministration/phe",)),
        id="norepinephrine-IV+phenylephrine-eye-drops->one-pressor->grade-3-not-4",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), ROUTE_CASES)
def test_route_and_whole_names_decide_vasopressors(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


@pytest.mark.parametrize(
    ("text", "components"),
    [
        pytest.param("Norepinephrine 16 mcg/mL in sodium chloride", 1, id="diluent-and-units"),
        pytest.param("epinephrine 0.1 mcg/kg/min", 1, id="rate-units"),
        pytest.param("Lidocaine 1% with epinephrine", 2, id="with"),
        pytest.param("lidocaine and epinephrine", 2, id="and"),
        pytest.param("lidocaine/epinephrine", 2, id="slash"),
        pytest.param("articaine + epinephrine", 2, id="plus"),
    ],
)
def test_product_components(text: str, components: int) -> None:
    assert len(product_components(text)) == components


def test_worst_grade_shows_its_own_evidence(grading: Grading) -> None:
    """Norepinephrine ran 10-6 h ago while febrile; now grade 1: the card shows the worst grade's rows."""
    resources = [
        ADULT,
        temperature("t-early", 38.7, hours_before=9),
        FEVER,
        NORMAL_BP,
        medication_administration("ne", NOREPINEPHRINE, status="completed", period=(10, 6)),
    ]
    evaluation = run(grading, resources)
    result = evaluation.primary
    assert (result.grade, result.worst_grade) == (1, 3)
    assert "MedicationAdministration/ne" in {e.reference for e in result.worst_grade_evidence}
    check_card(
        crs_card(evaluation),
        CardExpect(
            "info", summary=("worst 3",), detail=("Evidence for the worst grade (3", "MedicationAdministration/ne")
        ),
    )


# -- 4. masked fever after prophylaxis; 5. a pressor with no temperature ----------------------

TOCI_5D = medication_administration("toci", TOCILIZUMAB, hours_before=5 * 24)
BREAKTHROUGH_30H = temperature("t-30h", 38.4, hours_before=30)

MASKED_CASES = [
    pytest.param(
        [ADULT, TOCI_5D, BREAKTHROUGH_30H, AFEBRILE, LOW_BP],
        Expect(
            None,
            at_least=0,
            possible=2,
            missing=("possible CRS with masked fever: grade 2 if CRS", "tocilizumab"),
        ),
        id="prophylactic-tocilizumab-5d+fever-30h+SBP-84->possible-grade-2",
    ),
    pytest.param(
        [
            ADULT,
            medication_administration("silt", atc("L04AC11", "siltuximab"), hours_before=13 * 24),
            AFEBRILE,
            NORMAL_BP,
            device("nrb", *NRB),
        ],
        Expect(None, at_least=0, possible=3, missing=("grade 3 if CRS",)),
        id="siltuximab-13d+afebrile-on-NRB->possible-grade-3",
    ),
    pytest.param(
        [ADULT, medication_administration("toci", TOCILIZUMAB, hours_before=15 * 24), AFEBRILE, LOW_BP],
        Expect(0),
        id="tocilizumab-15d-window-over->grade-0",
    ),
    pytest.param(
        [ADULT, medication_administration("ana", atc("L04AC03", "anakinra"), hours_before=20), AFEBRILE, LOW_BP],
        Expect(None, at_least=0, possible=2),
        id="anakinra-20h+SBP-84->possible-grade-2",
    ),
    pytest.param(
        [ADULT, medication_administration("ana", atc("L04AC03", "anakinra"), hours_before=30), AFEBRILE, LOW_BP],
        Expect(0),
        id="anakinra-30h-window-over->grade-0",
    ),
    pytest.param(
        [ADULT, medication_administration("dex", DEXAMETHASONE, hours_before=70), AFEBRILE, LOW_BP],
        Expect(None, at_least=0, possible=2),
        id="dexamethasone-70h+SBP-84->possible-grade-2",
    ),
    pytest.param(
        [ADULT, medication_administration("dex", DEXAMETHASONE, hours_before=80), AFEBRILE, LOW_BP],
        Expect(0),
        id="dexamethasone-80h-window-over->grade-0",
    ),
    pytest.param(
        [ADULT, medication_administration("apap", atc("N02BE01", "paracetamol"), hours_before=6), AFEBRILE, LOW_BP],
        Expect(None, at_least=0, possible=2),
        id="acetaminophen-6h+SBP-84->possible-grade-2",
    ),
    pytest.param(
        [ADULT, medication_administration("apap", atc("N02BE01", "paracetamol"), hours_before=10), AFEBRILE, LOW_BP],
        Expect(0),
        id="acetaminophen-10h-window-over->grade-0",
    ),
    pytest.param(
        [ADULT, TOCI_5D, AFEBRILE, NORMAL_BP],
        Expect(0, alerts=("fever may be masked",)),
        id="prophylactic-tocilizumab-no-sign->grade-0+masked-alert",
    ),
    pytest.param(
        [ADULT, TOCI_5D, FEVER, LOW_BP],
        Expect(2, components={"fever": "met"}),
        id="prophylactic-tocilizumab-but-febrile->graded-2",
    ),
    pytest.param(
        [
            ADULT,
            temperature("t-prior", 38.6, hours_before=72),
            medication_administration("toci", TOCILIZUMAB, hours_before=60),
            AFEBRILE,
            LOW_BP,
        ],
        Expect(2, components={"fever": "masked"}),
        id="established-CRS-then-tocilizumab->masking-rule-unchanged->grade-2",
    ),
    pytest.param(
        [ADULT, NORMAL_BP, running("ne", NOREPINEPHRINE)],
        Expect(None, possible=3, missing=("take a temperature now",)),
        id="pressor-no-temperature->indeterminate-possible-3",
    ),
    pytest.param(
        [ADULT, LOW_BP],
        Expect(None, possible=2, missing=("no usable body temperature",)),
        id="low-BP-no-temperature->indeterminate-possible-2",
    ),
    pytest.param(
        [ADULT, NORMAL_BP],
        Expect(None, possible=None, missing=("take a temperature now",)),
        id="no-temperature-no-sign->indeterminate-no-possible-grade",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), MASKED_CASES)
def test_masked_fever_and_missing_temperature(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


def test_masking_windows_are_configurable() -> None:
    shorter = grading_with(masking_windows_hours=(("tocilizumab", 48.0),))
    check(run(shorter, [ADULT, TOCI_5D, BREAKTHROUGH_30H, AFEBRILE, LOW_BP]).primary, Expect(0))
    assert (
        "tocilizumab 48 h" in run(shorter, [ADULT, AFEBRILE, NORMAL_BP]).primary.choices["maskedFeverAfterProphylaxis"]
    )


MASKED_CARDS = [
    pytest.param(
        [ADULT, TOCI_5D, BREAKTHROUGH_30H, AFEBRILE, LOW_BP],
        CardExpect(
            "warning",
            summary=("Possible CRS with masked fever: grade 2 if CRS",),
            not_detail=("No CRS-directed treatment",),
        ),
        id="masked-fever-possible-2->warning-card",
    ),
    pytest.param(
        [ADULT, TOCI_5D, AFEBRILE, NORMAL_BP, device("nrb", *NRB)],
        CardExpect("critical", summary=("grade 3 if CRS",), not_detail=("No CRS-directed treatment",)),
        id="masked-fever-possible-3->critical-card",
    ),
    pytest.param(
        [ADULT, NORMAL_BP, running("ne", NOREPINEPHRINE)],
        CardExpect(
            "critical",
            summary=("grade 3 if febrile", "take one now"),
            detail=("Take a temperature now", "Possible grade 3"),
            not_detail=("No CRS-directed treatment",),
        ),
        id="pressor-no-temperature->critical-card-asks-for-temperature",
    ),
    pytest.param(
        [ADULT, NORMAL_BP],
        CardExpect("info", detail=("Take a temperature now",), not_detail=("No CRS-directed treatment",)),
        id="no-temperature-no-sign->info-card-asks-for-temperature",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), MASKED_CARDS)
def test_indeterminate_cards_say_what_to_do(grading: Grading, resources: list[Resource], expect: CardExpect) -> None:
    check_card(crs_card(run(grading, resources)), expect)


# -- 6. children; 7. fluid boluses only with hypotension -------------------------------------

FIXED_ADULT_DOSE = re.compile(r"\b(10 mg IV q6h|1000 mg|500 mg q12h|10 mg IV every)", re.IGNORECASE)

CHILD_CARDS = [
    pytest.param(
        [patient(5), weight("w", 16), FEVER, NORMAL_BP, running("ne", NOREPINEPHRINE)],
        CardExpect(
            "critical",
            detail=("weight-based, per paediatric protocol", "Tocilizumab dose now: **192 mg IV**"),
            offers=("Tocilizumab 192 mg",),
            not_offers=("Dexamethasone", "Methylprednisolone"),
        ),
        id="16-kg-child-grade-3->weight-based-text+tocilizumab-12-mg/kg",
    ),
    pytest.param(
        [
            infant(7),
            weight("w", 7.5),
            FEVER,
            NORMAL_BP,
            running("ne", NOREPINEPHRINE),
            running("epi", EPINEPHRINE),
        ],
        CardExpect(
            "critical",
            detail=("weight-based, per paediatric protocol", "starts at 2 years"),
            not_offers=("Tocilizumab", "Dexamethasone", "Methylprednisolone"),
        ),
        id="7-month-infant-grade-4->no-tocilizumab-dose-under-2-years",
    ),
    pytest.param(
        [patient(17), weight("w", 60), FEVER, LOW_BP],
        CardExpect("warning", detail=("weight-based, per paediatric protocol",), not_offers=("Dexamethasone",)),
        id="17-year-old-grade-2->no-fixed-adult-dose",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), CHILD_CARDS)
def test_children_get_no_fixed_adult_dose(grading: Grading, resources: list[Resource], expect: CardExpect) -> None:
    card = crs_card(run(grading, resources))
    check_card(card, expect)
    assert not FIXED_ADULT_DOSE.search(card.detail or ""), f"fixed adult dose in the text:\n{card.detail}"
    for suggestion in card.suggestions or []:
        assert not FIXED_ADULT_DOSE.search(suggestion.label), suggestion.label


def test_one_year_old_is_offered_no_tocilizumab(grading: Grading) -> None:
    """Under 2 years (here 1 year, 10 kg): the label's age limit, said, and no order."""
    card = crs_card(run(grading, [patient(1), weight("w", 10), FEVER, bp_panel("bp", 65, 35)]))
    check_card(card, CardExpect("warning", detail=("starts at 2 years",), not_offers=("Tocilizumab",)))


def test_adult_still_gets_the_asco_doses(grading: Grading) -> None:
    card = crs_card(run(grading, [patient(18), weight("w", 80), FEVER, NORMAL_BP, running("ne", NOREPINEPHRINE)]))
    check_card(card, CardExpect("critical", detail=("dexamethasone 10 mg IV q6h",), offers=("Dexamethasone 10 mg",)))


FLUID_CARDS = [
    pytest.param(
        [ADULT, weight("w", 80), FEVER, NORMAL_BP, device("nrb", *NRB)],
        CardExpect("critical", detail=("not for hypoxia alone",), not_detail=("bolus",), not_offers=("fluid bolus",)),
        id="NRB-normal-pressure->no-fluid-bolus",
    ),
    pytest.param(
        [ADULT, weight("w", 80), FEVER, NORMAL_BP, device("nc", *NC), o2_flow("flow", 3)],
        CardExpect("warning", not_offers=("fluid bolus",)),
        id="low-flow-oxygen-normal-pressure->no-fluid-bolus",
    ),
    pytest.param(
        [ADULT, weight("w", 80), FEVER, NORMAL_BP, device("ett", *ETT)],
        CardExpect("critical", not_offers=("fluid bolus",)),
        id="intubated-normal-pressure->no-fluid-bolus",
    ),
    pytest.param(
        [ADULT, weight("w", 80), FEVER, LOW_BP],
        CardExpect("warning", detail=("Fluid boluses for hypotension",), offers=("fluid bolus",)),
        id="SBP-84->fluid-bolus-offered",
    ),
    pytest.param(
        [ADULT, weight("w", 80), FEVER, NORMAL_BP, running("ne", NOREPINEPHRINE), device("nrb", *NRB)],
        CardExpect("critical", offers=("fluid bolus",)),
        id="pressor+NRB->fluid-bolus-offered",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), FLUID_CARDS)
def test_fluid_bolus_only_with_hypotension(grading: Grading, resources: list[Resource], expect: CardExpect) -> None:
    check_card(crs_card(run(grading, resources)), expect)


# -- 3. flow decides low vs high flow with any nasal cannula ----------------------------------

FLOW_CASES = [
    pytest.param(
        [infant(8), FEVER, NORMAL_BP, device("hfnc", *HFNC), o2_flow("flow", 5)],
        Expect(2, cited=("Observation/hfnc", "Observation/flow"), assumptions=("5 L/min",)),
        id="infant-HFNC-5-L/min->low-flow->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, device("hfnc", *HFNC), o2_flow("flow", 6)],
        Expect(2),
        id="HFNC-6-L/min->low-flow->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, device("hfnc", *HFNC), o2_flow("flow", 7)],
        Expect(3),
        id="HFNC-7-L/min->high-flow->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, device("hfnc", *HFNC), o2_flow("flow", 5000, "mL/min")],
        Expect(2),
        id="HFNC-5000-mL/min->low-flow->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, device("hfnc", *HFNC)],
        Expect(3),
        id="HFNC-no-flow-charted->device-decides->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, device("nc", *NC), o2_flow("flow", 8)],
        Expect(3),
        id="nasal-cannula-8-L/min->high-flow->grade-3",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), FLOW_CASES)
def test_flow_decides_with_any_nasal_cannula(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


def test_card_names_device_and_flow(grading: Grading) -> None:
    card = crs_card(run(grading, [infant(8), FEVER, NORMAL_BP, device("hfnc", *HFNC), o2_flow("flow", 5)]))
    check_card(card, CardExpect("warning", summary=("high flow oxygen nasal cannula", "5 L/min")))


# -- 8. support that began before CRS -------------------------------------------------------

HOME_CPAP = procedure(
    "cpap", "47545007", "Continuous positive airway pressure ventilation treatment", period=(75, None)
)

PRIOR_SUPPORT_CARDS = [
    pytest.param(
        [ADULT, weight("w", 80), FEVER, NORMAL_BP, HOME_CPAP],
        CardExpect(
            "critical",
            detail=("possibly due to another cause", "no grade-4 steroid order"),
            not_offers=("Methylprednisolone",),
        ),
        id="home-CPAP-3d-before-first-fever->grade-4-no-methylprednisolone",
    ),
    pytest.param(
        [
            ADULT,
            weight("w", 80),
            temperature("t-first", 38.9, hours_before=10),
            FEVER,
            NORMAL_BP,
            procedure(
                "cpap", "47545007", "Continuous positive airway pressure ventilation treatment", period=(5, None)
            ),
        ],
        CardExpect("critical", offers=("Methylprednisolone",)),
        id="CPAP-started-after-first-fever->grade-4-methylprednisolone-offered",
    ),
    pytest.param(
        [
            ADULT,
            weight("w", 80),
            FEVER,
            NORMAL_BP,
            medication_administration("ne", NOREPINEPHRINE, status="in-progress", period=(48, None)),
            medication_administration("epi", EPINEPHRINE, status="in-progress", period=(48, None)),
        ],
        CardExpect("critical", detail=("possibly due to another cause",), not_offers=("Methylprednisolone",)),
        id="two-pressors-since-before-first-fever->grade-4-no-methylprednisolone",
    ),
    pytest.param(
        [
            ADULT,
            weight("w", 80),
            FEVER,
            NORMAL_BP,
            HOME_CPAP,
            medication_administration("ne", NOREPINEPHRINE, status="in-progress", period=(0.5, None)),
            medication_administration("epi", EPINEPHRINE, status="in-progress", period=(0.5, None)),
        ],
        CardExpect("critical", offers=("Methylprednisolone",)),
        id="home-CPAP+two-pressors-after-fever->grade-4-rests-on-pressors->methylprednisolone",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), PRIOR_SUPPORT_CARDS)
def test_support_begun_before_crs(grading: Grading, resources: list[Resource], expect: CardExpect) -> None:
    evaluation = run(grading, resources)
    assert evaluation.primary.grade == 4, "the grade still follows the ASTCT table"
    check_card(crs_card(evaluation), expect)


CPAP_MASK = ("706226000", "Continuous positive airway pressure/Bilevel positive airway pressure mask")

CPAP_CHARTED_CASES = [
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, device("cpap-3d", *CPAP_MASK, hours_before=72), device("cpap-now", *CPAP_MASK)],
        ("Observation/cpap-now",),
        id="CPAP-charted-3d-before-and-now-no-room-air-between->possibly-another-cause",
    ),
    pytest.param(
        [
            ADULT,
            FEVER,
            NORMAL_BP,
            device("cpap-3d", *CPAP_MASK, hours_before=72),
            room_air("ra", hours_before=48),
            device("cpap-now", *CPAP_MASK),
        ],
        (),
        id="CPAP-3d-then-room-air-then-CPAP-after-fever->not-flagged",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, device("nc-3d", *NC, hours_before=72), device("cpap-now", *CPAP_MASK)],
        (),
        id="home-nasal-cannula-then-CPAP-now->CPAP-run-began-with-CRS->not-flagged",
    ),
]


@pytest.mark.parametrize(("resources", "flagged"), CPAP_CHARTED_CASES)
def test_support_run_start_decides(grading: Grading, resources: list[Resource], flagged: tuple[str, ...]) -> None:
    result = run(grading, resources).primary
    assert result.grade == 4
    assert result.support_before_crs == flagged


def test_home_cpap_is_shown_as_possibly_another_cause(grading: Grading) -> None:
    result = run(grading, [ADULT, FEVER, NORMAL_BP, HOME_CPAP]).primary
    check(result, Expect(4, alerts=("began before the first CRS sign",), details={"Procedure/cpap": "another cause"}))
    assert result.support_before_crs == ("Procedure/cpap",)
    assert result.grade_without_prior_support == 1


# -- 9. derived MAP; ended administrations; MSKCC masked hypotension ------------------------

SMALLER_CASES = [
    pytest.param(
        [ADULT, FEVER, bp_panel("bp", 92, 40)],
        Expect(2, cited=("Observation/bp",), assumptions=("derived from systolic 92 / diastolic 40",)),
        id="SBP-92/DBP-40-charted-together->MAP-57-derived->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, bp_panel("bp", 92, 40, mean=70)],
        Expect(1),
        id="charted-MAP-70-wins-over-derived->grade-1",
    ),
    pytest.param(
        [patient(8), FEVER, bp_panel("bp", 92, 40)],
        Expect(1),
        id="child-8y-MAP-not-used->grade-1",
    ),
    pytest.param(
        [
            ADULT,
            temperature("t-early", 38.7, hours_before=7),
            FEVER,
            NORMAL_BP,
            medication_administration("ne", NOREPINEPHRINE, status="in-progress", period=(6, 2)),
        ],
        Expect(1, worst=3, not_cited=("MedicationAdministration/ne",), worst_cited=("MedicationAdministration/ne",)),
        id="in-progress-NE-whose-period-ended-2h-ago->ended->grade-1",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), SMALLER_CASES)
def test_smaller_rules(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


@pytest.mark.parametrize(
    ("fever", "expected"),
    [
        pytest.param(FEVER, 1, id="febrile+SBP-84->MSKCC-1"),
        pytest.param(AFEBRILE, 1, id="masked+SBP-84->MSKCC-1-not-0"),
    ],
)
def test_mskcc_masked_hypotension_matches_unmasked(grading: Grading, fever: Resource, expected: int) -> None:
    resources = [
        ADULT,
        temperature("t-prior", 38.6, hours_before=72),
        medication_administration("toci", TOCILIZUMAB, hours_before=60),
        fever,
        LOW_BP,
    ]
    mskcc = next(r for r in run(grading, resources).results if r.system == "MSKCC")
    assert mskcc.grade == expected


# -- 1. imprecise (date-only) times are intervals -------------------------------------------

FIRST_FEVER = temperature("t-first", 38.9, effective="2025-03-01T06:00:00Z")
NE = running("ne", NOREPINEPHRINE)

IMPRECISE_CASES = [
    pytest.param(
        grading_with(),
        [
            ADULT,
            FIRST_FEVER,
            dated(medication_administration("toci", TOCILIZUMAB), "2025-03-03"),
            AFEBRILE,
            NORMAL_BP,
            NE,
        ],
        Expect(
            3, cited=("MedicationAdministration/toci", "MedicationAdministration/ne"), components={"fever": "masked"}
        ),
        id="date-only-tocilizumab-2-days-after-first-fever->masked->grade-3",
    ),
    pytest.param(
        grading_with(),
        [
            ADULT,
            FIRST_FEVER,
            dated(medication_administration("toci", TOCILIZUMAB), "2025-03-01"),
            AFEBRILE,
            NORMAL_BP,
            NE,
        ],
        Expect(None, at_least=0, possible=3),
        id="date-only-tocilizumab-on-onset-day->before-or-after-unknown->indeterminate",
    ),
    pytest.param(
        grading_with(),
        [ADULT, temperature("t", 38.5, effective="2025-03-04"), NORMAL_BP],
        Expect(None, missing=("date-only time",)),
        id="date-only-fever-today->may-be-outside-24h->indeterminate",
    ),
    pytest.param(
        grading_with(fever_window_hours=72),
        [ADULT, temperature("t", 38.5, effective="2025-03-02"), NORMAL_BP],
        Expect(1, cited=("Observation/t",)),
        id="date-only-fever-wholly-inside-72h-window->grade-1",
    ),
    pytest.param(
        grading_with(fever_window_hours=48, site_timezone="UTC"),
        [ADULT, temperature("t", 38.5, effective="2025-03-03"), NORMAL_BP],
        Expect(1, cited=("Observation/t",)),
        id="date-only-fever-in-site-zone-wholly-inside-48h->grade-1",
    ),
    pytest.param(
        grading_with(fever_window_hours=48),
        [ADULT, temperature("t", 38.5, effective="2025-03-03"), NORMAL_BP],
        Expect(None, missing=("date-only time",)),
        id="date-only-fever-any-offset-partly-outside-48h->indeterminate",
    ),
    pytest.param(
        grading_with(),
        [ADULT, FEVER, NORMAL_BP, dated(running("ne", NOREPINEPHRINE), "2025-03-03")],
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="in-progress-NE-dated-yesterday->surely-running->grade-3",
    ),
    pytest.param(
        grading_with(),
        [ADULT, FEVER, NORMAL_BP, dated(medication_administration("ne", NOREPINEPHRINE), "2025-03-04")],
        Expect(None, at_least=1, missing=("date-only time",)),
        id="completed-NE-dated-today->may-be-in-effect->at-least-1",
    ),
    pytest.param(
        grading_with(),
        [ADULT, FEVER, NORMAL_BP, dated(bp_panel("bp-low", 80, 45), "2025-03-04")],
        Expect(None, at_least=1, missing=("date-only time",)),
        id="date-only-low-BP-today->may-be-in-window->at-least-1",
    ),
]


@pytest.mark.parametrize(("grading_", "resources", "expect"), IMPRECISE_CASES)
def test_imprecise_times_are_intervals(grading_: Grading, resources: list[Resource], expect: Expect) -> None:
    result = run(grading_, resources).primary
    check(result, expect)
    assert not any("date only" in n.reason for n in result.not_evidence), "a date-only record was dropped"


DATED_FIRST_FEVER = temperature("t-first", 38.9, effective="2025-03-01")


@pytest.mark.parametrize(
    ("toci_day", "expect"),
    [
        pytest.param(
            "2025-03-02", Expect(3, components={"fever": "masked"}), id="both-date-only-toci-next-day->masked-3"
        ),
        pytest.param("2025-03-01", Expect(None, at_least=0, possible=3), id="both-date-only-same-day->unknown"),
    ],
)
def test_two_date_only_times_share_the_site_offset(grading: Grading, toci_day: str, expect: Expect) -> None:
    """A dose dated the day after the (date-only) onset day is after onset, whatever the offset."""
    toci = dated(medication_administration("toci", TOCILIZUMAB), toci_day)
    check(run(grading, [ADULT, DATED_FIRST_FEVER, toci, AFEBRILE, NORMAL_BP, NE]).primary, expect)


def test_derived_map_is_named_on_the_card(grading: Grading) -> None:
    card = crs_card(run(grading, [ADULT, FEVER, bp_panel("bp", 92, 40)]))
    check_card(card, CardExpect("warning", summary=("MAP 57.3 mmHg",), detail=("derived from systolic 92",)))


def performed_on(resource: Resource, day: str) -> Resource:
    out = copy.deepcopy(resource)
    out.pop("performedPeriod", None)
    out["performedDateTime"] = day
    return out


CPAP = procedure("cpap", "47545007", "Continuous positive airway pressure ventilation treatment")


@pytest.mark.parametrize(
    ("status", "expect"),
    [
        pytest.param("in-progress", Expect(4, cited=("Procedure/cpap",)), id="CPAP-in-progress-dated-today->grade-4"),
        pytest.param(
            "completed",
            Expect(None, at_least=1, missing=("date-only time",)),
            id="CPAP-completed-dated-today->may-be-in-force->at-least-1",
        ),
    ],
)
def test_date_only_procedures_are_intervals(grading: Grading, status: str, expect: Expect) -> None:
    cpap = performed_on(CPAP, "2025-03-04")
    cpap["status"] = status
    result = run(grading, [ADULT, FEVER, NORMAL_BP, cpap]).primary
    check(result, expect)
    assert not result.not_evidence


def test_date_only_tocilizumab_counts_at_its_latest_for_the_interval_limit(grading: Grading) -> None:
    """A dose dated today may have been given an hour ago: no repeat dose is computed from it."""
    resources = [
        ADULT,
        weight("w", 80),
        FEVER,
        LOW_BP,
        dated(medication_administration("toci", TOCILIZUMAB), "2025-03-04"),
    ]
    advice = run(grading, resources).tocilizumab
    assert advice.dose_mg is None
    assert advice.reason is not None and "date-only" in advice.reason


def test_issue_case_date_only_tocilizumab_gets_a_card(grading: Grading) -> None:
    resources = [
        ADULT,
        FIRST_FEVER,
        dated(medication_administration("toci", TOCILIZUMAB), "2025-03-03"),
        AFEBRILE,
        NORMAL_BP,
        NE,
    ]
    card = crs_card(run(grading, resources))
    check_card(card, CardExpect("critical", summary=("CRS grade 3",)))


def test_other_systems_never_say_no_crs_when_fever_may_be_masked(grading: Grading) -> None:
    evaluation = run(grading, [ADULT, TOCI_5D, BREAKTHROUGH_30H, AFEBRILE, LOW_BP])
    mskcc = next(r for r in evaluation.results if r.system == "MSKCC")
    assert mskcc.grade is None
    assert any("possible CRS with masked fever" in m for m in mskcc.missing)


def test_cli_text_shows_the_possible_grade(grading: Grading) -> None:
    text = as_text(run(grading, [ADULT, NORMAL_BP, running("ne", NOREPINEPHRINE)]))
    assert "ASTCT-2019: grade indeterminate (possible grade 3 if CRS)" in text


@pytest.mark.parametrize(
    ("route_text", "counted"),
    [
        pytest.param("IV push", True, id="IV-push->counted"),
        pytest.param("Intravenous infusion", True, id="intravenous-infusion->counted"),
        pytest.param("OU", False, id="OU-both-eyes->not-counted"),
        pytest.param("Nebulised", False, id="nebulised->not-counted"),
        pytest.param("Subcutaneous", False, id="subcutaneous->not-counted"),
    ],
)
def test_route_text_decides(grading: Grading, route_text: str, counted: bool) -> None:
    resources = [ADULT, FEVER, NORMAL_BP, running("epi", EPINEPHRINE, route=text_concept(route_text))]
    result = run(grading, resources).primary
    assert result.grade == (3 if counted else 1)
    if counted:
        assert not any("not recognised" in (e.detail or "") for e in result.evidence)


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        pytest.param({"CRS_CDS_MASKING_WINDOWS_HOURS": "tocilizumab=48,antipyretic=6"}, True, id="windows-override"),
        pytest.param({"CRS_CDS_MASKING_WINDOWS_HOURS": "tocilizumab"}, False, id="window-without-hours-refused"),
        pytest.param({"CRS_CDS_MASKING_WINDOWS_HOURS": "anakinra=-1"}, False, id="negative-window-refused"),
        pytest.param({"CRS_CDS_SITE_TIMEZONE": "Europe/Paris"}, True, id="site-zone"),
        pytest.param({"CRS_CDS_SITE_TIMEZONE": "Mars/Olympus"}, False, id="unknown-zone-refused"),
    ],
)
def test_settings_for_the_new_choices(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], ok: bool) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if not ok:
        with pytest.raises(ValidationError):
            Settings()
        return
    config = Settings().grading_config()
    windows = dict(config.masking_windows_hours)
    if "CRS_CDS_MASKING_WINDOWS_HOURS" in env:
        assert (windows["tocilizumab"], windows["antipyretic"], windows["siltuximab"]) == (48.0, 6.0, 336.0)
    if "CRS_CDS_SITE_TIMEZONE" in env:
        assert config.site_timezone == "Europe/Paris"
