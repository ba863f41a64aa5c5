"""The local engine's first phase: every line of the export placed once, into bucket files.

The export is cut into units (a large plain file into byte ranges, small files packed together;
a gzip file whole), which different processes read at once. Reading a unit places each line with
:func:`export_reader.place` (the rules of ``classify``) and appends a patient's line to the
bucket of its patient (a hash of the id, so all of a patient's lines meet in one bucket however
the export spreads them); a shared Medication goes to the medication bucket of its
``Medication/<id>`` (so a worker reads only the Medications its patients reference); rejected and
not-read lines are only counted. Each unit writes its own files, through buffers of bounded size, so memory
is the buffers and one block of a file, not the export.

A spill record is two lines: a header, the JSON array ``[patient, medication reference or null]``
(for a Medication, its ``Medication/<id>`` as a JSON string), then the resource line itself.
Neither can hold a raw line break (orjson escapes control characters; a resource line is cut at
every ``\\n`` and ``\\r``), so no byte of a line can be read as a record boundary.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import orjson

from cds_hooks.registry.export_reader import TOO_LONG, ExportError, ExportFiles, place
from cds_hooks.registry.file_lines import FileLines, Piece

BUFFER_BYTES = 16 * 1024 * 1024
"""Lines a unit holds before writing them to its bucket files (bounded, whatever the export)."""
_ROUTES = 65_536
"""Headers kept for reuse (a patient's lines come in runs); cleared when full, so bounded."""


@dataclass(frozen=True)
class PlaceTask:
    pieces: tuple[Piece, ...]
    folder: Path
    unit: int
    buckets: int


@dataclass
class UnitCounts:
    """What one unit wrote (bytes per bucket file and per medication bucket file) and counted."""

    bucket_bytes: list[int]
    medication_bytes: list[int]
    lines: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    not_read: Counter[str] = field(default_factory=Counter)


def bucket_file(folder: Path, bucket: int, unit: int) -> Path:
    return folder / f"bucket-{bucket:05d}-unit-{unit:05d}.spill"


def medication_file(folder: Path, bucket: int, unit: int) -> Path:
    return folder / f"medications-{bucket:05d}-unit-{unit:05d}.spill"


def bucket_of(patient: str, buckets: int) -> int:
    """A stable hash (Python's own changes per process), so a run is reproducible."""
    return zlib.crc32(patient.encode()) % buckets


def place_unit(task: PlaceTask) -> UnitCounts:
    """Read one unit and write its bucket files; a corrupt gzip file raises ExportError."""
    buckets = task.buckets
    counts = UnitCounts([0] * buckets, [0] * buckets)
    rejected, not_read = counts.rejected, counts.not_read
    held: list[list[bytes]] = [[] for _ in range(buckets)]
    medications: list[list[bytes]] = [[] for _ in range(buckets)]
    routes: dict[str | tuple[str, str], tuple[list[bytes], bytes]] = {}
    lines = 0
    buffered = 0
    for piece in task.pieces:
        reader = FileLines(piece)
        for block in reader:
            lines += len(block)
            for line in block:
                patient, medication, reference, kind, reason = place(line)
                if patient is not None:
                    key = patient if reference is None else (patient, reference)
                    route = routes.get(key)
                    if route is None:
                        if len(routes) >= _ROUTES:
                            routes.clear()
                        route = routes[key] = (held[bucket_of(patient, buckets)], orjson.dumps([patient, reference]))
                    parts = route[0]
                    parts.append(route[1])
                    parts.append(line)
                elif medication is not None:
                    shared = medications[bucket_of(medication, buckets)]
                    shared.append(orjson.dumps(medication))
                    shared.append(line)
                elif kind is not None:
                    not_read[kind] += 1
                elif line.strip():
                    rejected[str(reason)] += 1
                else:
                    lines -= 1  # a blank line is no line of the export
            buffered += sum(map(len, block))
            if buffered >= BUFFER_BYTES:
                _write(task, held, medications, counts)
                buffered = 0
        if reader.too_long:
            rejected[TOO_LONG] += reader.too_long
            lines += reader.too_long
    _write(task, held, medications, counts)
    counts.lines = lines
    return counts


def _write(task: PlaceTask, held: list[list[bytes]], medications: list[list[bytes]], counts: UnitCounts) -> None:
    for bucket, parts in enumerate(held):
        if parts:
            counts.bucket_bytes[bucket] += _append(bucket_file(task.folder, bucket, task.unit), parts)
            parts.clear()
    for bucket, parts in enumerate(medications):
        if parts:
            counts.medication_bytes[bucket] += _append(medication_file(task.folder, bucket, task.unit), parts)
            parts.clear()


def _append(path: Path, parts: list[bytes]) -> int:
    data = b"\n".join(parts) + b"\n"
    with path.open("ab") as handle:  # buffered: the whole block is written, or an error is raised
        handle.write(data)
    return len(data)


def records(paths: Sequence[Path]) -> Iterator[tuple[bytes, bytes]]:
    """(header, line) pairs of spill files, one file in memory at a time. A file that does not
    end with a whole record (a write cut short) stops the run: it is never read out of step."""
    for path in paths:
        parts = path.read_bytes().split(b"\n")
        if parts[-1] != b"" or len(parts) % 2 != 1:
            raise ExportError(f"a temporary bucket file is damaged ({path.name}); the run is incomplete")
        pairs = iter(parts[:-1])
        yield from zip(pairs, pairs, strict=True)


def plan_units(files: ExportFiles, unit_bytes: int) -> list[tuple[Piece, ...]]:
    """Units of about ``unit_bytes`` (decompressed): a larger plain file cut into ranges, smaller
    files packed together, a gzip file whole (it cannot be cut). Largest first, so that a large
    gzip file is not the last unit left while the other processes wait."""
    units: list[tuple[int, tuple[Piece, ...]]] = []
    packed: list[Piece] = []
    size = 0
    sized = [(p, False, p.stat().st_size) for p in files.plain] + [(p, True, gzip_size(p)) for p in files.gzip]
    for path, gzipped, length in sized:
        if not gzipped and length > unit_bytes:
            cuts = -(-length // unit_bytes)
            bounds = [length * i // cuts for i in range(cuts + 1)]
            units.extend((b - a, (Piece(path, False, a, b),)) for a, b in pairwise(bounds))
            continue
        packed.append(Piece(path, gzipped))
        size += length
        if size >= unit_bytes:
            units.append((size, tuple(packed)))
            packed, size = [], 0
    if packed:
        units.append((size, tuple(packed)))
    return [pieces for _, pieces in sorted(units, key=lambda unit: -unit[0])]


def gzip_size(path: Path) -> int:
    """A gzip file's size once decompressed, known without reading it: its trailer holds the size
    modulo 4 GiB (of the last member only), so at least four times the compressed size is assumed."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - 4))
        trailer = handle.read(4)
    stated = int.from_bytes(trailer, "little") if len(trailer) == 4 else 0
    return max(stated, 4 * size)


def estimated_bytes(files: ExportFiles) -> int:
    return sum(p.stat().st_size for p in files.plain) + sum(gzip_size(p) for p in files.gzip)
