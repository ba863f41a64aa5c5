"""The values of neurologic assessments: ICANS Observations and ICE QuestionnaireResponses.

The reader (``reader.py``) applies the shared FHIR rules (status, patient, time) and calls these
to turn a value into a :class:`NeuroFinding`, or into the reason it cannot be one. No LOINC code
exists for the ICE or CAPD score, so every assessment code comes from ``mappings/icans.yaml``
(kind ``neurologic``) and the ICE form's item linkIds from ``mappings/ice-questionnaire.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cds_hooks.reading.fhir_rules import codings
from cds_hooks.reading.record import Domain, NeuroFinding
from cds_hooks.reading.terminology import BUILTIN_MAPPINGS_DIR, ConceptKind, MappingError, Terminology

ICE_QUESTIONNAIRE_FILE = BUILTIN_MAPPINGS_DIR / "ice-questionnaire.yaml"

ICE_MAX_POINTS = 10
"""ICE: orientation 4, naming 3, commands 1, writing 1, attention 1 (Lee 2019)."""
CAPD_MAX_POINTS = 32
"""CAPD: 8 items scored 0-4."""


ANSWER_DOMAIN: Mapping[str, Domain] = {
    **dict.fromkeys(
        (
            "loc_alert",
            "loc_awakens_spontaneously",
            "loc_awakens_to_voice",
            "loc_awakens_to_tactile",
            "loc_unarousable",
        ),
        Domain.CONSCIOUSNESS,
    ),
    **dict.fromkeys(
        (
            "seizure_none",
            "seizure_rapidly_resolving",
            "seizure_nonconvulsive_resolved",
            "seizure_prolonged",
            "seizure_repetitive",
        ),
        Domain.SEIZURE,
    ),
    **dict.fromkeys(("motor_none", "motor_deep_focal_weakness"), Domain.MOTOR),
    **dict.fromkeys(
        (
            "edema_none",
            "edema_focal",
            "edema_diffuse",
            "posturing",
            "cranial_nerve_vi_palsy",
            "papilledema",
            "cushings_triad",
        ),
        Domain.EDEMA,
    ),
}
"""Which domain each coded answer belongs to (an answer charted under another domain is refused)."""

SCORE_RANGES: Mapping[Domain, tuple[float, float]] = {
    Domain.ICE: (0, ICE_MAX_POINTS),
    Domain.CAPD: (0, CAPD_MAX_POINTS),
    Domain.GCS: (3, 15),
}


# -- the ICE questionnaire configuration -------------------------------------------------------


class _IceItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    link_id: str = Field(min_length=1)
    domain: Literal["orientation", "naming", "commands", "writing", "attention"]
    points: int = Field(ge=1, le=4)


class _IceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal["crs-cds-ice-questionnaire/1"] = Field(alias="schema")
    name: str
    version: str
    questionnaires: tuple[str, ...] = ()
    items: tuple[_IceItem, ...]

    @model_validator(mode="after")
    def _ten_points(self) -> _IceFile:
        total = sum(item.points for item in self.items)
        if total != ICE_MAX_POINTS:
            raise ValueError(f"ICE items must add up to {ICE_MAX_POINTS} points, not {total}")
        ids = [item.link_id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("ICE item linkIds must be unique")
        return self


@dataclass(frozen=True)
class IceQuestionnaire:
    """Which QuestionnaireResponses are ICE assessments, and how many points each item is worth."""

    version: str
    questionnaires: frozenset[str]
    points: Mapping[str, int]


def load_ice_questionnaire(path: Path = ICE_QUESTIONNAIRE_FILE) -> IceQuestionnaire:
    """Load and check the ICE item map; a bad file stops start-up (no silent default)."""
    try:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise MappingError(f"cannot read ICE questionnaire file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"ICE questionnaire file {path} is not valid YAML: {exc}") from exc
    try:
        parsed = _IceFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise MappingError(f"ICE questionnaire file {path} is invalid at {where}: {first['msg']}") from exc
    return IceQuestionnaire(
        version=parsed.version,
        questionnaires=frozenset(_canonical(q) for q in parsed.questionnaires),
        points={item.link_id: item.points for item in parsed.items},
    )


def _canonical(url: str) -> str:
    """``http://x/Questionnaire/ice|2.0`` -> ``http://x/Questionnaire/ice`` (any version)."""
    return url.split("|", 1)[0].strip().rstrip("/")


