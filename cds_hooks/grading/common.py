"""What the non-ASTCT systems share: one reading of the findings, graded by each system's table.

Lee 2014, Penn, MSKCC, CARTOX and CTCAE v5.0 grade the same signs as ASTCT (fever, hypotension,
hypoxia) but read them differently: oxygen by FiO2 (< 40 % vs >= 40 %) instead of device,
vasopressin as a pressor, CPAP apart from mechanical ventilation, the duration of pressor support.
So the ASTCT rules run first (fever window, masking, low pressure, support in force, the data
that are missing) and :class:`Signs` adds what the other tables need. Each system is then a small
pure table over ``Signs`` (``Rules``); this module combines its parts, collects the evidence and
the assumptions, and finds the worst grade over the same look-back window as ASTCT.

Choices shared by every system here (also in README and docs/decisions.md):
- CRS needs a fever, or masking after CRS, as in ASTCT: none of these systems says when CRS
  starts, and vital signs alone cannot tell CRS from sepsis or fluid overload [choice].
- FiO2 is the charted FiO2 with the support in force; for a nasal cannula or unspecified oxygen
  without one it is estimated as 21 + 4 x L/min [choice; the "4 % per litre" bedside rule,
  fpnotebook.com/legacy/ER/Procedure/LwFlwOxygn.htm]; for other devices it is unknown and the
  grade is indeterminate where it matters.
- Vasopressor doses are not read: "high-dose" cannot be judged and is said so on every result
  that could depend on it.
- Organ toxicity (CTCAE-graded creatinine, transaminases) is not read: systems that count it say
  so as an assumption; it could only raise their grade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from cds_hooks.grading.astct import AstctGrader, _Assessment
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import Evidence, GradeResult, Status
from cds_hooks.reading.record import Administration, PatientRecord, SupportLevel

FIO2_THRESHOLD_PERCENT = 40.0
"""Lee 2014, CTCAE v5.0, MSKCC and CARTOX: oxygen requirement < 40 % vs >= 40 %."""
ROOM_AIR_FIO2_PERCENT = 21.0
FIO2_PER_LITRE_PERCENT = 4.0
"""Low-flow estimate: FiO2 ~ 21 % + 4 % per L/min (fpnotebook "low flow oxygen") [choice]."""
MAX_ESTIMATED_FIO2_PERCENT = 100.0
LONG_PRESSOR_HOURS = 24.0
"""MSKCC (Park 2018): vasopressors < 24 h grade 2, >= 24 h grade 3."""

_LOW_FLOW_DEVICES = frozenset({"nasal_cannula", "low_flow", "oxygen_unspecified", "blow_by", None})
_NON_INVASIVE_WORDS = (
    "non-invasive",
    "noninvasive",
    "continuous positive",
    "cpap",
    "bipap",
    "bilevel",
    "nasal mask",
    "positive airway pressure",
    "niv",
    "nippv",
    "dual pressure",
)
_INVASIVE_WORDS = ("endotracheal", "tracheostomy", "intubat", "mechanical ventilat", "ventilator", "artificial ventil")

NO_DOSE_ASSUMPTION = (
    "vasopressor doses are not read from FHIR: a single vasopressor is graded as low dose; "
    "a high dose would raise the grade"
)
NO_ORGAN_TOXICITY_ASSUMPTION = (
    "organ toxicity (creatinine, transaminases; CTCAE grades) is not read: graded from vital signs and "
    "support only; organ toxicity could raise this grade"
)


class Ventilation(StrEnum):
    NONE = "none"
    NON_INVASIVE = "non-invasive (CPAP/BiPAP)"
    INVASIVE = "invasive mechanical ventilation"
    UNKNOWN = "positive pressure of unstated kind"


@dataclass
class Notes:
    """What a system's rules add while they run: evidence, gaps, assumptions, alerts."""

    evidence: list[Evidence] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Part:
    """One sign's grade; ``exact`` False when the data prove only that it is at least ``grade``."""

    grade: int
    exact: bool = True
    label: str = ""


