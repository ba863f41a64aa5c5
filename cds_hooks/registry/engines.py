"""Engines: group an export by patient, run the per-patient function, hand back outcomes in
patient order.

- ``local`` (default, no server), two phases over a private temporary folder:
  1. the export, cut into units (``partition.py``), is read once, each unit by one process (the
     workers and the parent share the units): every line is placed by the rules of
     :func:`export_reader.classify` and appended to one of K bucket files chosen by a hash of its
     patient; shared Medications go to files of their own; rejected and not-read lines are
     only counted;
  2. the workers take one bucket at a time: lines grouped by patient, the referenced Medications
     joined, patients graded in patient order, outcomes written to a result file
     (``bucket_grading.py``); the parent merges the sorted result files (``heapq.merge``).
  The workers are started first, so their start and warm-up overlap the reading. K grows with
  the export (about :data:`BUCKET_BYTES` of lines a bucket, at least :data:`BUCKETS_PER_WORKER`
  a worker so the cores stay evenly busy to the end), so memory is one bucket per worker (at
  least the largest patient) and bounded buffers, not the export.
- ``spark``: the same placing in Python (:func:`export_reader.classify`) on Spark RDDs, a join for
  the Medications, a group by patient and the same per-patient function; outcomes come back
  sorted by patient, so both engines give identical rows.

Both call ``on_outcome`` once per patient, in patient order (code-point order of the id).
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds_hooks.registry import bucket_grading
from cds_hooks.registry.bucket_grading import BucketTask, grade_bucket, outcomes, warm_up
from cds_hooks.registry.export_reader import (
    NOT_JSON,
    NOT_UTF8,
    ExportError,
    ExportFiles,
    Placed,
    classify,
)
from cds_hooks.registry.partition import (
    PlaceTask,
    UnitCounts,
    bucket_file,
    estimated_bytes,
    medication_file,
    place_unit,
    plan_units,
)
from cds_hooks.registry.per_patient import PatientOutcome, RegistryOptions, grade_patient
from cds_hooks.registry.rows import INDETERMINATE

if TYPE_CHECKING:
    from pyspark import RDD

OnOutcome = Callable[[PatientOutcome], None]
Progress = Callable[[int, int], None]
"""Called with (patients done, patients in the export; 0 while not known)."""

BUCKET_BYTES = 32 * 1024 * 1024
"""Lines a bucket aims at: one bucket is what a worker holds at once."""
BUCKETS_PER_WORKER = 16
"""Enough buckets that the last ones finish close together (the cores stay busy to the end)."""
MAX_BUCKETS = 512
"""Bucket and result files open at once stay well under the usual limit of 1024 open files."""
MEMORY_PER_BUCKET = 4
"""A bucket of N bytes takes about 4 N in a worker (the bytes, the lines cut from them, the
lines grouped, one patient parsed): ``--memory-limit`` is divided by this and by the workers."""
MIN_BUCKET_BYTES = 1024 * 1024
UNITS_PER_PROCESS = 4
"""Units of reading per process (the workers and the parent), so they finish close together."""
MIN_UNIT_BYTES = 4 * 1024 * 1024


@dataclass
class Summary:
    """What the run saw: patients, episodes by worst grade, indeterminate, rejected lines."""

    lines: int = 0
    patients: int = 0
    rows: int = 0
    episodes_by_grade: dict[str, Counter[int]] = field(default_factory=dict)
    no_episode: Counter[str] = field(default_factory=Counter)
    indeterminate: Counter[str] = field(default_factory=Counter)
    """Per system, the patients with at least one indeterminate row."""
    rejected: Counter[str] = field(default_factory=Counter)
    not_read: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: PatientOutcome) -> None:
        self.rows += len(outcome.rows)
        self.rejected.update(outcome.rejected)
        undecided: set[str] = set()
        for row in outcome.rows:
            system = str(row["system"])
            if row["status"] == INDETERMINATE:
                undecided.add(system)
            if isinstance(row["episode"], int) and row["episode"] >= 1 and isinstance(row["maxGrade"], int):
                self.episodes_by_grade.setdefault(system, Counter())[row["maxGrade"]] += 1
            elif row["episode"] == 0:
                self.no_episode[system] += 1
        self.indeterminate.update(undecided)

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "patients": self.patients,
            "rows": self.rows,
            "episodesByWorstGrade": {
                system: {str(g): n for g, n in sorted(grades.items())}
                for system, grades in sorted(self.episodes_by_grade.items())
            },
            "patientsWithoutEpisode": dict(sorted(self.no_episode.items())),
            "patientsIndeterminate": dict(sorted(self.indeterminate.items())),
            "rejected": dict(self.rejected.most_common()),
            "notRead": dict(self.not_read.most_common()),
        }

    def text(self) -> str:
        lines = [f"patients: {self.patients} ({self.lines} lines read), rows: {self.rows}"]
        systems = sorted({*self.episodes_by_grade, *self.no_episode, *self.indeterminate})
        for system in systems:
            grades = self.episodes_by_grade.get(system, Counter())
            by_grade = ", ".join(f"grade {g}: {n}" for g, n in sorted(grades.items()))
            lines.append(
                f"{system}: {sum(grades.values())} episodes ({by_grade or 'none'}); patients without episode "
                f"{self.no_episode[system]}; patients indeterminate {self.indeterminate[system]}"
            )
        for reason, count in self.rejected.most_common():
            lines.append(f"rejected: {count} x {reason}")
        for kind, count in self.not_read.most_common():
            lines.append(f"not read (type not used): {count} x {kind}")
        return "\n".join(lines)


# -- local: bucket files + a process pool ---------------------------------------------------------


@dataclass(frozen=True)
class LocalSettings:
    workers: int = 2
    memory_limit: str | None = None
    """About how much memory the lines in flight may take (e.g. "2GB"): each worker's bucket is
    made to fit its share. Default: buckets of :data:`BUCKET_BYTES`."""
    work_dir: Path | None = None
    """Where the bucket and result files go (default: the system's temporary folder)."""
    bucket_bytes: int | None = None
    """The bucket size aimed at, overriding ``memory_limit`` (tests force many small buckets)."""
    start_method: str | None = None
    """How workers start; None: "fork" where it is safe (see :func:`start_method`)."""


def run_local(
    files: ExportFiles,
    options: RegistryOptions,
    on_outcome: OnOutcome,
    *,
    settings: LocalSettings | None = None,
    progress: Progress | None = None,
) -> Summary:
    chosen = settings or LocalSettings()
    workers = max(1, chosen.workers)
    estimate = estimated_bytes(files)
    buckets = bucket_count(estimate, _bucket_target(chosen, workers), workers)
    units = plan_units(files, max(MIN_UNIT_BYTES, estimate // (UNITS_PER_PROCESS * (workers + 1))))
    summary = Summary()
    with tempfile.TemporaryDirectory(prefix="crs-cds-episodes-", dir=chosen.work_dir) as scratch:
        folder = Path(scratch)
        pool = _start_pool(options, workers, chosen.start_method)  # first: workers start during the reading
        try:
            tasks = [PlaceTask(pieces, folder, unit, buckets) for unit, pieces in enumerate(units)]
            counts = _place(tasks, pool)
            for unit in counts:
                summary.lines += unit.lines
                summary.rejected.update(unit.rejected)
                summary.not_read.update(unit.not_read)
            bucket_tasks = _bucket_tasks(counts, folder, buckets, options)
            summary.patients = _grade(bucket_tasks, pool, progress)
            for _, outcome in heapq.merge(*(outcomes(t.results) for t in bucket_tasks), key=itemgetter(0)):
                summary.add(outcome)
                on_outcome(outcome)
        except BrokenProcessPool as exc:
            raise ExportError(
                "a worker process stopped before its work was done (killed, or out of memory?); "
                "the run is incomplete and its rows must not be used"
            ) from exc
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    if progress is not None:
        progress(summary.patients, summary.patients)
    return summary


def _place(tasks: list[PlaceTask], pool: ProcessPoolExecutor | None) -> list[UnitCounts]:
    """Every unit read once. The workers take units from the front of the queue; the parent,
    which would otherwise wait, takes them from the back (a unit still queued is cancelled there
    and read here), so both cores read even while the workers still start."""
    if pool is None:
        return [place_unit(task) for task in tasks]
    futures = [pool.submit(place_unit, task) for task in tasks]
    done: dict[int, UnitCounts] = {}
    for index in reversed(range(len(futures))):
        if not futures[index].cancel():
            break  # a worker has it, and all before it
        done[index] = place_unit(tasks[index])
    return [done[i] if i in done else futures[i].result() for i in range(len(tasks))]


def bucket_count(estimate: int, target: int, workers: int) -> int:
    wanted = -(-estimate // max(1, target))
    least = BUCKETS_PER_WORKER * workers if workers > 1 else 1
    return max(1, min(MAX_BUCKETS, max(wanted, least)))


def _bucket_target(settings: LocalSettings, workers: int) -> int:
    if settings.bucket_bytes is not None:
        return max(1, settings.bucket_bytes)
    if settings.memory_limit is None:
        return BUCKET_BYTES
    share = memory_bytes(settings.memory_limit) // (MEMORY_PER_BUCKET * workers)
    return max(MIN_BUCKET_BYTES, min(BUCKET_BYTES, share))


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})
_MEMORY = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*")


def memory_bytes(text: str) -> int:
    """``--memory-limit`` in bytes: a number with an optional unit (KB, MB, GB, TB; KiB, ...)."""
    found = _MEMORY.fullmatch(text)
    unit = _UNITS.get(found.group(2).upper()) if found else None
    if found is None or unit is None:
        raise ExportError(f"--memory-limit {text!r} is not a size such as 2GB or 512MB")
    return int(float(found.group(1)) * unit)


def _bucket_tasks(counts: list[UnitCounts], folder: Path, buckets: int, options: RegistryOptions) -> list[BucketTask]:
    """One task per bucket that holds lines, the largest first (the last to finish are small)."""
    medications = tuple(
        tuple(medication_file(folder, b, u) for u, unit in enumerate(counts) if unit.medication_bytes[b])
        for b in range(buckets)
    )
    sizes = [sum(unit.bucket_bytes[b] for unit in counts) for b in range(buckets)]
    return [
        BucketTask(
            tuple(bucket_file(folder, b, u) for u, unit in enumerate(counts) if unit.bucket_bytes[b]),
            medications,
            folder / f"results-{b:05d}.pickle",
            options,
        )
        for b in sorted((b for b in range(buckets) if sizes[b]), key=lambda b: -sizes[b])
    ]


def _grade(tasks: list[BucketTask], pool: ProcessPoolExecutor | None, progress: Progress | None) -> int:
    """Every bucket graded; the number of patients. Progress advances as buckets finish."""
    done = 0
    if pool is None:
        for task in tasks:
            done += grade_bucket(task)
            if progress is not None:
                progress(done, 0)
        return done
    futures: list[Future[int]] = [pool.submit(grade_bucket, task) for task in tasks]
    for future in as_completed(futures):
        done += future.result()
        if progress is not None:
            progress(done, 0)
    return done


def start_method() -> str:
    """``fork`` on Linux when the parent runs one thread (the command line's case): the workers
    then share the modules the parent has loaded and start at once. Forking a process that runs
    other threads can copy a lock another thread holds, so then a fork server (a clean process
    that imports the grading modules while the parent reads the export) starts them, else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform == "linux" and "fork" in methods and _one_thread():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _one_thread() -> bool:
    """Every thread of the process, those of C libraries too (Linux lists them in /proc)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _start_pool(options: RegistryOptions, workers: int, method: str | None) -> ProcessPoolExecutor | None:
    if workers <= 1:
        return None
    chosen = method or start_method()
    context = multiprocessing.get_context(chosen)
    if chosen == "forkserver":
        context.set_forkserver_preload([bucket_grading.__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=warm_up, initargs=(options,))
    for _ in range(workers):
        pool.submit(_started)  # every worker starts now, not when phase 2 needs it
    return pool


def _started() -> None:
    """A no-op task whose only purpose is to start a worker."""


# -- Spark ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkSettings:
    master: str | None = None
    """``--spark-master``; None leaves it to the usual Spark configuration (spark-submit, SPARK_*)."""


def _placed_pairs(raw: bytes) -> list[tuple[str, tuple[str, str | None, str]]]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [("rejected", (NOT_UTF8, None, ""))]
    placed: Placed = classify(line)
    if placed.patient is not None:
        return [("patient", (placed.patient, placed.medication_reference, line))]
    if placed.medication is not None:
        return [("medication", (placed.medication, None, line))]
    if placed.not_read is not None:
        return [("not_read", (placed.not_read, None, ""))]
    return [("rejected", (placed.rejected or NOT_JSON, None, ""))]


def run_spark(
    files: ExportFiles,
    options: RegistryOptions,
    on_outcome: OnOutcome,
    *,
    settings: SparkSettings | None = None,
    progress: Progress | None = None,
    spark: Any = None,
) -> Summary:
    """``spark``: a SparkSession to use; without one, the active session is used, else one is
    started (and stopped at the end: only a session this call started is stopped)."""
    from pyspark.sql import SparkSession

    if spark is None:
        spark = SparkSession.getActiveSession()
    own = spark is None
    if own:
        master = settings.master if settings is not None else None
        if master is None or master.startswith("local"):
            # Local Python workers must run this interpreter (the one with cds_hooks installed).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            SparkSession.builder.appName("crs-cds-episodes")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
        )
        if master:
            builder = builder.master(master)
        spark = builder.getOrCreate()
    try:
        return _spark_run(spark.sparkContext, files, options, on_outcome, progress)
    finally:
        if own:
            spark.stop()


def _spark_run(
    context: Any, files: ExportFiles, options: RegistryOptions, on_outcome: OnOutcome, progress: Progress | None
) -> Summary:
    summary = Summary()
    # Bytes, decoded per line: a line that is not UTF-8 is rejected, not the whole run (gzip by .gz name).
    text: RDD[bytes] = context.textFile(",".join(str(p) for p in files.all), use_unicode=False)
    # One partition per file would make many tiny tasks; the cluster's parallelism is enough.
    lines = text.filter(lambda line: line.strip() != b"").coalesce(context.defaultParallelism)
    placed = lines.flatMap(_placed_pairs).cache()
    try:
        for (category, detail), count in placed.map(_count_key).countByValue().items():
            summary.lines += count
            if category in ("rejected", "not_read"):
                (summary.rejected if category == "rejected" else summary.not_read)[detail] += count
        patient_lines = placed.filter(lambda kv: kv[0] == "patient").map(lambda kv: (kv[1][0], kv[1]))
        medications = placed.filter(lambda kv: kv[0] == "medication").map(lambda kv: (kv[1][0], kv[1][2]))
        wanted = patient_lines.filter(lambda kv: kv[1][1] is not None).map(lambda kv: (kv[1][1], kv[0])).distinct()
        joined = wanted.join(medications).map(lambda kv: (kv[1][0], kv[1][1])).distinct()
        by_patient = patient_lines.map(lambda kv: (kv[0], kv[1][2])).union(joined).groupByKey()
        outcomes = by_patient.map(lambda kv: grade_patient(options, kv[0], list(kv[1]))).sortBy(
            lambda o: o.patient.removeprefix("Patient/")
        )
        for outcome in outcomes.toLocalIterator():
            summary.add(outcome)
            summary.patients += 1
            on_outcome(outcome)
            if progress is not None:
                progress(summary.patients, 0)  # the total is not counted first on Spark
    finally:
        placed.unpersist()
    return summary


def _count_key(pair: tuple[str, tuple[str, str | None, str]]) -> tuple[str, str]:
    """What the summary counts: lines, and the reasons and types of the lines not graded."""
    category, (detail, _, _) = pair
    return (category, detail) if category in ("rejected", "not_read") else (category, "")
