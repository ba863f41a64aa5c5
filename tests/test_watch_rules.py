"""The watcher's alert rules (issue 15): grade-rise and stale-data, once per event, pure.

Each row: what was alerted before, what the chart says now -> which alerts (kind, system, grade,
previous grade). A clinician on the unit would notice a missing alert, and a repeated one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cds_hooks.watch.rules import (
    CRS,
    ICANS,
    AlertKind,
    AlertRules,
    PatientState,
    PatientView,
    SystemState,
    SystemView,
    decide,
)

AT = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
ONSET = AT - timedelta(hours=6)
RULES = AlertRules(stale_after=timedelta(hours=8))
FRESH = AT - timedelta(hours=1)


def crs(
    grade: int | None,
    *,
    at_least: int | None = None,
    onset: datetime | None = ONSET,
    resolved: tuple[tuple[datetime, datetime], ...] = (),
    last_temperature: datetime | None = FRESH,
) -> SystemView:
    return SystemView(
        CRS,
        grade,
        at_least,
        onset,
        resolved,
        references=("Observation/t1",),
        last_data_at=last_temperature,
        last_data_reference="Observation/t-last" if last_temperature else None,
    )


def icans(grade: int | None, *, onset: datetime | None = ONSET, last_assessment: datetime | None = FRESH) -> SystemView:
    return SystemView(
        ICANS,
        grade,
        None,
        onset,
        references=("Observation/ice1",),
        last_data_at=last_assessment,
        last_data_reference="Observation/ice-last" if last_assessment else None,
    )


def alerted(grade: int, onset: datetime = ONSET, *, stale: str | None = None) -> PatientState:
    return PatientState({CRS: SystemState(onset, grade, stale)})


OLD_ONSET = AT - timedelta(days=4)
OLD_EPISODE = (OLD_ONSET, AT - timedelta(days=3))

CASES = [
    pytest.param(PatientState(), crs(0, onset=None), [], id="grade-0-no-episode->nothing"),
    pytest.param(PatientState(), crs(1), [("grade-rise", CRS, 1, None)], id="first-grade-1->alert"),
    pytest.param(alerted(1), crs(1), [], id="grade-1-again->not-repeated"),
    pytest.param(alerted(1), crs(3), [("grade-rise", CRS, 3, 1)], id="1->3->alert-with-previous-1"),
    pytest.param(alerted(3), crs(2), [], id="3->2-falls->nothing"),
    pytest.param(alerted(3), crs(3), [], id="back-to-3-in-same-episode->not-repeated"),
    pytest.param(
        PatientState(), crs(None, at_least=2), [("grade-rise", CRS, 2, None)], id="indeterminate-at-least-2->alert-2"
    ),
    pytest.param(PatientState(), crs(None, at_least=None), [], id="indeterminate-nothing-proven->nothing"),
    pytest.param(
        alerted(2, OLD_ONSET),
        crs(1, resolved=(OLD_EPISODE,)),
        [("grade-rise", CRS, 1, None)],
        id="recurrence-after-resolved-episode->alerts-again",
    ),
    pytest.param(
        alerted(2, ONSET),
        crs(2, onset=ONSET - timedelta(hours=2)),
        [],
        id="late-data-move-onset-earlier->not-repeated",
    ),
    pytest.param(alerted(2), crs(0, onset=None), [], id="episode-over->nothing"),
    pytest.param(
        PatientState(),
        crs(1, last_temperature=AT - timedelta(hours=9)),
        [("grade-rise", CRS, 1, None), ("stale-data", CRS, 1, None)],
        id="grade-1-no-temperature-9h->rise+stale",
    ),
    pytest.param(
        alerted(1, stale=(AT - timedelta(hours=9)).isoformat().replace("+00:00", "Z")),
        crs(1, last_temperature=AT - timedelta(hours=9)),
        [],
        id="same-stale-gap->not-repeated",
    ),
    pytest.param(
        alerted(1, stale=(AT - timedelta(hours=20)).isoformat().replace("+00:00", "Z")),
        crs(1, last_temperature=AT - timedelta(hours=9)),
        [("stale-data", CRS, 1, None)],
        id="new-data-then-stale-again->alerts-again",
    ),
    pytest.param(
        PatientState(),
        crs(1, last_temperature=None, onset=AT - timedelta(hours=9)),
        [("grade-rise", CRS, 1, None), ("stale-data", CRS, 1, None)],
        id="no-temperature-since-onset-9h->stale",
    ),
    pytest.param(
        alerted(1), crs(1, last_temperature=AT - timedelta(hours=7)), [], id="temperature-7h-old->not-stale-yet"
    ),
    pytest.param(
        PatientState(),
        crs(0, onset=None, last_temperature=AT - timedelta(days=2)),
        [],
        id="no-episode-old-temperature->no-stale",
    ),
]


@pytest.mark.parametrize(("previous", "view", "expected"), CASES)
def test_crs_alert_rules(previous: PatientState, view: SystemView, expected: list[tuple[object, ...]]) -> None:
    decision = decide(previous, PatientView(AT, view), RULES)
    got = [(a.kind.value, a.system, a.grade, a.previous_grade) for a in decision.alerts]
    assert got == expected


ICANS_CASES = [
    pytest.param(crs(0, onset=None), icans(2), [("grade-rise", ICANS, 2, None)], id="icans-2-alone->one-icans-alert"),
    pytest.param(
        crs(1),
        icans(1),
        [("grade-rise", CRS, 1, None), ("grade-rise", ICANS, 1, None)],
        id="crs-1+icans-1->one-alert-each",
    ),
    pytest.param(
        crs(0, onset=None, last_temperature=AT - timedelta(hours=10)),
        icans(1, last_assessment=AT - timedelta(hours=9)),
        [("grade-rise", ICANS, 1, None), ("stale-data", CRS, 0, None), ("stale-data", ICANS, 1, None)],
        id="icans-episode-no-temperature-no-assessment->two-stale",
    ),
    pytest.param(
        crs(1),
        icans(0, onset=None, last_assessment=AT - timedelta(hours=20)),
        [("grade-rise", CRS, 1, None)],
        id="crs-only-episode-old-assessment->no-icans-stale",
    ),
]


@pytest.mark.parametrize(("crs_view", "icans_view", "expected"), ICANS_CASES)
def test_icans_alert_rules(crs_view: SystemView, icans_view: SystemView, expected: list[tuple[object, ...]]) -> None:
    decision = decide(PatientState(), PatientView(AT, crs_view, icans_view), RULES)
    got = [(a.kind.value, a.system, a.grade, a.previous_grade) for a in decision.alerts]
    assert got == expected


def test_state_survives_json_and_stops_the_repeat() -> None:
    first = decide(PatientState(), PatientView(AT, crs(2)), RULES)
    restored = PatientState.from_json(first.state.to_json())
    again = decide(restored, PatientView(AT + timedelta(minutes=5), crs(2)), RULES)
    assert [a.kind for a in first.alerts] == [AlertKind.GRADE_RISE]
    assert again.alerts == ()


def test_grade_rise_carries_references_and_a_stable_event() -> None:
    one = decide(PatientState(), PatientView(AT, crs(3)), RULES).alerts[0]
    two = decide(PatientState(), PatientView(AT + timedelta(minutes=5), crs(3)), RULES).alerts[0]
    assert one.references == ("Observation/t1",)
    assert one.event == two.event
    assert "grade 3" in one.summary


# -- the view from a real evaluation: the episode rules of grading/episodes.py -------------------


def _fever_course(*fever_hours_before: float, normal_hours_before: tuple[float, ...] = ()) -> list[dict[str, object]]:
    from fhir_builders import patient, temperature

    resources: list[dict[str, object]] = [patient(50)]
    resources += [temperature(f"f{i}", 39.0, hours_before=h) for i, h in enumerate(fever_hours_before)]
    resources += [temperature(f"n{i}", 36.8, hours_before=h) for i, h in enumerate(normal_hours_before)]
    return resources


@pytest.mark.parametrize(
    ("resources", "alerted_onset_hours_before", "expected"),
    [
        pytest.param(
            _fever_course(80, 1, normal_hours_before=(60, 40, 20)),
            80,
            [("grade-rise", CRS, 1, None)],
            id="resolved-episode-then-new-fever->recurrence-alerts",
        ),
        pytest.param(
            _fever_course(3, 1, normal_hours_before=(2,)),
            3,
            [],
            id="same-episode-fever-again->not-repeated",
        ),
        pytest.param(_fever_course(normal_hours_before=(1,)), None, [], id="afebrile->no-episode-no-alert"),
    ],
)
def test_view_from_evaluation_drives_the_rules(
    grading: object,
    resources: list[dict[str, object]],
    alerted_onset_hours_before: float | None,
    expected: list[tuple[object, ...]],
) -> None:
    from cds_hooks.pipeline.evaluate import Grading, evaluate
    from cds_hooks.reading.fhir_rules import SourcedResource
    from cds_hooks.watch.view import patient_view

    from fhir_builders import T

    assert isinstance(grading, Grading)
    sourced = [SourcedResource(r, f"{r['resourceType']}/{r['id']}") for r in resources]
    evaluation = evaluate(sourced, patient_id="p1", at=T, grading=grading)
    view = patient_view(evaluation, grading)
    previous = (
        PatientState({CRS: SystemState(T - timedelta(hours=alerted_onset_hours_before), 1)})
        if alerted_onset_hours_before is not None
        else PatientState()
    )
    decision = decide(previous, view, RULES)
    assert [(a.kind.value, a.system, a.grade, a.previous_grade) for a in decision.alerts] == expected
    if expected:
        assert "Observation/f1" in decision.alerts[0].references
