"""Shared fixtures: the grading vocabulary, loaded once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cds_hooks.pipeline.evaluate import Grading
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units


@pytest.fixture(scope="session")
def grading() -> Grading:
    return Grading(load_terminology(), load_units())


@pytest.fixture(scope="session", autouse=True)
def _development_service_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests build the app with ``Settings()``: run it as the local demo does (no CDS client
    authentication) with its card/feedback store in a temporary file. Security tests pass their
    own settings explicitly and never rely on this."""
    database = tmp_path_factory.mktemp("store") / "crs-cds.sqlite3"
    saved = {key: os.environ.get(key) for key in _DEV_ENV}
    os.environ.update({"CRS_CDS_ALLOW_UNAUTHENTICATED": "true", "CRS_CDS_DATABASE_URL": f"sqlite:///{database}"})
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_DEV_ENV = ("CRS_CDS_ALLOW_UNAUTHENTICATED", "CRS_CDS_DATABASE_URL")
