"""Lee 2014, Penn, MSKCC, CARTOX and CTCAE v5.0 beside ASTCT: every grade boundary and every
disagreement of clinical-reference.md section 4, one FHIR case per row, all systems at once.

Each row builds one patient's resources, grades them through ``evaluate`` with every system, and
checks each system's grade (an int), or "at least n" (indeterminate), or None (indeterminate with
no proven minimum). The public vignettes' expected grades for other systems are checked too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from cds_hooks.cli import main
from cds_hooks.grading import GRADERS, GradeResult
from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import (
    Resource,
    T,
    bp_panel,
    device,
    fio2,
    medication_administration,
    o2_flow,
    patient,
    reference,
    rxnorm,
    temperature,
)
from hook_requests import patient_view, prefetch_from_bundle
from vignette_data import FIXTURES, vignette_bundle
from vignette_fhir import load_public_vignettes

ALL = ("ASTCT-2019", "CTCAE-5.0", "LEE-2014", "PENN", "MSKCC", "CARTOX")
NOREPINEPHRINE = rxnorm("7512", "norepinephrine")
EPINEPHRINE = rxnorm("3992", "epinephrine")
VASOPRESSIN = rxnorm("11149", "vasopressin")

NC = ("336623009", "Oxygen nasal cannula")
HFNC = ("426854004", "High flow oxygen nasal cannula")
NRB = ("427591007", "Nonrebreather oxygen mask")
CPAP = ("706226000", "Continuous positive airway pressure/Bilevel positive airway pressure mask")
VENTILATOR = ("449071006", "Mechanical ventilator")


@pytest.fixture(scope="module")
def grading() -> Grading:
    return Grading(load_terminology(), load_units(), systems=ALL)


@dataclass(frozen=True)
class AtLeast:
    grade: int


Want = int | AtLeast | None


def run(grading: Grading, resources: Sequence[Resource]) -> Evaluation:
    sourced = [SourcedResource(copy.deepcopy(r), reference(r)) for r in resources]
    return evaluate(sourced, patient_id="p1", at=T, grading=grading)


def by_system(evaluation: Evaluation) -> dict[str, GradeResult]:
    return {r.system: r for r in evaluation.results}


def check(result: GradeResult, want: Want) -> None:
    if isinstance(want, AtLeast):
        assert (result.grade, result.grade_at_least) == (None, want.grade), result.missing
    elif want is None:
        assert result.grade is None and result.grade_at_least is None, result.missing
    else:
        assert result.grade == want, (result.grade, result.grade_at_least, result.missing)


def pressor(rid: str, medication: dict[str, Any], *, hours: float = 2.0) -> Resource:
    """An infusion in progress since ``hours`` before T."""
    return medication_administration(rid, medication, status="in-progress", hours_before=hours)


def dev(rid: str, kind: tuple[str, str]) -> Resource:
    return device(rid, kind[0], kind[1])


FEBRILE: list[Resource] = [patient(45), temperature("t", 38.6), bp_panel("bp", 118, 72)]
LOW_BP: list[Resource] = [patient(45), temperature("t", 38.6), bp_panel("bp", 84, 50)]
AFEBRILE: list[Resource] = [patient(45), temperature("t", 37.4), bp_panel("bp", 118, 72)]

# system -> expected, in the order of ALL.
CASES: list[Any] = [
    # grade 0/1 boundary: fever
    pytest.param(AFEBRILE, (0, 0, None, None, None, 0), id="afebrile-nothing->0-or-symptoms-unknown"),
    pytest.param(FEBRILE, (1, 1, 1, 1, 1, 1), id="fever-only->1-everywhere"),
    # hypotension without pressor
    pytest.param(LOW_BP, (2, 2, 2, 3, 1, 2), id="fever+low-bp-no-pressor->penn-3-mskcc-1"),
    # one pressor; MSKCC duration boundary
    pytest.param([*LOW_BP, pressor("ne", NOREPINEPHRINE)], (3, 3, 2, 3, 2, 2), id="one-pressor-2h"),
    pytest.param(
        [*LOW_BP, pressor("ne", NOREPINEPHRINE, hours=23.5)], (3, 3, 2, 3, 2, 2), id="one-pressor-23.5h->mskcc-2"
    ),
    pytest.param(
        [*LOW_BP, pressor("ne", NOREPINEPHRINE, hours=24.0)], (3, 3, 2, 3, 3, 2), id="one-pressor-24h->mskcc-3"
    ),
    # vasopressin: a pressor outside ASTCT
    pytest.param(
        [*LOW_BP, pressor("ne", NOREPINEPHRINE), pressor("vp", VASOPRESSIN)],
        (3, AtLeast(3), 3, 3, 2, 3),
        id="ne+vasopressin->astct-3-lee-cartox-3-ctcae-at-least-3",
    ),
    pytest.param([*LOW_BP, pressor("vp", VASOPRESSIN)], (3, 3, 2, 3, 2, 2), id="vasopressin-alone->one-pressor"),
    pytest.param(
        [*LOW_BP, pressor("ne", NOREPINEPHRINE), pressor("epi", EPINEPHRINE)],
        (4, AtLeast(3), 3, 3, 2, 3),
        id="two-catecholamines->astct-4-others-3",
    ),
    # oxygen: FiO2 40 % vs device
    pytest.param([*FEBRILE, dev("d", NC), o2_flow("f", 2)], (2, 2, 2, 3, 2, 2), id="nc-2L-fio2-29->2-penn-3"),
    pytest.param([*FEBRILE, dev("d", NC), o2_flow("f", 4)], (2, 2, 2, 3, 2, 2), id="nc-4L-fio2-37->2"),
    pytest.param([*FEBRILE, dev("d", NC), o2_flow("f", 5)], (2, 3, 3, 3, 3, 3), id="nc-5L-fio2-41->fio2-systems-3"),
    pytest.param(
        [*FEBRILE, dev("d", HFNC), o2_flow("f", 40), fio2("x", 39)],
        (3, 2, 2, 3, 2, 2),
        id="hfnc-fio2-39->astct-3-fio2-2",
    ),
    pytest.param([*FEBRILE, dev("d", HFNC), o2_flow("f", 40), fio2("x", 40)], (3, 3, 3, 3, 3, 3), id="hfnc-fio2-40->3"),
    pytest.param(
        [*FEBRILE, dev("d", NRB), o2_flow("f", 12)],
        (3, AtLeast(2), AtLeast(2), 3, AtLeast(2), AtLeast(2)),
        id="nrb-no-fio2->fio2-unknown-at-least-2",
    ),
    # CPAP: Penn 3, ASTCT 4; ventilator 4
    pytest.param(
        [*FEBRILE, dev("d", CPAP), fio2("x", 50)],
        (4, AtLeast(3), AtLeast(3), 3, AtLeast(3), AtLeast(3)),
        id="cpap-fio2-50->astct-4-penn-3-others-undefined",
    ),
    pytest.param(
        [*FEBRILE, dev("d", CPAP), fio2("x", 30)],
        (4, AtLeast(2), AtLeast(2), 3, AtLeast(2), AtLeast(2)),
        id="cpap-fio2-30->penn-3",
    ),
    pytest.param([*FEBRILE, dev("d", VENTILATOR), fio2("x", 60)], (4, 4, 4, 4, 4, 4), id="ventilator->4"),
]


@pytest.mark.parametrize(("resources", "expected"), CASES)
def test_each_system_grades_the_case(grading: Grading, resources: list[Resource], expected: tuple[Want, ...]) -> None:
    results = by_system(run(grading, resources))
    for system, want in zip(ALL, expected, strict=True):
        check(results[system], want)


@pytest.mark.parametrize("system", ["LEE-2014", "PENN", "CARTOX"])
def test_organ_toxicity_is_an_assumption_where_the_system_counts_it(grading: Grading, system: str) -> None:
    result = by_system(run(grading, FEBRILE))[system]
    assert any("organ toxicity" in a for a in result.assumptions)


@pytest.mark.parametrize("system", ["ASTCT-2019", "CTCAE-5.0", "MSKCC"])
def test_organ_toxicity_is_not_mentioned_where_it_does_not_count(grading: Grading, system: str) -> None:
    result = by_system(run(grading, FEBRILE))[system]
    assert not any("organ toxicity" in a for a in result.assumptions)


def test_estimated_fio2_is_said_and_cited(grading: Grading) -> None:
    result = by_system(run(grading, [*FEBRILE, dev("d", NC), o2_flow("f", 6)]))["LEE-2014"]
    assert any("21 + 4 x L/min" in a for a in result.assumptions)
    (fio2_evidence,) = [e for e in result.evidence if e.criterion == "oxygen FiO2"]
    assert fio2_evidence.value == 45.0 and fio2_evidence.reference == "Observation/f"


def test_single_pressor_dose_is_an_assumption(grading: Grading) -> None:
    results = by_system(run(grading, [*LOW_BP, pressor("ne", NOREPINEPHRINE)]))
    for system in ("LEE-2014", "CARTOX", "PENN"):
        assert any("dose" in a for a in results[system].assumptions), system


def test_mskcc_worst_grade_sees_the_24h_crossing(grading: Grading) -> None:
    """A pressor run from 30 h to 2 h before T: MSKCC 3 once it passed 24 h, none now."""
    resources = [
        *FEBRILE,
        temperature("t0", 38.8, hours_before=29.0),
        bp_panel("bp0", 82, 48, hours_before=29.0),
        medication_administration("ne", NOREPINEPHRINE, status="completed", period=(30.0, 2.0)),
    ]
    result = by_system(run(grading, resources))["MSKCC"]
    assert result.grade == 1 and result.worst_grade == 3


def test_missing_temperature_is_indeterminate_everywhere(grading: Grading) -> None:
    results = by_system(run(grading, [patient(45), bp_panel("bp", 118, 72)]))
    assert all(r.grade is None for r in results.values())


def test_every_result_cites_its_system(grading: Grading) -> None:
    results = by_system(run(grading, FEBRILE))
    assert set(results) == set(ALL)
    assert all(r.citation for r in results.values())


# -- the public vignettes -------------------------------------------------------------------

VIGNETTE_KEYS: Mapping[str, str] = {
    "astct_crs_grade": "ASTCT-2019",
    "ctcae_v5_crs_grade": "CTCAE-5.0",
    "lee2014_crs_grade": "LEE-2014",
    "penn_crs_grade": "PENN",
    "mskcc_crs_grade": "MSKCC",
    "cartox_crs_grade": "CARTOX",
}
VIGNETTE_ROWS = [
    pytest.param(v["id"], v["evaluation_time"], key, value, id=f"{v['id']}-{VIGNETTE_KEYS[key]}")
    for v in load_public_vignettes()
    for key, value in v["expected"].items()
    if key in VIGNETTE_KEYS
]


@pytest.mark.parametrize(("vignette_id", "at", "key", "expected"), VIGNETTE_ROWS)
def test_public_vignette_grade_per_system(
    grading: Grading, vignette_id: str, at: str, key: str, expected: int | None
) -> None:
    """Expected null means indeterminate: the vignette says the system cannot decide."""
    bundle = vignette_bundle(vignette_id)
    sourced = [SourcedResource(e["resource"], reference(e["resource"])) for e in bundle["entry"]]
    patient_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    moment = parse_instant(at)
    assert not isinstance(moment, str)
    evaluation = evaluate(sourced, patient_id=patient_id, at=moment, grading=grading)
    assert by_system(evaluation)[VIGNETTE_KEYS[key]].grade == expected


# -- the CLI prints one RESULT per system ---------------------------------------------------


def test_cli_grade_prints_one_result_per_system(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "vignettes" / "V01.bundle.json"
    argv = ["grade", str(path), "--systems", ",".join(ALL), "--json", "--at", "2025-03-04T08:00:00Z"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["system"] for r in out["grading"]] == list(ALL)
    assert {r["system"]: r["grade"] for r in out["grading"]} == {
        "ASTCT-2019": 3,
        "CTCAE-5.0": 3,
        "LEE-2014": 2,
        "PENN": 3,
        "MSKCC": 2,
        "CARTOX": 2,
    }


# -- the card: one RESULT per system and the side-by-side table ------------------------------


def test_card_carries_one_result_per_system_and_the_table() -> None:
    bundle = vignette_bundle("V01")
    patient_id = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    request = patient_view(patient_id, prefetch=prefetch_from_bundle(bundle), at="2025-03-04T08:00:00Z")
    with TestClient(create_app(Settings(systems=list(ALL)))) as client:
        response = client.post("/cds-services/crs-grade", json=request)
    assert response.status_code == 200, response.text
    (card,) = [c for c in response.json()["cards"] if "crs-cds-hooks.grading" in c.get("extension", {})]
    results = card["extension"]["crs-cds-hooks.grading"]
    assert [r["system"] for r in results] == list(ALL)
    assert "| System | Grade | Worst |" in card["detail"]
    for system in ALL:
        assert f"| {system} |" in card["detail"]


def test_every_system_is_registered() -> None:
    assert set(ALL) <= set(GRADERS)
