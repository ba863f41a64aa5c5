"""Sepsis stays in view on the CRS card: CRS is a diagnosis of exclusion (clinical-reference.md
section 6; ASCO 2021: with fever, blood and urine cultures and a chest X-ray; neutropenic fever is
treated empirically alongside anti-cytokine therapy).

Pure over the record: which findings make infection a live alternative, each with its reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cds_hooks.grading.dic import latest_within
from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.record import PatientRecord

NEUTROPENIA_BELOW_10E9_L = 0.5
"""ANC < 0.5 x 10^9/L is neutropenia for febrile neutropenia [choice: the common definition
(IDSA 2010); section 6 names neutropenic fever without a threshold]."""
ANC_RECENCY = timedelta(hours=48)
"""The latest ANC counts when charted in the 48 h before T [choice]."""
CULTURE_LOOKBACK = timedelta(days=7)
"""A positive blood culture in the 7 days before T keeps sepsis in view (as the order checks)."""

EXCLUSION_ADVICE = (
    "Blood and urine cultures and chest imaging (ASCO 2021); neutropenic fever is treated empirically "
    "alongside anti-cytokine therapy."
)


@dataclass(frozen=True, slots=True)
class SepsisFinding:
    text: str
    reference: str


def sepsis_findings(record: PatientRecord, at: datetime, *, fever: bool) -> list[SepsisFinding]:
    """Fever with neutropenia, a positive blood culture, or an active infection Condition.

    Neutropenia counts only with fever (febrile neutropenia); a positive culture or an active
    infection counts with or without a charted fever [choice: fever may be masked after
    tocilizumab or steroids].
    """
    found: list[SepsisFinding] = []
    anc = latest_within(record.labs, ("anc",), at, ANC_RECENCY)
    if fever and anc is not None and anc.value < NEUTROPENIA_BELOW_10E9_L:
        found.append(
            SepsisFinding(
                f"fever with neutropenia: ANC {anc.value:g} x10^9/L at {iso(anc.time)} "
                f"(< {NEUTROPENIA_BELOW_10E9_L:g})",
                anc.reference,
            )
        )
    for culture in record.blood_cultures:
        if culture.positive and at - CULTURE_LOOKBACK <= culture.time <= at:
            organism = f" ({culture.organism})" if culture.organism else ""
            found.append(SepsisFinding(f"positive blood culture at {iso(culture.time)}{organism}", culture.reference))
    for condition in record.infections:
        found.append(SepsisFinding(f"active infection: {condition.name}", condition.reference))
    return found


def sepsis_lines(record: PatientRecord, at: datetime, *, fever: bool) -> list[str]:
    """The card's lines, or none when no finding keeps sepsis in view."""
    found = sepsis_findings(record, at, fever=fever)
    if not found:
        return []
    return [
        "",
        "**Sepsis stays in view: CRS is a diagnosis of exclusion.**",
        *(f"- {f.text} ({f.reference})" for f in found),
        EXCLUSION_ADVICE,
    ]
