"""Fixtures for integration tests that talk to a real FHIR R4 server over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_server import FhirServerError, RunningFhirServer


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[RunningFhirServer]:
    """One real FHIR server per test session (startup costs ~1 s).

    It never skips: a missing package or a server that will not start fails the tests that need
    it, so CI cannot go green without having exercised the real server.
    """
    server = RunningFhirServer()
    try:
        server.start()
    except FhirServerError as exc:
        pytest.fail(f"Cannot start the integration FHIR server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
