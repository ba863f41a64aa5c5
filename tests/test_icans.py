"""ICANS (ASTCT 2019): every ICE band, each domain that raises the grade, CAPD under 12, the ICE form,
missing data -> indeterminate, and the card through the API.

Each row builds FHIR R4 resources charted with the example ICANS codes of ``mappings/icans.yaml``,
grades them at ``T`` through ``evaluate`` and checks the grade a clinician would see.
"""

from __future__ import annotations

from typing import Any

import pytest
from cds_hooks.grading.icans import capd_grade, ice_grade
from cds_hooks.pipeline.evaluate import Evaluation, Grading, IcansOptions, evaluate
from cds_hooks.reading.neuro import load_ice_questionnaire
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from card_checks import check_card, empty_values, validate_r4
from fhir_builders import (
    LOINC,
    PATIENT_ID,
    Resource,
    T,
    concept,
    medication_administration,
    patient,
    reference,
    rxnorm,
    temperature,
    when,
)
from hook_requests import patient_view, prefetch_from_bundle

ICANS = "http://hospital.example.org/fhir/CodeSystem/icans"


@pytest.fixture(scope="module")
def grading() -> Grading:
    return Grading(load_terminology(), load_units(), icans=IcansOptions(load_ice_questionnaire()))


_ids = iter(range(1, 10_000))


def obs(code: str, *, hours_before: float = 1.0, status: str = "final", system: str = ICANS, **value: Any) -> Resource:
    """An ICANS Observation: ``integer=``, ``answer=`` (an answer code) or ``boolean=``."""
    resource: Resource = {
        "resourceType": "Observation",
        "id": f"neuro-{next(_ids)}",
        "status": status,
        "code": concept(system, code),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when(hours_before),
    }
    if "integer" in value:
        resource["valueInteger"] = value["integer"]
    if "answer" in value:
        resource["valueCodeableConcept"] = concept(ICANS, value["answer"])
    if "boolean" in value:
        resource["valueBoolean"] = value["boolean"]
    return resource


def ice(score: int, **kw: Any) -> Resource:
    return obs("ICE-TOTAL", integer=score, **kw)


def capd(score: int, **kw: Any) -> Resource:
    return obs("CAPD-TOTAL", integer=score, **kw)


def loc(answer: str) -> Resource:
    return obs("LOC", answer=answer)


def ice_form(points: dict[str, bool], *, status: str = "completed") -> Resource:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": f"ice-form-{next(_ids)}",
        "questionnaire": "http://hospital.example.org/fhir/Questionnaire/ice",
        "status": status,
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authored": when(2),
        "item": [{"linkId": k, "answer": [{"valueBoolean": v}]} for k, v in points.items()],
    }


ICE_ITEMS = [
    "ice-orientation-year",
    "ice-orientation-month",
    "ice-orientation-city",
    "ice-orientation-hospital",
    "ice-naming-1",
    "ice-naming-2",
    "ice-naming-3",
    "ice-commands",
    "ice-writing",
    "ice-attention",
]


def grade(grading: Grading, *resources: Resource, age: int = 45) -> Evaluation:
    everything = [patient(age), *resources]
    for r in everything:
        validate_r4(r)
    sourced = [SourcedResource(r, reference(r)) for r in everything]
    return evaluate(sourced, patient_id=PATIENT_ID, at=T, grading=grading)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        pytest.param(10, 0, id="ICE-10->0"),
        pytest.param(9, 1, id="ICE-9->1"),
        pytest.param(7, 1, id="ICE-7->1"),
        pytest.param(6, 2, id="ICE-6->2"),
        pytest.param(3, 2, id="ICE-3->2"),
        pytest.param(2, 3, id="ICE-2->3"),
        pytest.param(0, 3, id="ICE-0-awake-aphasic->3"),
    ],
)
def test_every_ice_band(grading: Grading, score: int, expected: int) -> None:
    # ICE 0 is 3 only when the patient is charted awake (issue 16: alone it is "at least 3").
    awake = [loc("LOC-ALERT")] if score == 0 else []
    result = grade(grading, ice(score), *awake).icans
    assert result is not None
    assert result.grade == expected
    assert ice_grade(score) == expected


