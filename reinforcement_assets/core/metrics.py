"""The metrics a gate or the decay trigger can watch, computed from confusion matrices.

A confusion matrix holds everything accuracy, balanced accuracy and macro-F1 depend on, so the
same functions score a holdout, thousands of bootstrap resamples of it at once (a stack of
matrices), and the hourly counts of the decay trigger. They agree with scikit-learn's
`accuracy_score`, `balanced_accuracy_score` and `f1_score(average="macro")` (a test holds them equal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GATE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def check_gate_metric(name: str) -> str:
    """`name` if it is a metric the gate can watch, else a ValueError naming the choices."""
    if name not in GATE_METRICS:
        raise ValueError(f"unknown gate metric {name!r}: choose one of {', '.join(GATE_METRICS)}")
    return name


def confusion(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> np.ndarray:
    """Counts[i, j] of rows whose truth is labels[i] and prediction labels[j] (labels outside are ignored)."""
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    true = np.fromiter((index.get(v, -1) for v in y_true), dtype=np.int64, count=len(y_true))
    pred = np.fromiter((index.get(v, -1) for v in y_pred), dtype=np.int64, count=len(y_pred))
    keep = (true >= 0) & (pred >= 0)
    return np.bincount(true[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def metric_of(name: str, matrices: np.ndarray) -> np.ndarray | float:
    """`name` of one confusion matrix (a float) or of a stack of them, shape (..., k, k)."""
    matrices = np.asarray(matrices, dtype=np.float64)
    value = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}[
        check_gate_metric(name)](matrices)
    return float(value) if np.ndim(value) == 0 else value


def accuracy(matrices: np.ndarray) -> np.ndarray:
    total = matrices.sum(axis=(-2, -1))
    return _ratio(np.trace(matrices, axis1=-2, axis2=-1), total)


def balanced_accuracy(matrices: np.ndarray) -> np.ndarray:
    """The mean recall over the classes that occur in the truth."""
    support = matrices.sum(axis=-1)
    recall = _ratio(np.diagonal(matrices, axis1=-2, axis2=-1), support)
    present = support > 0
    return _ratio(np.where(present, recall, 0.0).sum(axis=-1), present.sum(axis=-1))


def macro_f1(matrices: np.ndarray) -> np.ndarray:
    """The mean F1 over the classes that occur in the truth or the predictions (0 for a class never
    predicted right, as scikit-learn's `zero_division=0`)."""
    hits = np.diagonal(matrices, axis1=-2, axis2=-1)
    seen = matrices.sum(axis=-1) + matrices.sum(axis=-2)
    f1 = _ratio(2 * hits, seen)
    present = seen > 0
    return _ratio(np.where(present, f1, 0.0).sum(axis=-1), present.sum(axis=-1))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (no rows: no metric)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)
