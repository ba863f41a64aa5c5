"""The local engine's second phase, one bucket per task: its lines grouped by patient, the shared
Medications they reference joined in, every patient graded in patient order, the outcomes
written to a result file (so the parent never holds a whole export's outcomes).

Runs in the worker processes (in the parent with one worker). The join follows the rule the
engines share: a patient gets each distinct line of every Medication its resources reference.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from cds_hooks.registry.partition import bucket_of, records
from cds_hooks.registry.per_patient import PatientOutcome, RegistryOptions, grade_patient


@dataclass(frozen=True)
class BucketTask:
    spills: tuple[Path, ...]
    """The bucket's files, one per unit that placed lines in it."""
    medications: tuple[tuple[Path, ...], ...]
    """Per medication bucket, its files (see :func:`partition.bucket_of`)."""
    results: Path
    options: RegistryOptions


def grade_bucket(task: BucketTask) -> int:
    """Grade every patient of the bucket; the number of patients."""
    by_header: dict[bytes, list[bytes]] = {}
    for header, line in records(task.spills):
        lines = by_header.get(header)
        if lines is None:
            lines = by_header[header] = []
        lines.append(line)
    patients: dict[str, list[bytes]] = {}
    references: dict[str, set[str]] = {}
    for header, lines in by_header.items():
        patient, medication = orjson.loads(header)
        patients.setdefault(patient, []).extend(lines)
        if medication is not None:
            references.setdefault(patient, set()).add(medication)
    del by_header
    shared = _medications(task.medications, {m for refs in references.values() for m in refs})
    count = len(patients)
    with task.results.open("wb") as out:
        for patient in sorted(patients):
            lines = patients.pop(patient)
            for reference in sorted(references.get(patient, ())):
                lines.extend(shared.get(reference, ()))
            outcome = grade_patient(task.options, patient, lines)
            pickle.dump((patient, outcome), out, protocol=pickle.HIGHEST_PROTOCOL)
    return count


def _medications(buckets: tuple[tuple[Path, ...], ...], wanted: set[str]) -> dict[str, list[bytes]]:
    """The distinct lines of each wanted Medication, read from the buckets that can hold them."""
    paths = [path for b in sorted({bucket_of(m, len(buckets)) for m in wanted}) for path in buckets[b]]
    found: dict[str, dict[bytes, None]] = {}
    for header, line in records(paths):
        key = orjson.loads(header)
        if key in wanted:
            found.setdefault(key, {})[line] = None
    return {key: list(lines) for key, lines in found.items()}


def outcomes(path: Path) -> Iterator[tuple[str, PatientOutcome]]:
    """(patient id, outcome) as :func:`grade_bucket` wrote them, in patient order."""
    with path.open("rb") as handle:
        while True:
            try:
                # Written by this run's own workers into its private temporary folder.
                yield pickle.load(handle)  # noqa: S301
            except EOFError:
                return


_WARM_UP_LINES = (
    b'{"resourceType":"Patient","id":"warm-up","birthDate":"1970-01-01"}',
    b'{"resourceType":"MedicationAdministration","id":"warm-up-cart","status":"completed",'
    b'"medicationCodeableConcept":{"coding":[{"system":"http://www.whocc.no/atc","code":"L01XL03"}]},'
    b'"subject":{"reference":"Patient/warm-up"},"effectiveDateTime":"2025-01-01T00:00:00Z"}',
    b'{"resourceType":"Observation","id":"warm-up-temp","status":"final",'
    b'"code":{"coding":[{"system":"http://loinc.org","code":"8310-5"}]},"subject":{"reference":"Patient/warm-up"},'
    b'"effectiveDateTime":"2025-01-02T00:00:00Z",'
    b'"valueQuantity":{"value":39.0,"unit":"Cel","system":"http://unitsofmeasure.org","code":"Cel"}}',
)
"""A made-up patient (a CAR-T infusion, then fever) graded once and thrown away: it loads what
grading loads on first use (vocabulary, the FHIR models of the evidence check)."""


def warm_up(options: RegistryOptions) -> None:
    """Worker initializer: pay the first-use costs while the parent still reads the export."""
    grade_patient(options, "warm-up", _WARM_UP_LINES)