def test_ice_zero_unarousable_is_grade_4(grading: Grading) -> None:
    result = grade(grading, ice(0), loc("LOC-UNAROUSABLE")).icans
    assert result is not None and result.grade == 4


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        pytest.param(loc("LOC-ALERT"), 0, id="alert->0"),
        pytest.param(loc("LOC-SPONTANEOUS"), 1, id="awakens-spontaneously->1"),
        pytest.param(loc("LOC-VOICE"), 2, id="awakens-to-voice->2"),
        pytest.param(loc("LOC-TACTILE"), 3, id="tactile-only->3"),
        pytest.param(loc("LOC-UNAROUSABLE"), 4, id="unarousable->4"),
        pytest.param(obs("SEIZURE", answer="SZ-RAPID"), 3, id="seizure-rapidly-resolving->3"),
        pytest.param(obs("SEIZURE", answer="SZ-EEG"), 3, id="nonconvulsive-eeg-resolved->3"),
        pytest.param(obs("SEIZURE", answer="SZ-PROLONGED"), 4, id="seizure-over-5-min->4"),
        pytest.param(obs("SEIZURE", answer="SZ-REPETITIVE"), 4, id="repetitive-seizures->4"),
        pytest.param(obs("MOTOR", answer="MOTOR-DEEP-FOCAL"), 4, id="hemiparesis->4"),
        pytest.param(obs("MOTOR", boolean=True), 4, id="motor-weakness-yes->4"),
        pytest.param(obs("ICP-EDEMA", answer="EDEMA-FOCAL"), 3, id="focal-oedema->3"),
        pytest.param(obs("ICP-EDEMA", answer="EDEMA-DIFFUSE"), 4, id="diffuse-oedema->4"),
        pytest.param(obs("ICP-EDEMA", answer="POSTURING"), 4, id="posturing->4"),
        pytest.param(obs("ICP-EDEMA", answer="CN6-PALSY"), 4, id="cn-vi-palsy->4"),
        pytest.param(obs("ICP-EDEMA", answer="PAPILLOEDEMA"), 4, id="papilloedema->4"),
        pytest.param(obs("ICP-EDEMA", answer="CUSHING-TRIAD"), 4, id="cushing-triad->4"),
    ],
)
def test_each_domain_raises_the_grade_over_ice_10(grading: Grading, finding: Resource, expected: int) -> None:
    result = grade(grading, ice(10), finding).icans
    assert result is not None
    assert result.grade == expected
    assert finding_reference(finding) in result.references


def finding_reference(resource: Resource) -> str:
    return reference(resource)


def test_seizure_without_type_is_at_least_3(grading: Grading) -> None:
    result = grade(grading, ice(10), obs("SEIZURE", boolean=True)).icans
    assert result is not None
    assert result.grade is None and result.grade_at_least == 3
    assert any("type not charted" in m for m in result.missing)


def test_ice_score_with_generalised_seizure_is_grade_3(grading: Grading) -> None:
    """The paper's own example: ICE 3 with a generalised seizure -> grade 3."""
    result = grade(grading, ice(3), obs("SEIZURE", answer="SZ-RAPID")).icans
    assert result is not None and result.grade == 3


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param([capd(0)], 0, id="CAPD-0->0"),
        pytest.param([capd(4), loc("LOC-ALERT")], 1, id="CAPD-4+alert->1"),
        pytest.param([capd(8), loc("LOC-VOICE")], 2, id="CAPD-8+voice->2"),
        pytest.param([capd(9)], 3, id="CAPD-9->3"),
        pytest.param([capd(2), loc("LOC-UNAROUSABLE")], 4, id="unable-to-perform-CAPD->4"),
    ],
)
def test_child_under_12_is_graded_by_capd(grading: Grading, resources: list[Resource], expected: int) -> None:
    result = grade(grading, *resources, age=7).icans
    assert result is not None
    assert result.grade == expected
    assert result.components["scoreUsed"] == "CAPD"


def test_ice_in_a_child_under_12_is_not_the_score(grading: Grading) -> None:
    result = grade(grading, ice(10), age=7).icans
    assert result is not None and result.grade is None
    assert result.missing[0].startswith("CAPD score")


