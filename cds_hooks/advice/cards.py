"""Graded results -> CDS Hooks cards: summary, evidence table, gaps, and actionable suggestions.

Cards are typed models (``cds.py``), never JSON text. Every suggestion is a whole FHIR R4 resource
the EHR can accept; a dose is offered only when ``dosing.py`` says every limit allows it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import tzinfo
from typing import Any, Literal

from cds_hooks.advice.display import display_quantity, display_text, local_time, site_zone
from cds_hooks.advice.dosing import TocilizumabAdvice
from cds_hooks.advice.monitoring import panel_lines
from cds_hooks.advice.sepsis import sepsis_lines
from cds_hooks.cds import Action, Card, Coding, Link, Source, Suggestion
from cds_hooks.grading import GradeResult, Status
from cds_hooks.grading.result import ScoreResult
from cds_hooks.pipeline.evaluate import Evaluation
from cds_hooks.reading.fhir_time import iso

EXTENSION_KEY = "crs-cds-hooks.grading"
ASTCT_URL = "https://doi.org/10.1016/j.bbmt.2018.12.758"
ASCO_URL = "https://doi.org/10.1200/JCO.21.01992"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
OVERRIDE_SYSTEM = "https://crs-cds-hooks.example.org/CodeSystem/override-reason"
ADULT_AGE_YEARS = 18

CRS_DIAGNOSIS = {1: "D89.831", 2: "D89.832", 3: "D89.833", 4: "D89.834"}
SEMANTIC_TAG = re.compile(r"\s*\((physical object|procedure|regime/therapy|substance)\)\s*$")
Indicator = Literal["info", "warning", "critical"]
INDICATOR: dict[int, Indicator] = {1: "info", 2: "warning", 3: "critical", 4: "critical"}

OVERRIDE_REASONS = [
    Coding(
        system=OVERRIDE_SYSTEM, code="fever-other-cause", display="Fever attributed to another cause (e.g. infection)"
    ),
    Coding(system=OVERRIDE_SYSTEM, code="already-treated", display="Already treated or ordered"),
    Coding(system=OVERRIDE_SYSTEM, code="data-incorrect", display="Charted data are incorrect"),
    Coding(system=OVERRIDE_SYSTEM, code="clinical-judgement", display="Clinical judgement: not appropriate now"),
]


@dataclass(frozen=True, slots=True)
class CardOptions:
    source_label: str = "CRS grading (ASTCT 2019 consensus)"
    card_for_grade_zero: bool = False
    smart_app_url: str | None = None
    site_timezone: str | None = None
    """IANA zone for every time a clinician reads (``CRS_CDS_SITE_TIMEZONE``); UTC when unset."""
    choices_url: str | None = None
    """Where the choices in force are explained (``/docs/choices`` of this service), if reachable."""


CHOICES_README = 'README, "Clinical choices"'
LIST_LIMIT = 8
"""Items shown per list on a card; the rest stay in the RESULT extension (a short detail is read)."""


def build_cards(evaluation: Evaluation, options: CardOptions | None = None) -> list[Card]:
    """The cards for one evaluation: a graded card, or none for grade 0 with complete data."""
    opts = options or CardOptions()
    result = evaluation.primary
    masked_zero = result.grade == 0 and result.components.get("fever") == "masked"
    wants_card = result.indeterminate or (result.grade or 0) >= 1 or masked_zero or opts.card_for_grade_zero
    cards: list[Card] = []
    if wants_card:
        cards.append(_grade_card(evaluation, opts))
    elif result.alerts:
        cards.append(_alert_card(evaluation, opts))
    return cards


def _grade_card(evaluation: Evaluation, opts: CardOptions) -> Card:
    result = evaluation.primary
    suggestions = _suggestions(evaluation) if result.grade is not None and result.grade >= 1 else []
    if result.grade is None and (result.grade_at_least or 0) >= 1:
        suggestions = _suggestions(evaluation, grade=result.grade_at_least)
    return Card(
        uuid=str(uuid.uuid4()),
        summary=summary_line(result, site_zone(opts.site_timezone)),
        detail=_detail(evaluation, opts),
        indicator=_indicator(result),
        source=_source(opts),
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=OVERRIDE_REASONS,
        links=_links(opts),
        extension={EXTENSION_KEY: _result_objects(evaluation)},
    )


def _alert_card(evaluation: Evaluation, opts: CardOptions) -> Card:
    result = evaluation.primary
    return Card(
        uuid=str(uuid.uuid4()),
        summary=clip_summary(f"CRS grade 0 (ASTCT), but: {result.alerts[0]}"),
        detail=_detail(evaluation, opts),
        indicator="warning",
        source=_source(opts),
        overrideReasons=OVERRIDE_REASONS,
        links=_links(opts),
        extension={EXTENSION_KEY: _result_objects(evaluation)},
    )


def _result_objects(evaluation: Evaluation) -> list[dict[str, Any]]:
    """The grades, then the lab scores beside them (ISTH DIC), as RESULT objects."""
    return [*(r.to_json() for r in evaluation.results), *(s.to_json() for s in evaluation.scores)]


def score_lines(score: ScoreResult) -> list[str]:
    """A lab score on the card: its value or what the data prove, its evidence, what is missing.

    An indeterminate score says "at least" and never the negative class.
    """
    name = SCORE_TITLES.get(score.system, score.system)
    shown = score.score if score.score is not None else score.value
    if not score.missing and shown is not None:
        head = f"**{name}: {shown:g}**" + (f" ({score.interpretation})" if score.interpretation else "")
    else:
        proven = f", at least {score.score_at_least:g}" if score.score_at_least is not None else ""
        overt = f" ({score.interpretation})" if score.interpretation else ""
        head = f"**{name}: indeterminate{proven}**{overt}: not every component is charted"
    lines = ["", head, *score.notes]
    if score.evidence:
        lines += ["", "| Component | Value | Note | Time | Reference |", "|---|---|---|---|---|"]
        for e in score.evidence:
            value = display_quantity(e.value, e.unit) if isinstance(e.value, float) else markdown_cell(e.value)
            time = iso(e.time) if e.time is not None else ""
            lines.append(
                f"| {markdown_cell(e.criterion)} | {value} | {markdown_cell(e.detail)} | {time} | {e.reference} |"
            )
    lines += [f"- Missing: {markdown_cell(m)}" for m in score.missing]
    lines += [f"- Not used: {n.reference}: {markdown_cell(n.reason)}" for n in score.not_evidence[:10]]
    return lines


SCORE_TITLES = {
    "ISTH-DIC-2001": "ISTH overt DIC score",
    "M-EASIX": "m-EASIX",
    "EASIX": "EASIX",
    "CARHLH-2018": "carHLH (Neelapu 2018)",
    "HSCORE": "HScore (Fardet 2014)",
    "IEC-HS-FLAG": "Possible IEC-HS (flag, no grade)",
}


def _indicator(result: GradeResult) -> Indicator:
    """By the grade; when indeterminate, by the grade it may be (possible) or is at least:
    a possible grade 3 on a pressor with no temperature is critical, not info (section 1)."""
    if result.grade is None:
        return INDICATOR.get(max(result.possible_grade or 0, result.grade_at_least or 0), "info")
    return INDICATOR.get(result.grade, "info")


def _source(opts: CardOptions) -> Source:
    return Source(
        label=opts.source_label,
        url=ASTCT_URL,
        topic=Coding(
            system="https://crs-cds-hooks.example.org/CodeSystem/topic", code="crs-grade", display="CRS grade"
        ),
    )


def _links(opts: CardOptions) -> list[Link]:
    links = [
        Link(label="ASTCT consensus grading (Lee 2019)", url=ASTCT_URL, type="absolute"),
        Link(label="ASCO guideline: CAR-T toxicity management (2021)", url=ASCO_URL, type="absolute"),
    ]
    if opts.smart_app_url:
        links.append(Link(label="CRS course (SMART app)", url=opts.smart_app_url, type="smart"))
    links += choices_links(opts)
    return links


def choices_links(opts: CardOptions) -> list[Link]:
    """The page that explains the choices in force, when the service knows its public address."""
    if not opts.choices_url:
        return []
    return [Link(label="Choices in force, explained", url=opts.choices_url, type="absolute")]


def choices_line(choices: Mapping[str, str], opts: CardOptions) -> str:
    """One line instead of the full list: the list stays in the RESULT extension ``choices``."""
    where = f"[{opts.choices_url}]({opts.choices_url})" if opts.choices_url else CHOICES_README
    return f"Choices in force: {len(choices)} site settings, explained at {where} (listed in the result extension)."


REFERENCES_PER_REASON = 3


def not_used_lines(result: GradeResult) -> list[str]:
    """One line per reason, naming its resources: thirty thermometers in the wrong unit are one
    finding, not thirty lines (every reference stays in the extension ``notEvidence``)."""
    by_reason: dict[str, list[str]] = {}
    for item in result.not_evidence:
        by_reason.setdefault(item.reason, []).append(item.reference)
    lines: list[str] = []
    for reason, references in by_reason.items():
        named = ", ".join(references[:REFERENCES_PER_REASON])
        more = len(references) - REFERENCES_PER_REASON
        lines.append(f"{named}{f' and {more} more' if more > 0 else ''}: {reason}")
    return lines


def item_lines(title: str, items: Sequence[str], opts: CardOptions) -> list[str]:
    """A titled bullet list, at most ``LIST_LIMIT`` items, units and times as a clinician reads them."""
    if not items:
        return []
    zone = site_zone(opts.site_timezone)
    lines = ["", f"**{title}**", *(f"- {markdown_cell(display_text(item, zone))}" for item in items[:LIST_LIMIT])]
    if len(items) > LIST_LIMIT:
        lines.append(f"- … and {len(items) - LIST_LIMIT} more (in the result extension)")
    return lines


def clip_summary(text: str, limit: int = 139) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def summary_line(result: GradeResult, zone: tzinfo | None = None) -> str:
    """A line a nurse can act on: the grade and the findings that set it (< 140 characters);
    a time in it on the site clock when ``zone`` is given."""
    findings: list[str] = []
    fever = next((e for e in result.evidence if e.criterion == "fever"), None)
    if fever is not None and fever.status is Status.MET:
        findings.append(f"{fever.value} °C")
    elif result.components.get("fever") == "masked":
        findings.append("fever masked by therapy")
    pressors = [e for e in result.evidence if e.criterion == "vasopressor"]
    if pressors:
        findings.append(f"{len(pressors)} vasopressor{'s' if len(pressors) > 1 else ''}")
    else:
        low = next((e for e in result.evidence if e.criterion == "hypotension" and e.status is Status.MET), None)
        if low is not None:
            kind = "MAP" if (low.threshold or "").startswith("mean arterial") else "BP"
            findings.append(f"{kind} {low.value:g} mmHg" if isinstance(low.value, float) else "hypotension")
    oxygen = [e for e in result.evidence if e.criterion == "oxygen" and e.status is Status.MET]
    if oxygen:
        findings.append(_oxygen_phrase(oxygen))
    if result.grade is None:
        head = "CRS grade indeterminate (ASTCT)"
        if result.grade_at_least:
            head += f": at least {result.grade_at_least}"
        missing = first_clause(result.missing[0], zone) if result.missing else "data missing"
        if result.possible_grade is not None and missing.startswith("possible CRS with masked fever"):
            head = f"Possible CRS with masked fever: grade {result.possible_grade} if CRS (ASTCT)"
            missing = ""
        elif result.possible_grade is not None and _fever_unknown(result):
            head += f": grade {result.possible_grade} if febrile"
            missing = "no temperature: take one now"
        parts = [head, *([missing] if missing else []), *([", ".join(findings)] if findings else [])]
        return clip_summary("; ".join(parts))
    text = f"CRS grade {result.grade} (ASTCT)"
    if findings:
        text += ": " + ", ".join(findings)
    if result.worst_grade is not None and result.worst_grade > result.grade:
        text += f" (worst {result.worst_grade} in 72 h)"
    return clip_summary(text)


def first_clause(text: str, zone: tzinfo | None) -> str:
    """The text before its first ``": "``: a bare ``":"`` is inside a time (``08:00``), which a
    split on it cut to ``2025-03-04T08``."""
    return display_text(text.split(": ", maxsplit=1)[0], zone)


def _fever_unknown(result: GradeResult) -> bool:
    return result.components.get("fever") == "unknown"


def _oxygen_phrase(oxygen: Sequence[Any]) -> str:
    device = next((e.value for e in oxygen if isinstance(e.value, str)), None)
    flow = next((e.value for e in oxygen if e.unit == "L/min"), None)
    parts = [_short_display(str(device)) if device else "oxygen"]
    if flow is not None:
        parts.append(f"{flow:g} L/min")
    return clip_summary(" ".join(parts), 60)


def _short_display(display: str) -> str:
    """``Oxygen nasal cannula (physical object)`` -> ``oxygen nasal cannula`` for the summary."""
    trimmed = SEMANTIC_TAG.sub("", display).strip()
    return trimmed[:1].lower() + trimmed[1:] if trimmed[:2].istitle() or trimmed[:1].isupper() else trimmed


# -- detail ---------------------------------------------------------------------------------


def markdown_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value is not None else ""


def _detail(evaluation: Evaluation, opts: CardOptions) -> str:
    """Grade and why (evidence), what is missing, what to do; times in the site zone."""
    result = evaluation.primary
    zone = site_zone(opts.site_timezone)
    at = local_time(result.at, zone)
    lines: list[str] = []
    if result.grade is not None:
        lines.append(f"**ASTCT CRS grade {result.grade}** at {at}.")
    else:
        at_least = f" (at least {result.grade_at_least})" if result.grade_at_least else ""
        lines.append(f"**ASTCT CRS grade indeterminate{at_least}** at {at}: the data cannot exclude a higher grade.")
    fever_met = result.components.get("fever") == Status.MET.value
    lines += [display_text(line, zone) for line in sepsis_lines(evaluation.record, result.at, fever=fever_met)]
    if result.possible_grade is not None:
        lines.append(
            f"Possible grade if the unknown is CRS: **{result.possible_grade}** (the card's indicator follows it)."
        )
    if _worst_differs(result) and result.worst_grade is not None and result.worst_grade_at is not None:
        lines.append(
            f"Worst grade in the look-back window: **{result.worst_grade}** "
            f"(at {local_time(result.worst_grade_at, zone)})."
        )
    lines += evidence_table(result, first_column="Criterion", site_timezone=opts.site_timezone)
    if _worst_differs(result) and result.worst_grade_evidence and result.worst_grade_at is not None:
        worst = replace(result, evidence=result.worst_grade_evidence)
        lines += [
            "",
            f"**Evidence for the worst grade ({result.worst_grade} at {local_time(result.worst_grade_at, zone)})**",
        ]
        lines += evidence_table(worst, first_column="Criterion", site_timezone=opts.site_timezone)
    lines += item_lines("Missing", result.missing, opts)
    lines += item_lines("Alerts", result.alerts, opts)
    lines += item_lines("Assumptions", result.assumptions, opts)
    lines += item_lines("Not used as evidence", not_used_lines(result), opts)
    if len(evaluation.results) > 1:
        lines += ["", "| System | Grade | Worst |", "|---|---|---|"]
        for other in evaluation.results:
            lines.append(f"| {other.system} | {_grade_text(other.grade)} | {_grade_text(other.worst_grade)} |")
    for score in evaluation.scores:
        lines += [display_text(line, zone) for line in score_lines(score)]
    if evaluation.panel is not None:
        lines += [display_text(line, zone) for line in panel_lines(evaluation.panel)]
    lines += [
        "",
        "**Suggested management** (ASCO 2021; institutional protocols apply)",
        *(display_text(line, zone) for line in _management_lines(evaluation, opts)),
    ]
    lines += ["", choices_line(result.choices, opts)]
    lines += ["", f"Grading: {result.citation}. Grade 5 is never inferred. {zone_note(opts)}"]
    return "\n".join(lines)


def zone_note(opts: CardOptions) -> str:
    """Says which clock the card's times are on (UTC in the extension, always)."""
    if opts.site_timezone:
        return f"Times in {opts.site_timezone}."
    return "Times in UTC (no site time zone configured)."


