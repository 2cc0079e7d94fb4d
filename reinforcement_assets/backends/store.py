"""The store: every read and write of the loop's tables goes through this interface.

Backends (PostgreSQL through psycopg, Supabase through PostgREST) implement `Store`; assets,
sensors and the CLI only ever see this interface and the plain records of `records` (re-exported
here).
"""

from __future__ import annotations

import abc
import logging
import math
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import dagster as dg
import numpy as np
import pandas as pd

from ..core.features import FeatureSchema, TypeSetCount
from ..core.labels import label_text
from ..core.rows import storable_features
from ..core.records import (  # noqa: F401  (re-exported: the backends and callers import them from here)
    EVALUATION_COLUMNS,
    REQUEST_PRIORITIES,
    ROW_COLUMNS,
    RUN_SOURCES,
    SAMPLE_KEY_RANGE,
    TERMINAL_REQUEST_STATUSES,
    AccuracyCount,
    ConfusionCount,
    DailyAccuracy,
    DailyCoverage,
    ModelVersion,
    Period,
    RetrainingRequest,
    RowKey,
    RowQuery,
    RunOutcome,
    StoreError,
    Window,
    WindowSummary,
    parse_timestamp,
    period_query,
)


# Labels in a confusion matrix the store returns: the most frequent; rows with another are left out of it.
CONFUSION_MAX_LABELS = 100


