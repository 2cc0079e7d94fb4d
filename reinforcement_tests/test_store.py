"""The PostgreSQL store against a real (embedded) PostgreSQL."""

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from reinforcement_assets.backends.schema import MIGRATIONS_DIR, apply_migrations
from reinforcement_assets.backends.store import (
    feature_json,
    ModelVersion,
    RowKey,
    RowQuery,
    StoreError,
    Window,
    WindowSummary,
    evaluation_frame,
)
from reinforcement_assets.core.drift_data import BAD_ROW_KINDS
from reinforcement_assets.core.features import FeatureSchema, feature_types, json_type, judge_types
from reinforcement_assets.core.records import holdout_size
from reinforcement_assets.core.rows import reject_reason, row_reject_reason

END = datetime(2026, 11, 20, 2, tzinfo=timezone.utc)
NAMES = ("x0", "x1")
SCHEMA = FeatureSchema.numeric(NAMES)
MIXED = FeatureSchema.of({"x": "numeric", "country": "categorical", "flag": "boolean"}, accepts_missing=True)
ALL_REASONS = {"label_missing", "confidence_missing", "confidence_out_of_range", "features_empty",
               "features_json_text", "features_not_object", "feature_missing", "feature_not_numeric",
               "feature_not_categorical", "feature_not_boolean"}

# Rows of features of every JSON type, newest first an hour apart, and their verdict against MIXED.
MIXED_ROWS = [
    ("us", {"x": 1.5, "country": "US", "flag": True}, None),
    ("empty-country", {"x": 2, "country": "", "flag": False}, None),
    ("null-country", {"x": 3.25, "country": None, "flag": True, "note": "extra"}, None),
    ("null-x-and-flag", {"x": None, "country": "FR", "flag": None}, None),
    ("extra-keys", {"x": -4, "country": "DE", "flag": False, "tags": ["a", 1], "meta": {"k": 1}, "n": None,
                    "big": 1e305}, None),
    ("json-text", '{"x": 5, "country": "GB", "flag": true, "extra": [1]}', None),  # parsed by the store
    ("absent-country", {"x": 1, "flag": True}, None),  # a key not logged: a missing value, as a null
    ("country-number", {"x": 1, "country": 3, "flag": True}, ("feature_not_categorical", "country")),
    ("country-boolean", {"x": 1, "country": False, "flag": True}, ("feature_not_categorical", "country")),
    ("country-array", {"x": 1, "country": ["US"], "flag": True}, ("feature_not_categorical", "country")),
    ("flag-text", {"x": 1, "country": "US", "flag": "true"}, ("feature_not_boolean", "flag")),
    ("flag-number", {"x": 1, "country": "US", "flag": 1}, ("feature_not_boolean", "flag")),
    ("x-text", {"x": "1.5", "country": "US", "flag": True}, ("feature_not_numeric", "x")),
    ("x-boolean", {"x": True, "country": "US", "flag": True}, ("feature_not_numeric", "x")),
    ("x-huge", {"x": 1.5e300, "country": "US", "flag": True}, ("feature_not_numeric", "x")),
    ("x-huge-negative", {"x": -2e300, "country": "US", "flag": True}, ("feature_not_numeric", "x")),
    ("x-huge-int", {"x": 10 ** 301, "country": "US", "flag": True}, ("feature_not_numeric", "x")),
    ("x-array", {"x": [1.0], "country": "US", "flag": True}, ("feature_not_numeric", "x")),
    ("x-object", {"x": {"value": 1.0}, "country": "US", "flag": True}, ("feature_not_numeric", "x")),
    ("first-in-schema-order", {"flag": "no", "country": 3, "x": "s"}, ("feature_not_numeric", "x")),
    ("text-not-json", "x=1", ("features_not_object", None)),
    ("text-array", "[1, 2]", ("features_not_object", None)),
    ("array", [1, 2], ("features_not_object", None)),
    ("empty", {}, ("features_empty", None)),
]
WRONG = {"empty-country", "extra-keys", "x-text"}  # predicted "b" where the outcome was "a"


def row(pid, evaluated_at, predicted="a", actual="a", confidence=0.9, features=None):
    return {"prediction_id": pid, "model_version": "v0", "features": features or {"x0": 1.0, "x1": 2.0},
            "predicted_label": predicted, "actual_label": actual, "confidence": confidence,
            "predicted_at": evaluated_at - timedelta(minutes=5) if evaluated_at else END, "evaluated_at": evaluated_at}


def mixed_log() -> pd.DataFrame:
    """MIXED_ROWS as a prediction log (features as logged: dicts, lists, JSON text, other text)."""
    log = pd.DataFrame([row(pid, END - timedelta(hours=k + 1), predicted="b" if pid in WRONG else "a")
                        for k, (pid, _, _) in enumerate(MIXED_ROWS)])
    log["features"] = pd.Series([features for _, features, _ in MIXED_ROWS], dtype=object)
    return log


