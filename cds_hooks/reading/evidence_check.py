"""Validate the resources a grade rests on against the FHIR R4 (R4B) models.

Extraction reads plain JSON so a hook call does not build models for the hundreds of resources
that never become evidence. What does become evidence is validated here; a resource that fails
is dropped from the record and the grade is computed again, so unvalidated data never counts.

Most cited resources have a plain shape that ``r4_fast_check`` can vouch for element by element
(~7 us instead of ~90 us for the models); it only ever says "valid" or "ask the models", so
every verdict is the models' own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any

import orjson
from pydantic import ValidationError

from cds_hooks.reading.r4_fast_check import surely_valid
from cds_hooks.reading.reader import SourcedResource

_MODULES = {
    "Observation": "observation",
    "MedicationAdministration": "medicationadministration",
    "Procedure": "procedure",
    "Condition": "condition",
    "Patient": "patient",
    "Medication": "medication",
    "MedicationRequest": "medicationrequest",
    "ServiceRequest": "servicerequest",
    "QuestionnaireResponse": "questionnaireresponse",
}
"""Every type the reader or the order checks take as evidence (reading/reader.py handlers, the
order hooks' draft resources). A type not listed here is never vouched for: see ``_validate``."""


@cache
def _validator(resource_type: str) -> Callable[[Mapping[str, Any]], object] | None:
    module_name = _MODULES.get(resource_type)
    if module_name is None:
        return None
    module = importlib.import_module(f"fhir.resources.R4B.{module_name}")
    model = getattr(module, resource_type)
    validate: Callable[[Mapping[str, Any]], object] = model.model_validate
    return validate


def validation_problem(resource: Mapping[str, Any]) -> str | None:
    """None when the resource is valid FHIR R4, else a short reason (no values echoed).

    A resource the fast check vouches for is valid without building the models. Otherwise,
    charts are reopened all day with the same resources: the verdict is remembered by the
    resource's exact content (canonical JSON), so an identical resource is validated once.
    """
    if surely_valid(resource):
        return None
    try:
        key = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _validate(resource)
    if key in _VERDICTS:
        return _VERDICTS[key]
    verdict = _validate(resource)
    if len(_VERDICTS) >= VERDICT_CACHE_SIZE:
        _VERDICTS.pop(next(iter(_VERDICTS)))
    _VERDICTS[key] = verdict
    return verdict


VERDICT_CACHE_SIZE = 5_000
"""Bounded (oldest out first): a few MB at most, whatever clients send."""
_VERDICTS: dict[bytes, str | None] = {}


def _validate(resource: Mapping[str, Any]) -> str | None:
    """Fail closed: a type without a model here, or a model that breaks on the input (odd shapes,
    nesting deep enough for a RecursionError), is a reason, never a pass."""
    validate = _validator(str(resource.get("resourceType")))
    if validate is None:
        return UNVALIDATED_TYPE
    try:
        validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "resource"
        return f"fails FHIR R4 validation at {where}: {first.get('type', 'invalid')}"
    except Exception as exc:  # any failure of the models means "not shown valid": fail closed
        return f"fails FHIR R4 validation: {type(exc).__name__}"
    return None


UNVALIDATED_TYPE = "fails FHIR R4 validation: not a resource type this service validates"


def invalid_references(references: Iterable[str], resources: Mapping[str, SourcedResource]) -> dict[str, str]:
    """The evidence references whose resources fail validation, with the reason."""
    bad: dict[str, str] = {}
    for reference in dict.fromkeys(references):
        item = resources.get(reference)
        if item is None:
            continue
        problem = validation_problem(item.resource)
        if problem is not None:
            bad[reference] = problem
    return bad
