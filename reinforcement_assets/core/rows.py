"""Turning logged predictions into model inputs, and setting aside rows that cannot be used."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .records import ROW_COLUMNS

RESERVED_COLUMNS = frozenset(ROW_COLUMNS) | {"label", "origin", "split"}


class FeatureSchemaError(ValueError):
    """The prediction log has no usable feature schema."""


def choose_feature_names(key_sets: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """The most common feature-key set among recent rows (ties go to the larger set); () if none."""
    counts = Counter(tuple(sorted(keys)) for keys in key_sets if keys)
    if not counts:
        return ()
    names, _ = max(counts.items(), key=lambda item: (item[1], len(item[0]), item[0]))
    return check_feature_names(names)


def check_feature_names(names: Sequence[str]) -> tuple[str, ...]:
    """`names`, or a clear error when a feature would shadow a column of the loaded rows."""
    clashes = sorted(RESERVED_COLUMNS.intersection(names))
    if clashes:
        raise FeatureSchemaError(f"feature names {clashes} clash with reserved columns; rename them in the log")
    return tuple(names)


def reject_reason(record: Mapping[str, Any], feature_names: Sequence[str]) -> str | None:
    """Why a logged row cannot be used, or None; mirrors `evaluation_reject_reason` in SQL."""
    if not _is_label(record.get("predicted_label")) or not _is_label(record.get("actual_label")):
        return "label_missing"
    confidence = record.get("confidence")
    if not _is_number(confidence):
        return "confidence_missing"
    if not 0 <= confidence <= 1:
        return "confidence_out_of_range"
    features = record.get("features")
    if not isinstance(features, Mapping):
        return "feature_not_numeric"
    if not features:
        return "features_empty"
    if not all(_is_number(value) and abs(value) < 1e300 for value in features.values()):
        return "feature_not_numeric"
    if any(name not in features for name in feature_names):
        return "feature_missing"
    return None


def rows_from_records(
    records: Sequence[Mapping[str, Any]], feature_names: Sequence[str]
) -> tuple[pd.DataFrame, Counter]:
    """Usable rows as a frame (`ROW_COLUMNS` plus a float column per feature), and rejects by reason."""
    rejected: Counter = Counter()
    usable = []
    for record in records:
        reason = reject_reason(record, feature_names)
        if reason is None:
            usable.append(record)
        else:
            rejected[reason] += 1
    frame = pd.DataFrame(
        {column: [r.get(column) for r in usable] for column in ROW_COLUMNS},
        columns=list(ROW_COLUMNS),
    )
    features = np.array([[r["features"][name] for name in feature_names] for r in usable], dtype=float)
    for i, name in enumerate(feature_names):
        frame[name] = features[:, i] if len(usable) else np.array([], dtype=float)
    frame["evaluated_at"] = pd.to_datetime(frame["evaluated_at"], utc=True, format="ISO8601")
    frame["confidence"] = frame["confidence"].astype(float)
    return frame, rejected


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
