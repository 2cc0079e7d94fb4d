"""The store in a Supabase project: its tables through PostgREST with the `supabase` client.

Hosted PostgREST returns at most 1,000 rows per request and truncates silently, so every
multi-row read is paginated by keyset (never offsets, never a bare select) with its filters
pushed down onto the stored generated columns `reject_reason`, `is_correct` and `sample_key`
(PostgREST cannot compare two columns, so the comparisons are stored). Aggregates and state
changes that must be atomic are SQL functions of the migrations, called with `.rpc()`.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from postgrest.types import CountMethod, ReturnMethod
from pydantic import Field

from ..core.features import FeatureSchema, TypeSetCount, feature_frame, typed_column
from ..defs.request_queue import check_new_request, queue_order
from .store import (
    CONFUSION_MAX_LABELS,
    ROW_COLUMNS,
    AccuracyCount,
    ConfusionCount,
    DailyAccuracy,
    DailyCoverage,
    ModelVersion,
    RetrainingRequest,
    RunOutcome,
    RowKey,
    RowQuery,
    Store,
    StoreError,
    Window,
    WindowSummary,
    confusion_count,
    daily_accuracies,
    daily_coverages,
    evaluation_frame,
    parse_timestamp,
    request_id_of,
    to_json,
    type_set_counts,
    window_summary,
)
from .supabase_client import SupabaseProject

EVALUATIONS = "prediction_evaluations"
RUNS = "model_retraining_runs"
REQUESTS = "model_retraining_requests"
VERSIONS = "model_versions"

# A feature is selected by name (`f0:features->x0`) only when the name has no meaning in a PostgREST path
# (not only digits either: `features->0` is an array index) and the select list stays short; else the
# rows' whole feature objects are read, so names of any text or number load.
FEATURE_NAME = re.compile(r"(?=.*[A-Za-z_])[A-Za-z0-9_]+")
MAX_SELECT_CHARACTERS = 2_000
# Feature type-set hashes (up to 20 characters each) per `in` filter, to keep URLs well under 8 KB.
TYPE_SETS_PER_REQUEST = 200
RUN_UUIDS = ("id", "triggered_by", "request_id")
RUN_TIMESTAMPS = ("started_at", "completed_at", "created_at")
EVERY_ROW = sys.maxsize  # a `_read_pages` limit: read to the end

Order = tuple[tuple[str, bool], tuple[str, bool]]  # (column, descending) twice: a key, then a unique tiebreak


class SupabaseStore(Store, SupabaseProject):
    """`Store` on a Supabase project through its REST API (PostgREST) with the service_role key.

    The project needs the migrations of `supabase/migrations` (`supabase db push`). Reads are
    retried with backoff on transient failures; writes only when they are idempotent or
    provably did not run. Every failure is a `StoreError` naming the operation and the table.
    """

    backend: ClassVar[str] = "supabase"

    page_size: int = Field(default=1000, description="Rows asked for per request (hosted Supabase caps at 1,000).")
    insert_batch_size: int = Field(default=1000, description="Rows per insert request.")

    def describe(self) -> dict[str, str]:
        return {"backend": self.backend, "project": urlsplit(self.url).netloc, "api": "PostgREST via supabase-py"}

    def _call(self, operation: str, table: str, fn: Callable[[], Any], *, idempotent: bool) -> Any:
        return self._call_project(fn, operation=operation, target=table, idempotent=idempotent)

    def _rpc(self, function: str, params: dict[str, Any], *, operation: str, idempotent: bool) -> Any:
        params = to_json(params)
        return self._call(operation, f"rpc/{function}", lambda: self.client.rpc(function, params).execute().data,
                          idempotent=idempotent)

    def _read_pages(
        self, operation: str, table: str, select: Callable[[], Any], order: Order, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows of the filtered select `select()` in `order`, a page at a time.

        Each page starts after the last row of the one before (keyset pagination), so rows
        cannot be skipped or repeated. Reading stops at `limit` or at an empty page: a page
        shorter than asked may be the server's row cap, not the end.
        """
        rows: list[dict[str, Any]] = []
        last: tuple[Any, Any] | None = None
        while len(rows) < limit:
            size = min(self.page_size, limit - len(rows))

            def fetch(after=last, size=size):
                query = select()
                for column, descending in order:
                    query = query.order(column, desc=descending)
                if after is not None:
                    query = query.or_(keyset_after(order, after))
                return query.limit(size).execute().data

            page = self._call(operation, table, fetch, idempotent=True)
            if not page:
                break
            rows.extend(page)
            last = tuple(page[-1][column] for column, _ in order)
        return rows

    # The prediction log.
    def insert_evaluations(self, log: pd.DataFrame) -> int:
        records = evaluation_records(log)
        inserted = 0
        for start in range(0, len(records), self.insert_batch_size):
            batch = records[start:start + self.insert_batch_size]
            # Skipping existing prediction_ids makes a batch safe to repeat, unless a row has none.
            repeatable = all(r["prediction_id"] is not None for r in batch)
            try:
                response = self._call(
                    "insert", EVALUATIONS,
                    lambda batch=batch: self.client.table(EVALUATIONS).upsert(
                        batch, on_conflict="prediction_id", ignore_duplicates=True,
                        returning=ReturnMethod.minimal, count=CountMethod.exact,
                    ).execute(),
                    idempotent=repeatable,
                )
            except StoreError as exc:
                raise StoreError(f"{exc}; rows {start:,} to {start + len(batch) - 1:,} of {len(records):,} were "
                                 f"not confirmed, the {start:,} before them were written") from exc.__cause__
            inserted += response.count or 0
        return inserted

    def feature_type_sets(self, start: datetime, end: datetime, limit: int | None = None) -> list[TypeSetCount]:
        params = to_json({"p_start": start, "p_end": end, "p_limit": limit})
        rows: list[dict[str, Any]] = []
        while limit is None or len(rows) < limit:  # a page at a time: the server caps each answer
            size = self.page_size if limit is None else min(self.page_size, limit - len(rows))
            page = self._call("read feature types", "rpc/evaluation_feature_type_sets",
                              lambda offset=len(rows), size=size: self.client.rpc("evaluation_feature_type_sets", params)
                              .range(offset, offset + size - 1).execute().data, idempotent=True)
            if not page:
                break
            rows.extend(page)
        return type_set_counts(rows)

    def summarize_window(self, window: Window, schema: FeatureSchema) -> WindowSummary:
        rows = self._rpc(
            "summarize_evaluation_window",
            {"p_start": window.start, "p_end": window.end, "p_holdout_share": window.holdout_share,
             "p_schema": schema.as_json(), "p_accepts_missing": bool(schema.accepts_missing)},
            operation="summarise window", idempotent=True,
        )
        return window_summary(rows, self.evaluated_early(window.start, window.end))

    def accepted_type_sets(self, query: RowQuery) -> list[int]:
        """The feature type sets of the query's period whose rows its schema accepts, a page at a time."""
        params = to_json({"p_start": query.start, "p_end": query.end, "p_schema": query.schema.as_json(),
                          "p_accepts_missing": bool(query.schema.accepts_missing)})
        hashes: list[int] = []
        while True:
            def fetch(after=hashes[-1] if hashes else None):
                request = self.client.rpc("evaluation_accepted_type_sets", params)
                if after is not None:
                    request = request.gt("feature_types_hash", after)
                return request.order("feature_types_hash").limit(self.page_size).execute().data

            page = self._call("read accepted feature types", "rpc/evaluation_accepted_type_sets", fetch,
                              idempotent=True)
            if not page:
                return hashes
            hashes.extend(int(r["feature_types_hash"]) for r in page)

    def _rows_select(self, query: RowQuery, columns: str, type_sets: list[int], **select: Any) -> Any:
        """`select` on the log with every filter of `query` pushed down as a PostgREST filter, rows of
        the feature type sets `type_sets` only (those `query.schema` accepts)."""
        request = (self.client.table(EVALUATIONS).select(columns, **select)
                   .gte("evaluated_at", query.start.isoformat()).lt("evaluated_at", query.end.isoformat())
                   .not_.is_("actual_label", None).is_("reject_reason", None)
                   .in_("feature_types_hash", type_sets))
        if query.from_key is not None:  # (evaluated_at, id) >= key
            at = query.from_key.evaluated_at.isoformat()
            request = request.gte("evaluated_at", at).or_(key_bound(query.from_key, "gt", "gte"))
        if query.before_key is not None:  # (evaluated_at, id) < key
            at = query.before_key.evaluated_at.isoformat()
            request = request.lte("evaluated_at", at).or_(key_bound(query.before_key, "lt", "lt"))
        if query.is_correct is not None:
            request = request.is_("is_correct", query.is_correct)
        if query.min_confidence is not None:
            request = request.gt("confidence", query.min_confidence)
        if query.sample_key_below is not None:
            request = request.lt("sample_key", query.sample_key_below)
        if query.logged_by is not None:
            request = request.eq("model_version", query.logged_by)
        if query.not_logged_by is not None:  # "is distinct from": a row with no version is another's
            request = request.or_(f"model_version.neq.{postgrest_value(query.not_logged_by)},model_version.is.null")
        return request

    def load_rows(self, query: RowQuery) -> pd.DataFrame:
        sampled = query.sample_key_below is not None
        order: Order = (("sample_key", False), ("id", False)) if sampled else (("evaluated_at", True), ("id", True))
        columns = ",".join([*ROW_COLUMNS, *(["sample_key"] if sampled else []), *feature_select(query.schema)])
        # A URL holds a few hundred type sets: more are read in turns, each up to the limit, then merged.
        parts = [self._read_pages("read", EVALUATIONS, lambda t=type_sets: self._rows_select(query, columns, t),
                                  order, int(query.limit))
                 for type_sets in chunks(self.accepted_type_sets(query), TYPE_SETS_PER_REQUEST)]
        rows = [r for part in parts for r in part]
        if len(parts) > 1:
            rows = sorted(rows, key=lambda r: (parse_timestamp(r[order[0][0]]), r[order[1][0]]),
                          reverse=not sampled)[:int(query.limit)]
        return rows_frame(rows, query.schema)

    def count_rows(self, query: RowQuery) -> int:
        total = 0
        for type_sets in chunks(self.accepted_type_sets(query), TYPE_SETS_PER_REQUEST):
            response = self._call(
                "count", EVALUATIONS,
                lambda t=type_sets: self._rows_select(query, "id", t, count=CountMethod.exact, head=True).execute(),
                idempotent=True,
            )
            if response.count is None:
                raise StoreError(f"count ({EVALUATIONS}) failed: the response carried no Content-Range total")
            total += response.count
        return total

    # Retraining runs.
    def start_run(
        self, dagster_run_id: str, source: str, *, triggered_by: str | None = None, request_id: str | None = None
    ) -> str:
        run_id = self._rpc(
            "start_retraining_run",
            {"p_dagster_run_id": dagster_run_id, "p_source": source, "p_triggered_by": triggered_by,
             "p_request_id": request_id},
            operation="start run", idempotent=True,
        )
        return str(run_id)

    def update_run(self, dagster_run_id: str, *, status: str | None = None, **fields: Any) -> None:
        metrics = fields.pop("metrics", None)
        if status is not None:
            fields["status"] = status
        if not fields and metrics is None:
            return
        # Setting values and merging metrics give the same row when repeated.
        self._rpc("update_retraining_run",
                  {"p_dagster_run_id": dagster_run_id, "p_fields": fields, "p_metrics": metrics},
                  operation="update run", idempotent=True)

    def get_run(self, dagster_run_id: str) -> dict[str, Any] | None:
        rows = self._call("read", RUNS, lambda: self.client.table(RUNS).select("*")
                          .eq("dagster_run_id", dagster_run_id).limit(1).execute().data, idempotent=True)
        return run_row(rows[0]) if rows else None

    def latest_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        rows = self._read_pages("read", RUNS, lambda: self.client.table(RUNS).select("*"),
                                (("created_at", True), ("id", True)), limit)
        return [run_row(r) for r in rows]

    # The model registry.
    def register_model_version(self, version: ModelVersion) -> None:
        row = to_json({
            "version": version.version, "artifact_path": version.artifact_path, "sha256": version.sha256,
            "parent_version": version.parent_version, "training_run_id": version.training_run_id,
            "fine_tuned": version.fine_tuned, "feature_names": list(version.feature_names),
            "classes": list(version.classes), "metrics": version.metrics,
            "class_type": version.class_type, "base_size": version.base_size,
            "reference_accuracy": version.reference_accuracy,
            "feature_schema": version.schema.as_json(), "accepts_missing": version.schema.accepts_missing,
        })
        self._call("insert", VERSIONS,
                   lambda: self.client.table(VERSIONS).insert(row, returning=ReturnMethod.minimal).execute(),
                   idempotent=False)

    def record_feature_schema(self, version: str, schema: FeatureSchema) -> None:
        updated = self._rpc("record_feature_schema", {"p_version": version, "p_feature_schema": schema.as_json(),
                                                      "p_accepts_missing": schema.accepts_missing},
                            operation="record feature schema", idempotent=True)
        if not updated:
            raise StoreError(f"record feature schema ({VERSIONS}) failed: no model version {version!r}")

    def record_model_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        self._rpc("merge_model_metrics", {"p_version": version, "p_metrics": metrics},
                  operation="record metrics", idempotent=True)

    def promote(
        self, version: str, reason: str, reference_accuracy: float | None = None, *,
        expected_champion: str | None = None, check_champion: bool = False, outcome: RunOutcome | None = None,
    ) -> ModelVersion | None:
        params = {"p_version": version, "p_reason": reason, "p_reference_accuracy": reference_accuracy,
                  "p_expected_champion": expected_champion, "p_check_champion": check_champion}
        if outcome is not None:
            params.update(p_dagster_run_id=outcome.dagster_run_id, p_run_fields=outcome.fields,
                          p_run_metrics=outcome.metrics, p_model_metrics=outcome.model_metrics)
        row = self._rpc("promote_model_version", params, operation="promote", idempotent=False)
        row = row[0] if isinstance(row, list) else row
        return ModelVersion.from_row(row) if row and row.get("version") else None

    def champion(self) -> ModelVersion | None:
        rows = self._call("read", VERSIONS, lambda: self.client.table(VERSIONS).select("*")
                          .is_("is_champion", True).limit(1).execute().data, idempotent=True)
        return ModelVersion.from_row(rows[0]) if rows else None

    def model_versions(self, limit: int = 20) -> list[ModelVersion]:
        rows = self._read_pages("read", VERSIONS, lambda: self.client.table(VERSIONS).select("*"),
                                (("created_at", True), ("version", True)), limit)
        return [ModelVersion.from_row(r) for r in rows]

    def model_version(self, version: str) -> ModelVersion | None:
        rows = self._call("read", VERSIONS, lambda: self.client.table(VERSIONS).select("*")
                          .eq("version", version).limit(1).execute().data, idempotent=True)
        return ModelVersion.from_row(rows[0]) if rows else None

    # Retention.
    def versions_for_retention(self) -> list[ModelVersion]:
        rows = self._read_pages("read", VERSIONS, lambda: self.client.table(VERSIONS).select("*"),
                                (("created_at", True), ("version", True)), EVERY_ROW)
        return [ModelVersion.from_row(r) for r in rows]

    def unfinished_runs(self) -> list[dict[str, Any]]:
        rows = self._read_pages("read unfinished", RUNS, lambda: self.client.table(RUNS).select("*")
                                .in_("status", ["pending", "running"]), (("created_at", True), ("id", True)),
                                EVERY_ROW)
        return [run_row(r) for r in rows]

    def mark_artifacts_pruned(self, versions: list[str]) -> dict[str, datetime]:
        marked: dict[str, datetime] = {}
        # A page of versions per call: the answer lists them, and the server caps answers. Marking again
        # what is marked changes nothing and answers the same, so a lost answer may be asked again.
        for batch in chunks(list(versions), self.page_size):
            rows = self._rpc("mark_model_artifacts_pruned", {"p_versions": batch}, operation="mark pruned",
                             idempotent=True)
            marked.update({r["version"]: parse_timestamp(r["artifact_pruned_at"]) for r in rows})
        return marked

    # Retraining requests: state changes through the SQL functions of 20261126000200_retraining_triggers.sql.
    def create_request(
        self, reason: str, *, priority: str = "normal", options: dict[str, Any] | None = None,
        requested_by: str | None = None,
    ) -> RetrainingRequest:
        priority, parsed, requested_by = check_new_request(priority, options, requested_by)
        # The id is chosen here so that a repeated insert is a no-op: the request is queued once.
        row = {"id": str(uuid.uuid4()), "reason": reason, "priority": priority, "options": parsed.as_json(),
               "requested_by": requested_by}
        self._call("insert", REQUESTS, lambda: self.client.table(REQUESTS).upsert(
            row, on_conflict="id", ignore_duplicates=True, returning=ReturnMethod.minimal).execute(),
            idempotent=True)
        request = self.get_request(row["id"])
        if request is None:
            raise StoreError(f"insert ({REQUESTS}) failed: request {row['id']} is missing after its insert")
        return request

    def get_request(self, request_id: str) -> RetrainingRequest | None:
        rows = self._call("read", REQUESTS, lambda: self.client.table(REQUESTS).select("*")
                          .eq("id", request_id).limit(1).execute().data, idempotent=True)
        return RetrainingRequest.from_row(rows[0]) if rows else None

    def latest_requests(self, limit: int = 10) -> list[RetrainingRequest]:
        rows = self._read_pages("read", REQUESTS, lambda: self.client.table(REQUESTS).select("*"),
                                (("created_at", True), ("id", False)), limit)
        return [RetrainingRequest.from_row(r) for r in rows]

    def claim_requests(self, limit: int, claimed_by: str) -> list[RetrainingRequest]:
        claimed: list[RetrainingRequest] = []
        while len(claimed) < limit:
            # At most a page per call: rows claimed beyond the server's row cap would vanish from the answer.
            size = min(self.page_size, limit - len(claimed))
            rows = self._rpc("claim_retraining_requests", {"p_limit": size, "p_claimed_by": claimed_by},
                             operation="claim", idempotent=False)
            claimed.extend(RetrainingRequest.from_row(r) for r in rows)
            if len(rows) < size:
                break
        return queue_order(claimed)

    def release_requests(self, request_ids: list[str], claimed_by: str) -> int:
        return self._rpc("release_retraining_requests", {"p_ids": list(request_ids), "p_claimed_by": claimed_by},
                         operation="release", idempotent=True)

    def stale_requests(self, claimed_before: datetime, limit: int = 100) -> list[RetrainingRequest]:
        rows = self._read_pages(
            "read stale", REQUESTS,
            lambda: self.client.table(REQUESTS).select("*").eq("status", "processing")
            .lt("claimed_at", claimed_before.isoformat()),
            (("claimed_at", False), ("id", False)), limit)
        return [RetrainingRequest.from_row(r) for r in rows]

    def recover_requests(
        self, request_ids: list[str], stale_after: timedelta, max_claims: int
    ) -> list[RetrainingRequest]:
        rows = self._rpc("recover_stale_retraining_requests",
                         {"p_ids": list(request_ids), "p_stale_after": stale_after, "p_max_claims": max_claims},
                         operation="recover", idempotent=False)
        return [RetrainingRequest.from_row(r) for r in rows]

    def attach_request_run(self, request_id: str, dagster_run_id: str) -> RetrainingRequest:
        row = self._rpc("attach_retraining_run", {"p_request_id": request_id, "p_dagster_run_id": dagster_run_id},
                        operation="link to its run", idempotent=True)
        return RetrainingRequest.from_row(row)

    def cancel_request(self, request_id: str) -> RetrainingRequest:
        # Cancelling twice answers the same: safe to repeat.
        row = self._rpc("cancel_retraining_request", {"p_request_id": request_id_of(request_id)},
                        operation="cancel", idempotent=True)
        return RetrainingRequest.from_row(row)

    def finish_request(
        self, request_id: str, status: str, error_message: str | None = None, dagster_run_id: str | None = None
    ) -> RetrainingRequest:
        # An ended request never changes again, so repeating the call is harmless.
        row = self._rpc("finish_retraining_request",
                        {"p_request_id": request_id, "p_status": status, "p_error_message": error_message,
                         "p_dagster_run_id": dagster_run_id},
                        operation="finish", idempotent=True)
        return RetrainingRequest.from_row(row)

    def record_run_end(
        self, dagster_run_id: str, status: str, error_message: str | None, *, source: str,
        request_id: str | None = None, triggered_by: str | None = None, request_status: str | None = None,
    ) -> None:
        self._rpc("record_retraining_run_end",
                  {"p_dagster_run_id": dagster_run_id, "p_run_status": status, "p_error_message": error_message,
                   "p_source": source, "p_request_id": request_id, "p_triggered_by": triggered_by,
                   "p_request_status": request_status},
                  operation="record run end", idempotent=True)

    def count_correct(self, start: datetime, end: datetime, model_version: str | None = None) -> AccuracyCount:
        rows = self._rpc("evaluation_accuracy", {"p_start": start, "p_end": end, "p_model_version": model_version},
                         operation="count correct", idempotent=True)
        return AccuracyCount(evaluated=rows[0]["evaluated"], correct=rows[0]["correct"])

    def confusion_counts(self, start: datetime, end: datetime, model_version: str | None = None,
                         max_labels: int = CONFUSION_MAX_LABELS) -> ConfusionCount:
        rows = self._rpc("evaluation_confusion_counts",
                         {"p_start": start, "p_end": end, "p_model_version": model_version,
                          "p_max_labels": max_labels},
                         operation="count confusion", idempotent=True)
        return confusion_count(rows[0])

    def daily_accuracy(self, start: datetime, end: datetime) -> list[DailyAccuracy]:
        return daily_accuracies(self._rpc("evaluation_daily_accuracy", {"p_start": start, "p_end": end},
                                          operation="count daily accuracy", idempotent=True))

    def outcome_coverage(self, start: datetime, end: datetime) -> list[DailyCoverage]:
        return daily_coverages(self._rpc("evaluation_outcome_coverage", {"p_start": start, "p_end": end},
                                         operation="count outcome coverage", idempotent=True))

    def evaluated_early(self, start: datetime, end: datetime) -> int:
        rows = self._rpc("evaluation_early_count", {"p_start": start, "p_end": end},
                         operation="count evaluated early", idempotent=True)
        return int(rows[0]["evaluated_early"])


