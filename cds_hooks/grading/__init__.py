"""Grading systems: each a pure ``grade(record, *, at, config) -> GradeResult``.

ASTCT 2019 is the default. CTCAE v5.0 and v6.0, Lee 2014, Penn, MSKCC and CARTOX grade the same findings
beside it (shown side by side when chosen); all are registered in :data:`GRADERS`, keyed by the
RESULT ``system`` name. ICANS systems (ASTCT 2019, CTCAE v6.0) grade the neurologic findings and
are listed in :data:`ICANS_SYSTEMS`; ``CRS_CDS_SYSTEMS`` may name either kind (:data:`KNOWN_SYSTEMS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from cds_hooks.grading import astct, cartox, ctcae, lee2014, mskcc, penn
from cds_hooks.grading.config import GradingConfig
from cds_hooks.grading.icans import ICANS_RULES
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
"""Every CRS grading system the service offers, by its RESULT ``system`` name."""

ICANS_SYSTEMS: tuple[str, ...] = tuple(ICANS_RULES)
"""Every ICANS grading system (ASTCT's is always graded when ICANS is on; others when chosen)."""

KNOWN_SYSTEMS: tuple[str, ...] = (*GRADERS, *ICANS_SYSTEMS)
"""What ``CRS_CDS_SYSTEMS`` and ``crs-cds grade --systems`` accept."""

__all__ = [
    "GRADERS",
    "ICANS_SYSTEMS",
    "KNOWN_SYSTEMS",
    "Evidence",
    "GradeResult",
    "Grader",
    "GradingConfig",
    "Status",
]
