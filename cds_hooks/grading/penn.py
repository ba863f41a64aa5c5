"""Penn CRS grading (University of Pennsylvania), read from the findings.

Source: Porter D, Frey N, Wood PA, Weng Y, Grupp SA. Grading of cytokine release syndrome
associated with the CAR T cell therapy tisagenlecleucel. J Hematol Oncol 2018;11:35, Table 1.
Verified against that table (jhoonline.biomedcentral.com, s13045-018-0653-x) and PMC9368621:
  1 mild reaction: supportive care (antipyretics, antiemetics)
  2 moderate: some organ dysfunction (grade 2 creatinine, grade 3 LFTs); hospitalisation for CRS,
    IV therapies (not fluid resuscitation for hypotension)
  3 more severe: organ dysfunction (grade 4 LFTs, grade 3 creatinine); hypotension treated with IV
    fluids (multiple fluid boluses) or low-dose vasopressors; coagulopathy needing FFP,
    cryoprecipitate or fibrinogen; hypoxia requiring supplemental oxygen (nasal cannula, high flow,
    CPAP or BiPAP)
  4 life-threatening: hypotension requiring high-dose vasopressors; hypoxia requiring mechanical
    ventilation
  5 death
Any oxygen (CPAP included) is grade 3; only invasive ventilation is 4. Doses, boluses and organ
toxicity are not read: hypotension is taken as treated with fluid boluses (grade 3) and a pressor
as low dose, each said as an assumption.
"""

from __future__ import annotations

from datetime import datetime

from cds_hooks.grading.common import (
    NO_ORGAN_TOXICITY_ASSUMPTION,
    Notes,
    Part,
    Rules,
    Signs,
    Ventilation,
    grade_with,
    pressor_evidence,
)
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import GradeResult
from cds_hooks.reading.record import PatientRecord, SupportLevel

SYSTEM = "PENN"
CITATION = "Porter D et al. Grading of CRS associated with tisagenlecleucel. J Hematol Oncol 2018;11:35"
BOLUS_ASSUMPTION = (
    "hypotension without a vasopressor is taken as treated with multiple IV fluid boluses (Penn grade 3); "
    "boluses are not counted from FHIR"
)
PENN_DOSE_ASSUMPTION = (
    "vasopressor doses are not read from FHIR: graded as low dose (grade 3); high-dose vasopressors would be grade 4"
)


def _hypotension(signs: Signs, notes: Notes) -> Part:
    if signs.pressors:
        pressor_evidence(signs, notes, counted="dose not read")
        notes.assumptions.append(PENN_DOSE_ASSUMPTION)
        return Part(3, label="vasopressor (assumed low dose)")
    if signs.low_pressure_without_pressor:
        notes.assumptions.append(BOLUS_ASSUMPTION)
        return Part(3, label="hypotension treated with fluids")
    return Part(0)


def _hypoxia(signs: Signs, notes: Notes) -> Part:
    support = signs.support
    if support is SupportLevel.ROOM_AIR:
        return Part(0, label="room air")
    if support is SupportLevel.POSITIVE_PRESSURE:
        if signs.ventilation is Ventilation.INVASIVE:
            return Part(4, label=signs.ventilation.value)
        if signs.ventilation is Ventilation.UNKNOWN:
            notes.missing.append(
                "positive pressure of unstated kind: CPAP/BiPAP is Penn grade 3, mechanical ventilation grade 4"
            )
            return Part(3, exact=False, label=signs.ventilation.value)
        return Part(3, label=signs.ventilation.value)
    return Part(3, label="supplemental oxygen")


RULES = Rules(
    system=SYSTEM,
    citation=CITATION,
    hypotension=_hypotension,
    hypoxia=_hypoxia,
    afebrile_grade=None,
    afebrile_reason="no fever: Penn grade 1 is 'mild reaction', and symptoms are not read from FHIR",
    general_assumptions=(NO_ORGAN_TOXICITY_ASSUMPTION,),
)


def grade(record: PatientRecord, *, at: datetime, config: GradingConfig | None = None) -> GradeResult:
    """The Penn CRS grade at ``at``, with the worst over the look-back window."""
    return grade_with(RULES, record, at, config)
