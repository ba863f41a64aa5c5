"""The fast FHIR R4 check of cited evidence (``reading/r4_fast_check.py``) never disagrees with the
R4B models it stands in for.

Why: a resource that fails validation is dropped from the record before grading, so a fast path
that called an invalid resource valid would let unvalidated data count. The check may only say
"valid" (the models must agree) or "don't know" (the models decide). Three kinds of proof:
a table with one row per rule (what the fast path says and what the models say), every resource
in the test fixtures and a sample of every registry-export shape, and Hypothesis-generated
resources in the accepted shapes with near-miss values and structural damage.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cds_hooks.reading import evidence_check
from cds_hooks.reading.evidence_check import UNVALIDATED_TYPE, validation_problem
from cds_hooks.reading.r4_fast_check import surely_valid
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

Resource = dict[str, Any]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPORT_SAMPLE = FIXTURES / "export-shapes" / "export-sample.ndjson"
UCUM = "http://unitsofmeasure.org"


def r4b_valid(resource: Resource) -> bool:
    """The models' verdict, independent of the code under test."""
    model = get_fhir_model_class(resource["resourceType"])
    try:
        model.model_validate(resource)
    except (ValidationError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


# -- one row per rule ----------------------------------------------------------------------------

VITAL: Resource = {
    "resourceType": "Observation",
    "id": "single-0-temp-0",
    "status": "final",
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "8310-5", "display": "Body temperature"}],
        "text": "Body temperature",
    },
    "subject": {"reference": "Patient/single-0"},
    "effectiveDateTime": "2025-03-01T10:00:00Z",
    "valueQuantity": {"value": 38.7, "unit": "Cel", "system": UCUM, "code": "Cel"},
}
DOSE: Resource = {
    "resourceType": "MedicationAdministration",
    "id": "single-0-toci-54",
    "status": "completed",
    "medicationCodeableConcept": {
        "coding": [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "612865", "display": "tocilizumab"}
        ],
        "text": "tocilizumab",
    },
    "subject": {"reference": "Patient/single-0"},
    "effectiveDateTime": "2025-03-03T16:00:00Z",
    "dosage": {"dose": {"value": 600, "unit": "mg", "system": UCUM, "code": "mg"}},
}
INFUSION: Resource = {
    "resourceType": "MedicationAdministration",
    "id": "single-0-cart-0",
    "status": "completed",
    "medicationReference": {"reference": "Medication/axicel"},
    "subject": {"reference": "Patient/single-0"},
    "effectivePeriod": {"start": "2025-03-01T10:00:00Z", "end": "2025-03-01T10:30:00Z"},
}
BLOOD_PRESSURE: Resource = {
    "resourceType": "Observation",
    "id": "bp",
    "meta": {"lastUpdated": "2025-03-01T10:05:00.123+01:00", "profile": ["http://hl7.org/fhir/StructureDefinition/bp"]},
    "status": "final",
    "category": [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1", "display": "Patient One"},
    "effectiveDateTime": "2025-03-01T10:00:00Z",
    "issued": "2025-03-01T10:01:00Z",
    "performer": [{"reference": "Practitioner/n1"}],
    "note": [{"text": "left arm"}],
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 85, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 50, "unit": "mm[Hg]", "system": UCUM, "code": "mm[Hg]"},
        },
    ],
}
RARER_OBSERVATION: Resource = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "urine output"},
    "implicitRules": "http://example.org/rules",
    "language": "en-GB",
    "meta": {"versionId": "3", "source": "urn:oid:1.2.3", "tag": [{"system": "http://example.org/tag", "code": "t"}]},
    "identifier": [{"use": "official", "system": "http://example.org/ids", "value": "42", "period": {"start": "2025"}}],
    "basedOn": [{"reference": "ServiceRequest/s1", "type": "ServiceRequest"}],
    "encounter": {"reference": "Encounter/e1"},
    "effectivePeriod": {"start": "2025-03-01T10:00:00Z", "end": "2025-03-01T16:00:00Z"},
    "valueRange": {"low": {"value": 0.5, "unit": "mL/kg/h"}, "high": {"value": 1, "comparator": "<"}},
    "interpretation": [{"coding": [{"system": "http://example.org/i", "code": "L", "userSelected": False}]}],
    "referenceRange": [
        {"low": {"value": 0.5}, "appliesTo": [{"text": "adult"}], "age": {"low": {"value": 18}}, "text": "x"}
    ],
    "note": [{"authorReference": {"reference": "Practitioner/n1"}, "time": "2025-03-01", "text": "catheter"}],
    "derivedFrom": [{"reference": "Observation/o1"}],
}
RARER_ADMINISTRATION: Resource = {
    "resourceType": "MedicationAdministration",
    "status": "completed",
    "medicationReference": {"reference": "Medication/m1"},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2025-03-01",
    "instantiates": ["http://example.org/protocol"],
    "statusReason": [{"text": "per protocol"}],
    "performer": [{"actor": {"reference": "Practitioner/n1"}, "function": {"text": "performer"}}],
    "reasonReference": [{"reference": "Condition/c1"}],
    "request": {"reference": "MedicationRequest/r1"},
    "note": [{"authorString": "nurse", "text": "slow push"}],
    "dosage": {"route": {"text": "IV"}, "rateRatio": {"numerator": {"value": 1}, "denominator": {"value": 1}}},
}
PATIENT: Resource = {"resourceType": "Patient", "id": "single-0", "gender": "female", "birthDate": "1968-05-17"}


