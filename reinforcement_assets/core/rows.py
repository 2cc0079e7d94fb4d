"""Turning logged predictions into model inputs, and setting aside rows that cannot be used."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .features import FeatureSchema, feature_frame, feature_types, judge_types
from .records import ROW_COLUMNS

RESERVED_COLUMNS = frozenset(ROW_COLUMNS) | {"label", "origin", "split"}


class FeatureSchemaError(ValueError):
    """The prediction log has no usable feature schema."""


def check_feature_names(names: Sequence[str]) -> tuple[str, ...]:
    """`names`, or a clear error when a feature would shadow a column of the loaded rows."""
    clashes = sorted(RESERVED_COLUMNS.intersection(names))
    if clashes:
        raise FeatureSchemaError(f"feature names {clashes} clash with reserved columns; rename them in the log")
    return tuple(names)


def row_reject_reason(record: Mapping[str, Any]) -> str | None:
    """Why a logged row cannot be used whatever the model, or None; mirrors
    `evaluation_row_reject_reason` in SQL (features sent as JSON text are parsed before)."""
    if not _is_label(record.get("predicted_label")) or not _is_label(record.get("actual_label")):
        return "label_missing"
    confidence = record.get("confidence")
    if not _is_number(confidence):
        return "confidence_missing"
    if not 0 <= confidence <= 1:
        return "confidence_out_of_range"
    features = record.get("features")
    if features is None:  # the store writes a missing feature object as {}
        features = {}
    if isinstance(features, str) and is_json_object_text(features):
        return "features_json_text"
    if not isinstance(features, Mapping):
        return "features_not_object"
    if not features:
        return "features_empty"
    return None


def reject_reason(record: Mapping[str, Any], schema: FeatureSchema) -> tuple[str, str | None] | None:
    """Why a logged row cannot be fed to a model of `schema`, as (reason, feature or None), or None."""
    reason = row_reject_reason(record)
    if reason:
        return reason, None
    return judge_types(feature_types(record["features"]), schema)


def parse_features(value: Any) -> Any:
    """Features sent as JSON text holding an object, parsed; anything else as it is. Text PostgreSQL's
    jsonb would refuse (NaN or Infinity, a NUL character), or that a float cannot read as written (a
    number beyond float's range, which would become infinity or 0), is left as text: not an object."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value, parse_constant=_refuse, parse_float=_float)
        except ValueError:
            return value
        return parsed if isinstance(parsed, dict) and not holds_nul(parsed) else value
    return value


def is_json_object_text(text: str) -> bool:
    """Whether text is a JSON object as PostgreSQL's jsonb reads one (`evaluation_text_is_json_object`):
    numbers of any size, no NaN or Infinity, no NUL character or lone surrogate."""
    try:
        parsed = json.loads(text, parse_constant=_refuse, parse_float=Decimal)
    except ValueError:
        return False
    return isinstance(parsed, dict) and not holds_nul(parsed)


def storable_features(value: Any) -> Any:
    """`value` as the store writes it: JSON text parsed (`parse_features`), and an object jsonb cannot
    hold (a NUL character in a key or a string) kept as its JSON text, which is then set aside as
    `features_not_object` instead of failing the whole insert."""
    value = parse_features(value)
    return json.dumps(value) if isinstance(value, dict) and holds_nul(value) else value


def holds_nul(value: Any) -> bool:
    """Whether a JSON value has text jsonb refuses, at any depth: a NUL character (U+0000) or a lone
    surrogate (half of a UTF-16 pair), in a key or a string."""
    if isinstance(value, str):
        return "\x00" in value or not value.isascii() and _lone_surrogate(value)
    if isinstance(value, dict):
        return any(holds_nul(str(k)) or holds_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(holds_nul(v) for v in value)
    return False


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value) or (value == 0 and any(c in "123456789" for c in text.split("e")[0].split("E")[0])):
        raise ValueError(f"{text} is beyond the range of a float")
    return value


def rows_from_records(
    records: Sequence[Mapping[str, Any]], schema: FeatureSchema
) -> tuple[pd.DataFrame, Counter]:
    """Usable rows as a frame (`ROW_COLUMNS` plus a column per feature in the dtype of its kind), and
    rejects by (reason, feature)."""
    rejected: Counter = Counter()
    usable = []
    for record in records:
        verdict = reject_reason(record, schema)
        if verdict is None:
            usable.append(record)
        else:
            rejected[verdict] += 1
    frame = pd.DataFrame(
        {column: [r.get(column) for r in usable] for column in ROW_COLUMNS},
        columns=list(ROW_COLUMNS),
    )
    features = feature_frame([r["features"] for r in usable], schema)
    for name in schema.names:
        frame[name] = features[name].set_axis(frame.index)
    frame["evaluated_at"] = pd.to_datetime(frame["evaluated_at"], utc=True, format="ISO8601")
    frame["confidence"] = frame["confidence"].astype(float)
    return frame, rejected


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
