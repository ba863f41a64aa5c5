"""The clinical record: typed findings on a time axis, each with its time and FHIR reference.

The reader (``reader.py``) builds one record per patient from FHIR resources, once per call;
CRS grading, every other grading system, ICANS, the order checks, the course and the advice read
only this record. Keeping FHIR shapes out of everything downstream is what lets every feature
share one reading of the chart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import IntEnum, StrEnum
from operator import attrgetter

from cds_hooks.reading.terminology import MedicationRole

_TIME = attrgetter("time")
_START = attrgetter("start")


class DataSource(StrEnum):
    """The groups of data a hook call fetches; one may be unavailable (an OperationOutcome)."""

    PATIENT = "Patient"
    OBSERVATIONS = "Observation"
    MEDICATIONS = "MedicationAdministration"
    PROCEDURES = "Procedure"
    CONDITIONS = "Condition"
    LABORATORY = "Observation (laboratory)"
    """Order checks only (blood cultures); never passed to the grading."""
    ACTIVE_CONDITIONS = "Condition (active)"
    """Order checks only (active infection Conditions); never passed to the grading."""
    LAB_RESULTS = "Observation (lab results)"
    """Mapped laboratory values (``labs`` prefetch key): lab scores only, never the CRS grade."""
    ICANS = "ICANS assessments"
    """ICE/CAPD and neurologic Observations and ICE QuestionnaireResponses; ICANS grading only."""


class SupportLevel(IntEnum):
    """Oxygen support as ASTCT grades it; the value is the hypoxia grade it implies."""

    ROOM_AIR = 0
    LOW_FLOW = 2
    HIGH_FLOW = 3
    POSITIVE_PRESSURE = 4


@dataclass(frozen=True, slots=True)
class Temperature:
    time: datetime
    """When it was taken; for an imprecise (date-only) time, the earliest it can be."""
    celsius: float
    """Rounded to 0.1 degC (clinical-reference.md: compare after rounding)."""
    original: str
    """The value and unit as charted, e.g. ``101.3 [degF]``."""
    reference: str
    site: str | None = None
    latest: datetime | None = None
    """Set when the time is imprecise (date only): it lies somewhere in [time, latest]."""


@dataclass(frozen=True, slots=True)
class BloodPressure:
    time: datetime
    reference: str
    systolic_mmhg: float | None = None
    mean_mmhg: float | None = None
    diastolic_mmhg: float | None = None
    mean_derived: bool = False
    """MAP computed as (SBP + 2 x DBP) / 3 from a pair charted together (no MAP charted)."""
    latest: datetime | None = None
    """Set when the time is imprecise (date only): it lies somewhere in [time, latest]."""


@dataclass(frozen=True, slots=True)
class UnreadableOxygen:
    """An oxygen flow or FiO2 that was charted but cannot be read (e.g. an unknown unit).

    Support that cannot be read is not room air: the hypoxia criterion is unknown while it is
    the latest oxygen record (the grade is then indeterminate, "at least").
    """

    time: datetime
    reference: str
    reason: str


@dataclass(frozen=True, slots=True)
class OxygenRecord:
    """One charted fact about oxygen support: a device, a flow, an FiO2, or room air.

    Point records (Observations, timed administrations) hold for 12 h unless a later room-air
    record ends them; period records (a Procedure or an administration with a period) hold for
    their period. ``device`` is the mapped support class (``nasal_cannula``, ``face_mask``...).
    """

    time: datetime
    reference: str
    device: str | None = None
    device_display: str | None = None
    flow_l_min: float | None = None
    fio2_percent: float | None = None
    room_air: bool = False
    period_end: datetime | None = None
    is_period: bool = False
    by_text: bool = False
    latest: datetime | None = None
    """Set when the time is imprecise (date only): it lies somewhere in [time, latest]."""

    @property
    def is_support(self) -> bool:
        if self.room_air:
            return False
        if self.device is not None and self.device != "room_air":
            return True
        if self.flow_l_min is not None and self.flow_l_min > 0:
            return True
        return self.fio2_percent is not None and self.fio2_percent > 21.0


@dataclass(frozen=True, slots=True)
class SpO2:
    time: datetime
    percent: float
    reference: str
    latest: datetime | None = None


@dataclass(frozen=True, slots=True)
class Administration:
    """A MedicationAdministration of an agent the grading knows, over the time it ran.

    ``end`` is None while it is still running (in-progress with no end). A point-in-time
    administration has ``start == end``. An imprecise (date-only) start lies in
    [``start``, ``start_latest``]; the rules ask whether it is *surely* in effect, given, or after
    a moment, and say "unknown" when only part of the interval satisfies them.
    """

    agent: str
    role: MedicationRole
    start: datetime
    end: datetime | None
    reference: str
    status: str
    by_text: bool = False
    dose_mg: float | None = None
    rate_l_min: float | None = None
    display: str | None = None
    start_latest: datetime | None = None
    """Set when the start is imprecise (date only): it lies somewhere in [start, start_latest]."""
    end_earliest: datetime | None = None
    """Set when the end is imprecise (date only): it lies somewhere in [end_earliest, end]."""
    route_note: str | None = None
    """Said on the evidence when a charted route was not recognised (still counted)."""

    @property
    def imprecise(self) -> bool:
        return self.start_latest is not None or self.end_earliest is not None

    @property
    def latest_start(self) -> datetime:
        return self.start_latest or self.start

    def in_effect_at(self, at: datetime) -> bool:
        """Surely in effect at ``at``: started by then and surely not yet ended.

        A charted record is not from the future, so an imprecise start is truncated at ``at``: a
        running infusion dated today is running now; a completed dose dated today may be over.
        """
        end = self.end_earliest or self.end
        return self.start <= at and (end is None or at <= end)

    def possibly_in_effect_at(self, at: datetime) -> bool:
        """In effect at ``at`` for some reading of an imprecise time."""
        return self.start <= at and (self.end is None or at <= self.end)

    def surely_given_by(self, at: datetime) -> bool:
        """Given by ``at``: an imprecise start is truncated at ``at`` (not from the future)."""
        return self.start <= at

    def surely_after(self, moment: datetime) -> bool:
        return self.start > moment


@dataclass(frozen=True, slots=True)
class CrsCondition:
    onset: datetime | None
    reference: str
    code: str


@dataclass(frozen=True, slots=True)
class Weight:
    time: datetime
    kg: float
    original: str
    reference: str
    latest: datetime | None = None

    @property
    def charted(self) -> str:
        """When it was charted, as a clinician reads it: the instant, or the day of a date-only one."""
        if self.latest is None or self.latest == self.time:
            return self.time.isoformat().replace("+00:00", "Z")
        middle = self.time + (self.latest - self.time) / 2  # the charted day, whatever offset widened it
        return f"{middle.date().isoformat()} (date only)"


@dataclass(frozen=True, slots=True)
class NotEvidence:
    """A resource the grading could have used but did not, and why (shown to clinicians)."""

    reference: str
    reason: str


class Domain(StrEnum):
    """The ASTCT ICANS domains, plus the Glasgow coma score shown as support only."""

    ICE = "ice_score"
    CAPD = "capd_score"
    CONSCIOUSNESS = "level_of_consciousness"
    SEIZURE = "seizure"
    MOTOR = "motor_weakness"
    EDEMA = "cerebral_edema"
    GCS = "glasgow_coma_score"


@dataclass(frozen=True, slots=True)
class NeuroFinding:
    """One charted ICANS fact: a score, a coded answer, or a yes/no for a domain."""

    domain: Domain
    time: datetime
    reference: str
    score: float | None = None
    answer: str | None = None
    """The answer concept id (``loc_awakens_to_voice``), for coded values."""
    present: bool | None = None
    """valueBoolean: the finding is present (type unknown) or absent."""
    display: str | None = None
    incomplete: str | None = None
    """An assessment attempted but not completed (an ICE form with unanswered items), and why:
    it scores nothing, but it is newer than any earlier score (grading names it)."""


@dataclass
class IcansFindings:
    """What ICANS grading reads for one patient (a view of the record), sorted by time."""

    birth_date: date | None = None
    findings: list[NeuroFinding] = field(default_factory=list)
    not_evidence: list[NotEvidence] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Data the EHR could not supply (prefetch key -> reason)."""


