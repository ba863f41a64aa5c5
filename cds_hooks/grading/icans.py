"""ICANS grade (ASTCT 2019; CTCAE v6.0): pure, from :class:`~cds_hooks.reading.record.IcansFindings` at ``at``.

Source: Lee DW et al., ASTCT consensus grading for CRS and neurologic toxicity associated with
immune effector cells, Biol Blood Marrow Transplant 2019;25:625-638 (ICANS grading for adults and
for children < 12 years), as restated in PMC8403007 Table 4, PMC7990806 Table 2 and (children)
MDedge's summary of the paper. The grade is the most severe domain not attributable to another
cause: ICE 7-9 -> 1, 3-6 -> 2, 0-2 -> 3 (ICE 0 awake with global aphasia is 3; unarousable is 4 via
consciousness); consciousness: awakens spontaneously 1, to voice 2, only to touch 3, unarousable /
vigorous stimuli / stupor / coma 4; seizure resolving rapidly or nonconvulsive resolved with
intervention 3, prolonged > 5 min or repetitive without return to baseline 4; deep focal motor
weakness 4; focal oedema 3, diffuse oedema / posturing / CN VI palsy / papilloedema / Cushing's
triad 4. Children < 12: CAPD < 9 (1-8) with the consciousness row giving 1 or 2, CAPD >= 9 -> 3,
unable to perform -> 4 (charted as unarousable).

Missing data is a value: without an encephalopathy score (ICE, or CAPD under 12) in the window
the grade is indeterminate ("at least" what the other domains show), never 0. Grade 5 is never
inferred. "Not attributable to another cause" cannot be read from the chart: it is an assumption
stated on every result.

CTCAE v6.0 (10 July 2025) adds the term "Immune effector cell-associated neurotoxicity syndrome"
(MedDRA 10083347), graded by the same scores (docs/reference/ctcae.md, verbatim): grade 1 ICE 7-9,
or CAPD 1-8 and awakens spontaneously; 2 ICE 3-6, or CAPD 1-8 and awakens to voice; 3 ICE 0-2, or
CAPD >= 9 and awakens only to touch; 4 "life-threatening consequences; urgent intervention
indicated". Each system is a table (:class:`IcansRules`) over the same reading: windows, the
score by age and missing data are the same for both. CTCAE's grade 4 is read as for CRS [choice]:
a finding that is itself a life-threatening emergency needing urgent intervention is 4
(unarousable or coma; a prolonged or repetitive seizure; diffuse oedema, posturing or Cushing's
triad); ASTCT's other grade-4 findings (deep focal motor weakness, CN VI palsy, papilloedema) are
"severe" (3) and may be 4, which the chart cannot show: indeterminate "at least 3". Seizures and
oedema that ASTCT grades 3 are CTCAE's "severe symptoms" (3) [choice].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_hooks.grading.result import Evidence, GradeResult, Status
from cds_hooks.reading.fhir_time import age_in_years, iso
from cds_hooks.reading.record import Domain, IcansFindings, NeuroFinding

SYSTEM = "ASTCT-2019-ICANS"
CITATION = (
    "Lee DW et al. ASTCT consensus grading for cytokine release syndrome and neurologic toxicity "
    "associated with immune effector cells. Biol Blood Marrow Transplant 2019;25:625-638 (ICANS)"
)
CTCAE_V6_SYSTEM = "CTCAE-6.0-ICANS"
CTCAE_V6_CITATION = (
    "NCI Common Terminology Criteria for Adverse Events v6.0 (10 July 2025), Immune effector "
    "cell-associated neurotoxicity syndrome (MedDRA 10083347)"
)
CTCAE_V6_ROWS: Mapping[int, str] = {
    1: (
        "Mild symptoms; Immune Effector Cell-Associated Encephalopathy (ICE) score 7 - 9; Cornell Assessment of "
        "Pediatric Delirium (CAPD) score 1 - 8 AND awakens spontaneously"
    ),
    2: (
        "Moderate symptoms; ICE score 3 - 6; CAPD score 1 - 8 AND awakens to voice; limiting instrumental ADL or "
        "mild/moderate impact on age-appropriate normal daily activity (pediatric)"
    ),
    3: (
        "Severe symptoms; ICE score 0 - 2; CAPD score >=9 AND awakens only to tactile stimulus; limiting self-care "
        "ADL or severe impact on age-appropriate normal daily activity (pediatric)"
    ),
    4: "Life-threatening consequences; urgent intervention indicated",
    5: "Death",
}
"""CTCAE v6.0 ICANS, grade -> the NCI's text (docs/reference/ctcae.md)."""

