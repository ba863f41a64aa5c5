"""The ``crs-cds episodes`` and ``crs-cds validate`` use cases: options from the settings, the
engine chosen, rows handed to the writers, a progress bar on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Literal

from cds_hooks.grading import GRADERS
from cds_hooks.registry.engines import LocalSettings, SparkSettings, Summary, run_local, run_spark
from cds_hooks.registry.export_reader import MANIFEST, ExportError, find_files
from cds_hooks.registry.per_patient import EPISODE_SYSTEMS, PatientOutcome, RegistryOptions
from cds_hooks.registry.rows import COLUMNS, Row
from cds_hooks.settings import Settings

Engine = Literal["local", "spark"]
ENGINES: tuple[Engine, ...] = ("local", "spark")


def registry_options(settings: Settings, systems: Sequence[str] | None) -> RegistryOptions:
    """The settings' vocabulary, windows and ICE form; the systems asked for (default: both)."""
    chosen = tuple(dict.fromkeys(systems)) if systems else EPISODE_SYSTEMS
    known = sorted({*GRADERS, *EPISODE_SYSTEMS})
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ExportError(f"unknown grading systems {unknown}; known: {known}")
    return RegistryOptions(
        systems=chosen,
        mapping_files=tuple(settings.mapping_files),
        ice_questionnaire_file=settings.ice_questionnaire_file,
        config=settings.grading_config(),
        icans_window=timedelta(hours=settings.icans_window_hours),
    )


@dataclass(frozen=True)
class RunChoice:
    engine: Engine = "local"
    workers: int = 2
    spark_master: str | None = None
    memory_limit: str | None = None


def check_outputs(export_dir: Path, out: Path, fhir_out: Path | None) -> None:
    """Refuse outputs that would overwrite the export, before anything is opened for writing:
    FHIR resources written into the export folder itself (its Observation.ndjson would be emptied,
    and the next run would read the output as input), or a rows file that is one of the export's
    files, unless it is clearly the rows of an earlier run (which is never read: see ``exclude``)."""
    if fhir_out is not None and fhir_out.resolve() == export_dir.resolve():
        raise ExportError("--fhir-out must not be the export folder: its files would be overwritten")
    listed = {p.resolve() for p in find_files(export_dir).all}
    if out.resolve() in listed and ((export_dir / MANIFEST).is_file() or not _earlier_rows(out)):
        raise ExportError(f"--out {out} is a file of the export: it would be overwritten")


_ROWS_STARTS = (b"", b"PAR1", ",".join(COLUMNS).encode(), b'{"' + COLUMNS[0].encode() + b'":')
"""How a rows file of ours begins (empty, Parquet, the CSV header, an NDJSON row): a file that
begins otherwise may be data, so it is never overwritten (fail closed)."""


def _earlier_rows(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(len(_ROWS_STARTS[2]))
    return head == b"" or any(start and head.startswith(start) for start in _ROWS_STARTS[1:])


def run_episodes(
    export_dir: Path,
    options: RegistryOptions,
    on_row: Callable[[Row], None],
    *,
    choice: RunChoice,
    progress: Callable[[int, int], None] | None = None,
    exclude: Sequence[Path] = (),
) -> Summary:
    """``exclude``: output files that may lie in the export folder (never read as input)."""
    files = find_files(export_dir, exclude=exclude)

    def deliver(outcome: PatientOutcome) -> None:
        for row in outcome.rows:
            on_row(row)

    if choice.engine == "spark":
        if any(not p.name.endswith(".gz") for p in files.gzip):
            raise ExportError(
                "the Spark engine recognises gzip files by the .gz name; rename them or use --engine local"
            )
        return run_spark(files, options, deliver, settings=SparkSettings(choice.spark_master), progress=progress)
    return run_local(
        files,
        options,
        deliver,
        settings=LocalSettings(workers=choice.workers, memory_limit=choice.memory_limit),
        progress=progress,
    )


class TerminalProgress:
    """``patients 120/2000`` redrawn on stderr at most five times a second, only on a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stderr
        self._last = 0.0
        self._drawn = False

    @property
    def enabled(self) -> bool:
        return self._stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        if total <= 0:
            self._stream.write(f"\rpatients {done}")
            self._stream.flush()
            self._drawn = True
            return
        width = 30
        filled = width * done // total if total else width
        self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] patients {done}/{total}")
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
