"""order-select and order-sign through the HTTP API: tocilizumab limits at and beyond each
boundary, missing weight, paediatric dosing; before a T-cell engager or CAR-T, each infection
signal, premedication present and absent, the monitoring card; discovery and errors. Every card
passes ``check_card``, which validates each suggested resource with the R4B models."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from card_checks import check_card, empty_values, validate_r4
from fhir_builders import (
    ATC,
    LOINC,
    PATIENT_ID,
    RXNORM,
    SNOMED,
    Resource,
    atc,
    concept,
    condition,
    medication_administration,
    observation,
    patient,
    quantity,
    rxnorm,
    temperature,
    text_concept,
    weight,
    when,
)
from hook_requests import prefetch_from_bundle

T_ISO = when(0)
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
TOCI = rxnorm("612865", "tocilizumab")
TECLISTAMAB = atc("L01FX24", "teclistamab")
AXI_CEL = atc("L01XL03", "axicabtagene ciloleucel")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


# -- builders ------------------------------------------------------------------------------


def draft(rid: str, medication: dict[str, Any], dose_mg: float | None = None, *, unit: str = "mg") -> Resource:
    out: Resource = {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": medication,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": T_ISO,
    }
    if dose_mg is not None:
        out["dosageInstruction"] = [
            {"text": "IV", "doseAndRate": [{"doseQuantity": quantity(dose_mg, unit)}]},
        ]
    return out


def toci_given(rid: str, hours_before: float) -> Resource:
    return medication_administration(rid, TOCI, hours_before=hours_before, dose=(600, "mg"))


def blood_culture(rid: str, *, positive: bool, hours_before: float = 12) -> Resource:
    out = observation(rid, concept(LOINC, "600-7", "Bacteria identified in Blood by Culture"), category="laboratory")
    out["effectiveDateTime"] = when(hours_before)
    if positive:
        out["valueCodeableConcept"] = concept(SNOMED, "3092008", "Staphylococcus aureus")
        out["interpretation"] = [concept(INTERPRETATION, "POS", "Positive")]
    else:
        out["valueString"] = "No growth at 5 days"
        out["interpretation"] = [concept(INTERPRETATION, "NEG", "Negative")]
    return out


def infection_condition(rid: str, text: str, status: str = "active") -> Resource:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": concept(CLINICAL, status),
        "code": text_concept(text),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }


def bundle(resources: list[Resource]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def order_request(
    hook: str, record: list[Resource], drafts: list[Resource], *, selections: list[str] | None = None
) -> dict[str, Any]:
    data = prefetch_from_bundle(bundle(record))
    conditions = [r for r in record if r["resourceType"] == "Condition"]
    cultures = [r for r in record if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "600-7"]
    data["activeConditions"] = bundle(conditions) | {"type": "searchset"}
    data["bloodCultures"] = bundle(cultures) | {"type": "searchset"}
    context: dict[str, Any] = {
        "userId": "Practitioner/example",
        "patientId": PATIENT_ID,
        "draftOrders": bundle(drafts),
    }
    if hook == "order-select":
        context["selections"] = selections or [f"MedicationRequest/{d['id']}" for d in drafts]
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": data,
        "extension": {"crs-cds-hooks.at": T_ISO},
    }


def call(client: TestClient, hook: str, record: list[Resource], drafts: list[Resource]) -> list[dict[str, Any]]:
    service = "crs-order-select" if hook == "order-select" else "crs-order-sign"
    response = client.post(f"/cds-services/{service}", json=order_request(hook, record, drafts))
    assert response.status_code == 200, response.text
    body = response.json()
    assert empty_values(body) == []
    for card in body["cards"]:
        check_card(card)
    cards: list[dict[str, Any]] = body["cards"]
    return cards


def topic(cards: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [c for c in cards if c["source"]["topic"]["code"] == code]


def check_of(card: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = card["extension"]["crs-cds-hooks.order-check"]
    return value


# -- tocilizumab ---------------------------------------------------------------------------


def adult(kg: float) -> list[Resource]:
    return [patient(45), weight("w1", kg)]


def child(kg: float) -> list[Resource]:
    return [patient(8), weight("w1", kg)]


@dataclass(frozen=True)
class TociCase:
    record: list[Resource]
    dose_mg: float | None
    outcome: str
    indicator: str
    corrected_mg: float | None = None
    extra: list[Resource] = field(default_factory=list)


TOCI_CASES: dict[str, TociCase] = {
    "toci-600mg-75kg->ok": TociCase(adult(75), 600, "ok", "info"),
    "toci-601mg-75kg->critical": TociCase(adult(75), 601, "dose-too-high", "critical", 600),
    "toci-800mg-110kg->ok": TociCase(adult(110), 800, "ok", "info"),
    "toci-801mg-110kg->critical-800mg-cap": TociCase(adult(110), 801, "dose-too-high", "critical", 800),
    "toci-801mg-75kg->critical": TociCase(adult(75), 801, "dose-too-high", "critical", 600),
    "child-25kg-300mg->ok": TociCase(child(25), 300, "ok", "info"),
    "child-25kg-301mg->critical": TociCase(child(25), 301, "dose-too-high", "critical", 300),
    "30kg-240mg->ok-adult-rate": TociCase(adult(30), 240, "ok", "info"),
    "30kg-360mg->critical-8mg-per-kg-at-30kg": TociCase(adult(30), 360, "dose-too-high", "critical", 240),
    "no-weight->warning": TociCase([patient(45)], 600, "no-weight", "warning"),
    "no-dose-quantity->warning-with-correction": TociCase(adult(75), None, "dose-unreadable", "warning", 600),
    "toci-8h-after-last->ok": TociCase([*adult(75), toci_given("g1", 8)], 600, "ok", "info"),
    "toci-7h-after-last->critical": TociCase([*adult(75), toci_given("g1", 7)], 600, "no-dose-allowed", "critical"),
    "2-doses-24h->ok": TociCase([*adult(75), toci_given("g1", 20), toci_given("g2", 10)], 600, "ok", "info"),
    "3-doses-24h->no-dose-allowed": TociCase(
        [*adult(75), toci_given("g1", 23), toci_given("g2", 15), toci_given("g3", 9)],
        600,
        "no-dose-allowed",
        "critical",
    ),
    "3-doses-total->ok": TociCase(
        [*adult(75), toci_given("g1", 72), toci_given("g2", 48), toci_given("g3", 24.5)], 600, "ok", "info"
    ),
    "4-doses-total->no-dose-allowed": TociCase(
        [*adult(75), toci_given("g1", 96), toci_given("g2", 72), toci_given("g3", 48), toci_given("g4", 25)],
        600,
        "no-dose-allowed",
        "critical",
    ),
    "no-weight-and-7h->no-dose-allowed": TociCase(
        [patient(45), toci_given("g1", 7)], 600, "no-dose-allowed", "critical"
    ),
}


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
@pytest.mark.parametrize("case_id", list(TOCI_CASES))
def test_tocilizumab_order_limits(client: TestClient, case_id: str, hook: str) -> None:
    case = TOCI_CASES[case_id]
    cards = call(client, hook, case.record, [draft("mr1", TOCI, case.dose_mg)])
    (card,) = topic(cards, "tocilizumab-order")
    assert check_of(card) == {"check": "tocilizumab", "outcome": case.outcome, "draft": "MedicationRequest/mr1"}
    assert card["indicator"] == case.indicator
    assert "Current CRS grade" in card["detail"]
    suggestions = card.get("suggestions", [])
    if case.outcome == "no-dose-allowed":
        (suggestion,) = suggestions
        (action,) = suggestion["actions"]
        assert action == {"type": "delete", "description": action["description"], "resourceId": "MedicationRequest/mr1"}
    elif case.corrected_mg is not None:
        (suggestion,) = suggestions
        (action,) = suggestion["actions"]
        assert action["type"] == "update"
        resource = action["resource"]
        assert resource["id"] == "mr1"
        assert resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == case.corrected_mg
        validate_r4(resource)
    else:
        assert suggestions == []


def test_invalid_draft_is_replaced_by_delete_and_create(client: TestClient) -> None:
    broken = draft("mr1", TOCI, 900)
    broken["authoredOn"] = "yesterday"  # invalid R4: the corrected copy would be invalid too
    cards = call(client, "order-sign", adult(75), [broken])
    (card,) = topic(cards, "tocilizumab-order")
    (suggestion,) = card["suggestions"]
    assert [a["type"] for a in suggestion["actions"]] == ["delete", "create"]
    assert (
        suggestion["actions"][1]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 600
    )


def test_two_tocilizumab_drafts_second_is_refused(client: TestClient) -> None:
    cards = call(client, "order-sign", adult(75), [draft("mr1", TOCI, 600), draft("mr2", TOCI, 600)])
    outcomes = {check_of(c)["draft"]: check_of(c)["outcome"] for c in topic(cards, "tocilizumab-order")}
    assert outcomes == {"MedicationRequest/mr1": "ok", "MedicationRequest/mr2": "no-dose-allowed"}


def test_order_select_checks_only_selected_drafts(client: TestClient) -> None:
    request = order_request(
        "order-select",
        adult(75),
        [draft("mr1", TOCI, 900), draft("mr2", rxnorm("3264", "dexamethasone"), 10)],
        selections=["MedicationRequest/mr2"],
    )
    response = client.post("/cds-services/crs-order-select", json=request)
    assert response.status_code == 200
    assert response.json() == {"cards": []}


def test_grade_is_shown_on_order_card(client: TestClient) -> None:
    record = [*adult(75), temperature("t1", 39.0, hours_before=1)]
    cards = call(client, "order-sign", record, [draft("mr1", TOCI, 600)])
    (card,) = topic(cards, "tocilizumab-order")
    assert "CRS grade" in card["detail"] and "39" in card["detail"]


# -- T-cell engagers and CAR-T -------------------------------------------------------------

PREMEDS_GIVEN = [
    medication_administration("pd1", rxnorm("3264", "dexamethasone"), hours_before=1),
    medication_administration("pd2", atc("R06AA02", "diphenhydramine"), hours_before=1),
    medication_administration("pd3", atc("N02BE01", "paracetamol"), hours_before=1),
]


@dataclass(frozen=True)
class EngagerCase:
    record: list[Resource]
    product: dict[str, Any]
    infection: str | None
    premed_missing: str | None
    drafts: list[Resource] = field(default_factory=list)
    hold: str | None = None
    """The hold card's outcome (issue 16: a fever in the last 24 h holds an engager dose)."""