CAPD_MAX_AGE_YEARS = 12
"""CAPD replaces ICE for children younger than 12 (Lee 2019; ASCO 2021)."""
CAPD_DELIRIUM_THRESHOLD = 9
"""CAPD >= 9 is grade 3 (Lee 2019 paediatric table; ASCO 2021 footnote)."""
OVERDUE_AFTER = timedelta(hours=12)
"""[choice, configurable] An ICE/CAPD assessment is overdue 12 h after the last one while ICANS is
followed (ASCO 2021: ICE at least twice a day)."""
FOLLOWED_FOR = timedelta(days=7)
"""[choice, configurable] ICANS is "being followed" when an ICE, CAPD or a finding of grade >= 1 was
charted in the last 7 days."""
GCS_DEPRESSED_MAX = 8
"""[choice] A GCS <= 8 (coma range) beside an ICANS grade below 3 makes the grade indeterminate."""
GCS_CONFLICT_BELOW_GRADE = 3
DEFAULT_WINDOW = timedelta(hours=24)
"""Assessments older than 24 h are not the current state [choice]: ICE is charted at least twice
a day (ASCO 2021: "at least two times a day"), so 24 h holds at least two assessments."""

ANSWER_GRADE: Mapping[str, int] = {
    "loc_alert": 0,
    "loc_awakens_spontaneously": 1,
    "loc_awakens_to_voice": 2,
    "loc_awakens_to_tactile": 3,
    "loc_unarousable": 4,
    "seizure_none": 0,
    "seizure_rapidly_resolving": 3,
    "seizure_nonconvulsive_resolved": 3,
    "seizure_prolonged": 4,
    "seizure_repetitive": 4,
    "motor_none": 0,
    "motor_deep_focal_weakness": 4,
    "edema_none": 0,
    "edema_focal": 3,
    "edema_diffuse": 4,
    "posturing": 4,
    "cranial_nerve_vi_palsy": 4,
    "papilledema": 4,
    "cushings_triad": 4,
}
"""ASTCT 2019 ICANS table: the grade each coded answer implies."""

BOOLEAN_PRESENT: Mapping[Domain, tuple[int, int]] = {
    Domain.SEIZURE: (3, 4),
    Domain.MOTOR: (4, 4),
    Domain.EDEMA: (3, 4),
}
"""A yes without its type: (proven grade, possible grade). A seizure is at least 3, and 4 if
prolonged; oedema at least 3 (focal), and 4 if diffuse; deep focal weakness is always 4."""

CTCAE_V6_ANSWER_GRADE: Mapping[str, tuple[int, int]] = {
    **{answer: (grade, grade) for answer, grade in ANSWER_GRADE.items()},
    "motor_deep_focal_weakness": (3, 4),
    "cranial_nerve_vi_palsy": (3, 4),
    "papilledema": (3, 4),
}
"""CTCAE v6.0 ICANS: (proven, possible) grade per coded answer. As ASTCT, except the grade-4 findings
that are not in themselves a life-threatening emergency: severe (3), possibly 4 [choice]."""

CTCAE_V6_BOOLEAN_PRESENT: Mapping[Domain, tuple[int, int]] = {
    Domain.SEIZURE: (3, 4),
    Domain.MOTOR: (3, 4),
    Domain.EDEMA: (3, 4),
}
"""CTCAE v6.0: a yes without its type is severe (3) and may be 4."""

THRESHOLDS: Mapping[Domain, str] = {
    Domain.ICE: "7-9 -> 1; 3-6 -> 2; 0-2 -> 3",
    Domain.CAPD: "1-8 -> 1; >= 9 -> 3",
    Domain.CONSCIOUSNESS: "spontaneously 1; voice 2; touch 3; unarousable 4",
    Domain.SEIZURE: "resolving 3; prolonged/repetitive 4",
    Domain.MOTOR: "deep focal weakness 4",
    Domain.EDEMA: "focal 3; diffuse/posturing/CN VI/papilloedema/Cushing 4",
}