def _worst_differs(result: GradeResult) -> bool:
    """The worst grade is not the current one: its own evidence rows are shown (section 1)."""
    if result.worst_grade is None or result.worst_grade_at == result.at:
        return False
    return result.grade is None or result.worst_grade > result.grade


def evidence_table(result: GradeResult, *, first_column: str, site_timezone: str | None = None) -> list[str]:
    """The evidence as a Markdown table: value in display units, threshold, local time, FHIR source."""
    if not result.evidence:
        return []
    zone = site_zone(site_timezone)
    lines = ["", f"| {first_column} | Status | Value | Threshold | Time | Source |", "|---|---|---|---|---|---|"]
    for e in result.evidence:
        value = display_quantity(e.value, e.unit, e.detail) if isinstance(e.value, float) else e.value
        threshold = display_text(e.threshold) if e.threshold else e.threshold
        when = local_time(e.time, zone) if e.time else ""
        cells = [e.criterion, e.status.value, value, threshold, when, e.reference]
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return lines


def _grade_text(grade: int | None) -> str:
    return "indeterminate" if grade is None else str(grade)


def _management_lines(evaluation: Evaluation, opts: CardOptions) -> list[str]:
    """ASCO 2021 by grade; fixed adult doses only for a known adult, boluses only with hypotension
    (clinical-reference.md section 1, "Children" and "Fluid boluses")."""
    result = evaluation.primary
    grade = result.grade if result.grade is not None else (result.grade_at_least or 0)
    advice = evaluation.tocilizumab
    adult = _is_adult(evaluation)
    hypotension = _has_hypotension(result)
    lines: list[str] = []
    if result.grade is None:
        lines += _indeterminate_lines(result)
    if grade >= 1:
        fluids = "IV fluids" if adult else "IV fluids (weight-based, per paediatric protocol)"
        lines.append(
            f"- Antipyretics, {fluids}, symptomatic care; antibiotics if neutropenic or infected. "
            "Fever > 3 days or refractory: manage as grade 2."
        )
        lines.append("- Monitor fever, DIC, haematology, and pulmonary, cardiac, renal and hepatic function.")
    if grade >= 2:
        lines.append("- Tocilizumab; vasopressors and ICU if hypotension persists.")
        if hypotension:
            volume = "volume per protocol" if adult else "weight-based, per paediatric protocol"
            lines.append(f"- Fluid boluses for hypotension ({volume}); reassess after each.")
        else:
            lines.append(
                "- Fluids only if hypotension develops, not for hypoxia alone: they can worsen capillary-leak "
                "hypoxia (ASCO 2021)."
            )
        if hypotension:
            steroid = _steroid("dexamethasone", adult)
            lines.append(f"- {steroid[:1].upper()}{steroid[1:]} if hypotension persists after 1-2 anti-IL-6 doses.")
    if grade >= 3:
        lines.append(f"- ICU; tocilizumab if the 24 h maximum is not reached; {_steroid('dexamethasone', adult)}.")
    if grade >= 4:
        lines.append(f"- ICU and ventilatory support as needed; {_steroid('methylprednisolone', adult)}.")
        if result.support_before_crs and (result.grade_without_prior_support or 0) < 4:
            lines.append(
                "- Grade 4 rests only on support that began before the first CRS sign (possibly another cause): "
                "no grade-4 steroid order is offered; review the cause."
            )
    if grade >= 2:
        if advice.dose_mg is not None:
            lines.append(f"- Tocilizumab dose now: **{advice.dose_mg:g} mg IV** over 1 h ({advice.calculation}).")
        else:
            lines.append(f"- Tocilizumab: no dose offered: {advice.reason}.")
        if advice.last_dose is not None:
            lines.append(
                f"- Tocilizumab given so far: {advice.doses_total} dose(s), {advice.doses_last_24h} in the last 24 h; "
                f"last at {local_time(advice.last_dose.start, site_zone(opts.site_timezone))} "
                f"({advice.last_dose.reference})."
            )
        if advice.weight_note:
            lines.append(f"- {advice.weight_note}")
        if not adult:
            lines.append(
                "- Steroid and fluid doses are weight-based, per paediatric protocol; no fixed adult dose is shown "
                "or offered under 18 years (or when the age is unknown)."
            )
    if not lines:
        lines.append("- No CRS-directed treatment while the grade is 0; keep monitoring.")
    return lines


