"""Deterministic FHIR R4 data for one CAR-T patient, sized for the benchmark.

Why generated and not the vignettes: latency depends on how many resources a call carries, so the
benchmark needs the same clinical shape (72 h of vitals, vasopressor, oxygen, tocilizumab) at
~100, ~550 and ~5,000 resources. The vital-sign frequency scales with the target size; the values
are seeded, so every run sends byte-identical requests. The prefetch split is a copy of the one in
``tests/hook_requests.py``: bench must not depend on the test tree.

``python -m bench.generate 550 out.json`` writes a Bundle (``.ndjson``: one resource per line).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

Resource = dict[str, Any]

AT = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
"""The evaluation time every benchmark request grades at (sent as the ``crs-cds-hooks.at`` extension)."""
AT_ISO = "2025-03-04T08:00:00Z"
PATIENT_ID = "bench-p1"
HOURS = 72.0
VITALS_PER_ROUND = 4
"""Temperature, BP panel, SpO2 (with flow and FiO2 components) and the O2 device, charted together."""
FIXED_RESOURCES = 6
"""Patient, weight, CAR-T infusion, tocilizumab, oxygen and norepinephrine administrations."""
MIN_RESOURCES = FIXED_RESOURCES + VITALS_PER_ROUND

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
FLOWSHEET = "http://example.org/fhir/CodeSystem/flowsheet"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# Clinical course, in hours before AT: fever from 32 h, tocilizumab at 20 h, oxygen from 14 h,
# hypotension and norepinephrine from 10 h. The expected grade at AT is 3 (one vasopressor).
FEVER_FROM_H = 32.0
TOCILIZUMAB_H = 20.0
OXYGEN_FROM_H = 14.0
HYPOTENSION_FROM_H = 10.0
NOREPINEPHRINE_FROM_H = 10.0


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC, whole seconds, ``Z`` (the service rejects date-only times)."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _observation(rid: str, code: dict[str, Any], moment: datetime, patient_id: str) -> Resource:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": instant(moment),
    }


def _administration(
    rid: str,
    medication: list[tuple[str, str, str]],
    text: str,
    *,
    status: str,
    start: datetime,
    end: datetime | None,
    patient_id: str,
    dose: tuple[float, str] | None = None,
    rate: tuple[float, str] | None = None,
) -> Resource:
    period = {"start": instant(start)} | ({"end": instant(end)} if end is not None else {})
    dosage: dict[str, Any] = {"route": {"text": "IV"}}
    if dose is not None:
        dosage["dose"] = _quantity(*dose)
    if rate is not None:
        dosage["rateQuantity"] = _quantity(*rate)
    return {
        "resourceType": "MedicationAdministration",
        "id": rid,
        "status": status,
        "medicationCodeableConcept": {
            "coding": [{"system": s, "code": c, "display": d} for s, c, d in medication],
            "text": text,
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectivePeriod": period,
        "dosage": dosage,
    }


def _fixed(patient_id: str, at: datetime) -> list[Resource]:
    """The resources every size has once: patient, weight and the four administrations."""

    def before(hours: float) -> datetime:
        return at - timedelta(hours=hours)

    weight = _observation(f"{patient_id}-weight", _concept(LOINC, "29463-7", "Body weight"), before(70), patient_id)
    weight["valueQuantity"] = _quantity(75, "kg")
    return [
        {"resourceType": "Patient", "id": patient_id, "gender": "female", "birthDate": "1966-12-04"},
        weight,
        _administration(
            f"{patient_id}-cart",
            [(ATC, "L01XL03", "axicabtagene ciloleucel")],
            "axicabtagene ciloleucel",
            status="completed",
            start=before(96),
            end=before(95.5),
            patient_id=patient_id,
        ),
        _administration(
            f"{patient_id}-tocilizumab",
            [(RXNORM, "612865", "tocilizumab"), (ATC, "L04AC07", "tocilizumab")],
            "tocilizumab",
            status="completed",
            start=before(TOCILIZUMAB_H),
            end=before(TOCILIZUMAB_H - 1),
            patient_id=patient_id,
            dose=(600, "mg"),
        ),
        _administration(
            f"{patient_id}-oxygen",
            [(RXNORM, "7806", "oxygen")],
            "oxygen",
            status="in-progress",
            start=before(OXYGEN_FROM_H),
            end=None,
            patient_id=patient_id,
            rate=(2, "L/min"),
        ),
        _administration(
            f"{patient_id}-norepinephrine",
            [(RXNORM, "7512", "norepinephrine"), (ATC, "C01CA03", "norepinephrine")],
            "norepinephrine",
            status="in-progress",
            start=before(NOREPINEPHRINE_FROM_H),
            end=None,
            patient_id=patient_id,
            rate=(8, "ug/min"),
        ),
    ]


def _temperature(rid: str, moment: datetime, hours_before: float, rng: random.Random, patient_id: str) -> Resource:
    if TOCILIZUMAB_H < hours_before <= FEVER_FROM_H:
        value = rng.uniform(38.3, 39.7)
    elif hours_before <= TOCILIZUMAB_H:
        value = rng.uniform(37.0, 38.4)  # after tocilizumab: mostly afebrile, some fever
    else:
        value = rng.uniform(36.5, 37.6)
    out = _observation(rid, _concept(LOINC, "8310-5", "Body temperature"), moment, patient_id)
    out["valueQuantity"] = _quantity(round(value, 1), "Cel")
    return out


def _bp_panel(rid: str, moment: datetime, hours_before: float, rng: random.Random, patient_id: str) -> Resource:
    if hours_before <= HYPOTENSION_FROM_H:
        systolic, diastolic = rng.randint(76, 89), rng.randint(40, 52)
    elif hours_before <= TOCILIZUMAB_H:
        systolic, diastolic = rng.randint(86, 104), rng.randint(50, 62)  # some already low
    else:
        systolic, diastolic = rng.randint(108, 132), rng.randint(64, 82)
    out = _observation(
        rid, _concept(LOINC, "85354-9", "Blood pressure panel with all children optional"), moment, patient_id
    )
    out["component"] = [
        {"code": _concept(LOINC, "8480-6", "Systolic blood pressure"), "valueQuantity": _quantity(systolic, "mm[Hg]")},
        {
            "code": _concept(LOINC, "8462-4", "Diastolic blood pressure"),
            "valueQuantity": _quantity(diastolic, "mm[Hg]"),
        },
    ]
    return out


def _spo2(rid: str, moment: datetime, hours_before: float, rng: random.Random, patient_id: str) -> Resource:
    """US Core pulse oximetry: SpO2 with inhaled flow (3151-8) and FiO2 (3150-0) components."""
    on_oxygen = hours_before <= OXYGEN_FROM_H
    flow, fio2 = (2, 28) if on_oxygen else (0, 21)
    saturation = rng.randint(91, 96) if on_oxygen else rng.randint(94, 99)
    out = _observation(
        rid,
        _concept(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        moment,
        patient_id,
    )
    out["valueQuantity"] = _quantity(saturation, "%")
    out["component"] = [
        {"code": _concept(LOINC, "3151-8", "Inhaled oxygen flow rate"), "valueQuantity": _quantity(flow, "L/min")},
        {"code": _concept(LOINC, "3150-0", "Inhaled oxygen concentration"), "valueQuantity": _quantity(fio2, "%")},
    ]
    return out


def _device(rid: str, moment: datetime, hours_before: float, _rng: random.Random, patient_id: str) -> Resource:
    """The O2 delivery device as charted: a site code, SNOMED CT device value (room air as text)."""
    out = _observation(rid, _concept(FLOWSHEET, "o2-device", "O2 delivery device"), moment, patient_id)
    if hours_before <= OXYGEN_FROM_H:
        out["valueCodeableConcept"] = _concept(SNOMED, "336623009", "Oxygen nasal cannula (physical object)")
    else:
        out["valueCodeableConcept"] = {"text": "Room air"}
    return out


_VITALS = (("temp", _temperature), ("bp", _bp_panel), ("spo2", _spo2), ("device", _device))


def generate(
    target: int, *, seed: int = 0, patient_id: str = PATIENT_ID, at: datetime = AT, hours: float = HOURS
) -> list[Resource]:
    """Exactly ``target`` resources: the fixed six, then vital-sign rounds spread evenly over ``hours``.

    Rounds are ``hours * 60 / rounds`` minutes apart (~3 h at 100 resources, ~32 min at 550,
    ~3.5 min at 5,000), each observation jittered by a few seeded minutes; the last round may be
    partial so the count is exact.
    """
    if target < MIN_RESOURCES:
        raise ValueError(f"target must be at least {MIN_RESOURCES} resources, got {target}")
    rng = random.Random(seed)
    resources = _fixed(patient_id, at)
    n_vitals = target - len(resources)
    rounds = -(-n_vitals // VITALS_PER_ROUND)
    interval = timedelta(hours=hours) / rounds
    jitter_seconds = min(interval.total_seconds() / 8, 300.0)
    for index in range(n_vitals):
        round_no, kind = divmod(index, VITALS_PER_ROUND)
        name, build = _VITALS[kind]
        # Round r sits half an interval before the end of its slot, so the last is just before `at`.
        moment = at - (rounds - round_no - 0.5) * interval + timedelta(seconds=rng.uniform(-1, 1) * jitter_seconds)
        moment = min(moment, at)
        hours_before = (at - moment).total_seconds() / 3600
        resources.append(build(f"{patient_id}-{name}-{round_no}", moment, hours_before, rng, patient_id))
    return resources


# -- requests (the prefetch split is copied from tests/hook_requests.py) --------------------------


def _searchset(resources: list[Resource]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"http://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
        ],
    }


def _is_device_observation(resource: Resource) -> bool:
    value = resource.get("valueCodeableConcept")
    return isinstance(value, dict) and "valueQuantity" not in resource and "component" not in resource


def _is_vital_sign(resource: Resource) -> bool:
    return any(
        coding.get("code") == "vital-signs"
        for category in resource.get("category", [])
        for coding in category.get("coding", [])
    )


def prefetch(resources: list[Resource]) -> dict[str, Any]:
    """Every prefetch key filled, split the way the service's templates search (as an EHR would send it).

    The three Observation searches overlap, as real searches do: most rows travel twice.
    """
    by_type: dict[str, list[Resource]] = {}
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
    }


def hook_request(resources: list[Resource], *, patient_id: str = PATIENT_ID, at: str = AT_ISO) -> dict[str, Any]:
    """A patient-view call with full prefetch, graded at ``at`` via the service's extension."""
    return {
        "hook": "patient-view",
        "hookInstance": f"bench-{patient_id}-{len(resources)}",
        "context": {"userId": "Practitioner/bench", "patientId": patient_id},
        "prefetch": prefetch(resources),
        "extension": {"crs-cds-hooks.at": at},
    }


