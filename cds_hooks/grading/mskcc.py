"""MSKCC CRS grading (Memorial Sloan Kettering), read from the findings.

Source: Park JH, Riviere I, Gonen M, et al. Long-term follow-up of CD19 CAR therapy in acute
lymphoblastic leukemia. N Engl J Med 2018;378:449-459 (supplementary appendix). Verified against
the reproduction in PMC7006459 Table 2:
  1 mild symptoms requiring observation or supportive care only
  2 hypotension requiring any vasopressors < 24 h; hypoxia or dyspnoea requiring O2 < 40 %
  3 hypotension requiring any vasopressors >= 24 h; hypoxia or dyspnoea requiring O2 >= 40 %
  4 life-threatening: hypotension refractory to high-dose vasopressors; hypoxia or dyspnoea
    requiring mechanical ventilation
  5 death
Duration is that of the uninterrupted vasopressor support in effect at T (vasopressin counted).
Hypotension without a vasopressor does not raise the grade above 1. "Refractory to high-dose"
cannot be judged (doses not read): said as an assumption. CPAP/BiPAP is not clearly "mechanical
ventilation": at least the FiO2 grade.
"""

from __future__ import annotations

from datetime import datetime

from cds_hooks.grading.common import (
    LONG_PRESSOR_HOURS,
    Notes,
    Part,
    Rules,
    Signs,
    fio2_part,
    grade_with,
    positive_pressure_part,
    pressor_evidence,
)
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import Evidence, GradeResult, Status
from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.record import PatientRecord, SupportLevel

SYSTEM = "MSKCC"
CITATION = "Park JH et al. Long-term follow-up of CD19 CAR therapy in ALL. N Engl J Med 2018;378:449-459"
REFRACTORY_ASSUMPTION = (
    "vasopressor doses are not read from FHIR: 'hypotension refractory to high-dose vasopressors' (grade 4) "
    "cannot be judged and is not assumed"
)


def _hypotension(signs: Signs, notes: Notes) -> Part:
    hours = signs.pressor_hours
    if hours is None or signs.pressor_since is None:
        return Part(0)
    pressor_evidence(signs, notes, counted="any vasopressor (vasopressin counted)")
    long_run = hours >= LONG_PRESSOR_HOURS
    first = min(signs.pressors, key=lambda a: a.start)
    notes.evidence.append(
        Evidence(
            "vasopressor duration",
            Status.MET if long_run else Status.NOT_MET,
            first.reference,
            value=round(hours, 1),
            unit="h",
            threshold=f">= {LONG_PRESSOR_HOURS:g} h",
            time=signs.pressor_since,
            detail=f"uninterrupted vasopressor support since {iso(signs.pressor_since)}",
        )
    )
    notes.assumptions.append(REFRACTORY_ASSUMPTION)
    return Part(3 if long_run else 2, label=f"vasopressors for {hours:.1f} h")


def _hypoxia(signs: Signs, notes: Notes) -> Part:
    if signs.support is SupportLevel.POSITIVE_PRESSURE:
        return positive_pressure_part(signs, notes, grade4_label="mechanical ventilation")
    return fio2_part(signs, notes)


RULES = Rules(
    system=SYSTEM,
    citation=CITATION,
    hypotension=_hypotension,
    hypoxia=_hypoxia,
    afebrile_grade=None,
    afebrile_reason="no fever: MSKCC grade 1 is 'mild symptoms', and symptoms are not read from FHIR",
)


def grade(record: PatientRecord, *, at: datetime, config: GradingConfig | None = None) -> GradeResult:
    """The MSKCC CRS grade at ``at``, with the worst over the look-back window."""
    return grade_with(RULES, record, at, config)