def edit(resource: Resource, *path: str | int, value: Any = None, drop: bool = False) -> Resource:
    """A copy of ``resource`` with the element at ``path`` set to ``value`` (or removed)."""
    changed = copy.deepcopy(resource)
    node: Any = changed
    for step in path[:-1]:
        node = node[step]
    if drop:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return changed


def _when(resource: Resource, moment: str) -> Resource:
    return edit(resource, "effectiveDateTime", value=moment)


def _display(resource: Resource, text: str) -> Resource:
    return edit(resource, "code", "coding", 0, "display", value=text)


def _number(resource: Resource, number: Any) -> Resource:
    return edit(resource, "valueQuantity", "value", value=number)


def _integer(number: Any) -> Resource:
    return edit(edit(VITAL, "valueQuantity", drop=True), "valueInteger", value=number)


VALID = (True, True)
"""Fast path vouches, the models agree."""
ASK_INVALID = (False, False)
"""Fast path does not know; the models reject it."""
ASK_VALID = (False, True)
"""Fast path does not know (deliberately narrower); the models accept it."""

RULES = [
    # shapes the fast path takes
    pytest.param(VITAL, VALID, id="export-temperature-shape"),
    pytest.param(DOSE, VALID, id="export-dose-shape"),
    pytest.param(INFUSION, VALID, id="export-infusion-period-medicationReference"),
    pytest.param(BLOOD_PRESSURE, VALID, id="bp-panel-components-meta-category-note-performer"),
    pytest.param(RARER_OBSERVATION, VALID, id="observation-rarer-elements-valueRange-referenceRange"),
    pytest.param(RARER_ADMINISTRATION, VALID, id="administration-rarer-elements-performer-rateRatio"),
    pytest.param(
        edit(RARER_ADMINISTRATION, "performer", 0, "actor", drop=True), ASK_INVALID, id="performer-without-actor"
    ),
    pytest.param(edit(RARER_OBSERVATION, "note", 0, "authorString", value="nurse"), ASK_INVALID, id="note-two-authors"),
    pytest.param(
        edit(edit(VITAL, "valueQuantity", drop=True), "valueCodeableConcept", value={"text": "Room air"}),
        VALID,
        id="valueCodeableConcept-text-only",
    ),
    pytest.param(_integer(2**31 - 1), VALID, id="valueInteger-max-32-bit"),
    pytest.param(
        edit(DOSE, "dosage", "rateQuantity", value={"value": 0.5, "unit": "mL/h"}),
        VALID,
        id="dosage-dose-and-rateQuantity",
    ),
    pytest.param(edit(VITAL, "code", "coding", 0, "userSelected", value=True), VALID, id="coding-userSelected"),
    pytest.param(edit(VITAL, "id", value="a" * 64), VALID, id="id-64-characters"),
    pytest.param(_display(VITAL, "Température °C"), VALID, id="string-non-ASCII"),
    pytest.param(_display(VITAL, " x "), VALID, id="string-with-outer-spaces"),
    pytest.param(_number(VITAL, -0.0), VALID, id="decimal-negative-zero"),
    pytest.param(_number(VITAL, 1e-300), VALID, id="decimal-exponent"),
    # dateTime and instant
    pytest.param(_when(VITAL, "2025-04-14"), VALID, id="dateTime-date-only"),
    pytest.param(_when(VITAL, "2025-04"), VALID, id="dateTime-year-month"),
    pytest.param(_when(VITAL, "2025"), VALID, id="dateTime-year"),
    pytest.param(_when(VITAL, "2024-02-29T12:00:00Z"), VALID, id="dateTime-leap-day"),
    pytest.param(_when(VITAL, "0001-01-01T00:00:00+01:00"), VALID, id="dateTime-year-0001"),
    pytest.param(_when(VITAL, "9999-12-31T23:59:59-14:00"), VALID, id="dateTime-year-9999-offset-minus-14"),
    pytest.param(_when(VITAL, "2025-04-14T10:00:00-00:00"), VALID, id="dateTime-offset-minus-zero"),
    pytest.param(_when(VITAL, "2025-04-14T10:00:00.123456+05:30"), VALID, id="dateTime-6-fraction-digits"),
    pytest.param(_when(VITAL, "2025-13-01"), ASK_INVALID, id="dateTime-month-13"),
    pytest.param(_when(VITAL, "2025-02-30T10:00:00Z"), ASK_INVALID, id="dateTime-february-30"),
    pytest.param(_when(VITAL, "2025-02-29"), ASK_INVALID, id="dateTime-february-29-common-year"),
    pytest.param(_when(VITAL, "2025-04-31T10:00:00Z"), ASK_INVALID, id="dateTime-april-31"),
    pytest.param(_when(VITAL, "2025-04-14T10:00:00"), ASK_INVALID, id="dateTime-time-without-zone"),
    pytest.param(_when(VITAL, "2025-04-14T10:00Z"), ASK_INVALID, id="dateTime-no-seconds"),
    pytest.param(_when(VITAL, "2025-04-14T24:00:00Z"), ASK_INVALID, id="dateTime-hour-24"),
    pytest.param(_when(VITAL, "2025-04-14T10:00:00+14:01"), ASK_INVALID, id="dateTime-offset-beyond-14h"),
    pytest.param(_when(VITAL, "2025-04-14 10:00:00Z"), ASK_INVALID, id="dateTime-space-separator"),
    pytest.param(_when(VITAL, "0000-01-01T00:00:00Z"), ASK_INVALID, id="dateTime-year-0000"),
    pytest.param(_when(VITAL, "0000"), ASK_INVALID, id="dateTime-year-0000-alone"),
    pytest.param(_when(VITAL, "２０２５-04-14"), ASK_INVALID, id="dateTime-non-ASCII-digits"),
    pytest.param(_when(VITAL, ""), ASK_INVALID, id="dateTime-empty"),
    pytest.param(_when(VITAL, "2025-04-14T23:59:60Z"), ASK_VALID, id="dateTime-leap-second-left-to-models"),
    pytest.param(
        _when(VITAL, "2025-04-14T10:00:00.1234567Z"), ASK_VALID, id="dateTime-7-fraction-digits-left-to-models"
    ),
    pytest.param(edit(BLOOD_PRESSURE, "issued", value="2025-03-01"), ASK_INVALID, id="instant-date-only"),
    pytest.param(
        edit(BLOOD_PRESSURE, "meta", "lastUpdated", value="2025-03-01T10:00:00"), ASK_INVALID, id="instant-without-zone"
    ),
    # other primitives
    pytest.param(edit(VITAL, "id", value="a_b"), ASK_INVALID, id="id-underscore"),
    pytest.param(edit(VITAL, "id", value=""), ASK_INVALID, id="id-empty"),
    pytest.param(edit(VITAL, "id", value="a" * 256), ASK_INVALID, id="id-256-characters"),
    pytest.param(edit(VITAL, "id", value="a" * 65), ASK_VALID, id="id-65-characters-left-to-models"),
    pytest.param(edit(VITAL, "status", value=""), ASK_INVALID, id="code-empty"),
    pytest.param(edit(VITAL, "status", value=" final"), ASK_INVALID, id="code-leading-space"),
    pytest.param(edit(VITAL, "status", value="fi  nal"), ASK_INVALID, id="code-double-space"),
    pytest.param(edit(VITAL, "status", value="fi\tnal"), ASK_VALID, id="code-inner-tab-left-to-models"),
    pytest.param(edit(VITAL, "status", value="made-up"), VALID, id="code-outside-value-set-models-accept"),
    pytest.param(edit(VITAL, "status", value="a\u00a0b"), ASK_VALID, id="code-non-ASCII-left-to-models"),
    pytest.param(_display(VITAL, ""), ASK_INVALID, id="string-empty"),
    pytest.param(_display(VITAL, "\u00a0"), ASK_INVALID, id="string-only-no-break-space"),
    pytest.param(_display(VITAL, "\x0b"), ASK_INVALID, id="string-only-vertical-tab"),
    pytest.param(_display(VITAL, "a\ud800"), ASK_INVALID, id="string-lone-surrogate"),
    pytest.param(_display(VITAL, " "), ASK_VALID, id="string-single-space-left-to-models"),
    pytest.param(edit(VITAL, "code", "coding", 0, "system", value=""), ASK_VALID, id="uri-empty-left-to-models"),
    pytest.param(
        edit(VITAL, "code", "coding", 0, "userSelected", value="true"), ASK_VALID, id="boolean-as-string-left-to-models"
    ),
    pytest.param(_number(VITAL, float("nan")), ASK_INVALID, id="decimal-NaN"),
    pytest.param(_number(VITAL, float("inf")), ASK_INVALID, id="decimal-infinity"),
    pytest.param(_number(VITAL, True), ASK_INVALID, id="decimal-boolean"),
    pytest.param(_number(VITAL, " 5"), ASK_INVALID, id="decimal-string-with-space"),
    pytest.param(_number(VITAL, "38.7"), ASK_VALID, id="decimal-as-string-left-to-models"),
    pytest.param(_integer(2**31), ASK_INVALID, id="valueInteger-over-32-bit"),
    pytest.param(_integer(1.5), ASK_INVALID, id="valueInteger-fraction"),
    pytest.param(_integer(True), ASK_VALID, id="valueInteger-boolean-left-to-models"),
    # structure
    pytest.param(edit(VITAL, "foo", value=1), ASK_INVALID, id="unknown-element"),
    pytest.param(edit(VITAL, "valueQuantity", "foo", value=1), ASK_INVALID, id="unknown-element-nested"),
    pytest.param(edit(VITAL, "status", value=None), ASK_INVALID, id="status-null"),
    pytest.param(edit(VITAL, "status", drop=True), ASK_INVALID, id="status-missing"),
    pytest.param(edit(VITAL, "code", drop=True), ASK_INVALID, id="code-missing"),
    pytest.param(edit(VITAL, "code", "coding", value=[None]), ASK_INVALID, id="null-in-coding-list"),
    pytest.param(
        edit(VITAL, "effectivePeriod", value={"start": "2025-03-01T10:00:00Z"}),
        ASK_INVALID,
        id="effectiveDateTime-and-effectivePeriod",
    ),
    pytest.param(edit(VITAL, "valueString", value="high"), ASK_INVALID, id="valueQuantity-and-valueString"),
    pytest.param(edit(BLOOD_PRESSURE, "component", 0, "code", drop=True), ASK_INVALID, id="component-without-code"),
    pytest.param(edit(BLOOD_PRESSURE, "note", 0, "text", drop=True), ASK_INVALID, id="note-without-text"),
    pytest.param(edit(DOSE, "subject", drop=True), ASK_INVALID, id="administration-subject-missing"),
    pytest.param(edit(DOSE, "effectiveDateTime", drop=True), ASK_INVALID, id="administration-effective-missing"),
    pytest.param(
        edit(DOSE, "medicationCodeableConcept", drop=True), ASK_INVALID, id="administration-medication-missing"
    ),
    pytest.param(
        edit(INFUSION, "medicationCodeableConcept", value={"text": "axi-cel"}),
        ASK_INVALID,
        id="administration-two-medications",
    ),
    pytest.param(edit(DOSE, "dosage", "rateRatio", value={"numerator": {"value": 1}}), VALID, id="dosage-rateRatio"),
    pytest.param(
        edit(
            edit(DOSE, "dosage", "rateRatio", value={"numerator": {"value": 1}}),
            "dosage",
            "rateQuantity",
            value={"value": 1},
        ),
        ASK_INVALID,
        id="dosage-rateRatio-and-rateQuantity",
    ),
    pytest.param(edit(VITAL, "resourceType", value="Patient"), ASK_INVALID, id="resourceType-other-than-shape"),
    pytest.param(edit(VITAL, "category", value=[]), ASK_VALID, id="empty-list-left-to-models"),
    pytest.param(edit(VITAL, "code", value={}), ASK_VALID, id="empty-object-left-to-models"),
    pytest.param(
        edit(VITAL, "extension", value=[{"url": "http://example.org/x", "valueString": "y"}]),
        ASK_VALID,
        id="extension-left-to-models",
    ),
    pytest.param(
        edit(VITAL, "_status", value={"extension": [{"url": "http://example.org/x", "valueString": "y"}]}),
        ASK_VALID,
        id="primitive-extension-left-to-models",
    ),
    pytest.param(
        edit(VITAL, "text", value={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}),
        ASK_VALID,
        id="narrative-left-to-models",
    ),
    pytest.param(
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}},
        ASK_VALID,
        id="other-resource-type-left-to-models",
    ),
    # a patient's demographics
    pytest.param(PATIENT, VALID, id="patient-demographics"),
    pytest.param(edit(PATIENT, "birthDate", value="1966"), VALID, id="patient-birthDate-year"),
    pytest.param(edit(PATIENT, "deceasedDateTime", value="2025-03-01T10:00:00Z"), VALID, id="patient-deceasedDateTime"),
    pytest.param(edit(PATIENT, "birthDate", value="1966-02-30"), ASK_INVALID, id="patient-birthDate-february-30"),
    pytest.param(
        edit(PATIENT, "birthDate", value="1966-12-04T10:00:00Z"), ASK_INVALID, id="patient-birthDate-with-time"
    ),
    pytest.param(
        edit(edit(PATIENT, "deceasedBoolean", value=True), "deceasedDateTime", value="2025-03-01"),
        ASK_INVALID,
        id="patient-deceasedBoolean-and-deceasedDateTime",
    ),
    pytest.param(edit(PATIENT, "name", value=[{"family": "Doe"}]), ASK_VALID, id="patient-name-left-to-models"),
]