def _indeterminate_lines(result: GradeResult) -> list[str]:
    """What an indeterminate grade needs now, and what it may be: never "no CRS-directed treatment"."""
    lines: list[str] = []
    if _fever_unknown(result):
        lines.append("- **Take a temperature now**: fever cannot be judged without one.")
    if result.possible_grade is not None:
        lines.append(
            f"- Possible grade {result.possible_grade} if this is CRS: assess now, and manage as grade "
            f"{result.possible_grade} if CRS is confirmed."
        )
        for line in _possible_grade_lines(result.possible_grade):
            lines.append(line)
    else:
        lines.append("- Grade indeterminate: obtain the missing data listed above; keep monitoring.")
    return lines


def _possible_grade_lines(possible: int) -> list[str]:
    if possible >= 3:
        return ["- If CRS: ICU review; anti-IL-6 therapy and steroids per the grade guidance."]
    if possible >= 2:
        return ["- If CRS: tocilizumab per the grade-2 guidance; treat hypotension."]
    return []


def _is_adult(evaluation: Evaluation) -> bool:
    return evaluation.age_years is not None and evaluation.age_years >= ADULT_AGE_YEARS


def _has_hypotension(result: GradeResult) -> bool:
    return int(result.components.get("hypotensionGrade", 0)) >= 2


