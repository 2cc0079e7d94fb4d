"""The store on PostgreSQL through psycopg 3: the embedded default or any Postgres URL."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Optional

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import PrivateAttr

from ..core.features import FeatureSchema, TypeSetCount, feature_frame, typed_column
from ..defs.request_queue import check_new_request
from .database_url import InvalidDatabaseUrl, connection_parameters
from .embedded import EmbeddedServerError, database_url
from .schema import SchemaError, prepare_database
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
    RowQuery,
    Store,
    StoreError,
    Window,
    WindowSummary,
    confusion_count,
    daily_accuracies,
    daily_coverages,
    evaluation_frame,
    request_id_of,
    to_json,
    type_set_counts,
    window_summary,
)

logger = logging.getLogger(__name__)
_prepared: set[str] = set()
_prepare_lock = threading.Lock()
# Past this many columns a load reads each row's whole feature object instead of a column per feature:
# PostgreSQL's select list holds at most 1,664 entries.
MAX_FEATURE_COLUMNS = 1_000


def redact_credentials(text: str, url: str | None = None) -> str:
    """`text` with the passwords of any connection URLs or `password=` settings in it masked.

    Given the configured `url`, its password is masked too, whatever its shape: libpq's messages
    about a URL it cannot parse quote pieces of it (after an unescaped `@`, around a space or a `%`).
    """
    for secret in sorted(password_pieces(url), key=len, reverse=True) if url else ():
        text = text.replace(secret, "***")
    text = re.sub(r"(//[^/:@\s\"']*:)[^@\s\"']*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)


def password_pieces(url: str) -> set[str]:
    """The password of `url` read every way a parser might (up to the first or the last `@`, decoded
    or not), and its pieces between separators, so no part of it can be quoted back."""
    pieces: set[str] = set()
    try:
        pieces.add(psycopg.conninfo.conninfo_to_dict(url).get("password") or "")
    except psycopg.Error:
        pass
    _, _, rest = url.partition("://")
    authority = re.split(r"[/?]", rest, maxsplit=1)[0] if rest else ""
    for userinfo in (authority.partition("@")[0], authority.rpartition("@")[0]):
        if ":" in userinfo:
            password = userinfo.split(":", 1)[1]
            pieces.update({password, urllib.parse.unquote(password)})
    pieces.update(part for piece in list(pieces) for part in re.split(r"[@:/?\s%]", piece))
    return {piece for piece in pieces if len(piece) >= 3}


def error_text(exc: psycopg.Error) -> str:
    """One line for a database error: the server's message with its detail and hint (no PL/pgSQL
    context lines), or the client's own message (a connection failure)."""
    diag = exc.diag
    if diag.message_primary:
        text = diag.message_primary
        if diag.message_detail:
            text += f" ({diag.message_detail})"
        if diag.message_hint:
            text += f"; hint: {diag.message_hint}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def _prepare(url: str, *, embedded: bool) -> None:
    """Migrate or check the database once per process (see `schema.prepare_database`)."""
    with _prepare_lock:
        if url not in _prepared:
            try:
                prepare_database(url, migrate=embedded)
            except SchemaError as exc:
                raise StoreError(str(exc)) from None
            _prepared.add(url)


_sessions = threading.local()


def _held_connections() -> dict[int, psycopg.Connection]:
    """This thread's session connections, by the id of the store that opened them."""
    if not hasattr(_sessions, "held"):
        _sessions.held = {}
    return _sessions.held


