"""Tests for tests/vignette_fhir.py, the vignette -> FHIR R4 Bundle converter.

Why: the grading tests trust these Bundles to be valid FHIR and to say the same clinical thing in
every variant; if the converter were wrong, a grader bug could hide behind a fixture bug. These
tests check FHIR validity (R4B models), internal references, and the facts each variant must
preserve (temperatures, BP, flows, drug codes, ages, prior-CRS timing), and that the checked-in
fixtures are current.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given
from hypothesis import strategies as st

from vignette_fhir import (
    SALT_FORMS,
    VARIANTS,
    celsius_to_fahrenheit,
    load_public_vignettes,
    vignette_to_bundle,
)

VIGNETTES = load_public_vignettes()
BY_ID = {vignette["id"]: vignette for vignette in VIGNETTES}
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CODES_CSV = Path(__file__).resolve().parents[1] / "docs" / "reference" / "codes.csv"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"


def resources(bundle: dict[str, Any], resource_type: str | None = None) -> list[dict[str, Any]]:
    """The entry resources of a bundle, optionally of one type."""
    found = [entry["resource"] for entry in bundle["entry"]]
    if resource_type is None:
        return found
    return [res for res in found if res["resourceType"] == resource_type]


def codes_of(concept: dict[str, Any]) -> set[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept."""
    return {(c.get("system", ""), c.get("code", "")) for c in concept.get("coding", [])}


def by_code(bundle: dict[str, Any], code: str) -> list[dict[str, Any]]:
    """Observations whose code carries ``code``."""
    return [obs for obs in resources(bundle, "Observation") if code in {c for _, c in codes_of(obs["code"])}]


def parse(value: str) -> datetime:
    """Parse a FHIR instant (the converter emits UTC with Z)."""
    return datetime.fromisoformat(value)


def age_on(birth: date, when: date) -> int:
    """Whole years of age on ``when``."""
    return when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))


CASES = [
    pytest.param(vignette, variant, id=f"{vignette['id']}-{variant}") for vignette in VIGNETTES for variant in VARIANTS
]


@pytest.mark.parametrize(("vignette", "variant"), CASES)
def test_bundle_validates_as_r4b(vignette: dict[str, Any], variant: str) -> None:
    """Every vignette x variant is a valid R4B collection Bundle, resource by resource."""
    bundle = vignette_to_bundle(vignette, variant=variant)
    assert bundle["type"] == "collection"
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize(("vignette", "variant"), CASES)
def test_bundle_is_self_consistent(vignette: dict[str, Any], variant: str) -> None:
    """Unique ids, fullUrls that match them, and references that resolve inside the Bundle."""
    bundle = vignette_to_bundle(vignette, variant=variant)
    pid = vignette["id"].lower()
    keys = [(res["resourceType"], res["id"]) for res in resources(bundle)]
    assert len(keys) == len(set(keys))
    for entry in bundle["entry"]:
        res = entry["resource"]
        assert entry["fullUrl"] == f"http://example.org/fhir/{res['resourceType']}/{res['id']}"
        if res["resourceType"] != "Patient":
            assert res["subject"] == {"reference": f"Patient/{pid}"}
        if "medicationReference" in res:
            target = res["medicationReference"]["reference"]
            assert target.startswith("#")
            contained = {item["id"] for item in res.get("contained", [])}
            assert target[1:] in contained
    assert ("Patient", pid) in keys


@pytest.mark.parametrize("vignette", VIGNETTES, ids=[v["id"] for v in VIGNETTES])
def test_variants_keep_the_same_resources_of_record(vignette: dict[str, Any]) -> None:
    """Variants reshape findings but never add or lose a treatment, procedure or condition."""
    counts = set()
    for variant in VARIANTS:
        bundle = vignette_to_bundle(vignette, variant=variant)
        counts.add(
            tuple(
                len(resources(bundle, kind))
                for kind in (
                    "Patient",
                    "Condition",
                    "Procedure",
                    "MedicationAdministration",
                )
            )
        )
    assert len(counts) == 1


