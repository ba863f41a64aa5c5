"""The ``crs-cds`` command: ``serve`` runs the service, ``grade`` grades one patient from a file
or from a FHIR server (``--fhir-server URL --patient ID``), ``watch`` watches a unit's patients and
sends alerts (``cds_hooks/watch/``), ``episodes`` turns a Bulk Data export into registry rows,
``validate`` compares a site's abstracted grades with the computed ones.

``grade`` uses the same extraction, grading and evidence checks as the hook, so what a clinician
or analyst sees on the command line is what the card says. From a FHIR server it goes through the
hook's own path (prefetch templates, fetch policy, 412 rules), so it fails the way the hook would.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from cds_hooks.errors import ConfigurationError, ServiceError
from cds_hooks.grading import KNOWN_SYSTEMS
from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.bundles import resources_of
from cds_hooks.reading.fhir_time import iso, parse_instant
from cds_hooks.reading.terminology import MappingError, load_terminology
from cds_hooks.reading.units import load_units
from cds_hooks.settings import Settings

if TYPE_CHECKING:
    from cds_hooks.reading.fhir_client import FetchPolicy
    from cds_hooks.reading.reader import SourcedResource

# Start-up matters for a command run once per file or per patient (issue 11): each command
# imports what only it needs (the web stack, httpx, the course) inside its own function, so
# `crs-cds grade FILE` never loads FastAPI, uvicorn or httpx.

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
"""The data could not be fetched (what the hook answers with 412)."""
TOKEN_ENV = "CRS_CDS_FHIR_TOKEN"  # noqa: S105 (the variable name, not a secret)
"""The FHIR access token, read from the environment so it need not appear in the process list."""


class InputError(Exception):
    """The file or the arguments cannot be graded; the message says why."""


def read_resources(path: Path) -> list[SourcedResource]:
    """Resources from a Bundle/resource JSON file or an NDJSON file (one resource per line)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        payloads = _payloads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path} is neither JSON nor NDJSON: {exc}") from exc
    return resources_of(payloads)


def _payloads(raw: bytes) -> list[Any]:
    """One JSON document, else one per line (NDJSON); the NDJSON error when it is neither.

    A first line that is a whole JSON value with more text after it cannot start a single JSON
    document, so such a file is read as NDJSON at once, without first failing to parse the
    whole file as one document (which costs a pass over a bulk export of millions of lines).
    """
    first, _, rest = raw.lstrip().partition(b"\n")
    if rest.strip() and _is_json(first):
        return _ndjson(raw)
    try:
        return [orjson.loads(raw)]
    except orjson.JSONDecodeError:
        return _ndjson(raw)


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _ndjson(raw: bytes) -> list[Any]:
    return [orjson.loads(line) for line in raw.splitlines() if line and not line.isspace()]


@contextmanager
def _acyclic_bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while a whole file is read and graded.

    Parsed FHIR is a forest of acyclic dicts and lists that reference counting frees on its own;
    with the collector on, every few hundred allocations it rescans the growing forest, which
    cost more than parsing itself (measured: orjson on 50,000 resources 0.74 s with it, 0.17 s
    without). On the way out what was allocated is frozen (kept out of later collections; the
    process ends soon after) before the collector is switched back on, so re-enabling it does
    not start one full pass over everything instead.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def patient_id_of(resources: Sequence[SourcedResource], requested: str | None) -> str:
    """The one patient in the file: its Patient resource, else the subject everything names."""
    if requested:
        return requested
    patients = [r.resource.get("id") for r in resources if r.resource.get("resourceType") == "Patient"]
    ids = {p for p in patients if isinstance(p, str)}
    if len(ids) == 1:
        return ids.pop()
    if len(ids) > 1:
        raise InputError(f"the file holds {len(ids)} patients; choose one with --patient")
    subjects: Counter[str] = Counter()
    for item in resources:
        subject = item.resource.get("subject")
        if (
            isinstance(subject, dict)
            and isinstance(subject.get("reference"), str)
            and "Patient/" in subject["reference"]
        ):
            subjects[subject["reference"].rsplit("Patient/", 1)[1]] += 1
    if len(subjects) == 1:
        return next(iter(subjects))
    raise InputError("cannot tell which patient the file is about; pass --patient")


