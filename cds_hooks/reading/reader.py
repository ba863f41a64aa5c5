"""FHIR R4 resources (plain JSON) -> the one clinical record, each finding with time and reference.

One pass over one patient's resources reads everything every feature needs: vital signs, oxygen
support, medications by role, CRS Conditions, weight, neurologic assessments and ICE forms, blood
cultures and infection Conditions (clinical-reference.md section 2). The FHIR rules (statuses,
patient, time) come from ``fhir_rules.py``; the values of neurologic assessments and infection
signs from ``neuro.py`` and ``infection.py``. It reads plain dicts so that a hook call can skip
the resources no rule uses without building models for them; the resources that end up as
evidence are validated against the R4B models afterwards (``evidence_check.py``). Anything that
looks relevant but cannot be used (status, unit, value, time, another patient) becomes a
:class:`NotEvidence` with its reason, never a silent drop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cds_hooks.reading.fhir_rules import (
    ACTIVE_CONDITION_STATUSES,
    ADMINISTRATION_EVIDENCE_STATUSES,
    OBSERVATION_EVIDENCE_STATUSES,
    PROCEDURE_EVIDENCE_STATUSES,
    QUESTIONNAIRE_RESPONSE_EVIDENCE_STATUSES,
    REFUTED_VERIFICATION,
    PatientCheck,
    SourcedResource,
    codings,
    observation_time,
    reference_of,
    status_codes,
    text_candidates,
    text_field,
)
from cds_hooks.reading.fhir_time import When, parse_date, parse_instant, parse_when
from cds_hooks.reading.infection import blood_culture, infection_condition, is_blood_culture
from cds_hooks.reading.labs import LabDefinition, LabTable, builtin_labs
from cds_hooks.reading.neuro import IceQuestionnaire, ice_form_finding, is_ice_form, neuro_domain, neuro_observation
from cds_hooks.reading.record import (
    Administration,
    BloodPressure,
    CrsCondition,
    Domain,
    LabResult,
    NeuroFinding,
    NotEvidence,
    OxygenRecord,
    PatientRecord,
    SpO2,
    Temperature,
    UnreadableOxygen,
    Weight,
)
from cds_hooks.reading.terminology import CodeMatch, ConceptKind, MedicationRole, Terminology
from cds_hooks.reading.units import Converted, Quantity, UnitTable

__all__ = ["Extractor", "SourcedResource", "extract_record", "reference_of"]

PLAUSIBLE_RANGES: Mapping[str, tuple[float, float]] = {
    # Physiological plausibility limits [choice]: values outside are charting errors, not evidence.
    "body_temperature": (25.0, 45.0),
    "systolic_blood_pressure": (20.0, 300.0),
    "diastolic_blood_pressure": (5.0, 250.0),
    "mean_arterial_pressure": (10.0, 250.0),
    "oxygen_saturation": (1.0, 100.0),
    "oxygen_flow": (0.0, 80.0),
    "inspired_oxygen": (20.0, 100.0),
    "body_weight": (0.3, 500.0),
}

_QUANTITY_OF: Mapping[str, Quantity] = {
    "body_temperature": "temperature",
    "systolic_blood_pressure": "pressure",
    "diastolic_blood_pressure": "pressure",
    "mean_arterial_pressure": "pressure",
    "oxygen_saturation": "saturation",
    "oxygen_saturation_on_room_air": "saturation",
    "oxygen_flow": "oxygen_flow",
    "inspired_oxygen": "oxygen_fraction",
    "body_weight": "mass",
}

ROOM_AIR_FIO2_PERCENT = 21.0

VASOACTIVE_ROLES = frozenset(
    {
        MedicationRole.VASOPRESSOR,
        MedicationRole.VASOPRESSIN_ANALOGUE,
        MedicationRole.INOTROPE,
        MedicationRole.VASOACTIVE_NOT_COUNTED,
    }
)
"""Roles whose name fallback refuses combination products and whose route decides (section 1)."""

_COMPONENT_SPLIT = re.compile(
    r"\s+(?:with|and|plus|w/)\s+|\s*[+&]\s*|\s+/\s+|(?<=[a-z]{5})[/-](?=[a-z]{5})", re.IGNORECASE
)
"""Where a product name joins two ingredients: ``lidocaine 1% with epinephrine``, ``A / B``,
``lidocaine/epinephrine``; not ``mg/mL`` or ``mcg/kg/min`` (units are short words)."""

DILUENT_WORDS = ("sodium chloride", "saline", "dextrose", "glucose", "water", "ringer", "d5w", "ns", "nacl")
"""An infusion's diluent is not a second drug: ``norepinephrine 4 mg in dextrose`` is one product."""


def product_components(text: str) -> list[str]:
    """The active ingredients a medication text names, diluents left out (one for a single drug)."""
    parts = [p.strip() for p in _COMPONENT_SPLIT.split(text) if p and p.strip()]
    active = [p for p in parts if not re.search(r"\b(?:" + "|".join(DILUENT_WORDS) + r")\b", p, re.IGNORECASE)]
    return active or parts[:1]


_ANY_VALUE = (float("-inf"), float("inf"))
_TENTH = Decimal("0.1")


