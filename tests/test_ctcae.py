"""CTCAE v5.0 and v6.0 "Cytokine release syndrome" beside ASTCT: the NCI text as implemented, and
every grade boundary where the versions agree or differ, one FHIR case per row.

v6.0 changed grades 2 and 3 only: oxygen by device (as ASTCT) instead of FiO2. Grade 4 is the same
"life-threatening consequences; urgent intervention indicated" in both, read the same way:
invasive ventilation 4; two pressors or CPAP/BiPAP "at least" what they prove.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.grading import GRADERS, GradeResult, ctcae
from cds_hooks.pipeline.evaluate import Grading, evaluate
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings

from fhir_builders import (
    Resource,
    T,
    bp_panel,
    device,
    fio2,
    medication_administration,
    o2_flow,
    patient,
    reference,
    rxnorm,
    temperature,
)

ROOT = Path(__file__).resolve().parents[1]
NCI_ROWS = (ROOT / "docs" / "reference" / "ctcae.md").read_text(encoding="utf-8")
SYSTEMS = ("ASTCT-2019", "CTCAE-5.0", "CTCAE-6.0")

NOREPINEPHRINE = rxnorm("7512", "norepinephrine")
EPINEPHRINE = rxnorm("3992", "epinephrine")
VASOPRESSIN = rxnorm("11149", "vasopressin")
NC = ("336623009", "Oxygen nasal cannula")
HFNC = ("426854004", "High flow oxygen nasal cannula")
MASK = ("336602003", "Oxygen mask")
NRB = ("427591007", "Nonrebreather oxygen mask")
VENTURI = ("428285009", "Venturi mask")
BLOW_BY = ("425478008", "Blow by oxygen mask")
CPAP = ("706226000", "Continuous positive airway pressure/Bilevel positive airway pressure mask")
VENTILATOR = ("449071006", "Mechanical ventilator")


@dataclass(frozen=True)
class AtLeast:
    grade: int


Want = int | AtLeast | None


@pytest.fixture(scope="module")
def grading() -> Grading:
    return Grading(load_terminology(), load_units(), systems=SYSTEMS)


def grade_all(grading: Grading, resources: Sequence[Resource]) -> dict[str, GradeResult]:
    sourced = [SourcedResource(copy.deepcopy(r), reference(r)) for r in resources]
    return {r.system: r for r in evaluate(sourced, patient_id="p1", at=T, grading=grading).results}


def check(result: GradeResult, want: Want) -> None:
    if isinstance(want, AtLeast):
        assert (result.grade, result.grade_at_least) == (None, want.grade), (result.system, result.missing)
    elif want is None:
        assert result.grade is None and result.grade_at_least is None, (result.system, result.missing)
    else:
        assert result.grade == want, (result.system, result.grade, result.grade_at_least, result.missing)


def pressor(rid: str, medication: dict[str, Any]) -> Resource:
    return medication_administration(rid, medication, status="in-progress", hours_before=2.0)


def dev(rid: str, kind: tuple[str, str]) -> Resource:
    return device(rid, kind[0], kind[1])


FEBRILE: list[Resource] = [patient(45), temperature("t", 38.6), bp_panel("bp", 118, 72)]
LOW_BP: list[Resource] = [patient(45), temperature("t", 38.6), bp_panel("bp", 84, 50)]
AFEBRILE: list[Resource] = [patient(45), temperature("t", 37.9), bp_panel("bp", 84, 50), dev("d", NC)]

# (ASTCT-2019, CTCAE-5.0, CTCAE-6.0)
CASES: list[Any] = [
    # grade 0/1: fever (38.0, as ASTCT, for every system)
    pytest.param(AFEBRILE, (0, 0, 0), id="37.9C+low-bp+NC->0-not-CRS-everywhere"),
    pytest.param(FEBRILE, (1, 1, 1), id="fever-only->1"),
    # hypotension: the same rows in v5.0 and v6.0
    pytest.param(LOW_BP, (2, 2, 2), id="fever+low-bp-no-pressor->2-responding-to-fluids"),
    pytest.param([*LOW_BP, pressor("ne", NOREPINEPHRINE)], (3, 3, 3), id="fever+one-pressor->3"),
    pytest.param([*LOW_BP, pressor("vp", VASOPRESSIN)], (3, 3, 3), id="fever+vasopressin-alone->3"),
    pytest.param(
        [*LOW_BP, pressor("ne", NOREPINEPHRINE), pressor("epi", EPINEPHRINE)],
        (4, AtLeast(3), AtLeast(3)),
        id="fever+two-pressors->astct-4-ctcae-at-least-3",
    ),
    pytest.param(
        [*LOW_BP, pressor("ne", NOREPINEPHRINE), pressor("vp", VASOPRESSIN)],
        (3, AtLeast(3), AtLeast(3)),
        id="fever+NE+vasopressin->astct-3-ctcae-at-least-3",
    ),
    # oxygen, grade 2/3 boundary: v5.0 by FiO2, v6.0 by device like ASTCT
    pytest.param([*FEBRILE, dev("d", NC), o2_flow("f", 4)], (2, 2, 2), id="NC-4L-fio2-37->2"),
    pytest.param([*FEBRILE, dev("d", NC), o2_flow("f", 5)], (2, 3, 2), id="NC-5L-fio2-41->v5-3-v6-2"),
    pytest.param([*FEBRILE, dev("d", NC), o2_flow("f", 6)], (2, 3, 2), id="NC-6L->v5-3-v6-low-flow-2"),
    pytest.param([*FEBRILE, dev("d", NC), o2_flow("f", 6.5)], (3, 3, 3), id="NC-6.5L->v6-high-flow-3"),
    pytest.param([*FEBRILE, dev("d", BLOW_BY)], (2, AtLeast(2), 2), id="blow-by->v6-2-v5-fio2-unknown"),
    pytest.param([*FEBRILE, dev("d", HFNC), o2_flow("f", 40), fio2("x", 39)], (3, 2, 3), id="HFNC-fio2-39->v5-2-v6-3"),
    pytest.param([*FEBRILE, dev("d", HFNC), o2_flow("f", 40), fio2("x", 40)], (3, 3, 3), id="HFNC-fio2-40->3"),
    pytest.param([*FEBRILE, dev("d", MASK), o2_flow("f", 8)], (3, AtLeast(2), 3), id="face-mask->v6-3"),
    pytest.param([*FEBRILE, dev("d", NRB), o2_flow("f", 12)], (3, AtLeast(2), 3), id="non-rebreather->v6-3"),
    pytest.param([*FEBRILE, dev("d", VENTURI), fio2("x", 35)], (3, 2, 3), id="venturi-35%->v5-2-v6-3"),
    pytest.param([*FEBRILE, fio2("x", 30)], (2, 2, 2), id="fio2-30-no-device->oxygen-of-unknown-kind-2"),
    # grade 4: "life-threatening consequences; urgent intervention indicated" in both
    pytest.param(
        [*FEBRILE, dev("d", CPAP), fio2("x", 50)], (4, AtLeast(3), AtLeast(3)), id="CPAP-fio2-50->ctcae-at-least-3"
    ),
    pytest.param(
        [*FEBRILE, dev("d", CPAP), fio2("x", 30)], (4, AtLeast(2), AtLeast(3)), id="CPAP-fio2-30->v5-2-v6-3-at-least"
    ),
    pytest.param([*FEBRILE, dev("d", VENTILATOR), fio2("x", 60)], (4, 4, 4), id="invasive-ventilation->4"),
    pytest.param(
        [*LOW_BP, pressor("ne", NOREPINEPHRINE), dev("d", VENTILATOR)], (4, 4, 4), id="pressor+ventilation->4"
    ),
]


@pytest.mark.parametrize(("resources", "expected"), CASES)
def test_ctcae_versions_at_each_boundary(
    grading: Grading, resources: list[Resource], expected: tuple[Want, ...]
) -> None:
    results = grade_all(grading, resources)
    for system, want in zip(SYSTEMS, expected, strict=True):
        check(results[system], want)


def test_v6_says_where_low_flow_ends() -> None:
    """v6.0 names devices only: the 6 L/min boundary taken from ASTCT is written on the result."""
    grading = Grading(load_terminology(), load_units(), systems=SYSTEMS)
    result = grade_all(grading, [*FEBRILE, dev("d", NC), o2_flow("f", 6.5)])["CTCAE-6.0"]
    assert any("6 L/min" in a and "[choice]" in a for a in result.assumptions)
    assert "Observation/d" in result.references or "Observation/f" in result.references


def test_v6_cpap_names_what_is_undefined() -> None:
    grading = Grading(load_terminology(), load_units(), systems=SYSTEMS)
    result = grade_all(grading, [*FEBRILE, dev("d", CPAP)])["CTCAE-6.0"]
    assert any("not defined by CTCAE v6.0" in m for m in result.missing)


# -- the NCI text ------------------------------------------------------------------------------


def _nci_rows(heading: str) -> dict[int, str]:
    """Grade -> text from one section of docs/reference/ctcae.md (the NCI workbook rows, verbatim)."""
    section = NCI_ROWS.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    flat = re.sub(r"\s*\n\s*", " ", section)
    return {int(n): text for n, text in re.findall(r"Grade (\d): \"(.*?)\"", flat)}


def test_v5_rows_are_the_nci_text() -> None:
    assert _nci_rows("Cytokine release syndrome: CTCAE v5.0") == dict(ctcae.V5_ROWS)


def test_v6_rows_are_the_nci_text() -> None:
    changed = _nci_rows("Cytokine release syndrome: CTCAE v6.0")
    assert set(changed) == {2, 3}
    assert changed == {grade: ctcae.V6_ROWS[grade] for grade in (2, 3)}
    assert {g: ctcae.V6_ROWS[g] for g in (1, 4, 5)} == {g: ctcae.V5_ROWS[g] for g in (1, 4, 5)}


@pytest.mark.parametrize("system", ["CTCAE-5.0", "CTCAE-6.0"])
def test_citation_names_the_version_and_is_not_marked_unverified(system: str) -> None:
    grading = Grading(load_terminology(), load_units(), systems=SYSTEMS)
    result = grade_all(grading, FEBRILE)[system]
    assert system.split("-")[1] in result.citation
    assert "verif" not in result.citation.lower()


def test_v6_is_a_setting_choice() -> None:
    assert "CTCAE-6.0" in GRADERS
    assert Settings(systems=["ASTCT-2019", "CTCAE-6.0"]).systems == ["ASTCT-2019", "CTCAE-6.0"]
