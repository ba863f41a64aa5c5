"""A site's chart-abstracted worst grades against the computed ones: the go-live check.

The site gives ``patient,maxGrade`` (optionally ``onset``, a date or date-time) per patient, as its
abstractors wrote them; the export is graded with the same rules as the card. Reported: ``n``
(patients compared), exact ``agreement`` (0-1), quadratic-weighted Cohen's ``kappa`` (the usual
statistic for ordinal grades: a 1-grade miss weighs 1, a 2-grade miss 4), the confusion matrix
(rows: expected, columns: computed), and every disagreement with the evidence references the
computed grade rests on. A patient whose computed grade is indeterminate is never counted as 0:
it is listed apart (``indeterminate``), as is an expected patient absent from the export.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds_hooks.registry.rows import INDETERMINATE, Row

GRADES = (0, 1, 2, 3, 4)
"""ASTCT 2019 grades, for CRS and ICANS alike (death is not a grade of its own there)."""


class ExpectedFileError(Exception):
    """The expected-grades file cannot be read; the message says where and why."""


@dataclass(frozen=True)
class Expected:
    patient: str
    """The patient id (``Patient/`` prefix removed)."""
    max_grade: int
    onset: str | None = None
    """As written by the site: compared by its date (first 10 characters)."""


@dataclass
class Computed:
    max_grade: int | None
    """None: indeterminate (the data cannot decide, or the worst grade is only "at least")."""
    onset: str | None = None
    references: list[str] = field(default_factory=list)


def read_expected(path: Path) -> list[Expected]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"patient", "maxGrade"} <= set(reader.fieldnames):
                raise ExpectedFileError(f"{path}: the header must name patient and maxGrade (optional: onset)")
            expected: list[Expected] = []
            for number, record in enumerate(reader, start=2):
                expected.append(_expected(path, number, record))
    except OSError as exc:
        raise ExpectedFileError(f"cannot read {path}: {exc.strerror}") from exc
    return expected


def _expected(path: Path, number: int, record: Mapping[str, str | None]) -> Expected:
    patient = (record.get("patient") or "").strip().removeprefix("Patient/")
    grade_text = (record.get("maxGrade") or "").strip()
    if not patient:
        raise ExpectedFileError(f"{path}:{number}: no patient")
    if not grade_text.isdigit() or int(grade_text) not in GRADES:
        raise ExpectedFileError(f"{path}:{number}: maxGrade must be 0-4, not {grade_text!r}")
    onset = (record.get("onset") or "").strip() or None
    return Expected(patient, int(grade_text), onset)


def computed_grades(rows: Iterable[Row], system: str) -> dict[str, Computed]:
    """Per patient id: the worst grade over the system's episodes (0 without an episode)."""
    found: dict[str, Computed] = {}
    for row in rows:
        if row["system"] != system:
            continue
        patient = str(row["patient"]).removeprefix("Patient/")
        current = found.setdefault(patient, Computed(0))
        references = [str(r) for r in row["references"]] if isinstance(row["references"], list) else []
        grade = row["maxGrade"]
        if row["status"] == INDETERMINATE or not isinstance(grade, int):
            current.max_grade = None
            current.references = references
            continue
        if current.onset is None and isinstance(row["onset"], str):
            current.onset = row["onset"]
        if current.max_grade is not None and (grade > current.max_grade or not current.references):
            current.max_grade = grade
            current.references = references
    return found


def quadratic_weighted_kappa(matrix: Sequence[Sequence[int]]) -> float | None:
    """Cohen's kappa with weights (i - j)^2: 1 - sum(w * observed) / sum(w * expected by chance).

    None when chance disagreement is 0 (every patient in one grade on both sides): undefined.
    """
    size = len(matrix)
    n = sum(sum(row) for row in matrix)
    if n == 0:
        return None
    rows = [sum(matrix[i]) for i in range(size)]
    cols = [sum(matrix[i][j] for i in range(size)) for j in range(size)]
    observed = sum((i - j) ** 2 * matrix[i][j] for i in range(size) for j in range(size)) / n
    chance = sum((i - j) ** 2 * rows[i] * cols[j] for i in range(size) for j in range(size)) / (n * n)
    if chance == 0:
        return None
    return 1 - observed / chance