CTCAE_V6_THRESHOLDS: Mapping[Domain, str] = {
    **THRESHOLDS,
    Domain.MOTOR: "deep focal weakness: severe 3, 4 if life-threatening",
    Domain.EDEMA: "focal 3; diffuse/posturing/Cushing 4; CN VI/papilloedema 3, 4 if life-threatening",
}


@dataclass(frozen=True)
class IcansRules:
    """One system's ICANS table over the shared reading (scores by age, windows, missing data)."""

    system: str
    citation: str
    answer_grade: Mapping[str, tuple[int, int]]
    """Coded answer -> (grade it proves, grade it may be); equal when the system decides it."""
    boolean_present: Mapping[Domain, tuple[int, int]]
    """A yes charted without its type -> (proven, possible)."""
    thresholds: Mapping[Domain, str]
    undecided: str
    """Why an answer's grade is open (``{finding}`` and the two grades filled in)."""
    label: str
    """How the card names the system, e.g. ``ASTCT``."""
    attribution: str
    """Where "not attributable to another cause" comes from, said on every result."""


ASTCT_RULES = IcansRules(
    system=SYSTEM,
    citation=CITATION,
    answer_grade={answer: (grade, grade) for answer, grade in ANSWER_GRADE.items()},
    boolean_present=BOOLEAN_PRESENT,
    thresholds=THRESHOLDS,
    undecided="{finding}: type not charted (grade {proven} or {possible})",
    label="ASTCT",
    attribution="as ASTCT requires",
)

CTCAE_V6_RULES = IcansRules(
    system=CTCAE_V6_SYSTEM,
    citation=CTCAE_V6_CITATION,
    answer_grade=CTCAE_V6_ANSWER_GRADE,
    boolean_present=CTCAE_V6_BOOLEAN_PRESENT,
    thresholds=CTCAE_V6_THRESHOLDS,
    undecided=(
        "{finding}: severe (grade {proven}); grade {possible} needs 'life-threatening consequences; urgent "
        "intervention indicated' (CTCAE v6.0), which the chart cannot show"
    ),
    label="CTCAE v6.0",
    attribution="as for ASTCT (CTCAE v6.0: following immune effector therapy)",
)

ICANS_RULES: Mapping[str, IcansRules] = {rules.system: rules for rules in (ASTCT_RULES, CTCAE_V6_RULES)}
"""Every ICANS grading system, by its RESULT ``system`` name (``CRS_CDS_SYSTEMS`` may name them)."""


def ice_grade(score: float) -> int:
    """ICE 10 -> 0, 7-9 -> 1, 3-6 -> 2, 0-2 -> 3 (a 0 while unarousable is 4 via consciousness)."""
    if score >= 10:
        return 0
    if score >= 7:
        return 1
    if score >= 3:
        return 2
    return 3


def capd_grade(score: float) -> int:
    """CAPD 0 -> 0 [choice: the table starts at 1], 1-8 -> 1 (2 when awakening to voice), >= 9 -> 3."""
    if score <= 0:
        return 0
    return 1 if score < CAPD_DELIRIUM_THRESHOLD else 3


@dataclass(frozen=True, slots=True)
class _Domain:
    grade: int
    possible: int
    finding: NeuroFinding


def _domain_grade(finding: NeuroFinding, rules: IcansRules) -> _Domain:
    if finding.domain is Domain.ICE and finding.score is not None:
        grade = ice_grade(finding.score)
        return _Domain(grade, grade, finding)
    if finding.domain is Domain.CAPD and finding.score is not None:
        grade = capd_grade(finding.score)
        return _Domain(grade, grade, finding)
    if finding.answer is not None:
        proven, possible = rules.answer_grade[finding.answer]
        return _Domain(proven, possible, finding)
    if finding.present:
        proven, possible = rules.boolean_present.get(finding.domain, (0, 0))
        return _Domain(proven, possible, finding)
    return _Domain(0, 0, finding)


