"""CTCAE v5.0 "Cytokine release syndrome" (NCI, 27 Nov 2017), read from the findings.

Source: U.S. DHHS/NIH/NCI, Common Terminology Criteria for Adverse Events v5.0, Immune system
disorders, "Cytokine release syndrome". Wording used here (UNVERIFIED against the NCI
spreadsheet: it could not be retrieved during this work; the rows below are the wording quoted in
the issue and in secondary tables, and must be checked before clinical use):
  1 fever with or without constitutional symptoms
  2 hypotension responding to fluids; hypoxia responding to < 40 % O2
  3 hypotension managed with one pressor; hypoxia requiring >= 40 % O2
  4 life-threatening consequences; urgent intervention indicated
  5 death
CTCAE does not say what two pressors are: grade 4 only if "life-threatening", which the data
cannot show, so two or more pressors (vasopressin counted) give "at least 3", indeterminate.
Invasive ventilation is taken as the "urgent intervention" of grade 4 [choice]; CPAP/BiPAP is
graded by FiO2 and left "at least". Organ toxicity is not a CRS criterion in CTCAE.
"""

from __future__ import annotations

from datetime import datetime

from cds_hooks.grading.common import (
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
from cds_hooks.grading.result import GradeResult
from cds_hooks.reading.record import PatientRecord, SupportLevel

SYSTEM = "CTCAE-5.0"
CITATION = (
    "NCI Common Terminology Criteria for Adverse Events v5.0 (27 Nov 2017), Cytokine release syndrome "
    "[wording not verified against the NCI spreadsheet]"
)


def _hypotension(signs: Signs, notes: Notes) -> Part:
    agents = len(signs.pressor_agents)
    if agents >= 2:
        pressor_evidence(signs, notes, counted="vasopressin counted as a pressor")
        notes.missing.append(
            f"{agents} pressors in effect: CTCAE v5.0 grades one pressor as 3 and gives 4 only for "
            "'life-threatening consequences; urgent intervention indicated', which the data cannot show"
        )
        return Part(3, exact=False, label=f"{agents} pressors")
    if agents == 1:
        pressor_evidence(signs, notes, counted="one pressor (vasopressin counted)")
        return Part(3, label="managed with one pressor")
    if signs.low_pressure_without_pressor:
        return Part(2, label="hypotension without pressor (responding to fluids)")
    return Part(0)


def _hypoxia(signs: Signs, notes: Notes) -> Part:
    if signs.support is SupportLevel.POSITIVE_PRESSURE:
        return positive_pressure_part(
            signs, notes, grade4_label="life-threatening consequences; urgent intervention indicated"
        )
    return fio2_part(signs, notes)


RULES = Rules(
    system=SYSTEM,
    citation=CITATION,
    hypotension=_hypotension,
    hypoxia=_hypoxia,
    afebrile_grade=0,
)


def grade(record: PatientRecord, *, at: datetime, config: GradingConfig | None = None) -> GradeResult:
    """The CTCAE v5.0 CRS grade at ``at``, with the worst over the look-back window."""
    return grade_with(RULES, record, at, config)