@dataclass
class ValidationReport:
    system: str
    n: int
    agreement: float | None
    kappa: float | None
    confusion: list[list[int]]
    disagreements: list[dict[str, Any]]
    indeterminate: list[dict[str, Any]]
    not_in_export: list[str]
    onset_compared: int = 0
    onset_same_day: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "n": self.n,
            "agreement": self.agreement,
            "kappa": self.kappa,
            "grades": list(GRADES),
            "confusion": {"rows": "expected", "columns": "computed", "matrix": self.confusion},
            "disagreements": self.disagreements,
            "indeterminate": self.indeterminate,
            "notInExport": self.not_in_export,
            "onset": {"compared": self.onset_compared, "sameDay": self.onset_same_day},
        }

    def text(self) -> str:
        agreement = "-" if self.agreement is None else f"{self.agreement:.3f}"
        kappa = "undefined (one grade only)" if self.kappa is None else f"{self.kappa:.3f}"
        lines = [
            f"{self.system}: n {self.n}, exact agreement {agreement}, quadratic-weighted kappa {kappa}",
            "",
            "expected \\ computed " + " ".join(f"{g:>5}" for g in GRADES),
        ]
        for grade, counts in zip(GRADES, self.confusion, strict=True):
            lines.append(f"{grade:>19} " + " ".join(f"{c:>5}" for c in counts))
        if self.onset_compared:
            lines += ["", f"onset: same day for {self.onset_same_day} of {self.onset_compared}"]
        if self.disagreements:
            lines += ["", "disagreements (patient, expected, computed, evidence):"]
            lines += [
                f"  {d['patient']}: {d['expected']} vs {d['computed']} ({'; '.join(d['references']) or 'no evidence'})"
                for d in self.disagreements
            ]
        if self.indeterminate:
            lines += ["", "indeterminate (not counted; the data cannot decide):"]
            lines += [f"  {d['patient']}: expected {d['expected']}" for d in self.indeterminate]
        if self.not_in_export:
            lines += ["", "not in the export: " + ", ".join(self.not_in_export)]
        return "\n".join(lines)


def compare(expected: Sequence[Expected], computed: Mapping[str, Computed], system: str) -> ValidationReport:
    confusion = [[0 for _ in GRADES] for _ in GRADES]
    disagreements: list[dict[str, Any]] = []
    indeterminate: list[dict[str, Any]] = []
    missing: list[str] = []
    onset_compared = onset_same = 0
    for item in expected:
        found = computed.get(item.patient)
        if found is None:
            missing.append(f"Patient/{item.patient}")
            continue
        if found.max_grade is None:
            indeterminate.append(
                {"patient": f"Patient/{item.patient}", "expected": item.max_grade, "references": found.references}
            )
            continue
        confusion[item.max_grade][min(found.max_grade, GRADES[-1])] += 1
        if found.max_grade != item.max_grade:
            disagreements.append(
                {
                    "patient": f"Patient/{item.patient}",
                    "expected": item.max_grade,
                    "computed": found.max_grade,
                    "references": found.references,
                }
            )
        if item.onset is not None and found.onset is not None:
            onset_compared += 1
            onset_same += item.onset[:10] == found.onset[:10]
    n = sum(sum(row) for row in confusion)
    agreement = sum(confusion[g][g] for g in range(len(GRADES))) / n if n else None
    return ValidationReport(
        system=system,
        n=n,
        agreement=agreement,
        kappa=quadratic_weighted_kappa(confusion),
        confusion=confusion,
        disagreements=disagreements,
        indeterminate=indeterminate,
        not_in_export=missing,
        onset_compared=onset_compared,
        onset_same_day=onset_same,
    )
