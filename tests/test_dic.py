"""Issue 18 item 3: the ISTH overt DIC score (Taylor 2001) beside the grades.

Every boundary of every component, each missing component ("at least", never "not overt"),
PT against the Observation's reference range or a configured normal, INR only, D-dimer bands,
and the score on the CRS card through the HTTP API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cds_hooks.grading.dic import SYSTEM, DicConfig, score_dic
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import PATIENT_ID, Resource, T, lab, patient, reference, temperature, when
from hook_requests import patient_view, prefetch_from_bundle


def platelets(value: float, **kw: Any) -> Resource:
    return lab("plt", "777-3", value, "10*9/L", **kw)


def fibrinogen(value: float, unit: str = "g/L", **kw: Any) -> Resource:
    return lab("fib", "3255-7", value, unit, **kw)


def pt(value: float, normal_high: float | None = 13.0, **kw: Any) -> Resource:
    return lab("pt", "5902-2", value, "s", reference_range=None if normal_high is None else (None, normal_high), **kw)


def d_dimer(value_mg_l: float, uln: float | None = 0.5, **kw: Any) -> Resource:
    return lab("dd", "48065-7", value_mg_l, "mg/L", reference_range=None if uln is None else (None, uln), **kw)


NORMAL = (platelets(250), fibrinogen(3.0), pt(12.0), d_dimer(0.4))
"""Every component charted and normal: score 0."""


def score(*resources: Resource, config: DicConfig | None = None) -> dict[str, Any]:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), *resources]]
    record = extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)
    result = score_dic(record, T, config)
    assert result is not None
    out = result.to_json()
    assert out["system"] == SYSTEM
    return out


def replaced(*changes: Resource) -> tuple[Resource, ...]:
    """NORMAL with the components of the same id replaced."""
    ids = {c["id"] for c in changes}
    return (*(r for r in NORMAL if r["id"] not in ids), *changes)


@pytest.mark.parametrize(
    ("changes", "component", "points"),
    [
        pytest.param((platelets(100),), "platelets", 0, id="platelets-100->0"),
        pytest.param((platelets(99.9),), "platelets", 1, id="platelets-99.9->1"),
        pytest.param((platelets(50),), "platelets", 1, id="platelets-50->1"),
        pytest.param((platelets(49.9),), "platelets", 2, id="platelets-49.9->2"),
        pytest.param((fibrinogen(1.0),), "fibrinogen", 0, id="fibrinogen-1.0-g/L->0"),
        pytest.param((fibrinogen(0.99),), "fibrinogen", 1, id="fibrinogen-0.99-g/L->1"),
        pytest.param((fibrinogen(99, "mg/dL"),), "fibrinogen", 1, id="fibrinogen-99-mg/dL->1"),
        pytest.param((fibrinogen(100, "mg/dL"),), "fibrinogen", 0, id="fibrinogen-100-mg/dL->0"),
        pytest.param((pt(15.9),), "prothrombin_time", 0, id="pt+2.9s->0"),
        pytest.param((pt(16.0),), "prothrombin_time", 1, id="pt+3s->1"),
        pytest.param((pt(18.9),), "prothrombin_time", 1, id="pt+5.9s->1"),
        pytest.param((pt(19.0),), "prothrombin_time", 2, id="pt+6s->2"),
        pytest.param((pt(17.4, normal_high=14.4),), "prothrombin_time", 1, id="pt-17.4-vs-14.4->+3s->1"),
        pytest.param((d_dimer(1.2, uln=0.6),), "fibrin_marker", 2, id="d-dimer-1.2/0.6-exactly-2xULN->2"),
        pytest.param((d_dimer(0.99),), "fibrin_marker", 0, id="d-dimer-1.98xULN->0"),
        pytest.param((d_dimer(1.0),), "fibrin_marker", 2, id="d-dimer-2xULN->2"),
        pytest.param((d_dimer(2.0),), "fibrin_marker", 2, id="d-dimer-4xULN->2"),
        pytest.param((d_dimer(2.01),), "fibrin_marker", 3, id="d-dimer-4.02xULN->3"),
    ],
)
def test_each_component_at_its_boundaries(changes: tuple[Resource, ...], component: str, points: int) -> None:
    out = score(*replaced(*changes))
    assert out["components"][component] == points
    assert out["status"] == "graded" and out["score"] == points
    assert out["interpretation"] == "not overt"


@pytest.mark.parametrize(
    ("resources", "expected_score", "interpretation"),
    [
        pytest.param((platelets(40), d_dimer(1.5), pt(13.5), fibrinogen(2.0)), 4, "not overt", id="4->not-overt"),
        pytest.param((platelets(40), d_dimer(2.5), pt(13.5), fibrinogen(2.0)), 5, "overt", id="5->overt"),
        pytest.param((platelets(40), d_dimer(2.5), pt(20), fibrinogen(0.8)), 8, "overt", id="8-max->overt"),
    ],
)
def test_total_and_interpretation(resources: tuple[Resource, ...], expected_score: int, interpretation: str) -> None:
    out = score(*resources)
    assert (out["status"], out["score"], out["interpretation"]) == ("graded", expected_score, interpretation)
    assert {e["reference"] for e in out["evidence"]} == {
        "Observation/plt",
        "Observation/dd",
        "Observation/pt",
        "Observation/fib",
    }


@pytest.mark.parametrize(
    ("drop", "component", "at_least", "at_most", "interpretation"),
    [
        pytest.param("plt", "platelets", 0, 2, None, id="no-platelets->at-least-0"),
        pytest.param("fib", "fibrinogen", 0, 1, None, id="no-fibrinogen->at-least-0"),
        pytest.param("pt", "prothrombin_time", 0, 2, None, id="no-pt->at-least-0"),
        pytest.param("dd", "fibrin_marker", 0, 3, None, id="no-d-dimer->at-least-0"),
    ],
)
def test_missing_component_is_indeterminate_never_not_overt(
    drop: str, component: str, at_least: int, at_most: int, interpretation: str | None
) -> None:
    out = score(*(r for r in NORMAL if r["id"] != drop))
    assert out["status"] == "indeterminate"
    assert "score" not in out and out["scoreAtLeast"] == at_least and out["scoreAtMost"] == at_most
    assert out["components"][component] == "unknown"
    assert out.get("interpretation") == interpretation  # never "not overt"
    assert out["missing"]


def test_proven_overt_with_a_component_missing_says_overt_at_least() -> None:
    out = score(platelets(30), d_dimer(3.0))  # 2 + 3 = 5 already
    assert (out["status"], out["scoreAtLeast"], out["interpretation"]) == ("indeterminate", 5, "overt")


@pytest.mark.parametrize(
    ("resources", "config", "component", "points"),
    [
        pytest.param(
            replaced(pt(16.0, normal_high=None)), DicConfig(), "prothrombin_time", "unknown", id="pt-no-normal->unknown"
        ),
        pytest.param(
            replaced(pt(16.0, normal_high=None)),
            DicConfig(pt_normal_s=13.0),
            "prothrombin_time",
            1,
            id="pt-configured-normal->1",
        ),
        pytest.param(
            replaced(pt(16.0, normal_high=10.0)),
            DicConfig(pt_normal_s=13.0),
            "prothrombin_time",
            2,
            id="pt-range-beats-configured->2",
        ),
        pytest.param(
            replaced(d_dimer(1.5, uln=None)), DicConfig(), "fibrin_marker", "unknown", id="d-dimer-no-uln->unknown"
        ),
        pytest.param(
            replaced(d_dimer(1.5, uln=None)),
            DicConfig(d_dimer_feu_uln_mg_l=0.5),
            "fibrin_marker",
            2,
            id="d-dimer-configured-uln->2",
        ),
        pytest.param(
            replaced(d_dimer(1.5)), DicConfig(d_dimer_moderate_x_uln=3.5), "fibrin_marker", 0, id="d-dimer-band-set->0"
        ),
    ],
)
def test_normals_and_bands(
    resources: tuple[Resource, ...], config: DicConfig, component: str, points: int | str
) -> None:
    out = score(*resources, config=config)
    assert out["components"][component] == points
    assert (out["status"] == "indeterminate") == (points == "unknown")


def inr_only(inr: float) -> tuple[Resource, ...]:
    return (platelets(250), fibrinogen(3.0), d_dimer(0.4), lab("inr", "6301-6", inr, "{INR}"))


@pytest.mark.parametrize(
    ("inr", "config", "points"),
    [
        pytest.param(2.0, DicConfig(), "unknown", id="inr-only-no-conversion->indeterminate"),
        # 12 s x 2.0^(1/1.0) = 24 s: prolonged 12 s -> 2
        pytest.param(2.0, DicConfig(inr_normal_pt_s=12.0, inr_isi=1.0), 2, id="inr-2.0-isi-1->2"),
        # 12 s x 1.3 = 15.6 s: prolonged 3.6 s -> 1
        pytest.param(1.3, DicConfig(inr_normal_pt_s=12.0, inr_isi=1.0), 1, id="inr-1.3-isi-1->1"),
        # 12 s x 1.2 = 14.4 s: prolonged 2.4 s -> 0
        pytest.param(1.2, DicConfig(inr_normal_pt_s=12.0, inr_isi=1.0), 0, id="inr-1.2-isi-1->0"),
    ],
)
def test_inr_only_site(inr: float, config: DicConfig, points: int | str) -> None:
    out = score(*inr_only(inr), config=config)
    assert out["components"]["prothrombin_time"] == points
    if points == "unknown":
        assert any("only INR" in m for m in out["missing"])
        assert out.get("interpretation") is None


def test_stale_component_is_missing() -> None:
    out = score(*replaced(platelets(20, hours_before=25)))
    assert out["components"]["platelets"] == "unknown"


def test_no_coagulation_lab_no_score() -> None:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), lab("crp", "1988-5", 50, "mg/L")]]
    record = extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)
    assert score_dic(record, T) is None


# -- through the HTTP API ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def _bundle(*resources: Resource) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


@pytest.mark.parametrize(
    ("labs", "line", "status"),
    [
        pytest.param(
            (platelets(40), d_dimer(2.5), pt(13.5), fibrinogen(2.0)),
            "ISTH overt DIC score: 5** (overt)",
            "graded",
            id="grade-1+overt-dic",
        ),
        pytest.param(
            (platelets(40), d_dimer(1.5)),
            "ISTH overt DIC score: indeterminate, at least 4**: not every component is charted",
            "indeterminate",
            id="grade-1+dic-missing-pt-fibrinogen",
        ),
    ],
)
def test_dic_score_on_the_crs_card(client: TestClient, labs: tuple[Resource, ...], line: str, status: str) -> None:
    bundle = _bundle(patient(45), temperature("t1", 38.9, hours_before=1), *labs)
    request = patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(bundle), at=when(0))
    response = client.post("/cds-services/crs-grade", json=request)
    assert response.status_code == 200
    (card,) = [c for c in response.json()["cards"] if "CRS" in c["summary"]]
    results = card["extension"]["crs-cds-hooks.grading"]
    assert results[0]["system"] == "ASTCT-2019"  # the grade first, the score beside it
    dic = next(r for r in results if r["system"] == SYSTEM)
    assert dic["status"] == status
    assert line in card["detail"]
    assert "not overt" not in card["detail"]


@pytest.mark.parametrize(
    ("overrides", "pt_component"),
    [
        pytest.param({}, "unknown", id="no-configured-normal->pt-unknown"),
        pytest.param({"dic_pt_normal_s": 13.0}, 1, id="CRS_CDS_DIC_PT_NORMAL_S=13->pt-16s-scores-1"),
    ],
)
def test_site_settings_reach_the_score(overrides: dict[str, float], pt_component: int | str) -> None:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    labs = (platelets(40), d_dimer(1.5), pt(16.0, normal_high=None), fibrinogen(2.0))
    bundle = _bundle(patient(45), temperature("t1", 38.9, hours_before=1), *labs)
    request = patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(bundle), at=when(0))
    with TestClient(create_app(settings)) as local:
        response = local.post("/cds-services/crs-grade", json=request)
    assert response.status_code == 200
    (card,) = [c for c in response.json()["cards"] if "CRS" in c["summary"]]
    dic = next(r for r in card["extension"]["crs-cds-hooks.grading"] if r["system"] == SYSTEM)
    assert dic["components"]["prothrombin_time"] == pt_component


def test_labs_off_leaves_no_lab_key_and_no_score() -> None:
    with TestClient(create_app(Settings(labs=False))) as local:
        services = {s["id"]: s for s in local.get("/cds-services").json()["services"]}
        assert "labResults" not in services["crs-grade"]["prefetch"]
        bundle = _bundle(patient(45), temperature("t1", 38.9, hours_before=1), platelets(40))
        request = patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(bundle), at=when(0))
        (card,) = local.post("/cds-services/crs-grade", json=request).json()["cards"]
    assert all(r["system"] != SYSTEM for r in card["extension"]["crs-cds-hooks.grading"])
