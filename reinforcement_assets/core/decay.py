"""Has the champion's gate metric decayed? A one-sided test of its recent value against its reference.

H0: the champion's metric (accuracy, balanced accuracy or macro-F1) is at least `reference -
min_drop`. The decay trigger fires only when the recent window rejects H0 at `significance_level`,
on at least `min_samples` predictions, and not within `cooldown` of its last firing.

Accuracy is a binomial proportion, so its test is exact (`scipy.stats.binomtest`). Balanced accuracy
and macro-F1 are functions of the whole confusion matrix with no closed-form distribution: their
p-value is that of a parametric bootstrap of the recent matrix (multinomial resamples of its cells,
seeded so that the same counts always give the same verdict). Why these rather than DDM or ADWIN:
docs/triggers.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy.stats import binomtest

from .. import settings
from .metrics import check_gate_metric, metric_of
from .records import AccuracyCount, ConfusionCount, ModelVersion

BOOTSTRAP_RESAMPLES = 2_000
BOOTSTRAP_SEED = 0
# Resampled cells held at once (int64): bounds the bootstrap's memory at about 32 MB whatever the labels.
_CELLS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class DecayThresholds:
    window: timedelta = timedelta(hours=settings.DECAY_WINDOW_HOURS)
    min_samples: int = settings.DECAY_MIN_SAMPLES
    min_drop: float = settings.DECAY_MIN_DROP  # absolute points of the metric below the reference
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
    value: float | None  # the metric's recent value
    reference: float | None
    p_value: float | None
    metric: str = "accuracy"

    @property
    def accuracy(self) -> float | None:
        """The recent accuracy, when accuracy is the metric watched."""
        return self.value if self.metric == "accuracy" else None


# Where a version's metrics may hold a metric: `f1` is the same macro-F1, recorded before `macro_f1` was.
_RECORDED_AS = {"accuracy": ("accuracy",), "balanced_accuracy": ("balanced_accuracy",), "macro_f1": ("macro_f1", "f1")}


def reference_for(version: ModelVersion, metric: str) -> float | None:
    """The value of `metric` the decay trigger compares `version` with: for accuracy its
    `reference_accuracy` (set at promotion or registration, or given by the user), else the value
    recorded in its metrics (by the promotion gate, or from the logged rows at registration)."""
    if check_gate_metric(metric) == "accuracy" and version.reference_accuracy is not None:
        return version.reference_accuracy
    for key in _RECORDED_AS[metric]:
        value = version.metrics.get(key)
        if not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def assess_decay(
    count: AccuracyCount | ConfusionCount, reference: float | None, thresholds: DecayThresholds,
    metric: str = "accuracy", *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
) -> DecayVerdict:
    """Whether `count` shows `metric` significantly more than `min_drop` below `reference`, and what was seen.

    Accuracy needs the counts of right predictions (either record); the other metrics a `ConfusionCount`,
    and are judged on the rows of its matrix.
    """
    metric = check_gate_metric(metric)
    if metric == "accuracy":
        n, value, seen_extra = count.evaluated, count.accuracy, ""
    elif isinstance(count, ConfusionCount):
        n = count.in_matrix
        value = metric_of(metric, count.array) if n else None
        seen_extra = f" ({count.left_out} more with rarer labels left out)" if count.left_out else ""
    else:
        raise TypeError(f"{metric} needs a ConfusionCount, not {type(count).__name__}")

    def verdict(decayed: bool, reason: str, p_value: float | None = None) -> DecayVerdict:
        return DecayVerdict(decayed, reason, n, value, reference, p_value, metric)

    seen = f"n={n}{seen_extra}, {metric} {_fmt(value)} vs reference {_fmt(reference)}"
    if reference is None:
        recorded = "recorded at promotion" if metric == "accuracy" else "recorded at promotion or registration"
        return verdict(False, f"{seen}: the champion has no reference {metric} ({recorded})")
    if n < thresholds.min_samples:
        return verdict(False, f"{seen}: fewer than the {thresholds.min_samples} predictions needed to test")
    floor = reference - thresholds.min_drop
    if floor <= 0:
        return verdict(False, f"{seen}: the reference leaves no room for a drop of {thresholds.min_drop:g}")
    if metric == "accuracy":
        p_value = float(binomtest(count.correct, n, floor, alternative="less").pvalue)
    else:
        p_value = bootstrap_p_value(count.array, metric, floor, resamples=resamples, seed=seed)
    tested = f"{seen}, p={p_value:.3g} for {metric} below {floor:.3f} (reference - {thresholds.min_drop:g})"
    if p_value < thresholds.significance_level:
        return verdict(True, f"{tested} < {thresholds.significance_level:g}: {metric} has decayed", p_value)
    return verdict(False, f"{tested} >= {thresholds.significance_level:g}: no significant decay", p_value)


def bootstrap_p_value(matrix: np.ndarray, metric: str, floor: float, *, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> float:
    """The p-value of H0 "`metric` is at least `floor`" given the confusion `matrix`: the share of
    `resamples` parametric bootstrap resamples (as many rows, multinomial over its cells with their
    observed shares) whose `metric` is at least `floor`."""
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    matrix = np.asarray(matrix, dtype=np.int64)
    k, n = matrix.shape[0], int(matrix.sum())
    if n == 0:
        raise ValueError("an empty confusion matrix has no metric to resample")
    flat = matrix.ravel()
    cells = np.flatnonzero(flat)  # empty cells stay empty in every resample
    shares = flat[cells] / n
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // (k * k))
    at_least = 0
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        stack = np.zeros((size, k * k), dtype=np.int64)
        stack[:, cells] = rng.multinomial(n, shares, size=size)
        values = np.asarray(metric_of(metric, stack.reshape(size, k, k)))
        at_least += int(np.count_nonzero(values >= floor))
    return at_least / resamples


def cooling_down(last_fired: datetime | None, now: datetime, cooldown: timedelta) -> bool:
    """Whether the trigger fired less than `cooldown` before `now`."""
    return last_fired is not None and now - last_fired < cooldown


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