def request_body(target: int, *, seed: int = 0) -> tuple[int, bytes]:
    """(resource count, JSON body) of the patient-view call for ``target`` resources."""
    resources = generate(target, seed=seed)
    return len(resources), orjson.dumps(hook_request(resources))


# -- files for the CLI ----------------------------------------------------------------------------


def _bundle(resources: list[Resource]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def write_ndjson(path: Path, target: int, *, seed: int = 0) -> int:
    """Write ``target`` resources as NDJSON (one per line, as a bulk export); returns the count."""
    resources = generate(target, seed=seed)
    with path.open("wb") as out:
        for resource in resources:
            out.write(orjson.dumps(resource) + b"\n")
    return len(resources)


def write_bundle(path: Path, target: int, *, seed: int = 0) -> int:
    """Write ``target`` resources as one collection Bundle; returns the count."""
    resources = generate(target, seed=seed)
    path.write_bytes(orjson.dumps(_bundle(resources)))
    return len(resources)


def iter_sizes(text: str) -> Iterator[int]:
    """Sizes from ``"100,550,5000"``."""
    for part in text.split(","):
        if part.strip():
            yield int(part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write one benchmark patient as a Bundle or NDJSON file")
    parser.add_argument("resources", type=int, help=f"number of resources (at least {MIN_RESOURCES})")
    parser.add_argument("out", type=Path, help="output file; .ndjson writes one resource per line")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    writer = write_ndjson if args.out.suffix == ".ndjson" else write_bundle
    count = writer(args.out, args.resources, seed=args.seed)
    print(f"wrote {count} resources to {args.out} (grade with --at {AT_ISO})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
