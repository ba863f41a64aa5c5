"""Registry exports (issue 14): a Bulk Data export -> one row per episode per system.

The export is generated (``bench/generate_export.py``) with one patient per known course; every
column of every row is written out below, as a registry abstractor would fill CIBMTR form 4100 /
the EBMT day-100 form from the chart: infusion day 0, onset, worst grade and when, resolved or
not, treatments. Times are the generator's hours after each patient's infusion.
"""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import orjson
import pytest
from bench.generate_export import write_export
from cds_hooks.cli import main
from cds_hooks.registry.engines import LocalSettings, Summary, run_local
from cds_hooks.registry.export_reader import ExportError, find_files
from cds_hooks.registry.per_patient import PatientOutcome, RegistryOptions
from cds_hooks.registry.rows import COLUMNS, Cell, Row
from cds_hooks.registry.writers import csv_cell, open_writer

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
            references=["Observation/single-0-ice-72"],
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
            ["episodes", "{export}", "--out", "{out}", "--systems", "CTCAE-5.0"],
            "episodes are defined for",
            id="system-without-episode-rules->exit-2",
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
