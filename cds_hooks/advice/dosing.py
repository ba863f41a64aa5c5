"""Tocilizumab dose and its limits, computed from the record: a dose is offered only when every
limit allows it, otherwise the reason is given instead.

Source: Actemra (tocilizumab) US label, CRS section, and the CAR-T product labels as restated in
ASCO 2021 (Santomasso, J Clin Oncol 2021;39:3978): 8 mg/kg IV over 1 h for weight >= 30 kg,
12 mg/kg for < 30 kg, never more than 800 mg per dose; repeat only if no clinical improvement,
at least 8 h apart; no more than 3 doses in 24 h and 4 in total. The CRS indication is labelled
from 2 years of age: under 2 no dose is offered (clinical-reference.md section 1, "Children").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cds_hooks.reading.fhir_time import age_in_years, iso
from cds_hooks.reading.record import Administration, PatientRecord, Weight

MG_PER_KG_ADULT = 8.0
MG_PER_KG_UNDER_30_KG = 12.0
WEIGHT_CUTOFF_KG = 30.0
MAX_DOSE_MG = 800.0
MIN_INTERVAL = timedelta(hours=8)
MAX_DOSES_PER_24H = 3
MAX_DOSES_TOTAL = 4
MIN_AGE_YEARS = 2
"""Tocilizumab's CRS label (Actemra) starts at 2 years of age."""
WEIGHT_STALE_AFTER = timedelta(days=30)
"""A weight older than this is still used but flagged [choice]."""


@dataclass(frozen=True, slots=True)
class TocilizumabAdvice:
    dose_mg: float | None
    """The dose to offer, or None when no dose may be offered (see ``reason``)."""
    reason: str | None
    weight: Weight | None = None
    mg_per_kg: float | None = None
    doses_last_24h: int = 0
    doses_total: int = 0
    last_dose: Administration | None = None
    weight_note: str | None = None

    @property
    def calculation(self) -> str:
        if self.dose_mg is None or self.weight is None or self.mg_per_kg is None:
            return ""
        raw = self.weight.kg * self.mg_per_kg
        capped = " capped at 800 mg" if raw > MAX_DOSE_MG else ""
        return f"{self.mg_per_kg:g} mg/kg x {self.weight.kg:g} kg = {raw:g} mg{capped}"


@dataclass(frozen=True, slots=True)
class DoseHistory:
    """Tocilizumab given up to ``at``: what the interval and count limits are checked against."""

    given: tuple[Administration, ...]
    last: Administration | None
    in_last_24h: int

    @property
    def total(self) -> int:
        return len(self.given)


def dose_history(record: PatientRecord, at: datetime) -> DoseHistory:
    """Doses possibly given by ``at``; a date-only dose counts at the latest it may have been
    given (capped at ``at``), so the interval and 24 h limits are never read in its favour."""
    given = tuple(a for a in record.administrations if a.agent == "tocilizumab" and a.start <= at)
    last = max(given, key=lambda a: min(a.latest_start, at), default=None)
    in_24h = sum(1 for a in given if min(a.latest_start, at) > at - timedelta(hours=24))
    return DoseHistory(given, last, in_24h)


@dataclass(frozen=True, slots=True)
class WeightBasis:
    """The weight a dose is computed from, the mg/kg that applies, and the cap."""

    weight: Weight
    mg_per_kg: float
    note: str | None

    @property
    def limit_mg(self) -> float:
        """The largest dose the label allows for this weight (unrounded)."""
        return min(MAX_DOSE_MG, self.weight.kg * self.mg_per_kg)


def weight_basis(record: PatientRecord, at: datetime) -> WeightBasis | None:
    """The latest weight charted by ``at`` and its mg/kg; None without a weight (no dose then)."""
    weights = [w for w in record.weights if w.time <= at]
    if not weights:
        return None
    weight = weights[-1]
    per_kg = MG_PER_KG_UNDER_30_KG if weight.kg < WEIGHT_CUTOFF_KG else MG_PER_KG_ADULT
    note = None
    if at - weight.time > WEIGHT_STALE_AFTER:
        note = f"weight charted {iso(weight.time)}, more than 30 days ago: confirm it"
    return WeightBasis(weight, per_kg, note)


def _age_in_months(record: PatientRecord, at: datetime) -> int:
    birth = record.birth_date
    assert birth is not None
    months = (at.year - birth.year) * 12 + (at.month - birth.month)
    return months - 1 if at.day < birth.day else months


def tocilizumab_advice(record: PatientRecord, at: datetime) -> TocilizumabAdvice:
    """The dose allowed now, or why none is."""
    history = dose_history(record, at)
    last, in_24h, total = history.last, history.in_last_24h, history.total
    refused = TocilizumabAdvice(None, None, doses_last_24h=in_24h, doses_total=total, last_dose=last)
    if record.birth_date is not None and age_in_years(record.birth_date, at) < MIN_AGE_YEARS:
        months = _age_in_months(record, at)
        return replace(
            refused,
            reason=(
                f"patient is {months} months old: tocilizumab's CRS label starts at {MIN_AGE_YEARS} years, "
                "so no dose is computed; dosing under 2 years only per paediatric specialist protocol"
            ),
        )
    if total >= MAX_DOSES_TOTAL:
        return replace(refused, reason=f"{total} doses already given: the maximum is {MAX_DOSES_TOTAL} in total")
    if in_24h >= MAX_DOSES_PER_24H:
        return replace(refused, reason=f"{in_24h} doses in the last 24 h: the maximum is {MAX_DOSES_PER_24H}")
    if last is not None and at - min(last.latest_start, at) < MIN_INTERVAL:
        latest = min(last.latest_start, at)
        dated = " (date-only time: counted at the latest it may have been given)" if last.start_latest else ""
        return replace(
            refused,
            reason=(
                f"last dose at {iso(latest)}{dated} ({last.reference}): "
                f"the next is allowed from {iso(latest + MIN_INTERVAL)}"
            ),
        )
    basis = weight_basis(record, at)
    if basis is None:
        return replace(refused, reason="no body weight charted: no dose is computed")
    dose = float(math.floor(basis.limit_mg))
    return TocilizumabAdvice(dose, None, basis.weight, basis.mg_per_kg, in_24h, total, last, basis.note)
