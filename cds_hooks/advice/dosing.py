"""Tocilizumab dose and its limits, computed from the record: a dose is offered only when every
limit allows it, otherwise the reason is given instead.

Source: Actemra (tocilizumab) US label, CRS section, and the CAR-T product labels as restated in
ASCO 2021 (Santomasso, J Clin Oncol 2021;39:3978): 8 mg/kg IV over 1 h for weight >= 30 kg,
12 mg/kg for < 30 kg, never more than 800 mg per dose; repeat only if no clinical improvement,
at least 8 h apart; no more than 3 doses in 24 h and 4 in total for one CRS event. The CRS indication is labelled
from 2 years of age: under 2 no dose is offered (clinical-reference.md section 1, "Children").

"In total" is per CRS event (clinical reference section 3): the doses of the current episode
(``grading/episodes.py``) and of any episode resolved less than 7 days before it, plus, whatever
the episodes say, every dose of the last 7 days [choice: a dose given outside a charted episode,
or before a fever was charted, still counts while recent].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.episodes import Episode, crs_episodes
from cds_hooks.reading.fhir_time import age_in_years, iso
from cds_hooks.reading.record import Administration, PatientRecord, Weight

MG_PER_KG_ADULT = 8.0
MG_PER_KG_UNDER_30_KG = 12.0
WEIGHT_CUTOFF_KG = 30.0
MAX_DOSE_MG = 800.0
MIN_INTERVAL = timedelta(hours=8)
MAX_DOSES_PER_24H = 3
MAX_DOSES_TOTAL = 4
SAME_EVENT_WITHIN = timedelta(days=7)
"""[choice] An episode resolved less than 7 days before the next one is the same CRS event for the
4-dose limit; doses of the last 7 days always count."""
NEXT_STEPS_WHEN_BLOCKED = (
    "next steps per guideline (ASCO 2021): corticosteroids (dexamethasone, or methylprednisolone for "
    "grade 4); for CRS refractory to tocilizumab and steroids, anakinra or siltuximab"
)
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
        return dose_calculation(self.weight, self.mg_per_kg)


def dose_calculation(weight: Weight, mg_per_kg: float) -> str:
    """The arithmetic behind a dose, with the weight's value, date and reference (shown on cards)."""
    raw = weight.kg * mg_per_kg
    capped = f", capped at {MAX_DOSE_MG:g} mg" if raw > MAX_DOSE_MG else ""
    kg = f"{weight.kg:g} kg"
    charted = kg if weight.original == kg else f"{kg} ({weight.original})"  # e.g. "68.0389 kg (150 [lb_av])"
    return f"{mg_per_kg:g} mg/kg x {charted}, weighed {weight.charted} ({weight.reference}) = {raw:g} mg{capped}"


@dataclass(frozen=True, slots=True)
class DoseHistory:
    """Tocilizumab given up to ``at``: what the interval and count limits are checked against."""

    given: tuple[Administration, ...]
    """Every dose charted by ``at`` (the interval and 24 h limits read these)."""
    last: Administration | None
    in_last_24h: int
    counted: tuple[Administration, ...] = ()
    """The doses of this CRS event (the 4-dose limit reads these)."""
    counted_from: datetime | None = None
    basis: str = ""
    """Why the count starts where it does, for the card."""

    @property
    def total(self) -> int:
        return len(self.counted)


def dose_history(record: PatientRecord, at: datetime, config: GradingConfig | None = None) -> DoseHistory:
    """The doses charted by ``at``, and those of the current CRS event (see the module docstring)."""
    given = tuple(a for a in record.administrations if a.agent == "tocilizumab" and a.start <= at)
    # A date-only dose counts at the latest it may have been given (capped at ``at``), so the
    # interval and 24 h limits are never read in its favour.
    last = max(given, key=lambda a: min(a.latest_start, at), default=None)
    in_24h = sum(1 for a in given if min(a.latest_start, at) > at - timedelta(hours=24))
    recent_from = at - SAME_EVENT_WITHIN
    if all(a.start >= recent_from for a in given):
        # Every dose is recent and counts whatever the episodes say: no need to build them.
        days = SAME_EVENT_WITHIN.days
        return DoseHistory(
            given, last, in_24h, given, recent_from, f"every dose charted is within the last {days} days"
        )
    chain = _current_event(list(crs_episodes(record, until=at, config=config or GradingConfig()).episodes), at)
    counted_from = min(recent_from, chain[0].onset) if chain else recent_from
    counted = tuple(a for a in given if a.start >= counted_from)
    return DoseHistory(given, last, in_24h, counted, counted_from, _basis(chain, at))


