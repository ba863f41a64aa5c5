"""Smoke tests of the real FHIR server used by the integration suite.

Why: the CDS service's prefetch and queries rely on these exact search features; if the server
(or its version) stops supporting one, this file says which, before the CDS tests fail obscurely.
Every search is sent with `Prefer: handling=strict` so an unsupported parameter is a 400 instead
of being silently ignored (which would widen the result set).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fhir_server import RunningFhirServer

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
STRICT = {"Prefer": "handling=strict", "Accept": "application/fhir+json"}

HBA1C = "4548-4"
SMOKING_STATUS = "72166-2"
DAILY_SMOKER = "449868002"


@dataclass(frozen=True)
class Ids:
    """Ids of the loaded data; unique per run because the server is shared by the whole session."""

    patient: str
    other_patient: str
    obs_hba1c: str
    obs_smoking: str
    obs_other: str
    med_admin_contained: str
    med_admin_referenced: str
    medication: str
    procedure: str
    condition: str


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _resources(ids: Ids) -> list[dict[str, Any]]:
    """A Patient, 2 Observations, a MedicationAdministration with a contained Medication, plus
    what the other searches need: a second patient (to prove filtering), a MedicationAdministration
    that references a standalone Medication (the only kind _include can return), a Procedure and
    a Condition."""
    subject = {"reference": f"Patient/{ids.patient}"}
    return [
        {
            "resourceType": "Patient",
            "id": ids.patient,
            "name": [{"family": "Smoke", "given": ["Tess"]}],
            "gender": "female",
            "birthDate": "1960-05-17",
        },
        {
            "resourceType": "Patient",
            "id": ids.other_patient,
            "name": [{"family": "Other"}],
        },
        {
            "resourceType": "Observation",
            "id": ids.obs_hba1c,
            "status": "final",
            "code": _coding(LOINC, HBA1C),
            "subject": subject,
            "effectiveDateTime": "2024-01-15T09:00:00Z",
            "valueQuantity": {
                "value": 8.2,
                "unit": "%",
                "system": "http://unitsofmeasure.org",
                "code": "%",
            },
        },
        {
            "resourceType": "Observation",
            "id": ids.obs_smoking,
            "status": "final",
            "code": _coding(LOINC, SMOKING_STATUS),
            "subject": subject,
            "effectiveDateTime": "2024-03-10T09:00:00Z",
            "valueCodeableConcept": _coding(SNOMED, DAILY_SMOKER),
        },
        {
            "resourceType": "Observation",
            "id": ids.obs_other,
            "status": "final",
            "code": _coding(LOINC, HBA1C),
            "subject": {"reference": f"Patient/{ids.other_patient}"},
            "effectiveDateTime": "2024-02-01T09:00:00Z",
            "valueQuantity": {"value": 5.1, "unit": "%"},
        },
        {
            "resourceType": "MedicationAdministration",
            "id": ids.med_admin_contained,
            "status": "completed",
            "contained": [
                {
                    "resourceType": "Medication",
                    "id": "med",
                    "code": _coding(RXNORM, "860975"),
                }
            ],
            "medicationReference": {"reference": "#med"},
            "subject": subject,
            "effectiveDateTime": "2024-02-01T08:00:00Z",
        },
        {
            "resourceType": "Medication",
            "id": ids.medication,
            "code": _coding(RXNORM, "1719286"),
        },
        {
            "resourceType": "MedicationAdministration",
            "id": ids.med_admin_referenced,
            "status": "completed",
            "medicationReference": {"reference": f"Medication/{ids.medication}"},
            "subject": subject,
            "effectiveDateTime": "2024-02-02T08:00:00Z",
        },
        {
            "resourceType": "Procedure",
            "id": ids.procedure,
            "status": "completed",
            "code": _coding(SNOMED, "80146002"),
            "subject": subject,
            "performedDateTime": "2023-06-01",
        },
        {
            "resourceType": "Condition",
            "id": ids.condition,
            "subject": subject,
            "code": {
                "coding": [
                    {"system": SNOMED, "code": "44054006"},
                    {"system": ICD10CM, "code": "E11.9"},
                ]
            },
        },
    ]


@pytest.fixture(scope="module")
def ids() -> Ids:
    suffix = uuid.uuid4().hex[:12]
    return Ids(*(f"{name.replace('_', '-')}-{suffix}" for name in Ids.__dataclass_fields__))


@pytest.fixture(scope="module")
def loaded(fhir_server: RunningFhirServer, ids: Ids) -> list[dict[str, Any]]:
    return fhir_server.load(_resources(ids))


@pytest.fixture(scope="module")
def client(fhir_server: RunningFhirServer, loaded: list[dict[str, Any]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir_server.base_url, headers=STRICT, timeout=30.0) as c:
        yield c


def search(client: httpx.Client, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    """GET a search, insisting on a searchset without warnings (no search.mode=outcome entry)."""
    response = client.get(path, params=tuple(params))  # a tuple, as httpx's type is covariant
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    outcomes = [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "outcome"]
    assert not outcomes, outcomes
    return bundle


def refs(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    """Type/id of the bundle's entries with the given search mode, in bundle order."""
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == mode
    ]


