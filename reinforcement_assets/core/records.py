"""The loop's plain records: windows, row queries, registry rows, requests, counts.

Pure data (no Dagster, no database): the store backends produce them, the cycle core and the
assets consume them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from .features import Feature, FeatureSchema

RUN_SOURCES = ("auto_daily", "manual", "decay_triggered")
REQUEST_PRIORITIES = ("high", "normal", "low")  # queue order
TERMINAL_REQUEST_STATUSES = ("completed", "cancelled", "failed")

# Columns of a prediction-log frame handed to `Store.insert_evaluations`.
EVALUATION_COLUMNS = ("prediction_id", "model_version", "features", "predicted_label", "actual_label",
                      "confidence", "predicted_at", "evaluated_at")
# Columns every loaded sample has besides one column per feature (`features.typed_column`).
ROW_COLUMNS = ("id", "prediction_id", "evaluated_at", "predicted_label", "actual_label", "confidence")

SAMPLE_KEY_RANGE = 1 << 20  # prediction_evaluations.sample_key lies in [0, SAMPLE_KEY_RANGE)


class StoreError(RuntimeError):
    """A backend operation failed; the message names the operation and the table, never a secret."""


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, as written with the promotion it earned (one transaction): its row's columns
    and metrics (merged), and each candidate's registry metrics (version -> metrics, merged)."""

    dagster_run_id: str
    fields: dict[str, Any]
    metrics: dict[str, Any]
    model_metrics: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Window:
    """The evaluated window [start, end). Its holdout is the newest `holdout_share` of its usable rows,
    in (`evaluated_at`, `id`) order: where it starts is found by the store (`WindowSummary.holdout_start`)."""

    start: datetime
    end: datetime
    holdout_share: float

    @classmethod
    def ending_at(cls, end: datetime, lookback_days: float, holdout_share: float) -> Window:
        return cls(start=end - timedelta(days=lookback_days), end=end, holdout_share=holdout_share)

    @property
    def recent_start(self) -> datetime:
        """The start of the newest `holdout_share` of the window's time: where the features a new model
        takes are read from."""
        return self.end - (self.end - self.start) * self.holdout_share


@dataclass(frozen=True, order=True)
class RowKey:
    """A row's place in the log's time order: `evaluated_at`, then `id` (unique), so that rows whose
    outcomes arrived in one batch, with one timestamp, still have an order."""

    evaluated_at: datetime
    id: int


@dataclass(frozen=True)
class Period:
    """The rows evaluated in [start, end), and of those only the ones at or after `from_key` (when
    given) and before `before_key` (when given)."""

    start: datetime
    end: datetime
    from_key: RowKey | None = None
    before_key: RowKey | None = None


def holdout_size(usable_rows: int, share: float) -> int:
    """How many of a window's usable rows are its holdout: the share, rounded up (SQL
    `evaluation_holdout_start` counts the same way)."""
    return min(usable_rows, max(0, math.ceil(round(usable_rows * share, 9))))


@dataclass(frozen=True)
class WindowSummary:
    """Counts over a window, computed where the rows are (never by loading them)."""

    rows: int = 0
    correct: int = 0
    train_rows: int = 0
    train_correct: int = 0
    holdout_rows: int = 0
    # The key of the first holdout row: (end, 0) when the holdout is empty, None when the window is.
    holdout_start: RowKey | None = None
    rejected: dict[str, int] = field(default_factory=dict)  # rows set aside, by reason
    rejected_on: dict[str, dict[str, int]] = field(default_factory=dict)  # reason -> feature -> rows
    # Rows predicted in the window's whole hours that were evaluated before they were predicted (a clock
    # or pipeline bug; still usable), from the counts by predicted_at.
    evaluated_early: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.rows if self.rows else None

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    def training_period(self, window: Window) -> Period:
        """The window's usable rows before the holdout."""
        if self.holdout_start is None:
            return Period(window.start, window.end)
        end = min(window.end, self.holdout_start.evaluated_at + timedelta(microseconds=1))
        return Period(window.start, end, before_key=self.holdout_start)

    def holdout_period(self, window: Window) -> Period:
        """The window's newest `holdout_share` of usable rows."""
        if self.holdout_start is None:
            return Period(window.end, window.end)
        return Period(self.holdout_start.evaluated_at, window.end, from_key=self.holdout_start)


