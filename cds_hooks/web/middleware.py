"""A hard limit on request-header size, answered 431 (RFC 6585) before any route runs.

Why here as well as in the parser: h11's ``max_incomplete_event_size`` only bounds headers that
arrive incomplete, so a header block a little over the limit that arrives in one read is still
parsed. The parser bounds the memory and CPU an attacker can spend (``web/server.py``); this
middleware makes the limit exact and the answer a clear 431 with a short JSON reason, under any
server the app is run with.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from cds_hooks.web.responses import error_body


class RequestHeaderLimit:
    """Pure ASGI: counts the request line's path and query and every header name and value."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _header_bytes(scope) > self.max_bytes:
            body = orjson.dumps(error_body(431, f"request headers are larger than {self.max_bytes} bytes"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 431,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _header_bytes(scope: Scope) -> int:
    path = scope.get("raw_path") or scope.get("path", "").encode()
    size = len(path) + len(scope.get("query_string", b""))
    for name, value in scope.get("headers", ()):
        size += len(name) + len(value) + 4  # ": " and CRLF
    return size