@pytest.mark.parametrize("vignette", VIGNETTES, ids=[v["id"] for v in VIGNETTES])
def test_birth_date_gives_age_at_evaluation(vignette: dict[str, Any]) -> None:
    """The grader derives age from birthDate; it must equal the vignette's age_years."""
    (patient,) = resources(vignette_to_bundle(vignette), "Patient")
    evaluated = parse(vignette["evaluation_time"]).date()
    birth = date.fromisoformat(patient["birthDate"])
    assert age_on(birth, evaluated) == vignette["patient"]["age_years"]
    # Not within a month of a birthday, so no time-zone reading can change the age.
    for shift in (-31, 31):
        later = date.fromordinal(evaluated.toordinal() + shift)
        assert age_on(birth, later) == vignette["patient"]["age_years"]


def test_weight_is_recorded_a_day_before_evaluation() -> None:
    """Weight is a kg Observation (29463-7) dated one day before the evaluation time."""
    (weight,) = by_code(vignette_to_bundle(BY_ID["V34"]), "29463-7")
    assert weight["valueQuantity"]["value"] == 110
    assert weight["valueQuantity"]["code"] == "kg"
    assert weight["effectiveDateTime"] == "2025-03-03T08:00:00Z"


@pytest.mark.parametrize(("vignette_id", "fahrenheit"), [("V02", 100.4), ("V03", 100.2), ("V01", 103.1)])
def test_fahrenheit_variant_values(vignette_id: str, fahrenheit: float) -> None:
    """38.0 C must become exactly 100.4 [degF] (the threshold) and 37.9 C 100.2 [degF]."""
    bundle = vignette_to_bundle(BY_ID[vignette_id], variant="fahrenheit")
    (temperature,) = by_code(bundle, "8310-5")
    assert temperature["valueQuantity"] == {
        "value": fahrenheit,
        "unit": "[degF]",
        "system": "http://unitsofmeasure.org",
        "code": "[degF]",
    }


@given(st.integers(min_value=300, max_value=450))
def test_fahrenheit_round_trip_recovers_celsius(tenths: int) -> None:
    """Converting back ((F-32)*5/9, rounded to 0.1 C) gives the original, so grades agree."""
    celsius = tenths / 10
    back = round((celsius_to_fahrenheit(celsius) - 32) * 5 / 9, 1)
    assert back == celsius


def test_standalone_bp_variant() -> None:
    """The panel becomes stand-alone systolic and diastolic Observations with the same values."""
    bundle = vignette_to_bundle(BY_ID["V01"], variant="standalone_bp")
    assert by_code(bundle, "85354-9") == []
    (systolic,) = by_code(bundle, "8480-6")
    (diastolic,) = by_code(bundle, "8462-4")
    assert systolic["valueQuantity"]["value"] == 84
    assert diastolic["valueQuantity"]["value"] == 48
    assert systolic["valueQuantity"]["code"] == "mm[Hg]"


def test_pulse_ox_components_fold_flow_and_fio2() -> None:
    """Flow (in mL/min) and FiO2 become components of the same-time SpO2 Observation."""
    bundle = vignette_to_bundle(BY_ID["V08"], variant="pulse_ox_components")
    (spo2,) = by_code(bundle, "59408-5")
    components = {next(iter(codes_of(c["code"])))[1]: c["valueQuantity"] for c in spo2["component"]}
    assert components["3151-8"]["value"] == 40000
    assert components["3151-8"]["code"] == "mL/min"
    assert components["3150-0"]["value"] == 40
    assert components["3150-0"]["code"] == "%"
    assert spo2["valueQuantity"]["value"] == 94
    assert by_code(bundle, "3151-8") == []
    assert by_code(bundle, "3150-0") == []


def test_pulse_ox_components_keep_lone_flow_standalone() -> None:
    """A flow with no SpO2 at the same time (V23, day before) stays stand-alone, in mL/min."""
    bundle = vignette_to_bundle(BY_ID["V23"], variant="pulse_ox_components")
    (flow,) = by_code(bundle, "3151-8")
    assert flow["effectiveDateTime"] == "2025-03-03T14:00:00Z"
    assert flow["valueQuantity"]["value"] == 2000
    assert flow["valueQuantity"]["code"] == "mL/min"


