"""Registry exports (issue 14): a Bulk Data export -> one row per episode per system.

The export is generated (``bench/generate_export.py``) with one patient per known course; every
column of every row is written out below, as a registry abstractor would fill CIBMTR form 4100 /
the EBMT day-100 form from the chart: infusion day 0, onset, worst grade and when, resolved or
not, treatments. Times are the generator's hours after each patient's infusion.
"""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from bench.generate_export import write_export
from cds_hooks.cli import main
from cds_hooks.registry.engines import LocalSettings, Summary, run_local
from cds_hooks.registry.export_reader import ExportError, classify, find_files
from cds_hooks.registry.fhir_out import episode_resources
from cds_hooks.registry.per_patient import PatientOutcome, RegistryOptions
from cds_hooks.registry.rows import COLUMNS, Cell, Row
from cds_hooks.registry.run import TerminalProgress
from cds_hooks.registry.validate import quadratic_weighted_kappa
from cds_hooks.registry.writers import csv_cell, open_writer

from spark_support import spark_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
CRS = "ASTCT-2019"
ICANS = "ASTCT-2019-ICANS"
AXICEL = "axicabtagene_ciloleucel"


def row(patient: str, system: str, **values: Cell) -> Row:
    """A full row: every column not named is unknown (None) or an empty list."""
    out: Row = dict.fromkeys(COLUMNS)
    out.update({"patient": f"Patient/{patient}", "system": system, "otherAnticytokine": [], "references": []})
    out.update(values)
    return out


def undecided(patient: str, system: str, infused: str) -> Row:
    return row(
        patient,
        system,
        status="indeterminate",
        therapy=AXICEL,
        therapyAt=infused,
        references=[f"MedicationAdministration/{patient}-cart-0"],
    )


