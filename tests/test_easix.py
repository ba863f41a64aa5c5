"""Issue 18 item 6: m-EASIX and EASIX before a CAR-T infusion, on the order card.

Values from the labs charted before the order, the sources' AUC and EASIX's 4.67 cut-off
(Korell 2022) with the weaker population result (de Boer 2023); a missing lab makes the index
indeterminate, never "below"; never a recommendation to withhold; no card for T-cell engagers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cds_hooks.grading.easix import EASIX, M_EASIX, easix, m_easix, risk_before_infusion
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.record import PatientRecord
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from fhir_builders import PATIENT_ID, Resource, T, lab, patient, reference
from test_order_hooks import AXI_CEL, TECLISTAMAB, call, draft, topic


def ldh(value: float, **kw: Any) -> Resource:
    return lab("ldh", "2532-0", value, "U/L", **kw)


def crp(value: float, unit: str = "mg/L", **kw: Any) -> Resource:
    return lab("crp", "1988-5", value, unit, **kw)


def platelets(value: float, unit: str = "10*9/L", **kw: Any) -> Resource:
    return lab("plt", "777-3", value, unit, **kw)


def creatinine(value: float, unit: str = "mg/dL", **kw: Any) -> Resource:
    return lab("cr", "2160-0", value, unit, **kw)


def read(*resources: Resource) -> PatientRecord:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), *resources]]
    return extract_record(sourced, load_terminology(), load_units(), patient_id=PATIENT_ID)


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        # 300 x 2.0 mg/dL / 150 = 4.0
        pytest.param((ldh(300), crp(20), platelets(150)), 4.0, id="crp-mg/L"),
        pytest.param((ldh(300), crp(2.0, "mg/dL"), platelets(150)), 4.0, id="crp-mg/dL-same-value"),
        pytest.param((ldh(300), crp(20), platelets(150, "10*3/uL")), 4.0, id="platelets-10*3/uL"),
    ],
)
def test_m_easix_value_and_units(resources: tuple[Resource, ...], expected: float) -> None:
    out = m_easix(read(*resources), T).to_json()
    assert (out["system"], out["status"], out["value"]) == (M_EASIX, "graded", expected)
    assert "interpretation" not in out  # no verified cut-off: a value, not a class
    assert any("0.80" in note for note in out["notes"])
    assert any("log2 m-EASIX 2.00" in note for note in out["notes"])


@pytest.mark.parametrize(
    ("creatinine_mg_dl", "interpretation"),
    [
        pytest.param(2.335, "not above 4.67 (Korell 2022)", id="easix-4.67->not-above"),
        pytest.param(2.34, "above 4.67 (Korell 2022)", id="easix-4.68->above"),
    ],
)
def test_easix_korell_cutoff_boundary(creatinine_mg_dl: float, interpretation: str) -> None:
    # 200 U/L x creatinine / 100 = 2 x creatinine
    out = easix(read(ldh(200), creatinine(creatinine_mg_dl), platelets(100)), T).to_json()
    assert (out["system"], out["status"], out["interpretation"]) == (EASIX, "graded", interpretation)
    assert any("0.61-0.62" in note for note in out["notes"])


def test_easix_creatinine_umol_l() -> None:
    out = easix(read(ldh(200), creatinine(176.84, "umol/L"), platelets(100)), T).to_json()
    assert out["value"] == 4.0


@pytest.mark.parametrize(
    ("resources", "missing_m", "missing_e"),
    [
        pytest.param((crp(20), creatinine(1.0), platelets(150)), "LDH", "LDH", id="no-ldh"),
        pytest.param((ldh(300), creatinine(1.0), platelets(150)), "CRP", None, id="no-crp"),
        pytest.param((ldh(300), crp(20), platelets(150)), None, "creatinine", id="no-creatinine"),
        pytest.param((ldh(300), crp(20), creatinine(1.0)), "platelets", "platelets", id="no-platelets"),
        pytest.param(
            (ldh(300), crp(20), creatinine(1.0), platelets(150, hours_before=24 * 8)),
            "platelets",
            "platelets",
            id="platelets-older-than-7-days",
        ),
        pytest.param((ldh(300), crp(20), creatinine(1.0), platelets(0)), "platelets", "platelets", id="platelets-0"),
    ],
)
def test_missing_lab_is_indeterminate_never_below(
    resources: tuple[Resource, ...], missing_m: str | None, missing_e: str | None
) -> None:
    for result, missing in zip(risk_before_infusion(read(*resources), T), (missing_m, missing_e), strict=True):
        out = result.to_json()
        if missing is None:
            assert out["status"] == "graded"
            continue
        assert out["status"] == "indeterminate"
        assert "value" not in out and "interpretation" not in out
        assert any(missing in m for m in out["missing"])


def test_no_risk_lab_no_scores() -> None:
    assert risk_before_infusion(read(lab("fib", "3255-7", 3.0, "g/L")), T) == ()


# -- through the HTTP API ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


RISK_LABS = [ldh(300, hours_before=48), crp(20, hours_before=48), platelets(150), creatinine(2.5)]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_risk_card_on_a_car_t_order(client: TestClient, hook: str) -> None:
    cards = call(client, hook, [patient(45), *RISK_LABS], [draft("cart", AXI_CEL)])
    (card,) = topic(cards, "crs-risk-before-infusion")
    assert card["indicator"] == "info"
    assert card["summary"].startswith("Before axicabtagene ciloleucel: m-EASIX 4, EASIX 5")
    assert "not a recommendation to withhold" in card["detail"]
    assert "above 4.67 (Korell 2022)" in card["detail"]
    results = {r["system"]: r for r in card["extension"]["crs-cds-hooks.grading"]}
    assert results[M_EASIX]["value"] == 4.0 and results[EASIX]["value"] == 5.0
    assert {e["reference"] for e in results[EASIX]["evidence"]} == {
        "Observation/ldh",
        "Observation/cr",
        "Observation/plt",
    }


@pytest.mark.parametrize(
    ("record", "drafts"),
    [
        pytest.param([patient(45), *RISK_LABS], [draft("tec", TECLISTAMAB)], id="t-cell-engager->no-risk-card"),
        pytest.param([patient(45)], [draft("cart", AXI_CEL)], id="car-t-no-labs->no-risk-card"),
    ],
)
def test_no_risk_card(client: TestClient, record: list[Resource], drafts: list[Resource]) -> None:
    cards = call(client, "order-sign", record, drafts)
    assert topic(cards, "crs-risk-before-infusion") == []
    assert cards  # the other order cards are still there