def grade_icans(
    findings: IcansFindings,
    at: datetime,
    window: timedelta = DEFAULT_WINDOW,
    *,
    overdue_after: timedelta = OVERDUE_AFTER,
    followed_for: timedelta = FOLLOWED_FOR,
    rules: IcansRules = ASTCT_RULES,
) -> GradeResult:
    """The ICANS grade at ``at`` from the assessments in ``(at - window, at]`` (ASTCT unless ``rules``).

    State domains (scores, consciousness, motor, oedema) use the latest assessment; seizures, which
    are events, the worst in the window [choice]. Missing, stale, incomplete and superseded
    assessments never read as normal (issue 16): ICE 0 or a child's CAPD 1-8 without a level of
    consciousness is "at least"; a newer incomplete ICE form leaves the score unknown; a GCS <= 8
    beside a milder grade makes it indeterminate; a consciousness level charted before a newer ICE
    score > 0 (the patient was awake to answer) is superseded; and when ICANS is being followed an
    assessment older than ``overdue_after`` is flagged overdue.
    """
    recent = [f for f in findings.findings if at - window < f.time <= at]
    age = age_in_years(findings.birth_date, at) if findings.birth_date else None
    assumptions = [f"Findings are taken as not attributable to another cause (e.g. sedation), {rules.attribution}."]
    missing: list[str] = []
    alerts: list[str] = []
    hours = f"{window.total_seconds() / 3600:g} h"

    def latest(domain: Domain) -> NeuroFinding | None:
        return next((f for f in reversed(recent) if f.domain is domain and f.incomplete is None), None)

    score, score_note = _encephalopathy_score(latest(Domain.ICE), latest(Domain.CAPD), age)
    if score_note:
        assumptions.append(score_note)
    attempt = next((f for f in reversed(recent) if f.incomplete is not None), None)
    stale_by_attempt = attempt is not None and (score is None or attempt.time > score.time)
    if stale_by_attempt and attempt is not None:
        missing.append(
            f"ICE score unknown: the newest ICE form ({attempt.reference}, {iso(attempt.time)}) is incomplete "
            f"({attempt.incomplete}); the patient may have been unable to complete it"
        )
        score = None
    for source, reason in findings.unavailable.items():
        missing.append(f"{source} unavailable: {reason}")
    if score is None and not stale_by_attempt:
        wanted = "CAPD score" if age is not None and age < CAPD_MAX_AGE_YEARS else "ICE score (0-10)"
        missing.append(f"{wanted}: no assessment in the {hours} before T")

    consciousness = latest(Domain.CONSCIOUSNESS)
    if (
        consciousness is not None
        and score is not None
        and score.domain is Domain.ICE
        and (score.score or 0) > 0
        and score.time > consciousness.time
    ):
        assumptions.append(
            f"level of consciousness {consciousness.display or consciousness.answer} at {iso(consciousness.time)} "
            f"({consciousness.reference}) superseded by the newer ICE score at {iso(score.time)}: the patient was "
            "awake to answer [choice]"
        )
        consciousness = None

    chosen: list[_Domain] = []
    if score is not None:
        chosen.append(_score_domain(score, consciousness, missing))
    if consciousness is not None:
        chosen.append(_domain_grade(consciousness, rules))
    for domain in (Domain.MOTOR, Domain.EDEMA):
        found = latest(domain)
        if found is not None:
            chosen.append(_domain_grade(found, rules))
    seizures = [_domain_grade(f, rules) for f in recent if f.domain is Domain.SEIZURE]
    if seizures:
        chosen.append(max(seizures, key=lambda d: (d.grade, d.possible, d.finding.time)))

    proven = max((d.grade for d in chosen), default=0)
    possible = max((d.possible for d in chosen), default=0)
    for d in chosen:
        if d.possible > d.grade and d.possible > proven and d.finding.domain not in (Domain.ICE, Domain.CAPD):
            missing.append(_undecided(d, rules))

    evidence = [_evidence(d, rules) for d in chosen]
    if stale_by_attempt and attempt is not None:
        evidence.append(
            Evidence(
                Domain.ICE.value,
                Status.UNKNOWN,
                attempt.reference,
                value="incomplete",
                time=attempt.time,
                detail=attempt.incomplete,
            )
        )
    gcs = latest(Domain.GCS)
    gcs_conflict = False
    if gcs is not None and gcs.score is not None:
        gcs_conflict = gcs.score <= GCS_DEPRESSED_MAX and proven < GCS_CONFLICT_BELOW_GRADE
        evidence.append(
            Evidence(
                "glasgow_coma_score",
                Status.UNKNOWN,
                gcs.reference,
                value=gcs.score,
                unit="points",
                time=gcs.time,
                detail=f"supporting finding only; not an {rules.label} ICANS criterion",
            )
        )
        if gcs_conflict:
            missing.append(
                f"GCS {gcs.score:g} at {iso(gcs.time)} ({gcs.reference}) is <= {GCS_DEPRESSED_MAX}: a depressed level "
                f"of consciousness that grade {proven} does not explain; chart the level of consciousness (ICANS "
                "grade 3 if awakens only to touch, 4 if unarousable)"
            )

    decided = not gcs_conflict and (proven >= 4 or (score is not None and possible <= proven))
    grade = proven if decided else None
    overdue = _overdue(findings, at, overdue_after=overdue_after, followed_for=followed_for)
    if overdue is not None:
        alerts.append(overdue)
    components: dict[str, str | int] = {
        "scoreUsed": "none" if score is None else ("ICE" if score.domain is Domain.ICE else "CAPD"),
        **{_component(d.finding.domain): d.grade for d in chosen},
    }
    if score is not None and score.score is not None:
        components["score"] = int(score.score)
    if overdue is not None:
        components["assessment"] = "overdue"
    return GradeResult(
        system=rules.system,
        at=at,
        grade=grade,
        components=components,
        evidence=tuple(evidence),
        missing=tuple(missing),
        grade_at_least=proven if grade is None and proven >= 1 else None,
        not_evidence=tuple(findings.not_evidence),
        assumptions=tuple(assumptions),
        alerts=tuple(alerts),
        choices=_choices(hours, overdue_after, followed_for, rules),
        citation=rules.citation,
    )


