"""HLH-like syndromes after CRS: carHLH, HScore, and a "possible IEC-HS" flag. Pure, no I/O.

Sources (docs/clinical-reference.md section 6): carHLH, Neelapu 2018 (CARTOX): peak ferritin >
10,000 ng/mL during CRS plus two of: grade >= 3 rise in bilirubin, AST or ALT; grade >= 3
oliguria or creatinine rise; grade >= 3 pulmonary oedema; haemophagocytosis. HScore, Fardet 2014
(cut-off 169). IEC-HS (Hines, Transplant Cell Ther 2023;29:438): its criteria and grading tables
were not verified, so only a flag naming the findings, with no grade.

Components FHIR rarely carries (haemophagocytosis, organomegaly, pulmonary oedema, known
immunosuppression) have no verified code in the mappings: they are always named as unknown and
the score is given as "at least". Nothing here is a diagnosis: the card says "consider".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_hooks.grading.result import Evidence, ScoreResult, Status
from cds_hooks.reading.record import LabResult, PatientRecord, Temperature

CARHLH = "CARHLH-2018"
HSCORE = "HSCORE"
IEC_HS = "IEC-HS-FLAG"
CARHLH_CITATION = "Neelapu et al., Nat Rev Clin Oncol 2018 (CARTOX carHLH criteria)"
HSCORE_CITATION = "Fardet et al., Arthritis Rheumatol 2014 (HScore, cut-off 169)"
IEC_HS_CITATION = (
    "Hines et al., Transplant Cell Ther 2023;29:438 (IEC-HS): criteria not verified here, flag only, no grade"
)

LOOKBACK = timedelta(days=14)
"""Values count when charted in the 14 days before T ("during CRS") [choice]."""

CARHLH_FERRITIN_ABOVE_NG_ML = 10_000.0
GRADE3_BILIRUBIN_X_ULN = 3.0
"""CTCAE v5 grade 3 bilirubin increase: > 3 x ULN [choice: CTCAE restated, not verified here]."""
GRADE3_TRANSAMINASE_X_ULN = 5.0
"""CTCAE v5 grade 3 AST/ALT increase: > 5 x ULN [choice: as above]."""
GRADE3_CREATININE_X_ULN = 3.0
"""CTCAE v5 grade 3 creatinine increase: > 3 x ULN [choice: as above]."""

HSCORE_CUTOFF = 169
HSCORE_UNKNOWN_MAXIMA = {"known immunosuppression": 18, "organomegaly": 38, "marrow haemophagocytosis": 35}
"""HScore components with no verified code: their points are unknown (0 up to these)."""
HSCORE_WBC_POINTS_MAX = 10
"""Cytopenia lineages: WBC has no verified code, so one lineage may be missing: 0 -> up to 24 -> up to 34."""

NEW_CYTOPENIA = {"platelets": 100.0, "hemoglobin": 9.0, "anc": 1.0}
"""IEC-HS flag: a count below the HLH-2004 cytopenia thresholds after one at or above them [choice]."""
LOW_FIBRINOGEN_G_L = 1.5
"""IEC-HS flag: fibrinogen <= 1.5 g/L (the HLH-2004 threshold) [choice]."""
TRANSAMINITIS_X_ULN = 3.0
"""IEC-HS flag: AST or ALT above 3 x the Observation's upper normal [choice]."""


def _times(factor: float, upper_normal: float) -> float:
    """``factor`` x ULN, rounded so that 3 x 1.2 is 3.6 (not 3.5999...): a value at the limit is not above it."""
    return round(factor * upper_normal, 9)


def _window(labs: Sequence[LabResult], lab: str, at: datetime) -> list[LabResult]:
    return [r for r in labs if r.lab == lab and at - LOOKBACK < r.time <= at]


def _row(criterion: str, met: bool, lab: LabResult, threshold: str) -> Evidence:
    return Evidence(
        criterion, Status.MET if met else Status.NOT_MET, lab.reference, lab.value, lab.unit, threshold, lab.time
    )


@dataclass(frozen=True, slots=True)
class _Organ:
    name: str
    met: bool | None
    evidence: tuple[Evidence, ...]
    missing: str | None = None


def _times_uln(labs: Sequence[LabResult], lab_ids: Sequence[str], factor: float, name: str, at: datetime) -> _Organ:
    """Any value above ``factor`` x its own upper normal in the window (met), all below (not met)."""
    rows: list[Evidence] = []
    unknown: list[str] = []
    met = False
    for lab_id in lab_ids:
        for value in _window(labs, lab_id, at):
            if value.reference_high is None:
                unknown.append(value.reference)
                continue
            above = value.value > _times(factor, value.reference_high)
            met = met or above
            if above or not rows:
                rows.append(_row(name, above, value, f"> {factor:g} x ULN ({value.reference_high:g} {value.unit})"))
    if met:
        return _Organ(name, True, tuple(r for r in rows if r.status is Status.MET))
    if rows and not unknown:
        return _Organ(name, False, tuple(rows[:1]))
    reason = "no value charted" if not rows and not unknown else "a value without a reference range"
    return _Organ(name, None, (), f"{name}: {reason} in the {LOOKBACK.days} days")


