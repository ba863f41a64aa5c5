"""One database connection that survives the database: reconnects after a restart or failover.

SQLite (one host; WAL) or PostgreSQL (several replicas) through one URL. Every use runs as one
transaction in :meth:`Database.run`; when the connection is broken (the server restarted, a
failover, a network cut) the work is retried once on a fresh connection, then
:class:`StoreUnavailable` is raised. After a failure, new connection attempts wait for a backoff
(1 s doubling to 30 s) so a database that is down costs each request nothing but a check, not a
connect timeout. Work given to ``run`` must be safe to repeat: every write here is an insert with
``ON CONFLICT DO NOTHING`` or a keyed update.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

log = logging.getLogger("crs_cds.store")

T = TypeVar("T")

CONNECT_TIMEOUT_S = 3
"""PostgreSQL connect timeout: a request never waits longer than this for a dead server."""
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0


class StoreUnavailable(Exception):
    """The database cannot be reached now; callers degrade (spool, 503), never answer 500."""


class Connection(Protocol):
    """What the stores need of a DB-API connection (sqlite3 and psycopg both offer it)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def close(self) -> None: ...


class Transaction:
    """The connection inside one transaction, with ``?`` placeholders on either database."""

    def __init__(self, conn: Connection, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s") if self._postgres else sql, params)


def sqlite_path(database_url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////abs/path.db`` -> a path."""
    prefix = "sqlite:///"
    if not database_url.startswith(prefix):
        raise ValueError("not a sqlite:/// database URL")
    return Path(database_url[len(prefix) :])


def is_postgres_url(database_url: str) -> bool:
    return database_url.startswith(("postgresql://", "postgres://"))


def missing_driver(database_url: str) -> str | None:
    """Why this installation cannot open ``database_url`` (an optional driver not installed), or None.

    Checked when the settings are read, so a PostgreSQL URL without psycopg stops start-up with one
    line naming the fix instead of a traceback when the store is first opened. Only looks the
    module up (no import), so start-up does not pay for a driver it may not use.
    """
    if is_postgres_url(database_url) and importlib.util.find_spec("psycopg") is None:
        return "a postgresql:// database URL needs psycopg: pip install 'crs-cds-hooks[postgres]'"
    return None


@dataclass(frozen=True)
class StoreHealth:
    """What ``/readyz`` reports: ``up``, or ``down`` with the time of the last failure."""

    state: str
    description: str
    down_since: float | None = None


class Database:
    """A connection opened on first use and reopened after it breaks; one lock per process.

    ``connect`` is the seam for tests (a factory returning a DB-API connection).
    """

    def __init__(
        self,
        database_url: str,
        *,
        connect: Callable[[], Connection] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.postgres = is_postgres_url(database_url)
        self.description = "PostgreSQL" if self.postgres else f"SQLite {sqlite_path(database_url)}"
        self._url = database_url
        self._connect_fn = connect or self._default_connect
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST_S
        self._schema: list[str] = []

    # -- connecting ---------------------------------------------------------------------

    def _default_connect(self) -> Connection:
        if self.postgres:
            import psycopg  # noqa: PLC0415  (optional dependency: only PostgreSQL sites install it)

            conn: Connection = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            return conn
        path = sqlite_path(self._url)
        path.parent.mkdir(parents=True, exist_ok=True)
        lite = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash; see README
        return lite

    def ensure_schema(self, statements: Sequence[str]) -> None:
        """Create tables now, or, while the database is down, on the first connection that works
        (every new connection applies them; they are all ``IF NOT EXISTS``)."""
        self._schema.extend(statements)
        try:
            self.run(lambda tx: [tx.execute(s) for s in statements])
        except StoreUnavailable:
            log.warning("tables will be created when the database is reachable", extra={"store": self.description})

    def check(self) -> StoreHealth:
        """Try the database now (a no-op transaction) and say how it is."""
        with contextlib.suppress(StoreUnavailable):
            self.run(lambda tx: None)
        return self.health()

    def _open(self) -> Connection:
        if self._conn is not None:
            return self._conn
        now = self._clock()
        if self._down_since is not None and now < self._retry_at:
            raise StoreUnavailable(f"{self.description} unavailable (retrying in {self._retry_at - now:.0f} s)")
        try:
            conn = self._connect_fn()
            for statement in self._schema:
                conn.execute(statement)
        except Exception as exc:
            self._failed(exc)
            raise StoreUnavailable(f"{self.description} unavailable: {type(exc).__name__}") from None
        self._conn = conn
        if self._down_since is not None:
            log.warning("database reachable again", extra={"store": self.description})
        self._down_since = None
        self._backoff = BACKOFF_FIRST_S
        return conn

    def _failed(self, exc: BaseException) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            log.warning("database unreachable", extra={"store": self.description, "error": type(exc).__name__})
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; dropped anyway
                conn.close()

    # -- using ----------------------------------------------------------------------------

    def run(self, work: Callable[[Transaction], T]) -> T:
        """``work`` in one transaction, committed before this returns; retried once on a fresh
        connection when the connection broke. Raises :class:`StoreUnavailable` when it cannot."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._open()
                try:
                    conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
                    try:
                        result = work(Transaction(conn, postgres=self.postgres))
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
                except Exception as exc:
                    if not self._is_connection_error(exc):
                        raise
                    self._drop()
                    if attempt == 2:
                        self._failed(exc)
                        raise StoreUnavailable(f"{self.description} unavailable: {type(exc).__name__}") from None
            raise AssertionError("unreachable")  # pragma: no cover

    def _is_connection_error(self, exc: BaseException) -> bool:
        if self.postgres:
            import psycopg  # noqa: PLC0415

            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return isinstance(exc, sqlite3.OperationalError | sqlite3.InterfaceError | sqlite3.ProgrammingError)

    def health(self) -> StoreHealth:
        if self._down_since is None:
            return StoreHealth("up", self.description)
        return StoreHealth("down", self.description, self._down_since)

    def close(self) -> None:
        with self._lock:
            self._drop()