def test_migrations_are_recorded_and_idempotent(database_url):
    assert apply_migrations(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [v for (v,) in conn.execute("select version from supabase_migrations.schema_migrations")]
        newest = sorted(MIGRATIONS_DIR.glob("*.sql"))[-1]  # applying it again changes nothing
        conn.execute(newest.read_text().encode())
    assert sorted(versions) == sorted(p.stem.split("_")[0] for p in MIGRATIONS_DIR.glob("*.sql"))


def test_insert_is_idempotent_on_prediction_id(store):
    log = pd.DataFrame([row("p1", END - timedelta(hours=1)), row("p2", None, actual=None)])
    assert store.insert_evaluations(log) == 2
    assert store.insert_evaluations(log) == 0


def test_window_summary_counts_in_sql_and_sets_bad_rows_aside(store):
    window = Window.ending_at(END, lookback_days=7, holdout_share=0.25)
    log = pd.DataFrame([
        row("train-ok", END - timedelta(days=5)),
        row("train-err", END - timedelta(days=4), predicted="b"),
        row("holdout-ok", END - timedelta(hours=2)),
        row("too-old", END - timedelta(days=8)),
        row("too-new", END + timedelta(minutes=1)),
        row("not-evaluated", None, actual=None),
        row("bad-conf", END - timedelta(days=3), confidence=1.7),
        row("missing-feature", END - timedelta(days=3), features={"x0": 1.0}),
        row("not-numeric", END - timedelta(days=3), features={"x0": "n/a", "x1": 1}),
    ])
    store.insert_evaluations(log)
    summary = store.summarize_window(window, SCHEMA)
    assert (summary.rows, summary.correct, summary.train_rows, summary.train_correct, summary.holdout_rows) == (
        3, 2, 2, 1, 1)
    assert summary.accuracy == pytest.approx(2 / 3)
    assert summary.rejected == {"confidence_out_of_range": 1, "feature_missing": 1, "feature_not_numeric": 1}
    assert summary.rejected_on == {"feature_missing": {"x1": 1}, "feature_not_numeric": {"x0": 1}}


# Rows a client of the table could write with SQL, which the store's insert never writes: features as
# a jsonb string (holding an object or not), a jsonb scalar, and numbers at the edge of 'huge'.
SQL_ROWS = """
insert into prediction_evaluations (prediction_id, features, predicted_label, actual_label, confidence, evaluated_at)
select v.pid, v.features, v.predicted, 'a', v.confidence, %s - interval '90 minutes' from (values
  ('sql-json-text', to_jsonb('{"x": 1, "country": "US", "flag": true}'::text), 'a', 0.9::float8),
  ('sql-json-text-spaces', to_jsonb(' {"x0": 1, "x1": 2} '::text), 'a', 0.9),
  ('sql-json-text-empty', to_jsonb('{}'::text), 'a', 0.9),
  ('sql-text-array', to_jsonb('[1, 2]'::text), 'a', 0.9),
  ('sql-text-broken', to_jsonb('{"x": '::text), 'a', 0.9),
  ('sql-number', '3'::jsonb, 'a', 0.9),
  ('sql-json-null', 'null'::jsonb, 'a', 0.9),
  ('sql-huge', '{"x": 1e301, "country": "US", "flag": true, "x0": -1e301, "x1": 1}'::jsonb, 'a', 0.9),
  ('sql-below-huge', '{"x": 9.99e299, "country": "US", "flag": true, "x0": -9.99e299, "x1": 1}'::jsonb, 'a', 0.9),
  ('sql-duplicate-key', '{"x": "text", "x": 2, "country": "", "flag": false}'::jsonb, 'a', 0.9),
  ('sql-nan-confidence', '{"x": 1, "country": "US", "flag": true}'::jsonb, 'a', 'NaN'::float8),
  ('sql-blank-label', '{"x": 1, "country": "US", "flag": true}'::jsonb, '  ', 0.9)
) as v(pid, features, predicted, confidence)
"""

STORED = """
select e.id, e.prediction_id, e.features, e.predicted_label, e.actual_label, e.confidence, e.evaluated_at,
       e.reject_reason, public.evaluation_feature_types(e.features) as row_types, s.feature_types
  from prediction_evaluations e left join prediction_feature_type_sets s using (feature_types_hash)
"""

SQL_VERDICTS = """
select e.prediction_id, coalesce(e.reject_reason, j.reason), j.feature
  from prediction_evaluations e
  left join prediction_feature_type_sets s using (feature_types_hash)
  left join lateral public.judge_feature_types(s.feature_types, %s, %s) j on e.reject_reason is null
"""


def expected_summary(records, schema: FeatureSchema, window: Window) -> WindowSummary:
    """What `summarize_window` must say, from the Python verdicts of every row."""
    inside = [r for r in records if r["actual_label"] is not None and r["evaluated_at"] is not None
              and window.start <= r["evaluated_at"] < window.end]
    verdicts = [(r, reject_reason(r, schema)) for r in inside]
    usable = sorted((r for r, verdict in verdicts if verdict is None), key=lambda r: (r["evaluated_at"], r["id"]))
    cut = len(usable) - holdout_size(len(usable), window.holdout_share)
    train = usable[:cut]
    holdout_start = (None if not inside else RowKey(window.end, 0) if cut == len(usable)
                     else RowKey(usable[cut]["evaluated_at"], usable[cut]["id"]))
    rejected_on: dict[str, dict[str, int]] = {}
    for (reason, feature), n in Counter(v for _, v in verdicts if v and v[1] is not None).items():
        rejected_on.setdefault(reason, {})[feature] = n
    correct = sum(r["predicted_label"] == r["actual_label"] for r in usable)
    return WindowSummary(rows=len(usable), correct=correct, train_rows=len(train),
                         train_correct=sum(r["predicted_label"] == r["actual_label"] for r in train),
                         holdout_rows=len(usable) - len(train), holdout_start=holdout_start,
                         rejected=dict(Counter(v[0] for _, v in verdicts if v)), rejected_on=rejected_on)


def test_sql_and_python_agree_on_every_kind_of_bad_row(store):
    from reinforcement_assets.demo import drift_scenario, log_traffic, train_from_scratch

    scenario = drift_scenario(600, seed=5, train_rows=500, after_rows=10)
    model = train_from_scratch(*scenario.train)
    log, kinds = log_traffic(model, *scenario.window, END - timedelta(days=7), END, model_version="v0",
                             bad_row_share=0.3, seed=5)
    logged = pd.concat([log, mixed_log()], ignore_index=True)
    store.insert_evaluations(logged)
    with store.connect("test") as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SQL_ROWS, (END,))
        stored = {r["prediction_id"]: r for r in cur.execute(STORED).fetchall()}
        type_sets = {r["feature_types_hash"]: r["feature_types"]
                     for r in cur.execute("select * from prediction_feature_type_sets").fetchall()}
    assert len(stored) == len(logged) + SQL_ROWS.count("('sql-")

    # Row by row, Python and SQL read the same stored values (psycopg decodes the jsonb) the same way.
    assert {pid: row_reject_reason(r) for pid, r in stored.items()} == {
        pid: r["reject_reason"] for pid, r in stored.items()}
    objects = {pid: r for pid, r in stored.items() if isinstance(r["features"], dict)}
    assert {pid: feature_types(r["features"]) for pid, r in objects.items()} == {
        pid: r["row_types"] for pid, r in objects.items()} == {pid: r["feature_types"] for pid, r in objects.items()}
    assert {"string", "number", "boolean", "null", "out_of_range", "array", "object"} <= {
        t for r in objects.values() for t in r["row_types"].values()}
    # What the store was given is judged as what it stored (JSON text parsed, NaN as null, labels as text).
    as_logged = {r["prediction_id"]: r for r in evaluation_frame(logged).to_dict("records")}
    raw = {r["prediction_id"]: r for r in logged.to_dict("records")}
    assert row_reject_reason(raw["json-text"]) == "features_json_text" and stored["json-text"]["reject_reason"] is None
    assert stored["sql-json-text"]["reject_reason"] == "features_json_text"  # text the store did not parse

    names = tuple(scenario.window[0].columns)
    schemas = [FeatureSchema.numeric(names), MIXED, MIXED.with_missing(False), FeatureSchema.numeric(("x",)),
               FeatureSchema.of({"x0": "categorical", "x": "boolean", "flag": "boolean"}, accepts_missing=True),
               FeatureSchema.of({"x": None, "country": None}, accepts_missing=False)]  # kinds not yet known
    window = Window.ending_at(END, lookback_days=7, holdout_share=0.25)
    reasons = set()
    for schema in schemas:
        in_python = {pid: reject_reason(r, schema) for pid, r in stored.items()}
        with store.connect("test") as conn:
            in_sql = {pid: (reason, feature) if reason else None for pid, reason, feature in conn.execute(
                SQL_VERDICTS, (Jsonb(schema.as_json()), bool(schema.accepts_missing))).fetchall()}
            by_type_set = {h: tuple(v) if v else None for h, v in ((h, conn.execute(
                "select reason, feature from judge_feature_types(%s, %s, %s)",
                (Jsonb(types), Jsonb(schema.as_json()), bool(schema.accepts_missing))).fetchone())
                for h, types in type_sets.items())}
        assert in_sql == in_python, schema
        assert by_type_set == {h: judge_types(types, schema) for h, types in type_sets.items()}, schema
        assert {pid: reject_reason(r, schema) for pid, r in as_logged.items()} == {
            pid: in_python[pid] for pid in as_logged}, schema
        # The window's counts per reason and feature, and which rows load.
        assert store.summarize_window(window, schema) == expected_summary(stored.values(), schema, window), schema
        usable = sorted(pid for pid, verdict in in_python.items() if verdict is None
                        and window.start <= stored[pid]["evaluated_at"] < window.end)
        query = RowQuery(start=window.start, end=window.end, schema=schema, limit=10_000)
        assert store.count_rows(query) == len(usable), schema
        if all(f.kind for f in schema.features):
            assert sorted(store.load_rows(query)["prediction_id"]) == usable, schema
        reasons |= {verdict[0] for verdict in in_python.values() if verdict}
    assert reasons == ALL_REASONS

    numeric = {r["prediction_id"]: reject_reason(stored[r["prediction_id"]], schemas[0])
               for r in log.to_dict("records")}
    assert {verdict[0] for verdict in numeric.values() if verdict} == set(BAD_ROW_KINDS)
    assert {pid: kind if isinstance(kind, str) else None for pid, kind in zip(log["prediction_id"], kinds)} == {
        pid: verdict and verdict[0] for pid, verdict in numeric.items()}
    assert {pid: reject_reason(stored[pid], MIXED) for pid, _, _ in MIXED_ROWS} == {
        pid: verdict for pid, _, verdict in MIXED_ROWS}


