"""CARTOX CRS grading (MD Anderson; adult and paediatric), read from the findings.

Source: Neelapu SS, Tummala S, Kebriaei P, et al. Chimeric antigen receptor T-cell therapy:
assessment and management of toxicities. Nat Rev Clin Oncol 2018;15:47-62 (adult), and Mahadeo
KM, Khazal SJ, Abdel-Azim H, et al. Nat Rev Clin Oncol 2019;16:45-63 (paediatric CARTOX). Adult
table verified against the reproduction in PMC7006459 Table 2 and the MDACC column of Porter 2018
Table 1:
  1 temperature >= 38 C, or grade 1 organ toxicity
  2 hypotension responsive to IV fluids or low-dose vasopressor; hypoxia requiring FiO2 < 40 %;
    grade 2 organ toxicity
  3 hypotension needing high-dose or multiple vasopressors; hypoxia requiring FiO2 >= 40 %;
    grade 3 organ toxicity or grade 4 transaminitis
  4 life-threatening hypotension; needing ventilator support; grade 4 organ toxicity except
    grade 4 transaminitis
  5 death
Paediatric CARTOX keeps the grades and defines hypotension by age (systolic < 70 + 2 x age for
1-10 years): the shared hypotension rule already applies those thresholds from the birth date.
Vasopressin counts as a pressor. Doses are not read (one pressor = low dose, said); "life-
threatening hypotension" cannot be judged; CPAP/BiPAP is not clearly "ventilator support".
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

SYSTEM = "CARTOX"
CITATION = (
    "Neelapu SS et al. CAR T-cell therapy: assessment and management of toxicities. Nat Rev Clin Oncol "
    "2018;15:47-62; paediatric: Mahadeo KM et al. Nat Rev Clin Oncol 2019;16:45-63"
)


def _hypotension(signs: Signs, notes: Notes) -> Part:
    return fluids_or_one_low_dose_pressor(signs, notes, noun="vasopressor")


def _hypoxia(signs: Signs, notes: Notes) -> Part:
    if signs.support is SupportLevel.POSITIVE_PRESSURE:
        return positive_pressure_part(signs, notes, grade4_label="needing ventilator support")
    return fio2_part(signs, notes)


RULES = Rules(
    system=SYSTEM,
    citation=CITATION,
    hypotension=_hypotension,
    hypoxia=_hypoxia,
    afebrile_grade=0,
    general_assumptions=(NO_ORGAN_TOXICITY_ASSUMPTION,),
)


def grade(record: PatientRecord, *, at: datetime, config: GradingConfig | None = None) -> GradeResult:
    """The CARTOX CRS grade at ``at``, with the worst over the look-back window."""
    return grade_with(RULES, record, at, config)