@dataclass(frozen=True)
class Signs:
    """The findings at one moment, read once for every system."""

    at: datetime
    base: _Assessment
    """The ASTCT rules at ``at``: fever, masking, low pressure, support, what is missing."""
    pressors: tuple[Administration, ...]
    """Every vasopressor in effect at ``at``, vasopressin included."""
    pressor_agents: frozenset[str]
    pressor_since: datetime | None
    """Start of the uninterrupted vasopressor support that is in effect at ``at``."""
    ventilation: Ventilation
    fio2_percent: float | None
    fio2_estimated: bool
    fio2_reference: str | None

    @property
    def crs(self) -> bool:
        return self.base.fever is Status.MET or self.base.masked

    @property
    def low_pressure_without_pressor(self) -> bool:
        return self.base.hypotension_grade == 2

    @property
    def pressor_hours(self) -> float | None:
        if self.pressor_since is None:
            return None
        return (self.at - self.pressor_since).total_seconds() / 3600.0

    @property
    def support(self) -> SupportLevel:
        return self.base.support


@dataclass(frozen=True)
class Rules:
    """One system's table: a hypotension part and a hypoxia part, plus what it says without fever."""

    system: str
    citation: str
    hypotension: Callable[[Signs, Notes], Part]
    hypoxia: Callable[[Signs, Notes], Part]
    afebrile_grade: int | None
    """Grade without fever and without masking: 0 where grade 1 is fever, None where it is symptoms."""
    afebrile_reason: str = ""
    general_assumptions: tuple[str, ...] = ()


@dataclass
class _Point:
    at: datetime
    grade: int | None
    at_least: int | None
    notes: Notes
    components: dict[str, str | int]

    @property
    def worst_value(self) -> int | None:
        return self.grade if self.grade is not None else self.at_least


def ventilation_kind(display: str | None) -> Ventilation:
    """CPAP/BiPAP or invasive ventilation, read from the device's display (one mapped class holds both)."""
    text = (display or "").lower()
    if any(word in text for word in _NON_INVASIVE_WORDS):
        return Ventilation.NON_INVASIVE
    if any(word in text for word in _INVASIVE_WORDS):
        return Ventilation.INVASIVE
    return Ventilation.UNKNOWN


def fio2_part(signs: Signs, notes: Notes) -> Part:
    """Hypoxia by FiO2: < 40 % grade 2, >= 40 % grade 3; unknown FiO2 proves only grade 2."""
    if signs.support is SupportLevel.ROOM_AIR:
        return Part(0, label="room air")
    fio2 = signs.fio2_percent
    if fio2 is None:
        device = signs.base.oxygen_device_display or signs.base.oxygen_device or "oxygen"
        notes.missing.append(f"no FiO2 charted with {device}: < 40 % or >= 40 % cannot be told")
        return Part(2, exact=False, label="oxygen, FiO2 unknown")
    met = fio2 >= FIO2_THRESHOLD_PERCENT
    if signs.fio2_reference is not None:
        notes.evidence.append(
            Evidence(
                "oxygen FiO2",
                Status.MET if met else Status.NOT_MET,
                signs.fio2_reference,
                value=round(fio2, 1),
                unit="%",
                threshold=f">= {FIO2_THRESHOLD_PERCENT:g} %",
                detail="estimated 21 + 4 x L/min" if signs.fio2_estimated else "charted FiO2",
            )
        )
    if signs.fio2_estimated:
        notes.assumptions.append(
            f"FiO2 not charted: estimated {fio2:.0f} % from the flow (21 + 4 x L/min, a bedside rule for low-flow "
            "oxygen) [choice]"
        )
    return Part(3 if met else 2, label=f"FiO2 {fio2:.0f} %")


def positive_pressure_part(signs: Signs, notes: Notes, *, grade4_label: str) -> Part:
    """Ventilation in a table whose grade 4 is ``grade4_label``: invasive is 4, CPAP/BiPAP undefined."""
    if signs.ventilation is Ventilation.INVASIVE:
        return Part(4, label=signs.ventilation.value)
    by_fio2 = fio2_part(signs, notes)
    notes.missing.append(
        f"{signs.ventilation.value}: whether it is '{grade4_label}' (grade 4) is not defined by this system"
    )
    return Part(by_fio2.grade, exact=False, label=signs.ventilation.value)