ENGAGER_CASES: dict[str, EngagerCase] = {
    "teclistamab-clean-premed-given->monitoring-only": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 37.0)], TECLISTAMAB, None, None
    ),
    "teclistamab-fever-no-crs->infection-warning-and-hold": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 38.4, hours_before=3)],
        TECLISTAMAB,
        "fever",
        None,
        hold="crs+fever",
    ),
    "teclistamab-fever-after-step-up-dose->no-infection-but-hold": EngagerCase(
        [
            *adult(75),
            *PREMEDS_GIVEN,
            medication_administration("sud1", TECLISTAMAB, hours_before=72),
            temperature("t1", 38.4, hours_before=3),
        ],
        TECLISTAMAB,
        None,
        None,
        hold="crs+fever",
    ),
    "teclistamab-fever-with-crs-condition->no-infection-but-hold": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, condition("c1", "D89.831"), temperature("t1", 38.4, hours_before=3)],
        TECLISTAMAB,
        None,
        None,
        hold="crs+fever",
    ),
    "teclistamab-positive-blood-culture->infection-warning": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, blood_culture("bc1", positive=True)], TECLISTAMAB, "blood-culture", None
    ),
    "teclistamab-negative-blood-culture->no-infection": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, blood_culture("bc1", positive=False)], TECLISTAMAB, None, None
    ),
    "teclistamab-blood-culture-8-days-old->no-infection": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, blood_culture("bc1", positive=True, hours_before=8 * 24)], TECLISTAMAB, None, None
    ),
    "teclistamab-active-sepsis-condition->infection-warning": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, infection_condition("c1", "Sepsis due to E. coli")], TECLISTAMAB, "condition", None
    ),
    "teclistamab-resolved-pneumonia->no-infection": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, infection_condition("c1", "Pneumonia", status="resolved")],
        TECLISTAMAB,
        None,
        None,
    ),
    "teclistamab-fever-and-culture->both-named": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN, temperature("t1", 38.9, hours_before=2), blood_culture("bc1", positive=True)],
        TECLISTAMAB,
        "fever+blood-culture",
        None,
        hold="crs+fever",
    ),
    "teclistamab-no-premed->premed-warning": EngagerCase(
        adult(75), TECLISTAMAB, None, "corticosteroid,antihistamine,antipyretic"
    ),
    "teclistamab-premed-4h-ago->premed-warning": EngagerCase(
        [
            *adult(75),
            *(
                medication_administration(r["id"], r["medicationCodeableConcept"], hours_before=4)
                for r in PREMEDS_GIVEN
            ),
        ],
        TECLISTAMAB,
        None,
        "corticosteroid,antihistamine,antipyretic",
    ),
    "teclistamab-steroid-only->antihistamine-antipyretic-missing": EngagerCase(
        [*adult(75), PREMEDS_GIVEN[0]], TECLISTAMAB, None, "antihistamine,antipyretic"
    ),
    "teclistamab-premed-ordered->no-premed-warning": EngagerCase(
        adult(75),
        TECLISTAMAB,
        None,
        None,
        drafts=[
            draft("pm1", rxnorm("3264", "dexamethasone"), 16),
            draft("pm2", atc("R06AA02", "diphenhydramine"), 50),
            draft("pm3", text_concept("acetaminophen 650 mg tablet"), 650),
        ],
    ),
    "axi-cel-no-premed->antipyretic-antihistamine-missing": EngagerCase(
        adult(75), AXI_CEL, None, "antihistamine,antipyretic"
    ),
    "axi-cel-premed-given->no-premed-warning-no-steroid-needed": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN[1:]], AXI_CEL, None, None
    ),
    "epcoritamab-by-name->recognised": EngagerCase(
        [*adult(75), *PREMEDS_GIVEN], text_concept("Epkinly 48 mg SC"), None, None
    ),
}


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
@pytest.mark.parametrize("case_id", list(ENGAGER_CASES))
def test_t_cell_engager_and_car_t_orders(client: TestClient, case_id: str, hook: str) -> None:
    case = ENGAGER_CASES[case_id]
    cards = call(client, hook, case.record, [draft("tce1", case.product, 0.06 * 75), *case.drafts])
    infection = topic(cards, "infection-before-crs-therapy")
    premed = topic(cards, "premedication")
    hold = topic(cards, "hold-crs-therapy")
    (monitoring,) = topic(cards, "crs-therapy-monitoring")
    assert monitoring["indicator"] == "info"
    assert "tocilizumab" in monitoring["detail"].lower() and "caregiver" in monitoring["detail"]
    if case.infection is None:
        assert infection == []
    else:
        (card,) = infection
        assert card["indicator"] == "warning"
        assert check_of(card)["outcome"] == case.infection
    if case.premed_missing is None:
        assert premed == []
    else:
        (card,) = premed
        assert card["indicator"] == "warning"
        assert check_of(card)["outcome"] == "missing:" + case.premed_missing
        assert len(card["suggestions"]) == len(case.premed_missing.split(","))
    if case.hold is None:
        assert hold == []
    else:
        (card,) = hold
        assert card["indicator"] == "critical"
        assert check_of(card)["outcome"] == case.hold
    assert len(cards) == 1 + len(infection) + len(premed) + len(hold)


