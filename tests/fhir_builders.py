"""Small builders for the FHIR R4 resources the CRS grading reads (plain JSON dicts).

Each builder returns one resource shaped as clinical-reference.md section 2 describes, placed in
time relative to a fixed evaluation time ``T`` (``hours_before`` / ``minutes_before``; a negative
value is in the future). Every resource built here validates with the ``fhir.resources`` R4B
models (``tests/test_astct_rules.py`` checks it), because the service drops evidence that does
not. To build a deliberately broken resource, build a valid one and change the dict.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

Resource = dict[str, Any]
"""One FHIR resource as JSON."""

T = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)
"""The fixed evaluation time every test grades at."""

PATIENT_ID = "p1"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOCAL_FLOWSHEET = "http://example.org/fhir/CodeSystem/flowsheet"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

ObservationStatus = Literal[
    "registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"
]
AdministrationStatus = Literal[
    "in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"
]
ProcedureStatus = Literal[
    "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"
]


# -- time and data types -------------------------------------------------------------------


def when(hours_before: float = 0.0, *, minutes_before: float = 0.0, at: datetime = T) -> str:
    """A FHIR dateTime ``hours_before`` + ``minutes_before`` before ``at`` (UTC, ``Z``)."""
    moment = at - timedelta(hours=hours_before, minutes=minutes_before)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display is not None:
        out["display"] = display
    return out


def concept(system: str, code: str, display: str | None = None, *, text: str | None = None) -> dict[str, Any]:
    """A CodeableConcept with one coding."""
    out: dict[str, Any] = {"coding": [coding(system, code, display)]}
    if text is not None:
        out["text"] = text
    return out


def text_concept(text: str) -> dict[str, Any]:
    """A CodeableConcept with text only, no coding."""
    return {"text": text}


def quantity(value: float, unit: str | None, *, ucum: bool = True) -> dict[str, Any]:
    """A Quantity: a UCUM code (``ucum=True``), a free-text unit only, or no unit at all (``None``)."""
    out: dict[str, Any] = {"value": value}
    if unit is None:
        return out
    out["unit"] = unit
    if ucum:
        out["system"] = UCUM
        out["code"] = unit
    return out


def _subject(patient_id: str) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id}"}


# -- Patient -------------------------------------------------------------------------------


def birth_date_for_age(age_years: int, *, at: datetime = T) -> str:
    """A birth date giving exactly ``age_years`` completed years at ``at`` (born on 1 January)."""
    return date(at.year - age_years, 1, 1).isoformat()


def patient(age_years: int | None = 45, *, patient_id: str = PATIENT_ID, at: datetime = T) -> Resource:
    """A Patient aged ``age_years`` at ``at``; ``None`` leaves out the birth date."""
    out: Resource = {"resourceType": "Patient", "id": patient_id}
    if age_years is not None:
        out["birthDate"] = birth_date_for_age(age_years, at=at)
    return out


# -- Observations --------------------------------------------------------------------------


def observation(
    rid: str,
    code: dict[str, Any],
    *,
    hours_before: float = 1.0,
    minutes_before: float = 0.0,
    effective: str | None = None,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
    category: str = "vital-signs",
) -> Resource:
    """An Observation without a value; ``effective`` overrides the computed effectiveDateTime."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "category": [{"coding": [coding(OBSERVATION_CATEGORY, category)]}],
        "code": code,
        "subject": _subject(patient_id),
        "effectiveDateTime": effective if effective is not None else when(hours_before, minutes_before=minutes_before),
    }


