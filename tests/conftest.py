"""Shared fixtures: the grading vocabulary, loaded once per session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from cds_hooks.pipeline.evaluate import Grading
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.reading.units import load_units

from spark_support import spark_unavailable_reason


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


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark for the whole test session: two cores, two shuffle partitions, no UI."""
    reason = spark_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("crs-cds-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