def pressor_evidence(signs: Signs, notes: Notes, *, counted: str) -> None:
    for admin in signs.pressors:
        notes.evidence.append(
            Evidence(
                "vasopressor",
                Status.MET,
                admin.reference,
                value=admin.agent,
                time=admin.start,
                detail=f"in effect; {counted}",
            )
        )


def fluids_or_one_low_dose_pressor(signs: Signs, notes: Notes, *, noun: str) -> Part:
    """Lee 2014 and CARTOX read hypotension alike: fluids or one low-dose pressor -> 2, more than one
    (vasopressin counted) -> 3. Doses are not read, so one pressor is assumed low dose, and said."""
    agents = len(signs.pressor_agents)
    if agents >= 2:
        pressor_evidence(signs, notes, counted=f"multiple {noun}s (vasopressin counted)")
        return Part(3, label=f"{agents} {noun}s")
    if agents == 1:
        pressor_evidence(signs, notes, counted=f"one {noun}, dose not read")
        notes.assumptions.append(NO_DOSE_ASSUMPTION)
        return Part(2, label=f"one {noun} (assumed low dose)")
    if signs.low_pressure_without_pressor:
        return Part(2, label=f"hypotension without {noun} (responsive to fluids)")
    return Part(0)


class OtherSystemGrader:
    """Runs a system's :class:`Rules` at ``at`` and over the look-back window."""

    def __init__(self, record: PatientRecord, config: GradingConfig, rules: Rules) -> None:
        self.record = record
        self.config = config
        self.rules = rules
        self.astct = AstctGrader(record, config)
        self.pressors = sorted(self.astct.timeline.pressors, key=lambda a: a.start)

    def signs(self, at: datetime) -> Signs:
        base = self.astct.assess(at)
        running = tuple(a for a in self.pressors if a.in_effect_at(at))
        fio2, estimated, reference = self._fio2(base)
        return Signs(
            at=at,
            base=base,
            pressors=running,
            pressor_agents=frozenset(a.agent for a in running),
            pressor_since=self._pressor_since(at, running),
            ventilation=ventilation_kind(base.oxygen_device_display)
            if base.support is SupportLevel.POSITIVE_PRESSURE
            else Ventilation.NONE,
            fio2_percent=fio2,
            fio2_estimated=estimated,
            fio2_reference=reference,
        )

    def _pressor_since(self, at: datetime, running: tuple[Administration, ...]) -> datetime | None:
        """Walk back through overlapping administrations: a switch of agent does not restart the clock."""
        if not running:
            return None
        since = min(a.start for a in running)
        changed = True
        while changed:
            changed = False
            for admin in self.pressors:
                if admin.start < since and (admin.end is None or admin.end >= since):
                    since, changed = admin.start, True
        return since

    @staticmethod
    def _fio2(base: _Assessment) -> tuple[float | None, bool, str | None]:
        if base.support is SupportLevel.ROOM_AIR:
            return None, False, None
        if base.oxygen_fio2 is not None and base.oxygen_fio2.fio2_percent is not None:
            return base.oxygen_fio2.fio2_percent, False, base.oxygen_fio2.reference
        flow = base.oxygen_flow_l_min
        low_flow_device = base.oxygen_device in _LOW_FLOW_DEVICES and base.oxygen_device != "blow_by"
        if flow is not None and flow > 0 and low_flow_device:
            estimate = min(MAX_ESTIMATED_FIO2_PERCENT, ROOM_AIR_FIO2_PERCENT + FIO2_PER_LITRE_PERCENT * flow)
            flow_records = [r for r in base.oxygen_records if r.flow_l_min is not None]
            reference = flow_records[-1].reference if flow_records else None
            return estimate, True, reference
        return None, False, None

    def assess(self, at: datetime) -> _Point:
        rules = self.rules
        signs = self.signs(at)
        base = signs.base
        notes = Notes(
            evidence=[e for e in base.evidence if e.criterion not in ("vasopressor", "oxygen")],
            assumptions=[*rules.general_assumptions, *base.assumptions],
            alerts=list(base.alerts),
        )
        components: dict[str, str | int] = {
            "fever": "masked" if base.masked and base.fever is not Status.MET else base.fever.value,
        }
        hypotension = rules.hypotension(signs, notes)
        hypoxia = rules.hypoxia(signs, notes)
        notes.evidence.extend(e for e in base.evidence if e.criterion == "oxygen")
        components["hypotensionGrade"] = hypotension.grade
        components["hypoxiaGrade"] = hypoxia.grade
        if hypotension.label:
            components["hypotension"] = hypotension.label
        if hypoxia.label:
            components["hypoxia"] = hypoxia.label
        grade: int | None
        at_least: int | None = None
        if base.fever is Status.UNKNOWN and not base.masked:
            notes.missing.extend(base.missing)
            return _Point(at, None, None, notes, components)
        if base.grade is None and base.possible_grade is not None:
            # Possible CRS with masked fever (ASTCT section 1): never "no CRS" in any system.
            notes.missing.extend(base.missing)
            return _Point(at, None, None, notes, components)
        if not signs.crs:
            if rules.afebrile_grade is None:
                notes.missing.append(rules.afebrile_reason)
            return _Point(at, rules.afebrile_grade, None, notes, components)
        # Masked CRS with an active sign is CRS: at least 1, as the same finding with fever would be
        # (MSKCC grades hypotension without a pressor 1 whether the fever is charted or masked).
        active_sign = base.hypotension_grade > 0 or base.hypoxia_grade > 0
        floor = 1 if base.fever is Status.MET or (base.masked and active_sign) else 0
        value = max(floor, hypotension.grade, hypoxia.grade)
        inexact = [p for p in (hypotension, hypoxia) if not p.exact]
        grade = value
        if inexact and value < 4:
            grade, at_least = None, value
        if base.missing:
            notes.missing.extend(base.missing)
            if grade is not None and value < 4:
                grade, at_least = None, value
        return _Point(at, grade, at_least, notes, components)

    def evaluation_times(self, at: datetime) -> list[datetime]:
        """ASTCT's moments, plus the moments a pressor run crosses 24 h (MSKCC's duration rule)."""
        start = at - self.config.worst_grade_window
        moments = set(self.astct.evaluation_times(at))
        crossing = timedelta(hours=LONG_PRESSOR_HOURS)
        moments.update(a.start + crossing for a in self.pressors)
        moments.update(a.end for a in self.pressors if a.end is not None)
        return sorted(m for m in moments if start < m <= at)

    def grade(self, at: datetime) -> GradeResult:
        current = self.assess(at)
        worst: _Point | None = None
        for moment in self.evaluation_times(at):
            point = current if moment == at else self.assess(moment)
            value = point.worst_value
            if value is not None and (worst is None or worst.worst_value is None or value > worst.worst_value):
                worst = point
        notes = current.notes
        alerts = list(dict.fromkeys(notes.alerts))
        if self.record.deceased:
            alerts.append("patient is deceased: grade 5 (death due to CRS) needs a clinician's attribution")
        return GradeResult(
            system=self.rules.system,
            at=at,
            grade=current.grade,
            grade_at_least=current.at_least,
            components=current.components,
            evidence=tuple(notes.evidence),
            missing=tuple(dict.fromkeys(notes.missing)),
            worst_grade=worst.worst_value if worst is not None else None,
            worst_grade_at=worst.at if worst is not None else None,
            worst_grade_references=tuple(
                dict.fromkeys(e.reference for e in worst.notes.evidence if e.status is Status.MET and e.reference)
            )
            if worst is not None
            else (),
            not_evidence=tuple(self.record.not_evidence),
            assumptions=tuple(dict.fromkeys(notes.assumptions)),
            alerts=tuple(alerts),
            choices=self.config.describe(),
            citation=self.rules.citation,
        )


def grade_with(rules: Rules, record: PatientRecord, at: datetime, config: GradingConfig | None) -> GradeResult:
    return OtherSystemGrader(record, config or GradingConfig(), rules).grade(at)