def test_capd_bands() -> None:
    assert [capd_grade(s) for s in (0, 1, 8, 9, 32)] == [0, 1, 1, 3, 3]


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        pytest.param([], 0, id="form-10-of-10->0"),
        pytest.param(["ice-writing"], 1, id="form-9->1"),
        pytest.param(ICE_ITEMS[:4], 2, id="form-6-disoriented->2"),
        pytest.param(ICE_ITEMS[:8], 3, id="form-2->3"),
    ],
)
def test_ice_questionnaire_items_are_summed(grading: Grading, failed: list[str], expected: int) -> None:
    form = ice_form({k: k not in failed for k in ICE_ITEMS})
    result = grade(grading, form).icans
    assert result is not None
    assert result.grade == expected
    assert result.components["score"] == 10 - len(failed)
    assert reference(form) in result.references


def test_incomplete_ice_form_is_not_a_score(grading: Grading) -> None:
    form = ice_form({k: True for k in ICE_ITEMS[:9]})
    result = grade(grading, form).icans
    assert result is not None and result.grade is None
    # Named as the newest attempt (issue 16), no longer only listed as "not evidence".
    assert any("incomplete" in m for m in result.missing) and reference(form) in result.references


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param([], id="nothing-charted"),
        pytest.param([ice(10, hours_before=30)], id="ICE-older-than-24h"),
        pytest.param([obs("GLASGOW", system=LOINC)], id="unrelated-code"),
    ],
)
def test_missing_assessment_is_indeterminate_never_zero(grading: Grading, resources: list[Resource]) -> None:
    result = grade(grading, *resources).icans
    assert result is not None
    assert result.grade is None and result.grade_at_least is None
    assert result.missing[0].startswith("ICE score")


def test_domain_without_ice_gives_at_least(grading: Grading) -> None:
    result = grade(grading, loc("LOC-VOICE")).icans
    assert result is not None and result.grade is None and result.grade_at_least == 2


def test_grade_4_domain_needs_no_ice(grading: Grading) -> None:
    result = grade(grading, obs("SEIZURE", answer="SZ-PROLONGED")).icans
    assert result is not None and result.grade == 4


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled", "registered"])
def test_entered_in_error_is_not_evidence(grading: Grading, status: str) -> None:
    bad = ice(2, status=status)
    result = grade(grading, ice(10, hours_before=3), bad).icans
    assert result is not None and result.grade == 0
    assert reference(bad) in {n.reference for n in result.not_evidence}


def test_entered_in_error_form_is_not_evidence(grading: Grading) -> None:
    form = ice_form({k: False for k in ICE_ITEMS}, status="entered-in-error")
    result = grade(grading, form).icans
    assert result is not None and result.grade is None
    assert reference(form) in {n.reference for n in result.not_evidence}


def test_gcs_is_shown_but_never_graded(grading: Grading) -> None:
    gcs = obs("9269-2", system=LOINC, integer=13)
    result = grade(grading, ice(10), gcs).icans
    assert result is not None and result.grade == 0
    assert reference(gcs) in result.references


# -- issue 16: missing, stale, incomplete and superseded assessments never read as normal ---


@pytest.mark.parametrize(
    ("resources", "age", "expected", "says"),
    [
        pytest.param(
            [ice(0)], 45, (None, 3), "level of consciousness not charted", id="ICE-0-no-consciousness->at-least-3"
        ),
        pytest.param([ice(0), loc("LOC-ALERT")], 45, (3, None), "", id="ICE-0-awake->3"),
        pytest.param([capd(4)], 7, (None, 1), "CAPD 1-8", id="child-CAPD-4-no-consciousness->at-least-1"),
        pytest.param([capd(4), loc("LOC-VOICE")], 7, (2, None), "", id="child-CAPD-4+voice->2"),
        pytest.param(
            [ice(10, hours_before=6), ice_form({k: True for k in ICE_ITEMS[:6]})],
            45,
            (None, None),
            "incomplete",
            id="incomplete-form-newer-than-ICE-10->indeterminate",
        ),
        pytest.param(
            [ice(10), obs("9269-2", system=LOINC, integer=6)],
            45,
            (None, None),
            "GCS 6",
            id="ICE-10+GCS-6->indeterminate",
        ),
        pytest.param(
            [ice(7), obs("9269-2", system=LOINC, integer=8)], 45, (None, 1), "GCS 8", id="ICE-7+GCS-8->at-least-1"
        ),
        pytest.param(
            [obs("LOC", answer="LOC-UNAROUSABLE", hours_before=20), ice(9)],
            45,
            (1, None),
            "",
            id="unarousable-20h-ago+ICE-9-now->superseded-1",
        ),
        pytest.param(
            [ice(9, hours_before=3), obs("LOC", answer="LOC-UNAROUSABLE", hours_before=1)],
            45,
            (4, None),
            "",
            id="ICE-9-then-unarousable-now->4",
        ),
    ],
)
def test_missing_or_stale_neurologic_data_never_normal(
    grading: Grading, resources: list[Resource], age: int, expected: tuple[int | None, int | None], says: str
) -> None:
    """``expected``: (the grade, or None when indeterminate; the grade it is at least)."""
    result = grade(grading, *resources, age=age).icans
    assert result is not None
    assert (result.grade, result.grade_at_least) == expected
    assert says in " ".join(result.missing)