def _score_domain(score: NeuroFinding, consciousness: NeuroFinding | None, missing: list[str]) -> _Domain:
    """The ICE or CAPD domain; its upper bound when the level of consciousness that ASTCT needs to
    place it is not charted: ICE 0 is 3 awake with aphasia or 4 unarousable; a child's CAPD 1-8 is
    1 or 2 by consciousness."""
    graded = _domain_grade(score, ASTCT_RULES)  # scores are graded alike by every system
    if consciousness is not None or score.score is None:
        return graded
    if score.domain is Domain.ICE and score.score == 0:
        missing.append(
            "level of consciousness not charted with ICE 0: grade 3 if awake (global aphasia), 4 if unarousable"
        )
        return _Domain(graded.grade, 4, score)
    if score.domain is Domain.CAPD and 0 < score.score < CAPD_DELIRIUM_THRESHOLD:
        missing.append("level of consciousness not charted with CAPD 1-8: grade 1, or 2 if awakening to voice")
        return _Domain(graded.grade, 2, score)
    return graded


def _overdue(findings: IcansFindings, at: datetime, *, overdue_after: timedelta, followed_for: timedelta) -> str | None:
    """ "Assessment overdue" when ICANS is being followed (an ICE or CAPD, or a finding of grade >= 1,
    charted in ``followed_for``) and no ICE or CAPD assessment was charted in ``overdue_after``."""
    period = [f for f in findings.findings if at - followed_for < f.time <= at]
    assessments = [f for f in period if f.domain in (Domain.ICE, Domain.CAPD)]
    followed = bool(assessments) or any(_domain_grade(f, ASTCT_RULES).grade >= 1 for f in period)
    if not followed:
        return None
    last = max(assessments, key=lambda f: f.time, default=None)
    if last is not None and at - last.time <= overdue_after:
        return None
    limit = f"{overdue_after.total_seconds() / 3600:g} h"
    if last is None:
        return f"assessment overdue: ICANS is being followed but no ICE or CAPD was charted in {limit}"
    ago = (at - last.time).total_seconds() / 3600
    what = "ICE form (incomplete)" if last.incomplete else f"{'ICE' if last.domain is Domain.ICE else 'CAPD'}"
    value = f" {last.score:g}" if last.score is not None else ""
    return (
        f"assessment overdue: last {what}{value} at {iso(last.time)} ({last.reference}), {ago:.0f} h ago; "
        f"ICANS is being followed and an assessment is due every {limit} [choice]"
    )


