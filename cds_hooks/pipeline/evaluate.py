"""From one patient's resources to graded results: read once, grade, validate the evidence, repeat.

The one place the stages meet, used by the hook service and the CLI alike, so both grade the
same way. Pure apart from model validation: no I/O, no clock (the caller passes ``at``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cds_hooks.advice.dosing import TocilizumabAdvice, tocilizumab_advice
from cds_hooks.advice.monitoring import OVERDUE_AFTER as LAB_OVERDUE_AFTER
from cds_hooks.advice.monitoring import MonitoringPanel, monitoring_panel
from cds_hooks.grading import GRADERS, GradeResult, GradingConfig
from cds_hooks.grading.astct import SYSTEM as ASTCT
from cds_hooks.grading.dic import DicConfig, score_dic
from cds_hooks.grading.episodes import crs_episodes
from cds_hooks.grading.hlh import flag_iec_hs, score_carhlh, score_hscore
from cds_hooks.grading.icans import DEFAULT_WINDOW as ICANS_WINDOW
from cds_hooks.grading.icans import FOLLOWED_FOR, ICANS_RULES, OVERDUE_AFTER, grade_icans
from cds_hooks.grading.icans import SYSTEM as ASTCT_ICANS
from cds_hooks.grading.result import ScoreResult
from cds_hooks.reading.evidence_check import invalid_references
from cds_hooks.reading.fhir_time import age_in_years
from cds_hooks.reading.labs import LabTable, builtin_labs
from cds_hooks.reading.neuro import IceQuestionnaire
from cds_hooks.reading.reader import SourcedResource, extract_record
from cds_hooks.reading.record import DataSource, NotEvidence, PatientRecord
from cds_hooks.reading.terminology import Terminology
from cds_hooks.reading.units import UnitTable


@dataclass(frozen=True)
class LabOptions:
    """The lab table (``mappings/labs.yaml``) and the settings of the scores read from it."""

    table: LabTable = field(default_factory=builtin_labs)
    dic: DicConfig = field(default_factory=DicConfig)
    overdue_after: timedelta = LAB_OVERDUE_AFTER
    """An ASCO lab is overdue during an active CRS episode when older than this [choice]."""


@dataclass(frozen=True)
class Grading:
    """What the grading needs besides the data: vocabulary, units, windows, systems."""

    terminology: Terminology
    units: UnitTable
    config: GradingConfig = field(default_factory=GradingConfig)
    systems: Sequence[str] = (ASTCT,)
    """CRS systems (ASTCT always first) and, when ICANS is graded, ICANS systems beside ASTCT's."""
    icans: IcansOptions | None = None
    """ICANS grading (``CRS_CDS_ICANS``); None leaves it out of the evaluation."""
    labs: LabOptions | None = field(default_factory=LabOptions)
    """Laboratory values and the scores read from them (``CRS_CDS_LABS``); None: not read."""


@dataclass(frozen=True)
class IcansOptions:
    """What ICANS grading needs besides the vocabulary: the ICE form and the look-back window."""

    questionnaire: IceQuestionnaire
    window: timedelta = ICANS_WINDOW
    overdue_after: timedelta = OVERDUE_AFTER
    """An assessment is overdue this long after the last one while ICANS is followed [choice]."""
    followed_for: timedelta = FOLLOWED_FOR
    """ICANS is followed when an ICE, CAPD or a finding of grade >= 1 was charted this recently."""


@dataclass(frozen=True)
class Evaluation:
    patient_reference: str | None
    at: datetime
    results: tuple[GradeResult, ...]
    record: PatientRecord
    tocilizumab: TocilizumabAdvice
    icans: GradeResult | None = None
    """ASTCT ICANS, graded beside CRS when enabled; drives its own card."""
    icans_results: tuple[GradeResult, ...] = ()
    """Every ICANS result: ASTCT's first, then the other ICANS systems chosen (e.g. CTCAE v6.0)."""
    scores: tuple[ScoreResult, ...] = ()
    """Lab scores beside the grades (ISTH DIC, carHLH, HScore, IEC-HS flag): shown on the CRS
    card, never change its grade."""
    panel: MonitoringPanel | None = None
    """The ASCO monitoring labs while a CRS episode is active (and lab results could be had)."""

    @property
    def primary(self) -> GradeResult:
        """The ASTCT result, which drives the card."""
        return self.results[0]

    @property
    def age_years(self) -> int | None:
        return age_in_years(self.record.birth_date, self.at) if self.record.birth_date else None


