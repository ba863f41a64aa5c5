"""Episodes benchmark (issue 14): the whole ``crs-cds episodes`` run against the floor.

The floor is what no engine can beat: one process reading every NDJSON line of the export
(gunzipping where needed) and parsing it with orjson. The episodes run is the command a site
runs (``crs-cds episodes EXPORT --out rows.csv``, default engine, both cores), start-up included,
in its own process. Reported: both times and the ratio floor / episodes (the issue's goal:
>= 0.25, i.e. the whole run costs at most four times the floor). One measurement each, no loop:
the machine is shared; run it when it is quiet and read the figures as indications.

To show where the rest goes, it also reports the CPU that grading alone costs in one process
(every patient's lines grouped in memory first, then ``grade_patient`` on each, as a worker does):
the part of the run no engine removes, per line beside the floor's cost per line.

``python bench/bench_episodes.py [--patients 2000] [--out results.json]``; ``--smoke`` runs a
tiny export once to prove the benchmark still works (no timing is asserted anywhere).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cds_hooks.registry.export_reader import GZIP_MAGIC, find_files  # noqa: E402

from bench.generate_export import write_export  # noqa: E402 (after the path is set)

GOAL = 0.25


def export_files(export_dir: Path) -> Iterator[bytes]:
    """Each file of the export as the engine finds it (manifest or folder), gunzipped where
    needed; a file at a time, so the floor pays no per-line cost for it."""
    for path in find_files(export_dir).all:
        data = path.read_bytes()
        yield gzip.decompress(data) if data[:2] == GZIP_MAGIC else data


def floor_seconds(export_dir: Path) -> tuple[float, int]:
    """Read and orjson-parse every line of every NDJSON file, in one process."""
    started = time.perf_counter()
    lines = 0
    for data in export_files(export_dir):
        for line in data.splitlines():
            if not line.strip():
                continue
            lines += 1
            try:
                orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
    return time.perf_counter() - started, lines


def grading_cpu_seconds(export_dir: Path) -> float:
    """CPU of ``grade_patient`` over every patient, in this process (grouping not counted; shared
    Medications are not joined, so it is slightly less than a worker's share of the work)."""
    from cds_hooks.registry.export_reader import place
    from cds_hooks.registry.per_patient import RegistryOptions, grade_patient

    by_patient: dict[str, list[bytes]] = {}
    for data in export_files(export_dir):
        for line in data.splitlines():
            patient = place(line)[0] if line.strip() else None
            if patient is not None:
                by_patient.setdefault(patient, []).append(line)
    options = RegistryOptions()
    grade_patient(options, "warm-up", [])  # vocabulary loaded before the clock starts
    started = time.process_time()
    for patient in sorted(by_patient):
        grade_patient(options, patient, by_patient[patient])
    return time.process_time() - started


def episodes_seconds(export_dir: Path, out: Path, workers: int) -> float:
    """The command a site runs, in its own process (start-up, reading, workers, CSV)."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds_hooks.cli",
            "episodes",
            str(export_dir),
            "--out",
            str(out),
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"crs-cds episodes failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def measure(patients: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-episodes-") as scratch:
        export_dir = Path(scratch) / "export"
        write_export(export_dir, patients)
        floor, lines = floor_seconds(export_dir)
        episodes = episodes_seconds(export_dir, Path(scratch) / "rows.csv", workers)
        grading = grading_cpu_seconds(export_dir)
        rows = sum(1 for _ in (Path(scratch) / "rows.csv").open()) - 1
    return {
        "patients": patients,
        "lines": lines,
        "rows": rows,
        "workers": workers,
        "floorSeconds": round(floor, 3),
        "episodesSeconds": round(episodes, 3),
        "gradingCpuSecondsOneProcess": round(grading, 3),
        "floorMicrosecondsPerLine": round(floor / lines * 1e6, 2) if lines else None,
        "gradingMicrosecondsPerLine": round(grading / lines * 1e6, 2) if lines else None,
        "ratio": round(floor / episodes, 4) if episodes else None,
        "goal": GOAL,
    }


def table(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| patients | lines | rows | workers | floor (s) | episodes (s) | floor/episodes | goal |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {result['patients']} | {result['lines']} | {result['rows']} | {result['workers']} | "
            f"{result['floorSeconds']:.2f} | {result['episodesSeconds']:.2f} | {result['ratio']:.3f} | >= {GOAL} |",
            "",
            f"grading alone, one process: {result['gradingCpuSecondsOneProcess']:.2f} s CPU "
            f"({result['gradingMicrosecondsPerLine']} us a line; "
            f"the floor: {result['floorMicrosecondsPerLine']} us a line)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="crs-cds episodes vs reading+parsing the export (the floor)")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--smoke", action="store_true", help="a tiny export, once: the benchmark still runs")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    result = measure(12 if args.smoke else args.patients, args.workers)
    result["smoke"] = args.smoke
    print(table(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