@pytest.mark.parametrize(
    ("resources", "overdue", "grade_now"),
    [
        pytest.param([ice(2, hours_before=26)], True, None, id="ICE-2-26h-ago->overdue-indeterminate"),
        pytest.param([ice(10, hours_before=13)], True, 0, id="ICE-10-13h-ago->overdue-graded-0"),
        pytest.param([ice(10, hours_before=11)], False, 0, id="ICE-10-11h-ago->not-overdue"),
        pytest.param([ice(10, hours_before=8 * 24)], False, None, id="last-ICE-8-days-ago->not-followed"),
        pytest.param(
            [obs("SEIZURE", answer="SZ-RAPID", hours_before=48)], True, None, id="seizure-2-days-ago->followed-overdue"
        ),
        pytest.param([], False, None, id="never-assessed->not-followed"),
    ],
)
def test_assessment_overdue_when_icans_is_followed(
    grading: Grading, resources: list[Resource], overdue: bool, grade_now: int | None
) -> None:
    result = grade(grading, *resources).icans
    assert result is not None
    assert result.grade == grade_now
    assert (result.components.get("assessment") == "overdue") is overdue
    assert any(a.startswith("assessment overdue") for a in result.alerts) is overdue


def test_icans_disabled_leaves_crs_alone() -> None:
    plain = Grading(load_terminology(), load_units())
    evaluation = grade(plain, ice(2))
    assert evaluation.icans is None


# -- API --------------------------------------------------------------------------------------


def _bundle(*resources: Resource) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


@pytest.fixture(scope="module")
def client() -> Any:
    with TestClient(create_app(Settings())) as c:
        yield c


