"""Order checks (order-select, order-sign): the draft MedicationRequests against the record.

Two checks, both pure (no I/O, no clock: the caller passes ``at``):

- **Tocilizumab**: the draft dose against 8 mg/kg (12 mg/kg under 30 kg) capped at 800 mg, the
  time since the last dose (>= 8 h), doses in the last 24 h (< 3 before this one) and in total
  (< 4 before this one). Limits from ``dosing.py`` (Actemra and CAR-T labels, ASCO 2021).
- **T-cell engager / CAR-T** (medication concepts with role ``crs_therapy``), by the product's
  rule in ``mappings/products/`` (``reading/products.py``): hold the dose during CRS or ICANS or
  with a fever (the engager labels' boxed warnings), signs of active infection, premedication
  ordered or given, and the monitoring reminder.

The draft dose is taken to be given at ``at`` (the hook call's time) [choice]: an order for a
later time is checked as if given now, which is the stricter reading.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from cds_hooks.advice.dosing import (
    MAX_DOSE_MG,
    MAX_DOSES_PER_24H,
    MAX_DOSES_TOTAL,
    MIN_INTERVAL,
    dose_calculation,
    dose_history,
    weight_basis,
    whole_vial_dose_mg,
)
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.episodes import crs_episodes
from cds_hooks.grading.result import GradeResult
from cds_hooks.reading.fhir_rules import codings, reference_of, text_candidates
from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.products import ProductClass, ProductRule, ProductRules
from cds_hooks.reading.record import Administration, DataSource, NotEvidence, PatientRecord, Weight
from cds_hooks.reading.terminology import CodeMatch, ConceptKind, MedicationRole, Terminology
from cds_hooks.reading.units import Converted, UnitTable

FEVER_CELSIUS = 38.0
FEVER_WINDOW = timedelta(hours=24)
"""A fever in (at - 24 h, at] is a sign of infection unless CRS explains it."""
CRS_EXPLAINS_FEVER_AFTER_THERAPY = timedelta(days=14)
"""[choice] A fever within 14 days after a CRS-causing therapy, or with an active CRS Condition,
is taken as explained by CRS (the ASTCT prior-CRS look-back)."""
BLOOD_CULTURE_LOOKBACK = timedelta(days=7)
"""[choice] A positive blood culture in the last 7 days is a sign of active infection."""

SKIPPED_REQUEST_STATUSES = frozenset({"entered-in-error", "cancelled", "stopped", "completed", "revoked"})


class OrderCheckError(ValueError):
    """The draft orders are not a Bundle the checks can read (a 422 for the caller)."""


# -- draft orders ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DraftMedication:
    """One draft MedicationRequest, its medication concept (if known) and its dose in mg."""

    resource: Mapping[str, Any]
    reference: str | None
    """``MedicationRequest/<id>``, or None when the draft has no id."""
    agent: str | None
    role: MedicationRole | None
    display: str
    by_text: bool
    dose_mg: float | None
    dose_problem: str | None
    selected: bool
    route: str | None = None
    """The route as charted (coding display, code or text), None when not stated."""
    route_iv: bool | None = None
    """True intravenous, False another route, None not stated or not recognised."""
    every_h: float | None = None
    """The scheduled interval between doses in hours (timing.repeat or "q4h" text), if any."""

    @property
    def resource_id(self) -> str | None:
        rid = self.resource.get("id")
        return rid if isinstance(rid, str) and rid else None


def _medication_match(
    request: Mapping[str, Any], medications: Mapping[str, Mapping[str, Any]], terminology: Terminology
) -> tuple[CodeMatch | None, str]:
    concept: object = request.get("medicationCodeableConcept")
    ref = request.get("medicationReference")
    extra_texts: list[str] = []
    if concept is None and isinstance(ref, dict):
        target = ref.get("reference")
        if isinstance(target, str) and target.startswith("#"):
            contained = request.get("contained")
            for item in contained if isinstance(contained, list) else []:
                if isinstance(item, dict) and item.get("resourceType") == "Medication" and item.get("id") == target[1:]:
                    concept = item.get("code")
        elif isinstance(target, str):
            found = medications.get(target) or next(
                (m for key, m in medications.items() if target.endswith("/" + key)), None
            )
            concept = found.get("code") if found is not None else None
        if isinstance(ref.get("display"), str):
            extra_texts.append(ref["display"])
    texts = [*text_candidates(concept), *extra_texts]
    match = terminology.lookup_codings(codings(concept), ConceptKind.MEDICATION)
    if match is None:
        for text in texts:
            match = terminology.lookup_name_in_text(text, ConceptKind.MEDICATION)
            if match is not None:
                break
    return match, (texts[0] if texts else "medication not named")


def _draft_dose(request: Mapping[str, Any], units: UnitTable) -> tuple[float | None, str | None]:
    """dosageInstruction[0].doseAndRate[0].doseQuantity in mg, or why it cannot be read."""
    dosage = request.get("dosageInstruction")
    if not isinstance(dosage, list) or not dosage or not isinstance(dosage[0], dict):
        return None, "no dosageInstruction"
    dose_and_rate = dosage[0].get("doseAndRate")
    if not isinstance(dose_and_rate, list) or not dose_and_rate or not isinstance(dose_and_rate[0], dict):
        return None, "no doseAndRate in the first dosageInstruction"
    quantity = dose_and_rate[0].get("doseQuantity")
    if quantity is None:
        return None, "no doseQuantity (a dose range or text only)"
    converted = units.convert("drug_mass", quantity)
    if isinstance(converted, str):
        return None, f"doseQuantity: {converted}"
    assert isinstance(converted, Converted)
    if converted.value <= 0:
        return None, "doseQuantity is not positive"
    return converted.value, None


IV_ROUTE_CODES = frozenset({"47625008", "IV"})
"""SNOMED CT 47625008 Intravenous route; HL7 v3 RouteOfAdministration IV."""
IV_TEXT = re.compile(r"\b(iv|i\.v\.|intravenous(ly)?)\b", re.IGNORECASE)
NON_IV_TEXT = re.compile(r"\b(sc|s\.c\.|sq|subcut(aneous(ly)?)?|im|intramuscular|oral|po|by mouth)\b", re.IGNORECASE)
INTERVAL_TEXT = re.compile(r"\b(?:q\s*(\d+(?:\.\d+)?)\s*h|every\s+(\d+(?:\.\d+)?)\s*(?:h|hours?))\b", re.IGNORECASE)
PERIOD_HOURS = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "d": 24.0, "wk": 168.0}


def _first_dosage(request: Mapping[str, Any]) -> Mapping[str, Any]:
    dosage = request.get("dosageInstruction")
    if isinstance(dosage, list) and dosage and isinstance(dosage[0], dict):
        return dosage[0]
    return {}


def draft_route(request: Mapping[str, Any]) -> tuple[str | None, bool | None]:
    """The route of the first dosage instruction and whether it is intravenous; the dosage text
    is read when no route is coded ("600 mg IV", "162 mg subcutaneous")."""
    dosage = _first_dosage(request)
    route = dosage.get("route")
    codes = {str(c.get("code")) for c in codings(route) if isinstance(c, dict)}
    texts = text_candidates(route)
    if codes & IV_ROUTE_CODES or any(IV_TEXT.search(t) for t in texts):
        return (texts[0] if texts else "intravenous"), True
    if codes or texts:
        return (texts[0] if texts else ", ".join(sorted(codes))), False
    text = dosage.get("text")
    if isinstance(text, str):
        if NON_IV_TEXT.search(text):
            return text, False
        if IV_TEXT.search(text):
            return text, True
    return None, None


def draft_interval_h(request: Mapping[str, Any]) -> float | None:
    """Hours between scheduled doses: timing.repeat period/frequency, or "q4h"/"every 4 h" text."""
    dosage = _first_dosage(request)
    timing = dosage.get("timing")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    if isinstance(repeat, dict):
        period = repeat.get("period")
        unit = PERIOD_HOURS.get(str(repeat.get("periodUnit")))
        frequency = repeat.get("frequency", 1)
        if isinstance(period, int | float) and unit is not None and isinstance(frequency, int) and frequency > 0:
            return float(period) * unit / frequency
    texts = [dosage.get("text"), *text_candidates(timing.get("code") if isinstance(timing, dict) else None)]
    for text in texts:
        match = INTERVAL_TEXT.search(text) if isinstance(text, str) else None
        if match:
            return float(match.group(1) or match.group(2))
    return None


def read_draft_orders(
    draft_orders: object,
    terminology: Terminology,
    units: UnitTable,
    *,
    selections: Sequence[str] | None = None,
    medications: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[DraftMedication]:
    """The MedicationRequests in ``context.draftOrders``; ``selected`` per order-select selections.

    Raises :class:`OrderCheckError` when ``draftOrders`` is not a Bundle.
    """
    if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
        raise OrderCheckError("context.draftOrders must be a FHIR Bundle")
    entries = draft_orders.get("entry", [])
    if not isinstance(entries, list):
        raise OrderCheckError("context.draftOrders.entry must be a list")
    resources = [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    known = dict(medications or {})
    for resource in resources:
        if resource.get("resourceType") == "Medication":
            ref = reference_of(resource)
            if ref is not None:
                known[ref] = resource
    wanted = {s.rstrip("/") for s in selections or ()}
    out: list[DraftMedication] = []
    for resource in resources:
        if resource.get("resourceType") != "MedicationRequest":
            continue
        if resource.get("status") in SKIPPED_REQUEST_STATUSES:
            continue
        reference = reference_of(resource)
        match, display = _medication_match(resource, known, terminology)
        dose, problem = _draft_dose(resource, units)
        route, route_iv = draft_route(resource)
        selected = not wanted or (
            reference is not None and any(reference == s or s.endswith("/" + reference) for s in wanted)
        )
        out.append(
            DraftMedication(
                resource=resource,
                reference=reference,
                agent=match.concept.id if match else None,
                role=match.concept.role if match else None,
                display=display,
                by_text=bool(match and match.by_text),
                dose_mg=dose,
                dose_problem=problem,
                selected=selected,
                route=route,
                route_iv=route_iv,
                every_h=draft_interval_h(resource),
            )
        )
    return out


# -- tocilizumab ----------------------------------------------------------------------------


class TociOutcome(StrEnum):
    OK = "ok"
    DOSE_TOO_HIGH = "dose-too-high"
    NO_DOSE_ALLOWED = "no-dose-allowed"
    NO_WEIGHT = "no-weight"
    DOSE_UNREADABLE = "dose-unreadable"
    WRONG_ROUTE = "wrong-route"
    INTERVAL_TOO_SHORT = "interval-too-short"
    WEIGHT_TOO_OLD = "weight-too-old"

    @property
    def violation(self) -> bool:
        return self in (
            TociOutcome.DOSE_TOO_HIGH,
            TociOutcome.NO_DOSE_ALLOWED,
            TociOutcome.WRONG_ROUTE,
            TociOutcome.INTERVAL_TOO_SHORT,
        )


@dataclass(frozen=True, slots=True)
class LimitCheck:
    limit: str
    ok: bool | None
    """None when it could not be checked (no weight, no readable dose)."""
    value: str
    threshold: str


@dataclass(frozen=True)
class TocilizumabOrderFinding:
    draft: DraftMedication
    outcome: TociOutcome
    checks: tuple[LimitCheck, ...]
    reasons: tuple[str, ...]
    """Why no dose is allowed, or why the dose is wrong or cannot be checked."""
    allowed_dose_mg: float | None = None
    """The largest dose allowed now (floored to 1 mg), when a dose is allowed and a weight known."""
    weight: Weight | None = None
    mg_per_kg: float | None = None
    doses_last_24h: int = 0
    doses_total: int = 0
    last_dose: Administration | None = None
    notes: tuple[str, ...] = ()
    limit_mg: float | None = None
    """The label maximum now (floored to 0.1 mg): what the dose is checked against and shown."""

    @property
    def calculation(self) -> str:
        if self.weight is None or self.mg_per_kg is None:
            return ""
        return dose_calculation(self.weight, self.mg_per_kg)


def check_tocilizumab(
    draft: DraftMedication,
    record: PatientRecord,
    at: datetime,
    *,
    planned_before: int = 0,
    config: GradingConfig | None = None,
) -> TocilizumabOrderFinding:
    """One tocilizumab draft against every label limit; ``planned_before`` counts tocilizumab
    drafts earlier in the same order bundle (each is a dose at ``at`` too). The 4-dose limit is
    per CRS event (``dosing.dose_history``: episodes of ``grading/episodes.py``)."""
    history = dose_history(record, at, config)
    last = history.last
    in_24h = history.in_last_24h + planned_before
    total = history.total + planned_before
    checks: list[LimitCheck] = []
    blocking: list[str] = []

    total_ok = total < MAX_DOSES_TOTAL
    checks.append(LimitCheck("doses in this CRS event", total_ok, f"{total} before this order", f"< {MAX_DOSES_TOTAL}"))
    if not total_ok:
        blocking.append(
            f"{total} doses already given or ordered in this CRS event: the maximum is {MAX_DOSES_TOTAL} per event"
        )
    per_day_ok = in_24h < MAX_DOSES_PER_24H
    checks.append(LimitCheck("doses in 24 h", per_day_ok, f"{in_24h} in the last 24 h", f"< {MAX_DOSES_PER_24H}"))
    if not per_day_ok:
        blocking.append(f"{in_24h} doses in the last 24 h: the maximum is {MAX_DOSES_PER_24H}")
    if planned_before:
        checks.append(LimitCheck("interval", False, "another tocilizumab order in these draft orders", ">= 8 h"))
        blocking.append("another tocilizumab order is in the same draft orders: doses must be at least 8 h apart")
    elif last is not None:
        since = at - last.start
        interval_ok = since >= MIN_INTERVAL
        checks.append(LimitCheck("interval", interval_ok, f"{_hours(since)} since {last.reference}", ">= 8 h"))
        if not interval_ok:
            blocking.append(
                f"last dose at {iso(last.start)} ({last.reference}), {_hours(since)} ago: "
                f"the next is allowed from {iso(last.start + MIN_INTERVAL)}"
            )
    else:
        checks.append(LimitCheck("interval", True, "no earlier dose", ">= 8 h"))

    basis = weight_basis(record, at, config)
    if basis is not None and basis.too_old is not None:
        basis_problem: str | None = basis.too_old
        basis = None
    else:
        basis_problem = None
    weight = basis.weight if basis is not None else None
    per_kg = basis.mg_per_kg if basis is not None else None
    notes: list[str] = [basis.note] if basis is not None and basis.note else []
    notes.append(f"dose count: {history.basis}")
    if draft.by_text:
        notes.append(f"tocilizumab recognised by name in {draft.display!r}, not by code")
    notes += [
        f"{_unidentified_note(item)}: if it was tocilizumab, the dose counts above are too low"
        for item in record.unidentified_administrations
    ]

    limit_mg = basis.limit_mg if basis is not None else None

    def finding(outcome: TociOutcome, reasons: Sequence[str], allowed: float | None = None) -> TocilizumabOrderFinding:
        return TocilizumabOrderFinding(
            draft,
            outcome,
            tuple(checks),
            tuple(reasons),
            allowed,
            weight,
            per_kg,
            in_24h,
            total,
            last,
            tuple(notes),
            limit_mg,
        )

    order_problems = _order_details(draft, notes)
    if limit_mg is not None:
        vials = whole_vial_dose_mg(limit_mg)
        notes.append(
            f"vials of 80, 200 and 400 mg (20 mg/mL): the largest whole-vial dose within {limit_mg:g} mg is "
            f"{vials} mg; round down to vials, or draw a partial vial to the exact dose, never up [choice]"
        )
    allowed = None if limit_mg is None or blocking else float(math.floor(limit_mg))
    dose_text = f"{draft.dose_mg:g} mg" if draft.dose_mg is not None else f"not readable ({draft.dose_problem})"
    if limit_mg is None:
        checks.insert(0, LimitCheck("dose", None, dose_text, "8 mg/kg (12 mg/kg < 30 kg), max 800 mg: no weight"))
    elif draft.dose_mg is None:
        checks.insert(0, LimitCheck("dose", None, dose_text, f"<= {limit_mg:g} mg"))
    else:
        checks.insert(0, LimitCheck("dose", draft.dose_mg <= limit_mg + 1e-9, dose_text, f"<= {limit_mg:g} mg"))

    if blocking:
        return finding(TociOutcome.NO_DOSE_ALLOWED, [*blocking, *(text for _, text in order_problems)])
    if order_problems:
        outcome = order_problems[0][0]
        extra = (
            [f"{draft.dose_mg:g} mg is above the {limit_mg:g} mg allowed"]
            if (draft.dose_mg is not None and limit_mg is not None and draft.dose_mg > limit_mg + 1e-9)
            else []
        )
        return finding(outcome, [*(text for _, text in order_problems), *extra], allowed)
    if basis_problem is not None:
        return finding(TociOutcome.WEIGHT_TOO_OLD, [basis_problem])
    if weight is None or limit_mg is None:
        return finding(
            TociOutcome.NO_WEIGHT,
            ["no body weight charted: the dose cannot be checked against 8 mg/kg (12 mg/kg under 30 kg)"],
        )
    if draft.dose_mg is None:
        return finding(
            TociOutcome.DOSE_UNREADABLE, [f"the draft has no readable dose in mg ({draft.dose_problem})"], allowed
        )
    if draft.dose_mg > limit_mg + 1e-9:
        capped = " (the 800 mg cap)" if limit_mg >= MAX_DOSE_MG else ""
        return finding(
            TociOutcome.DOSE_TOO_HIGH, [f"{draft.dose_mg:g} mg is above the {limit_mg:g} mg allowed{capped}"], allowed
        )
    return finding(TociOutcome.OK, [], allowed)


def _order_details(draft: DraftMedication, notes: list[str]) -> list[tuple[TociOutcome, str]]:
    """Route and schedule of a tocilizumab draft (CRS dosing: IV over 1 h, doses >= 8 h apart, each
    only if no improvement). Problems are returned; mere cautions go to ``notes``."""
    problems: list[tuple[TociOutcome, str]] = []
    if draft.route_iv is False:
        problems.append(
            (
                TociOutcome.WRONG_ROUTE,
                f"route {draft.route!r}: tocilizumab for CRS is given intravenously over 1 h (the subcutaneous "
                "162 mg syringe is for other indications)",
            )
        )
    elif draft.route_iv is None:
        notes.append("route not stated: tocilizumab for CRS is given intravenously over 1 h")
    if draft.every_h is not None and draft.every_h < MIN_INTERVAL.total_seconds() / 3600:
        problems.append(
            (
                TociOutcome.INTERVAL_TOO_SHORT,
                f"scheduled every {draft.every_h:g} h: doses must be at least 8 h apart, at most 3 in 24 h",
            )
        )
    elif draft.every_h is not None:
        notes.append(
            f"scheduled every {draft.every_h:g} h: repeat only if no clinical improvement, at most 3 in 24 h and 4 "
            "per CRS event; a one-time order is safer"
        )
    return problems


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h"


# -- T-cell engagers and CAR-T -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InfectionSignal:
    kind: Literal["fever", "blood-culture", "condition"]
    text: str
    reference: str
    time: datetime | None = None


HoldKind = Literal["crs", "possible-crs", "icans", "fever", "crs-recent"]


@dataclass(frozen=True, slots=True)
class HoldReason:
    """Why a T-cell engager dose must be held now, with the FHIR references it rests on."""

    kind: HoldKind
    text: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class EngagerOrderFinding:
    draft: DraftMedication
    rule: ProductRule
    infection: tuple[InfectionSignal, ...]
    infection_gaps: tuple[str, ...]
    """Data that could have shown an infection but could not be had."""
    premedication_found: Mapping[MedicationRole, str]
    """Role -> what was found (an administration or a draft order)."""
    premedication_missing: tuple[MedicationRole, ...]
    notes: tuple[str, ...] = ()
    hold: tuple[HoldReason, ...] = ()
    """Empty when the product's label gives no reason to hold the dose now."""
    steroid_with_product: str | None = None
    """A corticosteroid ordered with (or given just before) a cell therapy, for the label's stance."""
    dose_number: int = 1
    """This dose's number as charted: earlier administrations of the same product, plus one."""

    @property
    def premedication_required(self) -> bool:
        """The label asks for premedication before this dose (the first N doses, or every dose)."""
        required = self.rule.premedication.required_doses
        return required is None or self.dose_number <= required

    @property
    def product_class(self) -> ProductClass:
        return self.rule.product_class


