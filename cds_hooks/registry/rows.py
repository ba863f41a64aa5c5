"""Episodes as registry rows: the columns (camelCase, the same in every format) and their values.

One row per episode per system; a patient with no episode gets one row with ``episode`` 0 and
``maxGrade`` 0, a patient whose data cannot decide one row with ``status`` "indeterminate" and
``episode``/``maxGrade`` unknown (never 0: missing data never reads as "no CRS"). Times are
ISO-8601 UTC strings, unknown values None; the writers turn None into an empty CSV cell, JSON null
or a Parquet null.
"""

from __future__ import annotations

from datetime import datetime

from cds_hooks.grading.episodes import Episode, EpisodeCourse
from cds_hooks.reading.fhir_time import iso
from cds_hooks.reading.record import Administration

Cell = str | int | float | bool | list[str] | None
Row = dict[str, Cell]

COLUMNS: tuple[str, ...] = (
    "patient",
    "system",
    "episode",
    "status",
    "therapy",
    "therapyAt",
    "onset",
    "onsetDay",
    "maxGrade",
    "maxGradeAt",
    "resolved",
    "resolution",
    "durationHours",
    "feverOnset",
    "hypotensionOnset",
    "vasopressorsMax",
    "vasopressorStart",
    "lowFlowOxygenStart",
    "highFlowOxygenStart",
    "positivePressureStart",
    "tocilizumabDoses",
    "tocilizumabFirst",
    "corticosteroidFirst",
    "otherAnticytokine",
    "references",
)
TIME_COLUMNS = frozenset(
    {
        "therapyAt",
        "onset",
        "maxGradeAt",
        "resolution",
        "feverOnset",
        "hypotensionOnset",
        "vasopressorStart",
        "lowFlowOxygenStart",
        "highFlowOxygenStart",
        "positivePressureStart",
        "tocilizumabFirst",
        "corticosteroidFirst",
    }
)
INTEGER_COLUMNS = frozenset({"episode", "onsetDay", "maxGrade", "vasopressorsMax", "tocilizumabDoses"})
LIST_COLUMNS = frozenset({"otherAnticytokine", "references"})
GRADED = "graded"
INDETERMINATE = "indeterminate"


def _time(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None


def episode_row(patient: str, episode: Episode) -> Row:
    """``status`` is "indeterminate" when the worst grade rests on an undecidable moment: then
    ``maxGrade`` is what the data prove at least."""
    duration = episode.duration_hours
    return {
        "patient": patient,
        "system": episode.system,
        "episode": episode.number,
        "status": INDETERMINATE if episode.indeterminate else GRADED,
        "therapy": episode.therapy,
        "therapyAt": _time(episode.therapy_at),
        "onset": _time(episode.onset),
        "onsetDay": episode.onset_day,
        "maxGrade": episode.max_grade,
        "maxGradeAt": _time(episode.max_grade_at),
        "resolved": episode.resolved,
        "resolution": _time(episode.resolution),
        "durationHours": round(duration, 3) if duration is not None else None,
        "feverOnset": _time(episode.fever_onset),
        "hypotensionOnset": _time(episode.hypotension_onset),
        "vasopressorsMax": episode.vasopressors_max,
        "vasopressorStart": _time(episode.vasopressor_start),
        "lowFlowOxygenStart": _time(episode.low_flow_oxygen_start),
        "highFlowOxygenStart": _time(episode.high_flow_oxygen_start),
        "positivePressureStart": _time(episode.positive_pressure_start),
        "tocilizumabDoses": episode.tocilizumab_doses,
        "tocilizumabFirst": _time(episode.tocilizumab_first),
        "corticosteroidFirst": _time(episode.corticosteroid_first),
        "otherAnticytokine": list(episode.other_anticytokine),
        "references": list(episode.references),
    }


def _empty(patient: str, system: str) -> Row:
    row: Row = dict.fromkeys(COLUMNS)
    row.update({"patient": patient, "system": system, "otherAnticytokine": [], "references": []})
    return row


def no_episode_row(patient: str, system: str, therapy: Administration | None) -> Row:
    """The data decide there was no episode: grade 0, counts 0; ``resolved`` does not apply (None).
    The CRS-causing therapy given (the latest) is named, so the row says "axi-cel, no CRS"."""
    row = _empty(patient, system)
    row.update(
        {
            "episode": 0,
            "status": GRADED,
            "maxGrade": 0,
            "vasopressorsMax": 0,
            "tocilizumabDoses": 0,
            "therapy": therapy.agent if therapy is not None else None,
            "therapyAt": _time(therapy.start) if therapy is not None else None,
            "references": [therapy.reference] if therapy is not None else [],
        }
    )
    return row


def undecided_row(patient: str, system: str, therapy: Administration | None) -> Row:
    """The data cannot say whether there was an episode: every grade and count unknown."""
    row = _empty(patient, system)
    row.update(
        {
            "status": INDETERMINATE,
            "therapy": therapy.agent if therapy is not None else None,
            "therapyAt": _time(therapy.start) if therapy is not None else None,
            "references": [therapy.reference] if therapy is not None else [],
        }
    )
    return row


def course_rows(patient: str, course: EpisodeCourse, therapy: Administration | None) -> list[Row]:
    """Every row of one system for one patient (at least one)."""
    if course.episodes:
        return [episode_row(patient, e) for e in course.episodes]
    if not course.decided:
        return [undecided_row(patient, course.system, therapy)]
    return [no_episode_row(patient, course.system, therapy)]
