"""Issue 18 item 4: carHLH, HScore and a "possible IEC-HS" flag, and the "consider" card.

Every boundary of the lab components, the components FHIR does not carry named as unknown with
the score as "at least", the IEC-HS flag with no grade, and the card through the HTTP API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cds_hooks.grading.hlh import CARHLH, HSCORE, IEC_HS, flag_iec_hs, score_carhlh, score_hscore
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.record import PatientRecord
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from card_checks import check_card
from fhir_builders import PATIENT_ID, Resource, T, lab, patient, reference, temperature, when
from hook_requests import patient_view, prefetch_from_bundle


def ferritin(value: float, rid: str = "fer", **kw: Any) -> Resource:
    return lab(rid, "2276-4", value, "ng/mL", **kw)


def bilirubin(value: float) -> Resource:
    return lab("bili", "1975-2", value, "mg/dL", reference_range=(0.2, 1.2))


def ast(value: float, **kw: Any) -> Resource:
    return lab("ast", "1920-8", value, "U/L", reference_range=(10, 40), **kw)


def creatinine(value: float) -> Resource:
    return lab("cr", "2160-0", value, "mg/dL", reference_range=(0.6, 1.2))


def read(*resources: Resource) -> PatientRecord:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), *resources]]
    return extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)


# -- carHLH ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "status", "interpretation", "met"),
    [
        pytest.param(
            (ferritin(10_001), bilirubin(3.7), ast(201)), "graded", "met", 2, id="ferritin>10000+bili+ast->met"
        ),
        pytest.param(
            (ferritin(10_000), bilirubin(3.7), ast(201)), "graded", "not met", 2, id="ferritin-10000->not-met"
        ),
        pytest.param((ferritin(10_001), bilirubin(3.6), ast(200)), "indeterminate", None, 0, id="at-the-x-ULN->0-met"),
        pytest.param((ferritin(10_001), creatinine(3.7)), "indeterminate", None, 1, id="one-organ->at-least-1"),
    ],
)
def test_carhlh(resources: tuple[Resource, ...], status: str, interpretation: str | None, met: int) -> None:
    result = score_carhlh(read(*resources), T)
    assert result is not None
    out = result.to_json()
    assert out["system"] == CARHLH and out["status"] == status
    assert out.get("interpretation") == interpretation
    assert out.get("score", out.get("scoreAtLeast")) == met
    if status == "indeterminate":
        assert any("haemophagocytosis" in m for m in out["missing"])


def test_carhlh_needs_ferritin() -> None:
    assert score_carhlh(read(ast(500)), T) is None


# -- HScore ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "component", "points"),
    [
        pytest.param(ferritin(1999), "ferritin", 0, id="ferritin-1999->0"),
        pytest.param(ferritin(2000), "ferritin", 35, id="ferritin-2000->35"),
        pytest.param(ferritin(6000), "ferritin", 35, id="ferritin-6000->35"),
        pytest.param(ferritin(6001), "ferritin", 50, id="ferritin-6001->50"),
        pytest.param(lab("tg", "2571-8", 132.6, "mg/dL"), "triglycerides", 0, id="tg-132.6->0"),
        pytest.param(lab("tg", "2571-8", 132.7, "mg/dL"), "triglycerides", 44, id="tg-132.7->44"),
        pytest.param(lab("tg", "2571-8", 354, "mg/dL"), "triglycerides", 44, id="tg-354->44"),
        pytest.param(lab("tg", "2571-8", 354.1, "mg/dL"), "triglycerides", 64, id="tg-354.1->64"),
        pytest.param(lab("tg", "2571-8", 4.0, "mmol/L"), "triglycerides", 64, id="tg-4-mmol/L->64"),
        pytest.param(lab("fib", "3255-7", 250, "mg/dL"), "fibrinogen", 30, id="fibrinogen-250-mg/dL->30"),
        pytest.param(lab("fib", "3255-7", 2.51, "g/L"), "fibrinogen", 0, id="fibrinogen-2.51-g/L->0"),
        pytest.param(ast(29), "AST", 0, id="ast-29->0"),
        pytest.param(ast(30), "AST", 19, id="ast-30->19"),
        pytest.param(temperature("t", 38.3), "temperature", 0, id="temp-38.3->0"),
        pytest.param(temperature("t", 38.4), "temperature", 33, id="temp-38.4->33"),
        pytest.param(temperature("t", 39.4), "temperature", 33, id="temp-39.4->33"),
        pytest.param(temperature("t", 39.5), "temperature", 49, id="temp-39.5->49"),
    ],
)
def test_hscore_boundaries(resource: Resource, component: str, points: int) -> None:
    base = ferritin(100, rid="fer0") if component != "ferritin" else resource
    extra = () if component == "ferritin" else (resource,)
    result = score_hscore(read(base, *extra), T)
    assert result is not None
    out = result.to_json()
    assert out["system"] == HSCORE and out["components"][component] == points
    # immunosuppression, organomegaly, marrow haemophagocytosis and WBC are never coded: "at least"
    assert out["status"] == "indeterminate" and "score" not in out
    assert out["scoreAtLeast"] <= out["scoreAtMost"]
    assert any("organomegaly" in m for m in out["missing"])


def test_hscore_at_least_169_is_said() -> None:
    # ferritin 50 + TG 64 + fibrinogen 30 + AST 19 + temperature 49 = 212
    result = score_hscore(
        read(
            ferritin(8000),
            lab("tg", "2571-8", 400, "mg/dL"),
            lab("fib", "3255-7", 1.0, "g/L"),
            ast(80),
            temperature("t", 39.8),
        ),
        T,
    )
    assert result is not None
    out = result.to_json()
    assert (out["scoreAtLeast"], out["interpretation"]) == (212, "at or above 169")


# -- IEC-HS flag -------------------------------------------------------------------------------

RISING = (ferritin(3000, rid="fer1", hours_before=48), ferritin(9000, rid="fer2", hours_before=2))


@pytest.mark.parametrize(
    ("resources", "resolving", "named"),
    [
        pytest.param((*RISING, lab("fib", "3255-7", 1.2, "g/L")), True, "low fibrinogen", id="rising+low-fib->flag"),
        pytest.param(
            (*RISING, lab("p1", "777-3", 120, "10*9/L", hours_before=48), lab("p2", "777-3", 60, "10*9/L")),
            True,
            "new cytopenia (platelets)",
            id="rising+new-thrombocytopenia->flag",
        ),
        pytest.param((*RISING, ast(130)), True, "transaminitis (AST)", id="rising+ast>3xULN->flag"),
        pytest.param((*RISING, lab("fib", "3255-7", 1.2, "g/L")), False, None, id="crs-not-resolving->no-flag"),
        pytest.param(RISING, True, None, id="rising-alone->no-flag"),
        pytest.param(
            (ferritin(9000, rid="fer1", hours_before=48), ferritin(3000, rid="fer2"), lab("fib", "3255-7", 1.2, "g/L")),
            True,
            None,
            id="falling-ferritin->no-flag",
        ),
    ],
)
def test_iec_hs_flag(resources: tuple[Resource, ...], resolving: bool, named: str | None) -> None:
    result = flag_iec_hs(read(*resources), T, crs_resolving=resolving)
    if named is None:
        assert result is None
        return
    assert result is not None
    out = result.to_json()
    assert out["system"] == IEC_HS and "score" not in out and "grade" not in out
    assert out["interpretation"].startswith("possible IEC-HS")
    assert named in out["components"] and "ferritin rising as CRS resolves" in out["components"]


# -- the card ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def _cards(client: TestClient, resources: list[Resource]) -> list[dict[str, Any]]:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    response = client.post(
        "/cds-services/crs-grade", json=patient_view(PATIENT_ID, prefetch=prefetch_from_bundle(bundle), at=when(0))
    )
    assert response.status_code == 200
    cards: list[dict[str, Any]] = response.json()["cards"]
    for card in cards:
        check_card(card)  # the CDS Hooks 2.0 card rules this service promises
    return cards


def test_consider_card_when_carhlh_met(client: TestClient) -> None:
    cards = _cards(
        client, [patient(45), temperature("t1", 37.0, hours_before=1), ferritin(15_000), bilirubin(4.0), ast(250)]
    )
    (card,) = [c for c in cards if c["summary"].startswith("Consider an HLH-like syndrome")]
    assert card["indicator"] == "warning"
    assert "carHLH criteria met" in card["summary"]
    assert "Not a diagnosis" in card["detail"]
    systems = {r["system"]: r for r in card["extension"]["crs-cds-hooks.grading"]}
    assert systems[CARHLH]["interpretation"] == "met"
    assert {e["reference"] for e in systems[CARHLH]["evidence"]} >= {"Observation/fer", "Observation/bili"}


def test_no_consider_card_when_nothing_is_met(client: TestClient) -> None:
    cards = _cards(client, [patient(45), temperature("t1", 37.0, hours_before=1), ferritin(800)])
    assert not [c for c in cards if c["summary"].startswith("Consider an HLH-like syndrome")]
