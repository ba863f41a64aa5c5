"""The Spark engine gives the local engine's rows on the same export (issue 14).

A real local Spark (``local[2]``, started once per session by the ``spark`` fixture); skipped
only where Java is missing and CI is not set. The export is the six known courses, so the
comparison covers every kind of row (episodes, no episode, indeterminate) and the shared
Medication joined to its administrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.generate_export import write_export
from cds_hooks.cli import main
from cds_hooks.registry.engines import LocalSettings, Summary, run_local, run_spark
from cds_hooks.registry.export_reader import find_files
from cds_hooks.registry.per_patient import PatientOutcome, RegistryOptions
from cds_hooks.registry.rows import Row

from spark_support import spark_unavailable_reason

pytestmark = [
    pytest.mark.spark,
    pytest.mark.skipif(spark_unavailable_reason() is not None, reason=str(spark_unavailable_reason())),
]


def _rows(engine: str, export: Path, spark: Any = None) -> tuple[list[Row], Summary]:
    rows: list[Row] = []

    def collect(outcome: PatientOutcome) -> None:
        rows.extend(outcome.rows)

    files = find_files(export)
    if engine == "spark":
        summary = run_spark(files, RegistryOptions(), collect, spark=spark)
    else:
        summary = run_local(files, RegistryOptions(), collect, settings=LocalSettings(workers=1))
    return rows, summary


def test_spark_and_local_engines_give_identical_rows(spark: Any, tmp_path: Path) -> None:
    write_export(tmp_path, patients=12)  # two patients per known course
    local_rows, local_summary = _rows("local", tmp_path)
    spark_rows, spark_summary = _rows("spark", tmp_path, spark)
    assert spark_rows == local_rows
    assert len(spark_rows) == 26
    assert spark_summary.to_json() == local_summary.to_json()
    assert spark_summary.rejected == {"not JSON": 1, "names no patient": 1}


def test_cli_engine_spark_writes_the_local_engines_file(spark: Any, tmp_path: Path) -> None:
    """``crs-cds episodes --engine spark`` (on the session already running, which it leaves
    running) writes byte for byte the file the default engine writes."""
    export = tmp_path / "export"
    write_export(export)
    assert main(["episodes", str(export), "--engine", "spark", "--out", str(tmp_path / "spark.csv")]) == 0
    assert main(["episodes", str(export), "--out", str(tmp_path / "local.csv"), "--workers", "1"]) == 0
    assert (tmp_path / "spark.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert not spark.sparkContext._jsc.sc().isStopped()