def temperature(
    rid: str,
    value: float,
    unit: str | None = "Cel",
    *,
    ucum: bool = True,
    hours_before: float = 1.0,
    minutes_before: float = 0.0,
    effective: str | None = None,
    status: ObservationStatus = "final",
    loinc: str = "8310-5",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """Body temperature in ``Cel`` or ``[degF]`` (or any unit, or none, to test rejection)."""
    out = observation(
        rid,
        concept(LOINC, loinc, "Body temperature"),
        hours_before=hours_before,
        minutes_before=minutes_before,
        effective=effective,
        status=status,
        patient_id=patient_id,
    )
    out["valueQuantity"] = quantity(value, unit, ucum=ucum)
    return out


def _bp_component(loinc: str, display: str, value: float) -> dict[str, Any]:
    return {"code": concept(LOINC, loinc, display), "valueQuantity": quantity(value, "mm[Hg]")}


def bp_panel(
    rid: str,
    systolic: float,
    diastolic: float,
    *,
    mean: float | None = None,
    hours_before: float = 1.0,
    minutes_before: float = 0.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A blood pressure panel (85354-9) with systolic and diastolic components, optionally MAP."""
    out = observation(
        rid,
        concept(LOINC, "85354-9", "Blood pressure panel with all children optional"),
        hours_before=hours_before,
        minutes_before=minutes_before,
        status=status,
        patient_id=patient_id,
    )
    components = [
        _bp_component("8480-6", "Systolic blood pressure", systolic),
        _bp_component("8462-4", "Diastolic blood pressure", diastolic),
    ]
    if mean is not None:
        components.append(_bp_component("8478-0", "Mean blood pressure", mean))
    out["component"] = components
    return out


def systolic_bp(
    rid: str,
    value: float,
    unit: str = "mm[Hg]",
    *,
    hours_before: float = 1.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A stand-alone systolic blood pressure (8480-6), in ``mm[Hg]`` unless told."""
    out = observation(
        rid,
        concept(LOINC, "8480-6", "Systolic blood pressure"),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
    )
    out["valueQuantity"] = quantity(value, unit)
    return out


def mean_bp(
    rid: str,
    value: float,
    *,
    hours_before: float = 1.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A stand-alone mean arterial pressure (8478-0)."""
    out = observation(
        rid,
        concept(LOINC, "8478-0", "Mean blood pressure"),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
    )
    out["valueQuantity"] = quantity(value, "mm[Hg]")
    return out


def spo2(
    rid: str,
    percent: float,
    *,
    flow: float | None = None,
    flow_unit: str = "L/min",
    fio2_percent: float | None = None,
    loinc: str = "59408-5",
    hours_before: float = 1.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """SpO2 (59408-5 or 2708-6), optionally with US Core flow (3151-8) and FiO2 (3150-0) components."""
    out = observation(
        rid,
        concept(LOINC, loinc, "Oxygen saturation in Arterial blood by Pulse oximetry"),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
    )
    out["valueQuantity"] = quantity(percent, "%")
    components: list[dict[str, Any]] = []
    if flow is not None:
        components.append(
            {"code": concept(LOINC, "3151-8", "Inhaled oxygen flow rate"), "valueQuantity": quantity(flow, flow_unit)}
        )
    if fio2_percent is not None:
        components.append(
            {
                "code": concept(LOINC, "3150-0", "Inhaled oxygen concentration"),
                "valueQuantity": quantity(fio2_percent, "%"),
            }
        )
    if components:
        out["component"] = components
    return out


def o2_flow(
    rid: str,
    value: float,
    unit: str = "L/min",
    *,
    hours_before: float = 1.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A stand-alone inhaled oxygen flow (3151-8) in ``L/min`` or ``mL/min``; 0 means room air."""
    out = observation(
        rid,
        concept(LOINC, "3151-8", "Inhaled oxygen flow rate"),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
    )
    out["valueQuantity"] = quantity(value, unit)
    return out


def fio2(
    rid: str,
    percent: float,
    *,
    hours_before: float = 1.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A stand-alone inhaled oxygen concentration (3150-0) in ``%``."""
    out = observation(
        rid,
        concept(LOINC, "3150-0", "Inhaled oxygen concentration"),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
    )
    out["valueQuantity"] = quantity(percent, "%")
    return out


def device(
    rid: str,
    snomed_code: str,
    display: str,
    *,
    obs_code: dict[str, Any] | None = None,
    hours_before: float = 1.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """An oxygen device Observation: SNOMED CT device in valueCodeableConcept, a site-local code.

    No LOINC code exists for "oxygen delivery device" (codes.csv), so Observation.code is whatever
    the site uses; ``obs_code`` replaces the default local flowsheet code.
    """
    code = obs_code if obs_code is not None else concept(LOCAL_FLOWSHEET, "o2-device", "O2 delivery device")
    out = observation(rid, code, hours_before=hours_before, status=status, patient_id=patient_id)
    out["valueCodeableConcept"] = concept(SNOMED, snomed_code, display)
    return out


def room_air(
    rid: str,
    text: str = "Room air",
    *,
    hours_before: float = 1.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A device Observation whose value is room air, as text (no standard code exists)."""
    out = observation(
        rid,
        concept(LOCAL_FLOWSHEET, "o2-device", "O2 delivery device"),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
    )
    out["valueCodeableConcept"] = text_concept(text)
    return out


def weight(
    rid: str,
    value: float,
    unit: str = "kg",
    *,
    hours_before: float = 2.0,
    status: ObservationStatus = "final",
    patient_id: str = PATIENT_ID,
) -> Resource:
    """Body weight (29463-7) in ``kg`` or ``[lb_av]``."""
    out = observation(
        rid,
        concept(LOINC, "29463-7", "Body weight"),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
    )
    out["valueQuantity"] = quantity(value, unit)
    return out


# -- Medications ---------------------------------------------------------------------------


def rxnorm(code: str, display: str | None = None) -> dict[str, Any]:
    return concept(RXNORM, code, display)


def atc(code: str, display: str | None = None) -> dict[str, Any]:
    return concept(ATC, code, display)


def medication_administration(
    rid: str,
    medication: dict[str, Any],
    *,
    contained: bool = False,
    status: AdministrationStatus = "completed",
    hours_before: float = 1.0,
    period: tuple[float, float | None] | None = None,
    dose: tuple[float, str] | None = None,
    rate: tuple[float, str] | None = None,
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A MedicationAdministration of ``medication`` (a CodeableConcept).

    ``contained`` puts the concept in a contained Medication referenced as ``#med``. Time is
    ``effectiveDateTime`` ``hours_before`` T, or ``effectivePeriod`` from ``period`` =
    (start hours before T, end hours before T or None for an open period; negative is future).
    """
    out: Resource = {"resourceType": "MedicationAdministration", "id": rid, "status": status}
    if contained:
        out["contained"] = [{"resourceType": "Medication", "id": "med", "code": medication}]
        out["medicationReference"] = {"reference": "#med"}
    else:
        out["medicationCodeableConcept"] = medication
    out["subject"] = _subject(patient_id)
    if period is not None:
        start, end = period
        effective: dict[str, str] = {"start": when(start)}
        if end is not None:
            effective["end"] = when(end)
        out["effectivePeriod"] = effective
    else:
        out["effectiveDateTime"] = when(hours_before)
    dosage: dict[str, Any] = {}
    if dose is not None:
        dosage["dose"] = quantity(*dose)
    if rate is not None:
        dosage["rateQuantity"] = quantity(*rate)
    if dosage:
        out["dosage"] = dosage
    return out


def oxygen_administration(
    rid: str,
    flow_l_min: float,
    *,
    status: AdministrationStatus = "in-progress",
    hours_before: float = 1.0,
    period: tuple[float, float | None] | None = None,
    patient_id: str = PATIENT_ID,
) -> Resource:
    """Oxygen given as a medication (RxNorm 7806) at ``flow_l_min``, device not stated."""
    return medication_administration(
        rid,
        rxnorm("7806", "oxygen"),
        status=status,
        hours_before=hours_before,
        period=period,
        rate=(flow_l_min, "L/min"),
        patient_id=patient_id,
    )


# -- Procedure and Condition ---------------------------------------------------------------


def procedure(
    rid: str,
    snomed_code: str,
    display: str,
    *,
    status: ProcedureStatus = "in-progress",
    hours_before: float | None = None,
    period: tuple[float, float | None] | None = (2.0, None),
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A respiratory Procedure; ``hours_before`` gives performedDateTime, else ``period`` as above."""
    out: Resource = {
        "resourceType": "Procedure",
        "id": rid,
        "status": status,
        "code": concept(SNOMED, snomed_code, display),
        "subject": _subject(patient_id),
    }
    if hours_before is not None:
        out["performedDateTime"] = when(hours_before)
    elif period is not None:
        start, end = period
        performed: dict[str, str] = {"start": when(start)}
        if end is not None:
            performed["end"] = when(end)
        out["performedPeriod"] = performed
    return out


def condition(
    rid: str,
    icd10_code: str = "D89.832",
    *,
    clinical_status: str = "active",
    onset_hours_before: float | None = None,
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A Condition coded in ICD-10-CM (CRS is D89.831-D89.835, D89.839)."""
    out: Resource = {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": concept(CONDITION_CLINICAL, clinical_status),
        "code": concept(ICD10CM, icd10_code, "Cytokine release syndrome"),
        "subject": _subject(patient_id),
    }
    if onset_hours_before is not None:
        out["onsetDateTime"] = when(onset_hours_before)
    return out


def reference(resource: Resource) -> str:
    """The ``Type/id`` reference evidence cites for ``resource``."""
    return f"{resource['resourceType']}/{resource['id']}"


# -- laboratory (issue 18) -------------------------------------------------------------------


def lab(
    rid: str,
    loinc: str,
    value: float,
    unit: str,
    *,
    hours_before: float = 2.0,
    status: ObservationStatus = "final",
    ucum: bool = True,
    reference_range: tuple[float | None, float | None] | None = None,
    patient_id: str = PATIENT_ID,
) -> Resource:
    """A laboratory Observation (category ``laboratory``) with a LOINC code, a value and, when
    given, a referenceRange (low, high) in the same unit."""
    out = observation(
        rid,
        concept(LOINC, loinc),
        hours_before=hours_before,
        status=status,
        patient_id=patient_id,
        category="laboratory",
    )
    out["valueQuantity"] = quantity(value, unit, ucum=ucum)
    if reference_range is not None:
        low, high = reference_range
        bounds: dict[str, Any] = {}
        if low is not None:
            bounds["low"] = quantity(low, unit, ucum=ucum)
        if high is not None:
            bounds["high"] = quantity(high, unit, ucum=ucum)
        out["referenceRange"] = [bounds]
    return out