@pytest.mark.parametrize(("resource", "verdicts"), RULES)
def test_each_rule(resource: Resource, verdicts: tuple[bool, bool]) -> None:
    fast, models = verdicts
    assert surely_valid(resource) is fast
    assert r4b_valid(resource) is models


@pytest.mark.parametrize(("resource", "verdicts"), RULES)
def test_verdict_is_the_models_verdict(resource: Resource, verdicts: tuple[bool, bool]) -> None:
    """Through ``validation_problem`` (fast path, then cache, then models) the answer is unchanged."""
    _, models = verdicts
    problem = validation_problem(resource)
    assert (problem is None) is models
    if not models:
        assert problem is not None
        assert problem.startswith("fails FHIR R4 validation")


def test_fast_verdict_skips_the_models_and_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_models(resource: Resource) -> str | None:
        raise AssertionError("the models were asked")

    monkeypatch.setattr(evidence_check, "_validate", no_models)
    monkeypatch.setattr(evidence_check, "_VERDICTS", {})
    assert validation_problem(VITAL) is None
    assert evidence_check._VERDICTS == {}


def test_unknown_shape_is_validated_once_and_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evidence_check, "_VERDICTS", {})
    invalid = edit(VITAL, "foo", value=1)
    first = validation_problem(invalid)
    assert first is not None
    assert "foo" in first
    assert list(evidence_check._VERDICTS.values()) == [first]
    assert validation_problem(copy.deepcopy(invalid)) == first