@dataclass(frozen=True)
class RowQuery:
    """Which usable evaluated rows of a period to load, with every filter pushed down.

    `is_correct`: True for correct predictions, False for errors, None for both (as logged: by the
    version that predicted the row, `logged_by` / `not_logged_by`).
    `sample_fraction` < 1 keeps the rows whose fixed `sample_key` falls in that share and returns
    them in sample-key order, so `limit` takes a reproducible uniform sample. Otherwise rows come
    newest first.
    """

    start: datetime
    end: datetime
    schema: FeatureSchema  # rows are judged against it; its features are loaded in its kinds' dtypes
    limit: int
    from_key: RowKey | None = None  # only rows at or after this (evaluated_at, id)
    before_key: RowKey | None = None  # only rows before it
    is_correct: bool | None = None
    min_confidence: float | None = None
    sample_fraction: float = 1.0
    logged_by: str | None = None  # only rows this model version predicted
    not_logged_by: str | None = None  # only rows any other version (or none recorded) predicted

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.schema.names

    @property
    def sample_key_below(self) -> int | None:
        if self.sample_fraction >= 1:
            return None
        return max(1, int(self.sample_fraction * SAMPLE_KEY_RANGE))


@dataclass(frozen=True)
class ModelVersion:
    """A row of the model registry."""

    version: str
    artifact_path: str
    sha256: str
    feature_names: tuple[str, ...]
    classes: tuple[str, ...]  # as text (`labels.label_text`); `class_type` says what the model predicts
    parent_version: str | None = None
    training_run_id: str | None = None
    fine_tuned: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    reference_accuracy: float | None = None
    is_champion: bool = False
    promoted_at: datetime | None = None
    promotion_reason: str | None = None
    created_at: datetime | None = None
    class_type: str = "str"  # the type of the model's classes_: str, int, bool or float
    base_size: int | None = None  # trees or iterations when it entered the registry (updates grow to twice that)
    feature_schema: FeatureSchema | None = None  # None: not recorded (then `schema` has every kind unknown)
    artifact_pruned_at: datetime | None = None  # when its file was deleted (`pruning`); the row stays

    @property
    def schema(self) -> FeatureSchema:
        """The model's features and kinds (a kind None until inferred from the log)."""
        return self.feature_schema or FeatureSchema(tuple(Feature(n) for n in self.feature_names))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelVersion:
        """A `model_versions` row, from psycopg (native types) or PostgREST (JSON), as a `ModelVersion`;
        a row no model could have written (a hand-inserted one left at its defaults) is an
        `InvalidRegistryRow` naming the version and each bad column."""
        problems = registry_row_problems(row)
        if problems:
            raise InvalidRegistryRow(f"model_versions row {row.get('version')!r} cannot be used: "
                                     f"{'; '.join(problems)} (register models with `reinforcement register`)")
        values = {k: v for k, v in row.items() if k in cls.__dataclass_fields__}
        values["feature_names"] = tuple(values["feature_names"])
        if row.get("feature_schema") is not None:
            values["feature_schema"] = FeatureSchema.from_json(row["feature_schema"], row.get("accepts_missing"))
        values["classes"] = tuple(values["classes"])
        if values.get("class_type") is None:
            values.pop("class_type", None)
        if values.get("training_run_id") is not None:
            values["training_run_id"] = str(values["training_run_id"])
        for key in ("promoted_at", "created_at", "artifact_pruned_at"):
            values[key] = parse_timestamp(values.get(key))
        return cls(**values)


class InvalidRegistryRow(StoreError):
    """A `model_versions` row that does not describe a usable model."""


CLASS_TYPES = ("str", "int", "bool", "float")


def registry_row_problems(row: dict[str, Any]) -> list[str]:
    """What is wrong with a `model_versions` row, column by column (empty: nothing)."""
    problems = []
    names, classes = row.get("feature_names"), row.get("classes")
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        problems.append(f"feature_names is {names!r}, not a non-empty list of feature names")
    elif len(set(names)) != len(names):
        problems.append("feature_names repeats a name")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        problems.append(f"classes is {classes!r}, not a non-empty list of labels as text")
    if row.get("class_type") is not None and row["class_type"] not in CLASS_TYPES:
        problems.append(f"class_type is {row['class_type']!r}, not one of {list(CLASS_TYPES)}")
    schema = row.get("feature_schema")
    if schema is not None and isinstance(names, (list, tuple)) and (
            not isinstance(schema, list) or [f.get("name") if isinstance(f, dict) else None for f in schema] != list(names)):
        problems.append("feature_schema does not list feature_names in order")
    if not row.get("artifact_path"):
        problems.append("artifact_path is empty")
    base = row.get("base_size")
    if base is not None and (not isinstance(base, int) or isinstance(base, bool) or base < 1):
        problems.append(f"base_size is {base!r}, not a positive number of trees or iterations")
    return problems