class Store(dg.ConfigurableResource):
    """What the loop needs from its database: a Dagster resource, also usable on its own."""

    backend: ClassVar[str]

    # The prediction log.
    @abc.abstractmethod
    def insert_evaluations(self, log: pd.DataFrame) -> int:
        """Insert prediction rows (columns as in `prediction_evaluations`); existing prediction_ids are left alone."""

    @abc.abstractmethod
    def feature_type_sets(self, start: datetime, end: datetime, limit: int | None = None) -> list[TypeSetCount]:
        """The {key: JSON type} sets of the usable rows of [start, end), most rows first (from the
        counts): all of them, or the `limit` most common."""

    @abc.abstractmethod
    def summarize_window(self, window: Window, schema: FeatureSchema) -> WindowSummary:
        """Row counts, accuracy and rejects by reason (and feature) over the evaluated rows of the
        window, rows judged against `schema`, and where its holdout starts: the newest
        `window.holdout_share` of its usable rows in (evaluated_at, id) order, found from the hourly
        counts and one hour's rows (SQL `evaluation_holdout_start`)."""

    @abc.abstractmethod
    def load_rows(self, query: RowQuery) -> pd.DataFrame:
        """Usable rows matching `query`: `ROW_COLUMNS` plus one column per feature, in the dtype of its
        kind (`features.typed_column`)."""

    def load_many(self, *queries: RowQuery) -> list[pd.DataFrame]:
        """`load_rows` of each query, all at once: each runs on its own connection (or request)."""
        with ThreadPoolExecutor(max_workers=max(1, len(queries))) as pool:
            return list(pool.map(self.load_rows, queries))

    @abc.abstractmethod
    def count_rows(self, query: RowQuery) -> int:
        """How many usable rows match `query`, ignoring its limit."""

    # Retraining runs.
    @abc.abstractmethod
    def start_run(
        self, dagster_run_id: str, source: str, *, triggered_by: str | None = None, request_id: str | None = None
    ) -> str:
        """Create or resume the run's row as `running`; returns its id."""

    @abc.abstractmethod
    def update_run(self, dagster_run_id: str, *, status: str | None = None, **fields: Any) -> None:
        """Set columns of the run's row; `metrics` is merged; a terminal status stamps `completed_at`."""

    @abc.abstractmethod
    def get_run(self, dagster_run_id: str) -> dict[str, Any] | None:
        """The run's row, or None."""

    @abc.abstractmethod
    def latest_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest rows of `model_retraining_runs`."""

    # The model registry.
    @abc.abstractmethod
    def register_model_version(self, version: ModelVersion) -> None:
        """Add a trained model to the registry (not as champion)."""

    @abc.abstractmethod
    def record_feature_schema(self, version: str, schema: FeatureSchema) -> None:
        """Set the version's feature schema (once its kinds are known) and whether it accepts missing values."""

    @abc.abstractmethod
    def record_model_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        """Merge `metrics` into the version's registry row."""

    @abc.abstractmethod
    def promote(
        self, version: str, reason: str, reference_accuracy: float | None = None, *,
        expected_champion: str | None = None, check_champion: bool = False, outcome: RunOutcome | None = None,
    ) -> ModelVersion | None:
        """Make `version` the only champion, atomically; returns the champion afterwards.

        With `check_champion`, only while the champion is still `expected_champion` (None: no
        champion), so a run never replaces a model it was not compared with. `outcome` is written in
        the same transaction when the promotion happens (not when the swap is lost): the registry and
        the run's row agree whatever fails afterwards.
        """

    @abc.abstractmethod
    def champion(self) -> ModelVersion | None:
        """The current champion, or None before the first promotion."""

    @abc.abstractmethod
    def model_versions(self, limit: int = 20) -> list[ModelVersion]:
        """The newest registered versions."""

    @abc.abstractmethod
    def model_version(self, version: str) -> ModelVersion | None:
        """The version's registry row, or None."""

    # Retention (`pruning.prune_artifacts`): registry rows are never deleted, only marked.
    @abc.abstractmethod
    def versions_for_retention(self) -> list[ModelVersion]:
        """Every registered version, newest first: what the retention rule decides over."""

    @abc.abstractmethod
    def unfinished_runs(self) -> list[dict[str, Any]]:
        """The rows of `model_retraining_runs` still `pending` or `running`, newest first."""

    @abc.abstractmethod
    def mark_artifacts_pruned(self, versions: list[str]) -> dict[str, datetime]:
        """Record that these versions' files are deleted (SQL `mark_model_artifacts_pruned`), except the
        champion's; returns each version that is marked (now or before) with when. Only those files may
        go: a marked version can never be promoted, and the champion is never marked."""

    # Retraining requests: the queue the request sensor drains. Every state change is atomic.
    @abc.abstractmethod
    def create_request(
        self, reason: str, *, priority: str = "normal", options: dict[str, Any] | None = None,
        requested_by: str | None = None,
    ) -> RetrainingRequest:
        """Queue a request as `pending` (what the web UI does); a bad priority or option raises `ValueError`."""

    @abc.abstractmethod
    def cancel_request(self, request_id: str) -> RetrainingRequest:
        """Cancel a pending request (SQL `cancel_retraining_request`); one already cancelled is returned as
        it is. An unknown id, or a request no longer pending, is a `StoreError` saying so."""

    @abc.abstractmethod
    def get_request(self, request_id: str) -> RetrainingRequest | None:
        """The request, or None."""

    @abc.abstractmethod
    def latest_requests(self, limit: int = 10) -> list[RetrainingRequest]:
        """The newest requests, newest first."""

    @abc.abstractmethod
    def claim_requests(self, limit: int, claimed_by: str) -> list[RetrainingRequest]:
        """Move up to `limit` pending requests to `processing` (SQL `claim_retraining_requests`).

        Highest priority first, then oldest; rows being claimed elsewhere are skipped, so
        concurrent callers never get the same request. Returned in queue order.
        """

    @abc.abstractmethod
    def release_requests(self, request_ids: list[str], claimed_by: str) -> int:
        """Put this claimant's claims without a started run back to `pending`; returns how many."""

    @abc.abstractmethod
    def stale_requests(self, claimed_before: datetime, limit: int = 100) -> list[RetrainingRequest]:
        """`processing` requests claimed before `claimed_before`, oldest claim first."""

    @abc.abstractmethod
    def recover_requests(
        self, request_ids: list[str], stale_after: timedelta, max_claims: int
    ) -> list[RetrainingRequest]:
        """Re-queue (or, after `max_claims` claims, fail) stale claims with no run attached.

        SQL `recover_stale_retraining_requests`; returns the requests changed.
        """

    @abc.abstractmethod
    def attach_request_run(self, request_id: str, dagster_run_id: str) -> RetrainingRequest:
        """Link a pending or processing request to the run carrying it (SQL `attach_retraining_run`).

        Sets `dagster_run_id`, `retraining_run_id` and `processed_at` and makes it `processing`.
        Returns the request as it stands; one that has ended or belongs to another run is left unchanged.
        """

    @abc.abstractmethod
    def finish_request(
        self, request_id: str, status: str, error_message: str | None = None, dagster_run_id: str | None = None
    ) -> RetrainingRequest:
        """End a request as `completed`, `failed` or `cancelled`; a request already ended is left as it is."""

    @abc.abstractmethod
    def record_run_end(
        self, dagster_run_id: str, status: str, error_message: str | None, *, source: str,
        request_id: str | None = None, triggered_by: str | None = None, request_status: str | None = None,
    ) -> None:
        """Write a run's bad end into its row (created if missing) and end its request, in one transaction."""

    # The decay trigger.
    @abc.abstractmethod
    def count_correct(self, start: datetime, end: datetime, model_version: str | None = None) -> AccuracyCount:
        """Usable evaluated predictions of [start, end) (of `model_version` only, if given) and how many were right."""

    @abc.abstractmethod
    def confusion_counts(self, start: datetime, end: datetime, model_version: str | None = None,
                         max_labels: int = CONFUSION_MAX_LABELS) -> ConfusionCount:
        """`count_correct`, and the confusion matrix of those predictions over their `max_labels` most
        frequent labels (SQL `evaluation_confusion_counts`: from the hourly counts, never the window's rows)."""

    # The monitoring page: from the hourly counts, never the window's rows.
    @abc.abstractmethod
    def daily_accuracy(self, start: datetime, end: datetime) -> list[DailyAccuracy]:
        """`count_correct` per UTC day overlapping [start, end), every day (zeros where none); the first and
        last day count only the rows inside [start, end) (SQL `evaluation_daily_accuracy`)."""

    @abc.abstractmethod
    def outcome_coverage(self, start: datetime, end: datetime) -> list[DailyCoverage]:
        """Predictions per UTC day of predicted_at overlapping [start, end), every day, and how many have an
        outcome by now; in whole hours, start and end rounded down to the hour (SQL `evaluation_outcome_coverage`)."""

    @abc.abstractmethod
    def evaluated_early(self, start: datetime, end: datetime) -> int:
        """Rows predicted in [start, end) (whole hours, rounded down) evaluated before they were predicted."""

    def describe(self) -> dict[str, str]:
        """What the Dagster UI shows about this backend (never a secret)."""
        return {"backend": self.backend}

    @contextmanager
    def session(self) -> Iterator[None]:
        """Several reads in a row, such as one look at the Monitoring page, share what they can (one
        database connection on PostgreSQL); nothing to share by default."""
        yield