# -- values ---------------------------------------------------------------------------------


def neuro_domain(resource: Mapping[str, Any], terminology: Terminology) -> Domain | None:
    """The ICANS domain an Observation assesses, or None when it is not an ICANS assessment."""
    match = terminology.lookup_codings(codings(resource.get("code")), ConceptKind.NEUROLOGIC)
    if match is None or match.concept.id not in Domain._value2member_map_:
        return None
    return Domain(match.concept.id)


def neuro_observation(
    resource: Mapping[str, Any], reference: str, domain: Domain, time: datetime, terminology: Terminology
) -> NeuroFinding | str:
    """The finding an ICANS Observation charts, or why its value cannot be used."""
    if domain in SCORE_RANGES:
        return _score(resource, reference, domain, time)
    return _coded(resource, reference, domain, time, terminology)


def _score(resource: Mapping[str, Any], reference: str, domain: Domain, time: datetime) -> NeuroFinding | str:
    value: object = resource.get("valueInteger")
    quantity = resource.get("valueQuantity")
    if value is None and isinstance(quantity, dict):
        value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{domain.value}: no numeric value"
    low, high = SCORE_RANGES[domain]
    if not low <= value <= high or value != int(value):
        return f"{domain.value} {value:g} is outside {low:g}-{high:g}"
    return NeuroFinding(domain, time, reference, score=float(value))


def _coded(
    resource: Mapping[str, Any], reference: str, domain: Domain, time: datetime, terminology: Terminology
) -> NeuroFinding | str:
    present = resource.get("valueBoolean")
    if isinstance(present, bool):
        if domain is Domain.CONSCIOUSNESS:
            return "level of consciousness needs a coded answer, not yes/no"
        return NeuroFinding(domain, time, reference, present=present)
    value = resource.get("valueCodeableConcept")
    answer = terminology.lookup_codings(codings(value), ConceptKind.NEUROLOGIC)
    if answer is None or ANSWER_DOMAIN.get(answer.concept.id) is not domain:
        return f"{domain.value}: answer not mapped to an ICANS {domain.value} answer"
    display = next(
        (c.get("display") for c in codings(value) if isinstance(c, dict) and isinstance(c.get("display"), str)),
        None,
    )
    return NeuroFinding(domain, time, reference, answer=answer.concept.id, display=display)


def is_ice_form(resource: Mapping[str, Any], form: IceQuestionnaire) -> bool:
    """A QuestionnaireResponse of a configured ICE Questionnaire, or with ICE item linkIds."""
    canonical = resource.get("questionnaire")
    if isinstance(canonical, str) and _canonical(canonical) in form.questionnaires:
        return True
    return any(link in form.points for link, _ in _answers(resource.get("item")))


def ice_form_finding(
    resource: Mapping[str, Any], reference: str, time: datetime, form: IceQuestionnaire
) -> NeuroFinding | str:
    """The ICE total of a completed form, or why it is not a score (an unanswered item)."""
    answers = dict(_answers(resource.get("item")))
    total = 0
    missing: list[str] = []
    for link_id, points in form.points.items():
        got = _points(answers.get(link_id), points)
        if got is None:
            missing.append(link_id)
        else:
            total += got
    if missing:
        return f"ICE questionnaire incomplete (no usable answer for {', '.join(missing)})"
    return NeuroFinding(Domain.ICE, time, reference, score=float(total), display="ICE form")


def _answers(items: object) -> Iterable[tuple[str, object]]:
    """(linkId, first answer value) for every answered item, nested groups included."""
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        answers = item.get("answer")
        if isinstance(item.get("linkId"), str) and isinstance(answers, list) and answers:
            first = answers[0]
            if isinstance(first, dict):
                value = next((v for k, v in first.items() if k.startswith("value")), None)
                yield item["linkId"], value
            if isinstance(first, dict) and "item" in first:
                yield from _answers(first["item"])
        yield from _answers(item.get("item"))


def _points(value: object, points: int) -> int | None:
    """An item's points: true/false, or a number of points within 0..points."""
    if isinstance(value, bool):
        return points if value else 0
    if isinstance(value, int | float) and 0 <= value <= points and value == int(value):
        return int(value)
    return None
