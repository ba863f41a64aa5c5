"""Grading systems: each a pure ``grade(record, *, at, config) -> GradeResult``.

ASTCT 2019 is the default. More systems (CTCAE, Lee 2014, Penn, MSKCC, CARTOX) and ICANS plug in
beside it through :data:`GRADERS`, keyed by the RESULT ``system`` name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from ..findings import PatientRecord
from . import astct
from .config import GradingConfig
from .result import Evidence, GradeResult, Status

Grader = Callable[[PatientRecord, datetime, GradingConfig], GradeResult]


def _astct(record: PatientRecord, at: datetime, config: GradingConfig) -> GradeResult:
    return astct.grade(record, at=at, config=config)


GRADERS: Mapping[str, Grader] = {astct.SYSTEM: _astct}
"""Every grading system the service offers, by its RESULT ``system`` name."""

__all__ = ["GRADERS", "Evidence", "GradeResult", "Grader", "GradingConfig", "Status"]
