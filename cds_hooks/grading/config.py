"""The time windows and thresholds in force: every one a named, configurable choice.

The defaults are clinical-reference.md section 1 ("Time: what now means"). They are shown on
every card and in every RESULT (``choices``), so a clinician sees what the grade assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

DEFAULT_MASKING_WINDOWS_HOURS: tuple[tuple[str, float], ...] = (
    ("tocilizumab", 14 * 24.0),
    ("siltuximab", 14 * 24.0),
    ("anakinra", 24.0),
    ("anti_cytokine", 14 * 24.0),
    ("corticosteroid", 72.0),
    ("antipyretic", 8.0),
)
"""How long a masking drug given before any CRS may suppress fever, by agent, else by role
(clinical-reference.md section 1, "Masked fever after prophylaxis") [choice, configurable].
An anti-cytokine agent not named gets the longest anti-cytokine window [choice]."""


@dataclass(frozen=True, slots=True)
class GradingConfig:
    fever_window_hours: float = 24.0
    """Fever: a temperature >= 38.0 degC in (T - 24 h, T] [choice]."""
    prior_crs_lookback_days: float = 14.0
    """Prior CRS for masking: a fever in the 14 days before the fever window [choice]."""
    hypotension_window_hours: float = 24.0
    """Hypotension: a low systolic or mean pressure in (T - 24 h, T] [choice]."""
    oxygen_recency_hours: float = 12.0
    """Oxygen: the most recent support record not older than 12 h [choice]."""
    worst_grade_window_hours: float = 72.0
    """Worst grade: the rules evaluated over (T - 72 h, T] [choice]."""
    fever_threshold_celsius: float = 38.0
    """ASTCT 2019 (Lee 2019, BBMT 25:625): fever is >= 38.0 degC."""
    adult_systolic_threshold_mmhg: float = 90.0
    """Hypotension: systolic < 90 mmHg (adapted ASTCT tables, PMC8021214)."""
    mean_arterial_threshold_mmhg: float = 65.0
    """Hypotension: mean arterial pressure < 65 mmHg, above 10 years of age only [choice]."""
    low_flow_max_l_min: float = 6.0
    """ASTCT: low-flow nasal cannula is <= 6 L/min."""
    spo2_alert_percent: float = 92.0
    """Alert (no grade) when SpO2 on room air is below this [choice]."""
    dosing_weight_max_age_days: float = 90.0
    """The oldest weight a tocilizumab dose is computed from [choice]; older: no dose, re-weigh.
    (Dosing only: never shown among the grading choices.)"""
    masking_windows_hours: tuple[tuple[str, float], ...] = DEFAULT_MASKING_WINDOWS_HOURS
    """Agent or role -> hours a masking drug given before CRS may hide fever (section 1) [choice]."""
    support_before_crs_margin_hours: float = 12.0
    """Support that began more than this before the first CRS sign is shown as possibly due to
    another cause (section 1) [choice: temperatures are charted every few hours, so a pressor
    started an hour before the first charted fever is not taken for another cause]."""
    site_timezone: str | None = None
    """IANA zone a date-only time is read in (its whole calendar day); None: wide enough for every
    UTC offset (section 1, "Imprecise times are intervals") [choice]."""

    # The windows as timedeltas, computed once: the rules ask for them at every data time.
    fever_window: timedelta = field(init=False, repr=False, compare=False)
    prior_crs_lookback: timedelta = field(init=False, repr=False, compare=False)
    hypotension_window: timedelta = field(init=False, repr=False, compare=False)
    oxygen_recency: timedelta = field(init=False, repr=False, compare=False)
    worst_grade_window: timedelta = field(init=False, repr=False, compare=False)
    support_before_crs_margin: timedelta = field(init=False, repr=False, compare=False)
    _masking_windows: dict[str, timedelta] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fever_window", timedelta(hours=self.fever_window_hours))
        object.__setattr__(self, "prior_crs_lookback", timedelta(days=self.prior_crs_lookback_days))
        object.__setattr__(self, "hypotension_window", timedelta(hours=self.hypotension_window_hours))
        object.__setattr__(self, "oxygen_recency", timedelta(hours=self.oxygen_recency_hours))
        object.__setattr__(self, "worst_grade_window", timedelta(hours=self.worst_grade_window_hours))
        object.__setattr__(self, "support_before_crs_margin", timedelta(hours=self.support_before_crs_margin_hours))
        windows = {name: timedelta(hours=hours) for name, hours in self.masking_windows_hours}
        object.__setattr__(self, "_masking_windows", windows)

    def masking_window(self, agent: str, role: str) -> timedelta:
        """The window of ``agent`` (else of its role; else none) in which fever may be masked."""
        windows = self._masking_windows
        return windows.get(agent, windows.get(role, timedelta(0)))

    def describe(self) -> dict[str, str]:
        """The choices in force, as shown on the card and in the RESULT."""
        fever = f"{self.fever_threshold_celsius:.1f}"
        return {
            "feverWindow": f"temperature >= {fever} Cel in the {self.fever_window_hours:g} h before T",
            "priorCrs": (
                f"fever in the {self.prior_crs_lookback_days:g} days before the fever window, "
                "or an active CRS Condition, then anti-cytokine, steroid or antipyretic therapy"
            ),
            "hypotension": (
                f"systolic < {self.adult_systolic_threshold_mmhg:g} mm[Hg] (age 1-10: < 70 + 2 x age; < 1 year: < 70) "
                f"or MAP < {self.mean_arterial_threshold_mmhg:g} mm[Hg] (age > 10) "
                f"in the {self.hypotension_window_hours:g} h before T"
            ),
            "oxygen": (
                f"latest support record within {self.oxygen_recency_hours:g} h, or a period covering T; "
                f"low flow <= {self.low_flow_max_l_min:g} L/min"
            ),
            "vasopressor": "administration in effect at T; vasopressin not counted toward 'more than one'",
            "worstGrade": f"worst grade over the {self.worst_grade_window_hours:g} h before T",
            "supportBeforeCrs": f"support begun more than {self.support_before_crs_margin_hours:g} h before the "
            "first CRS sign is shown as possibly another cause; no grade-4 order rests on it alone",
            "impreciseTimes": "a date-only time is its whole day ("
            + (f"in {self.site_timezone}" if self.site_timezone else "any UTC offset, -12:00 to +14:00")
            + "); it counts where the whole day satisfies a rule, else the rule is unknown",
            "maskedFeverAfterProphylaxis": "signs within a masking drug's window, given before any CRS, are "
            "'possible CRS with masked fever': " + ", ".join(f"{k} {v:g} h" for k, v in self.masking_windows_hours),
        }