@dataclass(frozen=True, slots=True)
class BloodCulture:
    """A blood culture result (order checks: a positive one is a sign of infection)."""

    time: datetime
    reference: str
    positive: bool
    organism: str | None = None


@dataclass(frozen=True, slots=True)
class InfectionCondition:
    """An active Condition mapped (by code, or by its text) to an infection."""

    reference: str
    name: str
    by_text: bool = False


@dataclass(frozen=True, slots=True)
class LabResult:
    """One laboratory value (``mappings/labs.yaml``) in the lab's canonical unit.

    The reference range is kept, converted alike: PT prolongation and the D-dimer bands of the
    ISTH DIC score are measured against the laboratory's own normal (clinical-reference.md s. 6).
    """

    lab: str
    """The lab id (``crp``, ``platelets``...)."""
    time: datetime
    value: float
    unit: str
    """The lab's canonical unit (``mg/L``, ``10*9/L``)."""
    original: str
    """The value and unit as charted, e.g. ``2.5 mg/dL``."""
    reference: str
    reference_low: float | None = None
    reference_high: float | None = None
    latest: datetime | None = None
    """Set when the time is imprecise (date only): it lies somewhere in [time, latest]."""


@dataclass
class PatientRecord:
    """Everything extracted for one patient, sorted by time, ready for pure grading."""

    patient_reference: str | None = None
    birth_date: date | None = None
    deceased: bool = False
    temperatures: list[Temperature] = field(default_factory=list)
    blood_pressures: list[BloodPressure] = field(default_factory=list)
    oxygen: list[OxygenRecord] = field(default_factory=list)
    spo2: list[SpO2] = field(default_factory=list)
    administrations: list[Administration] = field(default_factory=list)
    conditions: list[CrsCondition] = field(default_factory=list)
    weights: list[Weight] = field(default_factory=list)
    unreadable_oxygen: list[UnreadableOxygen] = field(default_factory=list)
    neuro: list[NeuroFinding] = field(default_factory=list)
    """ICANS assessments (ICE/CAPD scores, consciousness, seizures, motor, oedema, GCS)."""
    blood_cultures: list[BloodCulture] = field(default_factory=list)
    infections: list[InfectionCondition] = field(default_factory=list)
    labs: list[LabResult] = field(default_factory=list)
    """Laboratory values (``mappings/labs.yaml``); never read by the CRS grading."""
    lab_not_evidence: list[tuple[str, NotEvidence]] = field(default_factory=list)
    """(lab id, why) for lab Observations that could not be used: named on the scores that read
    that lab, never on the CRS card."""
    not_evidence: list[NotEvidence] = field(default_factory=list)
    unidentified_administrations: list[NotEvidence] = field(default_factory=list)
    """MedicationAdministrations whose drug cannot be identified (no code, no text, a reference
    nothing resolves): any of them could be a tocilizumab dose or a premedication, so the order
    checks name them instead of skipping them."""
    neuro_not_evidence: list[NotEvidence] = field(default_factory=list)
    """ICANS assessments that could not be used: shown on the ICANS result, not the CRS card."""
    unavailable: dict[DataSource, str] = field(default_factory=dict)
    """Data groups the EHR could not supply (source -> reason), e.g. an OperationOutcome."""

    def sort(self) -> None:
        """Sort every list by time so grading can use binary search over windows (stable: equal
        times keep the order they were read in)."""
        self.temperatures.sort(key=_TIME)
        self.blood_pressures.sort(key=_TIME)
        self.oxygen.sort(key=_TIME)
        self.spo2.sort(key=_TIME)
        self.administrations.sort(key=_START)
        self.weights.sort(key=_TIME)
        self.neuro.sort(key=_TIME)
        self.blood_cultures.sort(key=_TIME)
        self.labs.sort(key=_TIME)

    def icans_view(self) -> IcansFindings:
        """The part of the record ICANS grading reads."""
        return IcansFindings(self.birth_date, list(self.neuro), list(self.neuro_not_evidence))

    def labs_of(self, lab: str) -> list[LabResult]:
        """Every value of one lab, oldest first."""
        return [r for r in self.labs if r.lab == lab]

    def administrations_with(self, *roles: MedicationRole) -> list[Administration]:
        return [a for a in self.administrations if a.role in roles]