def score_carhlh(record: PatientRecord, at: datetime) -> ScoreResult | None:
    """carHLH at ``at``; None when no ferritin was charted in the window (nothing to consider)."""
    ferritin = _window(record.labs, "ferritin", at)
    if not ferritin:
        return None
    peak = max(ferritin, key=lambda r: r.value)
    ferritin_met = peak.value > CARHLH_FERRITIN_ABOVE_NG_ML
    organs = [
        _times_uln(record.labs, ("bilirubin_total",), GRADE3_BILIRUBIN_X_ULN, "grade >= 3 bilirubin rise", at),
        _times_uln(record.labs, ("ast", "alt"), GRADE3_TRANSAMINASE_X_ULN, "grade >= 3 AST/ALT rise", at),
        _times_uln(record.labs, ("creatinine",), GRADE3_CREATININE_X_ULN, "grade >= 3 creatinine rise", at),
        _Organ("grade >= 3 pulmonary oedema", None, (), "pulmonary oedema: no verified code, unknown"),
        _Organ("haemophagocytosis", None, (), "haemophagocytosis: no verified code, unknown"),
    ]
    met = sum(1 for o in organs if o.met)
    unknown = sum(1 for o in organs if o.met is None)
    if not ferritin_met:
        interpretation: str | None = "not met"
    elif met >= 2:
        interpretation = "met"
    elif met + unknown < 2:
        interpretation = "not met"
    else:
        interpretation = None
    missing = () if interpretation is not None else tuple(o.missing for o in organs if o.missing)
    evidence = (
        _row("peak ferritin", ferritin_met, peak, f"> {CARHLH_FERRITIN_ABOVE_NG_ML:,.0f} ng/mL"),
        *(e for o in organs for e in o.evidence),
    )
    return ScoreResult(
        system=CARHLH,
        at=at,
        score=None if missing else met,
        components={"ferritin": "met" if ferritin_met else "not met"}
        | {o.name: "met" if o.met else "unknown" if o.met is None else "not met" for o in organs},
        evidence=evidence,
        missing=missing,
        score_at_least=met if missing else None,
        interpretation=interpretation,
        notes=(f"Ferritin > 10,000 ng/mL plus at least 2 organ criteria; organ criteria met: {met}.",),
        choices={"window": f"the {LOOKBACK.days} days before T", "grade 3": "CTCAE v5 x ULN thresholds [choice]"},
        citation=CARHLH_CITATION,
    )


def _temperature_points(temps: Sequence[Temperature]) -> int:
    hottest = max(t.celsius for t in temps)
    if hottest > 39.4:
        return 49
    return 33 if hottest >= 38.4 else 0


HSCORE_LAB_MAXIMA = {"ferritin": 50, "triglycerides": 64, "fibrinogen": 30, "AST": 19}


def _hscore_lab_points(name: str, value: float) -> int:
    """Fardet 2014: ferritin (ng/mL), triglycerides (mg/dL), fibrinogen (g/L; <= 250 mg/dL), AST (U/L)."""
    if name == "ferritin":
        return 50 if value > 6000 else 35 if value >= 2000 else 0
    if name == "triglycerides":
        return 64 if value > 354 else 44 if value >= 132.7 else 0
    if name == "fibrinogen":
        return 30 if value <= 2.5 else 0
    return 19 if value >= 30 else 0


def _hscore_parts(record: PatientRecord, at: datetime) -> tuple[dict[str, int | str], list[Evidence], list[str], int]:
    """(components, evidence, missing, extra maximum of the unknowns) from the most abnormal values."""
    parts: dict[str, int | str] = {}
    rows: list[Evidence] = []
    missing: list[str] = [f"{name}: no verified code, unknown (0-{pts})" for name, pts in HSCORE_UNKNOWN_MAXIMA.items()]
    extra = sum(HSCORE_UNKNOWN_MAXIMA.values())
    temps = [t for t in record.temperatures if at - LOOKBACK < t.time <= at]
    if temps:
        parts["temperature"] = _temperature_points(temps)
        hottest = max(temps, key=lambda t: t.celsius)
        rows.append(
            Evidence(
                "temperature",
                Status.MET if parts["temperature"] else Status.NOT_MET,
                hottest.reference,
                hottest.celsius,
                "Cel",
                "38.4-39.4: 33; > 39.4: 49",
                hottest.time,
            )
        )
    else:
        parts["temperature"] = "unknown"
        missing.append("temperature not charted")
        extra += 49
    for name, lab_id in (
        ("ferritin", "ferritin"),
        ("triglycerides", "triglycerides"),
        ("fibrinogen", "fibrinogen"),
        ("AST", "ast"),
    ):
        values = _window(record.labs, lab_id, at)
        if not values:
            parts[name] = "unknown"
            missing.append(f"{name} not charted")
            extra += HSCORE_LAB_MAXIMA[name]
            continue
        pick = min if name == "fibrinogen" else max
        worst = pick(values, key=lambda r: r.value)
        parts[name] = _hscore_lab_points(name, worst.value)
        rows.append(_row(name, bool(parts[name]), worst, f"{parts[name]} points"))
    lineages = 0
    unknown_lineages = 1  # WBC: no verified code
    for lab_id, below in (("hemoglobin", 9.2), ("platelets", 110.0)):
        values = _window(record.labs, lab_id, at)
        if not values:
            unknown_lineages += 1
            continue
        lowest = min(values, key=lambda r: r.value)
        low = lowest.value <= below
        lineages += low
        rows.append(_row(f"{lab_id} (cytopenia)", low, lowest, f"<= {below:g}"))
    cytopenia = {0: 0, 1: 0, 2: 24, 3: 34}
    parts["cytopenias"] = cytopenia[lineages] if unknown_lineages == 0 else "unknown"
    known_cyto = cytopenia[lineages]
    extra += cytopenia[lineages + unknown_lineages] - known_cyto
    missing.append(f"cytopenias: {unknown_lineages} lineage(s) unknown (WBC has no verified code)")
    parts["cytopenias (known)"] = known_cyto
    return parts, rows, missing, extra


