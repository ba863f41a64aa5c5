"""Engines: group an export by patient, run the per-patient function, hand back outcomes in
patient order.

- ``local`` (default, no server): DuckDB reads every line (plain and gzip) in C++, places it with
  a patient by the rules of :func:`export_reader.classify` written in SQL, joins the shared
  Medications to the administrations that reference them, and sorts by patient in an on-disk
  database (it spills to disk past its memory limit); the sorted lines are streamed out one
  patient at a time to a pool of worker processes. Memory is bounded by the largest patient and
  the few batches in flight, not by the export.
- ``spark``: the same placing in Python (:func:`export_reader.classify`) on Spark RDDs, a join for
  the Medications, a group by patient and the same per-patient function; outcomes come back
  sorted by patient, so both engines give identical rows.

Both call ``on_outcome`` once per patient, in patient order (code-point order of the id).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds_hooks.registry.export_reader import (
    NO_PATIENT,
    NO_TYPE,
    NOT_A_PATIENT,
    NOT_JSON,
    NOT_UTF8,
    READ_TYPES,
    TOO_LONG,
    ExportError,
    ExportFiles,
    Placed,
    classify,
)
from cds_hooks.registry.per_patient import PatientOutcome, RegistryOptions, grade_patient
from cds_hooks.registry.rows import INDETERMINATE

if TYPE_CHECKING:
    from pyspark import RDD

OnOutcome = Callable[[PatientOutcome], None]
Progress = Callable[[int, int], None]
"""Called with (patients done, patients in the export; 0 when not known beforehand)."""

BATCH_LINES = 4000
"""Lines per task sent to a worker: large enough to amortise the transfer, small enough to stay light."""
IN_FLIGHT_PER_WORKER = 3
MAX_LINE_BYTES = 16 * 1024 * 1024
"""The longest resource line read (a FHIR resource of more is refused by DuckDB with its reason)."""
CSV_BUFFER_BYTES = 2 * MAX_LINE_BYTES
"""DuckDB's read buffer; by default 16 x the longest line, which would claim 256 MB per scan."""


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


# -- local: DuckDB + a process pool ------------------------------------------------------------


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _lines_sql(files: ExportFiles) -> str:
    """Every non-blank line of every file as ``line`` (a control character as delimiter: raw
    control characters cannot occur in valid JSON, so a valid line is never split)."""
    options = (
        "columns={'line': 'VARCHAR'}, delim='\\x1f', quote='', escape='', header=false, auto_detect=false, "
        f"strict_mode=false, max_line_size={MAX_LINE_BYTES}, buffer_size={CSV_BUFFER_BYTES}, "
        # a line DuckDB cannot read (not UTF-8, too long) is set aside in reject_errors and counted
        "ignore_errors=true, store_rejects=true"
    )
    parts = []
    if files.plain:
        parts.append(
            f"SELECT line FROM read_csv([{', '.join(map(_quote, files.plain))}], {options}, compression='none')"
        )
    if files.gzip:
        parts.append(
            f"SELECT line FROM read_csv([{', '.join(map(_quote, files.gzip))}], {options}, compression='gzip')"
        )
    return " UNION ALL ".join(parts)