def test_python_and_sql_agree_where_numbers_leave_float8s_range(store):
    """1e300 is where a number stops being numeric, in Python as in SQL: for floats and ints as logged,
    and as read back (PostgreSQL prints a jsonb 1e300 as an integer of 301 digits)."""
    values = {"float-1e300": 1e300, "float-minus-1e300": -1e300, "int-10^300": 10 ** 300,
              "int-minus-10^300": -(10 ** 300), "int-just-below": 10 ** 300 - 1,
              "float-just-below": 9.999999999999999e299,
              "float-1e299": 1e299, "float-1.5e300": 1.5e300}
    store.insert_evaluations(pd.DataFrame([row(pid, END - timedelta(hours=1), features={"x0": value, "x1": 1.0})
                                           for pid, value in values.items()]))
    with store.connect("test") as conn:
        stored = dict(conn.execute("select prediction_id, features -> 'x0' from prediction_evaluations").fetchall())
        in_sql = dict(conn.execute("select prediction_id, evaluation_feature_types(features) ->> 'x0'"
                                   " from prediction_evaluations").fetchall())
    assert in_sql == {pid: "out_of_range" if abs(value) >= 10 ** 300 else "number" for pid, value in values.items()}
    assert {pid: json_type(value) for pid, value in values.items()} == in_sql  # as logged
    assert {pid: json_type(value) for pid, value in stored.items()} == in_sql  # as read back
    summary = store.summarize_window(Window.ending_at(END, 7, 0.25), SCHEMA)
    assert summary.rejected_on == {"feature_not_numeric": {"x0": 5}}


