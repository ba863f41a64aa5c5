"""Every rule and FHIR shape of clinical-reference.md, pinned by what a clinician would see.

Each table row builds one patient's FHIR R4 resources (``fhir_builders``), grades them at the
fixed time ``T`` through ``evaluate`` (extraction, R4B validation of the evidence, ASTCT grading,
tocilizumab advice) and checks the outcome a clinician would notice: the grade or "at least",
the worst grade, which resources the grade cites, which were not evidence and why, and the
alerts, assumptions and missing-data lines of the card.

When the service departs from the reference, fix the service: expectations follow the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest
from cds_hooks.grading import GradeResult
from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.record import DataSource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from fhir.resources.R4B import get_fhir_model_class

from fhir_builders import (
    UCUM,
    Resource,
    T,
    atc,
    bp_panel,
    concept,
    condition,
    device,
    fio2,
    mean_bp,
    medication_administration,
    o2_flow,
    observation,
    oxygen_administration,
    patient,
    procedure,
    reference,
    room_air,
    rxnorm,
    spo2,
    systolic_bp,
    temperature,
    text_concept,
    weight,
)


@pytest.fixture(scope="module")
def grading() -> Grading:
    """The shipped vocabulary and units, loaded once for this module."""
    return Grading(load_terminology(), load_units())


# -- what a row expects --------------------------------------------------------------------


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


@dataclass(frozen=True)
class Expect:
    """The outcome of one case. ``grade`` and ``at_least`` are always checked."""

    grade: int | None
    at_least: int | None = None
    worst: int | _Unset | None = UNSET
    cited: tuple[str, ...] = ()
    """References the current grade must rest on (its evidence)."""
    not_cited: tuple[str, ...] = ()
    """References that must not be in the current grade's evidence."""
    worst_cited: tuple[str, ...] = ()
    worst_not_cited: tuple[str, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)
    """reference -> fragment of the reason it is not evidence."""
    alerts: tuple[str, ...] = ()
    """Fragments each found in some alert."""
    no_alert: tuple[str, ...] = ()
    """Fragments found in no alert."""
    missing: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    components: Mapping[str, str | int] = field(default_factory=dict)
    details: Mapping[str, str] = field(default_factory=dict)
    """reference -> fragment of the detail of its evidence."""
    possible: int | _Unset | None = UNSET
    """Indeterminate: the grade if the unknown is CRS (masked fever, no temperature)."""


def run(
    grading: Grading,
    resources: Sequence[Resource],
    *,
    unavailable: Mapping[DataSource, str] | None = None,
) -> Evaluation:
    sourced = [SourcedResource(copy.deepcopy(r), reference(r)) for r in resources]
    return evaluate(sourced, patient_id="p1", at=T, grading=grading, unavailable=unavailable)


def _has(fragment: str, texts: Sequence[str]) -> bool:
    return any(fragment.lower() in text.lower() for text in texts)


def check(result: GradeResult, expect: Expect) -> None:
    assert result.grade == expect.grade, f"grade {result.grade}, expected {expect.grade}"
    assert result.grade_at_least == expect.at_least, f"gradeAtLeast {result.grade_at_least}"
    if expect.grade is not None:
        assert not result.missing, f"graded, yet missing: {result.missing}"
    if not isinstance(expect.possible, _Unset):
        assert result.possible_grade == expect.possible, f"possible grade {result.possible_grade}"
    if not isinstance(expect.worst, _Unset):
        assert result.worst_grade == expect.worst, f"worst grade {result.worst_grade}, expected {expect.worst}"
    cited = result.references
    for ref in expect.cited:
        assert ref in cited, f"{ref} not in evidence {cited}"
    for ref in expect.not_cited:
        assert ref not in cited, f"{ref} unexpectedly in evidence {cited}"
    for ref in expect.worst_cited:
        assert ref in result.worst_grade_references, f"{ref} not in {result.worst_grade_references}"
    for ref in expect.worst_not_cited:
        assert ref not in result.worst_grade_references, f"{ref} unexpectedly in {result.worst_grade_references}"
    reasons = {n.reference: n.reason for n in result.not_evidence}
    for ref, reason in expect.rejected.items():
        assert ref in reasons, f"{ref} not in not_evidence {reasons}"
        assert reason.lower() in reasons[ref].lower(), f"{ref}: reason {reasons[ref]!r} lacks {reason!r}"
        assert ref not in cited, f"{ref} is not evidence, yet cited"
    for fragment in expect.alerts:
        assert _has(fragment, result.alerts), f"no alert with {fragment!r}: {result.alerts}"
    for fragment in expect.no_alert:
        assert not _has(fragment, result.alerts), f"unexpected alert with {fragment!r}: {result.alerts}"
    for fragment in expect.missing:
        assert _has(fragment, result.missing), f"no missing line with {fragment!r}: {result.missing}"
    for fragment in expect.assumptions:
        assert _has(fragment, result.assumptions), f"no assumption with {fragment!r}: {result.assumptions}"
    for key, value in expect.components.items():
        assert result.components.get(key) == value, f"component {key}={result.components.get(key)!r}"
    details: dict[str, list[str]] = {}
    for evidence in result.evidence:
        details.setdefault(evidence.reference, []).append(evidence.detail or "")
    for ref, fragment in expect.details.items():
        assert _has(fragment, details.get(ref, [])), f"{ref}: detail {details.get(ref)} lacks {fragment!r}"


# -- shared pieces -------------------------------------------------------------------------

ADULT = patient(45)
FEVER = temperature("t-fever", 38.5)
AFEBRILE = temperature("t-afebrile", 37.0)
NORMAL_BP = bp_panel("bp-normal", 120, 80)
LOW_BP = bp_panel("bp-85", 85, 50)
EARLY_FEVER = temperature("t-early", 38.5, hours_before=8)
"""A fever before the short episodes below, so the worst grade can be judged while they ran."""


def febrile(*extra: Resource) -> list[Resource]:
    """An adult with a fever and a normal blood pressure in the last hour, on room air: grade 1."""
    return [ADULT, FEVER, NORMAL_BP, *extra]


# Medications (RxNorm ingredient unless stated).
NOREPINEPHRINE = rxnorm("7512", "norepinephrine")
EPINEPHRINE = rxnorm("3992", "epinephrine")
PHENYLEPHRINE = rxnorm("8163", "phenylephrine")
DOPAMINE = rxnorm("3628", "dopamine")
VASOPRESSIN = rxnorm("11149", "vasopressin")
DOBUTAMINE = rxnorm("3616", "dobutamine")
TOCILIZUMAB = rxnorm("612865", "tocilizumab")
DEXAMETHASONE = rxnorm("3264", "dexamethasone")


def running(rid: str, medication: dict[str, Any], **kwargs: Any) -> Resource:
    """An infusion in progress since 2 h before T."""
    return medication_administration(rid, medication, status="in-progress", hours_before=2.0, **kwargs)


NE = running("ne", NOREPINEPHRINE)

# SNOMED CT oxygen devices.
NC = ("336623009", "Oxygen nasal cannula")
HFNC = ("426854004", "High flow oxygen nasal cannula")
SIMPLE_MASK = ("336602003", "Oxygen mask")
NRB = ("427591007", "Nonrebreather oxygen mask")
VENTURI = ("428285009", "Venturi mask")
VENTURI_FACE = ("465433006", "Venturi oxygen face mask")
BLOW_BY = ("425478008", "Blow by oxygen mask")
CPAP_CANNULA = ("467645007", "Continuous positive airway pressure nasal oxygen cannula")
BIPAP_CANNULA = ("425826004", "Bilevel positive airway pressure oxygen nasal cannula")
CPAP_MASK = ("706226000", "Continuous positive airway pressure/Bilevel positive airway pressure mask")
ETT = ("26412008", "Endotracheal tube")
VENTILATOR = ("449071006", "Mechanical ventilator")


def dev(rid: str, kind: tuple[str, str], **kwargs: Any) -> Resource:
    return device(rid, kind[0], kind[1], **kwargs)