def next_link(bundle: dict[str, Any]) -> str | None:
    return next(
        (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"),
        None,
    )


def test_load_returns_stored_versions(loaded: list[dict[str, Any]], ids: Ids) -> None:
    assert len(loaded) == len(_resources(ids))
    assert all(r["meta"]["versionId"] for r in loaded)


def test_load_is_an_idempotent_put(fhir_server: RunningFhirServer, ids: Ids, loaded: list[dict[str, Any]]) -> None:
    patient = next(r for r in _resources(ids) if r["id"] == ids.other_patient)
    (stored,) = fhir_server.load([patient])
    assert stored["id"] == ids.other_patient and int(stored["meta"]["versionId"]) >= 2


def test_patient_read(client: httpx.Client, ids: Ids) -> None:
    response = client.get(f"Patient/{ids.patient}")
    assert response.status_code == 200
    patient = response.json()
    assert patient["id"] == ids.patient and patient["birthDate"] == "1960-05-17"
    assert client.get(f"Patient/missing-{ids.patient}").status_code == 404


def test_observation_by_single_code(client: httpx.Client, ids: Ids) -> None:
    bundle = search(client, "Observation", [("patient", ids.patient), ("code", f"{LOINC}|{HBA1C}")])
    assert refs(bundle) == [f"Observation/{ids.obs_hba1c}"]
    assert bundle["total"] == 1


def test_observation_comma_separated_codes_are_or(client: httpx.Client, ids: Ids) -> None:
    codes = f"{LOINC}|{HBA1C},{LOINC}|{SMOKING_STATUS}"
    bundle = search(client, "Observation", [("patient", ids.patient), ("code", codes)])
    assert sorted(refs(bundle)) == sorted([f"Observation/{ids.obs_hba1c}", f"Observation/{ids.obs_smoking}"])


def test_observation_repeated_code_params_are_and(client: httpx.Client, ids: Ids) -> None:
    params = [
        ("patient", ids.patient),
        ("code", f"{LOINC}|{HBA1C}"),
        ("code", f"{LOINC}|{SMOKING_STATUS}"),
    ]
    assert refs(search(client, "Observation", params)) == []


def test_subject_reference_and_patient_param_agree(client: httpx.Client, ids: Ids) -> None:
    expected = sorted([f"Observation/{ids.obs_hba1c}", f"Observation/{ids.obs_smoking}"])
    for params in (
        [("patient", ids.patient)],
        [("patient", f"Patient/{ids.patient}")],
        [("subject", f"Patient/{ids.patient}")],
    ):
        assert sorted(refs(search(client, "Observation", params))) == expected, params


def test_observation_by_value_concept(client: httpx.Client, ids: Ids) -> None:
    params = [("patient", ids.patient), ("value-concept", f"{SNOMED}|{DAILY_SMOKER}")]
    assert refs(search(client, "Observation", params)) == [f"Observation/{ids.obs_smoking}"]
    other = [
        ("patient", ids.other_patient),
        ("value-concept", f"{SNOMED}|{DAILY_SMOKER}"),
    ]
    assert refs(search(client, "Observation", other)) == []


def test_sort_by_date_descending(client: httpx.Client, ids: Ids) -> None:
    bundle = search(client, "Observation", [("patient", ids.patient), ("_sort", "-date")])
    assert refs(bundle) == [
        f"Observation/{ids.obs_smoking}",
        f"Observation/{ids.obs_hba1c}",
    ]


def test_count_pages_through_next_links(client: httpx.Client, ids: Ids) -> None:
    bundle = search(
        client,
        "Observation",
        [("patient", ids.patient), ("_sort", "-date"), ("_count", "1")],
    )
    assert bundle["total"] == 2
    pages = [refs(bundle)]
    url = next_link(bundle)
    while url is not None:
        assert url.startswith(str(client.base_url).rstrip("/"))
        page = client.get(url)
        assert page.status_code == 200
        pages.append(refs(page.json()))
        url = next_link(page.json())
    assert pages == [
        [f"Observation/{ids.obs_smoking}"],
        [f"Observation/{ids.obs_hba1c}"],
    ]


def test_medication_administration_by_patient_keeps_contained_medication(client: httpx.Client, ids: Ids) -> None:
    bundle = search(client, "MedicationAdministration", [("patient", ids.patient)])
    assert sorted(refs(bundle)) == sorted(
        [
            f"MedicationAdministration/{ids.med_admin_contained}",
            f"MedicationAdministration/{ids.med_admin_referenced}",
        ]
    )
    contained = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == ids.med_admin_contained)
    assert contained["medicationReference"] == {"reference": "#med"}
    assert contained["contained"][0]["code"]["coding"][0]["code"] == "860975"