def test_features_of_every_json_type_are_judged_per_feature_and_load_in_their_kinds_dtype(store):
    assert store.insert_evaluations(mixed_log()) == len(MIXED_ROWS)
    window = Window.ending_at(END, lookback_days=7, holdout_share=0.25)
    summary = store.summarize_window(window, MIXED)
    assert summary.rows == 7
    assert summary.rejected == {"feature_not_categorical": 3, "feature_not_boolean": 2,
                                "feature_not_numeric": 8, "features_not_object": 3, "features_empty": 1}
    assert summary.rejected_on == {"feature_not_categorical": {"country": 3},
                                   "feature_not_boolean": {"flag": 2}, "feature_not_numeric": {"x": 8}}
    # Where the model takes no missing values, a null is one; an empty string is a value.
    strict = store.summarize_window(window, MIXED.with_missing(False))
    assert (strict.rows, strict.rejected_on["feature_missing"]) == (4, {"country": 2, "x": 1})
    assert strict.rejected["feature_missing"] == 3

    rows = store.load_rows(RowQuery(start=END - timedelta(days=1), end=END, schema=MIXED, limit=100))
    assert list(rows.columns) == ["id", "prediction_id", "evaluated_at", "predicted_label", "actual_label",
                                  "confidence", "x", "country", "flag"]
    assert rows["prediction_id"].tolist() == ["us", "empty-country", "null-country", "null-x-and-flag",
                                              "extra-keys", "json-text", "absent-country"]
    assert rows["x"].dtype == "float64" and rows["country"].dtype == object and rows["flag"].dtype == object
    assert rows["x"].tolist()[:3] == [1.5, 2.0, 3.25] and pd.isna(rows["x"][3]) and rows["x"].tolist()[4:] == [
        -4.0, 5.0, 1.0]
    assert rows["country"].tolist() == ["US", "", None, "FR", "DE", "GB", None]
    assert [type(v) for v in rows["country"]] == [str, str, type(None), str, str, str, type(None)]
    assert rows["flag"].tolist() == [True, False, True, None, False, True, True]
    assert all(v is None or type(v) is bool for v in rows["flag"])
    # Flags are objects whether or not one is missing (one dtype for every batch); '' and None stay apart.
    newest = store.load_rows(RowQuery(start=END - timedelta(hours=3, minutes=30), end=END, schema=MIXED, limit=100))
    assert newest["flag"].dtype == object and newest["flag"].tolist() == [True, False, True]
    assert newest["country"].dtype == object and newest["country"].tolist() == ["US", "", None]
    strict_query = RowQuery(start=END - timedelta(days=1), end=END, schema=MIXED.with_missing(False), limit=100)
    strict_rows = store.load_rows(strict_query)
    assert strict_rows["prediction_id"].tolist() == ["us", "empty-country", "extra-keys", "json-text"]
    assert strict_rows["country"].tolist() == ["US", "", "DE", "GB"] and strict_rows["flag"].dtype == object
    assert store.count_rows(strict_query) == 4
    # The type sets of the usable rows (the rows a schema is inferred from), most rows first.
    type_sets = store.feature_type_sets(window.start, window.end)
    assert sum(t.rows for t in type_sets) == summary.rows + sum(summary.rejected[r] for r in summary.rejected_on)
    assert {"x": "number", "country": "string", "flag": "boolean"} in [dict(t.types) for t in type_sets]
    assert {"x": "number", "country": "string", "flag": "boolean", "tags": "array", "meta": "object", "n": "null",
            "big": "out_of_range"} in [dict(t.types) for t in type_sets]
    assert [t.rows for t in type_sets] == sorted((t.rows for t in type_sets), reverse=True)


