"""The local engine's buckets (issue 14): however the export is cut (files, byte ranges, buckets,
workers), every patient is graded once, with all of its lines and each shared Medication it
references once, and the rows come out in patient order; faults end the run with a reason and
leave no temporary files.
"""

from __future__ import annotations

import gzip
import os
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from bench.generate_export import write_export
from cds_hooks.registry import bucket_grading, engines
from cds_hooks.registry.engines import LocalSettings, Summary, memory_bytes, run_local
from cds_hooks.registry.export_reader import MAX_LINE_BYTES, ExportError, find_files
from cds_hooks.registry.file_lines import BOM, FileLines, Piece
from cds_hooks.registry.partition import plan_units, records
from cds_hooks.registry.per_patient import PatientOutcome, RegistryOptions
from cds_hooks.registry.rows import Row
from hypothesis import given, settings
from hypothesis import strategies as st

WHOLE = LocalSettings(workers=1)


def run(export: Path, local: LocalSettings = WHOLE) -> tuple[list[Row], Summary, list[str]]:
    rows: list[Row] = []
    patients: list[str] = []

    def collect(outcome: PatientOutcome) -> None:
        rows.extend(outcome.rows)
        patients.append(outcome.patient)

    summary = run_local(find_files(export), RegistryOptions(), collect, settings=local)
    return rows, summary, patients


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    write_export(out, patients=12)
    return out


@pytest.fixture(scope="module")
def reference(export: Path) -> tuple[list[Row], Summary, list[str]]:
    return run(export)


def _scatter(export: Path, out: Path, files: int) -> None:
    """The same lines dealt round-robin over ``files`` files, every other one gzip: each patient's
    lines end up spread over many files, plain and gzip mixed."""
    out.mkdir()
    lines = [
        line
        for path in sorted(export.iterdir())
        if path.name != "manifest.json"
        for line in (gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()).split(
            b"\n"
        )
        if line
    ]
    for i in range(files):
        data = b"\n".join(lines[i::files]) + b"\n"
        if i % 2:
            (out / f"part-{i}.ndjson.gz").write_bytes(gzip.compress(data))
        else:
            (out / f"part-{i}.ndjson").write_bytes(data)


@pytest.mark.parametrize(
    "local",
    [
        pytest.param(LocalSettings(workers=1, bucket_bytes=1), id="one-worker-one-bucket-per-patient-at-most"),
        pytest.param(LocalSettings(workers=2, bucket_bytes=2_000), id="two-workers-small-buckets"),
        pytest.param(LocalSettings(workers=2, bucket_bytes=2_000, start_method="forkserver"), id="fork-server-workers"),
    ],
)
def test_lines_scattered_over_files_and_buckets_give_the_same_rows(
    export: Path,
    reference: tuple[list[Row], Summary, list[str]],
    tmp_path: Path,
    local: LocalSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engines, "MIN_UNIT_BYTES", 10_000)  # many units: workers and parent share them
    _scatter(export, tmp_path / "scattered", files=7)
    rows, summary, patients = run(tmp_path / "scattered", local)
    assert rows == reference[0]
    assert summary.to_json() == reference[1].to_json()
    assert patients == reference[2]


def _patient(pid: str) -> bytes:
    return orjson.dumps({"resourceType": "Patient", "id": pid})


IDS = ["Z", "a", "b", "é", "10", "9", "p-1", "p-10", "p-2", "日本", "Ω", "~"] + [f"x{i}" for i in range(60)]


@pytest.mark.parametrize("workers", [pytest.param(1, id="one-worker"), pytest.param(2, id="two-workers")])
def test_every_patient_once_in_code_point_order(tmp_path: Path, workers: int) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(b"\n".join(_patient(p) for p in IDS[::2]) + b"\n")
    (tmp_path / "Patient-2.ndjson.gz").write_bytes(gzip.compress(b"\n".join(_patient(p) for p in IDS[1::2])))
    _, summary, patients = run(tmp_path, LocalSettings(workers=workers, bucket_bytes=100))
    assert patients == [f"Patient/{p}" for p in sorted(IDS)]
    assert summary.patients == len(IDS)


def _administration(rid: str, patient: str, medication: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "MedicationAdministration",
            "id": rid,
            "status": "completed",
            "subject": {"reference": f"Patient/{patient}"},
            "medicationReference": {"reference": f"Medication/{medication}"},
            "effectiveDateTime": "2025-03-01T10:00:00Z",
        }
    )