def evaluate(
    resources: Sequence[SourcedResource],
    *,
    patient_id: str | None,
    at: datetime,
    grading: Grading,
    unavailable: Mapping[DataSource, str] | None = None,
) -> Evaluation:
    """Grade one patient at ``at``; evidence that fails FHIR R4 validation is dropped and said.

    The chart is read once into one record; every system, ICANS and the advice read that record.
    """
    by_reference = {r.reference: r for r in resources}
    ice_form = grading.icans.questionnaire if grading.icans is not None else None
    skip: dict[str, str] = {}
    for _ in range(len(resources) + 1):  # each round drops at least one resource
        record = extract_record(
            resources,
            grading.terminology,
            grading.units,
            patient_id=patient_id,
            ice_form=ice_form,
            skip=skip,
            site_zone=ZoneInfo(grading.config.site_timezone) if grading.config.site_timezone else None,
            now=at,
            labs=grading.labs.table if grading.labs is not None else NO_LABS,
        )
        # ICANS and lab data never change the CRS grade: their absence is said on their own results.
        record.unavailable.update({k: v for k, v in (unavailable or {}).items() if k not in _NOT_CRS_SOURCES})
        record.not_evidence.extend(NotEvidence(ref, reason) for ref, reason in skip.items())
        results = tuple(GRADERS[system](record, at, grading.config) for system in _ordered(grading.systems))
        advice = tocilizumab_advice(record, at, grading.config)
        icans_results = _icans(grading, record=record, at=at, unavailable=unavailable)
        cited = [ref for result in results for ref in (*result.references, *result.worst_grade_references)]
        for icans_result in icans_results:
            cited.extend(icans_result.references)
        scores = _scores(grading, record=record, at=at, crs=results[0], unavailable=unavailable)
        cited.extend(ref for score in scores for ref in score.references)
        if advice.weight is not None:
            cited.append(advice.weight.reference)
        if record.patient_reference is not None:
            cited.append(record.patient_reference)
        bad = invalid_references(cited, by_reference)
        if not bad:
            break
        skip.update(bad)
    panel = _panel(grading, record=record, at=at, crs=results[0], unavailable=unavailable)
    icans = icans_results[0] if icans_results else None
    return Evaluation(record.patient_reference, at, results, record, advice, icans, icans_results, scores, panel)


def _panel(
    grading: Grading,
    *,
    record: PatientRecord,
    at: datetime,
    crs: GradeResult,
    unavailable: Mapping[DataSource, str] | None,
) -> MonitoringPanel | None:
    """The panel while a CRS episode is in progress at ``at``; none without lab results (a client
    that offers none gets its card as before) or when no sign was ever graded.

    The episode rules are only run when the worst grade in the look-back could be >= 1: they
    re-grade the course, which a patient with no CRS sign need not pay for.
    """
    if grading.labs is None or DataSource.LAB_RESULTS in (unavailable or {}):
        return None
    proven = max(crs.grade or 0, crs.grade_at_least or 0, crs.worst_grade or 0, crs.possible_grade or 0)
    if proven < 1:
        return None
    if crs_episodes(record, until=at, config=grading.config).current(at) is None:
        return None
    return monitoring_panel(record, at, grading.labs.table, grading.labs.overdue_after)


NO_LABS = LabTable("off", {}, {})
"""Labs switched off (``CRS_CDS_LABS=false``): no lab is read, so no lab score or card appears."""

_NOT_CRS_SOURCES = frozenset({DataSource.ICANS, DataSource.LAB_RESULTS})


def _scores(
    grading: Grading,
    *,
    record: PatientRecord,
    at: datetime,
    crs: GradeResult,
    unavailable: Mapping[DataSource, str] | None,
) -> tuple[ScoreResult, ...]:
    """The lab scores shown beside the grades; none when labs are not read."""
    if grading.labs is None:
        return ()
    dic = score_dic(record, at, grading.labs.dic, unavailable=(unavailable or {}).get(DataSource.LAB_RESULTS))
    resolving = crs.grade is not None and crs.worst_grade is not None and crs.grade < crs.worst_grade
    found = (
        dic,
        score_carhlh(record, at),
        score_hscore(record, at),
        flag_iec_hs(record, at, crs_resolving=resolving),
    )
    return tuple(score for score in found if score is not None)


def _icans(
    grading: Grading, *, record: PatientRecord, at: datetime, unavailable: Mapping[DataSource, str] | None
) -> tuple[GradeResult, ...]:
    """ASTCT ICANS, then each other ICANS system named in ``systems``; nothing when ICANS is off."""
    if grading.icans is None:
        return ()
    reason = (unavailable or {}).get(DataSource.ICANS)
    options = grading.icans
    chosen = [ASTCT_ICANS, *(s for s in dict.fromkeys(grading.systems) if s in ICANS_RULES and s != ASTCT_ICANS)]
    results = []
    for system in chosen:
        findings = record.icans_view()
        if reason is not None:
            findings.unavailable[DataSource.ICANS.value] = reason
        results.append(
            grade_icans(
                findings,
                at,
                options.window,
                overdue_after=options.overdue_after,
                followed_for=options.followed_for,
                rules=ICANS_RULES[system],
            )
        )
    return tuple(results)


def _ordered(systems: Sequence[str]) -> list[str]:
    """The CRS systems, ASTCT first; ICANS systems are graded by :func:`_icans`."""
    rest = [s for s in dict.fromkeys(systems) if s != ASTCT and s in GRADERS]
    return [ASTCT, *rest]
