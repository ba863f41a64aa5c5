"""uvicorn's httptools protocol with a limit on request-header size (uvicorn has none for it).

Why not switch to h11, which has ``h11_max_incomplete_event_size``: h11 is pure Python and costs
about 2 ms more per 160 KB hook request (measured with ``bench/run_bench.py``, baseline p50 1.7 ms
with httptools, 4.0 ms with h11), a large share of the service's own time. httptools accumulates
an unfinished header inside the parser without any bound (a 100 MB ``Authorization`` header was
read whole), so this protocol counts the bytes fed while a request's headers are incomplete and,
past the limit, answers 431 and closes the connection. The count is checked after each read, so
at most one read (<= 256 KiB) beyond the limit is ever parsed. A chunk that ends one message and
starts the next is counted whole for the new one: an over-count that can only refuse earlier.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


class HeaderLimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses a request whose line and headers exceed ``max_header_bytes``."""

    max_header_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if not self._awaiting_headers:
            return
        self._header_bytes += len(data)
        if self._header_bytes > self.max_header_bytes:
            self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        reason = orjson.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "error",
                        "code": "too-long",
                        "diagnostics": f"request headers are larger than {self.max_header_bytes} bytes",
                    }
                ],
            }
        )
        head = [
            _STATUS_431,
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(reason)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + reason)
        self.transport.close()