def _current_event(found: list[Episode], at: datetime) -> list[Episode]:
    """The episodes of the CRS event a dose at ``at`` belongs to: the last episode, unless it
    resolved 7 days or more before ``at``, and each earlier one resolved < 7 days before the next."""
    if not found:
        return []
    last = found[-1]
    if last.resolution is not None and at - last.resolution >= SAME_EVENT_WITHIN:
        return []
    chain = [last]
    for earlier in reversed(found[:-1]):
        if earlier.resolution is None or chain[0].onset - earlier.resolution >= SAME_EVENT_WITHIN:
            break
        chain.insert(0, earlier)
    return chain


def _basis(chain: list[Episode], at: datetime) -> str:
    days = SAME_EVENT_WITHIN.days
    if not chain:
        return f"no CRS episode in progress or resolved within {days} days: doses of the last {days} days"
    first, last = chain[0], chain[-1]
    state = f"resolved {iso(last.resolution)}" if last.resolution is not None else "not resolved in the data"
    joined = f", with {len(chain) - 1} earlier episode(s) resolved < {days} days before it" if len(chain) > 1 else ""
    return (
        f"CRS episode from {iso(last.onset)}, {state}{joined}: "
        f"doses from {iso(first.onset)} and of the last {days} days"
    )


@dataclass(frozen=True, slots=True)
class WeightBasis:
    """The weight a dose is computed from, the mg/kg that applies, and the cap."""

    weight: Weight
    mg_per_kg: float
    note: str | None
    too_old: str | None = None
    """Why this weight may not be used for dosing (older than the setting), or None."""

    @property
    def limit_mg(self) -> float:
        """The largest dose the label allows for this weight, floored to 0.1 mg: the number the
        order check compares with and the card shows, so they never disagree."""
        return math.floor(min(MAX_DOSE_MG, self.weight.kg * self.mg_per_kg) * 10 + 1e-6) / 10


VIAL_SIZES_MG = (80, 200, 400)
"""Tocilizumab IV vials (20 mg/mL: 4, 10, 20 mL), Actemra label; biosimilars as restated."""


def whole_vial_dose_mg(limit_mg: float) -> int:
    """The largest dose made of whole 80/200/400 mg vials that does not exceed ``limit_mg``."""
    best = 0
    for large in range(3):
        for medium in range(5):
            for small in range(11):
                dose = large * 400 + medium * 200 + small * 80
                if best < dose <= limit_mg + 1e-9:
                    best = dose
    return best


def weight_basis(record: PatientRecord, at: datetime, config: GradingConfig | None = None) -> WeightBasis | None:
    """The latest weight charted by ``at`` and its mg/kg; None without a weight (no dose then).
    A weight older than ``config.dosing_weight_max_age_days`` is returned with ``too_old`` set."""
    weights = [w for w in record.weights if w.time <= at]
    if not weights:
        return None
    weight = weights[-1]
    per_kg = MG_PER_KG_UNDER_30_KG if weight.kg < WEIGHT_CUTOFF_KG else MG_PER_KG_ADULT
    note = None
    age_days = (at - weight.time).total_seconds() / 86400
    if at - weight.time > WEIGHT_STALE_AFTER:
        note = f"weight charted {iso(weight.time)}, more than 30 days ago: confirm it"
    max_days = (config or GradingConfig()).dosing_weight_max_age_days
    too_old = None
    if age_days > max_days:
        too_old = (
            f"the latest weight ({weight.original}, {iso(weight.time)}, {age_days:.0f} days ago) is older than "
            f"{max_days:g} days, the oldest used for dosing [choice]: weigh the patient"
        )
    return WeightBasis(weight, per_kg, note, too_old)


def _age_in_months(record: PatientRecord, at: datetime) -> int:
    birth = record.birth_date
    assert birth is not None
    months = (at.year - birth.year) * 12 + (at.month - birth.month)
    return months - 1 if at.day < birth.day else months


def tocilizumab_advice(record: PatientRecord, at: datetime, config: GradingConfig | None = None) -> TocilizumabAdvice:
    """The dose allowed now, or why none is."""
    history = dose_history(record, at, config)
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
        return replace(
            refused,
            reason=f"{total} doses already given in this CRS event: the maximum is {MAX_DOSES_TOTAL} per event",
        )
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
    basis = weight_basis(record, at, config)
    if basis is None:
        return replace(refused, reason="no body weight charted: no dose is computed")
    if basis.too_old is not None:
        return replace(refused, reason=f"{basis.too_old}; no dose is computed")
    dose = float(math.floor(basis.limit_mg))
    return TocilizumabAdvice(dose, None, basis.weight, basis.mg_per_kg, in_24h, total, last, basis.note)