# -- the builders make valid FHIR R4 -------------------------------------------------------

BUILT: list[Any] = [
    pytest.param(patient(45), id="patient"),
    pytest.param(patient(None), id="patient-no-birth-date"),
    pytest.param(observation("x", text_concept("anything")), id="observation-without-value"),
    pytest.param(temperature("x", 38.0), id="temperature-Cel"),
    pytest.param(temperature("x", 100.4, "[degF]", loinc="8331-1"), id="temperature-degF-oral"),
    pytest.param(temperature("x", 38.0, "degrees", ucum=False), id="temperature-text-unit"),
    pytest.param(temperature("x", 38.0, None), id="temperature-no-unit"),
    pytest.param(temperature("x", 38.0, effective="2025-03-04"), id="temperature-date-only"),
    pytest.param(bp_panel("x", 120, 80, mean=93), id="bp-panel-with-map"),
    pytest.param(systolic_bp("x", 89), id="systolic"),
    pytest.param(mean_bp("x", 64), id="map"),
    pytest.param(spo2("x", 94, flow=6000, flow_unit="mL/min", fio2_percent=40), id="spo2-with-components"),
    pytest.param(o2_flow("x", 6), id="o2-flow"),
    pytest.param(fio2("x", 40), id="fio2"),
    pytest.param(dev("x", NRB), id="device"),
    pytest.param(room_air("x"), id="room-air"),
    pytest.param(weight("x", 75), id="weight"),
    pytest.param(medication_administration("x", NOREPINEPHRINE, status="in-progress"), id="admin-code"),
    pytest.param(medication_administration("x", NOREPINEPHRINE, contained=True), id="admin-contained"),
    pytest.param(medication_administration("x", atc("C01CA03"), period=(3, 1)), id="admin-atc-period"),
    pytest.param(medication_administration("x", text_concept("Levophed drip")), id="admin-text"),
    pytest.param(medication_administration("x", TOCILIZUMAB, dose=(600, "mg")), id="admin-dose"),
    pytest.param(oxygen_administration("x", 4), id="admin-oxygen"),
    pytest.param(procedure("x", "47545007", "CPAP"), id="procedure-period"),
    pytest.param(procedure("x", "47545007", "CPAP", status="completed", hours_before=3), id="procedure-datetime"),
    pytest.param(condition("x", onset_hours_before=48), id="condition"),
]


@pytest.mark.parametrize("resource", BUILT)
def test_builders_make_valid_r4_resources(resource: Resource) -> None:
    model = get_fhir_model_class(resource["resourceType"])
    model.model_validate(resource)


# -- fever ---------------------------------------------------------------------------------

FEVER_CASES = [
    pytest.param(
        [ADULT, temperature("t", 38.0), NORMAL_BP],
        Expect(1, cited=("Observation/t",), components={"fever": "met"}),
        id="fever-38.0C->grade-1",
    ),
    pytest.param(
        [ADULT, temperature("t", 37.9), NORMAL_BP],
        Expect(0, components={"fever": "not met"}),
        id="37.9C-not-fever->grade-0",
    ),
    pytest.param(
        [ADULT, temperature("t", 100.4, "[degF]"), NORMAL_BP],
        Expect(1, cited=("Observation/t",)),
        id="100.4F-is-fever",
    ),
    pytest.param(
        [ADULT, temperature("t", 100.2, "[degF]"), NORMAL_BP],
        Expect(0, components={"fever": "not met"}),
        id="100.2F-not-fever",
    ),
    *(
        pytest.param(
            [ADULT, temperature("t", 38.2, loinc=code), NORMAL_BP],
            Expect(1, cited=("Observation/t",)),
            id=f"fever-LOINC-{code}-{site}->grade-1",
        )
        for code, site in [
            ("8331-1", "oral"),
            ("8332-9", "rectal"),
            ("8333-7", "tympanic"),
            ("8328-7", "axillary"),
            ("8329-5", "core"),
            ("60836-4", "esophageal"),
        ]
    ),
    pytest.param(
        [ADULT, temperature("t", 37.0), temperature("old", 39.0, hours_before=23, minutes_before=59), NORMAL_BP],
        Expect(1, cited=("Observation/old",)),
        id="fever-23h59m-ago-inside-window->grade-1",
    ),
    pytest.param(
        [ADULT, temperature("t", 37.0), temperature("old", 39.0, hours_before=24), NORMAL_BP],
        Expect(0, not_cited=("Observation/old",)),
        id="fever-exactly-24h-ago-outside-window->grade-0",
    ),
    pytest.param(
        [ADULT, temperature("t", 37.0), temperature("old", 39.0, hours_before=24, minutes_before=1), NORMAL_BP],
        Expect(0, not_cited=("Observation/old",)),
        id="fever-24h01m-ago-outside-window->grade-0",
    ),
    pytest.param(
        [ADULT, temperature("now", 38.4, hours_before=0), NORMAL_BP],
        Expect(1, cited=("Observation/now",)),
        id="fever-charted-at-T-inside-window->grade-1",
    ),
    pytest.param(
        [ADULT, temperature("t", 37.0), temperature("future", 39.5, hours_before=-1), NORMAL_BP],
        Expect(0, not_cited=("Observation/future",)),
        id="future-dated-fever-ignored->grade-0",
    ),
    pytest.param(
        [ADULT, temperature("future", 39.5, hours_before=-1), NORMAL_BP],
        Expect(None, missing=("body temperature",)),
        id="only-a-future-dated-temperature->indeterminate",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, systolic_bp("future-bp", 70, hours_before=-1)],
        Expect(1, not_cited=("Observation/future-bp",)),
        id="future-dated-low-BP-ignored->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, medication_administration("future-ne", NOREPINEPHRINE, period=(-1, -3))],
        Expect(1, worst=1, not_cited=("MedicationAdministration/future-ne",)),
        id="future-dated-pressor-ignored->grade-1",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), FEVER_CASES)