def feature_select(schema: FeatureSchema) -> list[str]:
    """The select of the features: `f{i}:features->name` each, or the whole object (`features`) when a
    name could not be spelled in a PostgREST path or the list would be long."""
    columns = [f"f{i}:features->{name}" for i, name in enumerate(schema.names)]
    return columns if by_name(schema) else ["features"]


def by_name(schema: FeatureSchema) -> bool:
    """Whether a load selects each feature by name (see `FEATURE_NAME`), not whole feature objects."""
    return (all(FEATURE_NAME.fullmatch(name) for name in schema.names)
            and sum(len(name) + 16 for name in schema.names) <= MAX_SELECT_CHARACTERS)


def postgrest_value(value: Any) -> str:
    """`value` as an operand inside a PostgREST logic tree (`or=(...)`): strings double-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def key_bound(key: RowKey, time_operator: str, id_operator: str) -> str:
    """The PostgREST `or` filter for rows at or after (`gt`, `gte`) or before (`lt`, `lt`) `key` in
    (evaluated_at, id) order, among rows whose time is on that side of the key's or equal to it.
    PostgREST ands every `or` of a request, as it does filters."""
    return f"evaluated_at.{time_operator}.{postgrest_value(key.evaluated_at.isoformat())},id.{id_operator}.{key.id}"


def keyset_after(order: Order, last: tuple[Any, Any]) -> str:
    """The PostgREST `or` filter for the rows after `last` in `order` (key, then unique tiebreak)."""
    (key, key_desc), (tiebreak, tiebreak_desc) = order
    key_value, tiebreak_value = postgrest_value(last[0]), postgrest_value(last[1])
    return (f"{key}.{'lt' if key_desc else 'gt'}.{key_value},"
            f"and({key}.eq.{key_value},{tiebreak}.{'lt' if tiebreak_desc else 'gt'}.{tiebreak_value})")


def evaluation_records(log: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows to insert into `prediction_evaluations`, completed as the Postgres backend completes them.

    A missing feature object or predicted label is kept (and set aside by `reject_reason`), not lost.
    """
    frame = evaluation_frame(log)
    now = datetime.now(timezone.utc).isoformat()
    records = []
    for row in frame.to_dict(orient="records"):
        record = to_json(row)
        record["features"] = {} if record["features"] is None else record["features"]
        record["predicted_label"] = "" if record["predicted_label"] is None else record["predicted_label"]
        record["predicted_at"] = record["predicted_at"] or now
        records.append(record)
    return records


