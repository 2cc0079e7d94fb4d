"""Synthetic prediction logs with concept drift for a deployed classifier."""

from __future__ import annotations

import math

from dataclasses import dataclass, field

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .labels import label_text
from .records import EVALUATION_COLUMNS

FEATURE_PREFIX = "x"

DRIFT_KINDS = ("none", "abrupt", "gradual")

BAD_ROW_KINDS = (
    "confidence_missing",
    "confidence_out_of_range",
    "feature_not_numeric",
    "feature_missing",
    "features_empty",
    "label_missing",
)

LOG_COLUMNS = EVALUATION_COLUMNS  # the prediction log as the store ingests it


@dataclass(frozen=True, eq=False)
class Concept:
    """A multi-class linear concept: label = argmax(X @ weights.T + bias)."""

    weights: np.ndarray
    bias: np.ndarray
    classes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        weights = np.array(self.weights, dtype=float)
        bias = np.array(self.bias, dtype=float)
        classes = tuple(str(c) for c in self.classes)
        if weights.ndim != 2:
            raise ValueError("weights must be 2-D (n_classes, n_features)")
        if bias.shape != (weights.shape[0],) or len(classes) != weights.shape[0]:
            raise ValueError("bias and classes must have one entry per row of weights")
        if len(set(classes)) != len(classes):
            raise ValueError("classes must be unique")
        weights.flags.writeable = False
        bias.flags.writeable = False
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "classes", classes)

    @property
    def n_features(self) -> int:
        return self.weights.shape[1]

    def label_index(self, X: np.ndarray) -> np.ndarray:
        """Index into `classes` of the label of each row of `X`."""
        return np.argmax(np.asarray(X, dtype=float) @ self.weights.T + self.bias, axis=1)

    def label(self, X: np.ndarray) -> np.ndarray:
        """String label of each row of `X`."""
        return np.asarray(self.classes)[self.label_index(X)]


def default_classes(n_classes: int) -> tuple[str, ...]:
    """Class names ``class_0 .. class_{n-1}``."""
    return tuple(f"class_{k}" for k in range(n_classes))


def feature_names(n_features: int, prefix: str = FEATURE_PREFIX) -> list[str]:
    """Column names ``x0 .. x{n-1}``."""
    return [f"{prefix}{j}" for j in range(n_features)]


