"""Build CDS Hooks patient-view requests from a FHIR Bundle, as an EHR's prefetch would."""

from __future__ import annotations

import uuid
from typing import Any

from cds_hooks.reading.labs import builtin_labs

SUPPORT_VALUE_SYSTEM = "http://snomed.info/sct"


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"http://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
        ],
    }


def _is_device_observation(resource: dict[str, Any]) -> bool:
    value = resource.get("valueCodeableConcept")
    return isinstance(value, dict) and "valueQuantity" not in resource and "component" not in resource


def _is_vital_sign(resource: dict[str, Any]) -> bool:
    return any(
        coding.get("code") == "vital-signs"
        for category in resource.get("category", [])
        for coding in category.get("coding", [])
    )


ICANS_SYSTEM = "http://hospital.example.org/fhir/CodeSystem/icans"


def _is_icans(resource: dict[str, Any]) -> bool:
    return any(
        coding.get("system") == ICANS_SYSTEM or coding.get("code") == "9269-2"
        for coding in resource.get("code", {}).get("coding", [])
    )


def prefetch_from_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """Every prefetch key filled from the bundle, split the way the templates search."""
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    observations = by_type.get("Observation", [])
    patients = by_type.get("Patient", [])
    return {
        "patient": patients[0] if patients else None,
        "observations": _searchset([o for o in observations if not _is_device_observation(o)]),
        "oxygenDevices": _searchset([o for o in observations if _is_device_observation(o)]),
        "vitalSigns": _searchset([o for o in observations if _is_vital_sign(o)]),
        "medicationAdministrations": _searchset(by_type.get("MedicationAdministration", [])),
        "procedures": _searchset(by_type.get("Procedure", [])),
        "conditions": _searchset(by_type.get("Condition", [])),
        # ICANS (optional keys): neurologic Observations are found by code in the service; a test
        # bundle's ICANS rows are the Observations coded in the example ICANS system or GCS.
        "icansAssessments": _searchset([o for o in observations if _is_icans(o)]),
        "iceQuestionnaires": _searchset(by_type.get("QuestionnaireResponse", [])),
        # Labs (optional key, issue 18): the Observations whose code mappings/labs.yaml maps.
        "labResults": _searchset([o for o in observations if builtin_labs().match(o.get("code")) is not None]),
    }


def patient_view(patient_id: str, *, prefetch: dict[str, Any] | None, at: str | None, **extra: Any) -> dict[str, Any]:
    """A patient-view request; ``at`` sets the evaluation time through the service's extension."""
    request: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
    }
    if prefetch is not None:
        request["prefetch"] = prefetch
    if at is not None:
        request["extension"] = {"crs-cds-hooks.at": at}
    request.update(extra)
    return request