def rows_frame(rows: list[dict[str, Any]], schema: FeatureSchema) -> pd.DataFrame:
    """The loaded rows as the Postgres backend returns them: `ROW_COLUMNS`, then a column per feature
    in the dtype of its kind."""
    frame = pd.DataFrame({
        "id": pd.array([r["id"] for r in rows], dtype="int64"),
        "prediction_id": pd.array(["" if r["prediction_id"] is None else r["prediction_id"] for r in rows],
                                  dtype="str"),
        "evaluated_at": pd.to_datetime([r["evaluated_at"] for r in rows], utc=True, format="ISO8601"),
        "predicted_label": pd.array([r["predicted_label"] for r in rows], dtype="str"),
        "actual_label": pd.array([r["actual_label"] for r in rows], dtype="str"),
        "confidence": np.array([r["confidence"] for r in rows], dtype="float64"),
    }, columns=list(ROW_COLUMNS))
    if not by_name(schema):  # whole feature objects (only accepted rows are loaded: each is an object)
        return pd.concat([frame, feature_frame([r["features"] for r in rows], schema).set_axis(frame.index)], axis=1)
    for i, feature in enumerate(schema.features):
        frame[feature.name] = typed_column([r[f"f{i}"] for r in rows], feature.kind).set_axis(frame.index)
    return frame


def chunks(values: list[Any], size: int) -> list[list[Any]]:
    """`values` in lists of at most `size` (none for no values: no request is needed to find nothing)."""
    return [values[i:i + size] for i in range(0, len(values), size)]


def run_row(row: dict[str, Any]) -> dict[str, Any]:
    """A `model_retraining_runs` row with the Python types the Postgres backend gives (UUID, datetime)."""
    values = dict(row)
    for key in RUN_UUIDS:
        if values.get(key) is not None:
            values[key] = uuid.UUID(values[key])
    for key in RUN_TIMESTAMPS:
        values[key] = parse_timestamp(values.get(key))
    return values
