"""How ``crs-cds serve`` runs uvicorn: the HTTP parser and its limits, in one place.

Why: uvicorn's httptools parser (picked by default when installed) has no limit on
request-header size, so a 100 MB ``Authorization`` header was read whole (seconds of CPU,
hundreds of MiB) and a few of them stalled ``/healthz``. The service keeps httptools (it is ~2 ms
per hook request faster than h11) with a protocol that counts header bytes and answers 431 past
``MAX_REQUEST_HEADER_BYTES`` (``web/header_limit_protocol.py``); where httptools is not installed
it runs h11 with ``h11_max_incomplete_event_size`` (an unfinished header block is not read past
the limit; uvicorn answers 400 and closes). Either way the app's ``RequestHeaderLimit`` middleware
(``web/middleware.py``) answers 431 to anything over the limit that reached it, whatever server
runs it. The body is not affected (it streams, limited by ``max_body_bytes``). The benchmark's
baseline server uses the same options, so both run under the same parser.
"""

from __future__ import annotations

import asyncio
from typing import Any

MAX_REQUEST_HEADER_BYTES = 32 * 1024
"""Request line + all headers; a CDS Hooks call needs a few KiB (the JWT is the largest part)."""


def http_protocol() -> type[asyncio.Protocol] | str:
    """The header-limited httptools protocol, or ``"h11"`` when httptools is not installed."""
    try:
        from cds_hooks.web.header_limit_protocol import HeaderLimitedHttpToolsProtocol  # noqa: PLC0415
    except ImportError:
        return "h11"
    HeaderLimitedHttpToolsProtocol.max_header_bytes = MAX_REQUEST_HEADER_BYTES
    return HeaderLimitedHttpToolsProtocol


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` besides the app, host and port."""
    return {
        "http": http_protocol(),
        "h11_max_incomplete_event_size": MAX_REQUEST_HEADER_BYTES,
        "log_config": None,
        "access_log": False,
    }