def test_load_rows_pushes_the_filters_down(store):
    log = pd.DataFrame([
        row("correct", END - timedelta(days=1)),
        row("confident-error", END - timedelta(days=2), predicted="b", confidence=0.95),
        row("unsure-error", END - timedelta(days=2), predicted="b", confidence=0.6),
        row("old-error", END - timedelta(days=9), predicted="b", confidence=0.95),
    ])
    store.insert_evaluations(log)
    query = RowQuery(END - timedelta(days=7), END, SCHEMA, limit=100, is_correct=False, min_confidence=0.7)
    errors = store.load_rows(query)
    assert errors["prediction_id"].tolist() == ["confident-error"]
    assert list(errors.columns) == ["id", "prediction_id", "evaluated_at", "predicted_label", "actual_label",
                                    "confidence", "x0", "x1"]
    assert errors["x1"].dtype == "float64" and errors.loc[0, "actual_label"] == "a"
    assert store.count_rows(query) == 1
    with store.connect("render") as conn:
        statement, params = store.copy_rows_statement(conn, query)
        sent = statement.as_string(conn)
    for pushed_down in ("evaluated_at >= %(start)s", "evaluated_at < %(end)s", "is_correct is false",
                        "confidence > %(min_confidence)s", "reject_reason is null", "limit 100",
                        "feature_types_hash = any(%(accepted)s)"):
        assert pushed_down in sent
    assert "select *" not in sent.lower() and "(features ->> %(n0)s)::float8" in sent
    assert params["n0"] == "x0" and len(params["accepted"]) == 1  # the one type set of x0 and x1 numbers


def test_samples_are_uniform_reproducible_and_capped(store):
    log = pd.DataFrame([row(f"p{i}", END - timedelta(minutes=i + 1)) for i in range(2_000)])
    store.insert_evaluations(log)
    query = RowQuery(END - timedelta(days=7), END, SCHEMA, limit=300, sample_fraction=0.2)
    first, again = store.load_rows(query), store.load_rows(query)
    assert len(first) == 300 and first["id"].tolist() == again["id"].tolist()
    assert 250 < store.count_rows(query) < 550  # about 20% of 2,000
    ages = (END - first["evaluated_at"]).dt.total_seconds() / 60
    assert 700 < ages.median() < 1300  # spread over the whole period, not the newest rows


def test_load_many_gives_what_each_load_gives(store):
    store.insert_evaluations(pd.DataFrame([row(f"p{i}", END - timedelta(minutes=i + 1), predicted="ab"[i % 2])
                                           for i in range(300)]))
    errors = RowQuery(END - timedelta(days=1), END, SCHEMA, limit=100, is_correct=False)
    sample = RowQuery(END - timedelta(days=1), END, SCHEMA, limit=50, sample_fraction=0.5)
    together = store.load_many(errors, sample)
    for frame, query in zip(together, (errors, sample), strict=True):
        pd.testing.assert_frame_equal(frame, store.load_rows(query))
    assert [len(f) for f in together] == [100, 50]

TEXT_THE_CSV_MUST_CARRY = ["a,b", 'say "hi"', "two\nlines", "cr\r\nlf", "", " padded ", "t", "f", "NULL",
                           "\\N", "ünï €", "tab\there", '""', "-0", "1e400"]


def test_text_of_any_shape_loads_exactly_as_logged(store):
    """Features and labels go through COPY's CSV: quotes, separators, line breaks and look-alikes of
    null, flags or numbers come back as the same strings, and '' stays apart from a missing value."""
    values = TEXT_THE_CSV_MUST_CARRY
    store.insert_evaluations(pd.DataFrame([
        row(f"text-{i}", END - timedelta(minutes=i + 1), predicted=value or "-", actual=value or "-",
            features={"x": float(i), "country": value, "flag": i % 2 == 0}) for i, value in enumerate(values)]
        + [row("missing", END - timedelta(minutes=len(values) + 1), features={"x": None, "flag": None})]))
    rows = store.load_rows(RowQuery(END - timedelta(days=1), END, MIXED, limit=100))
    assert rows["country"].tolist() == [*values, None]
    labels = [value or "-" for value in values]  # an empty outcome is no outcome (label_missing)
    assert rows["actual_label"].tolist()[:-1] == labels and rows["predicted_label"].tolist()[:-1] == labels
    assert rows["x"].tolist()[:-1] == [float(i) for i in range(len(values))] and pd.isna(rows["x"].iloc[-1])
    assert rows["flag"].tolist() == [i % 2 == 0 for i in range(len(values))] + [None]
    # A value longer than the CSV reader's default block (1 MiB) loads too.
    store.insert_evaluations(pd.DataFrame([row("huge", END - timedelta(minutes=30), features={
        "x": 1.0, "country": "é" * 1_500_000, "flag": True})]))
    huge = store.load_rows(RowQuery(END - timedelta(minutes=31), END - timedelta(minutes=29), MIXED, limit=10))
    assert huge["country"].tolist() == ["é" * 1_500_000]
    empty = store.load_rows(RowQuery(END - timedelta(days=30), END - timedelta(days=29), MIXED, limit=100))
    assert len(empty) == 0 and list(empty.columns) == list(rows.columns)
    assert empty["x"].dtype == "float64" and empty["country"].dtype == object


def test_run_rows_go_running_then_terminal(store):
    run_id = store.start_run("dagster-1", "manual")
    started = store.get_run("dagster-1")
    assert (started["status"], started["completed_at"]) == ("running", None)
    assert store.start_run("dagster-1", "manual") == run_id  # a retried step resumes the same row
    store.update_run("dagster-1", dataset_size=12, metrics={"a": 1})
    store.update_run("dagster-1", status="completed", metrics={"b": float("nan")})
    run = store.get_run("dagster-1")
    assert (run["status"], run["dataset_size"], run["metrics"]) == ("completed", 12, {"a": 1, "b": None})
    assert run["completed_at"] >= run["started_at"]
    with pytest.raises(StoreError, match="model_retraining_runs"):
        store.start_run("dagster-2", "sometimes")


