"""FHIR Bulk Data exports with known CRS and ICANS episodes: the registry tests, the shipped sample
(``examples/bulk-export/``) and the episodes benchmark all read exports made here.

Why generated: the expected rows of every scenario are written down by hand in
``tests/test_registry.py``, so the courses must be exactly reproducible; the benchmark needs the
same shapes at 2,000 patients. Each patient follows one scenario, charted relative to its own
CAR-T infusion (day 0); vitals every ``STEP_H`` hours for ``DAYS`` days. The files are laid out as
a Bulk Data server would: one resource type per file, patients interleaved, Observations split
over a plain and a gzip file, a shared ``Medication`` without patient that the CAR-T
administrations of some patients reference, and a ``manifest.json``. Two lines are deliberately
unusable (not JSON; an Observation naming no patient) so the summary's rejections can be checked.

``python -m bench.generate_export OUT_DIR [--patients N]`` writes an export (default: one patient
per scenario, the shipped sample).
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

Resource = dict[str, Any]

DAY0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
"""The first patient's infusion; patient ``i`` is infused ``i`` hours later (rows differ by patient)."""
STEP_H = 6
DAYS = 7
TRANSACTION_TIME = "2025-04-01T00:00:00Z"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICANS = "http://hospital.example.org/fhir/CodeSystem/icans"
FLOWSHEET = "http://example.org/fhir/CodeSystem/flowsheet"
SHARED_MEDICATION_ID = "axicel"


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class Chart:
    """One patient's resources, placed in hours after the infusion."""

    def __init__(self, patient_id: str, day0: datetime) -> None:
        self.patient_id = patient_id
        self.day0 = day0
        self.resources: list[Resource] = [
            {"resourceType": "Patient", "id": patient_id, "gender": "female", "birthDate": "1968-05-17"}
        ]

    def at(self, hours_after: float) -> str:
        return instant(self.day0 + timedelta(hours=hours_after))

    def _rid(self, kind: str, hours_after: float) -> str:
        return f"{self.patient_id}-{kind}-{hours_after:g}".replace(".", "-")

    def _observation(self, kind: str, code: dict[str, Any], hours_after: float) -> Resource:
        out: Resource = {
            "resourceType": "Observation",
            "id": self._rid(kind, hours_after),
            "status": "final",
            "code": code,
            "subject": {"reference": f"Patient/{self.patient_id}"},
            "effectiveDateTime": self.at(hours_after),
        }
        self.resources.append(out)
        return out

    def temperature(self, hours_after: float, celsius: float) -> None:
        self._observation("temp", _concept(LOINC, "8310-5", "Body temperature"), hours_after)["valueQuantity"] = (
            _quantity(celsius, "Cel")
        )

    def systolic(self, hours_after: float, mmhg: float) -> None:
        self._observation("sbp", _concept(LOINC, "8480-6", "Systolic blood pressure"), hours_after)["valueQuantity"] = (
            _quantity(mmhg, "mm[Hg]")
        )

    def device(self, hours_after: float, snomed: str | None, display: str) -> None:
        out = self._observation("o2dev", _concept(FLOWSHEET, "o2-device", "O2 delivery device"), hours_after)
        out["valueCodeableConcept"] = _concept(SNOMED, snomed, display) if snomed is not None else {"text": display}

    def ice(self, hours_after: float, score: int) -> None:
        self._observation("ice", _concept(ICANS, "ICE-TOTAL", "ICE score total"), hours_after)["valueInteger"] = score

    def administration(
        self,
        kind: str,
        medication: dict[str, Any] | None,
        start_h: float,
        end_h: float | None = None,
        *,
        dose: tuple[float, str] | None = None,
        status: str = "completed",
    ) -> None:
        """``medication`` None: a reference to the shared Medication (a Bulk Data export's way)."""
        out: Resource = {"resourceType": "MedicationAdministration", "id": self._rid(kind, start_h), "status": status}
        if medication is None:
            out["medicationReference"] = {"reference": f"Medication/{SHARED_MEDICATION_ID}"}
        else:
            out["medicationCodeableConcept"] = medication
        out["subject"] = {"reference": f"Patient/{self.patient_id}"}
        if end_h is None:
            out["effectiveDateTime"] = self.at(start_h)
        else:
            out["effectivePeriod"] = {"start": self.at(start_h), "end": self.at(end_h)}
        if dose is not None:
            out["dosage"] = {"dose": _quantity(*dose)}
        self.resources.append(out)

    def car_t(self, *, shared: bool) -> None:
        self.administration("cart", None if shared else _concept(ATC, "L01XL03", "axicabtagene ciloleucel"), 0.0, 0.5)

    def tocilizumab(self, hours_after: float) -> None:
        self.administration("toci", _concept(RXNORM, "612865", "tocilizumab"), hours_after, dose=(600, "mg"))

    def dexamethasone(self, hours_after: float) -> None:
        self.administration("dexa", _concept(RXNORM, "3264", "dexamethasone"), hours_after, dose=(10, "mg"))

    def norepinephrine(self, start_h: float, end_h: float) -> None:
        self.administration("ne", _concept(RXNORM, "7512", "norepinephrine"), start_h, end_h)

    def vitals(
        self, fevers: dict[float, float], low_systolic: dict[float, float], *, until_h: float = DAYS * 24
    ) -> None:
        """A temperature and a systolic pressure every ``STEP_H`` hours; ``fevers`` and
        ``low_systolic`` replace the normal value at their hour."""
        hour = 0.0
        while hour <= until_h:
            self.temperature(hour, fevers.get(hour, 36.8))
            self.systolic(hour, low_systolic.get(hour, 118))
            hour += STEP_H