# -- every fixture and export shape ------------------------------------------------------------


def _resources_in(value: Any) -> Iterator[Resource]:
    """Every resource in a JSON document, bundle entries and contained resources included."""
    if isinstance(value, dict):
        if isinstance(value.get("resourceType"), str):
            yield value
        for item in value.values():
            yield from _resources_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _resources_in(item)


def _fixture_resources() -> list[Resource]:
    found: list[Resource] = []
    for path in sorted(FIXTURES.rglob("*.json")):
        found.extend(_resources_in(json.loads(path.read_text(encoding="utf-8"))))
    found.extend(_export_sample())
    return found


def _export_sample() -> list[Resource]:
    return [orjson.loads(line) for line in EXPORT_SAMPLE.read_bytes().splitlines() if line.strip()]


FIXTURE_RESOURCES = _fixture_resources()


def _label(resource: Resource) -> str:
    return f"{resource['resourceType']}/{resource.get('id', '?')}"


@pytest.mark.parametrize("resource", FIXTURE_RESOURCES, ids=_label)
def test_fixture_resource_fast_valid_implies_models_valid(resource: Resource) -> None:
    if surely_valid(resource):
        assert r4b_valid(resource)
    if resource["resourceType"] in EVIDENCE_TYPES:
        assert (validation_problem(resource) is None) is r4b_valid(resource)
    else:  # a Bundle, an OperationOutcome...: never evidence, never vouched for
        assert validation_problem(resource) == UNVALIDATED_TYPE


