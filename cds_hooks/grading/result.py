"""The result every grading system returns: the grade, the evidence, and what is missing.

Evidence is data first, prose second: cards and the CLI render from this structure, and its
JSON form (``to_json``) is the machine-readable RESULT carried on cards and printed by the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.record import NotEvidence


class Status(StrEnum):
    MET = "met"
    NOT_MET = "not met"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One criterion checked against one FHIR resource."""

    criterion: str
    status: Status
    reference: str
    value: float | str | None = None
    unit: str | None = None
    threshold: str | None = None
    time: datetime | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"criterion": self.criterion, "status": self.status.value, "reference": self.reference}
        if self.value is not None:
            out["value"] = self.value
        if self.unit:
            out["unit"] = self.unit
        if self.threshold:
            out["threshold"] = self.threshold
        if self.time is not None:
            out["time"] = iso(self.time)
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class GradeResult:
    """A grade at ``at`` with its evidence; ``grade`` is None when indeterminate.

    ``grade_at_least`` is what the data prove when the grade is indeterminate;
    ``worst_grade`` is the worst grade (or proven minimum) over the look-back window.
    """

    system: str
    at: datetime
    grade: int | None
    components: Mapping[str, str | int]
    evidence: tuple[Evidence, ...]
    missing: tuple[str, ...] = ()
    grade_at_least: int | None = None
    worst_grade: int | None = None
    worst_grade_at: datetime | None = None
    worst_grade_references: tuple[str, ...] = ()
    not_evidence: tuple[NotEvidence, ...] = ()
    assumptions: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()
    choices: Mapping[str, str] = field(default_factory=dict)
    citation: str = ""
    possible_grade: int | None = None
    """Indeterminate only: the grade if the unknown turns out to be CRS (masked fever after
    prophylaxis, no temperature charted); the card's indicator follows it."""
    worst_grade_evidence: tuple[Evidence, ...] = ()
    """The evidence the worst grade rests on, with its times (shown on the card)."""
    support_before_crs: tuple[str, ...] = ()
    """Support in force that began before the first CRS sign: possibly due to another cause."""
    grade_without_prior_support: int | None = None
    """The grade counting only support begun after CRS; grade-4 orders need it to be 4."""

    @property
    def indeterminate(self) -> bool:
        return self.grade is None

    @property
    def references(self) -> tuple[str, ...]:
        """Every FHIR reference the current grade rests on, in evidence order, once each."""
        return tuple(dict.fromkeys(e.reference for e in self.evidence))

    def to_json(self, *, null_grade: bool = False) -> dict[str, Any]:
        """The RESULT object. Empty values are omitted (CDS Hooks forbids null and empty);
        ``null_grade`` keeps ``"grade": null`` for the CLI's JSON output."""
        out: dict[str, Any] = {"system": self.system}
        if self.grade is not None or null_grade:
            out["grade"] = self.grade
        out["status"] = "indeterminate" if self.indeterminate else "graded"
        if self.grade_at_least is not None:
            out["gradeAtLeast"] = self.grade_at_least
        if self.possible_grade is not None:
            out["possibleGrade"] = self.possible_grade
        if self.worst_grade is not None or null_grade:
            out["worstGrade"] = self.worst_grade
        if self.worst_grade_at is not None:
            out["worstGradeAt"] = iso(self.worst_grade_at)
        if self.worst_grade_references:
            out["worstGradeReferences"] = list(self.worst_grade_references)
        if self.support_before_crs:
            out["supportBeforeCrs"] = list(self.support_before_crs)
            if self.grade_without_prior_support is not None:
                out["gradeWithoutSupportBeforeCrs"] = self.grade_without_prior_support
        out.update(
            _findings_json(
                at=self.at,
                components=self.components,
                evidence=self.evidence,
                missing=self.missing,
                not_evidence=self.not_evidence,
                notes=(("assumptions", self.assumptions), ("alerts", self.alerts)),
                choices=self.choices,
                citation=self.citation,
            )
        )
        return out


@dataclass(frozen=True)
class ScoreResult:
    """A score shown beside the grades (ISTH DIC, EASIX...): never a CRS grade, never a diagnosis.

    ``status`` is "graded" only when every component was charted; otherwise ``score`` is None
    and ``score_at_least`` (and ``score_at_most``) say what the data prove. ``interpretation``
    is only what the data prove: an indeterminate score is never read as the negative class.
    """

    system: str
    at: datetime
    score: float | None
    components: Mapping[str, str | int | float]
    evidence: tuple[Evidence, ...]
    missing: tuple[str, ...] = ()
    score_at_least: float | None = None
    score_at_most: float | None = None
    interpretation: str | None = None
    value: float | None = None
    """A continuous index (EASIX) rather than a points score."""
    not_evidence: tuple[NotEvidence, ...] = ()
    notes: tuple[str, ...] = ()
    choices: Mapping[str, str] = field(default_factory=dict)
    citation: str = ""

    @property
    def indeterminate(self) -> bool:
        return bool(self.missing)

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.reference for e in self.evidence))

    def to_json(self) -> dict[str, Any]:
        """The RESULT object, beside the grades on the card (empty values omitted)."""
        out: dict[str, Any] = {"system": self.system, "status": "indeterminate" if self.indeterminate else "graded"}
        for key, item in (
            ("score", self.score),
            ("scoreAtLeast", self.score_at_least),
            ("scoreAtMost", self.score_at_most),
            ("value", self.value),
            ("interpretation", self.interpretation),
        ):
            if item is not None:
                out[key] = item
        out.update(
            _findings_json(
                at=self.at,
                components=self.components,
                evidence=self.evidence,
                missing=self.missing,
                not_evidence=self.not_evidence,
                notes=(("notes", self.notes),),
                choices=self.choices,
                citation=self.citation,
            )
        )
        return out


def _findings_json(
    *,
    at: datetime,
    components: Mapping[str, Any],
    evidence: tuple[Evidence, ...],
    missing: tuple[str, ...],
    not_evidence: tuple[NotEvidence, ...],
    notes: tuple[tuple[str, tuple[str, ...]], ...],
    choices: Mapping[str, str],
    citation: str,
) -> dict[str, Any]:
    """What every result says after its grade or score, in one order: time, components, evidence,
    what is missing, what was not evidence, its own notes, the choices in force, the citation."""
    out: dict[str, Any] = {"at": iso(at), "components": dict(components)}
    if evidence:
        out["evidence"] = [e.to_json() for e in evidence]
    if missing:
        out["missing"] = list(missing)
    if not_evidence:
        out["notEvidence"] = [{"reference": n.reference, "reason": n.reason} for n in not_evidence]
    for key, values in notes:
        if values:
            out[key] = list(values)
    if choices:
        out["choices"] = dict(choices)
    if citation:
        out["citation"] = citation
    return out