def _steroid(name: str, adult: bool) -> str:
    """The steroid line: the ASCO adult dose for a known adult, weight-based wording otherwise."""
    if not adult:
        return f"{name} (weight-based, per paediatric protocol)"
    if name == "dexamethasone":
        return f"dexamethasone {DEXAMETHASONE_MG} mg IV q6h"
    return f"methylprednisolone {METHYLPREDNISOLONE_MG_PER_DAY} mg/day IV (or 500 mg q12h)"


# -- suggestions ----------------------------------------------------------------------------


def _suggestions(evaluation: Evaluation, *, grade: int | None = None) -> list[Suggestion]:
    result = evaluation.primary
    level = grade if grade is not None else (result.grade or 0)
    patient = evaluation.patient_reference
    if patient is None:
        return []
    adult = _is_adult(evaluation)
    reason = _reason(level)
    out: list[Suggestion] = []
    hypotension = _has_hypotension(result)
    if level >= 2:
        toci = _tocilizumab(evaluation.tocilizumab, patient, reason, evaluation)
        if toci is not None:
            out.append(toci)
        if hypotension:
            out.append(_fluids(patient, reason, adult=adult))
    if level == 1:
        dose_text = "Dose per institutional protocol." if adult else "Weight-based, per paediatric protocol."
        out.append(
            _simple_med(
                label="Antipyretic: acetaminophen (dose per protocol)",
                name="acetaminophen",
                coding=(ATC, "N02BE01"),
                patient=patient,
                reason=reason,
                dosage_text=dose_text,
            )
        )
    tocilizumab_given = evaluation.tocilizumab.doses_total >= 1
    # Grade-4 orders never rest only on support that began before CRS (section 1): steroids follow
    # the grade counted without it.
    steroid_level = level
    if result.support_before_crs and result.grade_without_prior_support is not None:
        steroid_level = min(level, result.grade_without_prior_support)
    if adult and (steroid_level == 3 or (steroid_level == 2 and hypotension and tocilizumab_given)):
        out.append(dexamethasone_q6h(patient, reason, guidance="ASCO 2021 CRS guidance"))
    if adult and steroid_level >= 4:
        out.append(methylprednisolone_daily(patient, reason, guidance="ASCO 2021 CRS guidance"))
    if level >= 3:
        out.append(
            service_request_suggestion(
                "Transfer to intensive care", "Transfer to intensive care unit for CRS monitoring", patient, reason
            )
        )
    return out