EVIDENCE_TYPES = (
    "Observation",
    "MedicationAdministration",
    "Procedure",
    "Condition",
    "Patient",
    "Medication",
    "MedicationRequest",
    "ServiceRequest",
    "QuestionnaireResponse",
)
"""What the reader and the order checks take as evidence (reading/reader.py handlers)."""

ICE_RESPONSE: Resource = {
    "resourceType": "QuestionnaireResponse",
    "id": "ice-1",
    "status": "completed",
    "subject": {"reference": "Patient/p1"},
    "authored": "2025-03-04T08:00:00Z",
    "item": [{"linkId": "orientation", "answer": [{"valueInteger": 4}]}],
}


class _Breaks:
    """A model whose validation breaks in an unexpected way (as deep nesting can)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, resource: object) -> object:
        raise self.error


@pytest.mark.parametrize(
    ("resource", "says"),
    [
        pytest.param({"resourceType": "Bogus", "id": "x"}, UNVALIDATED_TYPE, id="unknown-type->not-vouched"),
        pytest.param({"id": "x"}, UNVALIDATED_TYPE, id="no-resourceType->not-vouched"),
        pytest.param(ICE_RESPONSE, None, id="ice-questionnaire-response-valid->validated-by-its-model"),
        pytest.param(
            {k: v for k, v in ICE_RESPONSE.items() if k != "status"},
            "fails FHIR R4 validation at status: model_field_validation.missing",
            id="ice-response-without-status->fails",
        ),
    ],
)
def test_every_evidence_type_is_validated_and_others_fail_closed(resource: Resource, says: str | None) -> None:
    evidence_check._VERDICTS.clear()
    assert validation_problem(resource) == says
    if says is None:
        assert r4b_valid(resource)


@pytest.mark.parametrize(
    "error",
    [pytest.param(RecursionError(), id="recursion->fails-closed"), pytest.param(RuntimeError(), id="runtime->fails")],
)
def test_a_model_that_breaks_fails_closed(error: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evidence_check, "_validator", lambda resource_type: _Breaks(error))
    evidence_check._VERDICTS.clear()
    odd = {**ICE_RESPONSE, "id": f"odd-{type(error).__name__}", "item": [{"linkId": "x", "item": []}]}
    assert validation_problem(odd) == f"fails FHIR R4 validation: {type(error).__name__}"
    evidence_check._VERDICTS.clear()


def test_fixtures_cover_both_answers() -> None:
    """The differential above means something: the fixtures exercise both paths."""
    answers = {surely_valid(resource) for resource in FIXTURE_RESOURCES}
    assert answers == {True, False}
    assert len(FIXTURE_RESOURCES) > 200


@pytest.mark.parametrize(
    "resource",
    [r for r in _export_sample() if r["resourceType"] in ("Observation", "MedicationAdministration")],
    ids=_label,
)
def test_every_export_shape_takes_the_fast_path(resource: Resource) -> None:
    """The registry export's Observations and administrations are all vouched for (the speed-up)."""
    assert surely_valid(resource)
    assert r4b_valid(resource)


