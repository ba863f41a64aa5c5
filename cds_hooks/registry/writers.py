"""Rows to a file: CSV, Parquet or NDJSON, the same columns in the same order in every format.

An unknown value is an empty CSV cell, JSON null, a Parquet null; ``resolved`` is ``true``/
``false``; lists (``references``, ``otherAnticytokine``) are ``;``-joined in CSV and arrays
elsewhere; times are ISO-8601 UTC strings in CSV and NDJSON and UTC timestamps in Parquet (the
column type a registry pipeline expects there). Writers stream: rows are written as they come.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import orjson

from cds_hooks.registry.rows import COLUMNS, INTEGER_COLUMNS, LIST_COLUMNS, TIME_COLUMNS, Cell, Row

Format = Literal["csv", "parquet", "ndjson"]
FORMATS: tuple[Format, ...] = ("csv", "parquet", "ndjson")
PARQUET_BATCH_ROWS = 10_000


class RowWriter(Protocol):
    def write(self, row: Row) -> None: ...

    def close(self) -> None: ...


def format_for(path: Path, requested: str | None) -> Format:
    """The requested format, else the one the file name says, else CSV."""
    chosen = requested or path.suffix.lstrip(".").lower()
    for known in FORMATS:
        if chosen == known:
            return known
    return "csv"


def open_writer(path: Path, fmt: Format) -> RowWriter:
    if fmt == "parquet":
        return ParquetWriter(path)
    if fmt == "ndjson":
        return NdjsonWriter(path)
    return CsvWriter(path)


def csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(value)
    return str(value)


class CsvWriter:
    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(COLUMNS)

    def write(self, row: Row) -> None:
        self._csv.writerow([csv_cell(row[c]) for c in COLUMNS])

    def close(self) -> None:
        self._file.close()


class NdjsonWriter:
    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = path.open("wb")

    def write(self, row: Row) -> None:
        self._file.write(orjson.dumps({c: row[c] for c in COLUMNS}) + b"\n")

    def close(self) -> None:
        self._file.close()


def parquet_schema() -> Any:
    import pyarrow as pa

    def column_type(name: str) -> Any:
        if name in TIME_COLUMNS:
            return pa.timestamp("us", tz="UTC")
        if name in INTEGER_COLUMNS:
            return pa.int64()
        if name in LIST_COLUMNS:
            return pa.list_(pa.string())
        if name == "resolved":
            return pa.bool_()
        if name == "durationHours":
            return pa.float64()
        return pa.string()

    return pa.schema([pa.field(name, column_type(name)) for name in COLUMNS])


class ParquetWriter:
    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self._schema = parquet_schema()
        self._writer = pq.ParquetWriter(str(path), self._schema)
        self._buffer: list[Row] = []

    def write(self, row: Row) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= PARQUET_BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        columns = {name: [_parquet_value(name, row[name]) for row in self._buffer] for name in COLUMNS}
        self._writer.write_table(pa.Table.from_pydict(columns, schema=self._schema))
        self._buffer = []

    def close(self) -> None:
        if self._buffer:
            self._flush()
        self._writer.close()


def _parquet_value(name: str, value: Cell) -> object:
    if name in TIME_COLUMNS and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value
