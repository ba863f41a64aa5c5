"""Order checks (order-select, order-sign): the draft MedicationRequests against the record.

Two checks, both pure (no I/O, no clock: the caller passes ``at``):

- **Tocilizumab**: the draft dose against 8 mg/kg (12 mg/kg under 30 kg) capped at 800 mg, the
  time since the last dose (>= 8 h), doses in the last 24 h (< 3 before this one) and in total
  (< 4 before this one). Limits from ``dosing.py`` (Actemra and CAR-T labels, ASCO 2021).
- **T-cell engager / CAR-T** (medication concepts with role ``crs_therapy``): signs of active
  infection, premedication ordered or given, and the monitoring reminder.

The draft dose is taken to be given at ``at`` (the hook call's time) [choice]: an order for a
later time is checked as if given now, which is the stricter reading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from cds_hooks.advice.dosing import (
    MAX_DOSE_MG,
    MAX_DOSES_PER_24H,
    MAX_DOSES_TOTAL,
    MIN_INTERVAL,
    dose_history,
    weight_basis,
)
from cds_hooks.reading.fhir_rules import codings, reference_of, text_candidates
from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.record import Administration, DataSource, PatientRecord, Weight
from cds_hooks.reading.terminology import CodeMatch, ConceptKind, MedicationRole, Terminology
from cds_hooks.reading.units import Converted, UnitTable

ATC = "http://www.whocc.no/atc"
CAR_T_ATC_PREFIX = "L01XL"

FEVER_CELSIUS = 38.0
FEVER_WINDOW = timedelta(hours=24)
"""A fever in (at - 24 h, at] is a sign of infection unless CRS explains it."""
CRS_EXPLAINS_FEVER_AFTER_THERAPY = timedelta(days=14)
"""[choice] A fever within 14 days after a CRS-causing therapy, or with an active CRS Condition,
is taken as explained by CRS (the ASTCT prior-CRS look-back)."""
BLOOD_CULTURE_LOOKBACK = timedelta(days=7)
"""[choice] A positive blood culture in the last 7 days is a sign of active infection."""
PREMEDICATION_WINDOW = timedelta(hours=3)
"""[choice] Premedication given in [at - 3 h, at] counts, or ordered in the same draft orders.
Teclistamab and epcoritamab labels: premedicate 1-3 h before each step-up dose."""

SKIPPED_REQUEST_STATUSES = frozenset({"entered-in-error", "cancelled", "stopped", "completed", "revoked"})

ProductClass = Literal["car-t", "t-cell-engager"]
PREMEDICATION_ROLES: Mapping[ProductClass, tuple[MedicationRole, ...]] = {
    # Teclistamab, epcoritamab, elranatamab, talquetamab... labels: corticosteroid, antihistamine
    # and antipyretic before each step-up dose.
    "t-cell-engager": (MedicationRole.CORTICOSTEROID, MedicationRole.ANTIHISTAMINE, MedicationRole.ANTIPYRETIC),
    # CAR-T labels: acetaminophen and an H1 antihistamine before infusion; prophylactic systemic
    # corticosteroids are to be avoided [choice: steroids are not asked for before CAR-T].
    "car-t": (MedicationRole.ANTIHISTAMINE, MedicationRole.ANTIPYRETIC),
}


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

    @property
    def violation(self) -> bool:
        return self in (TociOutcome.DOSE_TOO_HIGH, TociOutcome.NO_DOSE_ALLOWED)


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

    @property
    def calculation(self) -> str:
        if self.weight is None or self.mg_per_kg is None:
            return ""
        raw = self.weight.kg * self.mg_per_kg
        capped = f", capped at {MAX_DOSE_MG:g} mg" if raw > MAX_DOSE_MG else ""
        return f"{self.mg_per_kg:g} mg/kg x {self.weight.kg:g} kg = {raw:g} mg{capped}"


def check_tocilizumab(
    draft: DraftMedication, record: PatientRecord, at: datetime, *, planned_before: int = 0
) -> TocilizumabOrderFinding:
    """One tocilizumab draft against every label limit; ``planned_before`` counts tocilizumab
    drafts earlier in the same order bundle (each is a dose at ``at`` too)."""
    history = dose_history(record, at)
    last = history.last
    in_24h = history.in_last_24h + planned_before
    total = history.total + planned_before
    checks: list[LimitCheck] = []
    blocking: list[str] = []

    total_ok = total < MAX_DOSES_TOTAL
    checks.append(LimitCheck("doses in total", total_ok, f"{total} before this order", f"< {MAX_DOSES_TOTAL}"))
    if not total_ok:
        blocking.append(f"{total} doses already given or ordered: the maximum is {MAX_DOSES_TOTAL} in total")
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

    basis = weight_basis(record, at)
    weight = basis.weight if basis is not None else None
    per_kg = basis.mg_per_kg if basis is not None else None
    notes: list[str] = [basis.note] if basis is not None and basis.note else []
    if draft.by_text:
        notes.append(f"tocilizumab recognised by name in {draft.display!r}, not by code")

    def finding(outcome: TociOutcome, reasons: Sequence[str], allowed: float | None = None) -> TocilizumabOrderFinding:
        return TocilizumabOrderFinding(
            draft, outcome, tuple(checks), tuple(reasons), allowed, weight, per_kg, in_24h, total, last, tuple(notes)
        )

    limit_mg = basis.limit_mg if basis is not None else None
    allowed = None if limit_mg is None or blocking else float(math.floor(limit_mg))
    dose_text = f"{draft.dose_mg:g} mg" if draft.dose_mg is not None else f"not readable ({draft.dose_problem})"
    if limit_mg is None:
        checks.insert(0, LimitCheck("dose", None, dose_text, "8 mg/kg (12 mg/kg < 30 kg), max 800 mg: no weight"))
    elif draft.dose_mg is None:
        checks.insert(0, LimitCheck("dose", None, dose_text, f"<= {limit_mg:g} mg"))
    else:
        checks.insert(0, LimitCheck("dose", draft.dose_mg <= limit_mg + 1e-9, dose_text, f"<= {limit_mg:g} mg"))

    if blocking:
        return finding(TociOutcome.NO_DOSE_ALLOWED, blocking)
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


@dataclass(frozen=True)
class EngagerOrderFinding:
    draft: DraftMedication
    product_class: ProductClass
    infection: tuple[InfectionSignal, ...]
    infection_gaps: tuple[str, ...]
    """Data that could have shown an infection but could not be had."""
    premedication_found: Mapping[MedicationRole, str]
    """Role -> what was found (an administration or a draft order)."""
    premedication_missing: tuple[MedicationRole, ...]
    notes: tuple[str, ...] = ()


def product_class(agent: str, terminology: Terminology) -> ProductClass:
    """CAR-T when the concept carries an ATC L01XL code, else a T-cell engager."""
    codes = terminology.codes_for(agent)
    if any(system == ATC and code.startswith(CAR_T_ATC_PREFIX) for system, code in codes):
        return "car-t"
    return "t-cell-engager"


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
    record: PatientRecord,
    drafts: Sequence[DraftMedication],
    terminology: Terminology,
    at: datetime,
    *,
    signals: Sequence[InfectionSignal],
    unavailable: Mapping[DataSource, str],
) -> EngagerOrderFinding:
    """Infection signs, premedication, for one T-cell engager or CAR-T draft."""
    assert draft.agent is not None
    kind = product_class(draft.agent, terminology)
    required = PREMEDICATION_ROLES[kind]
    found: dict[MedicationRole, str] = {}
    for admin in record.administrations:
        if admin.role in required and at - PREMEDICATION_WINDOW <= admin.start <= at:
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
    notes = (f"{draft.agent} recognised by name in {draft.display!r}, not by code",) if draft.by_text else ()
    return EngagerOrderFinding(draft, kind, tuple(signals), gaps, found, missing, notes)


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
) -> OrderFindings:
    """Every check for the selected drafts (all drafts for order-sign)."""
    toci: list[TocilizumabOrderFinding] = []
    engagers: list[EngagerOrderFinding] = []
    signals: list[InfectionSignal] | None = None
    earlier_toci = 0
    other = 0
    for draft in drafts:
        if draft.agent == "tocilizumab":
            if draft.selected:
                toci.append(check_tocilizumab(draft, record, at, planned_before=earlier_toci))
            earlier_toci += 1
        elif draft.role is MedicationRole.CRS_THERAPY and draft.agent is not None:
            if not draft.selected:
                continue
            if signals is None:
                signals = infection_signals(record, at)
            engagers.append(
                check_engager(draft, record, drafts, terminology, at, signals=signals, unavailable=unavailable)
            )
        elif draft.selected:
            other += 1
    return OrderFindings(tuple(toci), tuple(engagers), other, dict(unavailable))
