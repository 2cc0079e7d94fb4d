"""Rows set aside as `feature_outlier`: a numeric value no model can be fitted or judged with.

One such row is enough to ruin a run: a value at 1e6 among values near 1 dominates a StandardScaler's
mean and variance (every candidate then looks significantly worse), one at 1e200 overflows them (the
fit fails on NaN). The rule is relative to the run's own rows, so it needs no setting and never
touches the user's pipeline: a value is an outlier when its magnitude is more than
`OUTLIER_FACTOR` times the 90th percentile of the feature's nonzero magnitudes among the rows the
run loaded (taken at an observed value, so up to a tenth of the rows repeating one extreme value
cannot move it), or at least `OVERFLOW_MAGNITUDE`, where its square overflows a float whatever the
other rows hold. A feature's heavy tail (a lognormal of σ = 3, a Pareto of α = 1.1) stays inside.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .features import FeatureSchema

OUTLIER_REASON = "feature_outlier"
OUTLIER_FACTOR = 100_000.0
OVERFLOW_MAGNITUDE = 1e150


def magnitudes(rows: pd.DataFrame, name: str) -> np.ndarray:
    """|value| of a numeric feature, NaN where it is missing."""
    return np.abs(pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=float))


def outlier_fences(rows: pd.DataFrame, schema: FeatureSchema, factor: float = OUTLIER_FACTOR) -> dict[str, float]:
    """Per numeric feature of `rows`, the magnitude above which a value is an outlier."""
    fences = {}
    for feature in schema.features:
        if feature.kind != "numeric" or feature.name not in rows:
            continue
        magnitude = magnitudes(rows, feature.name)
        nonzero = magnitude[np.isfinite(magnitude) & (magnitude > 0)]
        scale = float(np.quantile(nonzero, 0.9, method="lower")) if len(nonzero) >= 2 else np.inf
        fences[feature.name] = min(factor * scale, OVERFLOW_MAGNITUDE)
    return fences


def set_aside_outliers(rows: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, dict[str, int]]:
    """`rows` without those holding an outlier, and how many were set aside per feature (the first
    outlying feature in schema order, as the SQL reject reasons count; a row in the dataset twice, as
    an error and in the window sample, once)."""
    outlying = np.zeros(len(rows), dtype=bool)
    counts: dict[str, int] = {}
    for name, fence in outlier_fences(rows, schema).items():
        beyond = (magnitudes(rows, name) >= fence) & ~outlying
        if beyond.any():
            counts[name] = int(rows.loc[beyond, "id"].nunique(dropna=False) if "id" in rows else beyond.sum())
            outlying |= beyond
    return (rows[~outlying] if counts else rows), counts
