"""ISTH overt DIC score (Taylor 2001) from the record's laboratory values: pure, no I/O.

Source: Taylor FB Jr et al., Thromb Haemost 2001;86:1327-30, restated in PMC5011102 Table 1
(clinical-reference.md section 6). The score presumes an underlying disorder; CRS is one.
Every component is the latest value charted within its window [choice, default 24 h]; a
component not charted (or not measurable against a normal) makes the score indeterminate, with
what the data prove ("at least"), never "not overt".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_hooks.grading.result import Evidence, ScoreResult, Status
from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.record import LabResult, PatientRecord

SYSTEM = "ISTH-DIC-2001"
CITATION = (
    "ISTH overt DIC score (Taylor, Thromb Haemost 2001;86:1327; PMC5011102 Table 1); "
    "D-dimer bands < 2, 2-4, > 4 x ULN (PMC8607173) [choice]"
)
OVERT_AT_LEAST = 5
"""Total >= 5: compatible with overt DIC (repeat daily); < 5: suggestive, repeat in 1-2 days."""

PLATELETS_MILD_BELOW = 100.0
"""10^9/L: < 100 scores 1 ..."""
PLATELETS_SEVERE_BELOW = 50.0
"""... and < 50 scores 2."""
FIBRINOGEN_LOW_BELOW_G_L = 1.0
"""g/L: < 1.0 scores 1."""
PT_MODERATE_FROM_S = 3.0
"""PT prolonged by >= 3 s (and < 6 s) over normal scores 1 ..."""
PT_SEVERE_FROM_S = 6.0
"""... by >= 6 s scores 2."""
COMPONENT_MAXIMA = {"platelets": 2, "fibrin_marker": 3, "prothrombin_time": 2, "fibrinogen": 1}

D_DIMER_LABS = ("d_dimer_feu", "d_dimer_ddu")
DIC_LABS = frozenset({"platelets", "fibrinogen", "pt", "inr", *D_DIMER_LABS})


@dataclass(frozen=True)
class DicConfig:
    """Windows, normals and bands a site may set (clinical-reference.md section 6)."""

    window: timedelta = timedelta(hours=24)
    """A component counts when charted in (T - window, T] [choice]."""
    pt_normal_s: float | None = None
    """PT upper normal (s) when the Observation has no referenceRange; None: unknown."""
    d_dimer_feu_uln_mg_l: float | None = None
    """D-dimer FEU upper normal when the Observation has no referenceRange; None: unknown."""
    d_dimer_ddu_uln_mg_l: float | None = None
    """D-dimer DDU upper normal when the Observation has no referenceRange; None: unknown."""
    d_dimer_moderate_x_uln: float = 2.0
    """ISTH leaves "moderate" open: >= 2 x ULN scores 2 (PMC8607173) [choice]."""
    d_dimer_strong_above_x_uln: float = 4.0
    """... and > 4 x ULN ("strong") scores 3 [choice]."""
    inr_normal_pt_s: float | None = None
    """INR-only sites: the mean normal PT (s) for PT = normal x INR^(1/ISI); None: no conversion."""
    inr_isi: float | None = None
    """The thromboplastin's ISI for the same conversion."""


@dataclass(frozen=True, slots=True)
class _Component:
    name: str
    points: int | None
    evidence: Evidence | None
    missing: str | None = None


def latest_within(
    labs: Sequence[LabResult], lab_ids: Sequence[str], at: datetime, window: timedelta
) -> LabResult | None:
    """The latest value of any of ``lab_ids`` charted in (at - window, at]."""
    found = [r for r in labs if r.lab in lab_ids and at - window < r.time <= at]
    return max(found, key=lambda r: r.time) if found else None


def _row(criterion: str, points: int, lab: LabResult, threshold: str, detail: str | None = None) -> Evidence:
    status = Status.MET if points > 0 else Status.NOT_MET
    note = f"{points} point{'s' if points != 1 else ''}" + (f"; {detail}" if detail else "")
    return Evidence(criterion, status, lab.reference, lab.value, lab.unit, threshold, lab.time, note)


def _platelets(labs: Sequence[LabResult], at: datetime, config: DicConfig) -> _Component:
    lab = latest_within(labs, ("platelets",), at, config.window)
    if lab is None:
        return _Component("platelets", None, None, "platelet count not charted in the window")
    points = 2 if lab.value < PLATELETS_SEVERE_BELOW else 1 if lab.value < PLATELETS_MILD_BELOW else 0
    return _Component("platelets", points, _row("platelets", points, lab, "< 100: 1; < 50: 2 (10*9/L)"))


def _fibrinogen(labs: Sequence[LabResult], at: datetime, config: DicConfig) -> _Component:
    lab = latest_within(labs, ("fibrinogen",), at, config.window)
    if lab is None:
        return _Component("fibrinogen", None, None, "fibrinogen not charted in the window")
    points = 1 if lab.value < FIBRINOGEN_LOW_BELOW_G_L else 0
    return _Component("fibrinogen", points, _row("fibrinogen", points, lab, "< 1.0 g/L: 1"))