def _placed_sql(files: ExportFiles) -> str:
    """:func:`export_reader.classify` in SQL: (category, detail, medref, line)."""
    read_types = ", ".join(f"'{t}'" for t in READ_TYPES)
    return f"""
    CREATE TABLE placed AS
    WITH src AS (
        SELECT line FROM ({_lines_sql(files)}) WHERE line IS NOT NULL AND trim(line) <> ''
    ), checked AS MATERIALIZED (
        SELECT line, coalesce(json_valid(line), false) AND starts_with(ltrim(line), '{{') AS ok FROM src
    ), fields AS (
        -- only valid objects are taken apart: DuckDB may evaluate both branches of a CASE
        SELECT line, json_extract(line, ['$.resourceType', '$.id', '$.subject.reference',
            '$.patient.reference', '$.medicationReference.reference']) AS v
        FROM checked WHERE ok
    ), typed AS (
        SELECT line,
            CASE WHEN json_type(v[1]) = 'VARCHAR' THEN nullif(v[1]->>'$', '') END AS kind,
            CASE WHEN json_type(v[2]) = 'VARCHAR' THEN nullif(v[2]->>'$', '') END AS id,
            string_split(coalesce(
                CASE WHEN json_type(v[3]) = 'VARCHAR' THEN nullif(v[3]->>'$', '') END,
                CASE WHEN json_type(v[4]) = 'VARCHAR' THEN nullif(v[4]->>'$', '') END
            ), '/') AS subject,
            string_split(CASE WHEN json_type(v[5]) = 'VARCHAR' THEN v[5]->>'$' END, '/') AS medication
        FROM fields
    ), split AS (
        -- a reference names a Patient when its last two segments are "Patient" and an id (the
        -- rule of export_reader.PATIENT_REFERENCE, without a regular expression per line)
        SELECT line, kind, id, subject IS NOT NULL AS has_subject,
            CASE WHEN len(subject) >= 2 AND subject[-2] = 'Patient' AND subject[-1] <> '' THEN subject[-1] END
                AS patient,
            CASE WHEN len(medication) >= 2 AND medication[-2] = 'Medication' AND medication[-1] <> ''
                THEN 'Medication/' || medication[-1] END AS medref
        FROM typed
    )
    SELECT line, 'rejected' AS category, '{NOT_JSON}' AS detail, NULL AS medref FROM checked WHERE NOT ok
    UNION ALL
    SELECT line,
        CASE
            WHEN kind IS NULL OR id IS NULL THEN 'rejected'
            WHEN kind = 'Patient' THEN 'patient'
            WHEN kind = 'Medication' AND NOT has_subject THEN 'medication'
            WHEN kind NOT IN ({read_types}) THEN 'not_read'
            WHEN NOT has_subject THEN 'rejected'
            WHEN patient IS NOT NULL THEN 'patient'
            ELSE 'rejected'
        END AS category,
        CASE
            WHEN kind IS NULL OR id IS NULL THEN '{NO_TYPE}'
            WHEN kind = 'Patient' THEN id
            WHEN kind = 'Medication' AND NOT has_subject THEN 'Medication/' || id
            WHEN kind NOT IN ({read_types}) THEN kind
            WHEN NOT has_subject THEN '{NO_PATIENT}'
            WHEN patient IS NOT NULL THEN patient
            ELSE '{NOT_A_PATIENT}'
        END AS detail,
        CASE WHEN kind IN ({read_types}) AND kind <> 'Patient' AND patient IS NOT NULL THEN medref END AS medref
    FROM split
    """


_GROUPED_SQL = """
    SELECT key, line FROM (
        SELECT detail AS key, line FROM placed WHERE category = 'patient'
        UNION ALL
        SELECT DISTINCT a.detail AS key, m.line
        FROM placed a JOIN placed m ON m.category = 'medication' AND m.detail = a.medref
        WHERE a.category = 'patient' AND a.medref IS NOT NULL
    ) ORDER BY key
"""


@dataclass(frozen=True)
class LocalSettings:
    workers: int = 2
    memory_limit: str | None = None
    """DuckDB's memory limit (e.g. "2GB"); past it, the sort spills to disk."""
    work_dir: Path | None = None
    """Where DuckDB keeps its database and spill files (default: a temporary folder)."""


def run_local(
    files: ExportFiles,
    options: RegistryOptions,
    on_outcome: OnOutcome,
    *,
    settings: LocalSettings | None = None,
    progress: Progress | None = None,
) -> Summary:
    import duckdb

    chosen = settings or LocalSettings()
    summary = Summary()
    with tempfile.TemporaryDirectory(prefix="crs-cds-episodes-", dir=chosen.work_dir) as scratch:
        pool = _pool(options, chosen.workers)
        try:
            con = duckdb.connect(str(Path(scratch) / "export.duckdb"))
            try:
                con.execute(f"SET temp_directory = {_quote(Path(scratch) / 'spill')}")
                con.execute("SET preserve_insertion_order = false")
                con.execute(f"SET threads = {max(1, chosen.workers)}")
                if chosen.memory_limit:
                    con.execute("SET memory_limit = ?", [chosen.memory_limit])
                try:
                    con.execute(_placed_sql(files))
                except duckdb.Error as exc:  # e.g. a corrupt gzip file: the whole export is unreadable
                    raise ExportError(f"the export cannot be read: {str(exc).splitlines()[0]}") from exc
                _count(con, summary)
                groups = _groups(con.execute(_GROUPED_SQL))
                _grade_all(groups, options, pool, summary, on_outcome, progress=progress, workers=chosen.workers)
            finally:
                con.close()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return summary


