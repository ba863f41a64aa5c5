"""The SMART app's server-side sessions: a random, HttpOnly cookie id -> launch state or tokens.

Why server-side: the access token reads a patient's chart, so it never reaches the browser. The
token, the PKCE verifier and the ``state`` live in this process's memory only.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "crs_smart_session"
COOKIE_PATH = "/smart"
PENDING_SECONDS = 600.0
"""A launch must come back from the authorization server within this time."""
MAX_SESSIONS = 10_000
"""Oldest sessions are dropped beyond this: launches cannot grow memory without bound."""


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


class SessionStore:
    """In-memory sessions keyed by a random id (``secrets.token_urlsafe``); one process only.

    Several replicas would need sticky sessions or a shared store; the page is a convenience for
    one ward, and keeping tokens out of any database is the safer default.
    """

    def __init__(self, limit: int = MAX_SESSIONS, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions: OrderedDict[str, SmartSession] = OrderedDict()
        self._limit = limit
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def create(self, session: SmartSession) -> str:
        self._purge()
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = session
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return session_id

    def get(self, session_id: str | None) -> SmartSession | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def pop(self, session_id: str | None) -> SmartSession | None:
        session = self.get(session_id)
        if session is not None and session_id is not None:
            del self._sessions[session_id]
        return session

    def __len__(self) -> int:
        return len(self._sessions)

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier (86 characters of 512 random bits) and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