def score_hscore(record: PatientRecord, at: datetime) -> ScoreResult | None:
    """HScore at ``at`` from the most abnormal values in the window, as "at least" (some of its
    components are never coded); None when no ferritin was charted (nothing to consider)."""
    if not _window(record.labs, "ferritin", at):
        return None
    parts, rows, missing, extra = _hscore_parts(record, at)
    known = sum(v for k, v in parts.items() if isinstance(v, int) and k != "cytopenias")
    interpretation = f"at or above {HSCORE_CUTOFF}" if known >= HSCORE_CUTOFF else None
    return ScoreResult(
        system=HSCORE,
        at=at,
        score=None,
        components=parts,
        evidence=tuple(rows),
        missing=tuple(missing),
        score_at_least=known,
        score_at_most=known + extra,
        interpretation=interpretation,
        notes=(f"Cut-off {HSCORE_CUTOFF}; the most abnormal value of each component in the window.",),
        choices={"window": f"the {LOOKBACK.days} days before T"},
        citation=HSCORE_CITATION,
    )


def _latest_two(labs: Sequence[LabResult], lab: str, at: datetime) -> tuple[LabResult, LabResult] | None:
    values = sorted(_window(labs, lab, at), key=lambda r: r.time)
    return (values[-2], values[-1]) if len(values) >= 2 else None


def iec_hs_findings(record: PatientRecord, at: datetime, *, crs_resolving: bool) -> list[Evidence]:
    """The findings the possible-IEC-HS flag names; empty unless ferritin is rising while CRS
    resolves and at least one other finding is present [choice]."""
    pair = _latest_two(record.labs, "ferritin", at)
    if not crs_resolving or pair is None or pair[1].value <= pair[0].value:
        return []
    earlier, latest = pair
    rising = _row(
        "ferritin rising as CRS resolves", True, latest, f"above {earlier.value:g} at {earlier.time.isoformat()}"
    )
    others: list[Evidence] = []
    for lab_id, below in NEW_CYTOPENIA.items():
        two = _latest_two(record.labs, lab_id, at)
        if two is not None and two[0].value >= below > two[1].value:
            others.append(_row(f"new cytopenia ({lab_id})", True, two[1], f"< {below:g} after {two[0].value:g}"))
    fibrinogen = _window(record.labs, "fibrinogen", at)
    if fibrinogen:
        latest_fib = max(fibrinogen, key=lambda r: r.time)
        if latest_fib.value <= LOW_FIBRINOGEN_G_L:
            others.append(_row("low fibrinogen", True, latest_fib, f"<= {LOW_FIBRINOGEN_G_L:g} g/L"))
    for lab_id in ("ast", "alt"):
        values = _window(record.labs, lab_id, at)
        if values:
            last = max(values, key=lambda r: r.time)
            if last.reference_high is not None and last.value > _times(TRANSAMINITIS_X_ULN, last.reference_high):
                others.append(_row(f"transaminitis ({lab_id.upper()})", True, last, f"> {TRANSAMINITIS_X_ULN:g} x ULN"))
    return [rising, *others] if others else []


def flag_iec_hs(record: PatientRecord, at: datetime, *, crs_resolving: bool) -> ScoreResult | None:
    """A "possible IEC-HS" flag (no grade) naming its findings, or None."""
    found = iec_hs_findings(record, at, crs_resolving=crs_resolving)
    if not found:
        return None
    return ScoreResult(
        system=IEC_HS,
        at=at,
        score=None,
        components={e.criterion: "met" for e in found},
        evidence=tuple(found),
        interpretation="possible IEC-HS (no grade: the criteria were not verified)",
        notes=("Findings: " + "; ".join(e.criterion for e in found) + ".",),
        citation=IEC_HS_CITATION,
    )