def _grade_level(result: GradeResult) -> tuple[int, str] | None:
    """The grade, or the grade it is at least when indeterminate, with how to say it."""
    if result.grade is not None:
        return result.grade, f"grade {result.grade}"
    if result.grade_at_least is not None:
        return result.grade_at_least, f"at least grade {result.grade_at_least} (indeterminate)"
    return None


def _possible_masked_crs(crs: GradeResult) -> int:
    """The grade hypotension or hypoxia would give if this is CRS with its fever masked or not
    charted (clinical reference, safety rules): 0 when there is no such sign. The grader's own
    ``possible_grade`` when it gives one; otherwise read from the components."""
    if crs.possible_grade is not None:
        return crs.possible_grade
    fever = crs.components.get("fever")
    masked = fever in ("masked", "unknown") or any(a.startswith("fever may be masked") for a in crs.alerts)
    signs = [v for k in ("hypotensionGrade", "hypoxiaGrade") if isinstance(v := crs.components.get(k), int)]
    return max(signs, default=0) if masked else 0


def hold_reasons(
    rule: ProductRule,
    crs: GradeResult,
    icans: GradeResult | None,
    record: PatientRecord,
    at: datetime,
    *,
    config: GradingConfig | None = None,
) -> tuple[HoldReason, ...]:
    """Every reason the product's label gives to hold a dose now: CRS or ICANS at or above its
    grade (or at least it, or possible CRS with masked fever), or a fever in the fever window."""
    hold = rule.hold
    if hold is None:
        return ()
    reasons: list[HoldReason] = []
    crs_level = _grade_level(crs)
    if crs_level is not None and crs_level[0] >= hold.crs_min_grade:
        reasons.append(HoldReason("crs", f"CRS {crs_level[1]} (ASTCT) at {iso(crs.at)}", crs.references))
    else:
        possible = _possible_masked_crs(crs)
        if possible >= hold.crs_min_grade:
            reasons.append(
                HoldReason(
                    "possible-crs",
                    f"possible CRS with masked or uncharted fever: grade {possible} if CRS ({iso(crs.at)})",
                    crs.references,
                )
            )
    icans_level = _grade_level(icans) if icans is not None else None
    if icans is not None and icans_level is not None and icans_level[0] >= hold.icans_min_grade:
        reasons.append(HoldReason("icans", f"ICANS {icans_level[1]} (ASTCT) at {iso(icans.at)}", icans.references))
    if hold.resolved_for is not None and not reasons:
        recent = _recent_crs(record, at, hold.resolved_for, config)
        if recent is not None:
            reasons.append(recent)
    if hold.fever:
        fevers = [t for t in record.temperatures if at - FEVER_WINDOW < t.time <= at and t.celsius >= FEVER_CELSIUS]
        if fevers:
            hottest = max(fevers, key=lambda t: t.celsius)
            hours = int(FEVER_WINDOW.total_seconds() // 3600)
            reasons.append(
                HoldReason(
                    "fever",
                    f"temperature {hottest.celsius:g} °C at {iso(hottest.time)} (>= {FEVER_CELSIUS:.1f} °C in the "
                    f"last {hours} h: CRS may be starting, or an infection)",
                    (hottest.reference,),
                )
            )
    return tuple(reasons)


def infection_signals(record: PatientRecord, at: datetime) -> list[InfectionSignal]:
    """Fever without a CRS explanation, positive blood cultures, active infection Conditions."""
    signals: list[InfectionSignal] = []
    fevers = [t for t in record.temperatures if at - FEVER_WINDOW < t.time <= at and t.celsius >= FEVER_CELSIUS]
    if fevers:
        hottest = max(fevers, key=lambda t: t.celsius)
        explained = bool(record.conditions) or any(
            a.role is MedicationRole.CRS_THERAPY
            and hottest.time - CRS_EXPLAINS_FEVER_AFTER_THERAPY <= a.start <= hottest.time
            for a in record.administrations
        )
        if not explained:
            signals.append(
                InfectionSignal(
                    "fever",
                    f"fever {hottest.celsius:g} °C at {iso(hottest.time)} with no CRS explanation "
                    "(no CRS-causing therapy in the 14 days before it, no active CRS Condition)",
                    hottest.reference,
                    hottest.time,
                )
            )
    for culture in record.blood_cultures:
        if culture.positive and at - BLOOD_CULTURE_LOOKBACK <= culture.time <= at:
            organism = f": {culture.organism}" if culture.organism else ""
            text = f"positive blood culture at {iso(culture.time)}{organism}"
            signals.append(InfectionSignal("blood-culture", text, culture.reference, culture.time))
    for condition in record.infections:
        how = " (recognised by its text)" if condition.by_text else ""
        signals.append(InfectionSignal("condition", f"active Condition {condition.name!r}{how}", condition.reference))
    return signals


def check_engager(
    draft: DraftMedication,
    rule: ProductRule,
    record: PatientRecord,
    drafts: Sequence[DraftMedication],
    at: datetime,
    *,
    signals: Sequence[InfectionSignal],
    unavailable: Mapping[DataSource, str],
    hold: Sequence[HoldReason] = (),
) -> EngagerOrderFinding:
    """Infection signs, premedication, for one T-cell engager or CAR-T draft, by its product rule."""
    required = rule.premedication.roles
    window = rule.premedication.window_before
    found: dict[MedicationRole, str] = {}
    for admin in record.administrations:
        if admin.role in required and at - window <= admin.start <= at:
            found.setdefault(admin.role, f"{admin.agent} given at {iso(admin.start)} ({admin.reference})")
    for other in drafts:
        if other.role in required and other.role is not None:
            found.setdefault(other.role, f"{other.agent} ordered ({other.reference or 'draft order'})")
    missing = tuple(role for role in required if role not in found)
    gaps = tuple(
        f"{source.value}: {reason}"
        for source, reason in unavailable.items()
        if source in (DataSource.LABORATORY, DataSource.ACTIVE_CONDITIONS, DataSource.OBSERVATIONS)
    )
    notes = [f"{draft.agent} recognised by name in {draft.display!r}, not by code"] if draft.by_text else []
    notes += [_unidentified_note(item) for item in record.unidentified_administrations]
    steroid = None
    if rule.steroid_prophylaxis is not None:
        steroid = next(
            (
                f"{o.agent} ordered ({o.reference or 'draft order'})"
                for o in drafts
                if o.role is MedicationRole.CORTICOSTEROID
            ),
            None,
        )
    earlier = sum(1 for a in record.administrations if a.agent == draft.agent and a.start <= at)
    return EngagerOrderFinding(
        draft, rule, tuple(signals), gaps, found, missing, tuple(notes), tuple(hold), steroid, earlier + 1
    )


def _icans_gap(rule: ProductRule, icans: GradeResult | None) -> str | None:
    """Say when ICANS could not be checked for the hold rule (never a silent "no ICANS")."""
    if rule.hold is None:
        return None
    if icans is None:
        return "ICANS not graded by this service: the hold rule checked CRS and fever only"
    if icans.grade is None and icans.grade_at_least is None:
        first = icans.missing[0] if icans.missing else "no assessment"
        return f"ICANS indeterminate ({first}): assess ICE before the dose; the hold rule could not check ICANS"
    return None


def _recent_crs(
    record: PatientRecord, at: datetime, resolved_for: timedelta, config: GradingConfig | None
) -> HoldReason | None:
    """The last CRS episode, when it is unresolved or resolved less than ``resolved_for`` ago."""
    course = crs_episodes(record, until=at, config=config or GradingConfig())
    if not course.episodes:
        return None
    last = course.episodes[-1]
    hours = f"{resolved_for.total_seconds() / 3600:g} h"
    if last.resolution is None:
        text = f"CRS episode from {iso(last.onset)} not resolved in the data: the label asks {hours} after resolution"
    elif at - last.resolution < resolved_for:
        text = f"CRS resolved at {iso(last.resolution)}, less than {hours} ago (episode from {iso(last.onset)})"
    else:
        return None
    return HoldReason("crs-recent", text, last.references)


def _unidentified_note(item: NotEvidence) -> str:
    return f"{item.reference}: drug cannot be identified ({item.reason}); it is not counted"


# -- all checks for one call ----------------------------------------------------------------


@dataclass(frozen=True)
class OrderFindings:
    tocilizumab: tuple[TocilizumabOrderFinding, ...] = ()
    engagers: tuple[EngagerOrderFinding, ...] = ()
    other_drafts: int = 0
    unavailable: Mapping[DataSource, str] = field(default_factory=dict)


def check_orders(
    drafts: Sequence[DraftMedication],
    record: PatientRecord,
    terminology: Terminology,
    at: datetime,
    *,
    unavailable: Mapping[DataSource, str],
    products: ProductRules,
    crs: GradeResult,
    icans: GradeResult | None,
    config: GradingConfig | None = None,
) -> OrderFindings:
    """Every check for the selected drafts (all drafts for order-sign); ``crs`` and ``icans`` are
    the grades at ``at`` that decide whether an engager dose is held."""
    toci: list[TocilizumabOrderFinding] = []
    engagers: list[EngagerOrderFinding] = []
    signals: list[InfectionSignal] | None = None
    earlier_toci = 0
    other = 0
    for draft in drafts:
        if draft.agent == "tocilizumab":
            if draft.selected:
                toci.append(check_tocilizumab(draft, record, at, planned_before=earlier_toci, config=config))
            earlier_toci += 1
        elif draft.role is MedicationRole.CRS_THERAPY and draft.agent is not None:
            if not draft.selected:
                continue
            rule = products.rule_for(draft.agent)
            if rule is None:  # load_products refuses a product without a rule; a site concept may lack one
                raise OrderCheckError(f"no product rule for {draft.agent!r} in mappings/products")
            if signals is None:
                signals = infection_signals(record, at)
            hold = hold_reasons(rule, crs, icans, record, at, config=config)
            finding = check_engager(
                draft, rule, record, drafts, at, signals=signals, unavailable=unavailable, hold=hold
            )
            gap = _icans_gap(rule, icans)
            engagers.append(replace(finding, notes=(*finding.notes, gap)) if gap else finding)
        elif draft.selected:
            other += 1
    return OrderFindings(tuple(toci), tuple(engagers), other, dict(unavailable))
