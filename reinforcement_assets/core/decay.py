"""Has the champion's accuracy decayed? A one-sided exact binomial test against its reference.

H0: the champion's accuracy is at least `reference - min_drop`. The decay trigger fires only when
the recent window rejects H0 at `significance_level`, on at least `min_samples` predictions,
and not within `cooldown` of its last firing. Why this test rather than DDM or ADWIN:
docs/triggers.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from scipy.stats import binomtest

from .. import settings
from .records import AccuracyCount


@dataclass(frozen=True)
class DecayThresholds:
    window: timedelta = timedelta(hours=settings.DECAY_WINDOW_HOURS)
    min_samples: int = settings.DECAY_MIN_SAMPLES
    min_drop: float = settings.DECAY_MIN_DROP  # absolute accuracy points below the reference
    significance_level: float = settings.DECAY_SIGNIFICANCE_LEVEL
    cooldown: timedelta = timedelta(hours=settings.DECAY_COOLDOWN_HOURS)

    def __post_init__(self) -> None:
        if self.window <= timedelta(0) or self.cooldown < timedelta(0):
            raise ValueError("the decay window must be positive and the cooldown not negative")
        if self.min_samples < 1:
            raise ValueError("min_samples must be at least 1")
        if not 0 <= self.min_drop < 1:
            raise ValueError("min_drop must lie in [0, 1)")
        if not 0 < self.significance_level < 1:
            raise ValueError("significance_level must lie in (0, 1)")


@dataclass(frozen=True)
class DecayVerdict:
    decayed: bool
    reason: str
    evaluated: int
    accuracy: float | None
    reference: float | None
    p_value: float | None


def assess_decay(count: AccuracyCount, reference: float | None, thresholds: DecayThresholds) -> DecayVerdict:
    """Whether `count` shows accuracy significantly more than `min_drop` below `reference`, and what was seen."""
    n, accuracy = count.evaluated, count.accuracy

    def verdict(decayed: bool, reason: str, p_value: float | None = None) -> DecayVerdict:
        return DecayVerdict(decayed, reason, n, accuracy, reference, p_value)

    seen = f"n={n}, accuracy {_fmt(accuracy)} vs reference {_fmt(reference)}"
    if reference is None:
        return verdict(False, f"{seen}: the champion has no reference accuracy (recorded at promotion)")
    if n < thresholds.min_samples:
        return verdict(False, f"{seen}: fewer than the {thresholds.min_samples} predictions needed to test")
    floor = reference - thresholds.min_drop
    if floor <= 0:
        return verdict(False, f"{seen}: the reference leaves no room for a drop of {thresholds.min_drop:g}")
    p_value = float(binomtest(count.correct, n, floor, alternative="less").pvalue)
    tested = f"{seen}, p={p_value:.3g} for accuracy below {floor:.3f} (reference - {thresholds.min_drop:g})"
    if p_value < thresholds.significance_level:
        return verdict(True, f"{tested} < {thresholds.significance_level:g}: accuracy has decayed", p_value)
    return verdict(False, f"{tested} >= {thresholds.significance_level:g}: no significant decay", p_value)


def cooling_down(last_fired: datetime | None, now: datetime, cooldown: timedelta) -> bool:
    """Whether the trigger fired less than `cooldown` before `now`."""
    return last_fired is not None and now - last_fired < cooldown


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
