"""The reading fast paths (issue 14) give the record the general path gives, never another one.

Why: a registry run reads every line of an export, so the common shapes take short cuts: lines
sorted and parsed as bytes, one-coding vital signs read without the general Observation logic,
unit conversions remembered, an exact subject reference accepted at once, the end of the data
read off sorted lists. Clinical safety needs each short cut to be invisible: these tests compare
it with the way it replaces, on tables of cases and on generated charts.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from cds_hooks.reading.fhir_rules import PatientCheck, SourcedResource, belongs_to_patient, subject_reference
from cds_hooks.reading.reader import extract_record
from cds_hooks.reading.record import BloodPressure, NotEvidence, OxygenRecord, PatientRecord, SpO2, Temperature
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import UCUM_SYSTEM, load_units
from cds_hooks.registry.per_patient import _parse_by_reference, end_of_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_builders import LOINC, PATIENT_ID, Resource

TERMS = load_terminology()
UNITS = load_units()
AT = datetime(2025, 3, 1, 10, tzinfo=UTC)
NOT_MAPPED = {"system": "urn:example:local", "code": "not-mapped"}


def vital(code: str, quantity: Any, **fields: Any) -> Resource:
    resource: Resource = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": "2025-03-01T10:00:00Z",
        "valueQuantity": quantity,
    }
    resource.update(fields)
    return {k: v for k, v in resource.items() if v is not None}


def ucum(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM_SYSTEM, "code": code}


def read(*resources: Resource, **options: Any) -> PatientRecord:
    sourced = [SourcedResource(r, f"{r['resourceType']}/{r['id']}") for r in resources]
    return extract_record(sourced, TERMS, UNITS, patient_id=options.pop("patient_id", PATIENT_ID), **options)


def general_path(resource: Resource) -> Resource:
    """The same Observation with a second, unmapped coding: it can only take the general path."""
    out = copy.deepcopy(resource)
    out["code"]["coding"].append(NOT_MAPPED)
    return out


# -- one value, one finding -------------------------------------------------------------------

REF = "Observation/o1"
ONE_VALUE = [
    pytest.param(
        vital("8310-5", ucum(38.25, "Cel")),
        "temperatures",
        Temperature(AT, 38.3, "38.25 Cel", REF),
        id="temperature-rounded-half-up",
    ),
    pytest.param(
        vital("8310-5", ucum(101.3, "[degF]")),
        "temperatures",
        Temperature(AT, 38.5, "101.3 [degF]", REF),
        id="temperature-in-degF",
    ),
    pytest.param(
        vital("8480-6", ucum(85, "mm[Hg]")),
        "blood_pressures",
        BloodPressure(AT, REF, systolic_mmhg=85.0),
        id="systolic-alone-derives-no-map",
    ),
    pytest.param(
        vital("8462-4", ucum(50, "mm[Hg]")),
        "blood_pressures",
        BloodPressure(AT, REF, diastolic_mmhg=50.0),
        id="diastolic-alone",
    ),
    pytest.param(
        vital("8478-0", ucum(60, "mm[Hg]")),
        "blood_pressures",
        BloodPressure(AT, REF, mean_mmhg=60.0),
        id="charted-map-is-not-derived",
    ),
    pytest.param(vital("59408-5", ucum(91, "%")), "spo2", SpO2(AT, 91.0, REF), id="spo2"),
    pytest.param(
        vital("3151-8", ucum(0, "L/min")),
        "oxygen",
        OxygenRecord(AT, REF, flow_l_min=0.0, room_air=True),
        id="flow-0-is-room-air",
    ),
    pytest.param(
        vital("3150-0", ucum(21, "%")),
        "oxygen",
        OxygenRecord(AT, REF, fio2_percent=21.0, room_air=True),
        id="fio2-21-is-room-air",
    ),
]


@pytest.mark.parametrize(("resource", "part", "finding"), ONE_VALUE)
def test_one_value_makes_one_finding_as_the_general_path_does(resource: Resource, part: str, finding: object) -> None:
    fast, general = read(resource), read(general_path(resource))
    assert getattr(fast, part) == [finding]
    assert fast == general


REFUSED = [
    pytest.param(
        vital("8310-5", ucum(38, "Cel"), status="cancelled"), "Observation status is 'cancelled'", id="status"
    ),
    pytest.param(
        vital("8310-5", ucum(38, "Cel"), subject={"reference": "Patient/other"}),
        "belongs to another patient",
        id="another-patient",
    ),
    pytest.param(
        vital("8310-5", ucum(38, "Cel"), effectiveDateTime="2025-03-01T10:00:00+24:00"),
        "time '2025-03-01T10:00:00+24:00' is not a valid dateTime",
        id="offset-out-of-range",
    ),
    pytest.param(
        vital("8310-5", ucum(38, "Cel"), dataAbsentReason={"text": "refused"}),
        "no value (dataAbsentReason)",
        id="data-absent",
    ),
    pytest.param(
        vital("8310-5", {"value": 38, "code": "Cel", "comparator": ">"}),
        "body temperature: value has a comparator (>), not an exact measurement",
        id="comparator",
    ),
    pytest.param(
        vital("8310-5", {"value": 38, "code": ["Cel"]}),
        "body temperature: unit missing",
        id="unhashable-unit-code",
    ),
    pytest.param(
        vital("8310-5", ucum(55, "Cel")),
        "body temperature: value 55 Cel is outside the plausible range 25-45 Cel",
        id="implausible",
    ),
    pytest.param(
        vital("3151-8", {"value": 2, "unit": "litres a minute"}),
        "oxygen flow: unknown unit 'litres a minute'",
        id="unreadable-oxygen-flow",
    ),
]


@pytest.mark.parametrize(("resource", "reason"), REFUSED)
def test_a_refused_value_has_the_general_paths_reason(resource: Resource, reason: str) -> None:
    fast, general = read(resource), read(general_path(resource))
    assert fast.not_evidence == [NotEvidence(REF, reason)]
    assert fast == general


def test_a_date_only_time_is_still_an_interval() -> None:
    record = read(vital("8310-5", ucum(38, "Cel"), effectiveDateTime="2025-03-01"), site_zone=ZoneInfo("Europe/Paris"))
    assert [(t.time, t.latest) for t in record.temperatures] == [
        (datetime(2025, 2, 28, 23, tzinfo=UTC), datetime(2025, 3, 1, 22, 59, 59, 999999, tzinfo=UTC))
    ]


# -- generated Observations: fast path == general path ------------------------------------------

CODES = ["8310-5", "8480-6", "8462-4", "8478-0", "59408-5", "59410-1", "3151-8", "3150-0", "29463-7"]
OTHER_CODES = ["96607-7", "85354-9", "1988-5", "600-7", "8867-4"]  # average BP, panel, lab, culture, unmapped
TIMES = [
    "2025-03-01T10:00:00Z",
    "2025-03-01T10:00:00.5+02:00",
    "2025-03-01T10:00:00.1234567Z",
    "2025-03-01T10:00",
    "2025-03-01",
    "0001-01-01T00:30:00+01:00",
    "not a time",
    None,
    7,
]
QUANTITIES = [
    ucum(38.2, "Cel"),
    ucum(101.3, "[degF]"),
    {"value": 38, "unit": "degF"},
    ucum(85, "mm[Hg]"),
    ucum(0, "L/min"),
    ucum(4, "L/min"),
    ucum(21, "%"),
    ucum(0.6, "1"),
    ucum(93, "%"),
    ucum(70, "kg"),
    {"value": 38, "code": "Cel", "system": "urn:other"},
    {"value": True, "code": "Cel"},
    {"value": 38, "code": "Cel", "comparator": "<"},
    {"value": 38, "code": {"bad": 1}},
    {"value": 38},
    None,
]


@st.composite
def observations(draw: st.DrawFn) -> Resource:
    code = draw(st.sampled_from(CODES + OTHER_CODES))
    resource = vital(
        code,
        copy.deepcopy(draw(st.sampled_from(QUANTITIES))),
        status=draw(st.sampled_from(["final", "amended", "preliminary", "cancelled", None, 3])),
        subject=draw(
            st.sampled_from(
                [
                    {"reference": f"Patient/{PATIENT_ID}"},
                    {"reference": f"Patient/{PATIENT_ID}/"},
                    {"reference": f"https://ehr.example/fhir/Patient/{PATIENT_ID}"},
                    {"reference": "Patient/other"},
                    {"reference": 5},
                    {},
                    None,
                ]
            )
        ),
        effectiveDateTime=draw(st.sampled_from(TIMES)),
    )
    if draw(st.booleans()):  # another time element beside or instead of effectiveDateTime
        period = {"start": draw(st.sampled_from(TIMES)), "end": draw(st.sampled_from(TIMES))}
        resource["effectivePeriod"] = {k: v for k, v in period.items() if v is not None}
        if draw(st.booleans()):
            resource.pop("effectiveDateTime", None)
    if draw(st.integers(0, 9)) == 0:
        resource["dataAbsentReason"] = {"text": "x"}
    return resource


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chart=st.lists(observations(), min_size=1, max_size=4),
    zone=st.sampled_from([None, ZoneInfo("Europe/Paris")]),
    now=st.sampled_from([None, AT, AT.astimezone(timezone(timedelta(hours=2)))]),
)
def test_generated_observations_read_alike_on_both_paths(
    chart: list[Resource], zone: ZoneInfo | None, now: datetime | None
) -> None:
    for number, resource in enumerate(chart):
        resource["id"] = f"o{number}"
    fast = read(*chart, site_zone=zone, now=now)
    assert fast == read(*(general_path(r) for r in chart), site_zone=zone, now=now)


# -- the patient check --------------------------------------------------------------------------

SUBJECTS = [
    pytest.param("p1", {"subject": {"reference": "Patient/p1"}}, True, id="exact-reference"),
    pytest.param("p1", {"subject": {"reference": "Patient/p1/"}}, True, id="trailing-slash"),
    pytest.param("p1", {"subject": {"reference": "https://ehr.example/Patient/p1"}}, True, id="absolute-url"),
    pytest.param("p1", {"subject": {"reference": "Patient/p2"}}, False, id="another-patient"),
    pytest.param("p1", {"subject": {}, "patient": {"reference": "Patient/p1"}}, True, id="empty-subject-then-patient"),
    pytest.param("p1/", {"subject": {"reference": "Patient/p1/"}}, False, id="id-ending-in-slash-never-matches"),
    pytest.param("p1", {}, True, id="no-subject-search-was-by-patient"),
    pytest.param(None, {"subject": {"reference": "Patient/p2"}}, True, id="no-patient-in-context"),
]


@pytest.mark.parametrize(("patient_id", "resource", "owned"), SUBJECTS)
def test_the_patient_check_answers_as_the_reference_rule(
    patient_id: str | None, resource: dict[str, Any], owned: bool
) -> None:
    assert PatientCheck(patient_id)(resource) is owned
    assert belongs_to_patient(resource, patient_id) is owned
    reference = subject_reference(resource)
    if patient_id is not None and reference is not None:  # the rule spelled out
        assert owned == (reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}"))


# -- parsing lines as bytes -----------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(texts=st.lists(st.text(max_size=8), max_size=8))
def test_utf8_bytes_sort_in_the_code_point_order_of_their_text(texts: list[str]) -> None:
    assert sorted(t.encode() for t in texts) == [t.encode() for t in sorted(texts)]


IDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=4)


@st.composite
def export_lines(draw: st.DrawFn) -> list[str]:
    """NDJSON lines: resources whose ids share prefixes and differ in any code point, copies of
    a reference with other content, and lines that are not resources at all."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["Observation", "Patient", "Procedure", 5]))
        resource = {"resourceType": kind, "id": draw(IDS), "n": draw(st.integers(0, 3))}
        lines.append(orjson.dumps(resource).decode())
    lines += draw(st.lists(st.sampled_from(["not json", "[1, 2]", "{}", '{"id": "x"}', '"text"']), max_size=2))
    return draw(st.permutations(lines))