def test_include_medication(client: httpx.Client, ids: Ids) -> None:
    params = [
        ("patient", ids.patient),
        ("_include", "MedicationAdministration:medication"),
    ]
    bundle = search(client, "MedicationAdministration", params)
    assert len(refs(bundle)) == 2
    # contained medications stay inline; only the standalone Medication is included, once
    assert refs(bundle, mode="include") == [f"Medication/{ids.medication}"]


def test_procedure_by_code(client: httpx.Client, ids: Ids) -> None:
    params = [("patient", ids.patient), ("code", f"{SNOMED}|80146002,{SNOMED}|0")]
    assert refs(search(client, "Procedure", params)) == [f"Procedure/{ids.procedure}"]
    assert refs(search(client, "Procedure", [("patient", ids.patient), ("code", f"{SNOMED}|1")])) == []


def test_condition_by_code_in_either_coding(client: httpx.Client, ids: Ids) -> None:
    expected = [f"Condition/{ids.condition}"]
    assert (
        refs(
            search(
                client,
                "Condition",
                [("patient", ids.patient), ("code", f"{SNOMED}|44054006")],
            )
        )
        == expected
    )
    assert (
        refs(
            search(
                client,
                "Condition",
                [("patient", ids.patient), ("code", f"{ICD10CM}|E11.9")],
            )
        )
        == expected
    )
    assert (
        refs(
            search(
                client,
                "Condition",
                [("patient", ids.other_patient), ("code", f"{ICD10CM}|E11.9")],
            )
        )
        == []
    )


def test_unknown_parameter_is_an_error_in_strict_mode(client: httpx.Client, ids: Ids) -> None:
    response = client.get("Observation", params=[("patient", ids.patient), ("no-such-param", "x")])
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
