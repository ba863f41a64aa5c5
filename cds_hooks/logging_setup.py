"""Structured (JSON-lines) logging that never carries tokens, JWTs, request bodies or patient ids.

Log calls pass only fields chosen at the call site (``extra=``), patient ids only as a hash; a
redacting formatter is the second line of defence: anything shaped like a bearer token or JWT is
replaced before output.

Libraries are the third: the HTTP client logs every URL it requests at INFO (``Patient/<id>``,
``?patient=<id>``), its transport logs response headers at DEBUG, and uvicorn's access and ASGI
loggers print paths, query strings and headers. ``protect_library_loggers`` puts a redacting
filter on each of those loggers (so every record they create, at any level and for any handler,
has URL paths and queries, ``Patient/<id>`` references and tokens removed), and
``configure_logging`` also keeps them at WARNING so the request-by-request chatter is not logged.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO, Any

import orjson

_SECRET = re.compile(r"(eyJ[\w-]+\.[\w-]+\.[\w-]*|Bearer\s+[\w\-.~+/]+=*)")
_URL_PATH = re.compile(r"(?i)\b((?:https?|wss?)://[^/\s'\"<>?#]+)[/?#][^\s'\"<>]*")
_PATIENT_REFERENCE = re.compile(r"(?i)\b(Patient(?:/|%2F))[A-Za-z0-9\-.]{1,64}")
_PATIENT_PARAMETER = re.compile(r"(?i)(\b(?:patient|subject|_id)=)[^&\s'\"<>]+")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "uvicorn.access",
    "uvicorn.asgi",
    "uvicorn.error",
)
"""Loggers of libraries that put URLs, query strings or headers into their messages."""
QUIET_LIBRARIES = ("httpx", "httpcore", "uvicorn.access", "uvicorn.asgi")


def redact(text: str) -> str:
    """Tokens and JWTs replaced (every log line of the service goes through this)."""
    return _SECRET.sub("[redacted]", text)


def redact_identifiers(text: str) -> str:
    """Tokens, URL paths and queries (the host stays), patient references and parameters replaced."""
    text = _SECRET.sub("[redacted]", text)
    text = _URL_PATH.sub(r"\1/[redacted]", text)
    text = _PATIENT_REFERENCE.sub(r"\1[redacted]", text)
    return _PATIENT_PARAMETER.sub(r"\1[redacted]", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with :func:`redact_identifiers` before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact_identifiers(message)
        record.args = None
        return True


def protect_library_loggers() -> None:
    """Attach the redacting filter to every logger in :data:`LIBRARY_LOGGERS` (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = redact(value) if isinstance(value, str) else value
        return orjson.dumps(payload, default=str).decode()


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    """JSON lines on ``stream`` (stderr); library request logs quiet and redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    protect_library_loggers()
