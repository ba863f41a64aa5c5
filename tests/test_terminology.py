"""Mappings as data: every code the reference names is mapped, broken files stop start-up, and a
site adds local codes with a file, not a code change."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cds_hooks.pipeline.evaluate import Grading, evaluate
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import ConceptKind, MappingError, MedicationRole, load_terminology
from cds_hooks.reading.units import load_units

CODES_CSV = Path(__file__).resolve().parents[1] / "docs" / "reference" / "codes.csv"
"""The repository's copy of the team's code list (provenance: docs/reference/README.md)."""
SITE_FILE = Path(__file__).resolve().parents[1] / "mappings" / "examples" / "site-example.yaml"
AT = datetime(2025, 3, 4, 8, tzinfo=UTC)


def test_builtin_mappings_load_with_versions() -> None:
    terms = load_terminology()
    assert set(terms.versions) == {"observations", "oxygen-support", "medications", "conditions", "icans", "routes"}


@pytest.mark.parametrize(
    ("system", "code", "concept", "role"),
    [
        pytest.param("http://loinc.org", "8310-5", "body_temperature", None, id="loinc-body-temp"),
        pytest.param("http://loinc.org", "60836-4", "body_temperature", None, id="loinc-esophageal-temp"),
        pytest.param("http://loinc.org", "8478-0", "mean_arterial_pressure", None, id="loinc-map"),
        pytest.param("http://snomed.info/sct", "426854004", "high_flow_nasal_cannula", None, id="sct-hfnc"),
        pytest.param("http://snomed.info/sct", "47545007", "positive_pressure", None, id="sct-cpap-regime"),
        pytest.param(
            "http://www.nlm.nih.gov/research/umls/rxnorm",
            "7508",
            "norepinephrine",
            MedicationRole.VASOPRESSOR,
            id="rxnorm-norepinephrine-salt",
        ),
        pytest.param(
            "http://www.nlm.nih.gov/research/umls/rxnorm",
            "11149",
            "vasopressin",
            MedicationRole.VASOPRESSIN_ANALOGUE,
            id="rxnorm-vasopressin",
        ),
        pytest.param(
            "http://www.whocc.no/atc", "C01CA07", "dobutamine", MedicationRole.INOTROPE, id="atc-dobutamine-inotrope"
        ),
        pytest.param(
            "http://www.whocc.no/atc",
            "H02AB06",
            "glucocorticoid",
            MedicationRole.CORTICOSTEROID,
            id="atc-prednisolone-by-group-prefix",
        ),
        pytest.param(
            "http://hl7.org/fhir/sid/icd-10-cm", "D89.833", "cytokine_release_syndrome", None, id="icd-crs-grade-3"
        ),
    ],
)
def test_reference_codes_map_to_their_concepts(
    system: str, code: str, concept: str, role: MedicationRole | None
) -> None:
    match = load_terminology().lookup(system, code)
    assert match is not None
    assert match.concept.id == concept
    assert match.concept.role == role


def test_every_verified_grading_code_in_codes_csv_is_mapped() -> None:
    """The codes the grading reads (vitals, devices, procedures, drugs, CRS) are all in the maps."""
    terms = load_terminology()
    wanted_prefixes = (
        "body temperature",
        "systolic",
        "mean arterial",
        "SpO2",
        "inhaled oxygen",
        "device:",
        "procedure:",
        "regime:",
        "vasopressor",
        "inotrope",
        "anti-IL",
        "IL-1RA",
        "corticosteroid",
        "CRS grade",
        "body weight",
    )
    unmapped = []
    with CODES_CSV.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["status"] != "verified" or not row["code"]:
                continue
            if not row["concept"].startswith(wanted_prefixes) and "temperature" not in row["concept"]:
                continue
            if row["concept"].startswith("procedure: respiratory therapy (parent)"):
                continue  # too broad to imply oxygen support: deliberately unmapped (docs/decisions.md)
            if terms.lookup(row["system"], row["code"]) is None:
                unmapped.append(f"{row['concept']}: {row['system']}|{row['code']}")
    assert unmapped == []


def test_name_fallback_does_not_confuse_norepinephrine_with_epinephrine() -> None:
    terms = load_terminology()
    match = terms.lookup_name_in_text("Norepinephrine 4 mg in 250 mL", ConceptKind.MEDICATION)
    assert match is not None and match.concept.id == "norepinephrine" and match.by_text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            "schema: crs-cds-mapping/1\nname: x\nversion: '1'\nconcepts: [{id: fever, kind: observation}]\n",
            "unknown observation concept",
            id="unknown-observation-concept",
        ),
        pytest.param(
            "schema: crs-cds-mapping/1\nname: x\nversion: '1'\nconcepts: [{id: x, kind: medication}]\n",
            "needs a role",
            id="medication-without-role",
        ),
        pytest.param(
            "schema: crs-cds-mapping/1\nname: x\nversion: '1'\nconcepts:\n"
            "  - {id: dopamine, kind: medication, role: inotrope}\n",
            "redefined",
            id="role-changed",
        ),
        pytest.param(
            "schema: crs-cds-mapping/1\nname: x\nversion: '1'\nconcepts:\n"
            "  - {id: epinephrine, kind: medication, role: vasopressor, codes: "
            "[{system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '7512'}]}\n",
            "mapped to both",
            id="code-mapped-twice",
        ),
        pytest.param("concepts: [", "not valid YAML", id="broken-yaml"),
        pytest.param("schema: other/1\nname: x\nversion: '1'\nconcepts: []\n", "invalid", id="wrong-schema"),
    ],
)
def test_a_broken_site_file_stops_start_up(tmp_path: Path, content: str, message: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(content)
    with pytest.raises(MappingError, match=message):
        load_terminology([site])


def test_a_missing_mapping_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read"):
        load_terminology([tmp_path / "absent.yaml"])


def _local(kind: str, rid: str, **fields: object) -> SourcedResource:
    resource: dict[str, object] = {"resourceType": kind, "id": rid, "subject": {"reference": "Patient/p1"}, **fields}
    return SourcedResource(resource, f"{kind}/{rid}")


def test_site_file_lets_local_codes_grade() -> None:
    """Fever, HFNC and norepinephrine charted only in local codes: grade 3 with the site file, and
    indeterminate without it (an unknown temperature code is not a temperature)."""
    local_resources = [
        _local(
            "Observation",
            "t1",
            status="final",
            code={
                "coding": [
                    {"system": "http://hospital.example.org/fhir/CodeSystem/flowsheet", "code": "TEMP-CORE-PROBE"}
                ]
            },
            effectiveDateTime="2025-03-04T07:00:00Z",
            valueQuantity={"value": 38.7, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
        ),
        _local(
            "Observation",
            "d1",
            status="final",
            code={"text": "O2 device"},
            effectiveDateTime="2025-03-04T07:00:00Z",
            valueCodeableConcept={
                "coding": [{"system": "http://hospital.example.org/fhir/CodeSystem/o2-device", "code": "HFNC-OPTI"}]
            },
        ),
        _local(
            "Observation",
            "bp1",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            effectiveDateTime="2025-03-04T07:00:00Z",
            valueQuantity={"value": 110, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        ),
    ]
    units = load_units()
    with_site = evaluate(local_resources, patient_id="p1", at=AT, grading=Grading(load_terminology([SITE_FILE]), units))
    without = evaluate(local_resources, patient_id="p1", at=AT, grading=Grading(load_terminology(), units))
    assert with_site.primary.grade == 3
    assert "Observation/t1" in with_site.primary.references
    assert without.primary.grade is None