def _parse(lines: list[str] | list[bytes] | list[str | bytes], rejected: Counter[str]) -> list[SourcedResource]:
    """Each resource once, in the order the registry's parse gives them."""
    return list(_parse_by_reference(lines, rejected).values())


@settings(max_examples=400, deadline=None)
@given(lines=export_lines())
def test_lines_as_bytes_parse_as_lines_as_text(lines: list[str]) -> None:
    as_text, as_bytes, mixed = Counter[str](), Counter[str](), Counter[str]()
    read_text = _parse(lines, as_text)
    assert _parse([line.encode() for line in lines], as_bytes) == read_text
    half = [line.encode() if n % 2 else line for n, line in enumerate(lines)]
    assert _parse(half, mixed) == read_text
    assert as_text == as_bytes == mixed


def test_the_first_copy_in_code_point_order_wins_whatever_the_delivery() -> None:
    lines = [
        '{"resourceType":"Patient","id":"\u20ac","v":2}',
        '{"resourceType":"Patient","id":"\u00e9","v":1}',
        '{"id":"\u00e9","resourceType":"Patient","v":3}',
        '{"resourceType":"Patient","id":"\u00e9","v":0}',
    ]
    for delivered in (lines, [line.encode() for line in reversed(lines)]):
        parsed = _parse(delivered, Counter())
        # '{"id"' sorts before '{"resourceType"', and U+00E9 before U+20AC (bytes C3 A9 < E2 82 AC)
        assert [(r.reference, r.resource["v"]) for r in parsed] == [("Patient/\u00e9", 3), ("Patient/\u20ac", 2)]


def test_a_line_that_is_not_utf8_still_fails_the_patient() -> None:
    with pytest.raises(UnicodeDecodeError):
        _parse([b'{"resourceType":"Patient","id":"p1"}', b'{"resourceType":"Patient","id":"\xff"}'], Counter())


# -- the end of the data ----------------------------------------------------------------------------


def test_the_end_of_the_data_is_the_first_latest_finding() -> None:
    paris = timezone(timedelta(hours=1))
    late, same_instant = datetime(2025, 3, 2, 12, tzinfo=UTC), datetime(2025, 3, 2, 13, tzinfo=paris)
    record = PatientRecord(
        temperatures=[Temperature(AT, 37.0, "37 Cel", "t1"), Temperature(late, 37.0, "37 Cel", "t2")],
        spo2=[SpO2(same_instant, 95.0, "s1"), SpO2(same_instant, 96.0, "s2")],
        oxygen=[OxygenRecord(AT, "o1", period_end=late - timedelta(hours=1))],
    )
    record.sort()
    end = end_of_data(record)
    assert end == late
    assert end.tzinfo is UTC  # the temperature comes first in the scan: its datetime is the answer
    assert end_of_data(PatientRecord()) == datetime.fromtimestamp(0).astimezone()
