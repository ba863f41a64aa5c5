"""The lines of one piece of an export file, as bytes, read in blocks.

A plain file can be cut into byte ranges read by different processes: a range owns the lines
that *start* inside it (it skips the end of a line begun before it and reads past its end to
finish its last line), so every line is read exactly once whatever the cuts. A gzip file is read
whole, decompressed as it streams. A line ends at ``\\n``, ``\\r\\n`` or ``\\r`` (as Spark
reads NDJSON); a UTF-8 byte order mark opening a file is dropped. A line longer than
:data:`MAX_LINE_BYTES` is skipped as it is read and counted in :attr:`FileLines.too_long`, so
memory stays within one line and one block whatever the file.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cds_hooks.registry.export_reader import MAX_LINE_BYTES, ExportError

READ_BYTES = 4 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
_BREAKS = (ord("\n"), ord("\r"))


@dataclass(frozen=True)
class Piece:
    """A file, or the byte range ``[start, end)`` of a plain file (``end`` None: to its end)."""

    path: Path
    gzipped: bool = False
    start: int = 0
    end: int | None = None


class FileLines:
    """Iterating gives lists of lines (one per block read); a corrupt gzip file raises
    :class:`ExportError`."""

    def __init__(self, piece: Piece) -> None:
        self.piece = piece
        self.too_long = 0

    def __iter__(self) -> Iterator[list[bytes]]:
        piece = self.piece
        try:
            with gzip.open(piece.path, "rb") if piece.gzipped else io.FileIO(piece.path, "r") as handle:
                yield from self._lines(self._owned(handle))
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ExportError(f"the export cannot be read: {piece.path.name}: {exc}") from exc

    def _owned(self, handle: gzip.GzipFile | io.FileIO) -> Iterator[bytes]:
        """The bytes of the lines that start in the piece, in chunks."""
        start, end = self.piece.start, self.piece.end
        if 0 < start <= len(BOM):
            handle.seek(0)
            if handle.read(len(BOM)) == BOM:
                start = 0  # the first line starts after the mark: at or after ``start``, so here
            handle.seek(0)
        if start > 0:
            handle.seek(start - 1)  # a line starts at ``start`` only if a line break precedes it
            while True:
                data = handle.read(READ_BYTES)
                if not data:
                    return
                cut = _first_break(data)
                if cut >= 0:
                    break
            data = data[cut + 1 :]
            position = handle.tell() - len(data)
            data = data or handle.read(READ_BYTES)
        else:
            data = handle.read(max(READ_BYTES, len(BOM)))
            while len(data) < len(BOM) and (more := handle.read(READ_BYTES)):
                data += more
            position = len(BOM) if data.startswith(BOM) else 0
            data = data[position:] or handle.read(READ_BYTES)
        while data:
            if end is not None and position + len(data) >= end:
                break
            yield data
            position += len(data)
            data = handle.read(READ_BYTES)
        else:
            return
        if end is None or position >= end:  # no line starts in the piece (a long line spans it)
            return
        head, tail = data[: end - position], data[end - position :]
        yield head
        if head[-1] in _BREAKS:
            return
        while True:  # finish the line that starts before the end
            if not tail:
                tail = handle.read(READ_BYTES)
                if not tail:
                    return
            cut = _first_break(tail)
            if cut >= 0:
                yield tail[: cut + 1]
                return
            yield tail
            tail = b""

    def _lines(self, chunks: Iterator[bytes]) -> Iterator[list[bytes]]:
        limit = MAX_LINE_BYTES
        pending = b""
        skipping = False  # inside a line too long to keep: dropped up to its end
        for chunk in chunks:
            data = chunk
            if skipping:
                cut = _first_break(data)
                if cut < 0:
                    continue
                data, skipping = data[cut:], False
            block = pending + data if pending else data
            last = max(block.rfind(b"\n"), block.rfind(b"\r"))
            if last < 0:
                pending = block
            else:
                pending = block[last + 1 :]
                lines = block[:last].splitlines()
                yield lines if last <= limit else self._short(lines)
            if len(pending) > limit:
                self.too_long += 1
                pending, skipping = b"", True
        if pending and not skipping:
            yield [pending]

    def _short(self, lines: list[bytes]) -> list[bytes]:
        kept = [line for line in lines if len(line) <= MAX_LINE_BYTES]
        self.too_long += len(lines) - len(kept)
        return kept


def _first_break(data: bytes) -> int:
    found = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(found, default=-1)