class PostgresStore(Store):
    """`Store` on PostgreSQL: the database at `database_url`, else the embedded server in `data_dir`.

    On first use the migrations are applied on the embedded server, or at `database_url` when
    connected as the database's owner; any other user gets a clear error if migrations are
    pending or a privilege the loop needs is missing (`schema.prepare_database`).
    """

    backend: ClassVar[str] = "postgres"
    database_url: Optional[str] = None
    data_dir: str = ".reinforcement"
    _url: Optional[str] = PrivateAttr(default=None)

    @property
    def url(self) -> str:
        if self._url is None:
            try:
                url = self.database_url or database_url(self.data_dir)
            except EmbeddedServerError as exc:
                raise StoreError(str(exc)) from None
            if self.database_url:
                connection_parameters(self.database_url)  # refuse a URL libpq would quote back, before connecting
            _prepare(url, embedded=not self.database_url)
            self._url = url
        return self._url

    def parameters(self) -> dict[str, str]:
        """The configured URL's connection parameters; a `StoreError` naming what is wrong, never the URL."""
        try:
            return connection_parameters(self.database_url or "")
        except InvalidDatabaseUrl as exc:
            raise StoreError(str(exc)) from None

    def describe(self) -> dict[str, str]:
        if not self.database_url:
            return {"backend": "embedded-postgres", "data_dir": str(Path(self.data_dir).resolve())}
        try:
            info = connection_parameters(self.database_url)
        except InvalidDatabaseUrl:
            return {"backend": self.backend, "database": "REINFORCEMENT_DATABASE_URL is not a valid URL"}
        return {"backend": self.backend, "database": f"{info.get('host', '')}:{info.get('port', 5432)}/"
                                                      f"{info.get('dbname', '')}"}

    @contextmanager
    def connect(self, operation: str) -> Iterator[psycopg.Connection]:
        """A connection in UTC; database errors become a one-line `StoreError` naming `operation`, with
        no password in it (and without psycopg's exception as its cause, whose text may quote one)."""
        logger.debug("%s", operation)
        held = _held_connections().get(id(self))
        try:
            with nullcontext(held) if held is not None and not held.closed else self._open() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(redact_credentials(f"{operation} failed: {error_text(exc)}", self.database_url)) \
                from None
        except InvalidDatabaseUrl as exc:
            raise StoreError(f"{operation} failed: {exc}") from None

    @contextmanager
    def session(self) -> Iterator[None]:
        """Every call in this thread inside the block uses one connection (opened on entry, closed on
        exit) instead of one each: a connection costs about 10 ms, a page's indexed read less."""
        held = _held_connections()
        if id(self) in held:
            yield
            return
        with self.connect("open a session") as conn:
            held[id(self)] = conn
            try:
                yield
            finally:
                del held[id(self)]

    def _open(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, options="-c TimeZone=UTC")
        except psycopg.OperationalError:
            if self.database_url:
                raise
            self._url = None  # the embedded server may have been stopped since: start it again
            return psycopg.connect(self.url, autocommit=True, options="-c TimeZone=UTC")

    # The prediction log.
    def insert_evaluations(self, log: pd.DataFrame) -> int:
        frame = evaluation_frame(log)
        frame["features"] = [None if f is None else Jsonb(f) for f in frame["features"]]
        with self.connect("insert into prediction_evaluations") as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "create temporary table incoming_evaluations (prediction_id text, model_version text,"
                " features jsonb, predicted_label text, actual_label text, confidence float8,"
                " predicted_at timestamptz, evaluated_at timestamptz) on commit drop"
            )
            with cur.copy("copy incoming_evaluations from stdin") as copy:
                for row in frame.itertuples(index=False, name=None):
                    copy.write_row(row)
            # A missing label or feature object is kept, and flagged by reject_reason, not lost.
            cur.execute(
                "insert into public.prediction_evaluations (prediction_id, model_version, features,"
                " predicted_label, actual_label, confidence, predicted_at, evaluated_at)"
                " select prediction_id, model_version, coalesce(features, '{}'), coalesce(predicted_label, ''),"
                " actual_label, confidence, coalesce(predicted_at, now()), evaluated_at from incoming_evaluations"
                " on conflict (prediction_id) do nothing"
            )
            return cur.rowcount

    # Work PostgREST cannot express is a SQL function (20261126000100_supabase_rpc.sql and later): both
    # backends call the same one.
    def feature_type_sets(self, start: datetime, end: datetime, limit: int | None = None) -> list[TypeSetCount]:
        with self.connect("read feature types of prediction_evaluations") as conn, \
                conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("select * from public.evaluation_feature_type_sets(%s, %s, %s)",
                               (start, end, limit)).fetchall()
        return type_set_counts(rows)

    def summarize_window(self, window: Window, schema: FeatureSchema) -> WindowSummary:
        with self.connect("summarise prediction_evaluations") as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("select * from public.summarize_evaluation_window(%s, %s, %s, %s, %s)",
                               (window.start, window.end, window.holdout_share, Jsonb(schema.as_json()),
                                bool(schema.accepts_missing))).fetchall()
        return window_summary(rows, self.evaluated_early(window.start, window.end))

    def _row_filter(self, conn: psycopg.Connection, query: RowQuery) -> tuple[sql.Composable, dict[str, Any]]:
        # Rows are judged once per feature type set, not in every row's jsonb: the accepted sets first.
        (accepted,) = conn.execute(
            "select coalesce(array_agg(feature_types_hash), '{}') from public.evaluation_accepted_type_sets("
            "%s, %s, %s, %s)",
            (query.start, query.end, Jsonb(query.schema.as_json()), bool(query.schema.accepts_missing))).fetchone()
        clauses = [
            "evaluated_at >= %(start)s", "evaluated_at < %(end)s", "actual_label is not null",
            "reject_reason is null", "feature_types_hash = any(%(accepted)s)",
        ]
        params: dict[str, Any] = {"start": query.start, "end": query.end, "accepted": list(accepted)}
        if query.from_key is not None:
            clauses.append("(evaluated_at, id) >= (%(from_at)s, %(from_id)s)")
            params.update(from_at=query.from_key.evaluated_at, from_id=query.from_key.id)
        if query.before_key is not None:
            clauses.append("(evaluated_at, id) < (%(before_at)s, %(before_id)s)")
            params.update(before_at=query.before_key.evaluated_at, before_id=query.before_key.id)
        if query.is_correct is not None:
            clauses.append("is_correct is %s" % ("true" if query.is_correct else "false"))
        if query.min_confidence is not None:
            clauses.append("confidence > %(min_confidence)s")
            params["min_confidence"] = query.min_confidence
        if query.sample_key_below is not None:
            clauses.append("sample_key < %(sample_key_below)s")
            params["sample_key_below"] = query.sample_key_below
        if query.logged_by is not None:
            clauses.append("model_version = %(logged_by)s")
            params["logged_by"] = query.logged_by
        if query.not_logged_by is not None:
            clauses.append("model_version is distinct from %(not_logged_by)s")
            params["not_logged_by"] = query.not_logged_by
        return sql.SQL(" and ".join(clauses)), params

    def copy_rows_statement(self, conn: psycopg.Connection, query: RowQuery) -> tuple[sql.Composed, dict[str, Any]]:
        """The `COPY (select ...) TO STDOUT` that `load_rows` runs, and its parameters.

        Feature i comes out as column f{i} in its kind's type; a categorical one also as p{i}, whether
        it holds a string, so that an empty string and a missing value stay apart in the CSV. Feature
        names are parameters (n{i}), never spliced into the SQL, so a name of any length or text loads.
        With more columns than `MAX_FEATURE_COLUMNS`, the feature object comes out whole as `features`.
        """
        where, params = self._row_filter(conn, query)
        features: list[sql.Composable] = []
        if packed(query.schema):
            features.append(sql.SQL("features::text as features"))
        for i, feature in enumerate(() if packed(query.schema) else query.schema.features):
            params[f"n{i}"] = feature.name
            value = sql.SQL("features -> %({})s").format(sql.SQL(f"n{i}"))
            text = sql.SQL("features ->> %({})s").format(sql.SQL(f"n{i}"))
            if feature.kind == "categorical":
                features += [sql.SQL("{} as {}").format(text, sql.Identifier(f"f{i}")),
                             sql.SQL("jsonb_typeof({}) = 'string' as {}").format(value, sql.Identifier(f"p{i}"))]
            elif feature.kind == "boolean":
                features.append(sql.SQL("({})::boolean as {}").format(text, sql.Identifier(f"f{i}")))
            else:
                features.append(sql.SQL("({})::float8 as {}").format(text, sql.Identifier(f"f{i}")))
        order = "sample_key, id" if query.sample_key_below is not None else "evaluated_at desc, id desc"
        select = sql.SQL(
            "copy (select {columns} from public.prediction_evaluations where {where} order by {order} limit {limit})"
            " to stdout with (format csv, header)"
        ).format(
            columns=sql.SQL(", ").join([*map(sql.Identifier, ROW_COLUMNS), *features]),
            where=where, order=sql.SQL(order), limit=sql.Literal(int(query.limit)),
        )
        return select, params

    def load_rows(self, query: RowQuery) -> pd.DataFrame:
        buffer = io.BytesIO()
        with self.connect("read prediction_evaluations") as conn, conn.cursor() as cur:
            select, params = self.copy_rows_statement(conn, query)
            with cur.copy(select, params) as copy:
                for chunk in copy:
                    buffer.write(chunk)
        buffer.seek(0)
        schema = query.schema
        raw = pa_csv.read_csv(
            buffer,
            # One block for the whole buffer: a row longer than a block (a huge text value) cannot be parsed.
            read_options=pa_csv.ReadOptions(block_size=min(max(1 << 20, buffer.getbuffer().nbytes + 1), 2**31 - 1)),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            # An empty unquoted field is SQL null; text columns are never null (labels are not null, a
            # categorical feature says whether it is present in p{i}).
            convert_options=pa_csv.ConvertOptions(column_types=csv_column_types(schema), null_values=[""],
                                                  strings_can_be_null=False, true_values=["t"],
                                                  false_values=["f"]),
        )
        frame = raw.select(list(ROW_COLUMNS)).to_pandas()
        if packed(schema):
            objects = [json.loads(text) for text in raw.column("features").to_pylist()]
            return pd.concat([frame, feature_frame(objects, schema).set_axis(frame.index)], axis=1)
        for i, feature in enumerate(schema.features):  # built apart from `raw`: a feature may be named f1
            column = raw.column(f"f{i}")
            if feature.kind == "categorical":
                column = pc.if_else(raw.column(f"p{i}"), column, pa.scalar(None, pa.string()))
            values = column.to_numpy(zero_copy_only=False)  # text and flags: objects, None where null
            frame[feature.name] = typed_column(pd.Series(values, dtype=None if values.dtype.kind == "f" else object),
                                               feature.kind)
        return frame

    def count_rows(self, query: RowQuery) -> int:
        with self.connect("count prediction_evaluations") as conn:
            where, params = self._row_filter(conn, query)
            (count,) = conn.execute(sql.SQL("select count(*) from public.prediction_evaluations where {}")
                                    .format(where), params).fetchone()
        return count

    # Retraining runs.
    def start_run(
        self, dagster_run_id: str, source: str, *, triggered_by: str | None = None, request_id: str | None = None
    ) -> str:
        with self.connect("start run in model_retraining_runs") as conn:
            (run_id,) = conn.execute("select public.start_retraining_run(%s, %s, %s, %s)",
                                     (dagster_run_id, source, triggered_by, request_id)).fetchone()
        return str(run_id)

    def update_run(self, dagster_run_id: str, *, status: str | None = None, **fields: Any) -> None:
        metrics = fields.pop("metrics", None)
        if status is not None:
            fields["status"] = status
        with self.connect("update model_retraining_runs") as conn:
            conn.execute("select public.update_retraining_run(%s, %s, %s)",
                         (dagster_run_id, _jsonb(fields), None if metrics is None else _jsonb(metrics)))

    def get_run(self, dagster_run_id: str) -> dict[str, Any] | None:
        with self.connect("read model_retraining_runs") as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "select * from public.model_retraining_runs where dagster_run_id = %s", (dagster_run_id,)
            ).fetchone()

    def latest_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        with self.connect("read model_retraining_runs") as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "select * from public.model_retraining_runs order by created_at desc limit %s", (limit,)
            ).fetchall()

    # The model registry.
    def register_model_version(self, version: ModelVersion) -> None:
        with self.connect("insert into model_versions") as conn:
            conn.execute(
                """
                insert into public.model_versions
                    (version, artifact_path, sha256, parent_version, training_run_id, fine_tuned,
                     feature_names, classes, metrics, class_type, base_size, reference_accuracy,
                     feature_schema, accepts_missing)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (version.version, version.artifact_path, version.sha256, version.parent_version,
                 version.training_run_id, version.fine_tuned, Jsonb(list(version.feature_names)),
                 Jsonb(list(version.classes)), _jsonb(version.metrics), version.class_type, version.base_size,
                 version.reference_accuracy, Jsonb(version.schema.as_json()), version.schema.accepts_missing),
            )

    def record_feature_schema(self, version: str, schema: FeatureSchema) -> None:
        with self.connect("update model_versions") as conn:
            (updated,) = conn.execute("select public.record_feature_schema(%s, %s, %s)",
                                      (version, Jsonb(schema.as_json()), schema.accepts_missing)).fetchone()
        if not updated:
            raise StoreError(f"update model_versions failed: no model version {version!r}")

    def record_model_metrics(self, version: str, metrics: dict[str, Any]) -> None:
        with self.connect("update model_versions") as conn:
            conn.execute("select public.merge_model_metrics(%s, %s)", (version, _jsonb(metrics)))

    def promote(
        self, version: str, reason: str, reference_accuracy: float | None = None, *,
        expected_champion: str | None = None, check_champion: bool = False, outcome: RunOutcome | None = None,
    ) -> ModelVersion | None:
        with self.connect("promote in model_versions") as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                "select * from public.promote_model_version(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (version, reason, reference_accuracy, expected_champion, check_champion,
                 *((outcome.dagster_run_id, _jsonb(outcome.fields), _jsonb(outcome.metrics),
                    _jsonb(outcome.model_metrics)) if outcome else (None, None, None, None))),
            ).fetchone()
        return ModelVersion.from_row(row) if row and row["version"] else None

    def champion(self) -> ModelVersion | None:
        with self.connect("read model_versions") as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from public.model_versions where is_champion").fetchone()
        return ModelVersion.from_row(row) if row else None

    def model_versions(self, limit: int = 20) -> list[ModelVersion]:
        with self.connect("read model_versions") as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "select * from public.model_versions order by created_at desc, version desc limit %s", (limit,)
            ).fetchall()
        return [ModelVersion.from_row(r) for r in rows]

    def model_version(self, version: str) -> ModelVersion | None:
        with self.connect("read model_versions") as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from public.model_versions where version = %s", (version,)).fetchone()
        return ModelVersion.from_row(row) if row else None

    # Retention.
    def versions_for_retention(self) -> list[ModelVersion]:
        with self.connect("read model_versions") as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                "select * from public.model_versions order by created_at desc, version desc").fetchall()
        return [ModelVersion.from_row(r) for r in rows]

    def unfinished_runs(self) -> list[dict[str, Any]]:
        with self.connect("read model_retraining_runs") as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "select * from public.model_retraining_runs where status in ('pending', 'running')"
                " order by created_at desc, id desc").fetchall()

    def mark_artifacts_pruned(self, versions: list[str]) -> dict[str, datetime]:
        if not versions:
            return {}
        with self.connect("mark pruned in model_versions") as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("select * from public.mark_model_artifacts_pruned(%s::text[])",
                               (list(versions),)).fetchall()
        return {r["version"]: r["artifact_pruned_at"] for r in rows}

    # Retraining requests: state changes go through the SQL functions of 20261126000200_retraining_triggers.sql.
    def _requests(self, operation: str, query: str, params: tuple | dict) -> list[RetrainingRequest]:
        with self.connect(operation) as conn, conn.cursor(row_factory=dict_row) as cur:
            return [RetrainingRequest.from_row(row) for row in cur.execute(query, params).fetchall()]

    def create_request(
        self, reason: str, *, priority: str = "normal", options: dict[str, Any] | None = None,
        requested_by: str | None = None,
    ) -> RetrainingRequest:
        priority, parsed, requested_by = check_new_request(priority, options, requested_by)
        (request,) = self._requests(
            "insert into model_retraining_requests",
            "insert into public.model_retraining_requests (reason, priority, options, requested_by)"
            " values (%s, %s, %s, %s) returning *",
            (reason, priority, Jsonb(parsed.as_json()), requested_by),
        )
        return request

    def cancel_request(self, request_id: str) -> RetrainingRequest:
        (request,) = self._requests("cancel model_retraining_requests",
                                    "select * from public.cancel_retraining_request(%s)", (request_id_of(request_id),))
        return request

    def get_request(self, request_id: str) -> RetrainingRequest | None:
        found = self._requests("read model_retraining_requests",
                               "select * from public.model_retraining_requests where id = %s", (request_id,))
        return found[0] if found else None

    def latest_requests(self, limit: int = 10) -> list[RetrainingRequest]:
        return self._requests(
            "read model_retraining_requests",
            "select * from public.model_retraining_requests order by created_at desc, id limit %s", (limit,),
        )

    def claim_requests(self, limit: int, claimed_by: str) -> list[RetrainingRequest]:
        return self._requests(
            "claim model_retraining_requests",
            "select * from public.claim_retraining_requests(%s, %s)"
            " order by case priority when 'high' then 0 when 'normal' then 1 else 2 end, created_at, id",
            (limit, claimed_by),
        )

    def release_requests(self, request_ids: list[str], claimed_by: str) -> int:
        with self.connect("release model_retraining_requests") as conn:
            (released,) = conn.execute("select public.release_retraining_requests(%s::uuid[], %s)",
                                       (list(request_ids), claimed_by)).fetchone()
        return released

    def stale_requests(self, claimed_before: datetime, limit: int = 100) -> list[RetrainingRequest]:
        return self._requests(
            "read stale model_retraining_requests",
            "select * from public.model_retraining_requests where status = 'processing' and claimed_at < %s"
            " order by claimed_at limit %s",
            (claimed_before, limit),
        )

    def recover_requests(
        self, request_ids: list[str], stale_after: timedelta, max_claims: int
    ) -> list[RetrainingRequest]:
        return self._requests(
            "recover model_retraining_requests",
            "select * from public.recover_stale_retraining_requests(%s::uuid[], %s, %s)",
            (list(request_ids), stale_after, max_claims),
        )

    def attach_request_run(self, request_id: str, dagster_run_id: str) -> RetrainingRequest:
        (request,) = self._requests("link model_retraining_requests to its run",
                                    "select * from public.attach_retraining_run(%s, %s)", (request_id, dagster_run_id))
        return request

    def finish_request(
        self, request_id: str, status: str, error_message: str | None = None, dagster_run_id: str | None = None
    ) -> RetrainingRequest:
        (request,) = self._requests(
            "finish model_retraining_requests",
            "select * from public.finish_retraining_request(%s, %s, %s, %s)",
            (request_id, status, error_message, dagster_run_id),
        )
        return request

    def record_run_end(
        self, dagster_run_id: str, status: str, error_message: str | None, *, source: str,
        request_id: str | None = None, triggered_by: str | None = None, request_status: str | None = None,
    ) -> None:
        with self.connect("record run end in model_retraining_runs") as conn:
            conn.execute(
                "select public.record_retraining_run_end(%s, %s, %s, %s, %s, %s, %s)",
                (dagster_run_id, status, error_message, source, request_id, triggered_by, request_status),
            )

    def count_correct(self, start: datetime, end: datetime, model_version: str | None = None) -> AccuracyCount:
        with self.connect("count prediction_evaluations") as conn:
            evaluated, correct = conn.execute(
                "select * from public.evaluation_accuracy(%s, %s, %s)", (start, end, model_version)
            ).fetchone()
        return AccuracyCount(evaluated=evaluated, correct=correct)

    def confusion_counts(self, start: datetime, end: datetime, model_version: str | None = None,
                         max_labels: int = CONFUSION_MAX_LABELS) -> ConfusionCount:
        with self.connect("count prediction_evaluations") as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("select * from public.evaluation_confusion_counts(%s, %s, %s, %s)",
                              (start, end, model_version, max_labels)).fetchone()
        return confusion_count(row)

    def daily_accuracy(self, start: datetime, end: datetime) -> list[DailyAccuracy]:
        with self.connect("count prediction_evaluations") as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("select * from public.evaluation_daily_accuracy(%s, %s)", (start, end)).fetchall()
        return daily_accuracies(rows)

    def outcome_coverage(self, start: datetime, end: datetime) -> list[DailyCoverage]:
        with self.connect("count prediction_evaluations") as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("select * from public.evaluation_outcome_coverage(%s, %s)", (start, end)).fetchall()
        return daily_coverages(rows)

    def evaluated_early(self, start: datetime, end: datetime) -> int:
        with self.connect("count prediction_evaluations") as conn:
            (n,) = conn.execute("select * from public.evaluation_early_count(%s, %s)", (start, end)).fetchone()
        return int(n)


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(to_json(value))


def packed(schema: FeatureSchema) -> bool:
    """Whether a load of `schema` reads whole feature objects (more columns than `MAX_FEATURE_COLUMNS`)."""
    return len(ROW_COLUMNS) + len(schema.features) + len(schema.names_of("categorical")) > MAX_FEATURE_COLUMNS


def csv_column_types(schema: FeatureSchema) -> dict[str, pa.DataType]:
    """The Arrow type of each column `copy_rows_statement` writes."""
    text = {"categorical": pa.string(), "boolean": pa.bool_()}  # anything else is a float8
    rows = {"id": pa.int64(), "prediction_id": pa.string(), "evaluated_at": pa.timestamp("us", tz="UTC"),
            "predicted_label": pa.string(), "actual_label": pa.string(), "confidence": pa.float64()}
    if packed(schema):
        return {**rows, "features": pa.string()}
    return {**rows,
            **{f"f{i}": text.get(f.kind, pa.float64()) for i, f in enumerate(schema.features)},
            **{f"p{i}": pa.bool_() for i, f in enumerate(schema.features) if f.kind == "categorical"}}
