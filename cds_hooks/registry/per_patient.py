"""One patient of an export -> registry rows: the one function every engine runs.

The patient's NDJSON lines are parsed, read by the same reader as the card
(``reading/reader.py``) into one record, and cut into episodes by ``grading/episodes.py``. The
evidence an episode cites passes the same FHIR R4B check as the card's evidence: a resource that
fails it is dropped and the patient read again, so a row never rests on a resource the card would
refuse. The data end where the patient's data end (the latest time in the record): an episode is
resolved only if 24 h of sign-free data follow it inside the export.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.episodes import (
    CRS_SYSTEM,
    ICANS_SYSTEM,
    EpisodeConfig,
    EpisodeCourse,
    crs_episodes,
    icans_episodes,
)
from cds_hooks.grading.icans import DEFAULT_WINDOW as ICANS_WINDOW
from cds_hooks.reading.evidence_check import invalid_references
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.neuro import ICE_QUESTIONNAIRE_FILE, IceQuestionnaire, load_ice_questionnaire
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.record import Administration, NotEvidence, PatientRecord
from cds_hooks.reading.terminology import MedicationRole, Terminology, load_terminology
from cds_hooks.reading.units import UnitTable, load_units
from cds_hooks.registry.rows import Row, course_rows, undecided_row

EPISODE_SYSTEMS = (CRS_SYSTEM, ICANS_SYSTEM)
"""The default systems (clinical-reference.md section 5); any other CRS system in ``GRADERS`` can
be asked for: its episodes follow the same rules with its own grade at each data time."""
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_TIME = attrgetter("time")


@dataclass(frozen=True)
class RegistryOptions:
    """What every worker needs besides the data; picklable, so a process pool or Spark ships it."""

    systems: tuple[str, ...] = EPISODE_SYSTEMS
    mapping_files: tuple[Path, ...] = ()
    ice_questionnaire_file: Path | None = None
    config: GradingConfig = field(default_factory=GradingConfig)
    episode_config: EpisodeConfig = field(default_factory=EpisodeConfig)
    icans_window: timedelta = ICANS_WINDOW


@dataclass
class PatientOutcome:
    """One patient's rows and the resources the reader could not use, counted by reason."""

    patient: str
    rows: list[Row]
    rejected: Counter[str] = field(default_factory=Counter)


class PatientGrader:
    """The vocabulary, units and ICE form loaded once per worker process."""

    def __init__(self, options: RegistryOptions) -> None:
        self.options = options
        self.terminology: Terminology = load_terminology(list(options.mapping_files))
        self.units: UnitTable = load_units()
        self.ice_form: IceQuestionnaire = load_ice_questionnaire(
            options.ice_questionnaire_file or ICE_QUESTIONNAIRE_FILE
        )

    def grade(self, patient_id: str, lines: Iterable[str | bytes]) -> PatientOutcome:
        rejected: Counter[str] = Counter()
        by_reference = _parse_by_reference(lines, rejected)
        resources = list(by_reference.values())
        skip: dict[str, str] = {}
        patient = f"Patient/{patient_id}"
        for _ in range(len(resources) + 1):  # each round drops at least one resource
            record = extract_record(
                resources,
                self.terminology,
                self.units,
                patient_id=patient_id,
                ice_form=self.ice_form,
                skip=skip,
            )
            courses = self._courses(record)
            cited = [ref for course in courses for e in course.episodes for ref in e.references]
            bad = invalid_references(cited, by_reference)
            if not bad:
                break
            skip.update(bad)
        therapy = _latest_therapy(record)
        rows = [row for course in courses for row in course_rows(patient, course, therapy)]
        for item in (*record.not_evidence, *record.neuro_not_evidence, *_skipped(skip)):
            rejected[_NUMBER.sub("#", item.reason)] += 1
        return PatientOutcome(patient, rows, rejected)

    def _courses(self, record: PatientRecord) -> list[EpisodeCourse]:
        until = end_of_data(record)
        courses: list[EpisodeCourse] = []
        for system in self.options.systems:
            if system == ICANS_SYSTEM:
                courses.append(
                    icans_episodes(
                        record,
                        until=until,
                        window=self.options.icans_window,
                        episode_config=self.options.episode_config,
                    )
                )
            else:  # ASTCT CRS, or another CRS system graded over the same episode rules
                courses.append(
                    crs_episodes(
                        record,
                        until=until,
                        config=self.options.config,
                        episode_config=self.options.episode_config,
                        system=system,
                    )
                )
        return courses


def _skipped(skip: dict[str, str]) -> list[NotEvidence]:
    return [NotEvidence(ref, f"fails FHIR R4 validation: {reason.split(':', 1)[0]}") for ref, reason in skip.items()]