def _encephalopathy_score(
    ice: NeuroFinding | None, capd: NeuroFinding | None, age: int | None
) -> tuple[NeuroFinding | None, str | None]:
    """ICE from 12 years, CAPD under 12; CAPD at 12+ (developmental delay) only without an ICE."""
    if age is not None and age < CAPD_MAX_AGE_YEARS:
        note = "ICE score charted for a child under 12 is not used (CAPD applies)." if ice and not capd else None
        return capd, note
    if age is not None:
        if ice is None and capd is not None:
            return capd, "CAPD used at 12 years or older: taken as baseline developmental delay (ASTCT allows)."
        return ice, None
    candidates = [f for f in (ice, capd) if f is not None]
    if not candidates:
        return None, None
    newest = max(candidates, key=lambda f: f.time)
    return newest, f"Age unknown: the latest score ({newest.domain.value}) is used."


def _undecided(d: _Domain, rules: IcansRules) -> str:
    """Why a domain's grade is open: its type was not charted, or the system leaves grade 4 undefined."""
    if d.finding.answer is None:
        return ASTCT_RULES.undecided.format(finding=d.finding.domain.value, proven=d.grade, possible=d.possible)
    finding = d.finding.display or d.finding.answer
    return rules.undecided.format(finding=finding, proven=d.grade, possible=d.possible)


def _evidence(d: _Domain, rules: IcansRules) -> Evidence:
    f = d.finding
    if f.score is not None:
        value: float | str | None = f.score
    elif f.answer is not None:
        value = f.display or f.answer
    else:
        value = "present" if f.present else "absent"
    return Evidence(
        f.domain.value,
        Status.MET if d.grade >= 1 else Status.NOT_MET,
        f.reference,
        value=value,
        unit="points" if f.score is not None else None,
        threshold=rules.thresholds.get(f.domain),
        time=f.time,
        detail=f"domain grade {d.grade}" + (f" (up to {d.possible})" if d.possible > d.grade else ""),
    )


def _component(domain: Domain) -> str:
    return {
        Domain.ICE: "iceGrade",
        Domain.CAPD: "capdGrade",
        Domain.CONSCIOUSNESS: "consciousnessGrade",
        Domain.SEIZURE: "seizureGrade",
        Domain.MOTOR: "motorGrade",
        Domain.EDEMA: "edemaGrade",
        Domain.GCS: "gcs",
    }[domain]


def _choices(hours: str, overdue_after: timedelta, followed_for: timedelta, rules: IcansRules) -> dict[str, str]:
    choices = {
        "icansWindow": f"assessments in the {hours} before T; latest per domain, worst seizure",
        "icansScore": "ICE from age 12, CAPD under 12; no score in the window -> indeterminate",
        "capdZero": "CAPD 0 is grade 0 (the ASTCT CAPD row starts at 1)",
        "icansOverdue": (
            f"assessment overdue after {overdue_after.total_seconds() / 3600:g} h while ICANS is followed "
            f"(ICE, CAPD or a finding of grade >= 1 in the last {followed_for.days} days)"
        ),
        "icansSuperseded": "a level of consciousness charted before a newer ICE score > 0 is superseded by it",
        "icansGcs": f"GCS <= {GCS_DEPRESSED_MAX} beside an ICANS grade below 3 -> indeterminate",
    }
    if rules is CTCAE_V6_RULES:
        choices["ctcaeGrade4"] = (
            "unarousable, prolonged/repetitive seizure, diffuse oedema, posturing, Cushing's triad -> 4; "
            "deep focal weakness, CN VI palsy, papilloedema -> at least 3"
        )
        choices["ctcaeConsciousness"] = "awakening (CAPD rows) read at every age, as ASTCT: voice 2, touch 3"
    return choices


def summary_findings(result: GradeResult) -> Sequence[str]:
    """The findings that set the grade, for the card's one-line summary."""
    phrases: list[str] = []
    for e in result.evidence:
        if e.status is not Status.MET:
            continue
        if e.criterion in (Domain.ICE.value, Domain.CAPD.value) and isinstance(e.value, float):
            label = "ICE" if e.criterion == Domain.ICE.value else "CAPD"
            phrases.append(f"{label} {e.value:g}" + ("/10" if label == "ICE" else ""))
        else:
            phrases.append(
                str(e.value)
                if isinstance(e.value, str) and e.value not in ("present",)
                else e.criterion.replace("_", " ")
            )
    return phrases
