"""A FHIR Bulk Data export on disk: which files hold it, and whose each line is.

An export (FHIR Bulk Data Access, ``$export``) is a folder of NDJSON files, one resource type per
file, any file names, plain or gzip, all patients mixed, optionally with the ``manifest.json``
the server returned. With a manifest, exactly the files it lists are read (matched by the last
segment of their URL, with or without ``.ndjson``/``.gz``), and a listed file that is absent is an
error: a partial export must not pass for a whole one. Without a manifest, every file in the
folder except hidden ones is read. Gzip is recognised by its magic bytes, whatever the name.

:func:`classify` is the one definition of whose a line is; both engines call it (the local engine
on the raw bytes of each line (``file_lines.py``), Spark on each decoded line), and a test checks both engines
agree on the same export.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import orjson

MANIFEST = "manifest.json"
GZIP_MAGIC = b"\x1f\x8b"
READ_TYPES = ("Patient", "Observation", "MedicationAdministration", "Procedure", "Condition", "QuestionnaireResponse")
"""The resource types the reader uses; other types are counted as "not read", never graded."""
_READ_TYPES = frozenset(READ_TYPES)
PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([^/]+)\Z")
"""``\\Z``: the id runs to the end of the reference (``$`` would also allow a final newline)."""
MEDICATION_REFERENCE = re.compile(r"(?:^|/)(Medication/[^/]+)\Z")

# Why a line cannot be placed with a patient (the summary counts them by these words).
NOT_JSON = "not JSON"
NO_TYPE = "no resourceType or id"
NO_PATIENT = "names no patient"
NOT_A_PATIENT = "subject is not a Patient"
NOT_UTF8 = "not UTF-8"
MAX_LINE_BYTES = 16 * 1024 * 1024
"""The longest line read (without its line break); a longer one is rejected, never held."""
TOO_LONG = f"line longer than {MAX_LINE_BYTES // (1024 * 1024)} MB"


class ExportError(Exception):
    """The export cannot be turned into rows (not a readable export, or the run could not
    finish); the message says why."""


@dataclass(frozen=True)
class ExportFiles:
    plain: tuple[Path, ...]
    gzip: tuple[Path, ...]
    transaction_time: str | None = None

    @property
    def all(self) -> tuple[Path, ...]:
        return (*self.plain, *self.gzip)


def find_files(export_dir: Path, *, exclude: Collection[Path] = ()) -> ExportFiles:
    """``exclude``: files never read as the export (the rows file being written into the folder)."""
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir} is not a folder")
    manifest_path = export_dir / MANIFEST
    transaction_time: str | None = None
    if manifest_path.is_file():
        files, transaction_time = _from_manifest(export_dir, manifest_path)
    else:
        skipped = {p.resolve() for p in exclude}
        files = sorted(
            p for p in export_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.resolve() not in skipped
        )
    if not files:
        raise ExportError(f"{export_dir} holds no NDJSON file")
    plain: list[Path] = []
    gzipped: list[Path] = []
    for path in files:
        with path.open("rb") as handle:
            (gzipped if handle.read(2) == GZIP_MAGIC else plain).append(path)
    return ExportFiles(tuple(plain), tuple(gzipped), transaction_time)


def _from_manifest(export_dir: Path, manifest_path: Path) -> tuple[list[Path], str | None]:
    try:
        manifest: Any = orjson.loads(manifest_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"{manifest_path} is not JSON: {exc}") from exc
    outputs = manifest.get("output") if isinstance(manifest, dict) else None
    if not isinstance(outputs, list):
        raise ExportError(f"{manifest_path} has no output list")
    files: list[Path] = []
    for entry in outputs:
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            raise ExportError(f"{manifest_path}: an output entry has no url")
        found = _local_file(export_dir, url)
        if found.resolve() not in {f.resolve() for f in files}:  # two urls naming one file: read once
            files.append(found)
    time = manifest.get("transactionTime")
    return files, time if isinstance(time, str) else None


def _local_file(export_dir: Path, url: str) -> Path:
    name = Path(urlparse(url).path).name
    for candidate in (name, f"{name}.ndjson", f"{name}.ndjson.gz", f"{name}.gz"):
        if candidate and (export_dir / candidate).is_file():
            return export_dir / candidate
    raise ExportError(f"the manifest lists {url}, but {export_dir} has no file {name!r}")


class Placed(NamedTuple):
    """Where one line goes: to a patient (``patient``), the shared Medications (``medication``),
    nowhere because its type is not read (``not_read``: the type), or rejected (``rejected``).
    A named tuple: it is built once per line of the export."""

    patient: str | None = None
    medication: str | None = None
    medication_reference: str | None = None
    not_read: str | None = None
    rejected: str | None = None


PlacedTuple = tuple[str | None, str | None, str | None, str | None, str | None]
""":class:`Placed`'s fields as a plain tuple (what the local engine's loop over every line takes)."""


def classify(line: str | bytes) -> Placed:
    """Whose a line is. Bytes are parsed as they are (orjson checks UTF-8): a line that is not
    UTF-8 is rejected as such, whatever else is wrong with it."""
    return Placed._make(place(line))


def place(line: str | bytes) -> PlacedTuple:
    """:func:`classify` as a plain tuple (patient, medication, medication_reference, not_read,
    rejected): the one definition of the rules, without building a named tuple per line."""
    try:
        resource: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        reason = NOT_UTF8 if isinstance(line, bytes) and not _is_utf8(line) else NOT_JSON
        return (None, None, None, None, reason)
    if not isinstance(resource, dict):
        return (None, None, None, None, NOT_JSON)
    kind = resource.get("resourceType")
    rid = resource.get("id")
    if not isinstance(kind, str) or not isinstance(rid, str) or not kind or not rid:
        return (None, None, None, None, NO_TYPE)
    if kind == "Patient":
        return (rid, None, None, None, None)
    subject = _reference(resource.get("subject")) or _reference(resource.get("patient"))
    if kind == "Medication" and subject is None:
        return (None, f"Medication/{rid}", None, None, None)
    if kind not in _READ_TYPES:
        return (None, None, None, kind, None)
    if subject is None:
        return (None, None, None, None, NO_PATIENT)
    patient = _patient_id(subject)
    if patient is None:
        return (None, None, None, None, NOT_A_PATIENT)
    administered = resource.get("medicationReference")
    if administered is None:
        return (patient, None, None, None, None)
    medication = MEDICATION_REFERENCE.search(_reference(administered) or "")
    return (patient, None, medication.group(1) if medication else None, None, None)


def _patient_id(reference: str) -> str | None:
    """``PATIENT_REFERENCE``'s id; a relative ``Patient/<id>`` (nearly every line of an export)
    is taken apart without the regular expression, with the same answer."""
    if reference.startswith("Patient/"):
        rest = reference[8:]
        if rest and "/" not in rest:
            return rest
    found = PATIENT_REFERENCE.search(reference)
    return found.group(1) if found else None


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _reference(value: object) -> str | None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref:
            return ref
    return None