def _reason(grade: int) -> list[dict[str, Any]]:
    code = CRS_DIAGNOSIS.get(grade)
    concept: dict[str, Any] = {"text": f"Cytokine release syndrome, ASTCT grade {grade}"}
    if code:
        concept["coding"] = [{"system": ICD10CM, "code": code, "display": f"Cytokine release syndrome, grade {grade}"}]
    return [concept]


def _tocilizumab(
    advice: TocilizumabAdvice, patient: str, reason: list[dict[str, Any]], evaluation: Evaluation
) -> Suggestion | None:
    if advice.dose_mg is None:
        return None
    dose = advice.dose_mg
    text = (
        f"{dose:g} mg IV over 1 hour ({advice.calculation}). Repeat only if no clinical improvement, "
        "at least 8 h apart; no more than 3 doses in 24 h and 4 in total."
    )
    resource = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {
            "coding": [
                {"system": RXNORM, "code": "612865", "display": "tocilizumab"},
                {"system": ATC, "code": "L04AC07", "display": "tocilizumab"},
            ],
            "text": "tocilizumab",
        },
        "subject": {"reference": patient},
        "authoredOn": iso(evaluation.at),
        "reasonCode": reason,
        "dosageInstruction": [
            {
                "text": text,
                "route": {"text": "intravenous"},
                "doseAndRate": [{"doseQuantity": {"value": dose, "unit": "mg", "system": UCUM, "code": "mg"}}],
                "maxDosePerAdministration": {"value": 800, "unit": "mg", "system": UCUM, "code": "mg"},
            }
        ],
    }
    return Suggestion(
        label=f"Tocilizumab {dose:g} mg IV over 1 h",
        uuid=str(uuid.uuid4()),
        isRecommended=True,
        actions=[
            Action(
                type="create", description=f"Order tocilizumab {dose:g} mg IV ({advice.calculation})", resource=resource
            )
        ],
    )


