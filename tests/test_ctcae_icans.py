"""CTCAE v6.0 ICANS beside ASTCT 2019 ICANS: every grade boundary, grade 4 read as for CRS, the NCI
text as implemented, and the system chosen through settings, discovery and the ICANS card.

CTCAE v6.0's grade 4 is "life-threatening consequences; urgent intervention indicated": a finding
that is itself such an emergency is 4 (unarousable, status epilepticus, raised intracranial
pressure with diffuse oedema, posturing or Cushing's triad); ASTCT's other grade-4 findings are
"at least 3" (as two pressors are for CTCAE CRS).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.grading import ICANS_SYSTEMS, GradeResult
from cds_hooks.grading.icans import CTCAE_V6_ROWS
from cds_hooks.pipeline.evaluate import Grading, IcansOptions, evaluate
from cds_hooks.reading.neuro import load_ice_questionnaire
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import PATIENT_ID, Resource, T, concept, patient, reference, when
from hook_requests import patient_view

ROOT = Path(__file__).resolve().parents[1]
ICANS = "http://hospital.example.org/fhir/CodeSystem/icans"
SYSTEMS = ("ASTCT-2019", "ASTCT-2019-ICANS", "CTCAE-6.0-ICANS")

_ids = iter(range(1, 10_000))


def obs(code: str, **value: Any) -> Resource:
    """An ICANS Observation charted an hour before T: ``integer=``, ``answer=`` or ``boolean=``."""
    resource: Resource = {
        "resourceType": "Observation",
        "id": f"ctcae-neuro-{next(_ids)}",
        "status": "final",
        "code": concept(ICANS, code),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when(1.0),
    }
    if "integer" in value:
        resource["valueInteger"] = value["integer"]
    if "answer" in value:
        resource["valueCodeableConcept"] = concept(ICANS, value["answer"])
    if "boolean" in value:
        resource["valueBoolean"] = value["boolean"]
    return resource


def ice(score: int) -> Resource:
    return obs("ICE-TOTAL", integer=score)


def capd(score: int) -> Resource:
    return obs("CAPD-TOTAL", integer=score)


def loc(answer: str) -> Resource:
    return obs("LOC", answer=answer)


@pytest.fixture(scope="module")
def grading() -> Grading:
    return Grading(load_terminology(), load_units(), systems=SYSTEMS, icans=IcansOptions(load_ice_questionnaire()))


def icans_results(grading: Grading, resources: list[Resource], *, age: int = 45) -> dict[str, GradeResult]:
    everything = [patient(age), *resources]
    sourced = [SourcedResource(r, reference(r)) for r in everything]
    evaluation = evaluate(sourced, patient_id=PATIENT_ID, at=T, grading=grading)
    assert evaluation.icans is not None and evaluation.icans.system == "ASTCT-2019-ICANS"
    return {r.system: r for r in evaluation.icans_results}


def outcome(result: GradeResult) -> int | str:
    """The grade, or ``>=n`` when indeterminate with a proven minimum, or ``?``."""
    if result.grade is not None:
        return result.grade
    return f">={result.grade_at_least}" if result.grade_at_least else "?"


# (resources, age, ASTCT-2019-ICANS, CTCAE-6.0-ICANS)
CASES: list[Any] = [
    # ICE bands: the same in both (grade 0/1, 1/2, 2/3 boundaries)
    pytest.param([ice(10)], 45, 0, 0, id="ICE-10->0"),
    pytest.param([ice(9)], 45, 1, 1, id="ICE-9->1"),
    pytest.param([ice(7)], 45, 1, 1, id="ICE-7->1"),
    pytest.param([ice(6)], 45, 2, 2, id="ICE-6->2"),
    pytest.param([ice(3)], 45, 2, 2, id="ICE-3->2"),
    pytest.param([ice(2)], 45, 3, 3, id="ICE-2->3"),
    pytest.param([ice(0), loc("LOC-ALERT")], 45, 3, 3, id="ICE-0-awake->3"),
    pytest.param([ice(0)], 45, ">=3", ">=3", id="ICE-0-consciousness-not-charted->at-least-3"),
    # consciousness (the CAPD rows' wording, read at every age as ASTCT)
    pytest.param([ice(10), loc("LOC-SPONTANEOUS")], 45, 1, 1, id="awakens-spontaneously->1"),
    pytest.param([ice(10), loc("LOC-VOICE")], 45, 2, 2, id="awakens-to-voice->2"),
    pytest.param([ice(10), loc("LOC-TACTILE")], 45, 3, 3, id="awakens-only-to-touch->3"),
    # children under 12: CAPD
    pytest.param([capd(0)], 7, 0, 0, id="child-CAPD-0->0"),
    pytest.param([capd(1), loc("LOC-SPONTANEOUS")], 7, 1, 1, id="child-CAPD-1+spontaneously->1"),
    pytest.param([capd(8), loc("LOC-VOICE")], 7, 2, 2, id="child-CAPD-8+voice->2"),
    pytest.param([capd(9), loc("LOC-TACTILE")], 7, 3, 3, id="child-CAPD-9+touch->3"),
    # severe findings ASTCT grades 3: CTCAE "severe symptoms" 3
    pytest.param([ice(10), obs("SEIZURE", answer="SZ-RAPID")], 45, 3, 3, id="seizure-rapidly-resolving->3"),
    pytest.param([ice(10), obs("ICP-EDEMA", answer="EDEMA-FOCAL")], 45, 3, 3, id="focal-oedema->3"),
    # grade 4: life-threatening emergencies in themselves
    pytest.param([ice(0), loc("LOC-UNAROUSABLE")], 45, 4, 4, id="unarousable->4"),
    pytest.param([ice(10), obs("SEIZURE", answer="SZ-PROLONGED")], 45, 4, 4, id="seizure-over-5-min->4"),
    pytest.param([ice(10), obs("SEIZURE", answer="SZ-REPETITIVE")], 45, 4, 4, id="repetitive-seizures->4"),
    pytest.param([ice(10), obs("ICP-EDEMA", answer="EDEMA-DIFFUSE")], 45, 4, 4, id="diffuse-oedema->4"),
    pytest.param([ice(10), obs("ICP-EDEMA", answer="POSTURING")], 45, 4, 4, id="posturing->4"),
    pytest.param([ice(10), obs("ICP-EDEMA", answer="CUSHING-TRIAD")], 45, 4, 4, id="cushing-triad->4"),
    # grade 4 not defined by CTCAE for these: at least 3, indeterminate
    pytest.param([ice(10), obs("MOTOR", answer="MOTOR-DEEP-FOCAL")], 45, 4, ">=3", id="hemiparesis->ctcae-at-least-3"),
    pytest.param([ice(10), obs("MOTOR", boolean=True)], 45, 4, ">=3", id="motor-weakness-yes->ctcae-at-least-3"),
    pytest.param([ice(10), obs("ICP-EDEMA", answer="CN6-PALSY")], 45, 4, ">=3", id="cn-vi-palsy->ctcae-at-least-3"),
    pytest.param([ice(10), obs("ICP-EDEMA", answer="PAPILLOEDEMA")], 45, 4, ">=3", id="papilloedema->ctcae-at-least-3"),
    pytest.param(
        [ice(2), obs("MOTOR", answer="MOTOR-DEEP-FOCAL"), loc("LOC-UNAROUSABLE")],
        45,
        4,
        4,
        id="hemiparesis+unarousable->4-decided",
    ),
    # missing is not normal: no score -> indeterminate in both
    pytest.param([loc("LOC-ALERT")], 45, "?", "?", id="no-ICE-score->indeterminate"),
    pytest.param([loc("LOC-VOICE")], 45, ">=2", ">=2", id="no-ICE+voice->at-least-2"),
    pytest.param([ice(10), obs("SEIZURE", boolean=True)], 45, ">=3", ">=3", id="seizure-without-type->at-least-3"),
]


@pytest.mark.parametrize(("resources", "age", "astct", "ctcae"), CASES)
def test_ctcae_v6_icans_beside_astct(
    grading: Grading, resources: list[Resource], age: int, astct: int | str, ctcae: int | str
) -> None:
    results = icans_results(grading, resources, age=age)
    assert list(results) == ["ASTCT-2019-ICANS", "CTCAE-6.0-ICANS"]
    assert (outcome(results["ASTCT-2019-ICANS"]), outcome(results["CTCAE-6.0-ICANS"])) == (astct, ctcae)


def test_undefined_grade_4_names_the_ctcae_wording(grading: Grading) -> None:
    result = icans_results(grading, [ice(10), obs("MOTOR", answer="MOTOR-DEEP-FOCAL")])["CTCAE-6.0-ICANS"]
    assert any("life-threatening consequences; urgent intervention indicated" in m for m in result.missing)
    assert "ctcaeGrade4" in result.choices
    assert "v6.0" in result.citation


def test_only_astct_icans_without_the_choice() -> None:
    grading = Grading(load_terminology(), load_units(), icans=IcansOptions(load_ice_questionnaire()))
    sourced = [SourcedResource(r, reference(r)) for r in (patient(45), ice(5))]
    evaluation = evaluate(sourced, patient_id=PATIENT_ID, at=T, grading=grading)
    assert [r.system for r in evaluation.icans_results] == ["ASTCT-2019-ICANS"]
    assert [r.system for r in evaluation.results] == ["ASTCT-2019"]


def test_icans_systems_are_not_crs_results(grading: Grading) -> None:
    sourced = [SourcedResource(r, reference(r)) for r in (patient(45), ice(5))]
    evaluation = evaluate(sourced, patient_id=PATIENT_ID, at=T, grading=grading)
    assert [r.system for r in evaluation.results] == ["ASTCT-2019"]


def test_rows_are_the_nci_text() -> None:
    text = (ROOT / "docs" / "reference" / "ctcae.md").read_text(encoding="utf-8")
    section = text.split("## Immune effector cell-associated neurotoxicity syndrome: CTCAE v6.0", 1)[1]
    section = section.split("\n## ", 1)[0]
    flat = re.sub(r"\s*\n\s*", " ", section)
    rows = {int(n): row for n, row in re.findall(r"Grade (\d): \"(.*?)\"", flat)}
    assert rows == dict(CTCAE_V6_ROWS)


# -- settings, discovery, the ICANS card -------------------------------------------------------


@pytest.mark.parametrize(
    ("systems", "ok"),
    [
        pytest.param("ASTCT-2019,CTCAE-6.0-ICANS", True, id="ctcae-icans-accepted"),
        pytest.param("ASTCT-2019,ASTCT-2019-ICANS", True, id="astct-icans-accepted"),
        pytest.param("ASTCT-2019,CTCAE-6.0,CTCAE-6.0-ICANS", True, id="crs-and-icans-v6"),
        pytest.param("ASTCT-2019,CTCAE-5.0-ICANS", False, id="no-v5-icans-term"),
    ],
)
def test_systems_setting_accepts_icans_systems(systems: str, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRS_CDS_SYSTEMS", systems)
    if ok:
        assert Settings().systems == systems.split(",")
    else:
        with pytest.raises(ValueError, match="unknown grading systems"):
            Settings()
    assert set(ICANS_SYSTEMS) == {"ASTCT-2019-ICANS", "CTCAE-6.0-ICANS"}


def _bundle(resources: list[Resource]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def test_discovery_and_icans_card_list_ctcae_v6() -> None:
    settings = Settings(systems=["ASTCT-2019", "CTCAE-6.0", "CTCAE-6.0-ICANS"])
    resources = [patient(45), obs("ICE-TOTAL", integer=2), obs("MOTOR", answer="MOTOR-DEEP-FOCAL")]
    empty_keys = ("observations", "oxygenDevices", "vitalSigns", "medicationAdministrations", "procedures")
    prefetch: dict[str, Any] = {key: _bundle([]) for key in (*empty_keys, "conditions", "iceQuestionnaires")}
    prefetch.update(patient=resources[0], icansAssessments=_bundle(resources[1:]))
    request = patient_view(PATIENT_ID, prefetch=prefetch, at=T.isoformat())
    with TestClient(create_app(settings)) as client:
        discovery = client.get("/cds-services").json()
        response = client.post("/cds-services/crs-grade", json=request)
    service = next(s for s in discovery["services"] if s["id"] == "crs-grade")
    assert "ASTCT-2019-ICANS, CTCAE-6.0-ICANS" in service["description"]
    assert "(ASTCT-2019, CTCAE-6.0)" in service["description"]
    assert service["extension"]["crs-cds-hooks.icans-systems"] == ["ASTCT-2019-ICANS", "CTCAE-6.0-ICANS"]
    assert response.status_code == 200, response.text
    (card,) = [c for c in response.json()["cards"] if c["source"].get("topic", {}).get("code") == "icans-grade"]
    results = card["extension"]["crs-cds-hooks.grading"]
    assert [(r["system"], r.get("grade"), r.get("gradeAtLeast")) for r in results] == [
        ("ASTCT-2019-ICANS", 4, None),
        ("CTCAE-6.0-ICANS", None, 3),
    ]
    assert "CTCAE-6.0-ICANS: indeterminate (at least 3)" in card["detail"]
