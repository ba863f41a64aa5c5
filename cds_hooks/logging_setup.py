"""Structured (JSON-lines) logging that never carries tokens, JWTs or request bodies.

Log calls pass only fields chosen at the call site (``extra=``); a redacting filter is the
second line of defence: anything shaped like a bearer token or JWT is replaced before output.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

_SECRET = re.compile(r"(eyJ[\w-]+\.[\w-]+\.[\w-]*|Bearer\s+[\w\-.~+/]+=*)")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


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


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx and httpcore log every request URL (at info and debug), and a FHIR search URL names the
    # patient (``Observation?patient=<id>``): no patient identifier in any log line, at any level.
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(logging.WARNING)


QUIET_LIBRARIES = ("httpx", "httpcore")