def test_a_session_shares_one_connection_per_thread_and_closes_it(store):
    def backend_pid(_=None) -> int:
        with store.connect("read the backend pid") as conn:
            return conn.execute("select pg_backend_pid()").fetchone()[0]

    assert backend_pid() != backend_pid()  # one connection per call outside a session
    with store.session():
        inside = backend_pid()
        with store.session():  # nested: the same connection
            assert backend_pid() == inside
        store.start_run("dagster-s", "manual")
        assert store.get_run("dagster-s")["status"] == "running"
        with pytest.raises(StoreError, match="model_retraining_runs"):
            store.start_run("dagster-t", "sometimes")
        assert backend_pid() == inside  # an error leaves the session usable
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(backend_pid).result() != inside  # another thread has its own
    assert backend_pid() != inside
    with psycopg.connect(store.url, autocommit=True) as conn:  # closed on exit (the server notices at once)
        deadline = time.monotonic() + 5
        while conn.execute("select count(*) from pg_stat_activity where pid = %s", (inside,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the session's connection was left open"
            time.sleep(0.05)


def version(name, parent=None):
    return ModelVersion(version=name, artifact_path=f"models/{name}.joblib", sha256="0" * 64,
                        feature_names=NAMES, classes=("a", "b"), parent_version=parent)


def test_the_database_keeps_exactly_one_champion(store):
    store.register_model_version(version("v1"))
    store.register_model_version(version("v2", parent="v1"))
    assert store.champion() is None
    store.promote("v1", "first", reference_accuracy=0.9)
    promoted = store.promote("v2", "better")
    assert promoted.is_champion and promoted.promotion_reason == "better"
    assert store.champion().version == "v2"
    assert [v.version for v in store.model_versions() if v.is_champion] == ["v2"]
    with store.connect("test") as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("update model_versions set is_champion = true")
    with pytest.raises(StoreError, match="unknown model version"):
        store.promote("v9", "nope")


def test_a_versions_feature_schema_is_recorded_once_known(store):
    store.register_model_version(version("v1"))  # kinds not known yet
    (registered,) = store.model_versions()
    assert registered.schema == FeatureSchema.of(dict.fromkeys(NAMES)) and not registered.schema.complete
    known = FeatureSchema.of({"x0": "numeric", "x1": "categorical"}, accepts_missing=True)
    store.record_feature_schema("v1", known)
    (recorded,) = store.model_versions()
    assert recorded.schema == known and recorded.feature_names == NAMES
    with store.connect("test") as conn:
        assert conn.execute("select feature_schema, accepts_missing from model_versions").fetchone() == (
            [{"name": "x0", "kind": "numeric"}, {"name": "x1", "kind": "categorical"}], True)
    with pytest.raises(StoreError, match="no model version .v9."):  # no such version: said, never a silent no-op
        store.record_feature_schema("v9", known)
    assert store.model_versions() == [recorded]


@pytest.mark.parametrize("url", ["postgres//app:s3cretpw@db.invalid:5432/x",
                                 "postgresql://app:s3cretpw@127.0.0.1:1/x?connect_timeout=1",
                                 # passwords libpq cannot parse, and quotes back in its message:
                                 "postgresql://app:Pw s3cretpw@db.invalid/x",
                                 "postgresql://app:Pw@s3cretpw@db.invalid/x?connect_timeout=1",
                                 "postgresql://app:Pw%zzs3cretpw@db.invalid/x",
                                 "postgresql://app:s3cretpw@[::1/x"])
def test_connection_errors_never_show_the_password(url):
    from reinforcement_assets.backends.postgres_store import PostgresStore

    with pytest.raises(StoreError) as raised:
        PostgresStore(database_url=url).latest_runs()
    chain, error = [], raised.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert "s3cretpw" not in " ".join(chain) and "read model_retraining_runs failed" in chain[0]


@pytest.mark.parametrize("backend", ["postgres", "supabase"])
def test_features_jsonb_cannot_hold_are_kept_and_set_aside_not_a_failed_insert(backend, store, project):
    """A NUL character in a key or a string, and NaN in JSON text, are refused by PostgreSQL's jsonb:
    such rows are stored (their features as text) and set aside as features_not_object."""
    from reinforcement_tests.supabase_transport import emulated_resources

    writer = store if backend == "postgres" else emulated_resources(project)["store"]
    odd = {"nul-value": {"x0": "a\x00b", "x1": 1.0}, "nul-key": {"x\x000": 1.0, "x1": 1.0},
           "nul-nested": {"x0": 1.0, "x1": 2.0, "note": ["\x00"]}, "nan-text": '{"x0": NaN, "x1": 1}',
           "bytes-value": {"x0": b"raw", "x1": 1.0}, "object-value": {"x0": object(), "x1": 1.0},
           "ok": {"x0": 1.0, "x1": 2.0}}
    log = pd.DataFrame([row(pid, END - timedelta(hours=1), features=f) for pid, f in odd.items()])
    assert writer.insert_evaluations(log) == len(odd)
    with psycopg.connect(store.url) as conn:
        reasons = dict(conn.execute("select prediction_id, reject_reason from public.prediction_evaluations")
                       .fetchall())
    assert reasons == {"nul-value": "features_not_object", "nul-key": "features_not_object",
                       "nul-nested": "features_not_object", "nan-text": "features_not_object",
                       "bytes-value": "features_not_object", "object-value": "features_not_object", "ok": None}
    # The Python mirror judges what the store writes the same way.
    assert {pid: row_reject_reason({**row(pid, END), "features": feature_json(f)})
            for pid, f in odd.items()} == reasons


def test_feature_names_never_clash_with_the_load_or_reach_the_sql(store):
    """Feature names are data: `f1` or `p0` (the load's own column names), `%` and `%(start)s`
    (psycopg placeholders), quotes, all load as themselves."""
    names = ["f1", "f0", "p0", "growth %", "%(start)s", "it's", 'say "x"']
    schema = FeatureSchema.of({**{n: "numeric" for n in names}, "p1": "categorical"}, accepts_missing=False)
    features = {**{n: float(i) for i, n in enumerate(names)}, "p1": "text"}
    store.insert_evaluations(pd.DataFrame([row("odd", END - timedelta(hours=1), features=features)]))
    query = RowQuery(END - timedelta(days=7), END, schema, limit=10)
    loaded = store.load_rows(query)
    assert loaded[list(names)].iloc[0].tolist() == [float(i) for i in range(len(names))]
    assert loaded["p1"].tolist() == ["text"] and store.count_rows(query) == 1


@pytest.mark.parametrize("backend", ["postgres", "supabase"])
def test_confusion_counts_count_each_pair_of_labels_as_the_rows_do(backend, store):
    """The confusion matrix of a model version over a ragged range, from the hourly counts, equals a
    count of the logged rows (pandas' crosstab) on either backend; labels of any text come back as
    themselves, and a matrix of more pairs than the server's row cap is one answer."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from reinforcement_assets.backends.store import ConfusionCount
    from reinforcement_assets.core.metrics import metric_of
    from reinforcement_tests.supabase_transport import SupabaseEmulator, emulated_resources

    rng = np.random.default_rng(11)
    n = 3_000
    labels = np.array(["cat", "dog", 'say "hi", {ok}', "3", "ünï", "rare"])
    actual = rng.choice(labels, n, p=[0.4, 0.3, 0.15, 0.1, 0.045, 0.005])
    predicted = np.where(rng.random(n) < 0.7, actual, rng.choice(labels[:5], n))
    log = pd.DataFrame({
        "prediction_id": [f"c{i}" for i in range(n)], "model_version": rng.choice(["v1", "v2"], n, p=[0.8, 0.2]),
        "features": [{"x0": float(i), "x1": 1.0} for i in range(n)], "predicted_label": predicted,
        "actual_label": actual, "confidence": 0.9, "predicted_at": END - timedelta(days=4),
        "evaluated_at": [END - timedelta(seconds=float(s)) for s in rng.uniform(0, 3 * 86_400, n)],
    })
    log.loc[:9, "confidence"] = None  # set aside: counted nowhere
    capped = SupabaseEmulator(store.url, max_rows=5)
    try:
        reader = store if backend == "postgres" else emulated_resources(capped)["store"]
        assert reader.insert_evaluations(log) == n
        start, end = END - timedelta(days=2, minutes=13), END - timedelta(minutes=17)
        for version in ("v1", None):
            count = reader.confusion_counts(start, end, version)
            rows = log[(log["evaluated_at"] >= start) & (log["evaluated_at"] < end) & log["confidence"].notna()
                       & ((log["model_version"] == version) if version else True)]
            expected = pd.crosstab(rows["actual_label"], rows["predicted_label"])
            names = sorted(set(rows["actual_label"]) | set(rows["predicted_label"]))
            expected = expected.reindex(index=names, columns=names, fill_value=0)
            assert count.labels == tuple(names) and len(names) ** 2 > 5
            assert count.array.tolist() == expected.to_numpy().tolist()
            assert (count.evaluated, count.correct) == (len(rows), int((rows["actual_label"] == rows["predicted_label"])
                                                                       .sum()))
            assert count.as_accuracy_count() == reader.count_correct(start, end, version)
            assert metric_of("macro_f1", count.array) == pytest.approx(
                f1_score(rows["actual_label"], rows["predicted_label"], average="macro"))
            assert metric_of("balanced_accuracy", count.array) == pytest.approx(
                balanced_accuracy_score(rows["actual_label"], rows["predicted_label"]))
            assert count == store.confusion_counts(start, end, version)
        assert reader.confusion_counts(end, end, "v1") == ConfusionCount()
        top = reader.confusion_counts(start, end, "v1", max_labels=2)
        assert top.labels == ("cat", "dog") and top.left_out > 0
        assert top.as_accuracy_count() == reader.count_correct(start, end, "v1")
        if backend == "supabase":
            assert capped.sent("POST", "/rest/v1/rpc/evaluation_confusion_counts")
    finally:
        capped.close()


@pytest.mark.parametrize("backend", ["postgres", "supabase"])
def test_feature_names_of_any_length_and_characters_round_trip(backend, store, project):
    """Names past PostgreSQL's 63-byte identifier limit, with quotes, dots, spaces, commas, arrows,
    unicode or only digits, load as themselves on both backends."""
    from reinforcement_tests.supabase_transport import emulated_resources

    reader = store if backend == "postgres" else emulated_resources(project)["store"]
    names = ["a" * 64 + "_one", "a" * 64 + "_two", "é" * 40, "with space", "dot.ted", 'quo"te', "it's", "",
             "comma,name", "arrow->x", "12", "(paren)", "star*"]
    schema = FeatureSchema.of({**{n: "numeric" for n in names}, "ü" * 70: "categorical"}, accepts_missing=False)
    features = {**{n: float(i) for i, n in enumerate(names)}, "ü" * 70: "text"}
    store.insert_evaluations(pd.DataFrame([row("long", END - timedelta(hours=1), features=features)]))
    query = RowQuery(END - timedelta(days=7), END, schema, limit=10)
    loaded = reader.load_rows(query)
    assert loaded[names].iloc[0].tolist() == [float(i) for i in range(len(names))]
    assert loaded["ü" * 70].tolist() == ["text"] and reader.count_rows(query) == 1


@pytest.mark.parametrize("backend", ["postgres", "supabase"])
def test_more_features_than_a_select_list_holds_load(backend, store, project):
    """2,000 features (PostgreSQL's target list holds 1,664 columns; a URL some 8 KB) load, typed."""
    from reinforcement_tests.supabase_transport import emulated_resources

    reader = store if backend == "postgres" else emulated_resources(project)["store"]
    kinds = {f"feature_{i:04d}": ("categorical" if i % 3 == 0 else "numeric") for i in range(2_000)}
    schema = FeatureSchema.of(kinds, accepts_missing=True)
    features = {n: (str(i) if k == "categorical" else float(i)) for i, (n, k) in enumerate(kinds.items())}
    features["feature_0003"] = None
    features["feature_0006"] = ""
    store.insert_evaluations(pd.DataFrame([row(f"wide{j}", END - timedelta(hours=j + 1), features=features)
                                           for j in range(3)]))
    query = RowQuery(END - timedelta(days=7), END, schema, limit=10)
    loaded = reader.load_rows(query)
    assert len(loaded) == 3 and list(loaded.columns[6:]) == list(kinds)
    assert loaded["feature_0001"].tolist() == [1.0] * 3 and loaded["feature_0000"].tolist() == ["0"] * 3
    assert loaded["feature_0003"].tolist() == [None] * 3 and loaded["feature_0006"].tolist() == [""] * 3
    assert loaded["feature_0004"].dtype == "float64"


@pytest.mark.parametrize("backend", ["postgres", "supabase"])
def test_a_hand_inserted_registry_row_is_refused_naming_its_version_and_columns(backend, store, project):
    """A `model_versions` row left at its column defaults (no features, no classes) is refused when read,
    by version and column, not left to fail later inside numpy."""
    from reinforcement_tests.supabase_transport import emulated_resources

    reader = store if backend == "postgres" else emulated_resources(project)["store"]
    with store.connect("test") as conn:
        conn.execute("insert into model_versions (version, artifact_path, sha256, is_champion)"
                     " values ('by-hand', 'models/by-hand', repeat('a', 64), true)")
    for read in (reader.champion, lambda: reader.model_version("by-hand"), reader.model_versions):
        with pytest.raises(StoreError, match=r"model_versions row 'by-hand' cannot be used: feature_names is \[\], "
                                             r"not a non-empty list.*; classes is \[\]"):
            read()


@pytest.mark.parametrize("backend", ["postgres", "supabase"])
def test_a_batch_the_log_cannot_take_as_given_is_reported_and_its_timeless_outcomes_counted(backend, store, project):
    """Rows repeating a prediction_id of the same batch, outcomes with no evaluated_at and rows
    evaluated before they were predicted: the insert says how many of each; the window summary
    counts the timeless outcomes (by when they were predicted) as `evaluated_at_missing`."""
    import logging

    from reinforcement_tests.supabase_transport import emulated_resources

    target = store if backend == "postgres" else emulated_resources(project)["store"]
    early = row("early", END - timedelta(hours=3))
    early["predicted_at"] = END - timedelta(hours=2)  # predicted after its outcome: kept, reported
    timeless = [{**row(f"timeless-{i}", None), "predicted_at": END - timedelta(days=1)} for i in range(3)]
    log = pd.DataFrame([row("twice", END - timedelta(hours=1)), row("twice", END - timedelta(hours=2)),
                        early, *timeless])
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("reinforcement_assets.store")
    logger.addHandler(handler)
    try:
        assert target.insert_evaluations(log) == 5
    finally:
        logger.removeHandler(handler)
    assert warnings == ["prediction_evaluations batch of 6 rows: duplicate_prediction_id 1, "
                        "evaluated_at_missing 3, evaluated_before_predicted 1"]
    window = Window.ending_at(END, 7, 0.2)
    summary = target.summarize_window(window, SCHEMA)
    assert (summary.rows, summary.rejected) == (2, {"evaluated_at_missing": 3})
    assert summary == store.summarize_window(window, SCHEMA)
    # Once their time is set, they are in the window like any other outcome.
    with store.connect("test") as conn:
        conn.execute("update prediction_evaluations set evaluated_at = %s where evaluated_at is null",
                     (END - timedelta(hours=5),))
    assert store.summarize_window(window, SCHEMA).rows == 5