_READ_ERRORS = {"INVALID ENCODING": NOT_UTF8, "LINE SIZE OVER MAXIMUM": TOO_LONG, "TOO MANY COLUMNS": NOT_JSON}
"""DuckDB's reasons for a line it could not read, in the summary's words (a raw control character,
which splits a line into columns, cannot occur in JSON)."""


def _count(con: Any, summary: Summary) -> None:
    for error_type, count in con.execute("SELECT error_type, count(*) FROM reject_errors GROUP BY ALL").fetchall():
        reason = _READ_ERRORS.get(str(error_type), f"unreadable line ({str(error_type).lower()})")
        summary.rejected[reason] += count
        summary.lines += count
    for category, detail, count in con.execute(
        "SELECT category, detail, count(*) FROM placed WHERE category IN ('rejected', 'not_read') GROUP BY ALL"
    ).fetchall():
        (summary.rejected if category == "rejected" else summary.not_read)[detail] += count
    summary.lines += con.execute("SELECT count(*) FROM placed").fetchone()[0]
    summary.patients = con.execute("SELECT count(DISTINCT detail) FROM placed WHERE category = 'patient'").fetchone()[0]


def _groups(cursor: Any) -> Iterator[tuple[str, list[str]]]:
    """(patient id, lines) from rows sorted by patient, one patient in memory at a time."""
    current: str | None = None
    lines: list[str] = []
    while True:
        chunk = cursor.fetchmany(BATCH_LINES)
        if not chunk:
            break
        for key, line in chunk:
            if key != current:
                if current is not None:
                    yield current, lines
                current, lines = key, []
            lines.append(line)
    if current is not None:
        yield current, lines


def _pool(options: RegistryOptions, workers: int) -> ProcessPoolExecutor | None:
    """Spawned (not forked) workers: DuckDB's threads must not be copied into a child."""
    if workers <= 1:
        return None
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(options,)
    )


_WORKER_OPTIONS: list[RegistryOptions] = []


def _init_worker(options: RegistryOptions) -> None:
    _WORKER_OPTIONS[:] = [options]
    grade_patient(options, "warm-up", [])  # load the vocabulary while DuckDB still sorts


def _grade_batch(batch: list[tuple[str, list[str]]]) -> list[PatientOutcome]:
    options = _WORKER_OPTIONS[0]
    return [grade_patient(options, patient, lines) for patient, lines in batch]


def _batches(groups: Iterator[tuple[str, list[str]]]) -> Iterator[list[tuple[str, list[str]]]]:
    batch: list[tuple[str, list[str]]] = []
    size = 0
    for group in groups:
        batch.append(group)
        size += len(group[1])
        if size >= BATCH_LINES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _grade_all(
    groups: Iterator[tuple[str, list[str]]],
    options: RegistryOptions,
    pool: ProcessPoolExecutor | None,
    summary: Summary,
    on_outcome: OnOutcome,
    *,
    progress: Progress | None,
    workers: int,
) -> None:
    done = 0

    def deliver(outcomes: list[PatientOutcome]) -> None:
        nonlocal done
        for outcome in outcomes:
            summary.add(outcome)
            on_outcome(outcome)
        done += len(outcomes)
        if progress is not None:
            progress(done, summary.patients)

    if pool is None:
        for batch in _batches(groups):
            deliver([grade_patient(options, patient, lines) for patient, lines in batch])
        return
    pending: deque[Future[list[PatientOutcome]]] = deque()
    limit = IN_FLIGHT_PER_WORKER * workers
    for batch in _batches(groups):
        pending.append(pool.submit(_grade_batch, batch))
        if len(pending) >= limit:
            deliver(pending.popleft().result())
    while pending:
        deliver(pending.popleft().result())


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