@dataclass(frozen=True)
class RetrainingRequest:
    """A row of `model_retraining_requests`: a user's (or the CLI's) ask for a retraining run.

    `options` is the raw jsonb value, which a web client may have filled with anything; the
    request sensor validates it.
    """

    id: str
    status: str
    priority: str = "normal"
    reason: str | None = None
    requested_by: str | None = None
    options: Any = field(default_factory=dict)
    created_at: datetime | None = None
    claimed_at: datetime | None = None
    claimed_by: str | None = None
    claim_count: int = 0
    processed_at: datetime | None = None
    retraining_run_id: str | None = None
    dagster_run_id: str | None = None
    error_message: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RetrainingRequest:
        """From a database row (psycopg values, or PostgREST JSON with ISO 8601 timestamps)."""
        names = cls.__dataclass_fields__
        values = {k: v for k, v in row.items() if k in names}
        for key in ("id", "requested_by", "retraining_run_id"):
            if values.get(key) is not None:
                values[key] = str(values[key])
        for key in ("created_at", "claimed_at", "processed_at"):
            values[key] = parse_timestamp(values.get(key))
        values["options"] = {} if values.get("options") is None else values["options"]
        values["claim_count"] = values.get("claim_count") or 0
        return cls(**values)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_REQUEST_STATUSES


@dataclass(frozen=True)
class AccuracyCount:
    """Usable evaluated predictions in a period and how many were right (counted in the database)."""

    evaluated: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.evaluated if self.evaluated else None


@dataclass(frozen=True)
class DailyAccuracy(AccuracyCount):
    """The `AccuracyCount` of one UTC day (by evaluated_at)."""

    day: date = field(kw_only=True)


@dataclass(frozen=True)
class DailyCoverage:
    """Predictions made on one UTC day (by predicted_at) and how many of them have an outcome by now."""

    day: date
    predictions: int = 0
    evaluated: int = 0

    @property
    def share(self) -> float | None:
        return self.evaluated / self.predictions if self.predictions else None


@dataclass(frozen=True)
class ConfusionCount:
    """Usable evaluated predictions in a period, how many were right, and their confusion matrix
    (counted in the database): `matrix[i][j]` rows whose actual label is `labels[i]` and predicted
    label `labels[j]`.

    The matrix may hold fewer rows than `evaluated` (`left_out`): those with a label beyond the most
    frequent ones the store returns, or beyond the hourly counts' cap of label pairs (see
    20261203000000_confusion_counts.sql). `evaluated` and `correct` always count every row.
    """

    labels: tuple[str, ...] = ()
    matrix: tuple[tuple[int, ...], ...] = ()
    evaluated: int = 0
    correct: int = 0

    @classmethod
    def from_pairs(cls, evaluated: int, correct: int, actual: Sequence[str], predicted: Sequence[str],
                   counts: Sequence[int]) -> ConfusionCount:
        """From (actual, predicted, count) triples, as `evaluation_confusion_counts` returns them."""
        labels = tuple(sorted(set(actual) | set(predicted)))
        index = {label: i for i, label in enumerate(labels)}
        matrix = [[0] * len(labels) for _ in labels]
        for a, p, n in zip(actual, predicted, counts, strict=True):
            matrix[index[a]][index[p]] += int(n)
        return cls(labels, tuple(map(tuple, matrix)), int(evaluated), int(correct))

    @property
    def array(self) -> np.ndarray:
        """The matrix as a (k, k) int64 array."""
        return np.array(self.matrix, dtype=np.int64).reshape(len(self.labels), len(self.labels))

    @property
    def in_matrix(self) -> int:
        return int(sum(map(sum, self.matrix)))

    @property
    def left_out(self) -> int:
        return self.evaluated - self.in_matrix

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.evaluated if self.evaluated else None

    def as_accuracy_count(self) -> AccuracyCount:
        return AccuracyCount(evaluated=self.evaluated, correct=self.correct)


def period_query(period: Period, schema: FeatureSchema, **kwargs: Any) -> RowQuery:
    """A `RowQuery` over `period`."""
    return RowQuery(start=period.start, end=period.end, schema=schema, from_key=period.from_key,
                    before_key=period.before_key, **kwargs)


def parse_timestamp(value: Any) -> Any:
    """A datetime from an ISO 8601 string (as PostgREST sends them); anything else as it is."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