def test_infection_card_names_each_signal(client: TestClient) -> None:
    record = [
        *adult(75),
        *PREMEDS_GIVEN,
        temperature("t1", 38.9, hours_before=2),
        blood_culture("bc1", positive=True),
        infection_condition("c1", "Urinary tract infection"),
    ]
    cards = call(client, "order-sign", record, [draft("tce1", TECLISTAMAB, 4.5)])
    (card,) = topic(cards, "infection-before-crs-therapy")
    assert "Observation/t1" in card["detail"] and "Observation/bc1" in card["detail"]
    assert "Condition/c1" in card["detail"]
    assert "fever without CRS" in card["summary"] and "positive blood culture" in card["summary"]


def test_other_drafts_give_no_cards(client: TestClient) -> None:
    cards = call(client, "order-sign", adult(75), [draft("mr1", rxnorm("3264", "dexamethasone"), 10)])
    assert cards == []


# -- discovery, errors, feedback -----------------------------------------------------------


def test_discovery_lists_order_services_with_prefetch(client: TestClient) -> None:
    services = {s["id"]: s for s in client.get("/cds-services").json()["services"]}
    assert services["crs-grade"]["hook"] == "patient-view"
    for service_id, hook in (("crs-order-select", "order-select"), ("crs-order-sign", "order-sign")):
        service = services[service_id]
        assert service["hook"] == hook and service["title"] and service["description"]
        icans_keys = {"icansAssessments", "iceQuestionnaires"}  # patient-view only
        assert set(services["crs-grade"]["prefetch"]) - icans_keys <= set(service["prefetch"])
        assert (
            service["prefetch"]["activeConditions"] == "Condition?patient={{context.patientId}}&clinical-status=active"
        )
        assert (
            service["prefetch"]["bloodCultures"]
            == "Observation?patient={{context.patientId}}&code=http://loinc.org|600-7"
        )


