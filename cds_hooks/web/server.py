"""How ``crs-cds serve`` runs uvicorn: the HTTP parser and its limits, in one place.

Why h11 with ``h11_max_incomplete_event_size``: uvicorn's httptools parser (picked by default
when installed) has no limit on request-header size, so a 100 MB ``Authorization`` header was read
whole (seconds of CPU, hundreds of MiB) and a few of them stalled ``/healthz``. h11 keeps an
incomplete event (the request line and headers) to at most this many bytes, then uvicorn answers
400 and closes the connection; a header block that arrives whole in one read is parsed, and the
app's ``RequestHeaderLimit`` middleware answers it 431 (``web/middleware.py``). The body is not
affected (it streams, limited by ``max_body_bytes``). The benchmark's baseline server imports the
same options, so both run under the same parser.
"""

from __future__ import annotations

from typing import Any

MAX_REQUEST_HEADER_BYTES = 32 * 1024
"""Request line + all headers; a CDS Hooks call needs a few KiB (the JWT is the largest part)."""


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` besides the app, host and port."""
    return {
        "http": "h11",
        "h11_max_incomplete_event_size": MAX_REQUEST_HEADER_BYTES,
        "log_config": None,
        "access_log": False,
    }