def _grading(settings: Settings, systems: Sequence[str] | None) -> Grading:
    chosen = tuple(systems) if systems else tuple(settings.systems)
    unknown = [s for s in chosen if s not in KNOWN_SYSTEMS]
    if unknown:
        raise InputError(f"unknown grading systems {unknown}; known: {list(KNOWN_SYSTEMS)}")
    return Grading(load_terminology(settings.mapping_files), load_units(), settings.grading_config(), chosen)


def grade_file(
    path: Path, *, at: datetime, settings: Settings, patient: str | None = None, systems: Sequence[str] | None = None
) -> Evaluation:
    resources = read_resources(path)
    patient_id = patient_id_of(resources, patient)
    return evaluate(resources, patient_id=patient_id, at=at, grading=_grading(settings, systems))


def fetch_policy(settings: Settings, fhir_server: str) -> FetchPolicy:
    """The service's policy, plus the server the user typed: naming it is consent to call it, but
    https is still required unless insecure servers are allowed in the settings."""
    from cds_hooks.reading.fhir_client import FetchPolicy  # noqa: PLC0415 (only for --fhir-server)

    return FetchPolicy(
        allowlist=frozenset([*settings.fhir_server_allowlist, fhir_server.strip().rstrip("/")]),
        allow_insecure=settings.allow_insecure_fhir_server,
        request_timeout_seconds=settings.fhir_request_timeout_seconds,
        budget_seconds=settings.hook_time_budget_seconds,
        max_pages=settings.fhir_max_pages,
    )


async def grade_from_server(
    fhir_server: str,
    patient_id: str,
    *,
    token: str | None,
    at: datetime,
    settings: Settings,
    systems: Sequence[str] | None = None,
) -> Evaluation:
    """Grade one patient with data fetched as the hook would fetch them for a call without prefetch.

    Raises :class:`ServiceError` (a ``PreconditionFailed``) when the hook would answer 412.
    """
    import uuid  # noqa: PLC0415 (the server path's imports: not loaded to grade a file)

    import httpx  # noqa: PLC0415

    from cds_hooks.cds import FHIR_ID, CdsRequest, FhirAuthorization, HookContext  # noqa: PLC0415
    from cds_hooks.pipeline.hook import HOOK, SERVICE_ID, CrsService  # noqa: PLC0415
    from cds_hooks.reading.fhir_client import FhirFetcher  # noqa: PLC0415

    if not FHIR_ID.match(patient_id):
        raise InputError("--patient must be a FHIR id ([A-Za-z0-9-.]{1,64})")
    service = CrsService(_grading(settings, systems), fixed_time=at, allow_client_time=False)
    authorization = (
        FhirAuthorization(access_token=token, token_type="Bearer", scope="", subject="crs-cds-cli")  # noqa: S106
        if token
        else None
    )
    request = CdsRequest(
        hook=HOOK,
        hookInstance=str(uuid.uuid4()),
        context=HookContext(patientId=patient_id),
        fhirServer=fhir_server,
        fhirAuthorization=authorization,
    )
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        service.fetcher = FhirFetcher(client, fetch_policy(settings, fhir_server))
        outcome = await service.call(SERVICE_ID, request)
    return outcome.evaluation


def as_json(evaluation: Evaluation, patient_id: str) -> dict[str, Any]:
    return {
        "patient": evaluation.patient_reference or f"Patient/{patient_id}",
        "grading": [r.to_json(null_grade=True) for r in evaluation.results],
    }


def as_text(evaluation: Evaluation) -> str:
    lines: list[str] = []
    for result in evaluation.results:
        grade = "indeterminate" if result.grade is None else str(result.grade)
        if result.grade is None and result.grade_at_least:
            grade += f" (at least {result.grade_at_least})"
        if result.grade is None and result.possible_grade is not None:
            grade += f" (possible grade {result.possible_grade} if CRS)"
        worst = "" if result.worst_grade is None else f", worst {result.worst_grade} in the look-back window"
        lines.append(f"{result.system}: grade {grade} at {iso(result.at)}{worst}")
        for e in result.evidence:
            value = f" {e.value:g}" if isinstance(e.value, float) else (f" {e.value}" if e.value is not None else "")
            unit = f" {e.unit}" if e.unit else ""
            lines.append(f"  {e.criterion}: {e.status.value}{value}{unit} ({e.reference})")
        lines += [f"  missing: {m}" for m in result.missing]
        lines += [f"  alert: {a}" for a in result.alerts]
        lines += [f"  not evidence: {n.reference}: {n.reason}" for n in result.not_evidence]
    advice = evaluation.tocilizumab
    if advice.dose_mg is not None:
        lines.append(f"tocilizumab dose if indicated: {advice.dose_mg:g} mg IV ({advice.calculation})")
    else:
        lines.append(f"tocilizumab: no dose offered: {advice.reason}")
    return "\n".join(lines)


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    parsed = parse_instant(text)
    if isinstance(parsed, str):
        raise InputError(f"--at: {parsed}")
    return parsed