def _parse_by_reference(lines: Iterable[str | bytes], rejected: Counter[str]) -> dict[str, SourcedResource]:
    """Each resource once, by its reference (also the map the evidence check looks cited ones up in).

    The lines are taken in sorted order, so the record (and the rows) do not depend on the order
    an engine delivers them in; of two copies of a reference the first in that order wins.

    The order is the code-point order of the decoded lines. UTF-8 keeps code-point order in its
    bytes, so lines that all arrive as valid UTF-8 bytes are sorted and parsed as bytes, never
    decoded (issue 14); any other mix (str and bytes, a line that is not UTF-8) takes the decoding
    path, which fails the patient on a line that is not UTF-8 as it always has.
    """
    ordered = _sorted_lines(lines if isinstance(lines, list) else list(lines))
    seen: dict[str, SourcedResource] = {}
    loads, json_error, new = orjson.loads, orjson.JSONDecodeError, tuple.__new__
    for line in ordered:
        try:
            resource: Any = loads(line)
        except json_error:
            rejected["not JSON"] += 1
            continue
        if not isinstance(resource, dict):
            rejected["not a JSON object"] += 1
            continue
        kind, rid = resource.get("resourceType"), resource.get("id")
        if not (isinstance(kind, str) and isinstance(rid, str) and rid):  # reference_of, inline
            rejected["no resourceType or id"] += 1
            continue
        reference = f"{kind}/{rid}"
        if reference not in seen:
            seen[reference] = new(SourcedResource, (resource, reference))
    return seen


def _sorted_lines(lines: list[Any]) -> list[Any]:
    """The lines in the code-point order of their text: bytes stay bytes when that is the same."""
    kinds = set(map(type, lines))
    if kinds == {bytes}:
        try:
            b"\n".join(lines).decode()  # every line valid UTF-8 ("\n" ends any truncated sequence)
        except UnicodeDecodeError:
            pass  # the decoding path below raises on the first bad line, as it always has
        else:
            return sorted(lines)
    elif kinds <= {str}:
        return sorted(lines)
    return sorted(line if isinstance(line, str) else line.decode() for line in lines)


def end_of_data(record: PatientRecord) -> datetime:
    """The latest moment the patient's data speak of; a patient with no dated data at all gets
    the epoch (nothing can be resolved, nothing is graded).

    The reader leaves the record sorted by time, so a list sorted by the time asked for gives
    its latest at its end: the first of the equal latest ones is the one ``max`` would pick, so
    the answer is the same datetime object as a scan of every finding would give.
    """
    moments: list[datetime] = [
        *_latest_sorted(record.temperatures),
        *_latest_sorted(record.blood_pressures),
        *(o.period_end or o.time for o in record.oxygen),
        *_latest_sorted(record.spo2),
        *(a.end or a.start for a in record.administrations),
        *(c.onset for c in record.conditions if c.onset is not None),
        *_latest_sorted(record.weights),
        *_latest_sorted(record.neuro),
    ]
    return max(moments) if moments else datetime.fromtimestamp(0).astimezone()


def _latest_sorted(findings: Sequence[Any]) -> list[datetime]:
    """The first finding at the latest ``time`` of a list sorted by time (none when empty)."""
    if not findings:
        return []
    return [findings[bisect_left(findings, findings[-1].time, key=_TIME)].time]


def _latest_therapy(record: PatientRecord) -> Administration | None:
    given = record.administrations_with(MedicationRole.CRS_THERAPY)
    return max(given, key=lambda a: a.start) if given else None


_GRADERS: dict[RegistryOptions, PatientGrader] = {}


GRADING_FAILED = "patient could not be graded (internal error {}): rows indeterminate"


def grade_patient(options: RegistryOptions, patient_id: str, lines: Sequence[str | bytes]) -> PatientOutcome:
    """The per-patient function every engine calls; the grader is built once per process.

    A failure on one patient (a bug, never expected) must neither stop a population run nor drop
    the patient: the patient gets indeterminate rows and the summary counts the failure by its
    exception type only (no data, no identifier, in the message).
    """
    grader = _GRADERS.get(options)
    if grader is None:
        grader = _GRADERS[options] = PatientGrader(options)
    try:
        return grader.grade(patient_id, lines)
    except Exception as exc:  # one patient must not stop the run (see the docstring)
        patient = f"Patient/{patient_id}"
        rows = [undecided_row(patient, system, None) for system in options.systems]
        return PatientOutcome(patient, rows, Counter({GRADING_FAILED.format(type(exc).__name__): 1}))