def _fibrin_marker(labs: Sequence[LabResult], at: datetime, config: DicConfig) -> _Component:
    lab = latest_within(labs, D_DIMER_LABS, at, config.window)
    if lab is None:
        return _Component("fibrin_marker", None, None, "D-dimer not charted in the window")
    configured = config.d_dimer_feu_uln_mg_l if lab.lab == "d_dimer_feu" else config.d_dimer_ddu_uln_mg_l
    uln = lab.reference_high if lab.reference_high is not None else configured
    if uln is None or uln <= 0:
        return _Component(
            "fibrin_marker", None, None, f"D-dimer ({lab.reference}) has no reference range and no normal is configured"
        )
    ratio = round(lab.value / uln, 9)  # 1.0 / 0.5 is 2.0, and 1.2 / 0.6 must be too
    if ratio > config.d_dimer_strong_above_x_uln:
        points = 3
    elif ratio >= config.d_dimer_moderate_x_uln:
        points = 2
    else:
        points = 0
    threshold = (
        f">= {config.d_dimer_moderate_x_uln:g} x ULN: 2; > {config.d_dimer_strong_above_x_uln:g} x ULN: 3 "
        f"(ULN {uln:g} mg/L{'' if lab.reference_high is not None else ', configured'})"
    )
    return _Component("fibrin_marker", points, _row("D-dimer", points, lab, threshold, f"{ratio:.1f} x ULN"))


def _pt_points(prolonged_s: float) -> int:
    if prolonged_s >= PT_SEVERE_FROM_S:
        return 2
    return 1 if prolonged_s >= PT_MODERATE_FROM_S else 0


def _prothrombin_time(labs: Sequence[LabResult], at: datetime, config: DicConfig) -> _Component:
    threshold = "prolonged >= 3 s: 1; >= 6 s: 2"
    pt = latest_within(labs, ("pt",), at, config.window)
    if pt is not None:
        normal = pt.reference_high if pt.reference_high is not None else config.pt_normal_s
        if normal is None:
            return _Component(
                "prothrombin_time",
                None,
                None,
                f"PT ({pt.reference}) has no reference range and no normal is configured",
            )
        prolonged = round(pt.value - normal, 9)  # 15.1 - 12.1 is 3.0 s, not 2.9999...
        points = _pt_points(prolonged)
        return _Component(
            "prothrombin_time",
            points,
            _row("prothrombin time", points, pt, f"{threshold} (normal {normal:g} s)", f"prolonged {prolonged:+.1f} s"),
        )
    inr = latest_within(labs, ("inr",), at, config.window)
    if inr is None:
        return _Component("prothrombin_time", None, None, "PT not charted in the window")
    if config.inr_normal_pt_s is None or not config.inr_isi:
        return _Component(
            "prothrombin_time", None, None, f"only INR charted ({inr.reference}); no INR-to-PT conversion is configured"
        )
    normal = config.inr_normal_pt_s
    prolonged = round(normal * inr.value ** (1 / config.inr_isi) - normal, 9)
    points = _pt_points(prolonged)
    detail = f"PT from INR (normal {normal:g} s, ISI {config.inr_isi:g}): prolonged {prolonged:+.1f} s"
    return _Component("prothrombin_time", points, _row("prothrombin time (from INR)", points, inr, threshold, detail))


def score_dic(
    record: PatientRecord, at: datetime, config: DicConfig | None = None, *, unavailable: str | None = None
) -> ScoreResult | None:
    """The ISTH overt DIC score at ``at``, or None when no component was charted in the window.

    None keeps a patient without coagulation labs free of an empty score [choice]: no result
    means "not scored", never "not overt". Once any component is charted, every missing one is
    named (with ``unavailable``, the reason the lab search failed) and the score is "at least".
    """
    cfg = config or DicConfig()
    labs = record.labs
    if latest_within(labs, tuple(DIC_LABS), at, cfg.window) is None:
        return None
    parts = [f(labs, at, cfg) for f in (_platelets, _fibrin_marker, _prothrombin_time, _fibrinogen)]
    known = sum(p.points for p in parts if p.points is not None)
    missing = tuple(p.missing for p in parts if p.missing is not None)
    if unavailable is not None:
        missing = (f"lab results unavailable ({unavailable})", *missing)
    unknown_max = sum(COMPONENT_MAXIMA[p.name] for p in parts if p.points is None)
    interpretation: str | None
    if missing:
        interpretation = "overt" if known >= OVERT_AT_LEAST else None
    else:
        interpretation = "overt" if known >= OVERT_AT_LEAST else "not overt"
    return ScoreResult(
        system=SYSTEM,
        at=at,
        score=None if missing else known,
        components={p.name: p.points if p.points is not None else "unknown" for p in parts},
        evidence=tuple(p.evidence for p in parts if p.evidence is not None),
        missing=missing,
        score_at_least=known if missing else None,
        score_at_most=known + unknown_max if missing else None,
        interpretation=interpretation,
        not_evidence=tuple(n for lab, n in record.lab_not_evidence if lab in DIC_LABS),
        notes=(
            "Total >= 5: compatible with overt DIC, repeat daily; < 5: suggestive, repeat in 1-2 days. "
            "The score presumes an underlying disorder (CRS is one).",
        ),
        choices={
            "window": f"latest value of each component in the {cfg.window.total_seconds() / 3600:g} h before {iso(at)}",
            "D-dimer bands": (
                f"< {cfg.d_dimer_moderate_x_uln:g} x ULN 0, {cfg.d_dimer_moderate_x_uln:g}-"
                f"{cfg.d_dimer_strong_above_x_uln:g} x ULN 2, > {cfg.d_dimer_strong_above_x_uln:g} x ULN 3"
            ),
            "PT normal": "the Observation's reference range high, else the configured normal",
        },
        citation=CITATION,
    )