def as_uuid(value: Any) -> str | None:
    """`value` as the text of a UUID (the type of the request and user id columns), or None."""
    try:
        return str(uuid.UUID(str(value).strip())) if value else None
    except ValueError:
        return None


def request_id_of(raw: str) -> str:
    """A request id as the store takes it, or a `StoreError` for text that is no UUID."""
    request_id = as_uuid(raw)
    if request_id is None:
        raise StoreError(f"not a retraining request id (a UUID): {str(raw)[:100]!r}")
    return request_id


def to_json(value: Any, *, strict: bool = False) -> Any:
    """`value` as plain JSON: numpy scalars unwrapped, NaN, infinities and pandas' NA as null; times in
    ISO 8601, decimals as numbers, sets as lists unless `strict` (logged features: their values are
    kept as sent, never retyped). Anything else (bytes, objects) is a `TypeError`."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (dict, list, tuple, np.ndarray)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        converted = {str(k): to_json(v, strict=strict) for k, v in items}
        return converted if isinstance(value, dict) else list(converted.values())
    if strict and not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"a {type(value).__name__} is not a JSON value")
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, timedelta):
        return f"{value.total_seconds()} seconds"
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"a {type(value).__name__} is not JSON")
    return value


def evaluation_frame(log: pd.DataFrame) -> pd.DataFrame:
    """`log` as every backend inserts it: exactly `EVALUATION_COLUMNS`, as objects, missing values as
    None, labels as text (`label_text`: 3, 3.0 and '3' are all stored as '3'), features as
    `rows.storable_features` keeps them. What it holds that the log cannot take as given is logged
    (`warn_about_batch`)."""
    frame = log.reindex(columns=list(EVALUATION_COLUMNS))
    frame = frame.astype(object).where(frame.notna(), None)
    frame["features"] = pd.Series([feature_json(v) for v in frame["features"]], index=frame.index, dtype=object)
    # A confidence that is no finite number is missing, on every backend (JSON has no infinity).
    frame["confidence"] = pd.Series([v if _finite(v) else None for v in frame["confidence"]], index=frame.index,
                                    dtype=object)
    for column in ("predicted_label", "actual_label"):
        frame[column] = pd.Series([label_text(v) for v in frame[column]], index=frame.index, dtype=object)
    warn_about_batch(frame)
    return frame


def batch_problems(frame: pd.DataFrame) -> dict[str, int]:
    """What a batch for `insert_evaluations` (an `evaluation_frame`) holds that the log cannot take as
    given, by kind, kinds with no row left out: `duplicate_prediction_id` (rows repeating an earlier
    row's id: only the first is written), `evaluated_at_missing` (an outcome with no time: kept, in no
    window until it is set, counted by the window summary), `evaluated_before_predicted` (kept)."""
    ids = frame["prediction_id"]
    predicted = pd.to_datetime(frame["predicted_at"], errors="coerce", utc=True)
    evaluated = pd.to_datetime(frame["evaluated_at"], errors="coerce", utc=True)
    problems = {
        "duplicate_prediction_id": int((ids.notna() & ids.duplicated()).sum()),
        "evaluated_at_missing": int((frame["actual_label"].notna() & frame["evaluated_at"].isna()).sum()),
        "evaluated_before_predicted": int((evaluated < predicted).sum()),
    }
    return {kind: n for kind, n in problems.items() if n}


def warn_about_batch(frame: pd.DataFrame) -> dict[str, int]:
    """`batch_problems` of `frame`, logged as one warning when there are any."""
    problems = batch_problems(frame)
    if problems:
        logging.getLogger("reinforcement_assets.store").warning(
            "prediction_evaluations batch of %d rows: %s", len(frame),
            ", ".join(f"{kind} {n:,}" for kind, n in problems.items()))
    return problems


def feature_json(value: Any) -> Any:
    """A logged feature object as the store writes it (`rows.storable_features`, then plain JSON). One
    holding a value that is no JSON value (bytes, a Decimal, a timestamp, an object) is kept as its
    Python text (never a JSON object), and so set aside as `features_not_object`: not silently
    retyped, not a failed insert."""
    value = storable_features(value)
    try:
        return to_json(value, strict=True)
    except TypeError:
        return repr(value)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:  # not a number: left for the database to refuse or set aside
        return True


def window_summary(rows: list[dict[str, Any]], evaluated_early: int = 0) -> WindowSummary:
    """A `WindowSummary` from the rows of `summarize_evaluation_window` (one per reject reason and
    feature; reason null: usable; each carries the key of the first holdout row)."""
    usable = next((r for r in rows if r["reason"] is None), None) or {}
    n = usable.get("row_count", 0)
    train = usable.get("train_rows", 0)
    rejected: dict[str, int] = {}
    rejected_on: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["reason"] is not None:
            rejected[r["reason"]] = rejected.get(r["reason"], 0) + r["row_count"]
            if r.get("feature") is not None:
                rejected_on.setdefault(r["reason"], {})[r["feature"]] = r["row_count"]
    first = rows[0] if rows else {}
    holdout_start = (RowKey(parse_timestamp(first["holdout_evaluated_at"]), int(first["holdout_id"]))
                     if first.get("holdout_evaluated_at") is not None else None)
    return WindowSummary(rows=n, correct=usable.get("correct", 0), train_rows=train,
                         train_correct=usable.get("train_correct", 0), holdout_rows=n - train,
                         holdout_start=holdout_start, rejected=rejected, rejected_on=rejected_on,
                         evaluated_early=evaluated_early)


def daily_accuracies(rows: list[dict[str, Any]]) -> list[DailyAccuracy]:
    """`DailyAccuracy`s from the rows of `evaluation_daily_accuracy`."""
    return [DailyAccuracy(int(r["evaluated"]), int(r["correct"]), day=as_date(r["day"])) for r in rows]


def daily_coverages(rows: list[dict[str, Any]]) -> list[DailyCoverage]:
    """`DailyCoverage`s from the rows of `evaluation_outcome_coverage`."""
    return [DailyCoverage(as_date(r["day"]), int(r["predictions"]), int(r["evaluated"])) for r in rows]


def as_date(value: date | str) -> date:
    """A date, from psycopg (a date) or PostgREST (ISO text)."""
    return value if isinstance(value, date) else date.fromisoformat(value)


def type_set_counts(rows: list[dict[str, Any]]) -> list[TypeSetCount]:
    """`TypeSetCount`s from the rows of `evaluation_feature_type_sets`."""
    return [TypeSetCount(dict(r["feature_types"]), int(r["row_count"])) for r in rows]


def confusion_count(row: dict[str, Any]) -> ConfusionCount:
    """A `ConfusionCount` from the row of `evaluation_confusion_counts` (psycopg or PostgREST JSON)."""
    return ConfusionCount.from_pairs(row["evaluated"], row["correct"], row["actual_labels"] or [],
                                     row["predicted_labels"] or [], row["row_counts"] or [])