def test_fever(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


# -- hypotension ---------------------------------------------------------------------------

HYPOTENSION_CASES = [
    pytest.param(
        [ADULT, FEVER, bp_panel("bp", 89, 50)],
        Expect(2, cited=("Observation/bp",), components={"hypotensionGrade": 2}),
        id="adult-SBP-89->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, bp_panel("bp", 90, 60)],
        Expect(1, cited=("Observation/bp",), components={"hypotensionGrade": 0}),
        id="adult-SBP-90->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, systolic_bp("sbp", 89)],
        Expect(2, cited=("Observation/sbp",)),
        id="adult-standalone-SBP-89->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, mean_bp("map", 64)],
        Expect(2, cited=("Observation/map",)),
        id="adult-standalone-MAP-64->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, mean_bp("map", 65)],
        Expect(1),
        id="adult-standalone-MAP-65->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, bp_panel("bp", 95, 50, mean=64)],
        Expect(2, cited=("Observation/bp",)),
        id="adult-panel-SBP-95-MAP-64->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, bp_panel("bp", 95, 55, mean=65)],
        Expect(1),
        id="adult-panel-SBP-95-MAP-65->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, systolic_bp("low", 80, hours_before=23)],
        Expect(2, cited=("Observation/low",)),
        id="lowest-SBP-in-24h-counts->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, systolic_bp("old-low", 80, hours_before=25)],
        Expect(1, not_cited=("Observation/old-low",)),
        id="SBP-80-25h-ago-outside-window->grade-1",
    ),
    pytest.param([patient(5), FEVER, systolic_bp("sbp", 79)], Expect(2), id="age-5-SBP-79->grade-2"),
    pytest.param([patient(5), FEVER, systolic_bp("sbp", 80)], Expect(1), id="age-5-SBP-80->grade-1"),
    pytest.param([patient(5), FEVER, systolic_bp("sbp", 85)], Expect(1), id="age-5-SBP-85-not-adult-rule->grade-1"),
    pytest.param([patient(0), FEVER, systolic_bp("sbp", 69)], Expect(2), id="age-0-SBP-69->grade-2"),
    pytest.param([patient(0), FEVER, systolic_bp("sbp", 70)], Expect(1), id="age-0-SBP-70->grade-1"),
    pytest.param([patient(1), FEVER, systolic_bp("sbp", 71)], Expect(2), id="age-1-SBP-71->grade-2"),
    pytest.param([patient(1), FEVER, systolic_bp("sbp", 72)], Expect(1), id="age-1-SBP-72->grade-1"),
    pytest.param([patient(10), FEVER, systolic_bp("sbp", 89)], Expect(2), id="age-10-SBP-89->grade-2"),
    pytest.param([patient(10), FEVER, systolic_bp("sbp", 90)], Expect(1), id="age-10-SBP-90->grade-1"),
    pytest.param(
        [patient(8), FEVER, bp_panel("bp", 100, 40, mean=50)],
        Expect(1, components={"hypotensionGrade": 0}),
        id="age-8-MAP-50-not-used->grade-1",
    ),
    pytest.param(
        [patient(12), FEVER, bp_panel("bp", 100, 45, mean=60)],
        Expect(2, cited=("Observation/bp",)),
        id="age-12-MAP-60-used->grade-2",
    ),
    pytest.param(
        [patient(12), FEVER, systolic_bp("sbp", 89)],
        Expect(2),
        id="age-12-adult-SBP-89->grade-2",
    ),
    pytest.param(
        [patient(None), FEVER, systolic_bp("sbp", 89)],
        Expect(2, assumptions=("birth date unknown",)),
        id="unknown-birth-date-adult-SBP-89->grade-2+assumption",
    ),
    pytest.param(
        [patient(None), FEVER, mean_bp("map", 64)],
        Expect(2, assumptions=("adult",)),
        id="unknown-birth-date-MAP-64-used->grade-2+assumption",
    ),
    pytest.param(
        [FEVER, systolic_bp("sbp", 89)],
        Expect(2, assumptions=("birth date unknown",)),
        id="no-Patient-resource-adult-thresholds->grade-2+assumption",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), HYPOTENSION_CASES)
def test_hypotension(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


# -- vasopressors --------------------------------------------------------------------------

VASOPRESSOR_CASES = [
    pytest.param(
        febrile(NE),
        Expect(3, cited=("MedicationAdministration/ne",), components={"hypotensionGrade": 3}),
        id="fever+NE->grade-3",
    ),
    pytest.param(
        febrile(NE, running("epi", EPINEPHRINE)),
        Expect(4, cited=("MedicationAdministration/ne", "MedicationAdministration/epi")),
        id="NE+epinephrine->grade-4",
    ),
    pytest.param(
        febrile(NE, running("phe", PHENYLEPHRINE)),
        Expect(4),
        id="NE+phenylephrine->grade-4",
    ),
    pytest.param(
        febrile(running("dopa", DOPAMINE), running("phe", PHENYLEPHRINE)),
        Expect(4),
        id="dopamine+phenylephrine->grade-4",
    ),
    pytest.param(
        febrile(NE, running("vaso", VASOPRESSIN)),
        Expect(3, cited=("MedicationAdministration/ne", "MedicationAdministration/vaso")),
        id="NE+vasopressin->grade-3-not-4",
    ),
    pytest.param(
        febrile(running("vaso", VASOPRESSIN)),
        Expect(3, cited=("MedicationAdministration/vaso",)),
        id="vasopressin-alone->grade-3",
    ),
    pytest.param(
        febrile(NE, running("epi", EPINEPHRINE), running("vaso", VASOPRESSIN)),
        Expect(4),
        id="NE+epinephrine+vasopressin->grade-4",
    ),
    pytest.param(
        febrile(NE, running("ang2", atc("C01CX09", "angiotensin II"))),
        Expect(4, cited=("MedicationAdministration/ang2",)),
        id="angiotensin-II-ATC-C01CX09+NE->grade-4",
    ),
    pytest.param(
        febrile(running("ang2", atc("C01CX09", "angiotensin II"))),
        Expect(3),
        id="angiotensin-II-alone->grade-3",
    ),
    pytest.param(
        febrile(running("dobu", DOBUTAMINE)),
        Expect(
            1,
            not_cited=("MedicationAdministration/dobu",),
            alerts=("dobutamine", "not counted"),
            components={"hypotensionGrade": 0},
        ),
        id="dobutamine-alone-not-a-pressor->grade-1+alert",
    ),
    pytest.param(
        febrile(NE, running("dobu", DOBUTAMINE)),
        Expect(3, not_cited=("MedicationAdministration/dobu",), alerts=("dobutamine",)),
        id="NE+dobutamine->grade-3-not-4",
    ),
    pytest.param(
        febrile(NE, running("mil", text_concept("Milrinone 20 mg/100 mL infusion"))),
        Expect(3, not_cited=("MedicationAdministration/mil",), alerts=("milrinone",)),
        id="NE+milrinone-inotrope->grade-3-not-4",
    ),
    pytest.param(
        febrile(running("ne-salt", rxnorm("7508", "norepinephrine bitartrate"))),
        Expect(3, cited=("MedicationAdministration/ne-salt",)),
        id="NE-salt-7508->grade-3",
    ),
    pytest.param(
        febrile(running("phe-salt", rxnorm("8164", "phenylephrine hydrochloride"))),
        Expect(3, cited=("MedicationAdministration/phe-salt",)),
        id="phenylephrine-salt-8164->grade-3",
    ),
    pytest.param(
        febrile(running("dopa-salt", rxnorm("82010", "dopamine hydrochloride"))),
        Expect(3, cited=("MedicationAdministration/dopa-salt",)),
        id="dopamine-salt-82010->grade-3",
    ),
    pytest.param(
        febrile(running("ne-salt", rxnorm("7508")), running("phe-salt", rxnorm("8164"))),
        Expect(4),
        id="NE-salt+phenylephrine-salt->grade-4",
    ),
    pytest.param(
        febrile(NE, running("ne-salt", rxnorm("7508", "norepinephrine bitartrate"))),
        Expect(3),
        id="NE-7512+NE-salt-7508-same-agent->grade-3-not-4",
    ),
    pytest.param(
        febrile(running("ne-c", NOREPINEPHRINE, contained=True)),
        Expect(3, cited=("MedicationAdministration/ne-c",)),
        id="NE-contained-Medication->grade-3",
    ),
    pytest.param(
        febrile(NE, running("epi-c", EPINEPHRINE, contained=True)),
        Expect(4),
        id="NE+contained-epinephrine->grade-4",
    ),
    *(
        pytest.param(
            febrile(running("atc", atc(code))),
            Expect(3, cited=("MedicationAdministration/atc",)),
            id=f"{name}-ATC-{code}-only->grade-3",
        )
        for code, name in [
            ("C01CA03", "NE"),
            ("C01CA24", "epinephrine"),
            ("C01CA06", "phenylephrine"),
            ("C01CA04", "dopamine"),
            ("H01BA01", "vasopressin"),
        ]
    ),
    pytest.param(
        febrile(running("ne-text", text_concept("Norepinephrine 8 mg in 250 mL infusion"))),
        Expect(
            3,
            cited=("MedicationAdministration/ne-text",),
            details={"MedicationAdministration/ne-text": "text"},
        ),
        id="NE-text-only-name->grade-3-said-by-text",
    ),
    pytest.param(
        febrile(running("ne-local", concept("http://hospital.example/meds", "M123", "Norepinephrine 4 mg/250 mL"))),
        Expect(
            3,
            cited=("MedicationAdministration/ne-local",),
            details={"MedicationAdministration/ne-local": "text"},
        ),
        id="NE-unknown-local-code-name-in-display->grade-3-said-by-text",
    ),
    pytest.param(
        febrile(running("ne-text", text_concept("Norepinephrine 8 mg in 250 mL")), running("epi", EPINEPHRINE)),
        Expect(4),
        id="NE-by-text-not-read-as-epinephrine+epinephrine->grade-4",
    ),
    pytest.param(
        febrile(running("ne-text", text_concept("Noradrenaline infusion")), NE),
        Expect(3),
        id="noradrenaline-by-text+NE-coded-same-agent->grade-3",
    ),
    pytest.param(
        febrile(medication_administration("ne", NOREPINEPHRINE, status="stopped", period=(5, -1))),
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="NE-stopped-period-covering-T->grade-3",
    ),
    pytest.param(
        [
            ADULT,
            EARLY_FEVER,
            FEVER,
            LOW_BP,
            medication_administration("ne", NOREPINEPHRINE, status="stopped", period=(5, 2)),
        ],
        Expect(2, worst=3, not_cited=("MedicationAdministration/ne",), worst_cited=("MedicationAdministration/ne",)),
        id="NE-stopped-2h-ago+SBP-85->grade-2-worst-3",
    ),
    pytest.param(
        febrile(EARLY_FEVER, medication_administration("ne", NOREPINEPHRINE, status="completed", period=(6, 3))),
        Expect(1, worst=3, not_cited=("MedicationAdministration/ne",)),
        id="NE-completed-period-ended-before-T->grade-1-worst-3",
    ),
    pytest.param(
        febrile(medication_administration("ne", NOREPINEPHRINE, status="completed", period=(3, -1))),
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="NE-completed-period-covering-T->grade-3",
    ),
    pytest.param(
        febrile(medication_administration("ne", NOREPINEPHRINE, status="in-progress", period=(3, None))),
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="NE-in-progress-open-period->grade-3",
    ),
    pytest.param(
        febrile(medication_administration("ne", NOREPINEPHRINE, status="completed", hours_before=1)),
        Expect(1, not_cited=("MedicationAdministration/ne",)),
        id="NE-completed-at-a-moment-before-T-not-in-effect->grade-1",
    ),
    pytest.param(
        febrile(medication_administration("ne", NOREPINEPHRINE, status="on-hold", period=(3, None))),
        Expect(1, not_cited=("MedicationAdministration/ne",)),
        id="NE-on-hold-not-in-effect->grade-1",
    ),
    pytest.param(
        febrile(medication_administration("ne", NOREPINEPHRINE, status="on-hold", period=(3, -1))),
        Expect(1, not_cited=("MedicationAdministration/ne",), components={"hypotensionGrade": 0}),
        id="NE-on-hold-period-spanning-T-not-in-effect->grade-1",
    ),
    *(
        pytest.param(
            febrile(medication_administration("ne", NOREPINEPHRINE, status=status, hours_before=2)),
            Expect(
                1,
                worst=1,
                rejected={"MedicationAdministration/ne": status},
                components={"hypotensionGrade": 0},
            ),
            id=f"NE-{status}-not-evidence->grade-1",
        )
        for status in ("entered-in-error", "not-done", "unknown")
    ),
    pytest.param(
        febrile(running("ne", NOREPINEPHRINE, rate=(0, "ug/min"))),
        Expect(1, rejected={"MedicationAdministration/ne": "rate is 0"}),
        id="NE-rate-0-not-running->grade-1",
    ),
    pytest.param(
        febrile(running("ne", NOREPINEPHRINE, patient_id="p2")),
        Expect(1, rejected={"MedicationAdministration/ne": "another patient"}),
        id="NE-of-another-patient-not-evidence->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NE],
        Expect(3, cited=("MedicationAdministration/ne",)),
        id="fever+NE-without-any-BP-charted->still-grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NE, running("epi", EPINEPHRINE)],
        Expect(4),
        id="fever+2-pressors-without-any-BP-charted->grade-4",
    ),
    pytest.param(
        [ADULT, FEVER, LOW_BP, NE],
        Expect(3, cited=("MedicationAdministration/ne", "Observation/bp-85")),
        id="fever+SBP-85+NE->grade-3",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), VASOPRESSOR_CASES)
def test_vasopressors(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


# -- oxygen --------------------------------------------------------------------------------

OXYGEN_CASES = [
    pytest.param(
        febrile(dev("nc", NC), o2_flow("flow", 6)),
        Expect(2, cited=("Observation/nc", "Observation/flow"), components={"hypoxiaGrade": 2}),
        id="NC-6-L/min->grade-2",
    ),
    pytest.param(
        febrile(dev("nc", NC), o2_flow("flow", 6.5)),
        Expect(3, cited=("Observation/flow",), components={"hypoxiaGrade": 3}),
        id="NC-6.5-L/min->grade-3",
    ),
    pytest.param(
        febrile(dev("nc", NC), o2_flow("flow", 6000, "mL/min")),
        Expect(2, cited=("Observation/flow",)),
        id="NC-6000-mL/min->grade-2",
    ),
    pytest.param(
        febrile(dev("nc", NC), o2_flow("flow", 8000, "mL/min")),
        Expect(3, cited=("Observation/flow",)),
        id="NC-8000-mL/min->grade-3",
    ),
    pytest.param(
        febrile(dev("nc", NC), spo2("ox", 95, flow=6)),
        Expect(2, cited=("Observation/ox",)),
        id="NC+pulse-ox-flow-component-6-L/min->grade-2",
    ),
    pytest.param(
        febrile(dev("nc", NC), spo2("ox", 95, flow=8000, flow_unit="mL/min")),
        Expect(3, cited=("Observation/ox",)),
        id="NC+pulse-ox-flow-component-8000-mL/min->grade-3",
    ),
    pytest.param(
        febrile(spo2("ox", 95, loinc="2708-6", flow=2)),
        Expect(2, cited=("Observation/ox",)),
        id="SaO2-2708-6-flow-component-2-L/min->grade-2",
    ),
    pytest.param(
        febrile(o2_flow("flow", 4)),
        Expect(2, cited=("Observation/flow",)),
        id="flow-4-L/min-no-device->grade-2",
    ),
    pytest.param(
        febrile(o2_flow("flow", 10)),
        Expect(3, cited=("Observation/flow",)),
        id="flow-10-L/min-no-device->grade-3",
    ),
    pytest.param(
        febrile(dev("nc", NC)),
        Expect(2, cited=("Observation/nc",), assumptions=("no flow",)),
        id="NC-without-flow->grade-2+assumption",
    ),
    *(
        pytest.param(
            febrile(dev("dev", kind)),
            Expect(grade, cited=("Observation/dev",), components={"hypoxiaGrade": grade}),
            id=f"{name}->grade-{grade}",
        )
        for name, kind, grade in [
            ("HFNC", HFNC, 3),
            ("simple-mask", SIMPLE_MASK, 3),
            ("non-rebreather", NRB, 3),
            ("Venturi-428285009", VENTURI, 3),
            ("Venturi-face-465433006", VENTURI_FACE, 3),
            ("blow-by", BLOW_BY, 2),
            ("CPAP-device", CPAP_CANNULA, 4),
            ("BiPAP-device", BIPAP_CANNULA, 4),
            ("CPAP/BiPAP-mask", CPAP_MASK, 4),
            ("endotracheal-tube", ETT, 4),
            ("mechanical-ventilator", VENTILATOR, 4),
        ]
    ),
    pytest.param(
        febrile(dev("nrb", NRB, obs_code=concept("http://hospital.example/flowsheet", "ZZ-999", "Resp device"))),
        Expect(3, cited=("Observation/nrb",)),
        id="device-obs-with-unknown-local-code-still-recognised->grade-3",
    ),
    pytest.param(
        febrile(dev("nrb", NRB, obs_code=text_concept("O2 device"))),
        Expect(3, cited=("Observation/nrb",)),
        id="device-obs-with-text-only-code-still-recognised->grade-3",
    ),
    *(
        pytest.param(
            febrile(procedure("proc", code, display)),
            Expect(grade, cited=("Procedure/proc",)),
            id=f"{name}-Procedure-in-progress->grade-{grade}",
        )
        for name, code, display, grade in [
            ("CPAP", "47545007", "Continuous positive airway pressure ventilation treatment", 4),
            ("BiPAP", "243142003", "Dual pressure spontaneous ventilation support", 4),
            ("NIV", "428311008", "Non-invasive ventilation", 4),
            ("NIPPV", "447837008", "Non-invasive positive pressure ventilation", 4),
            ("IMV", "1258985005", "Invasive mechanical ventilation", 4),
            ("artificial-ventilation", "40617009", "Artificial ventilation", 4),
            ("HFNC-therapy", "1259025002", "Heated and humidified high flow oxygen therapy using nasal cannula", 3),
        ]
    ),
    pytest.param(
        febrile(procedure("cpap", "47545007", "CPAP", status="completed", period=(10, -1))),
        Expect(4, cited=("Procedure/cpap",)),
        id="CPAP-Procedure-period-covering-T->grade-4",
    ),
    pytest.param(
        febrile(EARLY_FEVER, procedure("bipap", "243142003", "BiPAP", status="completed", period=(6, 2))),
        Expect(1, worst=4, not_cited=("Procedure/bipap",), components={"hypoxiaGrade": 0}),
        id="BiPAP-Procedure-completed-before-T-not-in-effect->grade-1-worst-4",
    ),
    pytest.param(
        febrile(procedure("bipap", "243142003", "BiPAP", status="completed", hours_before=2)),
        Expect(4, cited=("Procedure/bipap",)),
        id="BiPAP-Procedure-performedDateTime-2h-ago-point-record-holds-12h->grade-4",
    ),
    pytest.param(
        febrile(procedure("cpap", "47545007", "CPAP", period=(20, None))),
        Expect(4, cited=("Procedure/cpap",)),
        id="CPAP-Procedure-in-progress-started-20h-ago->grade-4",
    ),
    *(
        pytest.param(
            febrile(procedure("cpap", "47545007", "CPAP", status=status)),
            Expect(1, rejected={"Procedure/cpap": status}),
            id=f"CPAP-Procedure-{status}-not-evidence->grade-1",
        )
        for status in ("entered-in-error", "not-done")
    ),
    pytest.param(
        febrile(oxygen_administration("o2", 4)),
        Expect(2, cited=("MedicationAdministration/o2",)),
        id="oxygen-MedicationAdministration-4-L/min->grade-2",
    ),
    pytest.param(
        febrile(oxygen_administration("o2", 10)),
        Expect(3, cited=("MedicationAdministration/o2",)),
        id="oxygen-MedicationAdministration-10-L/min->grade-3",
    ),
    pytest.param(
        febrile(oxygen_administration("o2", 6)),
        Expect(2),
        id="oxygen-MedicationAdministration-6-L/min->grade-2",
    ),
    pytest.param(
        febrile(medication_administration("o2", rxnorm("7806"), status="in-progress", rate=(8000, "mL/min"))),
        Expect(3, cited=("MedicationAdministration/o2",)),
        id="oxygen-MedicationAdministration-8000-mL/min->grade-3",
    ),
    pytest.param(
        febrile(medication_administration("o2", rxnorm("7806"), status="in-progress")),
        Expect(2, cited=("MedicationAdministration/o2",), assumptions=("unknown kind",)),
        id="oxygen-MedicationAdministration-no-rate->grade-2+unknown-kind",
    ),
    pytest.param(
        febrile(EARLY_FEVER, oxygen_administration("o2", 10, status="completed", period=(6, 2))),
        Expect(1, worst=3, not_cited=("MedicationAdministration/o2",)),
        id="oxygen-MedicationAdministration-10-L/min-ended-before-T->grade-1-worst-3",
    ),
    pytest.param(
        febrile(
            medication_administration(
                "o2", concept("http://snomed.info/sct", "24099007"), status="in-progress", rate=(10, "L/min")
            )
        ),
        Expect(3, cited=("MedicationAdministration/o2",)),
        id="oxygen-SNOMED-24099007-10-L/min->grade-3",
    ),
    pytest.param(
        febrile(medication_administration("o2", text_concept("Oxygen"), status="in-progress", rate=(4, "L/min"))),
        Expect(2, cited=("MedicationAdministration/o2",)),
        id="oxygen-by-name-4-L/min->grade-2",
    ),
    pytest.param(
        febrile(fio2("fio2", 40)),
        Expect(2, cited=("Observation/fio2",), assumptions=("unknown kind",)),
        id="FiO2-40%-no-device->grade-2+unknown-kind",
    ),
    pytest.param(
        febrile(spo2("ox", 95, fio2_percent=40)),
        Expect(2, cited=("Observation/ox",), assumptions=("unknown kind",)),
        id="pulse-ox-FiO2-component-40%-no-device->grade-2+unknown-kind",
    ),
    pytest.param(
        febrile(fio2("fio2", 21) | {"valueQuantity": {"value": 0.4, "unit": "1", "system": UCUM, "code": "1"}}),
        Expect(2, cited=("Observation/fio2",), assumptions=("unknown kind",)),
        id="FiO2-0.4-as-fraction-no-device->grade-2+unknown-kind",
    ),
    pytest.param(
        febrile(fio2("fio2", 21)),
        Expect(1, components={"hypoxiaGrade": 0}),
        id="FiO2-21%-is-room-air->grade-1",
    ),
    pytest.param(
        febrile(dev("nrb", NRB, hours_before=13), o2_flow("flow", 10, hours_before=13)),
        Expect(1, not_cited=("Observation/nrb", "Observation/flow"), components={"hypoxiaGrade": 0}),
        id="NRB-charted-13h-ago->room-air->grade-1",
    ),
    pytest.param(
        febrile(dev("nrb", NRB, hours_before=11)),
        Expect(3, cited=("Observation/nrb",)),
        id="NRB-charted-11h-ago-still-required->grade-3",
    ),
    pytest.param(
        febrile(EARLY_FEVER, dev("nrb", NRB, hours_before=3), room_air("ra", hours_before=1)),
        Expect(1, worst=3, not_cited=("Observation/nrb",), components={"hypoxiaGrade": 0}),
        id="later-room-air-record-ends-NRB->grade-1",
    ),
    pytest.param(
        febrile(dev("nrb", NRB, hours_before=3), spo2("ra-sat", 95, loinc="59410-1")),
        Expect(1, not_cited=("Observation/nrb",)),
        id="later-SpO2-on-room-air-59410-1-ends-NRB->grade-1",
    ),
    pytest.param(
        febrile(dev("nrb", NRB, hours_before=3), o2_flow("flow0", 0, hours_before=1)),
        Expect(1, not_cited=("Observation/nrb",)),
        id="later-flow-0-L/min-ends-NRB->grade-1",
    ),
    pytest.param(
        febrile(procedure("cpap", "47545007", "CPAP", period=(5, None)), room_air("ra", hours_before=1)),
        Expect(1, not_cited=("Procedure/cpap",)),
        id="later-room-air-record-ends-CPAP-procedure->grade-1",
    ),
    pytest.param(
        febrile(room_air("ra", hours_before=3), dev("nrb", NRB, hours_before=1)),
        Expect(3, cited=("Observation/nrb",)),
        id="NRB-after-room-air->grade-3",
    ),
    pytest.param(
        febrile(dev("nc", NC, hours_before=5), dev("nrb", NRB, hours_before=2)),
        Expect(3, cited=("Observation/nrb",)),
        id="NC-then-NRB-latest-device->grade-3",
    ),
    pytest.param(
        febrile(
            EARLY_FEVER,
            dev("nrb", NRB, hours_before=5),
            dev("nc", NC, hours_before=2),
            o2_flow("flow", 2, hours_before=2),
        ),
        Expect(2, worst=3, cited=("Observation/nc",), not_cited=("Observation/nrb",)),
        id="NRB-weaned-to-NC-2L->grade-2-worst-3",
    ),
    pytest.param(
        febrile(spo2("ox", 85)),
        Expect(1, alerts=("SpO2 85",), components={"hypoxiaGrade": 0}),
        id="SpO2-85%-on-room-air->alert-no-grade-raise",
    ),
    pytest.param(
        febrile(room_air("ra", hours_before=1), spo2("ox", 85)),
        Expect(1, alerts=("SpO2 85",), components={"hypoxiaGrade": 0}),
        id="SpO2-85%-charted-room-air->alert-no-grade-raise",
    ),
    pytest.param(
        febrile(spo2("ox", 96)),
        Expect(1, no_alert=("SpO2",)),
        id="SpO2-96%-on-room-air->no-alert",
    ),
    pytest.param(
        [ADULT, FEVER, dev("nc", NC), o2_flow("flow", 2)],
        Expect(2, cited=("Observation/nc",)),
        id="fever+no-BP+NC-2L->graded-2-BP-cannot-change-it",
    ),
    pytest.param(
        [ADULT, FEVER, dev("nrb", NRB)],
        Expect(3),
        id="fever+no-BP+NRB->graded-3",
    ),
    pytest.param(
        [ADULT, FEVER, LOW_BP, dev("nrb", NRB)],
        Expect(3, cited=("Observation/bp-85", "Observation/nrb")),
        id="fever+SBP-85+NRB->grade-3-more-severe-sign",
    ),
    pytest.param(
        [ADULT, temperature("t", 39.5), NORMAL_BP, NE, dev("nc", NC), o2_flow("flow", 2)],
        Expect(3),
        id="seed-39.5C+1-pressor+low-flow-NC->grade-3",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, NE, running("epi", EPINEPHRINE), dev("nrb", NRB)],
        Expect(4),
        id="2-pressors+NRB->grade-4",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), OXYGEN_CASES)
def test_oxygen(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


# -- masking -------------------------------------------------------------------------------

PRIOR_FEVER = temperature("t-prior", 38.6, hours_before=72)
TOCI_60H = medication_administration("toci", TOCILIZUMAB, hours_before=60, dose=(600, "mg"))

MASKING_CASES = [
    pytest.param(
        [ADULT, PRIOR_FEVER, TOCI_60H, AFEBRILE, LOW_BP],
        Expect(
            2,
            cited=("Observation/t-prior", "MedicationAdministration/toci", "Observation/bp-85"),
            components={"fever": "masked", "hypotensionGrade": 2},
        ),
        id="prior-fever-3d-ago+tocilizumab->afebrile-SBP-85->grade-2-masked",
    ),
    pytest.param(
        [ADULT, PRIOR_FEVER, TOCI_60H, LOW_BP],
        Expect(2, components={"fever": "masked"}),
        id="prior-fever+tocilizumab->no-temperature-now+SBP-85->grade-2-masked",
    ),
    pytest.param(
        [ADULT, PRIOR_FEVER, medication_administration("apap", atc("N02BE01"), hours_before=48), AFEBRILE, LOW_BP],
        Expect(2, cited=("MedicationAdministration/apap",), components={"fever": "masked"}),
        id="prior-fever+acetaminophen->afebrile-SBP-85->grade-2-masked",
    ),
    pytest.param(
        [ADULT, PRIOR_FEVER, medication_administration("mp", rxnorm("6902"), hours_before=48), AFEBRILE, NORMAL_BP, NE],
        Expect(3, components={"fever": "masked"}),
        id="prior-fever+methylprednisolone->afebrile+NE->grade-3-masked",
    ),
    pytest.param(
        [
            ADULT,
            medication_administration("dex", DEXAMETHASONE, hours_before=66),
            temperature("t-prior", 38.6, hours_before=60),
            AFEBRILE,
            LOW_BP,
        ],
        Expect(
            None,
            at_least=0,
            possible=2,
            missing=("possible CRS with masked fever: grade 2 if CRS",),
            components={"fever": "not met"},
        ),
        id="steroid-premedication-before-prior-fever-within-72h+SBP-85->possible-grade-2",
    ),
    pytest.param(
        [
            ADULT,
            medication_administration("dex", DEXAMETHASONE, hours_before=60),
            condition("crs", "D89.832", onset_hours_before=48),
            AFEBRILE,
            LOW_BP,
        ],
        Expect(
            None,
            at_least=0,
            possible=2,
            missing=("possible CRS with masked fever: grade 2 if CRS",),
            components={"fever": "not met"},
        ),
        id="steroid-before-CRS-Condition-onset-within-72h+SBP-85->possible-grade-2",
    ),
    pytest.param(
        [ADULT, medication_administration("dex", DEXAMETHASONE, hours_before=30), AFEBRILE, LOW_BP],
        Expect(
            None,
            at_least=0,
            possible=2,
            missing=("possible CRS with masked fever: grade 2 if CRS",),
            components={"fever": "not met"},
        ),
        id="steroid-premedication-without-any-CRS-30h+SBP-85->possible-grade-2",
    ),
    pytest.param(
        [
            ADULT,
            condition("crs", "D89.832", onset_hours_before=48),
            medication_administration("dex", DEXAMETHASONE, hours_before=30),
            AFEBRILE,
            NORMAL_BP,
            dev("nrb", NRB),
        ],
        Expect(
            3,
            cited=("Condition/crs", "MedicationAdministration/dex", "Observation/nrb"),
            components={"fever": "masked"},
        ),
        id="active-D89.832+dexamethasone-afebrile-on-NRB->grade-3",
    ),
    *(
        pytest.param(
            [
                ADULT,
                condition("crs", code),
                medication_administration("dex", DEXAMETHASONE, hours_before=30),
                AFEBRILE,
                NORMAL_BP,
                dev("nrb", NRB),
            ],
            Expect(3, cited=("Condition/crs",), components={"fever": "masked"}),
            id=f"active-{code}-no-onset+dexamethasone-afebrile-on-NRB->grade-3",
        )
        for code in ("D89.831", "D89.833", "D89.834", "D89.835", "D89.839")
    ),
    pytest.param(
        [
            ADULT,
            condition("crs", "D89.832", clinical_status="resolved", onset_hours_before=48),
            medication_administration("dex", DEXAMETHASONE, hours_before=30),
            AFEBRILE,
            NORMAL_BP,
            dev("nrb", NRB),
        ],
        Expect(None, at_least=0, possible=3, rejected={"Condition/crs": "resolved"}, components={"fever": "not met"}),
        id="resolved-D89.832-no-established-masking+dex-30h-on-NRB->possible-grade-3",
    ),
    pytest.param(
        [
            ADULT,
            condition("crs", "D89.832", clinical_status="inactive", onset_hours_before=48),
            medication_administration("dex", DEXAMETHASONE, hours_before=30),
            AFEBRILE,
            NORMAL_BP,
            dev("nrb", NRB),
        ],
        Expect(None, at_least=0, possible=3, rejected={"Condition/crs": "inactive"}),
        id="inactive-D89.832-no-established-masking+dex-30h-on-NRB->possible-grade-3",
    ),
    pytest.param(
        [ADULT, PRIOR_FEVER, TOCI_60H, AFEBRILE, NORMAL_BP],
        Expect(0, alerts=("fever may be masked",), components={"fever": "masked"}),
        id="masked-with-no-signs->grade-0+alert",
    ),
    pytest.param(
        [ADULT, PRIOR_FEVER, TOCI_60H, AFEBRILE],
        Expect(None, at_least=0, missing=("blood pressure",)),
        id="masked+no-BP-charted->indeterminate-at-least-0",
    ),
    pytest.param(
        [ADULT, temperature("t-prior", 38.6, hours_before=24 + 15 * 24), TOCI_60H, AFEBRILE, LOW_BP],
        Expect(None, at_least=0, possible=2, components={"fever": "not met"}),
        id="fever-15-days-before-window-not-prior-CRS+tocilizumab-60h->possible-grade-2",
    ),
    pytest.param(
        [
            ADULT,
            temperature("t-prior", 38.6, hours_before=100),
            medication_administration("cart", atc("L01XL03", "axicabtagene ciloleucel"), hours_before=96),
            TOCI_60H,
            AFEBRILE,
            LOW_BP,
        ],
        Expect(None, at_least=0, possible=2, not_cited=("Observation/t-prior",)),
        id="fever-before-CAR-T-infusion-not-prior-CRS+tocilizumab-60h->possible-grade-2",
    ),
    pytest.param(
        [
            ADULT,
            medication_administration("cart", atc("L01XL03", "axicabtagene ciloleucel"), hours_before=96),
            PRIOR_FEVER,
            TOCI_60H,
            AFEBRILE,
            LOW_BP,
        ],
        Expect(2, cited=("Observation/t-prior",), components={"fever": "masked"}),
        id="fever-after-CAR-T-then-tocilizumab->afebrile-SBP-85->grade-2",
    ),
    pytest.param(
        [ADULT, PRIOR_FEVER, TOCI_60H, FEVER, LOW_BP],
        Expect(2, components={"fever": "met"}),
        id="febrile-now-after-tocilizumab->fever-met-not-masked",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), MASKING_CASES)
def test_masking(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


# -- missing data and what is not evidence -------------------------------------------------

ONLY_TEMPERATURE = "the only temperature"

REJECTED_TEMPERATURES = [
    ("unknown-text-unit", temperature("t", 38.5, "degrees", ucum=False), "unknown unit"),
    ("unknown-UCUM-unit-K", temperature("t", 311.65, "K"), "not a temperature unit"),
    ("no-unit", temperature("t", 38.5, None), "unit missing"),
    ("entered-in-error", temperature("t", 38.5, status="entered-in-error"), "entered-in-error"),
    ("cancelled", temperature("t", 38.5, status="cancelled"), "cancelled"),
    ("out-of-range-60-Cel", temperature("t", 60.0), "plausible range"),
    ("out-of-range-140-degF", temperature("t", 140.0, "[degF]"), "plausible range"),
    ("another-patient", temperature("t", 38.5, patient_id="p2"), "another patient"),
]

MISSING_CASES = [
    pytest.param(
        [ADULT, NORMAL_BP],
        Expect(None, missing=("no usable body temperature",)),
        id="no-temperature-in-24h->indeterminate",
    ),
    pytest.param(
        [ADULT, temperature("old", 39.0, hours_before=25), NORMAL_BP, dev("nrb", NRB)],
        Expect(None, missing=("body temperature",)),
        id="only-temperature-25h-old->indeterminate-even-on-NRB",
    ),
    pytest.param(
        [ADULT, FEVER],
        Expect(None, at_least=1, cited=("Observation/t-fever",), missing=("blood pressure",)),
        id="fever+no-BP-in-24h+room-air->indeterminate-at-least-1",
    ),
    pytest.param(
        [ADULT, FEVER, systolic_bp("old-bp", 120, hours_before=25)],
        Expect(None, at_least=1, missing=("blood pressure",)),
        id="fever+BP-25h-old->indeterminate-at-least-1",
    ),
    pytest.param(
        [ADULT, FEVER, systolic_bp("kpa", 11, "kPa")],
        Expect(None, at_least=1, rejected={"Observation/kpa": "kPa"}, missing=("blood pressure",)),
        id="fever+BP-in-kPa-not-evidence->indeterminate-at-least-1",
    ),
    pytest.param(
        [ADULT, AFEBRILE],
        Expect(0),
        id="afebrile+no-BP->grade-0-not-CRS",
    ),
    *(
        pytest.param(
            [ADULT, bad, NORMAL_BP],
            Expect(None, rejected={"Observation/t": reason}, missing=("body temperature",)),
            id=f"temperature-{name}-{ONLY_TEMPERATURE.replace(' ', '-')}->indeterminate",
        )
        for name, bad, reason in REJECTED_TEMPERATURES
    ),
    pytest.param(
        [ADULT, temperature("t", 38.5, "degrees", ucum=False), AFEBRILE, NORMAL_BP],
        Expect(0, rejected={"Observation/t": "unknown unit"}, cited=("Observation/t-afebrile",)),
        id="fever-with-unknown-unit+valid-37.0->grade-0",
    ),
    pytest.param(
        [ADULT, patient(45, patient_id="p2"), FEVER, NORMAL_BP],
        Expect(1, rejected={"Patient/p2": "other than"}),
        id="Patient-resource-of-another-patient-not-evidence",
    ),
    pytest.param(
        [ADULT, FEVER, systolic_bp("bp-other", 70, patient_id="p2"), NORMAL_BP],
        Expect(1, rejected={"Observation/bp-other": "another patient"}),
        id="low-BP-of-another-patient-not-evidence->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, dev("nrb-other", NRB, patient_id="p2")],
        Expect(1, rejected={"Observation/nrb-other": "another patient"}),
        id="NRB-of-another-patient-not-evidence->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, dev("nrb", NRB, status="entered-in-error")],
        Expect(1, rejected={"Observation/nrb": "entered-in-error"}),
        id="NRB-entered-in-error-not-evidence->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, systolic_bp("bp", 80, status="cancelled"), NORMAL_BP],
        Expect(1, rejected={"Observation/bp": "cancelled"}),
        id="SBP-80-cancelled-not-evidence->grade-1",
    ),
    pytest.param(
        [ADULT, FEVER, systolic_bp("bp", 80, status="preliminary")],
        Expect(2, cited=("Observation/bp",)),
        id="SBP-80-preliminary-is-evidence->grade-2",
    ),
    *(
        pytest.param(
            [ADULT, temperature("t", 38.5, status=status), NORMAL_BP],
            Expect(1, cited=("Observation/t",)),
            id=f"fever-status-{status}-is-evidence->grade-1",
        )
        for status in ("amended", "corrected", "preliminary")
    ),
]


@pytest.mark.parametrize(("resources", "expect"), MISSING_CASES)
def test_missing_and_not_evidence(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


UNAVAILABLE_CASES = [
    pytest.param(
        febrile(),
        {DataSource.MEDICATIONS: "OperationOutcome: timeout"},
        Expect(None, at_least=1, missing=("MedicationAdministration", "timeout")),
        id="fever+medications-unavailable->indeterminate-at-least-1",
    ),
    pytest.param(
        febrile(dev("nc", NC), o2_flow("flow", 2)),
        {DataSource.PROCEDURES: "OperationOutcome: forbidden"},
        Expect(None, at_least=2, missing=("Procedure",)),
        id="fever+NC-2L+procedures-unavailable->indeterminate-at-least-2",
    ),
    pytest.param(
        febrile(dev("tube", ETT)),
        {DataSource.MEDICATIONS: "OperationOutcome: timeout"},
        Expect(4),
        id="grade-4+medications-unavailable->still-graded-4",
    ),
    pytest.param(
        [ADULT, AFEBRILE, LOW_BP],
        {DataSource.MEDICATIONS: "OperationOutcome: timeout"},
        Expect(None, at_least=0, missing=("MedicationAdministration",)),
        id="afebrile-SBP-85+medications-unavailable-masking-unknown->indeterminate-at-least-0",
    ),
]


@pytest.mark.parametrize(("resources", "unavailable", "expect"), UNAVAILABLE_CASES)
def test_unavailable_data(
    grading: Grading, resources: list[Resource], unavailable: dict[DataSource, str], expect: Expect
) -> None:
    check(run(grading, resources, unavailable=unavailable).primary, expect)


# -- worst grade over 72 h -----------------------------------------------------------------

WORST_CASES = [
    pytest.param(
        [
            ADULT,
            temperature("t-26h", 38.5, hours_before=26),
            medication_administration("ne", NOREPINEPHRINE, status="stopped", period=(30, 20)),
            FEVER,
            LOW_BP,
        ],
        Expect(
            2,
            worst=3,
            not_cited=("MedicationAdministration/ne",),
            worst_cited=("MedicationAdministration/ne", "Observation/t-26h"),
        ),
        id="earlier-pressor-now-stopped->current-2-worst-3",
    ),
    pytest.param(
        [
            ADULT,
            temperature("t-50h", 38.5, hours_before=50),
            systolic_bp("bp-50h", 85, hours_before=50),
            AFEBRILE,
            NORMAL_BP,
        ],
        Expect(0, worst=2, worst_cited=("Observation/bp-50h",)),
        id="fever+hypotension-50h-ago->current-0-worst-2",
    ),
    pytest.param(
        [
            ADULT,
            temperature("t-76h", 38.5, hours_before=76),
            medication_administration("ne-old", NOREPINEPHRINE, status="stopped", period=(80, 75)),
            FEVER,
            NORMAL_BP,
        ],
        Expect(1, worst=1, worst_not_cited=("MedicationAdministration/ne-old",)),
        id="pressor-ended-75h-ago-not-in-worst->worst-1",
    ),
    pytest.param(
        [
            ADULT,
            temperature("t-80h", 38.5, hours_before=80),
            systolic_bp("bp-80h", 80, hours_before=80),
            AFEBRILE,
            NORMAL_BP,
        ],
        Expect(0, worst=0, worst_not_cited=("Observation/bp-80h", "Observation/t-80h")),
        id="fever+hypotension-80h-ago-not-in-worst->worst-0",
    ),
    pytest.param(
        [ADULT, FEVER, NORMAL_BP, dev("nrb", NRB, hours_before=30), temperature("t-30h", 38.5, hours_before=30)],
        Expect(1, worst=3, worst_cited=("Observation/nrb",)),
        id="NRB-30h-ago-with-fever->current-1-worst-3",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), WORST_CASES)
def test_worst_grade(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


# -- tocilizumab ---------------------------------------------------------------------------


def toci_dose(rid: str, hours_before: float, **kwargs: Any) -> Resource:
    return medication_administration(rid, TOCILIZUMAB, hours_before=hours_before, dose=(600, "mg"), **kwargs)


TOCILIZUMAB_CASES = [
    pytest.param(febrile(weight("w", 75)), 600.0, None, id="75-kg->600-mg"),
    pytest.param(febrile(weight("w", 110)), 800.0, None, id="110-kg->800-mg-cap"),
    pytest.param(febrile(weight("w", 100)), 800.0, None, id="100-kg->800-mg"),
    pytest.param(febrile(weight("w", 25)), 300.0, None, id="25-kg->300-mg-12-mg/kg"),
    pytest.param(febrile(weight("w", 30)), 240.0, None, id="30-kg->240-mg-8-mg/kg"),
    pytest.param(febrile(weight("w", 29)), 348.0, None, id="29-kg->348-mg-12-mg/kg"),
    pytest.param(febrile(weight("w", 165, "[lb_av]")), 598.0, None, id="165-lb->598-mg"),
    pytest.param(
        febrile(weight("old", 90, hours_before=48), weight("w", 75, hours_before=2)),
        600.0,
        None,
        id="latest-weight-75-kg-used->600-mg",
    ),
    pytest.param(febrile(), None, "no body weight", id="no-weight->refused"),
    pytest.param(
        febrile(weight("w", 75, status="entered-in-error")), None, "no body weight", id="weight-in-error->refused"
    ),
    pytest.param(
        febrile(weight("w", 75), toci_dose("d1", 7)),
        None,
        "next is allowed from 2025-03-04T09:00:00Z",
        id="last-dose-7h-ago->refused",
    ),
    pytest.param(febrile(weight("w", 75), toci_dose("d1", 8)), 600.0, None, id="last-dose-8h-ago->600-mg"),
    pytest.param(
        febrile(weight("w", 75), toci_dose("d1", 23), toci_dose("d2", 15.5), toci_dose("d3", 8)),
        None,
        "3 doses in the last 24 h",
        id="3-doses-in-24h->refused",
    ),
    pytest.param(
        febrile(weight("w", 75), toci_dose("d1", 16), toci_dose("d2", 8)),
        600.0,
        None,
        id="2-doses-in-24h->600-mg",
    ),
    pytest.param(
        febrile(weight("w", 75), toci_dose("d1", 72), toci_dose("d2", 60), toci_dose("d3", 48), toci_dose("d4", 36)),
        None,
        "4 doses already given",
        id="4-doses-total->refused",
    ),
    pytest.param(
        febrile(weight("w", 75), toci_dose("d1", 2, status="entered-in-error")),
        600.0,
        None,
        id="dose-entered-in-error-not-counted->600-mg",
    ),
]


@pytest.mark.parametrize(("resources", "dose_mg", "reason"), TOCILIZUMAB_CASES)
def test_tocilizumab_advice(
    grading: Grading, resources: list[Resource], dose_mg: float | None, reason: str | None
) -> None:
    advice = run(grading, resources).tocilizumab
    assert advice.dose_mg == dose_mg, f"dose {advice.dose_mg}, reason {advice.reason!r}"
    if reason is None:
        assert advice.reason is None
        assert advice.weight is not None
        assert advice.weight.reference == "Observation/w"
    else:
        assert advice.reason is not None
        assert reason in advice.reason, advice.reason


# -- resources that fail R4B validation ----------------------------------------------------


def with_extra(resource: Resource, **fields: Any) -> Resource:
    """A copy of ``resource`` with extra top-level fields (e.g. an element R4 does not define)."""
    return copy.deepcopy(resource) | fields


INVALID_CASES = [
    pytest.param(
        [ADULT, with_extra(temperature("t", 38.5), foo=1), NORMAL_BP],
        Expect(None, rejected={"Observation/t": "fails FHIR R4 validation"}, missing=("body temperature",)),
        id="fever-obs-with-unknown-element-dropped->indeterminate",
    ),
    pytest.param(
        [ADULT, with_extra(temperature("t", 38.5), foo=1), AFEBRILE, NORMAL_BP],
        Expect(0, rejected={"Observation/t": "fails FHIR R4 validation"}),
        id="invalid-fever-obs-dropped+valid-37.0->grade-0",
    ),
    pytest.param(
        febrile(with_extra(NE, foo=1)),
        Expect(1, rejected={"MedicationAdministration/ne": "fails FHIR R4 validation"}),
        id="NE-with-unknown-element-dropped->grade-1",
    ),
    pytest.param(
        febrile(with_extra(NE, status="running")),
        Expect(1, rejected={"MedicationAdministration/ne": "running"}),
        id="NE-with-bad-status-code-dropped->grade-1",
    ),
    pytest.param(
        febrile(with_extra(dev("nrb", NRB), foo=1)),
        Expect(1, rejected={"Observation/nrb": "fails FHIR R4 validation"}),
        id="NRB-with-unknown-element-dropped->grade-1",
    ),
    pytest.param(
        [with_extra(patient(5), foo=1), FEVER, systolic_bp("bp", 85)],
        Expect(2, rejected={"Patient/p1": "fails FHIR R4 validation"}, assumptions=("birth date unknown",)),
        id="invalid-Patient-age-5-dropped->adult-thresholds-SBP-85->grade-2",
    ),
    pytest.param(
        [ADULT, FEVER, with_extra(systolic_bp("bp", 80), foo=1), NORMAL_BP],
        Expect(1, rejected={"Observation/bp": "fails FHIR R4 validation"}),
        id="SBP-80-with-unknown-element-dropped->grade-1",
    ),
]


@pytest.mark.parametrize(("resources", "expect"), INVALID_CASES)
def test_invalid_resources_are_dropped(grading: Grading, resources: list[Resource], expect: Expect) -> None:
    check(run(grading, resources).primary, expect)


def test_invalid_weight_is_dropped_and_no_dose_computed(grading: Grading) -> None:
    evaluation = run(grading, febrile(with_extra(weight("w", 75), foo=1)))
    assert evaluation.tocilizumab.dose_mg is None
    assert evaluation.tocilizumab.reason is not None
    assert "no body weight" in evaluation.tocilizumab.reason
    reasons = {n.reference: n.reason for n in evaluation.primary.not_evidence}
    assert "fails FHIR R4 validation" in reasons.get("Observation/w", "")