DEXAMETHASONE_MG = 10
METHYLPREDNISOLONE_MG_PER_DAY = 1000
"""Adult steroid doses for CRS and ICANS (ASCO 2021; clinical-reference.md section 3): one place."""


def dexamethasone_q6h(patient: str, reason: list[dict[str, Any]], *, guidance: str) -> Suggestion:
    return dosed_medication_suggestion(
        label=f"Dexamethasone {DEXAMETHASONE_MG} mg IV every 6 h",
        name="dexamethasone",
        rxnorm="3264",
        mg=DEXAMETHASONE_MG,
        every_hours=6,
        instruction=f"{DEXAMETHASONE_MG} mg IV every 6 hours ({guidance})",
        patient=patient,
        reason=reason,
    )


def methylprednisolone_daily(patient: str, reason: list[dict[str, Any]], *, guidance: str) -> Suggestion:
    return dosed_medication_suggestion(
        label=f"Methylprednisolone {METHYLPREDNISOLONE_MG_PER_DAY} mg IV daily",
        name="methylprednisolone",
        rxnorm="6902",
        mg=METHYLPREDNISOLONE_MG_PER_DAY,
        every_hours=24,
        instruction=f"{METHYLPREDNISOLONE_MG_PER_DAY} mg IV once daily ({guidance})",
        patient=patient,
        reason=reason,
    )