def _round_celsius(value: float) -> float:
    """Half-up to 0.1 Cel on the decimal digits as charted; a value charted to 0.1 is kept as is
    (the common case, so it skips the Decimal arithmetic)."""
    text = repr(value)
    point = text.find(".")
    if point != -1 and len(text) - point <= 2 and "e" not in text:  # at most one digit after the point
        return value
    return float(Decimal(text).quantize(_TENTH, rounding=ROUND_HALF_UP))


class Extractor:
    """Turns one patient's resources into a :class:`PatientRecord`.

    ``patient_id``, when known (the hook context), makes resources about another patient
    not evidence: a prefetch or a server bug must never mix two patients' data.
    """

    def __init__(
        self,
        terminology: Terminology,
        units: UnitTable,
        patient_id: str | None,
        ice_form: IceQuestionnaire | None = None,
        *,
        site_zone: tzinfo | None = None,
        now: datetime | None = None,
        labs: LabTable | None = None,
    ) -> None:
        self._terms = terminology
        self._now = now
        self._labs = labs if labs is not None else builtin_labs()
        self._units = units
        self._patient_id = patient_id
        self._ice_form = ice_form
        self._owns = PatientCheck(patient_id)
        self._site_zone = site_zone
        self._record = PatientRecord(patient_reference=f"Patient/{patient_id}" if patient_id else None)
        self._medications: dict[str, Mapping[str, Any]] = {}
        self._quantity_concepts: dict[tuple[object, object], str | None] = {}

    def extract(self, resources: Iterable[SourcedResource], *, skip: Mapping[str, str] | None = None) -> PatientRecord:
        """``skip`` maps references that failed FHIR R4 validation to the reason: not read, and
        a neurologic assessment among them is named on the ICANS result."""
        skipped = skip or {}
        items: list[SourcedResource] = []
        medications = self._medications
        for item in resources:
            resource, reference = item
            if reference in skipped:
                self._skipped_assessment(item, skipped[reference])
                continue
            items.append(item)
            if resource.get("resourceType") == "Medication":  # every one known before any is cited
                medications[reference] = resource
        handlers = {
            "Patient": self._patient,
            "Observation": self._observation,
            "MedicationAdministration": self._administration,
            "Procedure": self._procedure,
            "Condition": self._condition,
            "QuestionnaireResponse": self._questionnaire_response,
        }
        observation = self._observation
        for resource, reference in items:
            kind = resource.get("resourceType")
            if kind == "Observation":  # most of any chart: no str() and no second lookup
                observation(resource, reference)
                continue
            handler = handlers.get(str(kind))
            if handler is not None:
                handler(resource, reference)
        self._record.sort()
        return self._record

    # -- shared checks -------------------------------------------------------------------

    def _reject(self, reference: str, reason: str) -> None:
        self._record.not_evidence.append(NotEvidence(reference, reason))

    def _reject_assessment(self, reference: str, reason: str) -> None:
        self._record.neuro_not_evidence.append(NotEvidence(reference, reason))

    def _belongs_to_patient(self, resource: Mapping[str, Any]) -> bool:
        return self._owns(resource)

    def _skipped_assessment(self, item: SourcedResource, reason: str) -> None:
        resource = item.resource
        kind = resource.get("resourceType")
        if (kind == "Observation" and neuro_domain(resource, self._terms) is not None) or (
            kind == "QuestionnaireResponse" and self._ice_form is not None and is_ice_form(resource, self._ice_form)
        ):
            self._reject_assessment(item.reference, reason)

    def _convert(self, concept_id: str, quantity: object) -> Converted | str:
        converted = self._units.convert(_QUANTITY_OF[concept_id], quantity)
        if isinstance(converted, str):
            return converted
        low, high = PLAUSIBLE_RANGES.get(concept_id, _ANY_VALUE)
        if not low <= converted.value <= high:
            return (
                f"value {converted.original_value:g} {converted.original_unit} is outside the "
                f"plausible range {low:g}-{high:g} {converted.canonical_unit}"
            )
        return converted

    # -- Patient ---------------------------------------------------------------------------

    def _patient(self, resource: Mapping[str, Any], reference: str) -> None:
        if self._patient_id is not None and resource.get("id") != self._patient_id:
            self._reject(reference, "a Patient other than the one in the hook context")
            return
        self._record.patient_reference = reference
        self._record.birth_date = parse_date(resource.get("birthDate"))
        deceased = resource.get("deceasedBoolean") is True or isinstance(resource.get("deceasedDateTime"), str)
        self._record.deceased = deceased

    # -- Observation -----------------------------------------------------------------------

    def _observation(self, resource: Mapping[str, Any], reference: str) -> None:
        code = resource.get("code")
        coding = code.get("coding") if isinstance(code, dict) else None
        if isinstance(coding, list) and len(coding) == 1 and "component" not in resource:
            concept_id = self._quantity_concept(coding[0])
            if concept_id is not None:
                self._quantity_observation(resource, reference, concept_id)
                return
        lab = self._labs.match(code)
        if lab is not None:
            self._lab(resource, reference, lab)
            return
        parts = self._observation_parts(resource)
        if not parts and self._unread(resource):
            return
        device = self._device_value(resource) if not parts else None
        if not parts and device is None:
            domain = neuro_domain(resource, self._terms)
            if domain is not None:
                self._neuro_observation(resource, reference, domain)
            elif is_blood_culture(resource, self._terms):
                self._blood_culture(resource, reference)
            return
        when = self._evidence_time(resource, reference)
        if when is None:
            return
        if device is not None:
            self._device_record(device, when, reference)
            return
        if "dataAbsentReason" in resource and "component" not in resource:
            self._reject(reference, "no value (dataAbsentReason)")
            return
        if any(concept_id == "average_blood_pressure" for concept_id, _ in parts):
            self._reject(
                reference,
                "average blood pressure over a period (US Core 96607-7): not a reading at one time, "
                "so not used for hypotension",
            )
            return
        self._observation_values(parts, when, reference)

    def _quantity_concept(self, coding: object) -> str | None:
        """The vital-sign concept of an Observation's one coding, when that is all there is to it.

        The common chart row (one coding, no components) is one dict hit here. Only a coding that
        is no lab and maps to a concept read from ``valueQuantity`` answers; every other shape
        (a lab, a panel, average pressure, a device, a neurologic code, unmapped) returns None
        and takes the general path, which decides it exactly as before.
        """
        if not isinstance(coding, dict):
            return None
        key = (coding.get("system"), coding.get("code"))
        try:
            return self._quantity_concepts[key]
        except KeyError:
            found = self._quantity_concepts[key] = self._lone_code_concept(*key)
            return found
        except TypeError:  # an unhashable system or code (malformed JSON): not a string, so no concept
            return None

    def _lone_code_concept(self, system: object, code: object) -> str | None:
        if not isinstance(system, str) or not isinstance(code, str) or (system, code) in self._labs.by_code:
            return None
        match = self._terms.lookup(system, code)
        if match is None or match.concept.kind is not ConceptKind.OBSERVATION:
            return None
        concept_id = match.concept.id
        return concept_id if concept_id in _QUANTITY_OF else None

    def _quantity_observation(self, resource: Mapping[str, Any], reference: str, concept_id: str) -> None:
        """One vital sign from ``valueQuantity``: the general path's rules for a single part."""
        when = self._evidence_time(resource, reference)
        if when is None:
            return
        if "dataAbsentReason" in resource:
            self._reject(reference, "no value (dataAbsentReason)")
            return
        converted = self._convert(concept_id, resource.get("valueQuantity"))
        if isinstance(converted, str):
            self._value_problem(f"{concept_id.replace('_', ' ')}: {converted}", when[0], reference)
            return
        self._store_value(concept_id, converted, when[0], when[1], reference)

    def _evidence_time(self, resource: Mapping[str, Any], reference: str) -> tuple[datetime, datetime | None] | None:
        """(time, latest) of an Observation whose status, patient and time make it evidence;
        None once the reason it is not has been recorded."""
        status = resource.get("status")
        if not isinstance(status, str) or status not in OBSERVATION_EVIDENCE_STATUSES:
            self._reject(reference, f"Observation status is {text_field(status)!r}")
            return None
        if not self._owns(resource):
            self._reject(reference, "belongs to another patient")
            return None
        if "effectiveDateTime" in resource:  # the common case of _observation_moment, inline
            moment = parse_instant(resource["effectiveDateTime"])
            if not isinstance(moment, str):
                return moment, None
        when = self._observation_moment(resource)
        if isinstance(when, str):
            self._reject(reference, when)
            return None
        return when

    def _lab(self, resource: Mapping[str, Any], reference: str, lab: LabDefinition) -> None:
        """A laboratory value, under the rules vitals follow (status, patient, time, unit)."""
        reason = self._lab_reason(resource)
        when = self._observation_moment(resource)
        if reason is None and isinstance(when, str):
            reason = when
        converted = self._labs.convert(lab, resource.get("valueQuantity")) if reason is None else reason
        if isinstance(converted, str) or isinstance(when, str):
            self._record.lab_not_evidence.append((lab.id, NotEvidence(reference, f"{lab.display}: {converted}")))
            return
        low, high = self._labs.reference_range(lab, resource.get("referenceRange"))
        self._record.labs.append(
            LabResult(
                lab.id,
                when[0],
                converted.value,
                lab.canonical_unit,
                converted.original,
                reference,
                reference_low=low,
                reference_high=high,
                latest=when[1],
            )
        )

    def _lab_reason(self, resource: Mapping[str, Any]) -> str | None:
        status = resource.get("status")
        if not isinstance(status, str) or status not in OBSERVATION_EVIDENCE_STATUSES:
            return f"Observation status is {text_field(status)!r}"
        if not self._owns(resource):
            return "belongs to another patient"
        if "dataAbsentReason" in resource:
            return "no value (dataAbsentReason)"
        return None

    def _unread(self, resource: Mapping[str, Any]) -> bool:
        """True for an Observation no rule reads, decided before anything else is looked at.

        Charts send many (heart rate, respiratory rate, height under the vital-signs category):
        with no mapped code of any kind and no coded or text value, it can be neither a vital
        sign, an oxygen device, a neurologic assessment nor a blood culture, so its status, time
        and value are never read and it is not "not evidence" either.
        """
        if "valueCodeableConcept" in resource or "valueString" in resource:
            return False
        code = resource.get("code")
        return not self._terms.maps_any(code.get("coding") if isinstance(code, dict) else None)

    def _observation_parts(self, resource: Mapping[str, Any]) -> list[tuple[str, object]]:
        """(concept, valueQuantity) for the Observation itself and each of its components."""
        # ``lookup_codings`` takes the raw ``coding`` value (anything but a list finds nothing),
        # so a CodeableConcept is read without building its list first: this runs per component.
        parts: list[tuple[str, object]] = []
        lookup = self._terms.lookup_codings
        code = resource.get("code")
        own = lookup(code.get("coding") if isinstance(code, dict) else None, ConceptKind.OBSERVATION)
        if own is not None:
            parts.append((own.concept.id, resource.get("valueQuantity")))
        components = resource.get("component")
        if isinstance(components, list):
            for component in components:
                if not isinstance(component, dict):
                    continue
                code = component.get("code")
                match = lookup(code.get("coding") if isinstance(code, dict) else None, ConceptKind.OBSERVATION)
                if match is not None and match.concept.id != "blood_pressure_panel":
                    parts.append((match.concept.id, component.get("valueQuantity")))
        return parts

    def _device_value(self, resource: Mapping[str, Any]) -> tuple[CodeMatch, str | None] | None:
        value = resource.get("valueCodeableConcept")
        match = self._terms.lookup_codings(codings(value), ConceptKind.OXYGEN_SUPPORT)
        if match is None:
            texts = text_candidates(value)
            if isinstance(resource.get("valueString"), str):
                texts.append(resource["valueString"])
            for text in texts:
                match = self._terms.lookup_exact_name(text, ConceptKind.OXYGEN_SUPPORT)
                if match is not None:
                    break
        if match is None:
            return None
        displays = text_candidates(value)
        return match, (displays[0] if displays else resource.get("valueString"))

    def _observation_time(self, resource: Mapping[str, Any]) -> When | str:
        """When it was taken; a date-only time is the interval of that day, never an error."""
        if "effectiveDateTime" in resource:
            return parse_when(resource["effectiveDateTime"], self._site_zone)
        if "effectiveInstant" in resource:
            return parse_when(resource["effectiveInstant"], self._site_zone)
        period = resource.get("effectivePeriod")
        if isinstance(period, dict):
            in_progress = self._in_progress_at_now(period)
            if in_progress is not None:
                return in_progress
            return parse_when(period.get("end") or period.get("start"), self._site_zone)
        return "no effective time"

    def _observation_moment(self, resource: Mapping[str, Any]) -> tuple[datetime, datetime | None] | str:
        """:meth:`_observation_time` as (time, latest), latest None when precise; an instant
        (nearly every charted time) is read without building the interval."""
        if "effectiveDateTime" in resource:
            raw = resource["effectiveDateTime"]
        elif "effectiveInstant" in resource:
            raw = resource["effectiveInstant"]
        else:
            raw = None
        if raw is not None:
            moment = parse_instant(raw)  # what parse_when tries first, and answers as is
            if not isinstance(moment, str):
                return moment, None
        when = self._observation_time(resource)
        return when if isinstance(when, str) else (when.earliest, _latest(when))

    def _in_progress_at_now(self, period: Mapping[str, Any]) -> When | None:
        """A period that covers the evaluation time counts at that time (its value holds then)."""
        if self._now is None or "start" not in period:
            return None
        start = parse_when(period["start"], self._site_zone)
        end = parse_when(period["end"], self._site_zone) if "end" in period else None
        if isinstance(start, str) or isinstance(end, str) or start.latest > self._now:
            return None
        if end is not None and end.earliest < self._now:
            return None
        return When(self._now, self._now)

    def _device_record(
        self, device: tuple[CodeMatch, str | None], when: tuple[datetime, datetime | None], reference: str
    ) -> None:
        match, display = device
        room_air = match.concept.id == "room_air"
        self._record.oxygen.append(
            OxygenRecord(
                time=when[0],
                latest=when[1],
                reference=reference,
                device=None if room_air else match.concept.id,
                device_display=display or match.concept.id.replace("_", " "),
                room_air=room_air,
                by_text=match.by_text,
            )
        )

    def _observation_values(
        self, parts: list[tuple[str, object]], when: tuple[datetime, datetime | None], reference: str
    ) -> None:
        time, latest = when
        values: dict[str, Converted] = {}
        problems: list[str] = []
        for concept_id, quantity in parts:
            if concept_id == "blood_pressure_panel":
                continue
            converted = self._convert(concept_id, quantity)
            if isinstance(converted, str):
                problems.append(f"{concept_id.replace('_', ' ')}: {converted}")
            elif concept_id not in values:
                values[concept_id] = converted
        for problem in problems:
            self._value_problem(problem, time, reference)
        if not values:
            if not problems:
                self._reject(reference, "no usable value")
            return
        self._store_values(values, time, latest, reference)

    def _value_problem(self, problem: str, time: datetime, reference: str) -> None:
        """A value that cannot be read; an unreadable oxygen value is also never room air."""
        self._reject(reference, problem)
        if problem.startswith(("oxygen flow:", "inspired oxygen:")):
            self._record.unreadable_oxygen.append(UnreadableOxygen(time, reference, problem))

    def _store_value(
        self, concept_id: str, value: Converted, time: datetime, latest: datetime | None, reference: str
    ) -> None:
        """What :meth:`_store_values` makes of one value alone, the common vital signs without
        its dict: a temperature, or one pressure (alone, no MAP can be derived from it)."""
        if concept_id == "body_temperature":
            self._record.temperatures.append(
                Temperature(
                    time,
                    _round_celsius(value.value),
                    f"{value.original_value:g} {value.original_unit}",
                    reference,
                    latest=latest,
                )
            )
        elif concept_id == "systolic_blood_pressure":
            self._record.blood_pressures.append(
                BloodPressure(time, reference, systolic_mmhg=value.value, latest=latest)
            )
        elif concept_id == "diastolic_blood_pressure":
            self._record.blood_pressures.append(
                BloodPressure(time, reference, diastolic_mmhg=value.value, latest=latest)
            )
        elif concept_id == "mean_arterial_pressure":
            self._record.blood_pressures.append(BloodPressure(time, reference, mean_mmhg=value.value, latest=latest))
        else:
            self._store_values({concept_id: value}, time, latest, reference)

    def _store_values(
        self, values: Mapping[str, Converted], time: datetime, latest: datetime | None, reference: str
    ) -> None:
        """The findings one Observation's converted values make (usually one value)."""
        record = self._record
        get = values.get
        temp = get("body_temperature")
        if temp is not None:
            record.temperatures.append(
                Temperature(
                    time,
                    _round_celsius(temp.value),
                    f"{temp.original_value:g} {temp.original_unit}",
                    reference,
                    latest=latest,
                )
            )
        systolic, mean, diastolic = (
            get("systolic_blood_pressure"),
            get("mean_arterial_pressure"),
            get("diastolic_blood_pressure"),
        )
        if systolic is not None or mean is not None or diastolic is not None:
            record.blood_pressures.append(
                _blood_pressure(
                    time,
                    latest,
                    reference,
                    systolic=systolic.value if systolic is not None else None,
                    mean=mean.value if mean is not None else None,
                    diastolic=diastolic.value if diastolic is not None else None,
                )
            )
        saturation = get("oxygen_saturation")
        if saturation is not None:
            record.spo2.append(SpO2(time, saturation.value, reference, latest=latest))
        on_room_air = get("oxygen_saturation_on_room_air")
        if on_room_air is not None:
            record.spo2.append(SpO2(time, on_room_air.value, reference, latest=latest))
        flow_value, fio2_value = get("oxygen_flow"), get("inspired_oxygen")
        if flow_value is not None or fio2_value is not None or on_room_air is not None:
            flow = flow_value.value if flow_value is not None else None
            fio2 = fio2_value.value if fio2_value is not None else None
            room_air = (
                on_room_air is not None
                or flow == 0
                or (flow is None and fio2 is not None and fio2 <= ROOM_AIR_FIO2_PERCENT)
            )
            record.oxygen.append(
                OxygenRecord(
                    time=time,
                    reference=reference,
                    flow_l_min=flow,
                    fio2_percent=fio2,
                    room_air=room_air,
                    latest=latest,
                )
            )
        weight = get("body_weight")
        if weight is not None:
            record.weights.append(
                Weight(
                    time, weight.value, f"{weight.original_value:g} {weight.original_unit}", reference, latest=latest
                )
            )

    # -- MedicationAdministration ------------------------------------------------------------

    def _medication_concept(self, resource: Mapping[str, Any]) -> tuple[CodeMatch, str | None] | str | None:
        """The agent and its display; a reason (str) when only a combination product names it."""
        concept: object = resource.get("medicationCodeableConcept")
        ref = resource.get("medicationReference")
        if concept is None and isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            concept = self._referenced_medication_code(resource, ref["reference"])
        match = self._terms.lookup_codings(codings(concept), ConceptKind.MEDICATION)
        texts = text_candidates(concept)
        if match is None and isinstance(ref, dict) and isinstance(ref.get("display"), str):
            texts.append(ref["display"])
        combination: str | None = None
        if match is None:
            for text in texts:
                found = self._terms.lookup_name_in_text(text, ConceptKind.MEDICATION)
                if found is not None and found.concept.role in VASOACTIVE_ROLES and len(product_components(text)) > 1:
                    # "lidocaine 1% with epinephrine": a word inside a combination product, not the drug.
                    combination = combination or f"combination product {text.strip()!r}: {found.concept.id} "
                    combination += "named inside it is not read as vasopressor support"
                    continue
                if found is not None:
                    match = found
                    break
        if match is None:
            return combination
        return match, (texts[0] if texts else None)

    def _medication_texts(self, resource: Mapping[str, Any]) -> list[str]:
        """Every text naming the medication (its text, coding displays, reference display)."""
        concept: object = resource.get("medicationCodeableConcept")
        ref = resource.get("medicationReference")
        if concept is None and isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            concept = self._referenced_medication_code(resource, ref["reference"])
        texts = text_candidates(concept)
        if isinstance(ref, dict) and isinstance(ref.get("display"), str):
            texts.append(ref["display"])
        return texts

    def _route(self, dosage: Mapping[str, Any], texts: list[str]) -> tuple[str | None, str | None]:
        """(route concept or ``unrecognised`` or None when not charted, its display).

        With no route charted, the medication's own text may still say it (``... ophthalmic
        solution``); a route that says nothing recognisable is kept and said.
        """
        route = dosage.get("route")
        if isinstance(route, dict):
            displays = text_candidates(route)
            match = self._terms.lookup_codings(codings(route), ConceptKind.ROUTE)
            for text in displays:
                if match is not None:
                    break
                match = self._terms.lookup_exact_name(text, ConceptKind.ROUTE) or self._terms.lookup_name_in_text(
                    text, ConceptKind.ROUTE
                )
            display = displays[0] if displays else None
            if match is None:
                codes = [c for c in status_codes(route) if c]
                return "unrecognised", display or (codes[0] if codes else "uncoded")
            return match.concept.id, display or match.concept.id.replace("_", " ")
        for text in texts:
            match = self._terms.lookup_name_in_text(text, ConceptKind.ROUTE)
            if match is not None and match.concept.id == "non_vascular_route":
                return match.concept.id, f"{match.code} (from the medication name)"
        return None, None

    def _referenced_medication_code(self, resource: Mapping[str, Any], target: str) -> object:
        if target.startswith("#"):
            contained = resource.get("contained")
            if isinstance(contained, list):
                for item in contained:
                    if (
                        isinstance(item, dict)
                        and item.get("resourceType") == "Medication"
                        and item.get("id") == target[1:]
                    ):
                        return item.get("code")
            return None
        medication = self._medications.get(target) or next(
            (m for ref, m in self._medications.items() if target.endswith("/" + ref)), None
        )
        return medication.get("code") if medication is not None else None

    def _unidentified_reason(self, resource: Mapping[str, Any]) -> str | None:
        """Why the drug of an administration cannot be known, or None when it is named somehow
        (a code or a text of a drug the service does not grade is simply not this service's)."""
        concept: object = resource.get("medicationCodeableConcept")
        ref = resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        if concept is None and isinstance(target, str):
            concept = self._referenced_medication_code(resource, target)
            if concept is None and not (isinstance(ref, dict) and text_field(ref.get("display"))):
                return f"medicationReference {target!r} is not in the data read (no Medication resolves it)"
        named = any(isinstance(c, dict) and (text_field(c.get("code")) or "").strip() for c in codings(concept)) or any(
            t.strip() for t in text_candidates(concept)
        )
        if named or (isinstance(ref, dict) and text_field(ref.get("display"))):
            return None
        return "medication has no code and no text"

    def _administration(self, resource: Mapping[str, Any], reference: str) -> None:
        found = self._medication_concept(resource)
        if found is None:
            reason = self._unidentified_reason(resource)
            if (
                reason is not None
                and text_field(resource.get("status")) in ADMINISTRATION_EVIDENCE_STATUSES
                and self._belongs_to_patient(resource)
            ):
                self._record.unidentified_administrations.append(NotEvidence(reference, reason))
            return
        if isinstance(found, str):
            self._reject(reference, found)
            return
        match, display = found
        role = match.concept.role
        assert_role = role if role is not None else MedicationRole.CRS_THERAPY
        status = text_field(resource.get("status"))
        if status not in ADMINISTRATION_EVIDENCE_STATUSES:
            self._reject(reference, f"MedicationAdministration status is {status!r}")
            return
        if not self._belongs_to_patient(resource):
            self._reject(reference, "belongs to another patient")
            return
        span = self._span(resource, "effectiveDateTime", "effectivePeriod", str(status), imprecise_ok=True)
        if isinstance(span, str):
            self._reject(reference, span)
            return
        dosage = resource.get("dosage") if isinstance(resource.get("dosage"), dict) else {}
        assert isinstance(dosage, dict)
        route_note: str | None = None
        if assert_role in (MedicationRole.VASOPRESSOR, MedicationRole.VASOPRESSIN_ANALOGUE):
            route, route_display = self._route(dosage, self._medication_texts(resource))
            if route == "non_vascular_route":
                self._reject(
                    reference,
                    f"{match.concept.id} by the {route_display} route: not vasopressor support "
                    "(only intravenous or intraosseous is)",
                )
                return
            if route == "unrecognised":
                route_note = f"route {route_display!r} not recognised: counted as vasopressor support"
        rate_l_min: float | None = None
        dose_mg: float | None = None
        if assert_role is MedicationRole.OXYGEN:
            rate = dosage.get("rateQuantity")
            if rate is not None:
                converted = self._convert("oxygen_flow", rate)
                if isinstance(converted, str):
                    # Oxygen was given (at least low flow); how much is unknown, never room air.
                    self._reject(reference, f"oxygen rate: {converted}")
                    self._record.unreadable_oxygen.append(
                        UnreadableOxygen(span.start, reference, f"oxygen rate: {converted}")
                    )
                else:
                    rate_l_min = converted.value
        else:
            dose = self._units.convert("drug_mass", dosage.get("dose"))
            dose_mg = dose.value if isinstance(dose, Converted) else None
            rate = dosage.get("rateQuantity")
            if (
                isinstance(rate, dict)
                and rate.get("value") == 0
                and assert_role
                in (
                    MedicationRole.VASOPRESSOR,
                    MedicationRole.VASOPRESSIN_ANALOGUE,
                )
            ):
                self._reject(reference, "infusion rate is 0: not running")
                return
        start, end = span.start, span.end
        administration = Administration(
            agent=match.concept.id,
            role=assert_role,
            start=start,
            end=end,
            reference=reference,
            status=str(status),
            by_text=match.by_text,
            dose_mg=dose_mg,
            rate_l_min=rate_l_min,
            display=display,
            start_latest=span.start_latest,
            end_earliest=span.end_earliest,
            route_note=route_note,
        )
        self._record.administrations.append(administration)
        if assert_role is MedicationRole.OXYGEN:
            self._record.oxygen.append(
                OxygenRecord(
                    time=start,
                    latest=span.start_latest,
                    reference=reference,
                    device="oxygen_unspecified",
                    device_display="oxygen (administration, device not stated)",
                    flow_l_min=rate_l_min,
                    room_air=rate_l_min == 0,
                    period_end=end,
                    is_period=end is None or end != start,
                )
            )

    def _span(
        self,
        resource: Mapping[str, Any],
        instant_field: str,
        period_field: str,
        status: str,
        *,
        imprecise_ok: bool = False,
    ) -> _Span | str:
        """When it ran; end None while in progress. Reasons when unusable.

        Date-only times are intervals (``imprecise_ok``, administrations) or refused with a reason
        (procedures). An end time that has passed ends it, whatever the status says: ``in-progress``
        with a period end is over at that end.
        """
        if instant_field in resource:
            moment = self._when(resource[instant_field], imprecise_ok)
            if isinstance(moment, str):
                return moment
            if status == "in-progress":
                return _Span(moment.earliest, None, start_latest=_latest(moment))
            return _Span(moment.earliest, moment.latest, start_latest=_latest(moment), end_earliest=_earliest(moment))
        period = resource.get(period_field)
        if not isinstance(period, dict):
            return "no effective time"
        start = self._when(period.get("start"), imprecise_ok) if "start" in period else None
        end = self._when(period.get("end"), imprecise_ok) if "end" in period else None
        if isinstance(start, str):
            return start
        if isinstance(end, str):
            return end
        if start is None:
            if end is None:
                return "period has neither start nor end"
            start = end
        if end is not None and end.latest < start.earliest:
            return "period ends before it starts"
        if end is None and status != "in-progress":
            end = start  # ran at least at its start; no evidence of how long
        if status == "on-hold":
            end = start  # not in effect while on hold, and the hold's start is not recorded
        return _Span(
            start.earliest,
            end.latest if end is not None else None,
            start_latest=_latest(start),
            end_earliest=_earliest(end) if end is not None else None,
        )

    def _when(self, raw: object, imprecise_ok: bool) -> When | str:
        if imprecise_ok:
            return parse_when(raw, self._site_zone)
        moment = parse_instant(raw)
        return moment if isinstance(moment, str) else When(moment, moment)

    # -- Procedure -------------------------------------------------------------------------

    def _procedure(self, resource: Mapping[str, Any], reference: str) -> None:
        code = resource.get("code")
        match = self._terms.lookup_codings(codings(code), ConceptKind.OXYGEN_SUPPORT)
        if match is None:
            for text in text_candidates(code):
                match = self._terms.lookup_exact_name(text, ConceptKind.OXYGEN_SUPPORT)
                if match is not None:
                    break
        if match is None:
            return
        status = text_field(resource.get("status"))
        if status not in PROCEDURE_EVIDENCE_STATUSES:
            self._reject(reference, f"Procedure status is {status!r}")
            return
        if not self._belongs_to_patient(resource):
            self._reject(reference, "belongs to another patient")
            return
        span = self._span(resource, "performedDateTime", "performedPeriod", str(status), imprecise_ok=True)
        if isinstance(span, str):
            self._reject(reference, span)
            return
        start, end = span.start, span.end
        # Running with an imprecise start: in force now (not from the future). Ended, with an
        # imprecise time: a point whose interval the grading asks "surely / possibly" about.
        imprecise_point = end is not None and (span.start_latest is not None or span.end_earliest is not None)
        displays = text_candidates(code)
        room_air = match.concept.id == "room_air"
        self._record.oxygen.append(
            OxygenRecord(
                time=start,
                reference=reference,
                device=None if room_air else match.concept.id,
                device_display=displays[0] if displays else match.concept.id.replace("_", " "),
                room_air=room_air,
                period_end=None if imprecise_point else end,
                is_period=not imprecise_point and (end is None or end != start),
                by_text=match.by_text,
                latest=end if imprecise_point else None,
            )
        )

    # -- neurologic assessments (ICANS) -----------------------------------------------------

    def _assessment_time(
        self, resource: Mapping[str, Any], reference: str, statuses: frozenset[str]
    ) -> datetime | None:
        """Status, patient and time of an ICANS assessment; an assessment must name its patient."""
        status = resource.get("status")
        if status not in statuses:
            self._reject_assessment(reference, f"{resource.get('resourceType')} status is {status!r}")
            return None
        if not self._owns(resource, require_subject=True):
            no_subject = self._patient_id is not None and "subject" not in resource
            self._reject_assessment(reference, "no subject" if no_subject else "belongs to another patient")
            return None
        time = (
            observation_time(resource)
            if resource.get("resourceType") == "Observation"
            else parse_instant(resource.get("authored"))
        )
        if isinstance(time, str):
            self._reject_assessment(reference, time)
            return None
        return time

    def _neuro_observation(self, resource: Mapping[str, Any], reference: str, domain: Domain) -> None:
        time = self._assessment_time(resource, reference, OBSERVATION_EVIDENCE_STATUSES)
        if time is None:
            return
        finding = neuro_observation(resource, reference, domain, time, self._terms)
        if isinstance(finding, str):
            self._reject_assessment(reference, finding)
        else:
            self._record.neuro.append(finding)

    def _questionnaire_response(self, resource: Mapping[str, Any], reference: str) -> None:
        if self._ice_form is None or not is_ice_form(resource, self._ice_form):
            return
        time = self._assessment_time(resource, reference, QUESTIONNAIRE_RESPONSE_EVIDENCE_STATUSES)
        if time is None:
            return
        finding = ice_form_finding(resource, reference, time, self._ice_form)
        if isinstance(finding, str):
            # Kept as an attempt, not dropped: a form the patient could not complete is news.
            self._record.neuro.append(
                NeuroFinding(Domain.ICE, time, reference, display="ICE form (incomplete)", incomplete=finding)
            )
        else:
            self._record.neuro.append(finding)

    # -- infection signs (order checks) ------------------------------------------------------

    def _blood_culture(self, resource: Mapping[str, Any], reference: str) -> None:
        # A culture entered in error says nothing about CRS: not listed on the CRS card.
        if resource.get("status") not in OBSERVATION_EVIDENCE_STATUSES or not self._belongs_to_patient(resource):
            return
        culture = blood_culture(resource, reference)
        if culture is not None:
            self._record.blood_cultures.append(culture)

    def _infection_condition(self, resource: Mapping[str, Any], reference: str) -> None:
        clinical = set(status_codes(resource.get("clinicalStatus")))
        verification = set(status_codes(resource.get("verificationStatus")))
        if not ACTIVE_CONDITION_STATUSES & clinical or REFUTED_VERIFICATION & verification:
            return
        if not self._belongs_to_patient(resource):
            return
        found = infection_condition(resource, reference, self._terms)
        if found is not None:
            self._record.infections.append(found)

    # -- Condition -------------------------------------------------------------------------

    def _condition(self, resource: Mapping[str, Any], reference: str) -> None:
        match = self._terms.lookup_codings(codings(resource.get("code")), ConceptKind.CONDITION)
        if match is None:
            self._infection_condition(resource, reference)
            return
        clinical = status_codes(resource.get("clinicalStatus"))
        verification = status_codes(resource.get("verificationStatus"))
        if not ACTIVE_CONDITION_STATUSES.intersection(clinical):
            self._reject(
                reference, f"Condition clinicalStatus is {clinical[0] if clinical else 'missing'!r}, not active"
            )
            return
        if REFUTED_VERIFICATION.intersection(verification):
            self._reject(reference, "Condition is refuted or entered in error")
            return
        if not self._belongs_to_patient(resource):
            self._reject(reference, "belongs to another patient")
            return
        onset: datetime | None = None
        for raw in (
            resource.get("onsetDateTime"),
            (resource.get("onsetPeriod") or {}).get("start") if isinstance(resource.get("onsetPeriod"), dict) else None,
            resource.get("recordedDate"),
        ):
            # A date-only onset is its day: the latest moment of it, so a therapy counts as
            # "after onset" only when it surely is (clinical-reference.md section 1).
            parsed = parse_when(raw, self._site_zone) if raw is not None else None
            if isinstance(parsed, When):
                onset = parsed.latest
                break
        self._record.conditions.append(CrsCondition(onset, reference, match.code))