def test_contained_medication_variant() -> None:
    """Drug codes move to a contained Medication referenced as #med."""
    bundle = vignette_to_bundle(BY_ID["V19"], variant="contained_medication")
    for administration in resources(bundle, "MedicationAdministration"):
        assert "medicationCodeableConcept" not in administration
        assert administration["medicationReference"]["reference"] == "#med"
        assert administration["contained"][0]["resourceType"] == "Medication"
    codes = set().union(*(codes_of(a["contained"][0]["code"]) for a in resources(bundle, "MedicationAdministration")))
    assert {(RXNORM, "7512"), (RXNORM, "11149"), (ATC, "H01BA01")} <= codes


def test_salt_forms_variant_v01() -> None:
    """Norepinephrine is coded as the bitartrate salt (RxNorm 7508) with no ATC coding."""
    bundle = vignette_to_bundle(BY_ID["V01"], variant="salt_forms")
    (norepinephrine,) = [a for a in resources(bundle, "MedicationAdministration") if a["id"] == "v01-med-1"]
    codes = codes_of(norepinephrine["medicationCodeableConcept"])
    assert codes == {(RXNORM, "7508")}
    assert norepinephrine["medicationCodeableConcept"]["text"] == "norepinephrine"


def test_salt_forms_keep_atc_when_it_is_the_only_code() -> None:
    """Acetaminophen in V23 is coded by ATC only; dropping it would leave just a name."""
    bundle = vignette_to_bundle(BY_ID["V23"], variant="salt_forms")
    concepts = [a["medicationCodeableConcept"] for a in resources(bundle, "MedicationAdministration")]
    assert any(codes_of(c) == {(ATC, "N02BE01")} for c in concepts)


def test_salt_forms_are_listed_in_codes_csv() -> None:
    """The salt codes are the verified 'salt PIN' rows of codes.csv, not remembered numbers."""
    with CODES_CSV.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["system"] == RXNORM]
    verified = {row["code"]: row for row in rows if row["status"] == "verified"}
    for ingredient, (salt, display) in SALT_FORMS.items():
        assert ingredient in verified
        assert "salt" in verified[salt]["concept"]
        assert verified[salt]["display"] == display


def test_o2_device_shapes() -> None:
    """Device as a SNOMED value, room air as text, and a CPAP regime as an in-progress Procedure."""
    room_air = vignette_to_bundle(BY_ID["V02"])
    devices = [obs for obs in resources(room_air, "Observation") if obs["code"]["coding"][0]["code"] == "o2-device"]
    assert [d["valueCodeableConcept"] for d in devices] == [{"text": "room air"}]

    cpap = vignette_to_bundle(BY_ID["V11"])
    (procedure,) = resources(cpap, "Procedure")
    assert procedure["status"] == "in-progress"
    assert codes_of(procedure["code"]) == {("http://snomed.info/sct", "47545007")}
    assert procedure["performedPeriod"] == {"start": "2025-03-04T07:00:00Z"}
    assert any(
        ("http://snomed.info/sct", "706226000") in codes_of(obs.get("valueCodeableConcept", {}))
        for obs in resources(cpap, "Observation")
    )


def test_fluid_boluses_are_not_emitted() -> None:
    """IV fluid boluses never change an ASTCT grade, so only regimes become Procedures."""
    for vignette in VIGNETTES:
        regimes = [obs for obs in vignette["observations"] if obs.get("regime")]
        assert len(resources(vignette_to_bundle(vignette), "Procedure")) == len(regimes)
    assert resources(vignette_to_bundle(BY_ID["V17"]), "Procedure") == []