# -- generated resources in the accepted shapes ------------------------------------------------

ODD_TEXT = ["", " ", "\t", "\n", "\x0b", "\u00a0", "\u2003", "a\ud800", "\ud800", "x\x00", "\x00", "é", " a", "a "]
JSON_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4), st.builds(list), st.builds(dict)
)


def _mixed(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], *odd: Any) -> st.SearchStrategy[Any]:
    """Mostly a plausible value; one time in twelve a near miss, a known odd value or any JSON.

    A resource has a dozen such slots, so about a third of the resources are entirely plausible
    and most of the others carry one flaw among valid values: the cases a fast path gets wrong.
    """
    flawed = st.one_of(bad, st.sampled_from(list(odd) + ODD_TEXT), JSON_JUNK)
    return st.integers(0, 11).flatmap(lambda roll: flawed if roll == 5 else good)


@st.composite
def _date_time_text(draw: st.DrawFn, *, near_miss: bool) -> str:
    """FHIR dateTime-like text: every precision, zones up to +-14:00, fractions, days up to 31
    in any month; with ``near_miss`` also year 0000, month 13, day 32, hour 24, second 60,
    7+ fraction digits, odd zones and separators."""
    wide = 1 if near_miss else 0
    year = draw(st.one_of(st.integers(1 - wide, 9999), st.sampled_from([1, 999, 1000, 2024, 2025, 9999])))
    month = draw(st.integers(1 - wide, 12 + wide))
    day = draw(st.integers(1 - wide, 31 + wide))
    hour, minute, second = (
        draw(st.integers(0, 23 + wide)),
        draw(st.integers(0, 59 + wide)),
        draw(st.integers(0, 59 + wide)),
    )
    fractions = ["", "", ".0", ".5", ".123", ".123456"] + ([".1234567", ".", ".123456789012"] if near_miss else [])
    zones = ["Z", "Z", "+00:00", "-00:00", "+05:30", "-03:00", "+13:59", "+14:00", "-14:00"]
    zones += ["+14:01", "+15:00", "+24:00", "", "z", "+0100", "+1:00"] if near_miss else []
    separator = draw(st.sampled_from(["T", " ", "t"] if near_miss else ["T"]))
    precision = draw(st.sampled_from(["year", "month", "date", "full", "full", "full"]))
    text = f"{year:04d}"
    if precision != "year":
        text += f"-{month:02d}"
    if precision in ("date", "full"):
        text += f"-{day:02d}"
    if precision == "full":
        text += f"{separator}{hour:02d}:{minute:02d}:{second:02d}{draw(st.sampled_from(fractions))}{draw(st.sampled_from(zones))}"
    return text


DATE_TIME = _mixed(
    _date_time_text(near_miss=False),
    _date_time_text(near_miss=True),
    "2025-13-01",
    "2025-02-30",
    "2025-02-29",
    "2025-04-14T10:00:00",
    "0000-01-01",
    "2025-04-14T23:59:60Z",
    "２０２５",
)
STRING = _mixed(
    st.one_of(
        st.sampled_from(["Body temperature", "Température", "mm[Hg]"]),
        st.tuples(st.sampled_from("aZ9~"), st.text(max_size=8)).map("".join),
    ),
    st.text(max_size=3),
)
CODE = _mixed(
    st.one_of(
        st.sampled_from(["final", "completed", "8310-5", "mm[Hg]", "10*9/L", "a b"]),
        st.text(alphabet="az09-[]", min_size=1, max_size=6),
    ),
    st.text(max_size=4),
    "fi  nal",
    "a\u00a0b",
    " final",
    "final ",
)
URI = _mixed(
    st.sampled_from(["http://loinc.org", UCUM, "urn:oid:1.2.3", "Patient/p1"]),
    st.text(max_size=4),
    "http://x y",
    "http://loinc.org ",
)
ID_CHARACTERS = "AZaz09-."
ID = _mixed(
    st.one_of(
        st.text(alphabet=ID_CHARACTERS, min_size=1, max_size=8),
        st.text(alphabet=ID_CHARACTERS, min_size=60, max_size=64),
    ),
    st.text(alphabet=ID_CHARACTERS + "_/ é", max_size=70),
    "a_b",
    "a" * 65,
    "a" * 256,
    "a/b",
)
DECIMAL = _mixed(
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53)),
    st.one_of(st.floats(), st.integers()),
    float("nan"),
    float("inf"),
    -float("inf"),
    2**53 + 1,
    10**400,
    "38.7",
    "1e3",
    True,
    False,
)
INTEGER = _mixed(st.integers(-(2**31), 2**31 - 1), st.integers(), 2**31, -(2**31) - 1, True, 1.0, "5")
BOOLEAN = _mixed(st.booleans(), st.sampled_from(["true", "false", 1, 0]))


