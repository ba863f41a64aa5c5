"""Properties over many generated patients: adding support never lowers the grade, and grading
never crashes, whatever the resources look like."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

AT = datetime(2025, 3, 4, 8, tzinfo=UTC)
GRADING = Grading(load_terminology(), load_units())
PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

hours_before = st.floats(min_value=0.0, max_value=30.0, allow_nan=False)


def _time(hours: float) -> str:
    return (AT - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def _obs(rid: str, hours: float, code: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": _time(hours),
        **value,
    }


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


@st.composite
def temperature(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    return _obs(
        rid, draw(hours_before), "8310-5", **_qty(draw(st.floats(35.0, 41.0).map(lambda v: round(v, 1))), "Cel")
    )


@st.composite
def systolic(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    return _obs(rid, draw(hours_before), "8480-6", **_qty(draw(st.integers(60, 140)), "mm[Hg]"))


@st.composite
def flow(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    return _obs(rid, draw(hours_before), "3151-8", **_qty(draw(st.sampled_from([0, 1, 2, 4, 6, 8, 15])), "L/min"))


DEVICES = ["336623009", "426854004", "427591007", "425478008", "706226000", "26412008"]


@st.composite
def device(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    value = {"coding": [{"system": SCT, "code": draw(st.sampled_from(DEVICES))}]}
    observation = _obs(rid, draw(hours_before), "8310-5", valueCodeableConcept=value)
    observation["code"] = {"text": "O2 device"}
    return observation


@st.composite
def patient_resources(draw: st.DrawFn) -> list[dict[str, Any]]:
    makers = [temperature, systolic, flow, device]
    count = draw(st.integers(0, 8))
    return [PATIENT] + [draw(draw(st.sampled_from(makers))(f"r{i}")) for i in range(count)]


def _pressor(rid: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": rid,
        "status": "in-progress",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
        "effectivePeriod": {"start": _time(2)},
    }


def _procedure(rid: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": "in-progress",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": SCT, "code": code}]},
        "performedPeriod": {"start": _time(1)},
    }


SUPPORT_ADDED = st.sampled_from(
    [
        _pressor("add-ne", "7512"),
        _pressor("add-vaso", "11149"),
        _pressor("add-phenyl", "8163"),
        _procedure("add-cpap", "47545007"),
        _procedure("add-hfnc", "1259025002"),
        _obs("add-fever", 0.5, "8310-5", **_qty(39.2, "Cel")),
        _obs("add-low-bp", 0.5, "8480-6", **_qty(80, "mm[Hg]")),
    ]
)


def _grade(resources: list[dict[str, Any]]) -> Evaluation:
    sourced = [SourcedResource(r, f"{r['resourceType']}/{r['id']}") for r in resources]
    return evaluate(sourced, patient_id="p1", at=AT, grading=GRADING)


def _severity(evaluation: Evaluation) -> int:
    """What the data prove: the grade, else the proven minimum, else nothing (-1)."""
    result = evaluation.primary
    if result.grade is not None:
        return result.grade
    return result.grade_at_least if result.grade_at_least is not None else -1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=patient_resources(), added=SUPPORT_ADDED)
def test_adding_support_never_lowers_the_grade(base: list[dict[str, Any]], added: dict[str, Any]) -> None:
    before = _severity(_grade(base))
    after = _severity(_grade([*base, added]))
    assert after >= before


@settings(max_examples=100, deadline=None)
@given(base=patient_resources())
def test_worst_grade_is_never_below_the_current_grade(base: list[dict[str, Any]]) -> None:
    result = _grade(base).primary
    if result.grade is not None:
        assert result.worst_grade is not None and result.worst_grade >= result.grade


json_scalars = (
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FIELDS = [
    "status",
    "code",
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "component",
    "effectiveDateTime",
    "effectivePeriod",
    "subject",
    "medicationCodeableConcept",
    "medicationReference",
    "contained",
    "dosage",
    "performedPeriod",
    "performedDateTime",
    "clinicalStatus",
    "verificationStatus",
    "onsetDateTime",
    "birthDate",
]


@st.composite
def mutated_resource(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible resource with random fields replaced by arbitrary JSON."""
    base = draw(
        st.sampled_from(
            [
                _obs("m", 1, "8310-5", **_qty(39.0, "Cel")),
                _obs(
                    "m",
                    1,
                    "85354-9",
                    component=[
                        {
                            "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                            "valueQuantity": {"value": 80, "code": "mm[Hg]"},
                        }
                    ],
                ),
                _pressor("m", "7512"),
                _procedure("m", "47545007"),
                {
                    "resourceType": "Condition",
                    "id": "m",
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D89.832"}]},
                },
                dict(PATIENT, id="m"),
            ]
        )
    )
    resource = dict(base)
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        resource[field] = draw(json_values)
    return resource


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources=st.lists(mutated_resource(), max_size=5))
def test_grading_is_total_over_arbitrary_resources(resources: list[dict[str, Any]]) -> None:
    for index, resource in enumerate(resources):
        resource["id"] = f"m{index}"
    evaluation = _grade([PATIENT, *resources])
    result = evaluation.primary
    assert result.grade in (None, 0, 1, 2, 3, 4)
    assert result.to_json()["system"] == "ASTCT-2019"


