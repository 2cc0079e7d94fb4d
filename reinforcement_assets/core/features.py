"""Feature schemas: each feature's name and kind, how a logged value is judged against it, and the
frame a model is given.

A feature is `numeric` (JSON numbers), `categorical` (JSON strings) or `boolean` (JSON booleans). A
row is judged only on its model's features: other keys are ignored; a null, or a key not logged, is
a missing value, which reaches the model only where it accepts missing values. The database judges
the same way (`judge_feature_types` in 20261202000000_feature_types.sql), once per set of (key,
JSON type) pairs rather than per row; `judge_types` here is its mirror, and a test holds them equal.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("numeric", "categorical", "boolean")
KIND_OF_JSON_TYPE = {"number": "numeric", "string": "categorical", "boolean": "boolean"}
JSON_TYPE_OF_KIND = {kind: json_type for json_type, kind in KIND_OF_JSON_TYPE.items()}
# Numbers a float8 may not hold (|x| >= 1e300, or 0 < |x| < 1e-300): stored as JSON, judged not
# numeric, their JSON type 'out_of_range'. Compared exactly, as PostgreSQL's numeric compares them.
LARGEST, SMALLEST = 10 ** 300, Fraction(1, 10 ** 300)


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str | None = None  # None: not known yet, inferred from the log on first training


@dataclass(frozen=True)
class FeatureSchema:
    """A model's features in its input order, and whether it accepts missing values (None: not known yet)."""

    features: tuple[Feature, ...]
    accepts_missing: bool | None = None

    @classmethod
    def of(cls, kinds: Mapping[str, str | None], accepts_missing: bool | None = None) -> FeatureSchema:
        """A schema from {name: kind}, in the mapping's order."""
        return cls(tuple(Feature(name, kind) for name, kind in kinds.items()), accepts_missing)

    @classmethod
    def numeric(cls, names: Sequence[str], accepts_missing: bool | None = False) -> FeatureSchema:
        """Every feature numeric: what every model registered before feature kinds were recorded took."""
        return cls.of(dict.fromkeys(names, "numeric"), accepts_missing)

    @classmethod
    def from_json(cls, value: Any, accepts_missing: bool | None = None) -> FeatureSchema:
        """From the `model_versions.feature_schema` jsonb: [{"name": ..., "kind": ...}, ...]."""
        features = tuple(Feature(str(f["name"]), f.get("kind") if f.get("kind") in KINDS else None)
                         for f in value or ())
        return cls(features, accepts_missing)

    def as_json(self) -> list[dict[str, Any]]:
        return [{"name": f.name, "kind": f.kind} for f in self.features]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def kinds(self) -> dict[str, str | None]:
        return {f.name: f.kind for f in self.features}

    @property
    def complete(self) -> bool:
        return all(f.kind for f in self.features) and self.accepts_missing is not None

    def names_of(self, kind: str) -> list[str]:
        return [f.name for f in self.features if f.kind == kind]

    def with_missing(self, accepts_missing: bool | None) -> FeatureSchema:
        return replace(self, accepts_missing=accepts_missing)

    def describe(self) -> str:
        """`country (categorical), x`: each feature, with its kind where known."""
        return ", ".join(f"{f.name} ({f.kind})" if f.kind else f.name for f in self.features)


def json_type(value: Any) -> str:
    """A value's JSON type as judging sees it (`evaluation_json_type` in SQL); 'out_of_range' for a
    number a float8 may not hold. A non-finite float is 'null': the store writes it as a JSON null."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            return "null"
        value = value.item() if isinstance(value, np.generic) else value
        if value == 0 or 1e-299 < abs(value) < 1e299:  # well inside: no exact comparison needed
            return "number"
        return "number" if SMALLEST <= abs(Fraction(value)) < LARGEST else "out_of_range"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return "unknown"


def feature_types(features: Mapping[str, Any]) -> dict[str, str]:
    """{key: JSON type} of a feature object (`evaluation_feature_types` in SQL)."""
    return {str(key): json_type(value) for key, value in features.items()}


def judge_types(types: Mapping[str, str], schema: FeatureSchema) -> tuple[str, str] | None:
    """Why a row whose features have these {key: JSON type} cannot be fed to the model, as (reason,
    feature), the first failing feature in schema order; None when it can."""
    for feature in schema.features:
        found = types.get(feature.name, "null")  # a key not logged is a missing value, as a null is
        if found == "null":
            if not schema.accepts_missing:
                return "feature_missing", feature.name
        elif feature.kind and found != JSON_TYPE_OF_KIND[feature.kind]:
            return f"feature_not_{feature.kind}", feature.name
    return None


def rejection_label(reason: str, feature: str | None) -> str:
    """How a reason reads in a message: `feature_not_numeric on 'country'`."""
    return f"{reason} on {feature!r}" if feature else reason


# Inferring a schema from the log.
@dataclass(frozen=True)
class TypeSetCount:
    """How many usable rows of a window have features of exactly these {key: JSON type}."""

    types: Mapping[str, str]
    rows: int


def common_names(type_sets: Iterable[TypeSetCount]) -> tuple[str, ...]:
    """The feature keys most rows have, null or not (ties go to the larger set); () if none. Keys whose
    values are objects or arrays are no features."""
    counts: Counter = Counter()
    for type_set in type_sets:
        keys = tuple(sorted(k for k, t in type_set.types.items() if t in KIND_OF_JSON_TYPE or t in ("out_of_range", "null")))
        if keys:
            counts[keys] += type_set.rows
    if not counts:
        return ()
    names, _ = max(counts.items(), key=lambda item: (item[1], len(item[0]), item[0]))
    return names


def frequent_names(type_sets: Sequence[TypeSetCount], share: float) -> tuple[str, ...]:
    """The keys with a value (not null, not an object or array) in at least `share` of the rows, sorted:
    the features of a model that takes missing values, from a log that leaves out what it lacks."""
    rows = sum(t.rows for t in type_sets)
    present: Counter = Counter()
    for type_set in type_sets:
        for key, found in type_set.types.items():
            if found in KIND_OF_JSON_TYPE or found == "out_of_range":
                present[key] += type_set.rows
    return tuple(sorted(k for k, n in present.items() if rows and n >= share * rows))


def logged_kinds(type_sets: Iterable[TypeSetCount], names: Sequence[str]) -> dict[str, str | None]:
    """Each feature's kind as the log shows it: the JSON type most of its non-null values have."""
    seen: dict[str, Counter] = {name: Counter() for name in names}
    for type_set in type_sets:
        for name in names:
            found = type_set.types.get(name)
            kind = KIND_OF_JSON_TYPE.get("number" if found == "out_of_range" else found)
            if kind:
                seen[name][kind] += type_set.rows
    return {name: (max(c.items(), key=lambda i: (i[1], i[0]))[0] if c else None) for name, c in seen.items()}