@dataclass(frozen=True, slots=True)
class _Span:
    """When an administration or procedure ran; imprecise ends carry their other bound."""

    start: datetime
    end: datetime | None
    start_latest: datetime | None = None
    end_earliest: datetime | None = None


def _latest(when: When) -> datetime | None:
    """The interval's upper bound when the time is imprecise, else None (precise)."""
    return None if when.precise else when.latest


def _earliest(when: When) -> datetime | None:
    return None if when.precise else when.earliest


def _blood_pressure(
    time: datetime,
    latest: datetime | None,
    reference: str,
    *,
    systolic: float | None,
    mean: float | None,
    diastolic: float | None,
) -> BloodPressure:
    """A pressure reading; MAP derived as (SBP + 2 x DBP) / 3 from a pair charted together when
    no MAP is charted (clinical-reference.md section 1, "Mean arterial pressure")."""
    derived = mean is None and systolic is not None and diastolic is not None
    if derived and systolic is not None and diastolic is not None:
        mean = round((systolic + 2.0 * diastolic) / 3.0, 1)
    return BloodPressure(
        time,
        reference,
        systolic_mmhg=systolic,
        mean_mmhg=mean,
        diastolic_mmhg=diastolic,
        mean_derived=derived,
        latest=latest,
    )


def extract_record(
    resources: Iterable[SourcedResource],
    terminology: Terminology,
    units: UnitTable,
    *,
    patient_id: str | None,
    ice_form: IceQuestionnaire | None = None,
    skip: Mapping[str, str] | None = None,
    site_zone: tzinfo | None = None,
    now: datetime | None = None,
    labs: LabTable | None = None,
) -> PatientRecord:
    """One patient's clinical record from their resources (see :class:`Extractor`).

    ``now``, the evaluation time when there is one, lets a measurement over a period that covers
    it count at that time; without it a period is read at its end (or start).
    """
    return Extractor(terminology, units, patient_id, ice_form, site_zone=site_zone, now=now, labs=labs).extract(
        resources, skip=skip
    )