EXPECTED: dict[str, list[Row]] = {
    "single-0": [
        row(
            "single-0",
            CRS,
            episode=1,
            status="graded",
            therapy=AXICEL,
            therapyAt="2025-03-01T10:00:00Z",
            onset="2025-03-03T10:00:00Z",  # first fever, 48 h
            onsetDay=2,
            maxGrade=3,  # fever + norepinephrine + low pressure + nasal cannula at 60 h
            maxGradeAt="2025-03-03T22:00:00Z",
            resolved=True,
            resolution="2025-03-04T04:00:00Z",  # norepinephrine ends and room air at 66 h
            durationHours=18.0,
            feverOnset="2025-03-03T10:00:00Z",
            hypotensionOnset="2025-03-03T22:00:00Z",
            vasopressorsMax=1,
            vasopressorStart="2025-03-03T22:00:00Z",
            lowFlowOxygenStart="2025-03-03T22:00:00Z",
            tocilizumabDoses=1,
            tocilizumabFirst="2025-03-03T16:00:00Z",
            corticosteroidFirst="2025-03-04T00:00:00Z",
            references=[
                "MedicationAdministration/single-0-cart-0",
                "Observation/single-0-temp-48",
                "Observation/single-0-temp-54",
                "MedicationAdministration/single-0-ne-60",
                "Observation/single-0-sbp-60",
                "Observation/single-0-o2dev-60",
                "MedicationAdministration/single-0-toci-54",
                "MedicationAdministration/single-0-dexa-62",
            ],
        ),
        row(
            "single-0",
            ICANS,
            episode=1,
            status="graded",
            therapy=AXICEL,
            therapyAt="2025-03-01T10:00:00Z",
            onset="2025-03-04T10:00:00Z",  # ICE 6 at 72 h
            onsetDay=3,
            maxGrade=2,
            maxGradeAt="2025-03-04T10:00:00Z",
            resolved=True,
            resolution="2025-03-04T22:00:00Z",  # ICE 9 at 84 h, then 10
            durationHours=12.0,
            vasopressorsMax=0,
            tocilizumabDoses=0,
            # The CAR-T infusion the therapy and onset-day columns rest on, then the ICE score.
            references=["MedicationAdministration/single-0-cart-0", "Observation/single-0-ice-72"],
        ),
    ],
    "recurrent-1": [
        *(
            row(
                "recurrent-1",
                CRS,
                episode=number,
                status="graded",
                therapy=AXICEL,
                therapyAt="2025-03-01T11:00:00Z",
                onset=onset,
                onsetDay=day,
                maxGrade=1,
                maxGradeAt=onset,
                resolved=True,
                resolution=resolution,
                durationHours=6.0,
                feverOnset=onset,
                vasopressorsMax=0,
                tocilizumabDoses=0,
                references=["MedicationAdministration/recurrent-1-cart-0", f"Observation/recurrent-1-temp-{hour}"],
            )
            for number, onset, day, resolution, hour in (
                (1, "2025-03-02T17:00:00Z", 1, "2025-03-02T23:00:00Z", 30),
                (2, "2025-03-06T11:00:00Z", 5, "2025-03-06T17:00:00Z", 120),
            )
        ),
        undecided("recurrent-1", ICANS, "2025-03-01T11:00:00Z"),
    ],
    "masked-2": [
        row(
            "masked-2",
            CRS,
            episode=1,
            status="graded",
            therapy=AXICEL,
            therapyAt="2025-03-01T12:00:00Z",
            onset="2025-03-03T06:00:00Z",
            onsetDay=2,
            maxGrade=2,  # afebrile after tocilizumab, low pressure at 60 h: same episode, grade 2
            maxGradeAt="2025-03-04T00:00:00Z",
            resolved=True,
            resolution="2025-03-04T00:00:00Z",
            durationHours=18.0,
            feverOnset="2025-03-03T06:00:00Z",
            hypotensionOnset="2025-03-04T00:00:00Z",
            vasopressorsMax=0,
            tocilizumabDoses=1,
            tocilizumabFirst="2025-03-03T12:00:00Z",
            references=[
                "MedicationAdministration/masked-2-cart-0",
                "Observation/masked-2-temp-42",
                "Observation/masked-2-temp-48",
                "Observation/masked-2-sbp-60",
                "MedicationAdministration/masked-2-toci-48",
            ],
        ),
        undecided("masked-2", ICANS, "2025-03-01T12:00:00Z"),
    ],
    "unresolved-3": [
        row(
            "unresolved-3",
            CRS,
            episode=1,
            status="graded",
            therapy=AXICEL,
            therapyAt="2025-03-01T13:00:00Z",
            onset="2025-03-08T01:00:00Z",
            onsetDay=7,
            maxGrade=1,
            maxGradeAt="2025-03-08T01:00:00Z",
            resolved=False,  # fever until the data end: never "resolved" for want of data
            feverOnset="2025-03-08T01:00:00Z",
            vasopressorsMax=0,
            tocilizumabDoses=0,
            references=["MedicationAdministration/unresolved-3-cart-0", "Observation/unresolved-3-temp-156"],
        ),
        undecided("unresolved-3", ICANS, "2025-03-01T13:00:00Z"),
    ],
    "no-crs-4": [
        row(
            "no-crs-4",
            system,
            episode=0,
            status="graded",
            therapy=AXICEL,
            therapyAt="2025-03-01T14:00:00Z",
            maxGrade=0,
            vasopressorsMax=0,
            tocilizumabDoses=0,
            references=["MedicationAdministration/no-crs-4-cart-0"],
        )
        for system in (CRS, ICANS)
    ],
    "no-temperatures-5": [undecided("no-temperatures-5", s, "2025-03-01T15:00:00Z") for s in (CRS, ICANS)],
}


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    write_export(out)
    return out


def run(export_dir: Path, workers: int = 1) -> tuple[list[Row], Summary]:
    rows: list[Row] = []

    def collect(outcome: PatientOutcome) -> None:
        rows.extend(outcome.rows)

    summary = run_local(find_files(export_dir), RegistryOptions(), collect, settings=LocalSettings(workers=workers))
    return rows, summary


@pytest.fixture(scope="module")
def local_rows(export: Path) -> list[Row]:
    return run(export)[0]