def complete_kinds(schema: FeatureSchema, type_sets: Sequence[TypeSetCount]) -> FeatureSchema:
    """`schema` with each unknown kind taken from the log: boolean where most of its values are booleans,
    else numeric. A feature the model did not declare categorical (see `model.declared_categorical`)
    cannot take text, so logged strings are set aside as `feature_not_numeric`, never fed to it."""
    unknown = [f.name for f in schema.features if not f.kind]
    if not unknown:
        return schema
    logged = logged_kinds(type_sets, unknown)
    return replace(schema, features=tuple(
        f if f.kind else Feature(f.name, "boolean" if logged[f.name] == "boolean" else "numeric")
        for f in schema.features))


def unlogged(schema: FeatureSchema, type_sets: Sequence[TypeSetCount]) -> list[str]:
    """The schema's features no row of these type sets logs with a value (absent or null everywhere):
    nothing to learn them from, and a kind the log cannot tell."""
    return [name for name, kind in logged_kinds(type_sets, schema.names).items() if kind is None]


# A model the loop builds takes, if it takes missing values, every key logged with a value in at
# least this share of the rows; one that does not takes the key set most rows have.
MIN_FEATURE_SHARE = 0.1


def infer_schema(type_sets: Sequence[TypeSetCount], accepts_missing: bool | None) -> FeatureSchema:
    """The schema of a model trained from scratch on the log (see `MIN_FEATURE_SHARE`), each feature of
    the kind most of its values are (a key only ever null is left out)."""
    names = frequent_names(type_sets, MIN_FEATURE_SHARE) if accepts_missing else common_names(type_sets)
    kinds = logged_kinds(type_sets, names)
    return FeatureSchema.of({name: kind for name, kind in kinds.items() if kind}, accepts_missing)


# The frame a model is given.
def typed_column(values: Any, kind: str | None) -> pd.Series:
    """A feature's values in the dtype models get (the README's serving contract): numeric float64
    with NaN; categorical `object` holding str or None; boolean `object` holding True, False or None
    (one dtype whether or not a batch has a missing flag: encoders fitted on one refuse the other)."""
    column = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    column = column.reset_index(drop=True)
    if kind in ("categorical", "boolean"):
        present = column.notna().to_numpy()
        if present.all() and kind == "categorical":
            return column.astype(str).astype(object)
        values = column.to_numpy(dtype=object, na_value=None)
        cast = bool if kind == "boolean" else str
        return pd.Series([cast(v) if keep else None for v, keep in zip(values, present)], dtype=object)
    if column.dtype == object:  # text here is an error (the caller set such rows aside), not a NaN
        column = pd.to_numeric(column.where(column.notna(), np.nan), errors="raise")
    return column.astype("float64")


def feature_frame(records: Sequence[Mapping[str, Any]], schema: FeatureSchema) -> pd.DataFrame:
    """Feature objects (as logged) as the frame the model takes, one column per feature of `schema`."""
    return pd.DataFrame({f.name: typed_column([r.get(f.name) for r in records], f.kind)
                         for f in schema.features}, index=range(len(records)))


def as_model_frame(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """`frame`'s feature columns in the dtypes of `typed_column` (after a Parquet round trip, say)."""
    typed = pd.DataFrame({f.name: typed_column(frame[f.name], f.kind) for f in schema.features})
    typed.index = frame.index
    return typed