@pytest.mark.parametrize(
    ("resources", "indicator", "orders"),
    [
        pytest.param([ice(8)], "info", set(), id="grade-1->info"),
        pytest.param([ice(5)], "warning", set(), id="grade-2->warning"),
        pytest.param([ice(1)], "critical", {"dexamethasone"}, id="grade-3->critical+dexamethasone"),
        pytest.param(
            # one regimen per situation (issue 16 item 4): methylprednisolone only, not also dexamethasone
            [ice(0), loc("LOC-UNAROUSABLE")],
            "critical",
            {"methylprednisolone"},
            id="grade-4",
        ),
    ],
)
def test_icans_card_through_the_api(
    client: TestClient, resources: list[Resource], indicator: str, orders: set[str]
) -> None:
    request = patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(_bundle(patient(45), *resources)), at=when(0))
    response = client.post("/cds-services/crs-grade", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert not empty_values(body)
    cards = [c for c in body["cards"] if c["source"]["topic"]["code"] == "icans-grade"]
    assert len(cards) == 1
    card = cards[0]
    check_card(card)
    assert card["indicator"] == indicator
    (result,) = card["extension"]["crs-cds-hooks.grading"]
    assert result["system"] == "ASTCT-2019-ICANS"
    meds = {
        a["resource"]["medicationCodeableConcept"]["text"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        if a["resource"]["resourceType"] == "MedicationRequest"
    }
    assert meds == orders


def test_no_icans_card_without_assessment_and_old_clients_still_work(client: TestClient) -> None:
    prefetch = prefetch_from_bundle(_bundle(patient(45)))
    del prefetch["icansAssessments"], prefetch["iceQuestionnaires"]
    response = client.post("/cds-services/crs-grade", json=patient_view(PATIENT_ID, prefetch=prefetch, at=when(0)))
    assert response.status_code == 200, response.text
    assert all(c["source"]["topic"]["code"] != "icans-grade" for c in response.json()["cards"])


@pytest.mark.parametrize(
    ("resources", "indicator", "summary"),
    [
        pytest.param(
            [ice(2, hours_before=26)], "warning", "ICANS assessment overdue", id="ICE-2-26h-ago->overdue-card"
        ),
        pytest.param([ice(10)], None, "", id="ICE-10-now->no-card"),
        pytest.param(
            [ice(10), obs("9269-2", system=LOINC, integer=6)], "info", "indeterminate", id="ICE-10+GCS-6->card"
        ),
        pytest.param([ice(0)], "critical", "at least 3", id="ICE-0-alone->critical-at-least-3"),
    ],
)
def test_icans_gaps_give_a_card(
    client: TestClient, resources: list[Resource], indicator: str | None, summary: str
) -> None:
    request = patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(_bundle(patient(45), *resources)), at=when(0))
    response = client.post("/cds-services/crs-grade", json=request)
    assert response.status_code == 200, response.text
    cards = [c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "icans-grade"]
    if indicator is None:
        assert cards == []
        return
    (card,) = cards
    check_card(card)
    assert card["indicator"] == indicator
    assert summary in card["summary"]


NOREPINEPHRINE = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7512"}]}


@pytest.mark.parametrize(
    ("crs", "icans", "kept", "on_card"),
    [
        pytest.param(
            "grade-3",
            [ice(0), loc("LOC-UNAROUSABLE")],
            "methylprednisolone",
            "icans-grade",
            id="CRS-3+ICANS-4->methylprednisolone-once-on-ICANS-card",
        ),
        pytest.param(
            "grade-3", [ice(1)], "dexamethasone", "crs-grade", id="CRS-3+ICANS-3->dexamethasone-once-on-CRS-card"
        ),
        pytest.param(
            "grade-4",
            [ice(1)],
            "methylprednisolone",
            "crs-grade",
            id="CRS-4+ICANS-3->methylprednisolone-once-on-CRS-card",
        ),
    ],
)
def test_one_steroid_regimen_across_crs_and_icans_cards(
    client: TestClient, crs: str, icans: list[Resource], kept: str, on_card: str
) -> None:
    pressors = [medication_administration("ne1", NOREPINEPHRINE, status="in-progress", period=(3, None))]
    if crs == "grade-4":
        pressors.append(
            medication_administration("ep1", rxnorm("3992", "epinephrine"), status="in-progress", period=(2, None))
        )
    record = [patient(45), temperature("t1", 39.0), *pressors, *icans]
    request = patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(_bundle(*record)), at=when(0))
    response = client.post("/cds-services/crs-grade", json=request)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    steroids = [
        (card["source"]["topic"]["code"], action["resource"]["medicationCodeableConcept"]["text"])
        for card in cards
        for suggestion in card.get("suggestions", [])
        for action in suggestion["actions"]
        if action.get("resource", {}).get("medicationCodeableConcept", {}).get("text")
        in ("dexamethasone", "methylprednisolone")
    ]
    assert steroids == [(on_card, kept)]
    other = next(
        c
        for c in cards
        if c["source"]["topic"]["code"] not in (on_card,)
        and c["source"]["topic"]["code"] in ("crs-grade", "icans-grade")
    )
    assert "one regimen for CRS and ICANS" in other["detail"]


@pytest.mark.parametrize(
    ("resources", "age"),
    [
        pytest.param([capd(4), loc("LOC-VOICE")], 7, id="child-7y-capd-4-awakens-to-voice"),
        pytest.param([capd(12), loc("LOC-VOICE")], 7, id="child-7y-capd-12->grade-3"),
        pytest.param([ice(0), obs("LOC", answer="LOC-UNAROUSABLE")], 16, id="teenager-16y-grade-4"),
    ],
)
def test_icans_card_shows_no_fixed_adult_steroid_dose_to_a_child(
    grading: Grading, resources: list[Resource], age: int
) -> None:
    """Clinical reference, safety rules: no fixed adult dose in any text for a patient under 18."""
    from cds_hooks.advice.icans_cards import build_icans_cards

    evaluation = grade(grading, *resources, age=age)
    (card,) = build_icans_cards(evaluation)
    text = " ".join([card.summary, card.detail or "", *(s.label for s in card.suggestions or [])])
    assert evaluation.icans is not None and (evaluation.icans.grade or evaluation.icans.grade_at_least or 0) >= 2
    for adult_dose in ("10 mg", "1000 mg", "1 mg/kg", "500 mg"):
        assert adult_dose not in text, text
    assert "per paediatric protocol" in text
