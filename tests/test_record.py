"""One reading of the chart: every feature's findings come from one pass into one record.

The record is what CRS grading, the other systems, ICANS, the order checks and the course read;
these tests check that one pass over a mixed chart fills every part of it with the right
references, that the shared FHIR rules (status, patient, time) apply to every kind of finding,
and that nothing past the reading stage walks raw FHIR again.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.neuro import load_ice_questionnaire
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.record import Domain, PatientRecord
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

from fhir_builders import (
    LOINC,
    PATIENT_ID,
    Resource,
    bp_panel,
    concept,
    condition,
    patient,
    reference,
    temperature,
    when,
)

ICANS = "http://hospital.example.org/fhir/CodeSystem/icans"
PACKAGE = Path(__file__).resolve().parents[1] / "cds_hooks"


def _ice_observation(rid: str, score: int, *, status: str = "final", subject: str | None = PATIENT_ID) -> Resource:
    resource: Resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "code": concept(ICANS, "ICE-TOTAL"),
        "effectiveDateTime": when(1),
        "valueInteger": score,
    }
    if subject is not None:
        resource["subject"] = {"reference": f"Patient/{subject}"}
    return resource


def _ice_form(rid: str) -> Resource:
    items = [
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
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "questionnaire": "http://hospital.example.org/fhir/Questionnaire/ice",
        "status": "completed",
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authored": when(2),
        "item": [{"linkId": k, "answer": [{"valueBoolean": k != "ice-writing"}]} for k in items],
    }


def _blood_culture(rid: str, *, positive: bool, status: str = "final") -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
        "code": concept(LOINC, "600-7", "Bacteria identified in Blood by Culture"),
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when(12),
        "valueString": "Escherichia coli" if positive else "No growth",
        "interpretation": [
            concept("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "POS" if positive else "NEG")
        ],
    }


def _infection(rid: str, *, clinical: str = "active") -> Resource:
    out = condition(rid, "A41.9", clinical_status=clinical)
    out["code"] = {"text": "Sepsis, unspecified organism"}
    return out


def read(*resources: Resource) -> PatientRecord:
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), *resources]]
    return extract_record(
        sourced, load_terminology(), load_units(), patient_id=PATIENT_ID, ice_form=load_ice_questionnaire()
    )


def test_one_pass_fills_every_part_of_the_record() -> None:
    record = read(
        temperature("t1", 38.6, hours_before=1),
        bp_panel("bp1", 84, 50, hours_before=1),
        _ice_observation("ice1", 7),
        _ice_form("iceform1"),
        _blood_culture("bc1", positive=True),
        _infection("inf1"),
    )
    assert [t.reference for t in record.temperatures] == ["Observation/t1"]
    assert [b.reference for b in record.blood_pressures] == ["Observation/bp1"]
    assert [(n.domain, n.score, n.reference) for n in record.neuro] == [
        (Domain.ICE, 9.0, "QuestionnaireResponse/iceform1"),
        (Domain.ICE, 7.0, "Observation/ice1"),
    ]
    assert [(c.reference, c.positive, c.organism) for c in record.blood_cultures] == [
        ("Observation/bc1", True, "Escherichia coli")
    ]
    assert [(i.reference, i.by_text) for i in record.infections] == [("Condition/inf1", True)]
    assert record.not_evidence == [] and record.neuro_not_evidence == []


@pytest.mark.parametrize(
    ("resource", "where", "reason"),
    [
        pytest.param(
            _ice_observation("ice-eie", 3, status="entered-in-error"),
            "neuro",
            "Observation status is 'entered-in-error'",
            id="ice-entered-in-error->not-evidence-on-icans",
        ),
        pytest.param(
            _ice_observation("ice-other", 3, subject="someone-else"),
            "neuro",
            "belongs to another patient",
            id="ice-of-another-patient->not-evidence-on-icans",
        ),
        pytest.param(
            _ice_observation("ice-nosubject", 3, subject=None),
            "neuro",
            "no subject",
            id="ice-without-subject->not-evidence-on-icans",
        ),
        pytest.param(
            temperature("t-eie", 39.0, hours_before=1, status="entered-in-error"),
            "crs",
            "Observation status is 'entered-in-error'",
            id="temperature-entered-in-error->not-evidence-on-crs",
        ),
    ],
)
def test_shared_rules_apply_to_every_finding(resource: Resource, where: str, reason: str) -> None:
    record = read(resource)
    listed = record.neuro_not_evidence if where == "neuro" else record.not_evidence
    assert [(n.reference, n.reason) for n in listed] == [(reference(resource), reason)]
    assert not record.neuro and not record.temperatures


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(_blood_culture("bc-eie", positive=True, status="entered-in-error"), id="culture-entered-in-error"),
        pytest.param(_infection("inf-resolved", clinical="resolved"), id="infection-resolved"),
    ],
)
def test_unusable_infection_signs_are_not_findings(resource: Resource) -> None:
    record = read(resource)
    assert not record.blood_cultures and not record.infections


def test_skipped_assessment_is_named_on_the_icans_side() -> None:
    ice = _ice_observation("ice-bad", 5)
    sourced = [SourcedResource(r, reference(r)) for r in [patient(45), ice]]
    record = extract_record(
        sourced,
        load_terminology(),
        load_units(),
        patient_id=PATIENT_ID,
        ice_form=load_ice_questionnaire(),
        skip={"Observation/ice-bad": "fails FHIR R4 validation"},
    )
    assert not record.neuro
    assert [(n.reference, n.reason) for n in record.neuro_not_evidence] == [
        ("Observation/ice-bad", "fails FHIR R4 validation")
    ]


def _imports_and_names(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return modules, strings


@pytest.mark.parametrize("path", sorted((PACKAGE / "grading").glob("*.py")), ids=lambda p: f"grading/{p.name}")
def test_grading_reads_only_the_record(path: Path) -> None:
    """Grading is pure over the record: it never imports the reader nor looks at FHIR shapes."""
    modules, strings = _imports_and_names(path)
    readers = {"cds_hooks.reading.reader", "cds_hooks.reading.fhir_rules", "cds_hooks.reading.neuro"}
    assert not modules & readers
    fhir_fields: set[Any] = {"resourceType", "valueQuantity", "effectiveDateTime", "medicationCodeableConcept"}
    assert not strings & fhir_fields