def test_shared_medication_is_joined_once_to_each_patient_that_references_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two administrations of one Medication, the Medication line twice in two files, another
    Medication referenced by nobody: the patient gets the one line once; the others none."""
    axicel = orjson.dumps({"resourceType": "Medication", "id": "axicel"})
    other = orjson.dumps({"resourceType": "Medication", "id": "other"})
    (tmp_path / "Medication.ndjson").write_bytes(axicel + b"\n" + other + b"\n")
    (tmp_path / "Medication-2.ndjson").write_bytes(axicel + b"\n")
    (tmp_path / "Patient.ndjson").write_bytes(_patient("p1") + b"\n" + _patient("p2") + b"\n")
    (tmp_path / "MedicationAdministration.ndjson").write_bytes(
        _administration("a1", "p1", "axicel") + b"\n" + _administration("a2", "p1", "axicel") + b"\n"
    )
    seen: dict[str, list[bytes]] = {}

    def grade(options: RegistryOptions, patient: str, lines: Sequence[str | bytes]) -> PatientOutcome:
        seen[patient] = [line if isinstance(line, bytes) else line.encode() for line in lines]
        return PatientOutcome(f"Patient/{patient}", [])

    monkeypatch.setattr(bucket_grading, "grade_patient", grade)
    run(tmp_path, LocalSettings(workers=1, bucket_bytes=1))
    p1 = [_patient("p1"), _administration("a1", "p1", "axicel"), _administration("a2", "p1", "axicel"), axicel]
    assert Counter(seen["p1"]) == Counter(p1)
    assert seen["p2"] == [_patient("p2")]


@pytest.mark.parametrize(
    ("content", "rejected", "lines"),
    [
        pytest.param(b"\n\n   \n\t\r\n" + _patient("p1") + b"\r\n", {}, 1, id="blank-lines->not-lines-not-rejected"),
        pytest.param(b"\xef\xbb\xbf" + _patient("p1") + b"\n", {}, 1, id="byte-order-mark->dropped"),
        pytest.param(_patient("p1") + b"\r" + _patient("p2"), {}, 2, id="cr-ends-a-line;last-line-without-break"),
        pytest.param(b'{"resourceType": "Patient", "id": "Jos\xe9"}\n', {"not UTF-8": 1}, 1, id="latin-1->not-utf8"),
        pytest.param(b"[1, 2]\n{oops\n", {"not JSON": 2}, 2, id="not-an-object,not-json->rejected"),
    ],
)
def test_line_faults_are_counted_not_fatal(
    tmp_path: Path, content: bytes, rejected: dict[str, int], lines: int
) -> None:
    (tmp_path / "x.ndjson").write_bytes(content)
    _, summary, _ = run(tmp_path)
    assert dict(summary.rejected) == rejected
    assert summary.lines == lines


def test_a_line_over_16_mb_is_rejected_and_the_next_line_read(tmp_path: Path) -> None:
    at_limit = _patient("fits") + b" " * (MAX_LINE_BYTES - len(_patient("fits")))  # JSON may end in spaces
    too_long = _patient("huge") + b" " * (MAX_LINE_BYTES + 1 - len(_patient("huge")))
    (tmp_path / "x.ndjson").write_bytes(at_limit + b"\n" + too_long + b"\n" + _patient("after") + b"\n")
    _, summary, patients = run(tmp_path)
    assert patients == ["Patient/after", "Patient/fits"]
    assert summary.rejected == {"line longer than 16 MB": 1}
    assert summary.lines == 3


@pytest.mark.parametrize("workers", [pytest.param(1, id="one-worker"), pytest.param(2, id="two-workers")])
def test_a_corrupt_gzip_file_stops_the_run_and_leaves_no_files(tmp_path: Path, workers: int) -> None:
    export, work = tmp_path / "export", tmp_path / "work"
    export.mkdir()
    work.mkdir()
    (export / "Patient.ndjson").write_bytes(_patient("p1") + b"\n")
    good = gzip.compress(b"\n".join(_patient(f"g{i}") for i in range(2000)))
    (export / "Observation.ndjson.gz").write_bytes(good[: len(good) // 2])  # cut short
    with pytest.raises(ExportError, match=r"the export cannot be read: Observation\.ndjson\.gz"):
        run(export, LocalSettings(workers=workers, work_dir=work))
    assert list(work.iterdir()) == []


def test_a_worker_that_dies_fails_the_run_with_a_reason_and_leaves_no_files(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cds_hooks.registry import per_patient

    original = per_patient.PatientGrader.grade

    def grade(self: per_patient.PatientGrader, patient_id: str, lines: Any) -> PatientOutcome:
        if patient_id == "masked-2":
            os._exit(9)  # as the kernel's out-of-memory killer would end it
        return original(self, patient_id, lines)

    monkeypatch.setattr(per_patient.PatientGrader, "grade", grade)  # forked workers inherit it
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ExportError, match="a worker process stopped"):
        run(export, LocalSettings(workers=2, work_dir=work, start_method="fork"))
    assert list(work.iterdir()) == []


def test_a_finished_run_leaves_no_files(export: Path, tmp_path: Path) -> None:
    run(export, LocalSettings(workers=2, work_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "size"),
    [
        pytest.param("2GB", 2 * 10**9, id="GB"),
        pytest.param("128MB", 128 * 10**6, id="MB"),
        pytest.param("1.5 GiB", 3 * 2**29, id="GiB-with-space"),
        pytest.param("4096", 4096, id="bytes"),
    ],
)
def test_memory_limit_sizes(text: str, size: int) -> None:
    assert memory_bytes(text) == size


@pytest.mark.parametrize("text", [pytest.param("lots", id="words"), pytest.param("2 parsecs", id="unknown-unit")])
def test_a_memory_limit_that_is_no_size_is_refused(text: str) -> None:
    with pytest.raises(ExportError, match="--memory-limit"):
        memory_bytes(text)


def test_plan_cuts_large_plain_files_packs_small_ones_and_keeps_gzip_whole(tmp_path: Path) -> None:
    (tmp_path / "big.ndjson").write_bytes(b"x" * 1000)
    (tmp_path / "a.ndjson").write_bytes(b"y" * 100)
    (tmp_path / "b.ndjson").write_bytes(b"y" * 100)
    (tmp_path / "c.ndjson.gz").write_bytes(gzip.compress(b"z" * 3000))
    units = plan_units(find_files(tmp_path), 300)
    ranges = [(p.path.name, p.start, p.end) for unit in units for p in unit]
    assert ranges == [
        ("a.ndjson", 0, None),  # the largest unit first: the small files packed with the gzip file
        ("b.ndjson", 0, None),
        ("c.ndjson.gz", 0, None),
        ("big.ndjson", 0, 250),
        ("big.ndjson", 250, 500),
        ("big.ndjson", 500, 750),
        ("big.ndjson", 750, 1000),
    ]
    assert [len(unit) for unit in units] == [3, 1, 1, 1, 1]


_LINE = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_LINE, max_size=12),
    breaks=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=12, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=5),
    block=st.integers(min_value=1, max_value=9),
    limit=st.integers(min_value=1, max_value=13),
)
def test_byte_ranges_read_every_line_once(
    *,
    lines: list[bytes],
    breaks: list[bytes],
    cuts: list[int],
    block: int,
    limit: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Cut anywhere, read in blocks of any size: the pieces' lines are the file's lines, each
    once, less those longer than the limit, which are counted."""
    path = tmp_path_factory.mktemp("ranges") / "x.ndjson"
    data = b"".join(line + brk for line, brk in zip(lines, breaks, strict=False))
    path.write_bytes(data)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    read: list[bytes] = []
    too_long = 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cds_hooks.registry.file_lines.READ_BYTES", block)
        patch.setattr("cds_hooks.registry.file_lines.MAX_LINE_BYTES", limit)
        for start, end in pairwise(bounds):
            reader = FileLines(Piece(path, False, start, end))
            read += [line for found in reader for line in found if line]
            too_long += reader.too_long
    expected = data.removeprefix(BOM).splitlines()
    assert read == [line for line in expected if line and len(line) <= limit]
    assert too_long == sum(len(line) > limit for line in expected)


