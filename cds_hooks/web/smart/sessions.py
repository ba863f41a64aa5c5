"""The SMART app's server-side sessions: a random, HttpOnly cookie id -> launch state or tokens.

Why server-side: the access token reads a patient's chart, so it never reaches the browser. The
token, the PKCE verifier and the ``state`` live in this process's memory only, or sealed in the
shared database (``SharedSessionStore``).

Both stores are called from worker threads (``SmartApp``'s ``create_session``, ``find_session``,
``spend_session``), never on the event loop: the shared one may wait for the database.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from cds_hooks.stores.session_table import EncryptedSessionTable, SessionKind

COOKIE = "crs_smart_session"
COOKIE_PATH = "/smart"
BOARD_COOKIE = "crs_board_session"
BOARD_COOKIE_PATH = "/board"
PURPOSE_COURSE = "course"
PURPOSE_BOARD = "board"
PENDING_SECONDS = 600.0
"""A launch must come back from the authorization server within this time."""
MAX_SESSIONS = 10_000
"""Oldest sessions of each kind (pending launches, signed-in sessions) are dropped beyond this:
launches cannot grow memory without bound."""


@dataclass
class SmartSession:
    """One browser's launch: pending (state + verifier) until the callback, then signed in."""

    iss: str
    expires: float
    state: str | None = None
    verifier: str | None = None
    token_endpoint: str | None = None
    at: str | None = None
    access_token: str | None = field(default=None, repr=False)
    scope: str = ""
    patient: str | None = None
    purpose: str = "course"
    """What the launch was for: ``course`` (one patient's page) or ``board`` (the unit board,
    user-level); a session only ever opens the pages of its own purpose."""


class SessionStore:
    """In-memory sessions keyed by a random id (``secrets.token_urlsafe``); one process only.

    Pending launches (state + verifier, no token) and signed-in sessions are kept and bounded
    apart: a launch needs no authentication, so a flood of ``/smart/launch`` calls may only evict
    other pending launches, never a clinician's signed-in session. Each kind drops its oldest
    beyond its own limit.

    Several replicas would need sticky sessions or a shared store; the page is a convenience for
    one ward, and keeping tokens out of any database is the safer default.

    One lock guards both dictionaries: the routes call the store from worker threads, and a purge
    iterating while another thread inserts, or two threads expiring the same id, would raise.
    """

    def __init__(
        self,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
        *,
        pending_limit: int | None = None,
    ) -> None:
        self._signed_in: OrderedDict[str, SmartSession] = OrderedDict()
        self._pending: OrderedDict[str, SmartSession] = OrderedDict()
        self._limit = limit
        self._pending_limit = limit if pending_limit is None else pending_limit
        self._clock = clock
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._clock()

    def create(self, session: SmartSession) -> str:
        """Store ``session`` under a new random id: signed in when it holds a token, else pending."""
        signed_in = session.access_token is not None
        sessions = self._signed_in if signed_in else self._pending
        limit = self._limit if signed_in else self._pending_limit
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            _purge(sessions, self._clock())
            sessions[session_id] = session
            while len(sessions) > limit:
                sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str | None) -> SmartSession | None:
        with self._lock:
            return self._get(session_id)

    def _get(self, session_id: str | None) -> SmartSession | None:
        """``get`` for a caller holding the lock."""
        if not session_id:
            return None
        for sessions in (self._signed_in, self._pending):
            session = sessions.get(session_id)
            if session is None:
                continue
            if session.expires <= self._clock():
                del sessions[session_id]
                return None
            return session
        return None

    def pop(self, session_id: str | None) -> SmartSession | None:
        with self._lock:  # read and remove at once: a launch's state is spent by one callback only
            session = self._get(session_id)
            if session is not None and session_id is not None:
                self._signed_in.pop(session_id, None)
                self._pending.pop(session_id, None)
            return session

    def counts(self) -> tuple[int, int]:
        """(pending launches, signed-in sessions) currently held."""
        with self._lock:
            return len(self._pending), len(self._signed_in)

    def __len__(self) -> int:
        pending, signed_in = self.counts()
        return pending + signed_in


def _purge(sessions: OrderedDict[str, SmartSession], now: float) -> None:
    for key in [k for k, s in sessions.items() if s.expires <= now]:
        del sessions[key]


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (86 characters of 512 random bits) and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Sessions(Protocol):
    """What the SMART routes need of a session store (in memory, or shared by replicas).

    ``create``, ``get``, ``pop`` and ``counts`` may block (a database round trip) and must be safe
    to call from any thread; ``now`` is a clock read only.
    """

    def now(self) -> float: ...

    def create(self, session: SmartSession) -> str: ...

    def get(self, session_id: str | None) -> SmartSession | None: ...

    def pop(self, session_id: str | None) -> SmartSession | None: ...

    def counts(self) -> tuple[int, int]: ...


def _session(found: tuple[SessionKind, dict[str, Any]] | None) -> SmartSession | None:
    if found is None:
        return None
    try:
        return SmartSession(**found[1])
    except TypeError:
        return None  # written by another version of the service: sign in again


class SharedSessionStore:
    """The same interface as :class:`SessionStore`, kept in the shared database (every replica).

    Payloads are sealed with the settings' key (``stores/session_table.py``); times are wall-clock
    seconds so that replicas agree on expiry. While the database is unreachable the calls raise
    ``StoreUnavailable``, which the app answers with 503 and ``Retry-After``.
    """

    def __init__(self, table: EncryptedSessionTable) -> None:
        self._table = table

    def now(self) -> float:
        return self._table.now()

    def create(self, session: SmartSession) -> str:
        session_id = secrets.token_urlsafe(32)
        kind: SessionKind = "signed-in" if session.access_token is not None else "pending"
        self._table.put(kind, session_id, session.expires, asdict(session))
        return session_id

    def get(self, session_id: str | None) -> SmartSession | None:
        if not session_id:
            return None
        return _session(self._table.get(session_id))

    def pop(self, session_id: str | None) -> SmartSession | None:
        """Read and delete in one statement, so a launch is spent once across every replica and
        every worker thread (two callbacks racing: one signs in, the other is refused)."""
        if not session_id:
            return None
        return _session(self._table.take(session_id))

    def counts(self) -> tuple[int, int]:
        return self._table.counts()

    def __len__(self) -> int:
        pending, signed_in = self.counts()
        return pending + signed_in