ErrorCase = Callable[[dict[str, Any]], None]


def _drop_draft_orders(request: dict[str, Any]) -> None:
    del request["context"]["draftOrders"]


def _draft_orders_not_bundle(request: dict[str, Any]) -> None:
    request["context"]["draftOrders"] = {"resourceType": "MedicationRequest"}


def _wrong_hook(request: dict[str, Any]) -> None:
    request["hook"] = "patient-view"


def _bad_selections(request: dict[str, Any]) -> None:
    request["context"]["selections"] = "MedicationRequest/mr1"


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        pytest.param(_drop_draft_orders, 422, id="no-draft-orders->422"),
        pytest.param(_draft_orders_not_bundle, 422, id="draft-orders-not-bundle->422"),
        pytest.param(_bad_selections, 422, id="selections-not-a-list->422"),
        pytest.param(_wrong_hook, 400, id="patient-view-to-order-service->400"),
    ],
)
def test_order_hook_errors(client: TestClient, mutate: ErrorCase, status: int) -> None:
    request = order_request("order-select", adult(75), [draft("mr1", TOCI, 600)])
    mutate(request)
    response = client.post("/cds-services/crs-order-select", json=request)
    assert response.status_code == status
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]


def test_order_hook_to_patient_view_service_is_400(client: TestClient) -> None:
    request = order_request("order-sign", adult(75), [draft("mr1", TOCI, 600)])
    assert client.post("/cds-services/crs-grade", json=request).status_code == 400


def test_missing_order_prefetch_without_fhir_server_is_412(client: TestClient) -> None:
    request = order_request("order-sign", adult(75), [draft("mr1", TOCI, 600)])
    del request["prefetch"]["bloodCultures"]
    assert client.post("/cds-services/crs-order-sign", json=request).status_code == 412


def test_feedback_accepted_for_order_services(client: TestClient) -> None:
    cards = call(client, "order-sign", adult(75), [draft("mr1", TOCI, 900)])
    feedback = {
        "feedback": [
            {
                "card": cards[0]["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": cards[0]["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": T_ISO,
            }
        ]
    }
    assert client.post("/cds-services/crs-order-sign/feedback", json=feedback).status_code == 200
    assert client.post("/cds-services/no-such-service/feedback", json=feedback).status_code == 404


def test_builders_are_valid_r4() -> None:
    for resource in (
        draft("mr1", TOCI, 600),
        blood_culture("bc1", positive=True),
        blood_culture("bc2", positive=False),
        infection_condition("c1", "Sepsis"),
    ):
        validate_r4(resource)
    assert ATC and RXNORM