def single(chart: Chart) -> None:
    """Fever 48-60 h, tocilizumab at 54 h, norepinephrine 60-66 h with a low pressure, nasal
    cannula at 60 h then room air at 66 h, dexamethasone at 62 h; ICE 6 at 72 h, 9 at 84 h."""
    chart.car_t(shared=True)
    chart.vitals({48: 39.2, 54: 39.5, 60: 38.9}, {60: 84})
    chart.tocilizumab(54)
    chart.norepinephrine(60, 66)
    chart.device(60, "336623009", "Oxygen nasal cannula")
    chart.device(66, None, "Room air")
    chart.dexamethasone(62)
    for hour, score in ((48, 10), (72, 6), (84, 9), (96, 10), (120, 10), (144, 10)):
        chart.ice(hour, score)


def recurrent(chart: Chart) -> None:
    """Fever 30-36 h (resolved), then fever again at 120-126 h: two grade-1 episodes."""
    chart.car_t(shared=False)
    chart.vitals({30: 38.5, 36: 38.4, 120: 38.8, 126: 38.6}, {})


def masked(chart: Chart) -> None:
    """Fever 42-48 h, tocilizumab at 48 h; afebrile after, low pressure at 60 h: grade 2 (masked fever)."""
    chart.car_t(shared=True)
    chart.vitals({42: 38.7, 48: 39.0}, {60: 82})
    chart.tocilizumab(48)


def unresolved(chart: Chart) -> None:
    """Fever from 156 h to the end of the data (168 h): unresolved."""
    chart.car_t(shared=False)
    chart.vitals({156: 38.6, 162: 38.9, 168: 38.4}, {})


def no_crs(chart: Chart) -> None:
    """Normal temperatures throughout: no CRS (episode 0, grade 0)."""
    chart.car_t(shared=False)
    chart.vitals({}, {})
    for hour in (24, 72, 120):
        chart.ice(hour, 10)


def no_temperatures(chart: Chart) -> None:
    """Pressures only: whether CRS occurred cannot be decided (indeterminate)."""
    chart.car_t(shared=False)
    hour = 0.0
    while hour <= DAYS * 24:
        chart.systolic(hour, 121)
        hour += STEP_H


SCENARIOS: dict[str, Callable[[Chart], None]] = {
    "single": single,
    "recurrent": recurrent,
    "masked": masked,
    "unresolved": unresolved,
    "no-crs": no_crs,
    "no-temperatures": no_temperatures,
}


def patient_id(index: int) -> str:
    name = list(SCENARIOS)[index % len(SCENARIOS)]
    return f"{name}-{index}"


def chart_of(index: int) -> Chart:
    chart = Chart(patient_id(index), DAY0 + timedelta(hours=index))
    SCENARIOS[list(SCENARIOS)[index % len(SCENARIOS)]](chart)
    return chart


def _interleaved(patients: int) -> Iterator[Resource]:
    """Resources of all patients mixed, as a server's export pages them."""
    charts = [chart_of(i).resources for i in range(patients)]
    longest = max((len(c) for c in charts), default=0)
    for position in range(longest):
        for resources in charts:
            if position < len(resources):
                yield resources[position]


def write_export(out_dir: Path, patients: int = len(SCENARIOS)) -> dict[str, int]:
    """Write the export; returns the number of lines per file name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[bytes]] = {}
    observation_count = 0
    for resource in _interleaved(patients):
        kind = resource["resourceType"]
        if kind == "Observation":
            # Half the Observations in a gzip file with another name: any file names are allowed.
            name = "Observation.000.ndjson" if observation_count % 2 == 0 else "vitals-part2.ndjson.gz"
            observation_count += 1
        else:
            name = f"{kind}.ndjson"
        by_file.setdefault(name, []).append(orjson.dumps(resource))
    by_file["Medication.ndjson"] = [
        orjson.dumps(
            {
                "resourceType": "Medication",
                "id": SHARED_MEDICATION_ID,
                "code": _concept(ATC, "L01XL03", "axicabtagene ciloleucel"),
            }
        )
    ]
    orphan = {
        "resourceType": "Observation",
        "id": "orphan-temp",
        "status": "final",
        "code": _concept(LOINC, "8310-5", "Body temperature"),
        "effectiveDateTime": instant(DAY0),
        "valueQuantity": _quantity(39.0, "Cel"),
    }
    by_file["Observation.000.ndjson"] += [orjson.dumps(orphan), b'{"resourceType": "Observation", "id": ']
    for name, lines in by_file.items():
        data = b"\n".join(lines) + b"\n"
        path = out_dir / name
        if name.endswith(".gz"):
            path.write_bytes(gzip.compress(data, mtime=0))
        else:
            path.write_bytes(data)
    manifest = {
        "transactionTime": TRANSACTION_TIME,
        "request": "https://fhir.example.org/fhir/Group/cart-cohort/$export",
        "requiresAccessToken": True,
        "output": [
            {"type": _type_of(name), "url": f"https://files.example.org/export/{name}", "count": len(lines)}
            for name, lines in sorted(by_file.items())
        ],
        "error": [],
    }
    (out_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return {name: len(lines) for name, lines in by_file.items()}


def _type_of(name: str) -> str:
    return "Observation" if name.startswith(("Observation", "vitals")) else name.split(".", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--patients", type=int, default=len(SCENARIOS))
    args = parser.parse_args()
    counts = write_export(args.out_dir, args.patients)
    print(f"{sum(counts.values())} lines in {len(counts)} files, {args.patients} patients -> {args.out_dir}")


if __name__ == "__main__":
    main()
