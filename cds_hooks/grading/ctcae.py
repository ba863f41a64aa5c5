"""CTCAE "Cytokine release syndrome", v5.0 (27 Nov 2017) and v6.0 (10 July 2025), read from the findings.

Source: U.S. DHHS/NIH/NCI, Common Terminology Criteria for Adverse Events, Immune system disorders,
"Cytokine release syndrome" (MedDRA 10052015). The grade rows below are the NCI's own text, checked
character for character against the NCI workbooks as kept in ``docs/reference/ctcae.md`` (a test
compares them). The CTCAE front matter reads a semicolon as "or": grade 2 is hypotension responding
to fluids OR the hypoxia of grade 2, so the grade is the worse of the hypotension and hypoxia parts.

v5.0 grades oxygen by FiO2 (< 40 % grade 2, >= 40 % grade 3). v6.0 changed only grades 2 and 3 (the
NCI mapping sheet calls it a clarification): oxygen by device, as ASTCT does (low-flow nasal cannula
or blow-by 2; high-flow nasal cannula, face mask, non-rebreather or Venturi mask 3). v6.0 does not
say where low flow ends: ASTCT's 6 L/min is used [choice].

Grade 4 is "life-threatening consequences; urgent intervention indicated" in both versions, which
the data cannot show directly. The same choices for both [choice]: invasive mechanical ventilation
is taken as that urgent intervention (4); CPAP/BiPAP and two or more pressors (vasopressin counted:
CTCAE has no ASTCT exception) are not defined as grade 4, so they give "at least" the grade they
prove (v5.0: one pressor 3, CPAP by its FiO2; v6.0: one pressor 3, CPAP at least the grade-3
devices it exceeds), indeterminate. Organ toxicity is not a CRS criterion in CTCAE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from cds_hooks.grading.common import (
    Notes,
    Part,
    Rules,
    Signs,
    Ventilation,
    fio2_part,
    grade_with,
    positive_pressure_part,
    pressor_evidence,
)
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import GradeResult
from cds_hooks.reading.record import PatientRecord, SupportLevel

SYSTEM = "CTCAE-5.0"
V6_SYSTEM = "CTCAE-6.0"

V5_ROWS: Mapping[int, str] = {
    1: "Fever with or without constitutional symptoms",
    2: "Hypotension responding to fluids; hypoxia responding to <40% O2",
    3: "Hypotension managed with one pressor; hypoxia requiring ≥ 40% O2",
    4: "Life-threatening consequences; urgent intervention indicated",
    5: "Death",
}
"""CTCAE v5.0 "Cytokine release syndrome", grade -> the NCI's text (docs/reference/ctcae.md)."""

V6_ROWS: Mapping[int, str] = {
    **V5_ROWS,
    2: "Hypotension responding to fluids; hypoxia requiring low-flow nasal cannula or blow-by",
    3: (
        "Hypotension managed with one pressor; hypoxia requiring high-flow nasal cannula, facemask, "
        "nonrebreather mask, or Venturi mask"
    ),
}
"""CTCAE v6.0: grades 2 and 3 changed, grades 1, 4 and 5 as v5.0 (docs/reference/ctcae.md)."""

CITATION = (
    "NCI Common Terminology Criteria for Adverse Events v5.0 (27 Nov 2017), Cytokine release syndrome (MedDRA 10052015)"
)
V6_CITATION = (
    "NCI Common Terminology Criteria for Adverse Events v6.0 (10 July 2025), Cytokine release syndrome "
    "(MedDRA 10052015)"
)

_GRADE4 = V5_ROWS[4].lower()


def _hypotension_rule(version: str) -> Callable[[Signs, Notes], Part]:
    """Both versions: fluids 2, one pressor 3, more than one undefined (grade 4 needs 'life-threatening')."""

    def hypotension(signs: Signs, notes: Notes) -> Part:
        agents = len(signs.pressor_agents)
        if agents >= 2:
            pressor_evidence(signs, notes, counted="vasopressin counted as a pressor")
            notes.missing.append(
                f"{agents} pressors in effect: CTCAE {version} grades one pressor as 3 and gives 4 only for "
                f"'{_GRADE4}', which the data cannot show"
            )
            return Part(3, exact=False, label=f"{agents} pressors")
        if agents == 1:
            pressor_evidence(signs, notes, counted="one pressor (vasopressin counted)")
            return Part(3, label="managed with one pressor")
        if signs.low_pressure_without_pressor:
            return Part(2, label="hypotension without pressor (responding to fluids)")
        return Part(0)

    return hypotension


def _hypoxia_v5(signs: Signs, notes: Notes) -> Part:
    """v5.0: by FiO2; invasive ventilation 4; CPAP/BiPAP at least its FiO2 grade."""
    if signs.support is SupportLevel.POSITIVE_PRESSURE:
        return positive_pressure_part(signs, notes, grade4_label=_GRADE4)
    return fio2_part(signs, notes)


def _hypoxia_v6(signs: Signs, notes: Notes) -> Part:
    """v6.0: by device as ASTCT reads it; invasive ventilation 4; CPAP/BiPAP at least 3."""
    support = signs.support
    if support is SupportLevel.POSITIVE_PRESSURE:
        if signs.ventilation is Ventilation.INVASIVE:
            return Part(4, label=signs.ventilation.value)
        notes.missing.append(
            f"{signs.ventilation.value}: whether it is '{_GRADE4}' (grade 4) is not defined by CTCAE v6.0; "
            "it is more than the grade-3 devices (high-flow cannula, masks)"
        )
        return Part(3, exact=False, label=signs.ventilation.value)
    if support is SupportLevel.ROOM_AIR:
        return Part(0, label="room air")
    if signs.base.oxygen_flow_l_min is not None and signs.base.oxygen_device in (None, "nasal_cannula"):
        notes.assumptions.append(
            "CTCAE v6.0 names devices, not flows: a nasal cannula above 6 L/min is read as high flow, as ASTCT "
            "does [choice]"
        )
    if support is SupportLevel.HIGH_FLOW:
        return Part(3, label="high-flow nasal cannula or mask")
    return Part(2, label="low-flow nasal cannula or blow-by")


RULES = Rules(
    system=SYSTEM,
    citation=CITATION,
    hypotension=_hypotension_rule("v5.0"),
    hypoxia=_hypoxia_v5,
    afebrile_grade=0,
)

V6_RULES = Rules(
    system=V6_SYSTEM,
    citation=V6_CITATION,
    hypotension=_hypotension_rule("v6.0"),
    hypoxia=_hypoxia_v6,
    afebrile_grade=0,
)


def grade(record: PatientRecord, *, at: datetime, config: GradingConfig | None = None) -> GradeResult:
    """The CTCAE v5.0 CRS grade at ``at``, with the worst over the look-back window."""
    return grade_with(RULES, record, at, config)


def grade_v6(record: PatientRecord, *, at: datetime, config: GradingConfig | None = None) -> GradeResult:
    """The CTCAE v6.0 CRS grade at ``at``, with the worst over the look-back window."""
    return grade_with(V6_RULES, record, at, config)
