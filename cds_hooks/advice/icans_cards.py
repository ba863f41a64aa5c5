"""The ICANS result -> its own patient-view card, beside (never inside) the CRS card.

A separate card because ICANS is managed differently (steroids first, not tocilizumab) and a
clinician must be able to accept or dismiss one without the other. Shown when ICANS is graded 1
or more, or indeterminate with at least one assessment in the window (so the EHR is not flooded
with "no ICE score" cards for every patient without neurotoxicity monitoring).

Management text (ASCO 2021 guideline, Santomasso et al., J Clin Oncol 2021;39:3978, Table 2 as
restated by Guideline Central): neurology consultation and ICE at least twice a day at any grade;
grade 2: consider dexamethasone 10 mg IV for high-risk products or patients, and reassess;
grade 3: ICU, dexamethasone 10 mg IV every 6-12 h (or methylprednisolone 1 mg/kg every 12 h);
grade 4: ICU and high-dose methylprednisolone 1000 mg/day IV (clinical-reference.md section 3;
the ASCO grade 4 ICANS row itself was not re-read here). Seizure prophylaxis (levetiracetam) is
left to institutional protocol. Steroid orders are offered for adults only, as on the CRS card.
"""

from __future__ import annotations

import uuid
from datetime import tzinfo
from typing import Any

from cds_hooks.advice.cards import (
    ADULT_AGE_YEARS,
    ASCO_URL,
    ASTCT_URL,
    EXTENSION_KEY,
    ICD10CM,
    INDICATOR,
    OVERRIDE_SYSTEM,
    CardOptions,
    Indicator,
    choices_line,
    choices_links,
    clip_summary,
    dexamethasone_q6h,
    evidence_table,
    first_clause,
    item_lines,
    markdown_cell,
    methylprednisolone_daily,
    not_used_lines,
    service_request_suggestion,
    zone_note,
)
from cds_hooks.advice.display import display_text, local_time, site_zone
from cds_hooks.cds import Card, Coding, Link, Source, Suggestion
from cds_hooks.grading import GradeResult
from cds_hooks.grading.icans import summary_findings
from cds_hooks.pipeline.evaluate import Evaluation

ICANS_DIAGNOSIS = {0: "G92.00", 1: "G92.01", 2: "G92.02", 3: "G92.03", 4: "G92.04"}
"""ICD-10-CM G92.0x (docs/reference/codes.csv, verified); G92.00 is "grade unspecified"."""

ICANS_OVERRIDE_REASONS = [
    Coding(system=OVERRIDE_SYSTEM, code="other-cause", display="Findings attributed to another cause (e.g. sedation)"),
    Coding(system=OVERRIDE_SYSTEM, code="already-treated", display="Already treated or ordered"),
    Coding(system=OVERRIDE_SYSTEM, code="data-incorrect", display="Charted data are incorrect"),
    Coding(system=OVERRIDE_SYSTEM, code="clinical-judgement", display="Clinical judgement: not appropriate now"),
]


def build_icans_cards(evaluation: Evaluation, options: CardOptions | None = None) -> list[Card]:
    """Zero or one ICANS card (see the module docstring for when)."""
    result = evaluation.icans
    if result is None:
        return []
    graded = result.grade is not None and result.grade >= 1
    assessed_but_open = result.grade is None and bool(result.evidence)
    overdue = is_overdue(result)
    if not (graded or assessed_but_open or overdue):
        return []
    opts = options or CardOptions()
    level = result.grade if result.grade is not None else (result.grade_at_least or 0)
    suggestions = _suggestions(evaluation, level)
    return [
        Card(
            uuid=str(uuid.uuid4()),
            summary=summary_line(result, site_zone(opts.site_timezone)),
            detail=_detail(evaluation, result, level, opts),
            indicator=_indicator(result),
            source=Source(
                label="ICANS grading (ASTCT 2019 consensus)",
                url=ASTCT_URL,
                topic=Coding(
                    system="https://crs-cds-hooks.example.org/CodeSystem/topic",
                    code="icans-grade",
                    display="ICANS grade",
                ),
            ),
            suggestions=suggestions or None,
            selectionBehavior="any" if suggestions else None,
            overrideReasons=ICANS_OVERRIDE_REASONS,
            links=[
                Link(label="ASTCT consensus grading (Lee 2019)", url=ASTCT_URL, type="absolute"),
                Link(label="ASCO guideline: CAR-T toxicity management (2021)", url=ASCO_URL, type="absolute"),
                *(
                    [Link(label="Course (SMART app)", url=opts.smart_app_url, type="smart")]
                    if opts.smart_app_url
                    else []
                ),
                *choices_links(opts),
            ],
            extension={EXTENSION_KEY: [r.to_json() for r in (evaluation.icans_results or (result,))]},
        )
    ]


def is_overdue(result: GradeResult) -> bool:
    """ICANS is being followed and no ICE/CAPD assessment is recent (``grading/icans.py``)."""
    return result.components.get("assessment") == "overdue"


def _indicator(result: GradeResult) -> Indicator:
    grade = result.grade if result.grade is not None else (result.grade_at_least or 0)
    indicator = INDICATOR.get(grade, "info")
    if is_overdue(result) and indicator == "info":
        return "warning"  # a missed assessment is a gap in monitoring, never "no ICANS"
    return indicator