@pytest.mark.parametrize("cut", [1, 2, 3, 4], ids=lambda c: f"cut-at-byte-{c}")
def test_a_cut_inside_the_byte_order_mark_loses_no_line(cut: int, tmp_path: Path) -> None:
    """The first line starts after the mark: a range starting inside or right after the mark owns it."""
    first = b'{"resourceType":"Patient","id":"p1"}'
    second = b'{"resourceType":"Patient","id":"p2"}'
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(BOM + first + b"\n" + second + b"\n")
    size = path.stat().st_size
    read = [
        line
        for start, end in ((0, cut), (cut, size))
        for found in FileLines(Piece(path, False, start, end))
        for line in found
        if line
    ]
    assert read == [first, second]


def test_a_manifest_naming_one_file_twice_reads_it_once(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_bytes(b'{"resourceType":"Patient","id":"p1"}\n')
    manifest = {"output": [{"url": "https://fhir.example.org/out/Patient.ndjson"}, {"url": "https://x/Patient"}]}
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    assert find_files(tmp_path).all == (tmp_path / "Patient.ndjson",)


def test_a_damaged_spill_file_stops_the_run(tmp_path: Path) -> None:
    """A record cut short (header without its line) is never read out of step."""
    spill = tmp_path / "bucket-00000-00000.spill"
    spill.write_bytes(b'["p1",null]\n{"resourceType":"Patient","id":"p1"}\n["p2",null]\n')
    with pytest.raises(ExportError, match="damaged"):
        list(records([spill]))