def _object(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(required, optional=optional or {})


CODING = _object({"system": URI, "code": CODE}, {"display": STRING, "version": STRING, "userSelected": BOOLEAN})
CONCEPT = _object({"coding": st.lists(CODING, min_size=1, max_size=2)}, {"text": STRING})
REFERENCE = _object({"reference": STRING}, {"display": STRING, "type": URI})
QUANTITY = _object({"value": DECIMAL}, {"unit": STRING, "system": URI, "code": CODE, "comparator": CODE})
PERIOD = _object({"start": DATE_TIME}, {"end": DATE_TIME})
META = _object({}, {"lastUpdated": DATE_TIME, "versionId": ID, "profile": st.lists(URI, min_size=1, max_size=2)})


def _one_of(*options: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Exactly one of a choice group's forms (conflicts come from the damage step)."""
    return st.one_of(*(st.fixed_dictionaries(option) for option in options))


def _merged(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.tuples(*parts).map(lambda dicts: {key: value for part in dicts for key, value in part.items()})


def _observation(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    base = _object(
        {"resourceType": st.just("Observation"), "id": ID, "status": CODE, "code": CONCEPT, "subject": REFERENCE},
        {
            "meta": META,
            "category": st.lists(CONCEPT, min_size=1, max_size=2),
            "issued": DATE_TIME,
            "note": st.lists(_object({"text": STRING}), min_size=1, max_size=1),
            "performer": st.lists(REFERENCE, min_size=1, max_size=2),
        },
    )
    effective = _one_of(
        {"effectiveDateTime": DATE_TIME},
        {"effectiveDateTime": DATE_TIME},
        {"effectivePeriod": PERIOD},
        {"effectiveInstant": DATE_TIME},
    )
    return _merged(base, effective, values)


def _administration(medication: st.SearchStrategy[Any], effective: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    rate = _one_of(
        {}, {"rateQuantity": QUANTITY}, {"rateRatio": _object({"numerator": QUANTITY}, {"denominator": QUANTITY})}
    )
    dosage = _merged(_object({}, {"dose": QUANTITY, "route": CONCEPT, "text": STRING}), rate)
    base = _object(
        {"resourceType": st.just("MedicationAdministration"), "id": ID, "status": CODE, "subject": REFERENCE},
        {"dosage": dosage, "context": REFERENCE, "category": CONCEPT},
    )
    return _merged(base, medication, effective)


COMPONENT = _merged(
    _object({"code": CONCEPT}),
    _one_of({}, {"valueQuantity": QUANTITY}, {"valueInteger": INTEGER}, {"valueString": STRING}),
)


def _some(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(item, min_size=1, max_size=2)


IDENTIFIER = _object({"system": URI, "value": STRING}, {"use": CODE, "type": CONCEPT, "period": PERIOD})
RANGE = _object({}, {"low": QUANTITY, "high": QUANTITY})
RATIO = _object({"numerator": QUANTITY}, {"denominator": QUANTITY})
ANNOTATION = _merged(
    _object({"text": STRING}, {"time": DATE_TIME}),
    _one_of({}, {"authorString": STRING}, {"authorReference": REFERENCE}),
)
FULL_META = _object(
    {},
    {"versionId": ID, "lastUpdated": DATE_TIME, "source": URI, "security": _some(CODING), "tag": _some(CODING)},
)
REFERENCE_RANGE = _object(
    {}, {"low": QUANTITY, "high": QUANTITY, "type": CONCEPT, "appliesTo": _some(CONCEPT), "age": RANGE, "text": STRING}
)
RARE_OBSERVATION = _merged(
    _object(
        {"resourceType": st.just("Observation"), "status": CODE, "code": CONCEPT},
        {
            "meta": FULL_META,
            "implicitRules": URI,
            "language": CODE,
            "identifier": _some(IDENTIFIER),
            "basedOn": _some(REFERENCE),
            "partOf": _some(REFERENCE),
            "focus": _some(REFERENCE),
            "encounter": REFERENCE,
            "specimen": REFERENCE,
            "device": REFERENCE,
            "dataAbsentReason": CONCEPT,
            "interpretation": _some(CONCEPT),
            "bodySite": CONCEPT,
            "method": CONCEPT,
            "referenceRange": _some(REFERENCE_RANGE),
            "hasMember": _some(REFERENCE),
            "derivedFrom": _some(REFERENCE),
            "note": _some(ANNOTATION),
        },
    ),
    _one_of(
        {},
        {"valueRange": RANGE},
        {"valueRatio": RATIO},
        {"valuePeriod": PERIOD},
        {"valueDateTime": DATE_TIME},
        {"valueString": STRING},
        {"valueBoolean": BOOLEAN},
    ),
)
RARE_ADMINISTRATION = _merged(
    _object(
        {"resourceType": st.just("MedicationAdministration"), "status": CODE, "subject": REFERENCE},
        {
            "identifier": _some(IDENTIFIER),
            "instantiates": _some(URI),
            "partOf": _some(REFERENCE),
            "statusReason": _some(CONCEPT),
            "supportingInformation": _some(REFERENCE),
            "performer": _some(_object({"actor": REFERENCE}, {"function": CONCEPT})),
            "reasonCode": _some(CONCEPT),
            "reasonReference": _some(REFERENCE),
            "request": REFERENCE,
            "device": _some(REFERENCE),
            "note": _some(ANNOTATION),
            "eventHistory": _some(REFERENCE),
        },
    ),
    _one_of({"medicationCodeableConcept": CONCEPT}, {"medicationReference": REFERENCE}),
    _one_of({"effectiveDateTime": DATE_TIME}, {"effectivePeriod": PERIOD}),
)
PATIENT_SHAPE = _merged(
    _object(
        {"resourceType": st.just("Patient"), "id": ID},
        {"gender": CODE, "birthDate": DATE_TIME, "active": BOOLEAN, "meta": META},
    ),
    _one_of({}, {"deceasedBoolean": BOOLEAN}, {"deceasedDateTime": DATE_TIME}),
)
SHAPES = {
    "vital-sign-quantity": _observation(_object({"valueQuantity": QUANTITY})),
    "ice-score-integer": _observation(_object({"valueInteger": INTEGER})),
    "oxygen-device-concept": _observation(_object({"valueCodeableConcept": CONCEPT})),
    "bp-panel-components": _observation(_object({"component": st.lists(COMPONENT, min_size=1, max_size=3)})),
    "drug-dose-coded": _administration(
        _object({"medicationCodeableConcept": CONCEPT}), _object({"effectiveDateTime": DATE_TIME})
    ),
    "infusion-period-by-reference": _administration(
        _object({"medicationReference": REFERENCE}), _object({"effectivePeriod": PERIOD})
    ),
    "patient-demographics": PATIENT_SHAPE,
}

EXTRA_KEYS = [
    "foo",
    "extension",
    "_status",
    "fhir_comments",
    "text",
    "id",
    "resourceType",
    "coding",
    "display",
    "end",
    "effectiveDateTime",
    "effectivePeriod",
    "effectiveInstant",
    "deceasedDateTime",
    "birthDate",
    "valueQuantity",
    "valueString",
    "medicationReference",
    "rateRatio",
]
JUNK: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            None,
            "",
            [],
            {},
            [None],
            [{}],
            "2025-01-01T00:00:00Z",
            {"start": "2025-01-01"},
            {"reference": "x"},
            {"value": 1},
            {"numerator": {"value": 1}},
        ]
    ),
    STRING,
)


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)


@st.composite
def _damaged(draw: st.DrawFn, shape: st.SearchStrategy[Any]) -> Resource:
    """A resource of ``shape``, half the time with one or two structural changes (a key dropped,
    added or replaced by null, an empty or other value)."""
    resource: Resource = copy.deepcopy(draw(shape))  # st.just values are shared: never edit them
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        target = draw(st.sampled_from(list(_objects(resource))))
        action = draw(st.sampled_from(["drop", "add", "replace"]))
        if action == "drop" and target:
            del target[draw(st.sampled_from(sorted(target)))]
        elif action == "add":
            target[draw(st.sampled_from(EXTRA_KEYS))] = copy.deepcopy(draw(JUNK))
        elif target:
            target[draw(st.sampled_from(sorted(target)))] = copy.deepcopy(draw(JUNK))
    return resource


RARER_SHAPES = {
    "observation-rarer-elements": RARE_OBSERVATION,
    "administration-rarer-elements": RARE_ADMINISTRATION,
}
"""Every other element the fast path accepts; seldom cited, so fewer examples (file under ~30 s)."""


def _check_generated(resource: Resource) -> None:
    fast = surely_valid(resource)
    event("fast path: valid" if fast else "fast path: ask the models")
    if fast:
        assert r4b_valid(resource), resource


@pytest.mark.parametrize("shape", list(SHAPES), ids=str)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_fast_valid_implies_models_valid(shape: str, data: st.DataObject) -> None:
    _check_generated(data.draw(_damaged(SHAPES[shape])))


@pytest.mark.parametrize("shape", list(RARER_SHAPES), ids=str)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_rarer_elements_fast_valid_implies_models_valid(shape: str, data: st.DataObject) -> None:
    _check_generated(data.draw(_damaged(RARER_SHAPES[shape])))
