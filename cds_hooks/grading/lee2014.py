"""Lee 2014 CRS grading (the 2014 NCI consensus), read from the findings.

Source: Lee DW, Gardner R, Porter DL, et al. Current concepts in the diagnosis and management of
cytokine release syndrome. Blood 2014;124:188-195, Table 2. Verified against the reproductions in
PMC7006459 Table 2, Porter 2018 (J Hematol Oncol 11:35) Table 1 and ashpublications Table 2
(6500909):
  1 symptoms not life-threatening, symptomatic treatment only (fever, nausea, fatigue, headache,
    myalgias, malaise)
  2 oxygen requirement < 40 %, or hypotension responsive to fluids or one low-dose pressor, or
    grade 2 organ toxicity
  3 oxygen requirement >= 40 %, or hypotension requiring high-dose or multiple pressors, or grade 3
    organ toxicity or grade 4 transaminitis
  4 life-threatening: requirement for ventilator support, or grade 4 organ toxicity (excluding
    transaminitis)
  5 death
Vasopressin counts as a pressor ("multiple" = two agents). The "high-dose" table of the paper was
not verified and doses are not read: one pressor is graded low-dose, said as an assumption.
Whether CPAP/BiPAP is "ventilator support" is not defined: at least the FiO2 grade. Grade 1 is
symptom-based: without fever the grade is indeterminate, not 0.
"""

from __future__ import annotations

from datetime import datetime

from cds_hooks.grading.common import (
    NO_ORGAN_TOXICITY_ASSUMPTION,
    Notes,
    Part,
    Rules,
    Signs,
    fio2_part,
    fluids_or_one_low_dose_pressor,
    grade_with,
    positive_pressure_part,
)
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import GradeResult
from cds_hooks.reading.record import PatientRecord, SupportLevel

SYSTEM = "LEE-2014"
CITATION = "Lee DW et al. Current concepts in the diagnosis and management of CRS. Blood 2014;124:188-195"
SYMPTOMS_NOT_READ = (
    "no fever: Lee 2014 grade 1 is symptom-based (nausea, fatigue, headache, myalgia, malaise), "
    "and symptoms are not read from FHIR"
)


def _hypotension(signs: Signs, notes: Notes) -> Part:
    return fluids_or_one_low_dose_pressor(signs, notes, noun="pressor")


def _hypoxia(signs: Signs, notes: Notes) -> Part:
    if signs.support is SupportLevel.POSITIVE_PRESSURE:
        return positive_pressure_part(signs, notes, grade4_label="requirement for ventilator support")
    return fio2_part(signs, notes)


RULES = Rules(
    system=SYSTEM,
    citation=CITATION,
    hypotension=_hypotension,
    hypoxia=_hypoxia,
    afebrile_grade=None,
    afebrile_reason=SYMPTOMS_NOT_READ,
    general_assumptions=(NO_ORGAN_TOXICITY_ASSUMPTION,),
)


def grade(record: PatientRecord, *, at: datetime, config: GradingConfig | None = None) -> GradeResult:
    """The Lee 2014 CRS grade at ``at``, with the worst over the look-back window."""
    return grade_with(RULES, record, at, config)