def summary_line(result: GradeResult, zone: tzinfo | None = None) -> str:
    """``ICANS grade 3 (ASTCT): ICE 2/10, seizure`` (< 140 characters)."""
    findings = ", ".join(summary_findings(result))
    if is_overdue(result):
        overdue = next(a for a in result.alerts if a.startswith("assessment overdue"))
        grade = f"grade {result.grade}" if result.grade is not None else "grade indeterminate"
        detail = display_text(overdue.removeprefix("assessment overdue: "), zone)
        return clip_summary(f"ICANS assessment overdue ({grade}): {detail}")
    if result.grade is None:
        head = "ICANS grade indeterminate (ASTCT)"
        if result.grade_at_least:
            head += f": at least {result.grade_at_least}"
        missing = first_clause(result.missing[0], zone) if result.missing else "data missing"
        return clip_summary(f"{head}; {missing}" + (f"; {findings}" if findings else ""))
    return clip_summary(f"ICANS grade {result.grade} (ASTCT)" + (f": {findings}" if findings else ""))


def _detail(evaluation: Evaluation, result: GradeResult, level: int, opts: CardOptions) -> str:
    """Grade and why, what is missing, what to do: the same rendering as the CRS card."""
    at = local_time(result.at, site_zone(opts.site_timezone))
    lines: list[str] = []
    if result.grade is not None:
        lines.append(f"**ASTCT ICANS grade {result.grade}** at {at}.")
    else:
        at_least = f" (at least {result.grade_at_least})" if result.grade_at_least else ""
        lines.append(f"**ASTCT ICANS grade indeterminate{at_least}** at {at}.")
    lines += evidence_table(result, first_column="Domain", site_timezone=opts.site_timezone)
    others = [r for r in evaluation.icans_results if r.system != result.system]
    if others:
        lines += ["", "**Other ICANS grading systems** (the card's advice follows ASTCT)"]
        lines += [f"- {markdown_cell(display_text(_grade_phrase(r), site_zone(opts.site_timezone)))}" for r in others]
    lines += item_lines("Alerts", result.alerts, opts)
    lines += item_lines("Missing", result.missing, opts)
    lines += item_lines("Assumptions", result.assumptions, opts)
    lines += item_lines("Not used as evidence", not_used_lines(result), opts)
    lines += [
        "",
        "**Suggested management** (ASCO 2021; institutional protocols apply)",
        *_management(evaluation, level),
    ]
    lines += ["", choices_line(result.choices, opts)]
    lines += ["", f"Grading: {result.citation}. Grade 5 is never inferred. {zone_note(opts)}"]
    return "\n".join(lines)


def _grade_phrase(result: GradeResult) -> str:
    """``CTCAE-6.0-ICANS: grade 3`` or ``...: indeterminate (at least 3): <first reason>``."""
    if result.grade is not None:
        return f"{result.system}: grade {result.grade}"
    at_least = f" (at least {result.grade_at_least})" if result.grade_at_least else ""
    reason = f": {result.missing[0]}" if result.missing else ""
    return f"{result.system}: indeterminate{at_least}{reason}"


def _management(evaluation: Evaluation, level: int) -> list[str]:
    lines = [
        "- Neurology consultation; ICE (or CAPD) and motor assessment at least twice a day; aspiration "
        "precautions. Seizure prophylaxis (e.g. levetiracetam) per institutional protocol.",
    ]
    # Clinical reference, safety rules: no fixed adult dose in any text for a patient under 18 (or
    # of unknown age); the adult ASCO doses only for a known adult.
    adult = evaluation.age_years is not None and evaluation.age_years >= ADULT_AGE_YEARS
    paediatric = "(weight-based, per paediatric protocol)"
    if level >= 2:
        dexamethasone = "dexamethasone 10 mg IV" if adult else f"dexamethasone {paediatric}"
        lines.append(
            "- Neuroimaging and EEG. Without concurrent CRS: for high-risk products or patients consider "
            f"{dexamethasone} and reassess; with CRS, tocilizumab per the CRS card."
        )
    if level >= 3:
        steroid = (
            "Dexamethasone 10 mg IV every 6-12 h (or methylprednisolone 1 mg/kg IV every 12 h)"
            if adult
            else f"Dexamethasone or methylprednisolone {paediatric}"
        )
        lines.append(f"- ICU. {steroid}.")
    if level >= 4:
        steroid = (
            "high-dose methylprednisolone 1000 mg/day IV" if adult else f"high-dose methylprednisolone {paediatric}"
        )
        lines.append(f"- ICU, airway protection as needed; {steroid}.")
    if not adult:
        lines.append(
            "- No fixed adult steroid dose is shown or offered under 18 years (or when the age is unknown); "
            "dosing per paediatric protocol."
        )
    return lines


def _suggestions(evaluation: Evaluation, level: int) -> list[Suggestion]:
    patient = evaluation.patient_reference
    if patient is None or level < 1:
        return []
    reason = _reason(level)
    adult = evaluation.age_years is not None and evaluation.age_years >= ADULT_AGE_YEARS
    out = [service_request_suggestion("Neurology consultation", "Neurology consultation for ICANS", patient, reason)]
    if adult and level == 3:  # one regimen per situation: grade 4 gets methylprednisolone only
        out.append(dexamethasone_q6h(patient, reason, guidance="ASCO 2021 ICANS guidance; taper once grade 1"))
    if adult and level >= 4:
        out.append(methylprednisolone_daily(patient, reason, guidance="ASCO 2021 ICANS guidance; taper once grade 1"))
    if level >= 3:
        out.append(
            service_request_suggestion(
                "Transfer to intensive care", "Transfer to intensive care unit for ICANS", patient, reason
            )
        )
    return out


def _reason(grade: int) -> list[dict[str, Any]]:
    code = ICANS_DIAGNOSIS.get(grade, "G92.00")
    return [
        {
            "coding": [
                {
                    "system": ICD10CM,
                    "code": code,
                    "display": f"Immune effector cell-associated neurotoxicity syndrome, grade {grade}",
                }
            ],
            "text": f"ICANS, ASTCT grade {grade}",
        }
    ]