def _cmd_grade(args: argparse.Namespace, settings: Settings) -> int:
    systems = [s.strip() for s in args.systems.split(",")] if args.systems else None
    at = _parse_at(args.at)
    if args.fhir_server is not None:
        if args.file is not None:
            raise InputError("give either a file or --fhir-server, not both")
        if not args.patient:
            raise InputError("--fhir-server needs --patient")
        token = args.token or os.environ.get(TOKEN_ENV) or None
        patient_id = args.patient
        import asyncio  # noqa: PLC0415 (only the server path is asynchronous)

        evaluation = asyncio.run(
            grade_from_server(args.fhir_server, patient_id, token=token, at=at, settings=settings, systems=systems)
        )
    else:
        if args.file is None:
            raise InputError("give a FHIR file to grade, or --fhir-server URL --patient ID")
        if args.token is not None:
            raise InputError("--token is only used with --fhir-server")
        grading = _grading(settings, systems)
        with _acyclic_bulk():
            resources = read_resources(Path(args.file))
            patient_id = patient_id_of(resources, args.patient)
            evaluation = evaluate(resources, patient_id=patient_id, at=at, grading=grading)
    if args.timeline:
        from cds_hooks.pipeline.course import course_document  # noqa: PLC0415 (only --timeline)

        config = settings.grading_config()
        document = course_document(evaluation, config, patient_id)
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.json:
        sys.stdout.write(orjson.dumps(as_json(evaluation, patient_id), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(as_text(evaluation) + "\n")
    return 0


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn  # noqa: PLC0415 (the web stack loads only to serve)

    from cds_hooks.logging_setup import configure_logging  # noqa: PLC0415
    from cds_hooks.web.app import create_app  # noqa: PLC0415
    from cds_hooks.web.server import uvicorn_options  # noqa: PLC0415

    configure_logging(settings.log_level)
    app = create_app(settings)
    uvicorn.run(app, host=args.host or settings.host, port=args.port or settings.port, **uvicorn_options())
    return 0


def _cmd_feedback_report(args: argparse.Namespace, settings: Settings) -> int:
    from cds_hooks.stores.database import missing_driver, sqlite_path  # noqa: PLC0415
    from cds_hooks.stores.feedback_store import FeedbackStore  # noqa: PLC0415

    url = args.database or settings.database_url
    if url.startswith("sqlite:///") and not sqlite_path(url).is_file():
        raise InputError(f"no feedback database at {sqlite_path(url)}")
    problem = missing_driver(url)
    if problem:
        raise InputError(problem)
    store = FeedbackStore.open(url)
    try:
        report = store.report()
    finally:
        store.close()
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    lines = [
        f"feedback items: {report['total']} ({report['unmatched']} for cards this store never issued)",
        "",
        "by grade            accepted  overridden  acceptance",
    ]
    for grade, counts in sorted(report["byGrade"].items()):
        total = counts["accepted"] + counts["overridden"]
        lines.append(
            f"  {grade:<16} {counts['accepted']:>9} {counts['overridden']:>11} {_rate(counts['accepted'], total):>11}"
        )
    lines += ["", "by suggestion                         offered  accepted  acceptance"]
    for label, counts in sorted(report["bySuggestion"].items()):
        lines.append(
            f"  {label[:36]:<36} {counts['offered']:>7} {counts['accepted']:>9} "
            f"{_rate(counts['accepted'], counts['offered']):>11}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    """Watch the configured patients (issue 15); the watcher's modules load only for this command."""
    import asyncio  # noqa: PLC0415

    from cds_hooks.logging_setup import configure_logging  # noqa: PLC0415
    from cds_hooks.watch.access import AccessError  # noqa: PLC0415
    from cds_hooks.watch.config import WatchConfig, WatchConfigError  # noqa: PLC0415
    from cds_hooks.watch.service import run_watch  # noqa: PLC0415
    from cds_hooks.watch.worker import CycleReport  # noqa: PLC0415
    from cds_hooks.web.app import build_service  # noqa: PLC0415

    try:
        config = WatchConfig.from_settings(settings)
    except WatchConfigError as exc:
        raise InputError(str(exc)) from None
    grading = build_service(settings).grading
    configure_logging(settings.log_level)

    def print_report(report: CycleReport) -> None:
        sys.stdout.write(orjson.dumps(report.to_json()).decode() + "\n")
        sys.stdout.flush()

    try:
        last = asyncio.run(run_watch(config, grading, once=args.once, on_cycle=print_report))
    except AccessError as exc:
        raise InputError(str(exc)) from None
    if args.once and last is not None and last.error is not None:
        sys.stderr.write(f"crs-cds: watch cycle failed: {last.error}\n")
        return EXIT_UNAVAILABLE
    return 0


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"


def _systems_argument(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _cmd_episodes(args: argparse.Namespace, settings: Settings) -> int:
    # The registry stack (pyarrow, pyspark) is imported here, not at start-up.
    from cds_hooks.registry.export_reader import ExportError  # noqa: PLC0415
    from cds_hooks.registry.fhir_out import FhirWriter  # noqa: PLC0415
    from cds_hooks.registry.run import (  # noqa: PLC0415
        RunChoice,
        TerminalProgress,
        check_outputs,
        registry_options,
        run_episodes,
    )
    from cds_hooks.registry.writers import format_for, open_writer  # noqa: PLC0415

    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    out = Path(args.out)
    try:
        options = registry_options(settings, _systems_argument(args.systems))
        check_outputs(Path(args.export_dir), out, Path(args.fhir_out) if args.fhir_out else None)
        fmt = format_for(out, args.format)
        writer = open_writer(out, fmt)
        fhir = FhirWriter(Path(args.fhir_out)) if args.fhir_out else None
        progress = TerminalProgress()

        def on_row(row: dict[str, Any]) -> None:
            writer.write(row)
            if fhir is not None:
                fhir.write(row)

        try:
            summary = run_episodes(
                Path(args.export_dir),
                options,
                on_row,
                choice=RunChoice(
                    args.engine, args.workers or os.cpu_count() or 1, args.spark_master, args.memory_limit
                ),
                progress=progress if progress.enabled else None,
                exclude=[out],
            )
        finally:
            progress.finish()
            writer.close()
            if fhir is not None:
                fhir.close()
    except (ExportError, OSError) as exc:
        raise InputError(str(exc)) from exc
    if args.json:
        sys.stdout.write(orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        where = f"; FHIR resources: {fhir.written} in {args.fhir_out}" if fhir is not None else ""
        sys.stdout.write(f"{summary.text()}\nrows written to {out} ({fmt}){where}\n")
    return 0


def _cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from cds_hooks.registry.export_reader import ExportError  # noqa: PLC0415
    from cds_hooks.registry.rows import Row  # noqa: PLC0415
    from cds_hooks.registry.run import RunChoice, registry_options, run_episodes  # noqa: PLC0415
    from cds_hooks.registry.validate import ExpectedFileError, compare, computed_grades, read_expected  # noqa: PLC0415

    rows: list[Row] = []
    try:
        expected = read_expected(Path(args.expected))
        options = registry_options(settings, [args.system])
        run_episodes(
            Path(args.export_dir),
            options,
            rows.append,
            choice=RunChoice(args.engine, args.workers or os.cpu_count() or 1, args.spark_master),
        )
    except (ExportError, ExpectedFileError, OSError) as exc:
        raise InputError(str(exc)) from exc
    report = compare(expected, computed_grades(rows, args.system), args.system)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(report.text() + "\n")
    return 0


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", help="a FHIR Bulk Data export: NDJSON files (.ndjson, .ndjson.gz), manifest.json")
    parser.add_argument(
        "--engine", choices=("local", "spark"), default="local", help="local (default, no server) or spark"
    )
    parser.add_argument("--workers", type=int, help="worker processes of the local engine (default: the CPU count)")
    parser.add_argument("--spark-master", help="Spark master URL (default: the usual Spark configuration)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs-cds", description="CRS grading CDS Hooks service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", help="bind address (default CRS_CDS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default CRS_CDS_PORT or 8080)")
    grade = sub.add_parser("grade", help="grade one patient from a FHIR Bundle (JSON) or NDJSON file, or a FHIR server")
    grade.add_argument("file", nargs="?", help="FHIR Bundle JSON, a single resource, or NDJSON")
    grade.add_argument("--fhir-server", help="fetch the patient's data from this FHIR base URL instead of a file")
    grade.add_argument(
        "--token",
        help=f"bearer token for --fhir-server; prefer the environment variable {TOKEN_ENV}, "
        "since arguments are visible in the process list",
    )
    grade.add_argument("--at", help="evaluation time, ISO-8601 with zone (default: now)")
    grade.add_argument("--json", action="store_true", help="print the machine-readable RESULT")
    grade.add_argument(
        "--timeline",
        action="store_true",
        help="print the CRS course as JSON: the ASTCT grade at every data time in the look-back window, with "
        "temperatures, pressures, oxygen, vasopressors and therapies (as POST /cds-services/crs-grade/course)",
    )
    grade.add_argument("--patient", help="patient id (required with --fhir-server; for a file, when it holds several)")
    grade.add_argument("--systems", help="comma-separated grading systems (default CRS_CDS_SYSTEMS)")
    report = sub.add_parser("feedback-report", help="acceptance and override rates by grade and by suggestion")
    report.add_argument("--database", help="sqlite:///path or postgresql://... (default CRS_CDS_DATABASE_URL)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    episodes = sub.add_parser(
        "episodes", help="CRS and ICANS episodes of every patient in a Bulk Data export, as registry rows"
    )
    _engine_arguments(episodes)
    episodes.add_argument("--out", required=True, help="the rows file")
    episodes.add_argument("--format", choices=("csv", "parquet", "ndjson"), help="default: from --out, else csv")
    episodes.add_argument("--systems", help="comma-separated: ASTCT-2019, ASTCT-2019-ICANS (default: both)")
    episodes.add_argument("--fhir-out", help="also write each episode as a FHIR Condition + Observation here")
    episodes.add_argument(
        "--memory-limit", help="about the memory for the export's lines in flight, e.g. 2GB (less: smaller buckets)"
    )
    episodes.add_argument("--json", action="store_true", help="print the summary as JSON")
    validate = sub.add_parser("validate", help="a site's abstracted worst grades against the computed ones")
    _engine_arguments(validate)
    validate.add_argument("--expected", required=True, help="CSV: patient,maxGrade[,onset]")
    validate.add_argument("--system", default="ASTCT-2019", help="ASTCT-2019 (default) or ASTCT-2019-ICANS")
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    watch = sub.add_parser(
        "watch",
        help="re-grade the watched patients every CRS_CDS_WATCH_INTERVAL_S and send grade-rise and stale-data "
        "alerts to CRS_CDS_WATCH_WEBHOOK_URL",
    )
    watch.add_argument("--once", action="store_true", help="run one cycle and exit (tests, cron)")
    sub.add_parser(
        "new-session-key",
        help="print a new key for CRS_CDS_SESSION_KEY (SMART sessions shared by replicas, sealed at rest)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "new-session-key":
        from cds_hooks.stores.session_table import new_session_key  # noqa: PLC0415

        sys.stdout.write(new_session_key() + "\n")
        return 0
    try:
        settings = Settings()
        if args.command == "serve":
            return _cmd_serve(args, settings)
        if args.command == "feedback-report":
            return _cmd_feedback_report(args, settings)
        if args.command == "episodes":
            return _cmd_episodes(args, settings)
        if args.command == "validate":
            return _cmd_validate(args, settings)
        if args.command == "watch":
            return _cmd_watch(args, settings)
        return _cmd_grade(args, settings)
    except (InputError, MappingError, ConfigurationError) as exc:
        sys.stderr.write(f"crs-cds: {exc}\n")
        return EXIT_USAGE
    except ServiceError as exc:
        # The reasons are written to be shown (no token, no query string): the hook's 412 text.
        sys.stderr.write(f"crs-cds: {exc.reason}\n")
        return EXIT_UNAVAILABLE
    except ValidationError as exc:
        sys.stderr.write(f"crs-cds: invalid settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
