"""Shared fixtures: the grading vocabulary, loaded once per session."""

from __future__ import annotations

import pytest

from cds_hooks.evaluate import Grading
from cds_hooks.terminology import load_terminology
from cds_hooks.units import load_units


@pytest.fixture(scope="session")
def grading() -> Grading:
    return Grading(load_terminology(), load_units())
