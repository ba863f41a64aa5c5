"""Order-check findings -> CDS Hooks cards for order-select and order-sign.

One card per finding, each with ``source.topic`` naming the check and an extension
``crs-cds-hooks.order-check`` (check, outcome, draft) that a client or test can read. Every
suggested resource is validated against the FHIR R4 (R4B) models before it is offered; a
corrected draft that would not validate is replaced by a fresh order (delete + create).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

from cds_hooks.advice.cards import ASCO_URL, ATC, RXNORM, SCORE_TITLES, UCUM, Indicator, score_lines, summary_line
from cds_hooks.advice.cards import EXTENSION_KEY as RESULT_EXTENSION_KEY
from cds_hooks.advice.display import display_text, local_time, site_zone
from cds_hooks.advice.dosing import MAX_DOSE_MG, NEXT_STEPS_WHEN_BLOCKED
from cds_hooks.advice.order_checks import (
    BLOOD_CULTURE_LOOKBACK,
    CRS_EXPLAINS_FEVER_AFTER_THERAPY,
    EngagerOrderFinding,
    OrderFindings,
    TocilizumabOrderFinding,
    TociOutcome,
)
from cds_hooks.cds import Action, Card, Coding, Link, Source, Suggestion
from cds_hooks.grading.easix import risk_before_infusion
from cds_hooks.pipeline.evaluate import Evaluation
from cds_hooks.reading.evidence_check import validation_problem
from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.terminology import MedicationRole

EXTENSION_KEY = "crs-cds-hooks.order-check"
TOPIC_SYSTEM = "https://crs-cds-hooks.example.org/CodeSystem/topic"
OVERRIDE_SYSTEM = "https://crs-cds-hooks.example.org/CodeSystem/override-reason"

TOPIC_TOCILIZUMAB = "tocilizumab-order"
TOPIC_HOLD = "hold-crs-therapy"
TOPIC_STEROID_PROPHYLAXIS = "steroid-with-cell-therapy"
TOPIC_INFECTION = "infection-before-crs-therapy"
TOPIC_PREMEDICATION = "premedication"
TOPIC_MONITORING = "crs-therapy-monitoring"
TOPIC_RISK = "crs-risk-before-infusion"

ORDER_OVERRIDE_REASONS = [
    Coding(
        system=OVERRIDE_SYSTEM, code="clinical-judgement", display="Clinical judgement: appropriate for this patient"
    ),
    Coding(system=OVERRIDE_SYSTEM, code="data-incorrect", display="Charted data are incorrect"),
    Coding(system=OVERRIDE_SYSTEM, code="already-addressed", display="Already addressed"),
]

ROLE_TEXT: Mapping[MedicationRole, str] = {
    MedicationRole.CORTICOSTEROID: "corticosteroid",
    MedicationRole.ANTIHISTAMINE: "antihistamine",
    MedicationRole.ANTIPYRETIC: "antipyretic",
}
PREMEDICATION_ORDER: Mapping[MedicationRole, tuple[str, tuple[str, str], str]] = {
    # role -> (name, coding, dosage text); doses are the prescriber's (label and protocol).
    MedicationRole.CORTICOSTEROID: (
        "dexamethasone",
        (RXNORM, "3264"),
        "Premedication 1-3 h before the dose; dose per product label (e.g. teclistamab: 16 mg) and protocol.",
    ),
    MedicationRole.ANTIHISTAMINE: (
        "diphenhydramine",
        (ATC, "R06AA02"),
        "Premedication 1-3 h before the dose (30-60 min before CAR-T infusion); dose per label and protocol.",
    ),
    MedicationRole.ANTIPYRETIC: (
        "acetaminophen",
        (ATC, "N02BE01"),
        "Premedication 1-3 h before the dose (30-60 min before CAR-T infusion); dose per label and protocol.",
    ),
}


def build_order_cards(
    evaluation: Evaluation, findings: OrderFindings, source_label: str, *, site_timezone: str | None = None
) -> list[Card]:
    """The order-check cards; times on them in ``site_timezone`` (UTC when unset), as on the CRS card."""
    zone = site_zone(site_timezone)
    cards: list[Card] = []
    for toci in findings.tocilizumab:
        cards.append(_tocilizumab_card(evaluation, toci, source_label, zone))
    for engager in findings.engagers:
        if engager.hold:
            cards.append(_hold_card(evaluation, engager, source_label, zone))
        if engager.infection:
            cards.append(_infection_card(evaluation, engager, source_label, zone))
        if engager.premedication_missing:
            cards.append(_premedication_card(evaluation, engager, source_label, zone))
        if engager.steroid_with_product is not None:
            cards.append(_steroid_prophylaxis_card(evaluation, engager, source_label, zone))
        cards.append(_monitoring_card(evaluation, engager, source_label, zone))
        if engager.product_class == "car-t":
            cards.extend(_risk_card(evaluation, engager, source_label, zone))
    return cards


# -- shared --------------------------------------------------------------------------------


def _clip(text: str, limit: int = 139) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _source(label: str, topic: str, display: str) -> Source:
    return Source(label=label, url=ASCO_URL, topic=Coding(system=TOPIC_SYSTEM, code=topic, display=display))


def _grade_line(evaluation: Evaluation, zone: tzinfo) -> str:
    grade = summary_line(evaluation.primary, zone)
    return f"**Current CRS grade:** {grade} at {local_time(evaluation.at, zone)}."


def _extension(check: str, outcome: str, draft: str | None) -> dict[str, Any]:
    value: dict[str, Any] = {"check": check, "outcome": outcome}
    if draft is not None:
        value["draft"] = draft
    return {EXTENSION_KEY: value}


def _links() -> list[Link]:
    return [Link(label="ASCO guideline: CAR-T toxicity management (2021)", url=ASCO_URL, type="absolute")]


def _cell(value: object, zone: tzinfo) -> str:
    """A Markdown table cell or list item, units and times as a clinician reads them."""
    return display_text(str(value), zone).replace("|", "\\|").replace("\n", " ")


# -- tocilizumab ---------------------------------------------------------------------------

_TOCI_INDICATOR: Mapping[TociOutcome, Indicator] = {
    TociOutcome.OK: "info",
    TociOutcome.NO_WEIGHT: "warning",
    TociOutcome.DOSE_UNREADABLE: "warning",
    TociOutcome.DOSE_TOO_HIGH: "critical",
    TociOutcome.NO_DOSE_ALLOWED: "critical",
    TociOutcome.WRONG_ROUTE: "critical",
    TociOutcome.INTERVAL_TOO_SHORT: "critical",
    TociOutcome.WEIGHT_TOO_OLD: "warning",
}


def _toci_summary(finding: TocilizumabOrderFinding) -> str:
    draft = finding.draft
    dose = f"{draft.dose_mg:g} mg" if draft.dose_mg is not None else "dose not readable"
    match finding.outcome:
        case TociOutcome.NO_DOSE_ALLOWED:
            return f"No tocilizumab dose allowed now: {finding.reasons[0]}"
        case TociOutcome.DOSE_TOO_HIGH:
            return f"Tocilizumab {dose} exceeds the label limit: max {finding.limit_mg:g} mg now"
        case TociOutcome.WRONG_ROUTE:
            return f"Tocilizumab for CRS is IV only: {finding.reasons[0]}"
        case TociOutcome.INTERVAL_TOO_SHORT:
            return f"Tocilizumab schedule too frequent: {finding.reasons[0]}"
        case TociOutcome.WEIGHT_TOO_OLD:
            return "Tocilizumab dose cannot be checked: the latest weight is too old for dosing"
        case TociOutcome.NO_WEIGHT:
            return "Tocilizumab dose cannot be checked: no body weight charted"
        case TociOutcome.DOSE_UNREADABLE:
            return "Tocilizumab order has no readable dose in mg: cannot be checked"
        case _:
            return f"Tocilizumab {dose} within label limits (max {finding.limit_mg:g} mg now)"


def _tocilizumab_card(evaluation: Evaluation, finding: TocilizumabOrderFinding, label: str, zone: tzinfo) -> Card:
    lines = [_grade_line(evaluation, zone), ""]
    if finding.reasons:
        lines += [f"- {_cell(reason, zone)}" for reason in finding.reasons] + [""]
    if finding.outcome is TociOutcome.NO_DOSE_ALLOWED:
        lines += [f"**Tocilizumab blocked:** {NEXT_STEPS_WHEN_BLOCKED}.", ""]
    lines += ["| Limit | Status | Order / record | Allowed |", "|---|---|---|---|"]
    for check in finding.checks:
        status = "not checked" if check.ok is None else ("ok" if check.ok else "**exceeded**")
        lines.append(f"| {check.limit} | {status} | {_cell(check.value, zone)} | {_cell(check.threshold, zone)} |")
    if finding.weight is not None:
        lines += [
            "",
            f"Weight {display_text(finding.weight.original)} at {local_time(finding.weight.time, zone)} "
            f"({finding.weight.reference}).",
        ]
        if finding.calculation:
            lines.append(f"Maximum dose now: {display_text(finding.calculation, zone)}.")
    lines += [f"- {note}" for note in finding.notes]
    lines += [
        "",
        "Label limits (Actemra and CAR-T labels, ASCO 2021): 8 mg/kg IV over 1 h (12 mg/kg under 30 kg), never "
        f"more than {MAX_DOSE_MG:g} mg per dose; repeat only if no clinical improvement, at least 8 h apart; no more "
        "than 3 doses in 24 h and 4 in total for one CRS event (the current episode and any episode resolved less "
        "than 7 days before it, plus every dose of the last 7 days [choice]). The draft is checked as if given now "
        "[choice].",
    ]
    suggestions = _toci_suggestions(evaluation, finding)
    indicator = _TOCI_INDICATOR[finding.outcome]
    summary = _toci_summary(finding)
    unidentified = evaluation.record.unidentified_administrations
    if indicator == "info" and unidentified:
        # A dose that cannot be identified may be tocilizumab: "within limits" is not proven.
        indicator = "warning"
        summary += f"; {len(unidentified)} administration(s) with an unidentified drug"
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_clip(summary),
        detail="\n".join(lines),
        indicator=indicator,
        source=_source(label, TOPIC_TOCILIZUMAB, "Tocilizumab order check"),
        suggestions=suggestions or None,
        selectionBehavior="at-most-one" if suggestions else None,
        overrideReasons=ORDER_OVERRIDE_REASONS if finding.outcome is not TociOutcome.OK else None,
        links=_links(),
        extension=_extension("tocilizumab", finding.outcome.value, finding.draft.reference),
    )


def _toci_suggestions(evaluation: Evaluation, finding: TocilizumabOrderFinding) -> list[Suggestion]:
    draft = finding.draft
    if finding.outcome is TociOutcome.NO_DOSE_ALLOWED:
        if draft.reference is None:
            return []
        return [
            Suggestion(
                label="Remove the tocilizumab order: no dose is allowed now",
                uuid=str(uuid.uuid4()),
                isRecommended=True,
                actions=[
                    Action(
                        type="delete",
                        description=f"Remove the draft tocilizumab order: {finding.reasons[0]}",
                        resourceId=draft.reference,
                    )
                ],
            )
        ]
    if (
        finding.outcome not in (TociOutcome.DOSE_TOO_HIGH, TociOutcome.DOSE_UNREADABLE)
        or finding.allowed_dose_mg is None
    ):
        return []
    dose = finding.allowed_dose_mg
    corrected = corrected_tocilizumab(draft.resource, dose, finding.calculation)
    description = f"Tocilizumab {dose:g} mg IV over 1 h ({finding.calculation})"
    actions: list[Action]
    if draft.resource_id is not None and validation_problem(corrected) is None:
        actions = [Action(type="update", description=f"Change the draft to {description}", resource=corrected)]
    else:
        fresh = fresh_tocilizumab(evaluation, dose, finding.calculation)
        actions = []
        if draft.reference is not None:
            actions.append(
                Action(type="delete", description="Remove the draft tocilizumab order", resourceId=draft.reference)
            )
        actions.append(Action(type="create", description=f"Order {description}", resource=fresh))
    return [
        Suggestion(
            label=f"Tocilizumab {dose:g} mg IV over 1 h (label maximum)",
            uuid=str(uuid.uuid4()),
            isRecommended=True,
            actions=actions,
        )
    ]


def _dose_quantity(mg: float) -> dict[str, Any]:
    return {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}


def _dosage_text(dose: float, calculation: str) -> str:
    return (
        f"{dose:g} mg IV over 1 hour ({calculation}). Repeat only if no clinical improvement, at least 8 h apart; "
        "no more than 3 doses in 24 h and 4 in total."
    )


def corrected_tocilizumab(draft: Mapping[str, Any], dose: float, calculation: str) -> dict[str, Any]:
    """The draft with its first dose replaced by ``dose`` mg (everything else kept)."""
    resource = copy.deepcopy(dict(draft))
    dosage = resource.get("dosageInstruction")
    if not isinstance(dosage, list) or not dosage or not isinstance(dosage[0], dict):
        dosage = [{}]
        resource["dosageInstruction"] = dosage
    first = dosage[0]
    first["text"] = _dosage_text(dose, calculation)
    first["doseAndRate"] = [{"doseQuantity": _dose_quantity(dose)}]
    first["maxDosePerAdministration"] = _dose_quantity(MAX_DOSE_MG)
    return resource


def fresh_tocilizumab(evaluation: Evaluation, dose: float, calculation: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {"system": RXNORM, "code": "612865", "display": "tocilizumab"},
                {"system": ATC, "code": "L04AC07", "display": "tocilizumab"},
            ],
            "text": "tocilizumab",
        },
        "subject": {"reference": evaluation.patient_reference or "Patient/unknown"},
        "authoredOn": iso(evaluation.at),
        "dosageInstruction": [
            {
                "text": _dosage_text(dose, calculation),
                "route": {"text": "intravenous"},
                "doseAndRate": [{"doseQuantity": _dose_quantity(dose)}],
                "maxDosePerAdministration": _dose_quantity(MAX_DOSE_MG),
            }
        ],
    }
    return resource


# -- T-cell engagers and CAR-T -------------------------------------------------------------


def _product(finding: EngagerOrderFinding) -> str:
    name = (finding.draft.agent or finding.draft.display).replace("_", " ")
    return name


def _rule_source(finding: EngagerOrderFinding) -> str:
    """Which label rule the card applies, and whether it was checked against the label."""
    rule = finding.rule
    return f"Rule: mappings/products ({rule.family}), from {rule.source.cite}."


_HOLD_KIND_TEXT: Mapping[str, str] = {
    "crs": "CRS",
    "possible-crs": "possible CRS",
    "icans": "ICANS",
    "fever": "fever",
    "crs-recent": "recent CRS",
}


def _steroid_prophylaxis_card(evaluation: Evaluation, finding: EngagerOrderFinding, label: str, zone: tzinfo) -> Card:
    """A corticosteroid ordered with a cell therapy: what its label says (allowed or avoid)."""
    product = _product(finding)
    stance = finding.rule.steroid_prophylaxis
    assert stance is not None and finding.steroid_with_product is not None
    allowed = stance.stance == "allowed"
    lines = [
        _grade_line(evaluation, zone),
        "",
        f"**Corticosteroid with {product}:** {_cell(finding.steroid_with_product, zone)}.",
        f"Label: {stance.text}",
        "",
        _rule_source(finding),
    ]
    verb = "permitted by the label as prophylaxis" if allowed else "the label advises against prophylactic use"
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_clip(f"Corticosteroid with {product}: {verb}"),
        detail="\n".join(lines),
        indicator="info" if allowed else "warning",
        source=_source(label, TOPIC_STEROID_PROPHYLAXIS, "Corticosteroid with a cell therapy"),
        overrideReasons=None if allowed else ORDER_OVERRIDE_REASONS,
        links=_links(),
        extension=_extension("steroid-with-cell-therapy", stance.stance, finding.draft.reference),
    )


def _hold_card(evaluation: Evaluation, finding: EngagerOrderFinding, label: str, zone: tzinfo) -> Card:
    """Critical: the label says to withhold the dose during CRS or ICANS (and a fever may be CRS)."""
    product = _product(finding)
    rule = finding.rule
    assert rule.hold is not None
    first = finding.hold[0]
    lines = [
        _grade_line(evaluation, zone),
        "",
        f"**Hold {product}.** Label: {rule.hold.text}",
        "",
        "Why now:",
        *(
            f"- {_cell(reason.text, zone)} ({', '.join(reason.references) or 'no reference'})"
            for reason in finding.hold
        ),
        "",
        f"Rule [choice]: hold when CRS is grade >= {rule.hold.crs_min_grade} (or at least it, or possible CRS with "
        f"masked fever), ICANS grade >= {rule.hold.icans_min_grade}"
        + (", or a temperature >= 38.0 °C in the last 24 h" if rule.hold.fever else "")
        + ". Resume per the label once CRS and ICANS have resolved.",
        _rule_source(finding),
    ]
    lines += [f"- {note}" for note in finding.notes]
    draft = finding.draft
    suggestions = (
        [
            Suggestion(
                label=f"Remove the {product} order: hold the dose",
                uuid=str(uuid.uuid4()),
                isRecommended=True,
                actions=[
                    Action(
                        type="delete",
                        description=f"Remove the draft {product} order: {first.text}",
                        resourceId=draft.reference,
                    )
                ],
            )
        ]
        if draft.reference is not None
        else []
    )
    kinds = " and ".join(dict.fromkeys(_HOLD_KIND_TEXT[r.kind] for r in finding.hold))
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_clip(f"Hold {product}: {kinds} now ({first.text})"),
        detail="\n".join(lines),
        indicator="critical",
        source=_source(label, TOPIC_HOLD, "Hold a CRS-causing therapy during CRS or ICANS"),
        suggestions=suggestions or None,
        selectionBehavior="at-most-one" if suggestions else None,
        overrideReasons=ORDER_OVERRIDE_REASONS,
        links=_links(),
        extension=_extension("hold", "+".join(dict.fromkeys(r.kind for r in finding.hold)), draft.reference),
    )


def _infection_card(evaluation: Evaluation, finding: EngagerOrderFinding, label: str, zone: tzinfo) -> Card:
    product = _product(finding)
    kinds = {"fever": "fever without CRS", "blood-culture": "positive blood culture", "condition": "infection"}
    named = ", ".join(dict.fromkeys(kinds[s.kind] for s in finding.infection))
    rule = finding.rule
    lines = [
        _grade_line(evaluation, zone),
        "",
        f"**Signs of active infection before {product}.** Label: {rule.infection_text}",
        *(f"- {_cell(s.text, zone)} ({s.reference})" for s in finding.infection),
        "",
        f"Rules [choice]: fever >= 38.0 °C in the last 24 h unexplained by CRS (no CRS-causing therapy in the "
        f"{CRS_EXPLAINS_FEVER_AFTER_THERAPY.days} days before it, no active CRS Condition); a blood culture "
        f"(LOINC 600-7 or a site code) interpreted positive in the last {BLOOD_CULTURE_LOOKBACK.days} days; an active "
        "Condition coded or named as infection, sepsis, bacteraemia, pneumonia...",
        "",
        _rule_source(finding),
    ]
    lines += [f"- {note}" for note in finding.notes]
    verb = "Do not give" if rule.infection_indicator == "critical" else "Signs of active infection before"
    summary = f"{verb} {product}: {named}" + (" (active infection, boxed warning)" if verb == "Do not give" else "")
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_clip(summary),
        detail="\n".join(lines),
        indicator=rule.infection_indicator,
        source=_source(label, TOPIC_INFECTION, "Active infection before CRS-causing therapy"),
        overrideReasons=ORDER_OVERRIDE_REASONS,
        links=_links(),
        extension=_extension(
            "infection", "+".join(dict.fromkeys(s.kind for s in finding.infection)), finding.draft.reference
        ),
    )


def _premedication_card(evaluation: Evaluation, finding: EngagerOrderFinding, label: str, zone: tzinfo) -> Card:
    product = _product(finding)
    missing = [ROLE_TEXT.get(role, role.value) for role in finding.premedication_missing]
    premed = finding.rule.premedication
    hours = f"{premed.window_before.total_seconds() / 3600:g}"
    lines = [
        _grade_line(evaluation, zone),
        "",
        f"**No premedication found for {product}:** {', '.join(missing)} neither given in the last {hours} h nor "
        "ordered in these draft orders.",
    ]
    if finding.premedication_found:
        lines += ["", "Found:", *(f"- {_cell(text, zone)}" for text in finding.premedication_found.values())]
    required = finding.premedication_required
    if premed.required_doses is None:
        which = "The label asks for it before every dose."
    else:
        which = (
            f"This is dose {finding.dose_number} as charted; the label asks for it before the first "
            f"{premed.required_doses} doses"
            + ("." if required else ": optional now, unless dosing restarts after an interruption (step-up again).")
        )
    lines += [
        "",
        f"Label rule for {product}: {premed.text}; for {premed.doses}. {which} Doses are counted from the "
        "administrations charted, not from the order's schedule [choice].",
        _rule_source(finding),
    ]
    patient = evaluation.patient_reference
    suggestions = [_premed_suggestion(role, patient) for role in finding.premedication_missing] if patient else []
    suggestions = [s for s in suggestions if s is not None]
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_clip(
            f"No premedication for {product}: {', '.join(missing)} missing"
            + ("" if required else f" (dose {finding.dose_number}: optional per label)")
        ),
        detail="\n".join(lines),
        indicator="warning" if required else "info",
        source=_source(label, TOPIC_PREMEDICATION, "Premedication before CRS-causing therapy"),
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=ORDER_OVERRIDE_REASONS,
        links=_links(),
        extension=_extension("premedication", "missing:" + ",".join(missing), finding.draft.reference),
    )


def _premed_suggestion(role: MedicationRole, patient: str | None) -> Suggestion | None:
    spec = PREMEDICATION_ORDER.get(role)
    if spec is None or patient is None:
        return None
    name, (system, code), text = spec
    resource = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"coding": [{"system": system, "code": code, "display": name}], "text": name},
        "subject": {"reference": patient},
        "dosageInstruction": [{"text": text}],
    }
    return Suggestion(
        label=f"Premedication: {name} ({ROLE_TEXT[role]}), dose per label",
        uuid=str(uuid.uuid4()),
        actions=[Action(type="create", description=f"Order {name} as premedication; {text}", resource=resource)],
    )


def _monitoring_card(evaluation: Evaluation, finding: EngagerOrderFinding, label: str, zone: tzinfo) -> Card:
    product = _product(finding)
    if finding.product_class == "car-t":
        availability = "- Tocilizumab available on site before infusion."
    else:
        availability = (
            "- Anti-IL-6R therapy (tocilizumab) available for immediate use; vital signs including temperature."
        )
    lines = [
        _grade_line(evaluation, zone),
        "",
        f"**Before {product}** ({'cell therapy' if finding.product_class == 'car-t' else 'T-cell engager'}):",
        *(f"- {_cell(item, zone)}" for item in finding.rule.monitoring),
        availability,
        "- Patient and caregiver education: CRS and neurotoxicity (ICANS) signs, when to call, wallet card; "
        "no driving as the label advises.",
        "",
        _rule_source(finding),
    ]
    if finding.infection_gaps:
        lines += [
            "",
            "**Could not check for infection:**",
            *(f"- {_cell(gap, zone)}" for gap in finding.infection_gaps),
        ]
    lines += [f"- {note}" for note in finding.notes]
    return Card(
        uuid=str(uuid.uuid4()),
        summary=_clip(
            f"{product.capitalize()}: plan monitoring, have tocilizumab available, educate patient and caregiver"
        ),
        detail="\n".join(lines),
        indicator="info",
        source=_source(label, TOPIC_MONITORING, "Monitoring plan for CRS-causing therapy"),
        links=_links(),
        extension=_extension("monitoring", finding.product_class, finding.draft.reference),
    )


def _risk_card(evaluation: Evaluation, finding: EngagerOrderFinding, label: str, zone: tzinfo) -> list[Card]:
    """m-EASIX and EASIX before a CAR-T infusion, as information: never a reason to withhold.

    None when no lab they read was charted in the window (no card rather than an empty one).
    """
    scores = risk_before_infusion(evaluation.record, evaluation.at)
    if not scores:
        return []
    product = _product(finding)
    lines = [
        f"**Risk indices before {product}** (validated in CD19 CAR-T cohorts, not for T-cell engagers): "
        "information for the team, not a recommendation to withhold or delay therapy.",
    ]
    for score in scores:
        lines += [display_text(line, zone) for line in score_lines(score)]
    values = ", ".join(
        f"{SCORE_TITLES[score.system]} {score.value:g}"
        if score.value is not None
        else f"{SCORE_TITLES[score.system]} not computable"
        for score in scores
    )
    return [
        Card(
            uuid=str(uuid.uuid4()),
            summary=_clip(f"Before {product}: {values} (information, not a reason to withhold)"),
            detail="\n".join(lines),
            indicator="info",
            source=_source(label, TOPIC_RISK, "Risk of severe CRS before CAR-T infusion"),
            extension={
                **_extension("risk-before-infusion", finding.product_class, finding.draft.reference),
                RESULT_EXTENSION_KEY: [score.to_json() for score in scores],
            },
        )
    ]
