"""The values of infection signs: blood culture results and infection Conditions.

The reader (``reader.py``) applies the shared FHIR rules (status, patient) and calls these to
turn a resource into a finding. The order checks read the findings from the record: a positive
culture or an active infection before a T-cell engager or CAR-T dose is a warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cds_hooks.reading.fhir_rules import codings, text_candidates
from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.reading.record import BloodCulture, InfectionCondition
from cds_hooks.reading.terminology import ConceptKind, Terminology

POSITIVE_INTERPRETATIONS = frozenset({"POS", "DET"})
POSITIVE_TEXT = re.compile(r"\b(positive|detected|growth)\b", re.IGNORECASE)
NEGATIVE_TEXT = re.compile(r"\b(negative|not detected|no growth)\b", re.IGNORECASE)


def is_blood_culture(resource: Mapping[str, Any], terminology: Terminology) -> bool:
    match = terminology.lookup_codings(codings(resource.get("code")), ConceptKind.LABORATORY)
    return match is not None and match.concept.id == "blood_culture"


def blood_culture(resource: Mapping[str, Any], reference: str) -> BloodCulture | None:
    """The culture's result, or None when it has no usable time (a result must be placed in time).

    Positive by interpretation code (POS, DET) or by words in the interpretation or value text
    ("positive", "growth", an organism with "detected"), unless the same text says negative.
    """
    raw_time = resource.get("effectiveDateTime") or resource.get("issued")
    period = resource.get("effectivePeriod")
    if raw_time is None and isinstance(period, dict):
        raw_time = period.get("start")
    time = parse_instant(raw_time) if raw_time is not None else None
    if not isinstance(time, datetime):
        return None
    interpretations = resource.get("interpretation")
    concepts = interpretations if isinstance(interpretations, list) else []
    codes = {str(c.get("code")).upper() for concept in concepts for c in codings(concept) if isinstance(c, dict)}
    texts = [t for concept in concepts for t in text_candidates(concept)]
    value_texts = text_candidates(resource.get("valueCodeableConcept"))
    if isinstance(resource.get("valueString"), str):
        value_texts.append(resource["valueString"])
    positive = bool(POSITIVE_INTERPRETATIONS & codes) or any(
        POSITIVE_TEXT.search(t) and not NEGATIVE_TEXT.search(t) for t in (*texts, *value_texts)
    )
    organism = value_texts[0] if value_texts and not POSITIVE_TEXT.search(value_texts[0]) else None
    return BloodCulture(time, reference, positive, organism)


def infection_condition(
    resource: Mapping[str, Any], reference: str, terminology: Terminology
) -> InfectionCondition | None:
    """An infection Condition by mapped code, else by its text (reported as text-based)."""
    code = resource.get("code")
    match = terminology.lookup_codings(codings(code), ConceptKind.INFECTION)
    texts = text_candidates(code)
    if match is None:
        for candidate in texts:
            match = terminology.lookup_name_in_text(candidate, ConceptKind.INFECTION)
            if match is not None:
                break
    if match is None:
        return None
    return InfectionCondition(reference, texts[0] if texts else match.code, match.by_text)
