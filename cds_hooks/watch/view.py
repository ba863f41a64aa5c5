"""From the hook's evaluation of one patient to what the alert rules read: the current grade of
each system, its episode (``grading/episodes.py``, the same rules as the registries) and the last
temperature and neurologic assessment. Pure: the evaluation carries its ``at``.
"""

from __future__ import annotations

from datetime import datetime

from cds_hooks.grading import GradingConfig
from cds_hooks.grading.episodes import EpisodeCourse, crs_episodes, icans_episodes
from cds_hooks.pipeline.evaluate import Evaluation, Grading
from cds_hooks.watch.rules import CRS, ICANS, PatientView, SystemView


def patient_view(evaluation: Evaluation, grading: Grading) -> PatientView:
    record = evaluation.record
    at = evaluation.at
    config: GradingConfig = grading.config
    crs = evaluation.primary
    onset, resolved = _episodes(crs_episodes(record, until=at, config=config), at)
    last_temperature = next((t for t in reversed(record.temperatures) if t.time <= at), None)
    crs_view = SystemView(
        system=CRS,
        grade=crs.grade,
        grade_at_least=crs.grade_at_least,
        episode_onset=onset,
        resolved=resolved,
        references=tuple(dict.fromkeys(crs.references)),
        last_data_at=last_temperature.time if last_temperature else None,
        last_data_reference=last_temperature.reference if last_temperature else None,
    )
    icans_view: SystemView | None = None
    if evaluation.icans is not None and grading.icans is not None:
        icans = evaluation.icans
        neuro_onset, neuro_resolved = _episodes(icans_episodes(record, until=at, window=grading.icans.window), at)
        last_assessment = next((f for f in reversed(record.neuro) if f.time <= at), None)
        icans_view = SystemView(
            system=ICANS,
            grade=icans.grade,
            grade_at_least=icans.grade_at_least,
            episode_onset=neuro_onset,
            resolved=neuro_resolved,
            references=tuple(dict.fromkeys(icans.references)),
            last_data_at=last_assessment.time if last_assessment else None,
            last_data_reference=last_assessment.reference if last_assessment else None,
        )
    return PatientView(at=at, crs=crs_view, icans=icans_view)


def _episodes(course: EpisodeCourse, at: datetime) -> tuple[datetime | None, tuple[tuple[datetime, datetime], ...]]:
    """The onset of the episode in progress at ``at`` (None: none), and every resolved episode."""
    current = course.current(at)
    onset = current.onset if current is not None and not current.resolved else None
    resolved = tuple((e.onset, e.resolution) for e in course.episodes if e.resolved and e.resolution is not None)
    return onset, resolved
