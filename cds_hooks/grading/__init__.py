"""Grading systems: each a pure ``grade(record, *, at, config) -> GradeResult``.

ASTCT 2019 is the default. CTCAE v5.0 and v6.0, Lee 2014, Penn, MSKCC and CARTOX grade the same findings
beside it (shown side by side when chosen); all are registered in :data:`GRADERS`, keyed by the
RESULT ``system`` name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from cds_hooks.grading import astct, cartox, ctcae, lee2014, mskcc, penn
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.result import Evidence, GradeResult, Status
from cds_hooks.reading.record import PatientRecord

Grader = Callable[[PatientRecord, datetime, GradingConfig], GradeResult]


def _astct(record: PatientRecord, at: datetime, config: GradingConfig) -> GradeResult:
    return astct.grade(record, at=at, config=config)


def _system(module: Callable[..., GradeResult]) -> Grader:
    def grader(record: PatientRecord, at: datetime, config: GradingConfig) -> GradeResult:
        return module(record, at=at, config=config)

    return grader


GRADERS: Mapping[str, Grader] = {
    astct.SYSTEM: _astct,
    ctcae.SYSTEM: _system(ctcae.grade),
    ctcae.V6_SYSTEM: _system(ctcae.grade_v6),
    lee2014.SYSTEM: _system(lee2014.grade),
    penn.SYSTEM: _system(penn.grade),
    mskcc.SYSTEM: _system(mskcc.grade),
    cartox.SYSTEM: _system(cartox.grade),
}
"""Every grading system the service offers, by its RESULT ``system`` name."""

__all__ = ["GRADERS", "Evidence", "GradeResult", "Grader", "GradingConfig", "Status"]
