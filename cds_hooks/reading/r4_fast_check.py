"""A fast, conservative answer to "is this cited resource valid FHIR R4 (R4B)?".

Building the R4B pydantic models costs ~90 us an Observation, and nearly every cited resource has
one of a few plain shapes (a vital sign, a drug given). ``surely_valid`` walks the JSON once and
says True only when every key is an element the R4B model defines for that type and every value
passes the rule the model applies to it (``fhir_core`` primitives: id, code, uri, string, date,
dateTime, instant, decimal, integer, boolean; required elements; one value per choice ``[x]``).
Types covered: Observation, MedicationAdministration and a Patient's demographics.
It is deliberately narrower than the models: anything it does not know (extensions, narrative,
contained resources, other types, a leap second, an id over 64 characters, a non-ASCII code, an
empty string, list or object, a null) answers False, which means "ask the models", never
"invalid". So a verdict can only be the one the models would give.
"""

from __future__ import annotations

import math
import re
from calendar import monthrange
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]
"""True: the value is surely valid for this element; False: don't know (the models decide)."""

# -- primitives ---------------------------------------------------------------------------------
# Each accepts a subset of what fhir_core accepts for the type (R4B models, fhir_core 1.1).

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CODE = re.compile(r"[!-~]+(?: [!-~]+)*")
_URI = re.compile(r"[!-~]+")
_VISIBLE = re.compile(r"[!-~]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_DATE_TIME = re.compile(
    r"(?P<year>[0-9]{4})"
    r"(?:-(?P<month>0[1-9]|1[0-2])"
    r"(?:-(?P<day>0[1-9]|[12][0-9]|3[01])"
    r"(?P<time>T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_DECIMAL_INT_LIMIT = 2**53
"""Larger whole numbers go to the models (Python refuses str() of an int over 4,300 digits)."""


def _string(value: Any) -> bool:
    """FHIR ``string``: the models want one character matching ``[ \\r\\n\\t\\S]`` and valid
    Unicode (a lone surrogate fails); here, one visible ASCII character and no surrogate."""
    return (
        type(value) is str
        and _VISIBLE.search(value) is not None
        and (value.isascii() or _SURROGATE.search(value) is None)
    )


def _code(value: Any) -> bool:
    """FHIR ``code``: no leading, trailing or double whitespace (here ASCII only)."""
    return type(value) is str and _CODE.fullmatch(value) is not None


def _uri(value: Any) -> bool:
    """FHIR ``uri`` / ``canonical``: the models accept any string; here non-empty, no spaces."""
    return type(value) is str and _URI.fullmatch(value) is not None


def _id(value: Any) -> bool:
    """FHIR ``id``: letters, digits, '-' and '.'; the models allow 255 characters, FHIR 64."""
    return type(value) is str and _ID.fullmatch(value) is not None


def _boolean(value: Any) -> bool:
    return type(value) is bool


def _integer(value: Any) -> bool:
    """FHIR ``integer``: 32-bit (a JSON true is not a number here)."""
    return type(value) is int and _INT_MIN <= value <= _INT_MAX


def _decimal(value: Any) -> bool:
    """FHIR ``decimal``: a JSON number; NaN and infinities fail the models' pattern."""
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and -_DECIMAL_INT_LIMIT <= value <= _DECIMAL_INT_LIMIT


def _real_day(year: str, month: str, day: str) -> bool:
    """The models parse a full date, so 2025-02-29 fails; year 0000 never matches FHIR's pattern."""
    if year == "0000":
        return False
    return int(day) <= 28 or int(day) <= monthrange(int(year), int(month))[1]


def _date_time(value: Any) -> bool:
    """FHIR ``dateTime``: YYYY, YYYY-MM, YYYY-MM-DD or a full time with a zone (no leap second)."""
    if type(value) is not str:
        return False
    found = _DATE_TIME.fullmatch(value)
    if found is None:
        return False
    day = found["day"]
    if day is None:
        return found["year"] != "0000"
    return _real_day(found["year"], found["month"], day)


def _date(value: Any) -> bool:
    """FHIR ``date``: YYYY, YYYY-MM or a real YYYY-MM-DD, no time."""
    return _date_time(value) and "T" not in value


def _instant(value: Any) -> bool:
    """FHIR ``instant``: a full date and time with a zone."""
    if type(value) is not str:
        return False
    found = _DATE_TIME.fullmatch(value)
    if found is None or found["time"] is None:
        return False
    return _real_day(found["year"], found["month"], found["day"])


def _exactly(expected: str) -> Check:
    def check(value: Any) -> bool:
        return type(value) is str and value == expected

    return check


# -- structure ----------------------------------------------------------------------------------


def _list_of(item: Check) -> Check:
    """A FHIR array: a non-empty JSON list whose every item passes (no nulls)."""

    def check(value: Any) -> bool:
        if type(value) is not list or not value:
            return False
        for entry in value:  # noqa: SIM110 (a loop: all() of a generator costs more, per list)
            if not item(entry):
                return False
        return True

    return check


def _element(
    rules: Mapping[str, Check],
    *,
    required: tuple[str, ...] = (),
    choices: tuple[tuple[str, ...], ...] = (),
    required_choices: tuple[tuple[str, ...], ...] = (),
) -> Check:
    """A non-empty JSON object whose keys are all in ``rules`` and whose values all pass.

    ``required``: elements the model insists on; ``choices``: ``[x]`` groups where at most one
    may appear; ``required_choices``: groups where exactly one must appear.
    """
    needed = frozenset(required)
    at_most_one = tuple(frozenset(group) for group in choices + required_choices)
    at_least_one = tuple(frozenset(group) for group in required_choices)

    def check(value: Any) -> bool:
        if type(value) is not dict or not value:
            return False
        for key, item in value.items():
            rule = rules.get(key)
            if rule is None or not rule(item):
                return False
        if needed and not value.keys() >= needed:
            return False
        for group in at_most_one:
            if len(group.intersection(value)) > 1:
                return False
        for group in at_least_one:  # noqa: SIM110 (as above)
            if group.isdisjoint(value):
                return False
        return True

    return check


# -- data types (only the elements listed; others go to the models) ----------------------------

_CODING = _element({"system": _uri, "version": _string, "code": _code, "display": _string, "userSelected": _boolean})
_CODEABLE_CONCEPT = _element({"coding": _list_of(_CODING), "text": _string})
_REFERENCE = _element({"reference": _string, "type": _uri, "display": _string})
_PERIOD = _element({"start": _date_time, "end": _date_time})
_QUANTITY = _element({"value": _decimal, "comparator": _code, "unit": _string, "system": _uri, "code": _code})
_RANGE = _element({"low": _QUANTITY, "high": _QUANTITY})
_RATIO = _element({"numerator": _QUANTITY, "denominator": _QUANTITY})
_IDENTIFIER = _element({"use": _code, "type": _CODEABLE_CONCEPT, "system": _uri, "value": _string, "period": _PERIOD})
_ANNOTATION = _element(
    {"authorReference": _REFERENCE, "authorString": _string, "time": _date_time, "text": _string},
    required=("text",),
    choices=(("authorReference", "authorString"),),
)
_META = _element(
    {
        "versionId": _id,
        "lastUpdated": _instant,
        "source": _uri,
        "profile": _list_of(_uri),
        "security": _list_of(_CODING),
        "tag": _list_of(_CODING),
    }
)

_CODEABLE_CONCEPTS = _list_of(_CODEABLE_CONCEPT)
_REFERENCES = _list_of(_REFERENCE)

_RESOURCE_BASE: dict[str, Check] = {"id": _id, "meta": _META, "implicitRules": _uri, "language": _code}
"""Resource's own elements (``text``, ``contained`` and extensions are left to the models)."""

_OBSERVATION_VALUES: dict[str, Check] = {
    "valueQuantity": _QUANTITY,
    "valueCodeableConcept": _CODEABLE_CONCEPT,
    "valueString": _string,
    "valueBoolean": _boolean,
    "valueInteger": _integer,
    "valueRange": _RANGE,
    "valueRatio": _RATIO,
    "valuePeriod": _PERIOD,
    "valueDateTime": _date_time,
}
_VALUE_CHOICE = tuple(_OBSERVATION_VALUES)

_REFERENCE_RANGE = _element(
    {
        "low": _QUANTITY,
        "high": _QUANTITY,
        "type": _CODEABLE_CONCEPT,
        "appliesTo": _CODEABLE_CONCEPTS,
        "age": _RANGE,
        "text": _string,
    }
)
_OBSERVATION_COMPONENT = _element(
    {
        "code": _CODEABLE_CONCEPT,
        **_OBSERVATION_VALUES,
        "dataAbsentReason": _CODEABLE_CONCEPT,
        "interpretation": _CODEABLE_CONCEPTS,
        "referenceRange": _list_of(_REFERENCE_RANGE),
    },
    required=("code",),
    choices=(_VALUE_CHOICE,),
)
_OBSERVATION = _element(
    {
        "resourceType": _exactly("Observation"),
        **_RESOURCE_BASE,
        "identifier": _list_of(_IDENTIFIER),
        "basedOn": _REFERENCES,
        "partOf": _REFERENCES,
        "status": _code,
        "category": _CODEABLE_CONCEPTS,
        "code": _CODEABLE_CONCEPT,
        "subject": _REFERENCE,
        "focus": _REFERENCES,
        "encounter": _REFERENCE,
        "effectiveDateTime": _date_time,
        "effectivePeriod": _PERIOD,
        "effectiveInstant": _instant,
        "issued": _instant,
        "performer": _REFERENCES,
        **_OBSERVATION_VALUES,
        "dataAbsentReason": _CODEABLE_CONCEPT,
        "interpretation": _CODEABLE_CONCEPTS,
        "note": _list_of(_ANNOTATION),
        "bodySite": _CODEABLE_CONCEPT,
        "method": _CODEABLE_CONCEPT,
        "specimen": _REFERENCE,
        "device": _REFERENCE,
        "referenceRange": _list_of(_REFERENCE_RANGE),
        "hasMember": _REFERENCES,
        "derivedFrom": _REFERENCES,
        "component": _list_of(_OBSERVATION_COMPONENT),
    },
    required=("resourceType", "status", "code"),
    choices=(("effectiveDateTime", "effectivePeriod", "effectiveInstant"), _VALUE_CHOICE),
)

_DOSAGE = _element(
    {
        "text": _string,
        "site": _CODEABLE_CONCEPT,
        "route": _CODEABLE_CONCEPT,
        "method": _CODEABLE_CONCEPT,
        "dose": _QUANTITY,
        "rateRatio": _RATIO,
        "rateQuantity": _QUANTITY,
    },
    choices=(("rateRatio", "rateQuantity"),),
)
_ADMINISTRATION_PERFORMER = _element({"function": _CODEABLE_CONCEPT, "actor": _REFERENCE}, required=("actor",))
_MEDICATION_ADMINISTRATION = _element(
    {
        "resourceType": _exactly("MedicationAdministration"),
        **_RESOURCE_BASE,
        "identifier": _list_of(_IDENTIFIER),
        "instantiates": _list_of(_uri),
        "partOf": _REFERENCES,
        "status": _code,
        "statusReason": _CODEABLE_CONCEPTS,
        "category": _CODEABLE_CONCEPT,
        "medicationCodeableConcept": _CODEABLE_CONCEPT,
        "medicationReference": _REFERENCE,
        "subject": _REFERENCE,
        "context": _REFERENCE,
        "supportingInformation": _REFERENCES,
        "effectiveDateTime": _date_time,
        "effectivePeriod": _PERIOD,
        "performer": _list_of(_ADMINISTRATION_PERFORMER),
        "reasonCode": _CODEABLE_CONCEPTS,
        "reasonReference": _REFERENCES,
        "request": _REFERENCE,
        "device": _REFERENCES,
        "note": _list_of(_ANNOTATION),
        "dosage": _DOSAGE,
        "eventHistory": _REFERENCES,
    },
    required=("resourceType", "status", "subject"),
    required_choices=(
        ("effectiveDateTime", "effectivePeriod"),
        ("medicationCodeableConcept", "medicationReference"),
    ),
)

_PATIENT = _element(
    {
        "resourceType": _exactly("Patient"),
        **_RESOURCE_BASE,
        "active": _boolean,
        "gender": _code,
        "birthDate": _date,
        "deceasedBoolean": _boolean,
        "deceasedDateTime": _date_time,
    },
    required=("resourceType",),
    choices=(("deceasedBoolean", "deceasedDateTime"),),
)
"""Only the demographics a grade reads (age for paediatric thresholds): a hook call cites it."""

_RESOURCES: dict[str, Check] = {
    "Observation": _OBSERVATION,
    "MedicationAdministration": _MEDICATION_ADMINISTRATION,
    "Patient": _PATIENT,
}


def surely_valid(resource: Mapping[str, Any]) -> bool:
    """True only if the R4B models would accept ``resource``; False means "ask the models"."""
    if type(resource) is not dict:
        return False
    kind = resource.get("resourceType")
    if type(kind) is not str:
        return False
    check = _RESOURCES.get(kind)
    return check is not None and check(resource)