def by_patient(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for item in rows:
        out.setdefault(str(item["patient"]).removeprefix("Patient/"), []).append(item)
    return out


@pytest.mark.parametrize(
    "patient",
    [
        pytest.param("single-0", id="fever+pressor+oxygen+toci+steroid->crs-grade-3-resolved;ice-6->icans-grade-2"),
        pytest.param("recurrent-1", id="fever-resolved-then-fever-again->two-crs-episodes"),
        pytest.param("masked-2", id="masked-fever-after-toci+low-pressure->one-episode-grade-2"),
        pytest.param("unresolved-3", id="fever-until-end-of-data->unresolved"),
        pytest.param("no-crs-4", id="normal-temperatures->episode-0-grade-0"),
        pytest.param("no-temperatures-5", id="no-temperatures->indeterminate-never-grade-0"),
    ],
)
def test_every_column_of_every_row(local_rows: list[Row], patient: str) -> None:
    assert by_patient(local_rows)[patient] == EXPECTED[patient]


def test_every_patient_appears_once_per_system_in_patient_order(local_rows: list[Row]) -> None:
    patients = [str(r["patient"]) for r in local_rows]
    assert patients == sorted(patients)
    assert {(p, s) for p, s in ((r["patient"], r["system"]) for r in local_rows)} == {
        (f"Patient/{p}", s) for p in EXPECTED for s in (CRS, ICANS)
    }


def test_summary_counts_patients_grades_indeterminate_and_rejected_lines(export: Path) -> None:
    _, summary = run(export)
    assert summary.patients == 6
    assert dict(summary.episodes_by_grade[CRS]) == {1: 3, 2: 1, 3: 1}
    assert dict(summary.episodes_by_grade[ICANS]) == {2: 1}
    assert summary.indeterminate == {CRS: 1, ICANS: 4}
    assert summary.rejected == {"not JSON": 1, "names no patient": 1}


def test_worker_pool_gives_the_same_rows_as_one_process(export: Path, local_rows: list[Row]) -> None:
    assert run(export, workers=2)[0] == local_rows


def test_shared_medication_without_patient_is_joined_to_the_administrations(export: Path, tmp_path: Path) -> None:
    """single-0's CAR-T administration names ``Medication/axicel``, a Medication with no patient:
    without that file the product is unknown and no therapy (nor onset day) can be given."""
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    (copy / "Medication.ndjson").unlink()
    (copy / "manifest.json").unlink()
    rows = by_patient(run(copy)[0])["single-0"]
    assert rows[0]["therapy"] is None and rows[0]["onsetDay"] is None
    assert by_patient(run(export)[0])["single-0"][0]["therapy"] == AXICEL


def test_gzip_is_read_by_its_bytes_whatever_the_name(export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    (copy / "manifest.json").unlink()
    (copy / "vitals-part2.ndjson.gz").rename(copy / "vitals-part2")
    files = find_files(copy)
    assert [p.name for p in files.gzip] == ["vitals-part2"]
    assert run(copy)[0] == run(export)[0]


def test_manifest_naming_a_missing_file_is_refused(export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    (copy / "Patient.ndjson").unlink()
    with pytest.raises(ExportError, match=r"Patient\.ndjson"):
        find_files(copy)


# -- writers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        pytest.param(None, "", id="unknown->empty-cell"),
        pytest.param(True, "true", id="resolved-true->true"),
        pytest.param(False, "false", id="resolved-false->false"),
        pytest.param(["Observation/a", "Observation/b"], "Observation/a;Observation/b", id="references->semicolons"),
        pytest.param(18.0, "18.0", id="duration->number"),
        pytest.param(3, "3", id="grade->integer"),
    ],
)
def test_csv_cells(value: Cell, cell: str) -> None:
    assert csv_cell(value) == cell


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write(rows: list[Row], path: Path, fmt: str) -> None:
    writer = open_writer(path, fmt)  # type: ignore[arg-type]
    for item in rows:
        writer.write(item)
    writer.close()


def test_the_three_formats_carry_the_same_rows(local_rows: list[Row], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    for fmt in ("csv", "ndjson", "parquet"):
        _write(local_rows, tmp_path / f"rows.{fmt}", fmt)
    as_csv = _read_csv(tmp_path / "rows.csv")
    assert list(as_csv[0]) == list(COLUMNS)
    assert as_csv == [{c: csv_cell(r[c]) for c in COLUMNS} for r in local_rows]
    as_ndjson = [orjson.loads(line) for line in (tmp_path / "rows.ndjson").read_bytes().splitlines()]
    assert as_ndjson == local_rows
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.column_names == list(COLUMNS)
    assert str(table.schema.field("onset").type) == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("maxGrade").type) == "int64"
    from_parquet = table.to_pylist()
    for got, want in zip(from_parquet, local_rows, strict=True):
        for column in COLUMNS:
            value = got[column]
            if hasattr(value, "isoformat"):
                value = value.isoformat().replace("+00:00", "Z")
            assert value == want[column], column


# -- command line -----------------------------------------------------------------------------


def test_cli_writes_rows_and_prints_the_summary(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rows.csv"
    assert main(["episodes", str(export), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "patients: 6" in printed
    assert "ASTCT-2019: 5 episodes (grade 1: 3, grade 2: 1, grade 3: 1)" in printed
    assert "rejected: 1 x not JSON" in printed
    assert len(_read_csv(out)) == sum(len(r) for r in EXPECTED.values())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["episodes", "{missing}", "--out", "{out}"], "is not a folder", id="no-such-export->exit-2"),
        pytest.param(
            ["episodes", "{export}", "--out", "{out}", "--systems", "NOPE-1"],
            "unknown grading systems",
            id="unknown-system->exit-2",
        ),
        pytest.param(
            ["episodes", "{export}", "--out", "{out}", "--workers", "0"], "--workers", id="zero-workers->exit-2"
        ),
    ],
)
def test_cli_refuses_bad_input_with_a_reason(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    values = {"missing": str(tmp_path / "nope"), "out": str(tmp_path / "rows.csv"), "export": str(export)}
    assert main([a.format(**values) for a in arguments]) == 2
    assert message in capsys.readouterr().err


def test_shipped_sample_is_the_generators_output(tmp_path: Path) -> None:
    shipped = ROOT / "examples" / "bulk-export"
    write_export(tmp_path)

    def content(path: Path) -> bytes:
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.endswith(".gz") else data

    names = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(p.name for p in shipped.iterdir() if p.name != "README.md") == names
    for name in names:
        assert content(shipped / name) == content(tmp_path / name), name


# -- classify and the local engine's reading place lines alike -------------------------------------


def _placed_by_python(line: str) -> tuple[str, str, str | None]:
    placed = classify(line)
    if placed.patient is not None:
        return ("patient", placed.patient, placed.medication_reference)
    if placed.medication is not None:
        return ("medication", placed.medication, None)
    if placed.not_read is not None:
        return ("not_read", placed.not_read, None)
    return ("rejected", str(placed.rejected), None)


def _obs(**fields: object) -> str:
    return orjson.dumps({"resourceType": "Observation", "id": "o1", "status": "final", **fields}).decode()


LINES = [
    pytest.param('{"resourceType": "Patient", "id": "p1"}', ("patient", "p1", None), id="patient->its-id"),
    pytest.param(_obs(subject={"reference": "Patient/p1"}), ("patient", "p1", None), id="subject-relative->patient"),
    pytest.param(
        _obs(subject={"reference": "https://ehr.example.org/fhir/Patient/p1"}),
        ("patient", "p1", None),
        id="subject-absolute-url->patient",
    ),
    pytest.param(
        _obs(subject={"reference": "Group/g1"}),
        ("rejected", "subject is not a Patient", None),
        id="group-subject->rejected",
    ),
    pytest.param(_obs(), ("rejected", "names no patient", None), id="no-subject->rejected"),
    pytest.param(
        _obs(subject={"reference": ""}), ("rejected", "names no patient", None), id="empty-reference->rejected"
    ),
    pytest.param(
        '{"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}}',
        ("not_read", "Encounter", None),
        id="type-not-read->counted-not-graded",
    ),
    pytest.param(
        '{"resourceType": "Medication", "id": "m1"}',
        ("medication", "Medication/m1", None),
        id="medication-without-patient->shared",
    ),
    pytest.param(
        orjson.dumps(
            {
                "resourceType": "MedicationAdministration",
                "id": "a1",
                "subject": {"reference": "Patient/p1"},
                "medicationReference": {"reference": "https://ehr.example.org/fhir/Medication/m1"},
            }
        ).decode(),
        ("patient", "p1", "Medication/m1"),
        id="administration->patient+medication-reference",
    ),
    pytest.param(
        '{"resourceType": "Observation", "id": ', ("rejected", "not JSON", None), id="truncated-line->not-json"
    ),
    pytest.param(
        '[{"resourceType": "Patient", "id": "p1"}]', ("rejected", "not JSON", None), id="json-array->not-an-object"
    ),
    pytest.param('{"resourceType": "Patient"}', ("rejected", "no resourceType or id", None), id="no-id->rejected"),
    pytest.param(
        '{"resourceType": "Patient", "id": 7}', ("rejected", "no resourceType or id", None), id="numeric-id->rejected"
    ),
]


def _placed_by_engine(line: str, folder: Path) -> tuple[str, str, str | None]:
    """Where the local engine's reading puts the line: a bucket, the Medications, or a count."""
    from cds_hooks.registry.file_lines import Piece
    from cds_hooks.registry.partition import PlaceTask, bucket_file, medication_file, place_unit, records

    (folder / "x.ndjson").write_text(line + "\n")
    counts = place_unit(PlaceTask((Piece(folder / "x.ndjson"),), folder, 0, 1))
    assert counts.lines == 1
    if counts.bucket_bytes[0]:
        [(header, raw)] = list(records([bucket_file(folder, 0, 0)]))
        assert raw == line.encode()
        patient, reference = orjson.loads(header)
        return ("patient", patient, reference)
    if counts.medication_bytes[0]:
        [(header, raw)] = list(records([medication_file(folder, 0, 0)]))
        assert raw == line.encode()
        return ("medication", orjson.loads(header), None)
    if counts.not_read:
        [kind] = counts.not_read
        return ("not_read", kind, None)
    [reason] = counts.rejected
    return ("rejected", reason, None)


@pytest.mark.parametrize(("line", "expected"), LINES)
def test_python_and_engine_place_a_line_alike(line: str, expected: tuple[str, str, str | None], tmp_path: Path) -> None:
    assert _placed_by_engine(line, tmp_path) == expected
    assert _placed_by_python(line) == expected


# -- validation against a site's abstraction -----------------------------------------------------


@pytest.mark.parametrize(
    ("matrix", "kappa"),
    [
        # rows (expected) 5,4,1; columns (computed) 4,4,2; n 10; two 1-grade misses.
        # observed sum(w*O)/n = 2/10; chance sum(w*r*c)/n^2 = 104/100; kappa = 1 - 0.2/1.04 = 21/26
        pytest.param(
            [[4, 1, 0, 0, 0], [0, 3, 1, 0, 0], [0, 0, 1, 0, 0], [0] * 5, [0] * 5], 21 / 26, id="two-near-misses->21/26"
        ),
        pytest.param([[3, 0, 0, 0, 0], [0, 2, 0, 0, 0], [0] * 5, [0, 0, 0, 1, 0], [0] * 5], 1.0, id="all-agree->1"),
        pytest.param([[6, 0, 0, 0, 0], [0] * 5, [0] * 5, [0] * 5, [0] * 5], None, id="one-grade-only->undefined"),
        # expected all 0, computed all 4 vs the reverse: maximal disagreement
        pytest.param([[0, 0, 0, 0, 1], [0] * 5, [0] * 5, [0] * 5, [1, 0, 0, 0, 0]], -1.0, id="0-vs-4-both-ways->-1"),
    ],
)
def test_quadratic_weighted_kappa_by_hand(matrix: list[list[int]], kappa: float | None) -> None:
    assert quadratic_weighted_kappa(matrix) == (pytest.approx(kappa) if kappa is not None else None)


def test_validate_reports_agreement_kappa_disagreements_and_what_it_could_not_compare(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = tmp_path / "abstracted.csv"
    expected.write_text(
        "patient,maxGrade,onset\n"
        "single-0,3,2025-03-03\n"
        "Patient/recurrent-1,2,2025-03-02\n"
        "masked-2,2,\n"
        "unresolved-3,1,2025-03-09\n"
        "no-crs-4,0,\n"
        "no-temperatures-5,0,\n"
        "ghost-9,1,\n"
    )
    assert main(["validate", str(export), "--expected", str(expected), "--json", "--workers", "1"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    # pairs (expected, computed): (3,3) (2,1) (2,2) (1,1) (0,0); no-temperatures-5 is indeterminate
    # r = [1,1,2,1,0], c = [1,2,1,1,0]: observed 1/5, chance 53/25, kappa = 1 - 0.2/2.12 = 48/53
    assert report["n"] == 5
    assert report["agreement"] == pytest.approx(0.8)
    assert report["kappa"] == pytest.approx(48 / 53)
    assert report["confusion"]["matrix"][2] == [0, 1, 1, 0, 0]
    assert report["disagreements"] == [
        {
            "patient": "Patient/recurrent-1",
            "expected": 2,
            "computed": 1,
            "references": ["MedicationAdministration/recurrent-1-cart-0", "Observation/recurrent-1-temp-30"],
        }
    ]
    assert [d["patient"] for d in report["indeterminate"]] == ["Patient/no-temperatures-5"]
    assert report["notInExport"] == ["Patient/ghost-9"]
    assert report["onset"] == {"compared": 3, "sameDay": 2}


def test_validate_text_report_and_bad_expected_file(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = tmp_path / "abstracted.csv"
    expected.write_text("patient,maxGrade\nsingle-0,3\nmasked-2,2\n")
    assert main(["validate", str(export), "--expected", str(expected), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "ASTCT-2019: n 2, exact agreement 1.000" in text
    expected.write_text("patient,grade\nsingle-0,3\n")
    assert main(["validate", str(export), "--expected", str(expected), "--workers", "1"]) == 2
    assert "must name patient and maxGrade" in capsys.readouterr().err


# -- FHIR out ------------------------------------------------------------------------------------


def test_fhir_out_condition_and_observation_per_episode_validate_with_r4b(local_rows: list[Row]) -> None:
    from fhir.resources.R4B.condition import Condition
    from fhir.resources.R4B.observation import Observation

    resources = {(str(r["patient"]), str(r["system"]), r["episode"]): episode_resources(r) for r in local_rows}
    for pair in resources.values():
        for resource in pair:
            model = Condition if resource["resourceType"] == "Condition" else Observation
            model.model_validate(resource)
    condition, observation = resources[("Patient/single-0", CRS, 1)]
    assert condition["code"]["coding"][0]["code"] == "D89.833"
    assert condition["abatementDateTime"] == "2025-03-04T04:00:00Z"
    assert condition["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert observation["valueInteger"] == 3
    assert observation["focus"] == [{"reference": f"Condition/{condition['id']}"}]
    assert all(d["reference"].startswith("Observation/") for d in observation["derivedFrom"])
    assert {"reference": "MedicationAdministration/single-0-ne-60"} in condition["evidence"][0]["detail"]
    unresolved, _ = resources[("Patient/unresolved-3", CRS, 1)]
    assert unresolved["code"]["coding"][0]["code"] == "D89.831"
    assert unresolved["clinicalStatus"]["coding"][0]["code"] == "active"
    assert "abatementDateTime" not in unresolved
    assert resources[("Patient/single-0", ICANS, 1)][0]["code"]["coding"][0]["code"] == "G92.02"
    assert resources[("Patient/no-crs-4", CRS, 0)] == []
    assert resources[("Patient/no-temperatures-5", CRS, None)] == []


def test_fhir_out_from_the_command_line(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "fhir"
    assert (
        main(
            ["episodes", str(export), "--out", str(tmp_path / "rows.ndjson"), "--fhir-out", str(out), "--workers", "1"]
        )
        == 0
    )
    conditions = (out / "Condition.ndjson").read_bytes().splitlines()
    observations = (out / "Observation.ndjson").read_bytes().splitlines()
    assert len(conditions) == len(observations) == 6  # five CRS episodes and one ICANS episode


def test_other_crs_systems_get_their_own_rows_over_the_same_episodes(export: Path, tmp_path: Path) -> None:
    """LEE-2014 beside ASTCT: same onsets and resolutions, Lee's own grade; no FHIR resources
    for it (the ICD-10-CM grade codes follow ASTCT)."""
    out = tmp_path / "rows.ndjson"
    assert main(["episodes", str(export), "--out", str(out), "--systems", "ASTCT-2019,LEE-2014", "--workers", "1"]) == 0
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {r["system"] for r in rows} == {CRS, "LEE-2014"}
    astct = {(r["patient"], r["episode"]): r for r in rows if r["system"] == CRS}
    lee = {(r["patient"], r["episode"]): r for r in rows if r["system"] == "LEE-2014"}
    assert astct.keys() == lee.keys()
    for key, row_lee in lee.items():
        assert (row_lee["onset"], row_lee["resolution"]) == (astct[key]["onset"], astct[key]["resolution"])
    assert episode_resources(lee[("Patient/masked-2", 1)]) == []


def test_cli_start_up_does_not_import_the_registry_stack() -> None:
    """``crs-cds`` starts fast: pyarrow and pyspark load only inside ``episodes``/``validate``."""
    import subprocess
    import sys

    code = (
        "import sys, cds_hooks.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'pyarrow', 'pyspark'} "
        "or m.startswith('cds_hooks.registry')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_a_small_memory_limit_is_honoured_with_the_same_rows(export: Path, local_rows: list[Row]) -> None:
    """128 MB (the default is most of the machine's memory): the reader's buffers fit in it."""
    rows: list[Row] = []
    run_local(
        find_files(export),
        RegistryOptions(),
        lambda outcome: rows.extend(outcome.rows),
        settings=LocalSettings(workers=1, memory_limit="128MB"),
    )
    assert rows == local_rows


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("done", "total", "shown"),
    [
        pytest.param(3, 6, "[###############...............] patients 3/6", id="half-done->half-bar"),
        pytest.param(6, 6, "[##############################] patients 6/6", id="all-done->full-bar"),
        pytest.param(4, 0, "patients 4", id="total-unknown(spark)->count-only"),
    ],
)
def test_progress_bar_on_a_terminal(done: int, total: int, shown: str) -> None:
    stream = _Terminal()
    progress = TerminalProgress(stream)
    assert progress.enabled
    progress(done, total)
    progress.finish()
    assert stream.getvalue() == f"\r{shown}\n"


def test_no_progress_bar_when_not_a_terminal() -> None:
    assert not TerminalProgress(io.StringIO()).enabled


@pytest.mark.parametrize(
    ("java", "ci", "skipped"),
    [
        pytest.param("/usr/bin/java", "", False, id="java->runs"),
        pytest.param(None, "", True, id="no-java-no-ci->skipped-with-reason"),
        pytest.param(None, "true", False, id="no-java-on-ci->runs-and-fails-never-skips"),
        pytest.param(None, "TRUE", False, id="no-java-CI=TRUE->never-skips"),
    ],
)
def test_spark_is_skipped_only_without_java_outside_ci(java: str | None, ci: str, skipped: bool) -> None:
    reason = spark_unavailable_reason(lambda _: java, {"CI": ci} if ci else {})
    assert (reason is not None) == skipped


def test_a_line_that_is_not_utf8_is_rejected_not_the_run(export: Path, tmp_path: Path, local_rows: list[Row]) -> None:
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    (copy / "manifest.json").unlink()
    (copy / "Latin1.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "p9", "name": [{"text": "Jos\xe9"}]}\n')
    rows, summary = run(copy)
    assert rows == local_rows  # p9 cannot be named: its only line is unreadable
    assert summary.rejected["not UTF-8"] == 1


def test_spark_placing_rejects_a_line_that_is_not_utf8() -> None:
    from cds_hooks.registry.engines import _placed_pairs

    assert _placed_pairs(b'{"resourceType": "Patient", "id": "Jos\xe9"}') == [("rejected", ("not UTF-8", None, ""))]
    assert _placed_pairs(b'{"resourceType": "Patient", "id": "p1"}')[0][:1] == ("patient",)


def test_a_corrupt_gzip_file_stops_the_run_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Observation.ndjson.gz").write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    assert main(["episodes", str(tmp_path), "--out", str(tmp_path / "rows.csv"), "--workers", "1"]) == 2
    assert "the export cannot be read" in capsys.readouterr().err


def test_rows_written_into_the_export_folder_are_not_read_back(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a manifest every file is read: the rows file being written is not one of them."""
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    (copy / "manifest.json").unlink()
    out = copy / "rows.parquet"
    for _ in range(2):
        assert main(["episodes", str(copy), "--out", str(out), "--workers", "1", "--json"]) == 0
    summary = orjson.loads(capsys.readouterr().out.split("\n}\n")[-2] + "\n}")
    assert summary["rejected"] == {"not JSON": 1, "names no patient": 1}
    assert summary["rows"] == 13


def test_a_patient_that_fails_to_grade_gets_indeterminate_rows_and_the_run_goes_on(
    export: Path, local_rows: list[Row], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cds_hooks.registry import per_patient

    original = per_patient.PatientGrader.grade

    def grade(self: per_patient.PatientGrader, patient_id: str, lines: Any) -> PatientOutcome:
        if patient_id == "masked-2":
            raise ValueError("a bug")
        return original(self, patient_id, lines)

    monkeypatch.setattr(per_patient.PatientGrader, "grade", grade)
    rows, summary = run(export)
    masked = by_patient(rows)["masked-2"]
    assert [(r["system"], r["status"], r["maxGrade"], r["episode"]) for r in masked] == [
        (CRS, "indeterminate", None, None),
        (ICANS, "indeterminate", None, None),
    ]
    assert [r for r in rows if r["patient"] != "Patient/masked-2"] == [
        r for r in local_rows if r["patient"] != "Patient/masked-2"
    ]
    assert summary.rejected["patient could not be graded (internal error ValueError): rows indeterminate"] == 1


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        pytest.param(
            ["--out", "{export}/rows.csv", "--fhir-out", "{export}"], "--fhir-out", id="fhir-out-is-export->2"
        ),
        pytest.param(["--out", "{export}/Observation.000.ndjson"], "--out", id="out-is-an-input-file->2"),
        pytest.param(["--out", "{export}/Patient.ndjson", "--with-manifest"], "--out", id="out-listed-in-manifest->2"),
        pytest.param(["--out", "{export}/long-first-line.ndjson"], "--out", id="out-is-data-with-a-long-first-line->2"),
        pytest.param(["--out", "{export}/damaged.ndjson"], "--out", id="out-is-data-with-a-damaged-first-line->2"),
    ],
)
def test_outputs_that_would_overwrite_the_export_are_refused(
    export: Path, tmp_path: Path, arguments: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing is opened for writing before the check: every file of the export is left as it was."""
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    if "--with-manifest" in arguments:
        arguments = [a for a in arguments if a != "--with-manifest"]
    else:
        (copy / "manifest.json").unlink()
    long_note = "x" * 70_000  # a first resource longer than any peek at the file's head
    (copy / "long-first-line.ndjson").write_text(
        f'{{"resourceType":"Observation","id":"o1","note":[{{"text":"{long_note}"}}]}}\n'
    )
    (copy / "damaged.ndjson").write_text('{"resourceType":"Observation","id":\n{"resourceType":"Patient","id":"p"}\n')
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    argv = ["episodes", str(copy), *(a.format(export=copy) for a in arguments), "--workers", "1"]
    assert main(argv) == 2
    assert says in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


@pytest.mark.parametrize(("name", "lines"), [("rows.ndjson", 13), ("rows.csv", 14)], ids=["ndjson", "csv"])
def test_a_previous_rows_file_in_the_export_folder_is_replaced(
    export: Path, tmp_path: Path, name: str, lines: int
) -> None:
    """An earlier run's rows are recognised by how they begin: a rerun may replace them."""
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    (copy / "manifest.json").unlink()
    out = copy / name
    for _ in range(2):
        assert main(["episodes", str(copy), "--out", str(out), "--workers", "1"]) == 0
    assert len(out.read_bytes().splitlines()) == lines