# -- the worst-grade scan: fewer moments, same answer ----------------------------------------

wide_hours = st.floats(min_value=0.0, max_value=110.0, allow_nan=False)


@st.composite
def course(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A random 4-day course: vitals, pressors that start and stop, oxygen devices and flows,
    room air, respiratory procedures, masking therapies, a CRS condition, any age."""
    age_days = draw(st.integers(200, 80 * 365))
    patient = dict(PATIENT, birthDate=(AT - timedelta(days=age_days)).date().isoformat())
    resources: list[dict[str, Any]] = [patient]
    for i in range(draw(st.integers(0, 14))):
        kind = draw(
            st.sampled_from(
                ["temp", "sbp", "map", "flow", "device", "room-air", "pressor", "procedure", "therapy", "condition"]
            )
        )
        hours = draw(wide_hours)
        rid = f"c{i}"
        if kind == "temp":
            resources.append(_obs(rid, hours, "8310-5", **_qty(draw(st.sampled_from([36.8, 37.9, 38.0, 39.4])), "Cel")))
        elif kind == "sbp":
            resources.append(_obs(rid, hours, "8480-6", **_qty(draw(st.sampled_from([65, 75, 85, 95, 120])), "mm[Hg]")))
        elif kind == "map":
            resources.append(_obs(rid, hours, "8478-0", **_qty(draw(st.sampled_from([55, 64, 70])), "mm[Hg]")))
        elif kind == "flow":
            resources.append(_obs(rid, hours, "3151-8", **_qty(draw(st.sampled_from([0, 2, 6, 10])), "L/min")))
        elif kind == "device":
            resources.append(draw(device(rid)) | {"effectiveDateTime": _time(hours)})
        elif kind == "room-air":
            room_air = _obs(rid, hours, "8310-5", valueCodeableConcept={"text": "room air"})
            room_air["code"] = {"text": "O2 device"}
            resources.append(room_air)
        elif kind == "pressor":
            pressor = _pressor(rid, draw(st.sampled_from(["7512", "3992", "11149", "8163"])))
            ran = draw(st.floats(0.5, 30.0))
            pressor["status"] = "completed"
            pressor["effectivePeriod"] = {"start": _time(hours), "end": _time(max(hours - ran, 0.0))}
            resources.append(pressor)
        elif kind == "procedure":
            procedure = _procedure(rid, draw(st.sampled_from(["47545007", "1259025002", "371907003"])))
            procedure["performedPeriod"] = {"start": _time(hours)}
            if draw(st.booleans()):
                procedure["status"] = "completed"
                procedure["performedPeriod"]["end"] = _time(max(hours - draw(st.floats(0.5, 20.0)), 0.0))
            resources.append(procedure)
        elif kind == "therapy":
            therapy = _pressor(rid, draw(st.sampled_from(["612865", "3264"])))
            therapy["status"] = "completed"
            therapy["effectivePeriod"] = {"start": _time(hours), "end": _time(hours)}
            resources.append(therapy)
        else:
            resources.append(
                {
                    "resourceType": "Condition",
                    "id": rid,
                    "subject": {"reference": "Patient/p1"},
                    "clinicalStatus": {
                        "coding": [
                            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                        ]
                    },
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D89.832"}]},
                    "onsetDateTime": _time(hours),
                }
            )
    return resources


@settings(
    max_examples=int(os.environ.get("CRS_CDS_PROPERTY_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(resources=course())
def test_worst_grade_scan_at_events_equals_scan_at_every_data_time(resources: list[dict[str, Any]]) -> None:
    from cds_hooks.grading import astct
    from cds_hooks.reading.reader import extract_record

    sourced = [SourcedResource(r, f"{r['resourceType']}/{r['id']}") for r in resources]
    record = extract_record(sourced, GRADING.terminology, GRADING.units, patient_id="p1")
    fast = astct.grade(record, at=AT)
    full = astct.grade(record, at=AT, exhaustive=True)
    assert (fast.grade, fast.worst_grade) == (full.grade, full.worst_grade)