def dosed_medication_suggestion(
    *,
    label: str,
    name: str,
    rxnorm: str,
    mg: float,
    every_hours: int,
    instruction: str,
    patient: str,
    reason: list[dict[str, Any]],
) -> Suggestion:
    """A fixed-dose IV medication as a draft MedicationRequest (steroids: adults only, by the caller)."""
    resource = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}], "text": name},
        "subject": {"reference": patient},
        "reasonCode": reason,
        "dosageInstruction": [
            {
                "text": instruction,
                "route": {"text": "intravenous"},
                "timing": {"repeat": {"frequency": 1, "period": every_hours, "periodUnit": "h"}},
                "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}}],
            }
        ],
    }
    return Suggestion(
        label=label,
        uuid=str(uuid.uuid4()),
        actions=[Action(type="create", description=f"Order {name} {instruction}", resource=resource)],
    )


def _simple_med(
    *,
    label: str,
    name: str,
    coding: tuple[str, str] | None,
    patient: str,
    reason: list[dict[str, Any]],
    dosage_text: str,
) -> Suggestion:
    """A medication suggested without a computed dose: the dose is the prescriber's."""
    medication: dict[str, Any] = {"text": name}
    if coding is not None:
        medication["coding"] = [{"system": coding[0], "code": coding[1], "display": name}]
    resource = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": medication,
        "subject": {"reference": patient},
        "reasonCode": reason,
        "dosageInstruction": [{"text": dosage_text}],
    }
    return Suggestion(
        label=label,
        uuid=str(uuid.uuid4()),
        actions=[Action(type="create", description=f"Order {name}; {dosage_text}", resource=resource)],
    )


def _fluids(patient: str, reason: list[dict[str, Any]], *, adult: bool) -> Suggestion:
    """Offered only with hypotension (ASCO 2021; clinical-reference.md section 1)."""
    volume = "Volume per institutional protocol" if adult else "Volume weight-based, per paediatric protocol"
    return _simple_med(
        label="IV fluid bolus for hypotension (volume per protocol)",
        name="sodium chloride 0.9% intravenous bolus",
        coding=None,
        patient=patient,
        reason=reason,
        dosage_text=f"{volume}; reassess after each bolus.",
    )


def service_request_suggestion(label: str, text: str, patient: str, reason: list[dict[str, Any]]) -> Suggestion:
    resource = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"text": text},
        "subject": {"reference": patient},
        "reasonCode": reason,
    }
    return Suggestion(
        label=label, uuid=str(uuid.uuid4()), actions=[Action(type="create", description=text, resource=resource)]
    )
