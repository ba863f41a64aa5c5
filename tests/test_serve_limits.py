"""``crs-cds serve`` holds its edge (issue 12): a request header far over the limit is refused
(4xx or a closed connection) as soon as the limit is passed, and ``/healthz`` keeps answering.

Run against a real ``crs-cds serve`` process because the limit lives in the HTTP parser uvicorn
is started with, which an in-process TestClient never exercises. Bounded: 1-2 MB prove it.
"""

from __future__ import annotations

import contextlib
import copy
import socket
from collections.abc import Iterator

import httpx
import pytest
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from cds_hooks.web.header_limit_protocol import HeaderLimitedHttpToolsProtocol
from cds_hooks.web.server import MAX_REQUEST_HEADER_BYTES, http_protocol
from fastapi.testclient import TestClient

from fhir_builders import temperature
from hook_requests import patient_view, prefetch_from_bundle
from service_process import LOOPBACK, RunningService
from vignette_data import vignette_bundle

SOCKET_TIMEOUT_SECONDS = 10.0
"""A bound on waiting, not a timing assertion: a server that reads the header whole still answers."""


@pytest.fixture(scope="module")
def service() -> Iterator[RunningService]:
    with RunningService({"CRS_CDS_ALLOW_UNAUTHENTICATED": "true"}) as running:
        yield running


def _port(service: RunningService) -> int:
    return int(service.base_url.rsplit(":", 1)[1])


def _status_after_header(service: RunningService, name: str, size_bytes: int, *, finish: bool = True) -> int | None:
    """Send ``GET /healthz`` with one header of ``size_bytes``; the status, or None if closed unanswered."""
    head = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\n{name}: ".encode()
    with socket.create_connection((LOOPBACK, _port(service)), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server stopped reading
            sock.sendall(head + b"a" * size_bytes + (b"\r\n\r\n" if finish else b""))
        reply = bytearray()
        try:
            while chunk := sock.recv(65536):
                reply.extend(chunk)
        except ConnectionResetError:
            pass
    if not reply.startswith(b"HTTP/1.1 "):
        return None
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("name", "size_bytes"),
    [
        pytest.param("Authorization", 1_000_000, id="1MB-authorization-header->refused"),
        pytest.param("X-Filler", 2_000_000, id="2MB-other-header->refused"),
    ],
)
def test_oversized_request_header_is_refused(service: RunningService, name: str, size_bytes: int) -> None:
    status = _status_after_header(service, name, size_bytes)
    # 431 from the service's httptools protocol (or the connection closed while still sending).
    assert status in (431, None), f"answered {status}: the header was read whole"
    assert httpx.get(f"{service.base_url}/healthz", timeout=SOCKET_TIMEOUT_SECONDS).status_code == 200


def test_header_just_over_the_limit_is_431(service: RunningService) -> None:
    """Arriving whole in one read, it passes the parser's bound; the app's own check answers 431."""
    assert _status_after_header(service, "X-Filler", MAX_REQUEST_HEADER_BYTES + 1024) == 431


def test_header_within_the_limit_is_served(service: RunningService) -> None:
    assert _status_after_header(service, "X-Filler", 8 * 1024) == 200


def test_large_body_with_small_headers_is_graded(service: RunningService) -> None:
    """The limit counts headers only: a hook call whose body is megabytes is answered as before."""
    bundle = copy.deepcopy(vignette_bundle("V01"))
    others = [temperature(f"other-{n}", 37.0, patient_id="someone-else") for n in range(3000)]
    bundle["entry"] += [{"resource": resource} for resource in others]
    body = patient_view("v01", prefetch=prefetch_from_bundle(bundle), at="2025-03-04T08:00:00Z")
    response = httpx.post(f"{service.base_url}/cds-services/crs-grade", json=body, timeout=60)
    assert len(response.request.content) > 1_000_000
    assert response.status_code == 200, response.text
    assert response.json()["cards"][0]["summary"].startswith("CRS grade 3")


def test_healthz_answers_while_oversized_headers_are_in_flight(service: RunningService) -> None:
    """Four connections each pushing 1 MB of header (never finished): /healthz still answers."""
    head = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\nAuthorization: Bearer ".encode()
    senders = [socket.create_connection((LOOPBACK, _port(service)), timeout=SOCKET_TIMEOUT_SECONDS) for _ in range(4)]
    try:
        for sock in senders:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(head + b"a" * 1_000_000)
        assert httpx.get(f"{service.base_url}/healthz", timeout=SOCKET_TIMEOUT_SECONDS).status_code == 200
    finally:
        for sock in senders:
            sock.close()


def test_app_answers_431_with_a_short_reason_under_any_server() -> None:
    with TestClient(create_app(Settings())) as client:
        refused = client.get("/cds-services", headers={"X-Filler": "a" * (MAX_REQUEST_HEADER_BYTES + 1)})
        served = client.get("/cds-services", headers={"X-Filler": "a" * 1024})
    assert refused.status_code == 431
    assert refused.json()["issue"][0]["code"] == "too-long"
    assert served.status_code == 200


def test_keep_alive_requests_each_get_their_own_header_budget(service: RunningService) -> None:
    """Ten requests with 8 KiB headers on one connection (80 KiB in all) are all served."""
    request = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\nX-Filler: {'a' * 8192}\r\n\r\n".encode()
    with socket.create_connection((LOOPBACK, _port(service)), timeout=SOCKET_TIMEOUT_SECONDS) as sock:
        sock.sendall(request * 10)
        replies = bytearray()
        while replies.count(b"HTTP/1.1 200") < 10:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {replies.count(b'HTTP/1.1 200')} answers"
            replies.extend(chunk)
    assert b" 431 " not in replies


def test_serve_runs_the_header_limited_httptools_protocol() -> None:
    """httptools is a dependency, so the fast parser with the limit is what ``crs-cds serve`` runs."""
    assert http_protocol() is HeaderLimitedHttpToolsProtocol
    assert HeaderLimitedHttpToolsProtocol.max_header_bytes == MAX_REQUEST_HEADER_BYTES