def random_concept(
    n_features: int,
    n_classes: int,
    rng: np.random.Generator,
    classes: tuple[str, ...] | list[str] | None = None,
) -> Concept:
    """Draw a concept with unit-norm class directions and a small bias."""
    if n_features < 2:
        raise ValueError("n_features must be at least 2")
    if n_classes < 2:
        raise ValueError("n_classes must be at least 2")
    classes = default_classes(n_classes) if classes is None else tuple(classes)
    if len(classes) != n_classes:
        raise ValueError("classes must have n_classes entries")
    weights = rng.standard_normal((n_classes, n_features))
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    bias = rng.normal(scale=0.1, size=n_classes)
    return Concept(weights=weights, bias=bias, classes=classes)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _rotation_plane(weights: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal ``u, v``: ``u`` a direction the decision depends on, ``v`` random."""
    n_features = weights.shape[1]
    centered = weights - weights.mean(axis=0)
    u = rng.standard_normal(weights.shape[0]) @ centered
    if np.linalg.norm(u) < 1e-12:
        u = rng.standard_normal(n_features)
    u = _unit(u)
    v = rng.standard_normal(n_features)
    v = _unit(v - (v @ u) * u)
    return u, v


def rotated(concept: Concept, angle: float, rng: np.random.Generator) -> Concept:
    """Rotate the concept's class directions by `angle` radians in a random plane.

    The plane contains a direction the decision depends on, so the rotation
    actually moves class boundaries (rotating-hyperplane drift).
    """
    u, v = _rotation_plane(concept.weights, rng)
    a, b = concept.weights @ u, concept.weights @ v
    cos, sin = np.cos(angle) - 1.0, np.sin(angle)
    weights = (
        concept.weights
        + np.outer(a * cos - b * sin, u)
        + np.outer(a * sin + b * cos, v)
    )
    return Concept(weights=weights, bias=concept.bias, classes=concept.classes)


def drift_probability(
    position: np.ndarray,
    drift: str,
    drift_at: float = 0.5,
    drift_width: float = 0.2,
) -> np.ndarray:
    """Probability that a row at `position` follows the drifted concept."""
    position = np.asarray(position, dtype=float)
    if drift == "none":
        return np.zeros_like(position)
    if drift == "abrupt":
        return (position >= drift_at).astype(float)
    if drift == "gradual":
        return np.clip((position - drift_at) / drift_width, 0.0, 1.0)
    raise ValueError(f"drift must be one of {DRIFT_KINDS}, got {drift!r}")


def _check_stream_params(
    n_rows: int, drift: str, drift_at: float, drift_width: float, label_noise: float
) -> None:
    if n_rows < 0:
        raise ValueError("n_rows must be non-negative")
    if drift not in DRIFT_KINDS:
        raise ValueError(f"drift must be one of {DRIFT_KINDS}, got {drift!r}")
    if not 0.0 <= drift_at <= 1.0:
        raise ValueError("drift_at must lie in [0, 1]")
    if drift == "gradual" and drift_width <= 0:
        raise ValueError("drift_width must be positive for gradual drift")
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError("label_noise must lie in [0, 1]")


def make_stream(
    n_rows: int,
    *,
    n_features: int = 10,
    n_classes: int = 3,
    drift: str = "abrupt",
    drift_at: float = 0.5,
    drift_width: float = 0.2,
    drift_angle: float = 1.2,
    label_noise: float = 0.02,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Return features `X`, string labels `y` and time `position` in [0, 1) per row.

    Rows before `drift_at` follow concept A. With ``"abrupt"`` drift the rest
    follow concept B (A rotated by `drift_angle`); with ``"gradual"`` drift a
    row follows B with probability rising linearly from 0 to 1 over
    ``[drift_at, drift_at + drift_width]``; ``"none"`` keeps A throughout.
    Features are standard normal with a per-feature scale and offset.
    A `label_noise` share of labels is flipped to another class.

    For a given seed, `X`, both concepts and the noise draws do not depend on
    `drift`, `drift_at`, `drift_width` or `label_noise`.
    """
    _check_stream_params(n_rows, drift, drift_at, drift_width, label_noise)
    rng = np.random.default_rng(seed)
    concept_a = random_concept(n_features, n_classes, rng)
    concept_b = rotated(concept_a, drift_angle, rng)
    scale = 10.0 ** rng.uniform(-1.0, 3.0, size=n_features)
    offset = rng.uniform(-5.0, 5.0, size=n_features) * scale

    Z = rng.standard_normal((n_rows, n_features))
    mix_draw = rng.random(n_rows)
    noise_draw = rng.random(n_rows)
    noise_shift = rng.integers(1, n_classes, size=n_rows)

    position = np.arange(n_rows, dtype=float) / max(n_rows, 1)
    use_b = mix_draw < drift_probability(position, drift, drift_at, drift_width)
    index = np.where(use_b, concept_b.label_index(Z), concept_a.label_index(Z))
    flip = noise_draw < label_noise
    index = np.where(flip, (index + noise_shift) % n_classes, index)

    X = pd.DataFrame(Z * scale + offset, columns=feature_names(n_features))
    y = np.asarray(concept_a.classes)[index]
    return X, y, position


def _as_utc(values: pd.DatetimeIndex | np.ndarray | pd.Series) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(values)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _as_utc_timestamp(value: pd.Timestamp | str) -> pd.Timestamp:
    value = pd.Timestamp(value)
    return value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")


def feature_dicts(X: pd.DataFrame) -> list[dict[str, Any]]:
    """One feature object per row of `X`, as a service logs it: numbers, strings, booleans, and None
    for a missing value (NaN included)."""
    names = [str(c) for c in X.columns]
    if all(pd.api.types.is_float_dtype(X[c]) or pd.api.types.is_integer_dtype(X[c]) for c in X.columns) \
            and not X.isna().any().any():
        return [dict(zip(names, row)) for row in X.to_numpy(dtype=float).tolist()]
    columns = [[None if _is_missing(v) else (v.item() if isinstance(v, np.generic) else v) for v in X[c].tolist()]
               for c in X.columns]
    return [dict(zip(names, row)) for row in zip(*columns)]


def with_mixed_kinds(X: pd.DataFrame, *, categorical: Sequence[str] = (), boolean: Sequence[str] = (),
                     missing: Sequence[str] = (), n_categories: int = 12, missing_share: float = 0.05,
                     seed: int = 0) -> pd.DataFrame:
    """`X` (numeric) with some features turned into the kinds tabular logs have: `categorical` ones
    binned into `n_categories` text values by quantile ("k0", "k1", ...), `boolean` ones as value > 0,
    and a `missing_share` of the `missing` ones' values missing (NaN, or None in a text or flag column).
    The label still depends on every feature, through its bins."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    for name in categorical:
        edges = np.quantile(X[name], np.linspace(0, 1, n_categories + 1)[1:-1])
        out[name] = pd.Series(np.char.add("k", np.searchsorted(edges, X[name]).astype(str)), index=X.index,
                              dtype=object)
    for name in boolean:
        out[name] = (X[name] > 0).astype(bool)
    for name in missing:
        gone = rng.random(len(X)) < missing_share
        if out[name].dtype == object or out[name].dtype == bool:
            out[name] = out[name].astype(object)
            out.loc[gone, name] = None
        else:
            out.loc[gone, name] = np.nan
    return out


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def prediction_log(
    model,
    X: pd.DataFrame,
    y: np.ndarray,
    evaluated_at: pd.DatetimeIndex | np.ndarray,
    *,
    model_version: str = "v0",
    prefix: str = "demo",
    seed: int = 0,
    predicted_lag: pd.Timedelta = pd.Timedelta(minutes=30),
) -> pd.DataFrame:
    """What a deployed `model` logged for `X` once the true labels `y` arrived.

    `model` is a fitted classifier with ``classes_``.
    ``confidence`` is the probability of the predicted label (`confidences`); ``predicted_at``
    is ``evaluated_at - predicted_lag``; naive timestamps are taken as UTC.
    """
    y = np.asarray(y)
    evaluated_at = _as_utc(evaluated_at)
    if not len(X) == len(y) == len(evaluated_at):
        raise ValueError("X, y and evaluated_at must have the same length")
    predicted_lag = pd.Timedelta(predicted_lag)
    if predicted_lag <= pd.Timedelta(0):
        raise ValueError("predicted_lag must be positive")

    proba = confidences(model, X)
    best = proba.argmax(axis=1)
    rows = np.arange(len(X))
    return pd.DataFrame(
        {
            "prediction_id": [f"{prefix}-{seed}-{i}" for i in range(len(X))],
            "model_version": np.full(len(X), str(model_version), dtype=object),
            "features": feature_dicts(X),
            "predicted_label": np.asarray([label_text(c) for c in model.classes_], dtype=object)[best],
            "actual_label": np.asarray([label_text(v) for v in y], dtype=object),
            "confidence": proba[rows, best],
            "predicted_at": evaluated_at - predicted_lag,
            "evaluated_at": evaluated_at,
        },
        columns=list(LOG_COLUMNS),
    )


def confidences(model, X: pd.DataFrame) -> np.ndarray:
    """Per-class probabilities: `predict_proba`, or for a model without it (hinge SGD) a softmax of
    `decision_function` (binary: a sigmoid), as a deployed service would log a confidence."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X), dtype=float)
    scores = np.asarray(model.decision_function(X), dtype=float)
    if scores.ndim == 1:
        scores = np.column_stack([-scores / 2, scores / 2])
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def _not_numeric(value: float, choice: int) -> object:
    return ("n/a", "?", {"value": value}, [value])[choice % 4]


def _corrupt_features(
    features: dict, kind: str, rng: np.random.Generator
) -> dict:
    """A new, broken copy of one row's feature dict."""
    if kind == "features_empty" or not features:
        return {}
    broken = dict(features)
    key = list(broken)[rng.integers(len(broken))]
    if kind == "feature_missing":
        del broken[key]
    else:
        broken[key] = _not_numeric(broken[key], int(rng.integers(4)))
    return broken


def corrupt_rows(
    log: pd.DataFrame, share: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.Series]:
    """Break a `share` of the rows of `log` the ways real prediction logs go wrong.

    Returns a corrupted copy (the input is left untouched) and the kind of
    damage per row: one of `BAD_ROW_KINDS`, or None for clean rows. Kinds are
    spread evenly over the corrupted rows. A missing confidence is stored as
    NaN in the float ``confidence`` column.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError("share must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    n_bad = int(round(share * len(log)))
    positions = np.sort(rng.choice(len(log), size=n_bad, replace=False))
    kinds = rng.permutation(np.resize(np.asarray(BAD_ROW_KINDS, dtype=object), n_bad))

    out = log.copy()
    features = out["features"].tolist()
    confidence = out["confidence"].to_numpy(dtype=float, copy=True)
    actual = out["actual_label"].to_numpy(dtype=object, copy=True)
    out_of_range = rng.choice([1.7, -0.2, 2.5, -1.0], size=n_bad)

    for pos, kind, bad_value in zip(positions.tolist(), kinds.tolist(), out_of_range.tolist()):
        if kind == "confidence_missing":
            confidence[pos] = np.nan
        elif kind == "confidence_out_of_range":
            confidence[pos] = bad_value
        elif kind == "label_missing":
            actual[pos] = ""
        else:
            features[pos] = _corrupt_features(features[pos], kind, rng)

    out["features"] = pd.Series(features, index=out.index, dtype=object)
    out["confidence"] = confidence
    out["actual_label"] = actual
    kind_per_row = pd.Series(None, index=log.index, dtype=object, name="bad_row_kind")
    kind_per_row.iloc[positions] = kinds
    return out, kind_per_row


def timestamps(
    n_rows: int, start: pd.Timestamp, end: pd.Timestamp, seed: int = 0
) -> pd.DatetimeIndex:
    """`n_rows` sorted UTC timestamps drawn uniformly from ``[start, end)``."""
    start, end = _as_utc_timestamp(start).as_unit("ns"), _as_utc_timestamp(end).as_unit("ns")
    if end <= start:
        raise ValueError("end must be after start")
    span = (end - start).as_unit("ns").value
    rng = np.random.default_rng(seed)
    offsets = np.floor(np.sort(rng.random(n_rows)) * span).astype(np.int64)
    offsets = np.minimum(offsets, span - 1)
    return pd.DatetimeIndex(start + pd.to_timedelta(offsets, unit="ns"), name="evaluated_at")
