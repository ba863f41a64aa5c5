"""m-EASIX and EASIX before a CAR-T infusion, from the record's laboratory values: pure, no I/O.

Sources (docs/clinical-reference.md section 6): m-EASIX = LDH (U/L) x CRP (mg/dL) / platelets
(10^9/L), Pennisi, Blood Adv 2021;5:3397: AUC for grade >= 3 CRS 0.80 at lymphodepletion, 0.73
at day -1, 0.75 at day +1 (118 adults), no cut-off. EASIX = LDH x creatinine (mg/dL) /
platelets: > 4.67 before lymphodepletion gave 4.3-fold odds of grade >= 3 CRS and/or ICANS
(Korell 2022); a population-based cohort found AUC 0.61-0.62 only (de Boer 2023). Validated in
CD19 CAR-T cohorts, not for T-cell engagers. Information for the team, never a reason given by
this service to withhold therapy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from cds_hooks.grading.dic import latest_within
from cds_hooks.grading.result import Evidence, ScoreResult, Status
from cds_hooks.reading.record import LabResult, PatientRecord

M_EASIX = "M-EASIX"
EASIX = "EASIX"
M_EASIX_CITATION = "Pennisi et al., Blood Adv 2021;5:3397 (m-EASIX)"
EASIX_CITATION = "Korell et al. 2022 (EASIX > 4.67); de Boer et al. 2023 (population-based cohort)"
EASIX_KORELL_CUTOFF = 4.67
"""Before lymphodepletion, EASIX > 4.67: 4.3-fold odds of grade >= 3 CRS and/or ICANS (Korell 2022)."""
CRP_MG_DL_PER_MG_L = 0.1
"""m-EASIX uses CRP in mg/dL; the record holds mg/L."""
RISK_WINDOW = timedelta(days=7)
"""Labs count when charted in the 7 days before the order [choice: the sources measured them at
lymphodepletion, which the service cannot place; the card shows each value's time]."""
RISK_LABS = frozenset({"ldh", "crp", "creatinine", "platelets"})

M_EASIX_NOTE = (
    "AUC for grade >= 3 CRS 0.80 at lymphodepletion, 0.73 at day -1, 0.75 at day +1 (118 adults, "
    "CD19 CAR-T); no cut-off verified: a value, not a class."
)
EASIX_NOTES = (
    "Korell 2022: EASIX > 4.67 before lymphodepletion gave 4.3-fold odds of grade >= 3 CRS and/or ICANS.",
    "A population-based cohort found AUC 0.61-0.62 only (de Boer 2023): a weak predictor.",
)


def _evidence(name: str, lab: LabResult) -> Evidence:
    return Evidence(name, Status.MET, lab.reference, lab.value, lab.unit, None, lab.time, lab.original)


def _index(
    system: str, parts: Sequence[tuple[str, str]], labs: Sequence[LabResult], at: datetime, window: timedelta
) -> tuple[dict[str, LabResult], list[str], tuple[Evidence, ...]]:
    """The latest value of each (name, lab id) part, what is missing, and the evidence rows."""
    found: dict[str, LabResult] = {}
    missing: list[str] = []
    for name, lab_id in parts:
        lab = latest_within(labs, (lab_id,), at, window)
        if lab is None:
            missing.append(f"{name} not charted in the {window.days} days before the order")
        else:
            found[lab_id] = lab
    platelets = found.get("platelets")
    if platelets is not None and platelets.value <= 0:
        missing.append(f"platelets {platelets.original}: {system} cannot be computed (division by zero)")
    return found, missing, tuple(_evidence(name, found[lab_id]) for name, lab_id in parts if lab_id in found)


def m_easix(record: PatientRecord, at: datetime, window: timedelta = RISK_WINDOW) -> ScoreResult:
    """m-EASIX = LDH x CRP (mg/dL) / platelets, with its log2; indeterminate when a part is missing."""
    parts = (("LDH", "ldh"), ("CRP", "crp"), ("platelets", "platelets"))
    found, missing, evidence = _index(M_EASIX, parts, record.labs, at, window)
    value = None
    if not missing:
        value = found["ldh"].value * found["crp"].value * CRP_MG_DL_PER_MG_L / found["platelets"].value
    notes = (M_EASIX_NOTE,) if value is None or value <= 0 else (f"log2 m-EASIX {math.log2(value):.2f}.", M_EASIX_NOTE)
    return ScoreResult(
        system=M_EASIX,
        at=at,
        score=None,
        components={name: "charted" if lab_id in found else "unknown" for name, lab_id in parts},
        evidence=evidence,
        missing=tuple(missing),
        value=round(value, 2) if value is not None else None,
        notes=notes,
        choices={"labs": f"latest of each in the {window.days} days before the order"},
        citation=M_EASIX_CITATION,
    )


def easix(record: PatientRecord, at: datetime, window: timedelta = RISK_WINDOW) -> ScoreResult:
    """EASIX = LDH x creatinine (mg/dL) / platelets, against Korell's 4.67; indeterminate when a
    part is missing (never "below the cut-off")."""
    parts = (("LDH", "ldh"), ("creatinine", "creatinine"), ("platelets", "platelets"))
    found, missing, evidence = _index(EASIX, parts, record.labs, at, window)
    value = None
    interpretation = None
    if not missing:
        value = found["ldh"].value * found["creatinine"].value / found["platelets"].value
        above = value > EASIX_KORELL_CUTOFF
        interpretation = f"{'above' if above else 'not above'} {EASIX_KORELL_CUTOFF:g} (Korell 2022)"
    return ScoreResult(
        system=EASIX,
        at=at,
        score=None,
        components={name: "charted" if lab_id in found else "unknown" for name, lab_id in parts},
        evidence=evidence,
        missing=tuple(missing),
        value=round(value, 2) if value is not None else None,
        interpretation=interpretation,
        notes=EASIX_NOTES,
        choices={"labs": f"latest of each in the {window.days} days before the order"},
        citation=EASIX_CITATION,
    )


def risk_before_infusion(
    record: PatientRecord, at: datetime, window: timedelta = RISK_WINDOW
) -> tuple[ScoreResult, ...]:
    """Both indices, or none when no lab they read was charted in the window [choice]."""
    if latest_within(record.labs, tuple(RISK_LABS), at, window) is None:
        return ()
    return (m_easix(record, at, window), easix(record, at, window))
