"""Turn the public CRS vignettes into FHIR R4 Bundles, in several equivalent shapes.

Why this exists: ``vignettes-public.json`` describes each worked case in a schematic, non-FHIR
form, but the service only ever reads FHIR R4. To test the grader end to end, each vignette must
become the kind of Bundle an EHR would send. The clinical reference (section 2) lists several
shapes for the same finding (a BP panel or stand-alone systolic, Celsius or Fahrenheit, flows as
pulse-oximetry components in mL/min, contained Medications, salt-form RxNorm codes); each
``variant`` below produces one of them, so a test can assert that every shape grades the same.

Everything here is plain JSON dicts (no model objects) so the output can be written as fixtures
and posted to the service unchanged; tests validate the result with the ``fhir.resources`` R4B
models.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

__all__ = [
    "VARIANTS",
    "celsius_to_fahrenheit",
    "clinical_dir",
    "load_public_vignettes",
    "vignette_to_bundle",
]

VARIANTS: tuple[str, ...] = (
    "plain",
    "fahrenheit",
    "standalone_bp",
    "pulse_ox_components",
    "contained_medication",
    "salt_forms",
)
"""Every shape ``vignette_to_bundle`` can produce; all must grade identically."""

# Entries get a resolvable absolute fullUrl (the brief allows urn:uuid too, but readable URLs
# make failing fixtures easier to debug); relative references such as "Patient/v01" then resolve
# against this base as the FHIR bundle rules describe.
FHIR_BASE = "http://example.org/fhir"

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
# No LOINC code exists for "oxygen delivery device" (codes.csv marks it as not found), so the
# device Observation carries a site-local code, as real flowsheets do; the grader must recognise
# the device from the SNOMED CT value, whatever Observation.code says.
LOCAL_FLOWSHEET = "http://example.org/fhir/CodeSystem/flowsheet"

# Displays for the LOINC codes this module emits itself (the vignettes omit some, e.g. on BP
# components); the displays match codes.csv.
_LOINC_DISPLAY: dict[str, str] = {
    "29463-7": "Body weight",
    "85354-9": "Blood pressure panel with all children optional",
    "8480-6": "Systolic blood pressure",
    "8462-4": "Diastolic blood pressure",
    "8478-0": "Mean blood pressure",
    "59408-5": "Oxygen saturation in Arterial blood by Pulse oximetry",
    "3151-8": "Inhaled oxygen flow rate",
    "3150-0": "Inhaled oxygen concentration",
}

# Default codes for observation kinds, used only when a vignette observation carries no code.
_DEFAULT_KIND_CODE: dict[str, str] = {
    "spo2": "59408-5",
    "o2_flow": "3151-8",
    "fio2": "3150-0",
    "blood_pressure": "85354-9",
}

# RxNorm ingredient -> precise-ingredient (salt form) code and display, as listed in codes.csv
# ("vasopressor (salt PIN)" rows). An EHR often codes the salt actually hung; the grader must
# map these back to the ingredient, which is what the "salt_forms" variant exercises.
SALT_FORMS: dict[str, tuple[str, str]] = {
    "7512": ("7508", "norepinephrine bitartrate"),
    "8163": ("8164", "phenylephrine hydrochloride"),
    "3628": ("82010", "dopamine hydrochloride"),
}

# Dose units that are rates (an infusion), which FHIR carries in dosage.rateQuantity rather than
# dosage.dose; everything else (mg, ...) is a dose.
_RATE_UNIT_SUFFIXES = ("/min", "/h", "/d")

# The birth date lies this many months before the birthday that gives age_years, so the whole-year
# age at evaluation_time cannot flip with time zones or an off-by-one-day comparison.
_MONTHS_PAST_BIRTHDAY = 3

_CONTAINED_MEDICATION_ID = "med"


def clinical_dir() -> Path:
    """Return the directory holding the public vignettes (``tests/fixtures/clinical``).

    The repository carries its own copy (provenance in that folder's README), so a clone with
    nothing beside it runs every test; ``CRS_CDS_CLINICAL_DIR`` points at another copy, e.g. a
    newer set being reviewed.
    """
    override = os.environ.get("CRS_CDS_CLINICAL_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "fixtures" / "clinical"


def load_public_vignettes() -> list[dict[str, Any]]:
    """Read the vignettes from ``<clinical_dir>/vignettes-public.json``.

    Returns only the ``vignettes`` list: the assumptions block is prose for humans, and each
    vignette is self-contained.
    """
    path = clinical_dir() / "vignettes-public.json"
    with path.open(encoding="utf-8") as handle:
        document = json.load(handle)
    vignettes = document["vignettes"]
    if not isinstance(vignettes, list):
        raise TypeError(f"{path}: 'vignettes' is not a list")
    return vignettes


def celsius_to_fahrenheit(value: float) -> float:
    """Convert a Celsius temperature to Fahrenheit, rounded half-up to 0.1 degF.

    Decimal arithmetic avoids binary float artefacts, so 38.0 C is exactly 100.4 degF (the fever
    threshold) and 37.9 C is 100.2 degF. A 0.1 degF step is 0.056 C, so converting back and
    rounding to 0.1 C always recovers the original value: the Fahrenheit variant grades the same.
    """
    fahrenheit = Decimal(str(value)) * 9 / 5 + 32
    return float(fahrenheit.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def vignette_to_bundle(vignette: dict[str, Any], *, variant: str = "plain") -> dict[str, Any]:
    """Build a FHIR R4 collection Bundle (plain JSON) for one public vignette.

    ``variant`` picks one of ``VARIANTS``; each is a different FHIR shape of the same clinical
    facts, so the expected grade of the vignette applies to all of them. Resource ids are stable
    (derived from the vignette id and the position of the finding) so fixtures diff cleanly.
    Raises ``ValueError`` for an unknown variant or a vignette item this module cannot map, rather
    than silently dropping evidence that could change the grade.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    builder = _BundleBuilder(vignette, variant)
    return builder.build()


class _BundleBuilder:
    """Collects the resources of one vignette; one instance per call, so no shared state."""

    def __init__(self, vignette: dict[str, Any], variant: str) -> None:
        self.vignette = vignette
        self.variant = variant
        self.pid = str(vignette["id"]).lower()
        self.subject = {"reference": f"Patient/{self.pid}"}
        self.resources: list[dict[str, Any]] = []

    def build(self) -> dict[str, Any]:
        """Emit the resources in a readable order: patient, history, findings, treatments."""
        self._patient()
        self._weight()
        self._therapy()
        self._prior_crs()
        self._observations()
        self._procedures()
        self._medication_administrations()
        return {
            "resourceType": "Bundle",
            "id": f"{self.pid}-{self.variant}".replace("_", "-"),
            "type": "collection",
            "entry": [
                {
                    "fullUrl": f"{FHIR_BASE}/{res['resourceType']}/{res['id']}",
                    "resource": res,
                }
                for res in self.resources
            ],
        }

    # -- patient and context ---------------------------------------------------------------

    def _patient(self) -> None:
        """Patient with a birthDate giving age_years at evaluation_time (the grader's age)."""
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "id": self.pid,
            "gender": "unknown",
        }
        age = self.vignette.get("patient", {}).get("age_years")
        if age is not None:
            patient["birthDate"] = _birth_date(self.vignette["evaluation_time"], age)
        self.resources.append(patient)

    def _weight(self) -> None:
        """Body weight 1 day before evaluation: recent enough for a tocilizumab dose."""
        weight = self.vignette.get("patient", {}).get("weight_kg")
        if weight is None:
            return
        when = _parse_time(self.vignette["evaluation_time"]) - timedelta(days=1)
        self.resources.append(
            self._observation(
                f"{self.pid}-weight",
                _loinc("29463-7"),
                _format_time(when),
                valueQuantity=_quantity(weight, "kg"),
            )
        )

    def _therapy(self) -> None:
        """The CRS-causing product (CAR-T, bispecific) as a completed administration.

        Coded by ATC only: codes.csv has no verified RxNorm code for these products.
        """
        therapy = self.vignette.get("context", {}).get("therapy")
        if not therapy:
            return
        coding: dict[str, Any] = {
            "system": ATC,
            "code": therapy["atc"],
            "display": therapy["name"],
        }
        administration: dict[str, Any] = {
            "resourceType": "MedicationAdministration",
            "id": f"{self.pid}-therapy",
            "status": "completed",
        }
        # Salt forms only concern RxNorm codes; the therapy keeps its (only) ATC coding.
        self._set_medication(administration, [coding], therapy["name"])
        administration["subject"] = self.subject
        administration["effectiveDateTime"] = therapy["time"]
        self.resources.append(administration)

    def _prior_crs(self) -> None:
        """An active, confirmed CRS Condition (ICD-10-CM D89.839) when context.prior_crs is true.

        The onset must lie after the therapy and before every charted finding, so the grader sees
        CRS established before the fever window (masking then depends only on the treatments).
        """
        context = self.vignette.get("context", {})
        if not context.get("prior_crs"):
            return
        condition: dict[str, Any] = {
            "resourceType": "Condition",
            "id": f"{self.pid}-prior-crs",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": CONDITION_CLINICAL,
                        "code": "active",
                        "display": "Active",
                    }
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": CONDITION_VERIFICATION,
                        "code": "confirmed",
                        "display": "Confirmed",
                    }
                ]
            },
            "code": {
                "coding": [
                    {
                        "system": ICD10CM,
                        "code": "D89.839",
                        "display": "Cytokine release syndrome, grade unspecified",
                    }
                ],
                "text": "Cytokine release syndrome",
            },
            "subject": self.subject,
            "onsetDateTime": _format_time(self._prior_crs_onset()),
        }
        if context.get("prior_crs_note"):
            condition["note"] = [{"text": context["prior_crs_note"]}]
        self.resources.append(condition)

    def _prior_crs_onset(self) -> datetime:
        """One day before the earliest finding, moved to between therapy and finding if needed."""
        times = [_parse_time(obs["time"]) for obs in self.vignette.get("observations", [])]
        times += [
            _parse_time(med["start"]) for med in self.vignette.get("medication_administrations", []) if med.get("start")
        ]
        earliest = min(times, default=_parse_time(self.vignette["evaluation_time"]))
        onset = earliest - timedelta(days=1)
        therapy = self.vignette.get("context", {}).get("therapy")
        if therapy and therapy.get("time"):
            therapy_time = _parse_time(therapy["time"])
            if onset <= therapy_time < earliest:
                onset = therapy_time + (earliest - therapy_time) / 2
        return onset.replace(microsecond=0)

    # -- observations ------------------------------------------------------------------------

    def _observations(self) -> None:
        """One (or, by variant, several or folded) Observation per vignette observation."""
        observations = self.vignette.get("observations", [])
        folded = self._fold_into_pulse_ox(observations)
        for index, obs in enumerate(observations, start=1):
            if index in folded:
                continue
            base_id = f"{self.pid}-obs-{index}"
            kind = obs.get("kind")
            if kind == "temperature":
                self._temperature(base_id, obs)
            elif kind == "blood_pressure":
                self._blood_pressure(base_id, obs)
            elif kind == "o2_device":
                self._o2_device(base_id, index, obs)
            elif kind in ("spo2", "o2_flow", "fio2"):
                self._oxygenation(base_id, obs, folded.get_components(index))
            elif "code" in obs and "value" in obs and "unit" in obs:
                # Kinds the public vignettes do not use yet (e.g. a MAP): a coded quantity is
                # unambiguous, so map it generically instead of failing.
                self._generic_quantity(base_id, obs)
            elif "code" in obs and "components" in obs:
                self.resources.append(
                    self._observation(
                        base_id,
                        _codeable(obs["code"]),
                        obs["time"],
                        component=[_component(c) for c in obs["components"]],
                    )
                )
            else:
                raise ValueError(f"{self.vignette['id']}: cannot map observation kind {kind!r}")

    def _temperature(self, obs_id: str, obs: dict[str, Any]) -> None:
        """Temperature, in the vignette's unit or converted to [degF] for that variant."""
        value, unit = obs["value"], obs["unit"]
        if self.variant == "fahrenheit" and unit == "Cel":
            value, unit = celsius_to_fahrenheit(value), "[degF]"
        self.resources.append(
            self._observation(
                obs_id,
                _codeable(obs["code"]),
                obs["time"],
                valueQuantity=_quantity(value, unit),
            )
        )

    def _blood_pressure(self, obs_id: str, obs: dict[str, Any]) -> None:
        """A BP panel with components, or stand-alone 8480-6 / 8462-4 Observations."""
        if self.variant == "standalone_bp":
            for component in obs["components"]:
                code = component["code"]["code"]
                self.resources.append(
                    self._observation(
                        f"{obs_id}-{code}",
                        _codeable(component["code"]),
                        obs["time"],
                        valueQuantity=_quantity(component["value"], component["unit"]),
                    )
                )
            return
        code = obs.get("code") or {
            "system": LOINC,
            "code": _DEFAULT_KIND_CODE["blood_pressure"],
        }
        self.resources.append(
            self._observation(
                obs_id,
                _codeable(code),
                obs["time"],
                component=[_component(c) for c in obs["components"]],
            )
        )

    def _o2_device(self, obs_id: str, index: int, obs: dict[str, Any]) -> None:
        """Device Observation (local code, SNOMED value) and, for a regime, a Procedure.

        ``device_class`` is a schematic hint for readers of the vignette, not FHIR data: the
        grader must derive the class from the SNOMED code, so it is deliberately not emitted.
        """
        value: dict[str, Any] | None = None
        if obs.get("valueCodeableConcept"):
            concept = obs["valueCodeableConcept"]
            value = {"coding": [_coding(concept)]}
            if concept.get("display"):
                value["text"] = concept["display"]
        elif obs.get("valueText"):
            # Room air arrives as free text in many flowsheets; carry it as such.
            value = {"text": obs["valueText"]}
        if value is not None:
            code = {
                "coding": [
                    {
                        "system": LOCAL_FLOWSHEET,
                        "code": "o2-device",
                        "display": "O2 delivery device",
                    }
                ],
                "text": "O2 delivery device",
            }
            self.resources.append(self._observation(obs_id, code, obs["time"], valueCodeableConcept=value))
        if obs.get("regime"):
            regime = obs["regime"]
            procedure: dict[str, Any] = {
                "resourceType": "Procedure",
                "id": f"{self.pid}-regime-{index}",
                "status": "in-progress",
                "code": {"coding": [_coding(regime)]},
                "subject": self.subject,
                "performedPeriod": {"start": obs["time"]},
            }
            if regime.get("display"):
                procedure["code"]["text"] = regime["display"]
            self.resources.append(procedure)
        if value is None and not obs.get("regime"):
            raise ValueError(f"{self.vignette['id']}: o2_device without a value or regime")

    def _oxygenation(self, obs_id: str, obs: dict[str, Any], components: list[dict[str, Any]]) -> None:
        """SpO2, O2 flow or FiO2; SpO2 may carry folded flow/FiO2 components."""
        code = obs.get("code") or {
            "system": LOINC,
            "code": _DEFAULT_KIND_CODE[obs["kind"]],
        }
        value, unit = obs["value"], obs["unit"]
        if obs["kind"] == "o2_flow":
            value, unit = self._flow(value, unit)
        extra: dict[str, Any] = {"valueQuantity": _quantity(value, unit)}
        if components:
            extra["component"] = components
        self.resources.append(self._observation(obs_id, _codeable(code), obs["time"], **extra))

    def _generic_quantity(self, obs_id: str, obs: dict[str, Any]) -> None:
        """A coded quantity Observation for kinds without special handling."""
        self.resources.append(
            self._observation(
                obs_id,
                _codeable(obs["code"]),
                obs["time"],
                valueQuantity=_quantity(obs["value"], obs["unit"]),
            )
        )

    def _flow(self, value: float, unit: str) -> tuple[float, str]:
        """Express an O2 flow in mL/min for the pulse-ox variant (EHRs do send mL/min)."""
        if self.variant == "pulse_ox_components" and unit == "L/min":
            return _number(Decimal(str(value)) * 1000), "mL/min"
        return value, unit

    def _fold_into_pulse_ox(self, observations: list[dict[str, Any]]) -> _Folding:
        """Plan which flow/FiO2 observations become components of a same-time SpO2.

        Only in the "pulse_ox_components" variant (the US Core pulse-oximetry shape); a flow or
        FiO2 with no SpO2 at the same instant stays stand-alone.
        """
        folding = _Folding()
        if self.variant != "pulse_ox_components":
            return folding
        spo2_at: dict[datetime, int] = {}
        for index, obs in enumerate(observations, start=1):
            if obs.get("kind") == "spo2":
                spo2_at.setdefault(_parse_time(obs["time"]), index)
        for index, obs in enumerate(observations, start=1):
            if obs.get("kind") not in ("o2_flow", "fio2"):
                continue
            target = spo2_at.get(_parse_time(obs["time"]))
            if target is None:
                continue
            default = _DEFAULT_KIND_CODE[obs["kind"]]
            code = obs.get("code") or {"system": LOINC, "code": default}
            value, unit = obs["value"], obs["unit"]
            if obs["kind"] == "o2_flow":
                value, unit = self._flow(value, unit)
            folding.add(
                target,
                index,
                {"code": _codeable(code), "valueQuantity": _quantity(value, unit)},
            )
        return folding

    def _observation(self, obs_id: str, code: dict[str, Any], time: str, **value: Any) -> dict[str, Any]:
        """A final vital-signs Observation; ``value`` holds value[x] and/or component."""
        return {
            "resourceType": "Observation",
            "id": obs_id,
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": OBSERVATION_CATEGORY,
                            "code": "vital-signs",
                            "display": "Vital Signs",
                        }
                    ]
                }
            ],
            "code": code,
            "subject": self.subject,
            "effectiveDateTime": time,
            **value,
        }

    # -- procedures and medications ----------------------------------------------------------

    def _procedures(self) -> None:
        """Vignette procedures other than fluid boluses.

        IV fluid boluses are skipped on purpose: ASTCT grades hypotension "not requiring
        vasopressors" the same whether or not fluids were given, so a bolus never changes the
        grade, and no verified code for it is in codes.csv.
        """
        for index, proc in enumerate(self.vignette.get("procedures", []), start=1):
            if proc.get("kind") == "iv_fluid_bolus":
                continue
            if not proc.get("code"):
                raise ValueError(f"{self.vignette['id']}: cannot map procedure kind {proc.get('kind')!r}")
            period: dict[str, Any] = {"start": proc.get("start") or proc["time"]}
            if proc.get("end"):
                period["end"] = proc["end"]
            self.resources.append(
                {
                    "resourceType": "Procedure",
                    "id": f"{self.pid}-proc-{index}",
                    "status": proc.get("status", "in-progress"),
                    "code": _codeable(proc["code"]),
                    "subject": self.subject,
                    "performedPeriod": period,
                }
            )

    def _medication_administrations(self) -> None:
        """One MedicationAdministration per vignette entry (vasopressors, tocilizumab, ...)."""
        for index, med in enumerate(self.vignette.get("medication_administrations", []), start=1):
            administration: dict[str, Any] = {
                "resourceType": "MedicationAdministration",
                "id": f"{self.pid}-med-{index}",
                "status": med["status"],
            }
            self._set_medication(administration, self._med_codings(med["codes"]), med["drug"])
            administration["subject"] = self.subject
            period: dict[str, Any] = {"start": med["start"]}
            if med.get("end"):
                period["end"] = med["end"]
            administration["effectivePeriod"] = period
            if med.get("note"):
                administration["note"] = [{"text": med["note"]}]
            dosage = _dosage(med)
            if dosage:
                administration["dosage"] = dosage
            self.resources.append(administration)

    def _med_codings(self, codes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Codings as given, or salt-form RxNorm codes without ATC for that variant.

        ATC is dropped only when another coding remains: a drug coded by ATC alone (the public
        acetaminophen) would otherwise be left with its name only, which is weaker evidence and
        not the equivalence this variant is meant to test.
        """
        codings = [_coding(code) for code in codes]
        if self.variant != "salt_forms":
            return codings
        salted: list[dict[str, Any]] = []
        for coding in codings:
            if coding.get("system") == RXNORM and coding.get("code") in SALT_FORMS:
                salt_code, salt_display = SALT_FORMS[coding["code"]]
                salted.append({"system": RXNORM, "code": salt_code, "display": salt_display})
            else:
                salted.append(coding)
        without_atc = [c for c in salted if c.get("system") != ATC]
        return without_atc or salted

    def _set_medication(self, administration: dict[str, Any], codings: list[dict[str, Any]], name: str) -> None:
        """Set medication[x]: a CodeableConcept, or a reference to a contained Medication."""
        concept = {"coding": codings, "text": name}
        if self.variant == "contained_medication":
            administration["contained"] = [
                {
                    "resourceType": "Medication",
                    "id": _CONTAINED_MEDICATION_ID,
                    "code": concept,
                }
            ]
            administration["medicationReference"] = {
                "reference": f"#{_CONTAINED_MEDICATION_ID}",
                "display": name,
            }
        else:
            administration["medicationCodeableConcept"] = concept


class _Folding:
    """Which observations (by 1-based index) fold into which SpO2, and their components."""

    def __init__(self) -> None:
        self._components: dict[int, list[dict[str, Any]]] = {}
        self._folded: set[int] = set()

    def add(self, target: int, source: int, component: dict[str, Any]) -> None:
        """Fold observation ``source`` into the SpO2 observation ``target``."""
        self._components.setdefault(target, []).append(component)
        self._folded.add(source)

    def __contains__(self, index: object) -> bool:
        """True when the observation at ``index`` was folded and must not stand alone."""
        return index in self._folded

    def get_components(self, index: int) -> list[dict[str, Any]]:
        """Components to attach to the observation at ``index`` (empty for most)."""
        return self._components.get(index, [])


# -- small helpers ---------------------------------------------------------------------------


def _parse_time(value: str) -> datetime:
    """Parse an ISO 8601 instant; a naive time is taken as UTC, as the vignettes all use Z."""
    parsed = datetime.fromisoformat(value)  # Python >= 3.11 accepts a trailing Z
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _format_time(value: datetime) -> str:
    """Format a computed instant like the vignette times (UTC, seconds, trailing Z)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _birth_date(evaluation_time: str, age_years: float) -> str:
    """A birth date giving ``age_years`` whole years at ``evaluation_time``.

    The date lies a few months past the anniversary (or, for a fractional age, the matching
    number of months), so no time-zone or leap-day subtlety changes the whole-year age. The day
    is capped at 28 so every month has it.
    """
    evaluated = _parse_time(evaluation_time).date()
    whole = int(age_years)
    months = round((age_years - whole) * 12)
    if not 1 <= months <= 11:
        months = _MONTHS_PAST_BIRTHDAY
    total = evaluated.year * 12 + (evaluated.month - 1) - whole * 12 - months
    year, month0 = divmod(total, 12)
    return date(year, month0 + 1, min(evaluated.day, 28)).isoformat()


def _number(value: Decimal) -> float:
    """A JSON number from a Decimal: an int when integral, so 2 L/min reads 2000 mL/min."""
    return int(value) if value == value.to_integral_value() else float(value)


def _quantity(value: float, unit: str) -> dict[str, Any]:
    """A UCUM Quantity; the vignette units are UCUM codes already, so code == unit."""
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _coding(code: dict[str, Any]) -> dict[str, Any]:
    """A Coding with system/code/display, filling a known LOINC display when missing."""
    coding = {key: code[key] for key in ("system", "code", "display") if code.get(key)}
    if "display" not in coding and coding.get("system") == LOINC:
        display = _LOINC_DISPLAY.get(str(coding.get("code")))
        if display:
            coding["display"] = display
    return coding


def _codeable(code: dict[str, Any]) -> dict[str, Any]:
    """A CodeableConcept holding one Coding."""
    return {"coding": [_coding(code)]}


def _loinc(code: str) -> dict[str, Any]:
    """A LOINC CodeableConcept from a code this module emits on its own."""
    return _codeable({"system": LOINC, "code": code})


def _component(component: dict[str, Any]) -> dict[str, Any]:
    """An Observation.component with a coded quantity value (BP systolic/diastolic, ...)."""
    return {
        "code": _codeable(component["code"]),
        "valueQuantity": _quantity(component["value"], component["unit"]),
    }


def _dosage(med: dict[str, Any]) -> dict[str, Any]:
    """Dosage with route text and either a dose (mg) or an infusion rate (per minute, ...)."""
    dosage: dict[str, Any] = {}
    if med.get("route"):
        dosage["route"] = {"text": med["route"]}
    dose = med.get("dose")
    if dose:
        quantity = _quantity(dose["value"], dose["unit"])
        if str(dose["unit"]).endswith(_RATE_UNIT_SUFFIXES):
            dosage["rateQuantity"] = quantity
        else:
            dosage["dose"] = quantity
    return dosage