def test_medication_dose_and_rate() -> None:
    """mg doses go to dosage.dose, infusion rates to dosage.rateQuantity; open periods stay open."""
    (norepinephrine,) = [
        a for a in resources(vignette_to_bundle(BY_ID["V19"]), "MedicationAdministration") if a["id"] == "v19-med-1"
    ]
    assert norepinephrine["dosage"]["rateQuantity"]["code"] == "ug/kg/min"
    assert norepinephrine["effectivePeriod"] == {"start": "2025-03-04T05:30:00Z"}
    assert norepinephrine["status"] == "in-progress"
    (tocilizumab,) = [
        a for a in resources(vignette_to_bundle(BY_ID["V31"]), "MedicationAdministration") if a["id"] == "v31-med-2"
    ]
    assert tocilizumab["dosage"]["dose"]["value"] == 600
    assert tocilizumab["dosage"]["dose"]["code"] == "mg"
    assert tocilizumab["dosage"]["route"] == {"text": "IV"}


@pytest.mark.parametrize("vignette", VIGNETTES, ids=[v["id"] for v in VIGNETTES])
def test_prior_crs_condition(vignette: dict[str, Any]) -> None:
    """Prior CRS is an active D89.839 Condition with onset after therapy, before every finding."""
    bundle = vignette_to_bundle(vignette)
    conditions = resources(bundle, "Condition")
    if not vignette["context"].get("prior_crs"):
        assert conditions == []
        return
    (condition,) = conditions
    assert codes_of(condition["code"]) == {("http://hl7.org/fhir/sid/icd-10-cm", "D89.839")}
    assert condition["clinicalStatus"]["coding"][0]["code"] == "active"
    assert condition["verificationStatus"]["coding"][0]["code"] == "confirmed"
    onset = parse(condition["onsetDateTime"])
    assert onset > parse(vignette["context"]["therapy"]["time"])
    assert all(onset < parse(obs["time"]) for obs in vignette["observations"])


def test_therapy_administration() -> None:
    """The CRS-causing product is a completed administration coded by ATC."""
    (therapy,) = [
        a for a in resources(vignette_to_bundle(BY_ID["V01"]), "MedicationAdministration") if a["id"] == "v01-therapy"
    ]
    assert therapy["status"] == "completed"
    assert therapy["effectiveDateTime"] == "2025-03-01T10:00:00Z"
    assert codes_of(therapy["medicationCodeableConcept"]) == {(ATC, "L01XL03")}


def test_unknown_variant_is_rejected() -> None:
    """A typo in a variant name must fail loudly, not silently produce the plain shape."""
    with pytest.raises(ValueError, match="unknown variant"):
        vignette_to_bundle(BY_ID["V01"], variant="fahrenhiet")


def test_clinical_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CRS_CDS_CLINICAL_DIR points the loader at another copy of the vignettes."""
    document = {"vignettes": [BY_ID["V02"]]}
    (tmp_path / "vignettes-public.json").write_text(json.dumps(document), encoding="utf-8")
    monkeypatch.setenv("CRS_CDS_CLINICAL_DIR", str(tmp_path))
    assert [v["id"] for v in load_public_vignettes()] == ["V02"]


def _fixture_script() -> ModuleType:
    """Import tests/fixtures/make_vignette_bundles.py by path (fixtures is not a package)."""
    path = FIXTURES / "make_vignette_bundles.py"
    spec = importlib.util.spec_from_file_location("make_vignette_bundles", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_fixtures_are_current() -> None:
    """The committed fixtures equal a fresh render; regenerate them with the script if not."""
    rendered: dict[str, str] = _fixture_script().render()
    directory = FIXTURES / "vignettes"
    on_disk = {path.name for path in directory.glob("*.json")}
    assert on_disk == set(rendered)
    for name, content in rendered.items():
        assert (directory / name).read_text(encoding="utf-8") == content, name


def test_expected_json_matches_vignettes() -> None:
    """expected.json carries the ASTCT grade, time and optional episode max / dose per vignette."""
    expected = json.loads((FIXTURES / "vignettes" / "expected.json").read_text(encoding="utf-8"))
    assert set(expected) == set(BY_ID)
    assert expected["V31"]["astct_crs_max_grade_episode"] == 3
    assert expected["V34"]["tocilizumab_dose_mg"] == 800
    assert expected["V01"] == {
        "evaluation_time": "2025-03-04T08:00:00Z",
        "astct_crs_grade": 3,
    }
