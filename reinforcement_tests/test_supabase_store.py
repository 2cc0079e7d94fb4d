"""The Supabase store through a real `supabase` client whose HTTP transport answers like PostgREST.

Supabase's servers cannot run here, so `SupabaseEmulator` (supabase_transport.py) replaces them:
an `httpx.MockTransport` speaking PostgREST's documented protocol (filters, `or` trees, `order`,
`limit`, `Prefer`, `Content-Range`, `/rpc/…`, error bodies, the silent 1,000-row cap) and running
each request as SQL, as `service_role`, on the real embedded PostgreSQL of the `database_url`
fixture. The same database is read back through `PostgresStore`, so every answer of the Supabase
backend is compared with the Postgres backend's on the same rows.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from reinforcement_assets.backends.store import (
    ModelVersion, Period, RowQuery, StoreError, Window, WindowSummary, period_query,
)
from reinforcement_assets.core.records import holdout_size
from reinforcement_assets.backends.supabase_storage import SupabaseArtifactStorage, SupabaseIOManager
from reinforcement_assets.backends.supabase_store import SupabaseStore, keyset_after
from reinforcement_assets.core.drift_data import BAD_ROW_KINDS
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.defs.assets import asset_checks, assets
from reinforcement_assets.defs.request_queue import InvalidRequest
from reinforcement_assets.defs.resources import backend_from_environment, default_resources
from reinforcement_assets.defs.sensors import make_request_sensor
from reinforcement_assets.demo import deploy_initial_model, drift_scenario, log_traffic
from reinforcement_tests.supabase_transport import SERVICE_KEY, URL, SupabaseEmulator, emulated_resources
from reinforcement_tests.test_store import END as MIXED_END
from reinforcement_tests.test_store import MIXED, mixed_log

END = pd.Timestamp(datetime(2026, 11, 20, 2, tzinfo=timezone.utc))
START = END - pd.Timedelta(days=7)
WINDOW = Window.ending_at(END.to_pydatetime(), lookback_days=7, holdout_share=0.2)
TRAIN = Period(WINDOW.start, WINDOW.recent_start)  # a period by time, for tests of other filters
NAMES = tuple(f"x{i}" for i in range(10))
SCHEMA = FeatureSchema.numeric(NAMES)
SHA = "a" * 64
PGRST001 = {"code": "PGRST001", "details": None, "hint": None, "message": "Database client error. Retrying."}


@pytest.fixture
def supabase(project):
    """The Supabase backend's resources (store, artifacts, IO manager) served by `project`."""
    return emulated_resources(project)


@pytest.fixture
def logged(supabase, project):
    """A champion and a week of its predictions across a drift (2% broken rows), written through Supabase."""
    scenario = drift_scenario(2_600, seed=5)
    model = deploy_initial_model(supabase["store"], supabase["artifacts"], scenario)
    log, broken = log_traffic(model, *scenario.window, START, END, model_version="v0", seed=5)
    project.requests.clear()
    return log, broken


def queries(summary: WindowSummary):
    """A cycle's row queries: bounded by the key of the window's first holdout row."""
    train, holdout = summary.training_period(WINDOW), summary.holdout_period(WINDOW)
    return [
        period_query(train, SCHEMA, limit=50_000),
        period_query(train, SCHEMA, limit=40, is_correct=False, min_confidence=0.7),
        period_query(train, SCHEMA, limit=600, is_correct=True, sample_fraction=0.35),
        period_query(holdout, SCHEMA, limit=50_000),
        period_query(holdout, SCHEMA, limit=50_000, sample_fraction=0.5),
    ]


def test_the_log_round_trips_and_reads_back_as_the_postgres_backend_reads_it(supabase, store, project, logged):
    log, broken = logged
    sb = supabase["store"]
    assert sb.insert_evaluations(log) == len(log)
    assert sb.insert_evaluations(log) == 0  # existing prediction_ids are left alone

    summary = sb.summarize_window(WINDOW, SCHEMA)
    assert summary == store.summarize_window(WINDOW, SCHEMA)
    assert summary.rows + summary.rows_rejected == len(log)
    assert summary.rejected == dict(broken.value_counts())  # every kind of broken row, kept and counted
    assert set(summary.rejected) == set(BAD_ROW_KINDS)
    assert set(summary.rejected_on) == {"feature_missing", "feature_not_numeric"}  # judged per feature
    assert all(set(on) <= set(NAMES) and sum(on.values()) == summary.rejected[reason]
               for reason, on in summary.rejected_on.items())
    type_sets = sb.feature_type_sets(WINDOW.start, WINDOW.end)
    assert type_sets == store.feature_type_sets(WINDOW.start, WINDOW.end)  # the same type sets, counted in SQL
    assert sum(t.rows for t in type_sets) == summary.rows + sum(summary.rejected[r] for r in summary.rejected_on)
    assert dict(type_sets[0].types) == dict.fromkeys(NAMES, "number")  # most rows first
    for query in queries(summary):
        pd.testing.assert_frame_equal(sb.load_rows(query), store.load_rows(query))
        assert sb.count_rows(query) == store.count_rows(query)
    all_train, _, _, all_holdout, _ = queries(summary)
    assert (sb.count_rows(all_train), sb.count_rows(all_holdout)) == (summary.train_rows, summary.holdout_rows) == (
        summary.rows - holdout_size(summary.rows, 0.2), holdout_size(summary.rows, 0.2))
    assert all(r.method in ("GET", "HEAD", "POST") for r in project.requests)


def test_features_of_every_json_type_read_back_as_the_postgres_backend_reads_them(supabase, store, project):
    """Strings ('' and null apart), booleans, nulls, extra keys, JSON text, huge numbers, arrays and
    objects as values, written through Supabase: judged, counted and loaded as on the Postgres backend."""
    sb = supabase["store"]
    log = mixed_log()
    assert sb.insert_evaluations(log) == len(log)
    window = Window.ending_at(MIXED_END, lookback_days=7, holdout_share=0.25)
    for schema in (MIXED, MIXED.with_missing(False), FeatureSchema.numeric(("x",))):
        assert sb.summarize_window(window, schema) == store.summarize_window(window, schema)
    assert sb.summarize_window(window, MIXED).rejected_on == {
        "feature_not_categorical": {"country": 3},
        "feature_not_boolean": {"flag": 2}, "feature_not_numeric": {"x": 8}}
    assert sb.feature_type_sets(window.start, window.end) == store.feature_type_sets(window.start, window.end)

    day = Period(MIXED_END - timedelta(days=1), MIXED_END)
    newest = Period(MIXED_END - timedelta(hours=3, minutes=30), MIXED_END)
    queries = [period_query(day, MIXED, limit=100), period_query(newest, MIXED, limit=100),
               period_query(day, MIXED.with_missing(False), limit=100),
               period_query(day, MIXED, limit=3, sample_fraction=0.99),
               period_query(day, FeatureSchema.of({"flag": "boolean", "country": "categorical"}, accepts_missing=True),
                            limit=100, is_correct=False)]
    for query in queries:
        from_supabase, from_postgres = sb.load_rows(query), store.load_rows(query)
        pd.testing.assert_frame_equal(from_supabase, from_postgres, check_exact=True)
        assert from_supabase.dtypes.to_dict() == from_postgres.dtypes.to_dict()
        for name in query.feature_names:  # None and '' (and NaN) exactly where the Postgres backend has them
            assert [repr(v) for v in from_supabase[name]] == [repr(v) for v in from_postgres[name]], name
        assert sb.count_rows(query) == store.count_rows(query) >= len(from_postgres) > 0
    everything = sb.load_rows(queries[0])
    assert everything["country"].tolist() == ["US", "", None, "FR", "DE", "GB", None]  # the last: not logged
    assert everything["flag"].tolist() == [True, False, True, None, False, True, True]
    assert everything["x"].dtype == "float64" and everything["country"].dtype == object
    assert sb.load_rows(queries[1])["flag"].dtype == object
    # Every load filtered on the accepted type sets, never on the features' jsonb.
    reads = project.sent("GET", "/rest/v1/prediction_evaluations")
    assert reads and all(r.url.params["feature_types_hash"].startswith("in.(") for r in reads)
    assert not any(key.startswith("features") for r in reads for key in r.url.params)


def test_inserts_are_batched_and_skip_existing_predictions(supabase, project, logged):
    log, _ = logged
    store = supabase["store"].model_copy(update={"insert_batch_size": 700})
    assert store.insert_evaluations(log) == len(log)
    posts = project.sent("POST", "/rest/v1/prediction_evaluations")
    assert len(posts) == -(-len(log) // 700)
    for post in posts:
        assert post.url.params["on_conflict"] == "prediction_id"
        assert set(post.headers["prefer"].split(",")) == {"return=minimal", "count=exact",
                                                          "resolution=ignore-duplicates"}
        assert '"features"' in post.url.params["columns"] and '"reject_reason"' not in post.url.params["columns"]


def test_reads_go_page_by_page_with_keyset_pagination_under_the_row_cap(supabase, store, project, logged):
    log, _ = logged
    sb = supabase["store"]
    sb.insert_evaluations(log)
    # A bare select would silently lose everything past the server's 1,000 rows.
    assert len(sb.client.table("prediction_evaluations").select("id").execute().data) == 1_000

    project.requests.clear()
    query = period_query(TRAIN, SCHEMA, limit=1_900)
    rows = sb.load_rows(query)
    pd.testing.assert_frame_equal(rows, store.load_rows(query))
    assert len(rows) == 1_900

    pages = project.sent("GET", "/rest/v1/prediction_evaluations")
    assert [int(p.url.params["limit"]) for p in pages] == [1_000, 900]
    # The accepted type sets come from an rpc, itself read page by page.
    with store.connect("test") as conn:
        accepted = sorted(h for (h,) in conn.execute(
            "select * from evaluation_accepted_type_sets(%s, %s, %s, false)",
            (WINDOW.start, TRAIN.end, Jsonb(SCHEMA.as_json()))).fetchall())
    assert accepted
    calls = project.sent("POST", "/rest/v1/rpc/evaluation_accepted_type_sets")
    assert calls and all(c.url.params["order"] == "feature_types_hash.asc" for c in calls)
    assert json.loads(calls[0].content) == {"p_start": WINDOW.start.isoformat(),
                                            "p_end": TRAIN.end.isoformat(),
                                            "p_schema": SCHEMA.as_json(), "p_accepts_missing": False}
    assert "or" not in pages[0].url.params
    last = rows.iloc[999]
    stamp = pd.Timestamp(last["evaluated_at"]).isoformat()
    assert unquote(pages[1].url.params["or"]).startswith(f'(evaluated_at.lt."{stamp[:19]}')
    assert pages[1].url.params["or"].endswith(f",id.lt.{last['id']}))")
    for page in pages:
        params = page.url.params
        assert "offset" not in params
        assert params["order"] == "evaluated_at.desc,id.desc"
        assert params.get_list("evaluated_at") == [f"gte.{WINDOW.start.isoformat()}",
                                                   f"lt.{TRAIN.end.isoformat()}"]
        assert params["actual_label"] == "not.is.null" and params["reject_reason"] == "is.null"
        # Only rows of the type sets the schema accepts, as judged in SQL.
        assert params["feature_types_hash"].startswith("in.(") and params["feature_types_hash"].endswith(")")
        assert sorted(int(h) for h in params["feature_types_hash"][4:-1].split(",")) == accepted
        selected = params["select"].split(",")
        assert "features" not in selected and "*" not in selected and "f0:features->x0" in selected


def test_filters_on_errors_confidence_and_samples_are_pushed_down(supabase, project, logged):
    log, _ = logged
    sb = supabase["store"]
    sb.insert_evaluations(log)
    project.requests.clear()
    sb.load_rows(period_query(TRAIN, SCHEMA, limit=100, is_correct=False, min_confidence=0.7))
    sb.load_rows(period_query(TRAIN, SCHEMA, limit=100, is_correct=True, sample_fraction=0.25))
    sb.count_rows(period_query(TRAIN, SCHEMA, limit=100, is_correct=False))
    errors, sample, count = project.sent(path="/rest/v1/prediction_evaluations")
    assert (errors.url.params["is_correct"], errors.url.params["confidence"]) == ("is.false", "gt.0.7")
    assert sample.url.params["is_correct"] == "is.true"
    assert sample.url.params["sample_key"] == f"lt.{int(0.25 * 2 ** 20)}"
    assert sample.url.params["order"] == "sample_key.asc,id.asc"
    assert count.method == "HEAD" and count.headers["prefer"] == "count=exact"


def test_rows_of_one_version_or_of_the_others_load_as_on_the_postgres_backend(supabase, store, logged):
    """`logged_by` / `not_logged_by` split the log by the version that predicted each row, whatever
    the version's name (PostgREST syntax in it is quoted) and with rows of no recorded version."""
    log, _ = logged
    awkward = 'v,(1).x"q\\'
    log = log.assign(model_version=np.select([log.index % 3 == 0, log.index % 3 == 1], ["v0", awkward], None))
    supabase["store"].insert_evaluations(log)
    split = {}
    for version in ("v0", awkward):
        mine = period_query(TRAIN, SCHEMA, limit=50_000, logged_by=version)
        others = period_query(TRAIN, SCHEMA, limit=50_000, not_logged_by=version, sample_fraction=0.9)
        for query in (mine, others):
            pd.testing.assert_frame_equal(supabase["store"].load_rows(query), store.load_rows(query))
        everything = store.load_rows(period_query(TRAIN, SCHEMA, limit=50_000))
        rows_of = set(store.load_rows(mine)["id"])
        rest = set(store.load_rows(replace(others, sample_fraction=1.0))["id"])
        assert rows_of and rest and not rows_of & rest and rows_of | rest == set(everything["id"])
        split[version] = rows_of
    assert not split["v0"] & split[awkward]


def test_a_server_cap_below_the_page_size_loses_nothing(database_url, store, logged, supabase):
    log, _ = logged
    supabase["store"].insert_evaluations(log)
    capped = SupabaseEmulator(database_url, max_rows=300)
    try:
        sb = emulated_resources(capped)["store"]
        query = period_query(TRAIN, SCHEMA, limit=50_000)
        rows = sb.load_rows(query)
        pd.testing.assert_frame_equal(rows, store.load_rows(query))
        pages = capped.sent("GET")
        assert all(int(page.url.params["limit"]) == 1_000 for page in pages)  # asked for 1,000, got 300
        assert len(pages) == -(-len(rows) // 300) + 1  # and stopped at the first empty page
    finally:
        capped.close()


def test_keyset_filters_quote_what_postgrest_would_misread():
    order = (("evaluated_at", True), ("id", True))
    assert keyset_after(order, ("2026-11-20T01:00:00.5+00:00", 42)) == (
        'evaluated_at.lt."2026-11-20T01:00:00.5+00:00",and(evaluated_at.eq."2026-11-20T01:00:00.5+00:00",id.lt.42)')
    assert keyset_after((("created_at", True), ("id", False)), ('a"b', "c")) == (
        'created_at.lt."a\\"b",and(created_at.eq."a\\"b",id.gt."c")')


def test_runs_behave_as_on_the_postgres_backend(supabase, store):
    sb = supabase["store"]
    run_id = sb.start_run("dagster-1", "manual", triggered_by="8f2c1a9e-5b7d-4c3e-9a1f-2d6b8e4c7a10")
    sb.update_run("dagster-1", metrics={"window_rows": 10, "nan": float("nan")}, dataset_size=7)
    sb.update_run("dagster-1", status="completed", metrics={"accuracy": 0.9}, log_url="https://logs/1")
    assert sb.start_run("dagster-1", "manual") == run_id  # resumed, not duplicated
    sb.update_run("dagster-1", status="failed", error_message="boom")
    run = sb.get_run("dagster-1")
    assert run == store.get_run("dagster-1")
    assert str(run["id"]) == run_id and run["status"] == "failed" and run["completed_at"] is not None
    assert run["metrics"] == {"window_rows": 10, "nan": None, "accuracy": 0.9}
    assert run["started_at"] <= run["completed_at"] and run["dataset_size"] == 7
    for i in range(2, 6):
        sb.start_run(f"dagster-{i}", "auto_daily")
    assert [r["dagster_run_id"] for r in sb.latest_runs(3)] == [r["dagster_run_id"] for r in store.latest_runs(3)]
    assert sb.get_run("missing") is None
    with pytest.raises(StoreError, match=r"update run \(rpc/update_retraining_run\) failed: .*42703.*cannot set id"):
        sb.update_run("dagster-1", id="x")


def test_the_registry_behaves_as_on_the_postgres_backend(supabase, store):
    sb = supabase["store"]
    for version in ("v1", "v2"):
        sb.register_model_version(ModelVersion(version=version, artifact_path=f"models/{version}.joblib", sha256=SHA,
                                               feature_names=("x0", "x1"), classes=("a", "b"), metrics={"n": 1}))
    assert sb.champion() is None
    promoted = sb.promote("v1", "first", reference_accuracy=0.8)
    assert promoted.is_champion and promoted.reference_accuracy == 0.8 and promoted.feature_names == ("x0", "x1")
    sb.record_model_metrics("v2", {"accuracy": 0.91})
    known = FeatureSchema.of({"x0": "numeric", "x1": "categorical"}, accepts_missing=True)
    sb.record_feature_schema("v2", known)
    with pytest.raises(StoreError, match="no model version .v9."):  # as on the Postgres backend
        sb.record_feature_schema("v9", known)
    sb.promote("v2", "better")
    assert sb.champion() == store.champion() and sb.champion().version == "v2"
    assert sb.model_versions() == store.model_versions()
    assert sb.model_versions()[0].metrics == {"n": 1, "accuracy": 0.91}
    assert sb.champion().schema == known
    assert store.model_versions()[1].schema == FeatureSchema.of({"x0": None, "x1": None})  # v1: kinds unknown
    with pytest.raises(StoreError, match=r"promote \(rpc/promote_model_version\) failed: .*unknown model version v9"):
        sb.promote("v9", "no such version")
    with pytest.raises(StoreError, match=r"insert \(model_versions\) failed: PostgREST error 23505"):
        sb.register_model_version(ModelVersion(version="v1", artifact_path="x", sha256=SHA, feature_names=(),
                                               classes=()))


def test_retention_reads_and_marks_as_on_the_postgres_backend(supabase, store):
    sb = supabase["store"]
    for version in ("v1", "v2", "v3"):
        sb.register_model_version(ModelVersion(version=version, artifact_path=f"models/{version}.joblib", sha256=SHA,
                                               feature_names=("x0",), classes=("a", "b")))
    sb.promote("v1", "first")
    assert [v.version for v in sb.versions_for_retention()] == ["v3", "v2", "v1"]
    assert sb.versions_for_retention() == store.versions_for_retention()
    assert sb.model_version("v2") == store.model_version("v2") and sb.model_version("v9") is None
    sb.start_run("dagster-running", "manual")
    sb.start_run("dagster-done", "manual")
    sb.update_run("dagster-done", status="completed")
    assert [r["dagster_run_id"] for r in sb.unfinished_runs()] == ["dagster-running"]
    assert sb.unfinished_runs() == store.unfinished_runs()
    marked = sb.mark_artifacts_pruned(["v1", "v2"])  # the champion is never marked
    assert list(marked) == ["v2"] and marked == store.mark_artifacts_pruned(["v2"])
    assert sb.model_version("v2").artifact_pruned_at == marked["v2"] and sb.champion().artifact_pruned_at is None


def test_requests_behave_as_on_the_postgres_backend(supabase, store, project):
    sb = supabase["store"]
    with pytest.raises(InvalidRequest, match="unknown priority"):
        sb.create_request("x", priority="urgent")
    assert project.requests == []  # refused before anything was sent
    low = sb.create_request("nightly", priority="low")
    high = sb.create_request("alert", priority="high", options={"force": True},
                             requested_by="8f2c1a9e-5b7d-4c3e-9a1f-2d6b8e4c7a10")
    assert sb.get_request(high.id) == store.get_request(high.id)
    assert high.options == {"from_scratch": False, "force": True} and high.status == "pending"
    assert [r.id for r in sb.latest_requests()] == [r.id for r in store.latest_requests()]

    claimed = sb.claim_requests(5, "sensor@test")
    assert [r.id for r in claimed] == [high.id, low.id]
    assert all(r.status == "processing" and r.claimed_by == "sensor@test" for r in claimed)
    assert sb.claim_requests(5, "sensor@test") == []
    assert sb.release_requests([low.id], "sensor@test") == 1
    assert sb.get_request(low.id).status == "pending"

    sb.claim_requests(1, "sensor@test")
    future = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert [r.id for r in sb.stale_requests(future)] == [r.id for r in store.stale_requests(future)]
    attached = sb.attach_request_run(high.id, "dagster-7")
    assert attached.dagster_run_id == "dagster-7" and attached.processed_at is not None
    recovered = sb.recover_requests([low.id, high.id], timedelta(seconds=0), max_claims=3)
    assert [r.id for r in recovered] == [low.id]  # high has a run attached
    assert sb.finish_request(high.id, "completed", dagster_run_id="dagster-7").status == "completed"
    assert sb.finish_request(high.id, "failed").status == "completed"  # ended requests never change

    sb.record_run_end("dagster-8", "failed", "crashed", source="manual", request_id=low.id, request_status="failed")
    assert sb.get_run("dagster-8")["error_message"] == "crashed" and sb.get_request(low.id).status == "failed"
    assert sb.count_correct(START, END) == store.count_correct(START, END)
    assert sb.confusion_counts(START, END) == store.confusion_counts(START, END)


def test_the_request_sensor_runs_on_the_supabase_backend(supabase, project):
    sb = supabase["store"]
    queued = [sb.create_request(f"r{i}", priority=("low", "high")[i % 2]) for i in range(4)]
    with dg.instance_for_test() as instance:
        result = make_request_sensor(requests_per_tick=10).evaluate_tick(
            dg.build_sensor_context(instance=instance, resources={"store": sb}))
    assert sorted(r.run_key for r in result.run_requests) == sorted(r.id for r in queued)
    assert [r.tags["request_priority"] for r in result.run_requests] == ["high", "high", "low", "low"]
    assert project.sent("POST", "/rest/v1/rpc/claim_retraining_requests")
    claimed = [sb.get_request(r.id) for r in queued]
    assert all(r.status == "processing" and r.claimed_by.startswith("retraining_requests@") for r in claimed)


def test_transient_read_failures_are_retried_with_backoff(supabase, project):
    sb = supabase["store"]
    project.fail(method="GET", path="/rest/v1/model_versions", status=503, body=PGRST001)
    project.fail(method="GET", path="/rest/v1/model_versions", exception=httpx.ReadTimeout)
    project.fail(method="GET", path="/rest/v1/model_versions", status=502, body="<html>Bad gateway</html>")
    assert sb.model_versions() == []
    assert len(project.sent("GET", "/rest/v1/model_versions")) == 4  # the 4th attempt got through
    project.requests.clear()
    project.fail(method="POST", path="/rest/v1/rpc/summarize_evaluation_window", times=10, status=503,
                 body=PGRST001)
    with pytest.raises(StoreError, match=r"summarise window \(rpc/summarize_evaluation_window\) failed: "
                                         r"PostgREST error PGRST001: .*\(after 4 attempts\)"):
        sb.summarize_window(WINDOW, SCHEMA)
    assert len(project.requests) == 4


def test_writes_are_not_repeated_blindly(supabase, project):
    sb = supabase["store"]
    version = ModelVersion(version="v1", artifact_path="m", sha256=SHA, feature_names=("x0",), classes=("a",))
    # The insert ran but its answer was lost: repeating it could not tell a duplicate from a success.
    project.fail(method="POST", path="/rest/v1/model_versions", exception=httpx.ReadTimeout, after_executing=True)
    with pytest.raises(StoreError, match=r"insert \(model_versions\) failed: no answer within the 30 s timeout "
                                         r"\(ReadTimeout\); the write may or may not have been applied"):
        sb.register_model_version(version)
    assert len(project.sent("POST", "/rest/v1/model_versions")) == 1
    assert sb.model_versions()[0].version == "v1"  # it had been applied

    # PostgREST says no query ran (pool timeout), or the connection never opened: safe to repeat.
    project.requests.clear()
    project.fail(method="POST", path="/rest/v1/model_versions", status=504,
                 body={"code": "PGRST003", "message": "Timed out acquiring connection from connection pool."})
    project.fail(method="POST", path="/rest/v1/model_versions", exception=httpx.ConnectError)
    sb.register_model_version(ModelVersion(version="v2", artifact_path="m", sha256=SHA, feature_names=("x0",),
                                           classes=("a",)))
    assert len(project.sent("POST", "/rest/v1/model_versions")) == 3

    # A claim whose answer is lost is not repeated either: it would claim other requests.
    sb.create_request("r")
    project.requests.clear()
    project.fail(method="POST", path="/rest/v1/rpc/claim_retraining_requests", status=502, body="bad gateway")
    with pytest.raises(StoreError, match="claim .* may or may not have been applied"):
        sb.claim_requests(1, "me")
    assert len(project.requests) == 1

    # Client errors are final.
    project.requests.clear()
    with pytest.raises(StoreError, match="23505"):
        sb.register_model_version(version)
    assert len(project.requests) == 1


def test_idempotent_writes_are_repeated_and_apply_once(supabase, project, database_url, logged):
    log, _ = logged
    sb = supabase["store"]
    project.fail(method="POST", path="/rest/v1/prediction_evaluations", exception=httpx.ReadTimeout,
                 after_executing=True)
    sb.insert_evaluations(log)  # the first batch ran, lost its answer, ran again and skipped its rows
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*), count(distinct prediction_id) from prediction_evaluations"
                            ).fetchone() == (len(log), len(log))
    project.fail(method="POST", path="/rest/v1/rpc/update_retraining_run", exception=httpx.ReadTimeout,
                 after_executing=True)
    sb.start_run("d1", "manual")
    sb.update_run("d1", metrics={"a": 1})
    assert sb.get_run("d1")["metrics"] == {"a": 1}
    project.fail(method="POST", path="/rest/v1/model_retraining_requests", exception=httpx.ReadTimeout,
                 after_executing=True)
    sb.create_request("once")
    assert [r.reason for r in sb.latest_requests()] == ["once"]


def test_errors_name_the_operation_and_table_but_never_the_key(supabase, project):
    sb = supabase["store"]
    project.fail(status=400, body={"code": "22P02", "details": f"apikey {SERVICE_KEY} rejected", "hint": None,
                                   "message": f"invalid input with {SERVICE_KEY}"})
    with pytest.raises(StoreError) as raised:
        sb.champion()
    message = str(raised.value)
    assert message.startswith("read (model_versions) failed: PostgREST error 22P02") and "***" in message
    assert SERVICE_KEY not in message and raised.value.__cause__ is None
    assert SERVICE_KEY not in repr(sb) and SERVICE_KEY not in str(sb.describe())

    wrong = emulated_resources(project, store={"service_key": "not-the-key"})["store"]
    with pytest.raises(StoreError, match=r"read \(model_versions\) failed: PostgREST error: Invalid API key"):
        wrong.champion()


def test_a_missing_migration_points_to_db_push(supabase, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("drop function public.summarize_evaluation_window")
    with pytest.raises(StoreError, match=r"PGRST202.*supabase db push"):
        supabase["store"].summarize_window(WINDOW, SCHEMA)


def test_feature_names_a_postgrest_path_cannot_spell_are_read_from_the_whole_object(supabase, project):
    """`a.b`, `12` (an array index in a path) or `x0\n` (a trailing newline must not pass for x0) are never
    spliced into the select: the rows' feature objects are read whole instead."""
    for name in ("a.b", "12", "x0\n"):
        query = RowQuery(start=START, end=END, schema=FeatureSchema.numeric(("x1", name)), limit=10)
        assert supabase["store"].load_rows(query).columns.tolist()[-2:] == ["x1", name]
    selects = [r.url.params.get("select") for r in project.sent("GET", "/rest/v1/prediction_evaluations")]
    assert all("->" not in s for s in selects if s)  # (what they load: test_store's round trip)


def test_the_configured_timeout_applies_to_a_server_that_never_answers():
    """A real socket that accepts and stays silent, and the store's own (unpatched) HTTP client."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    store = SupabaseStore(url=f"http://127.0.0.1:{server.getsockname()[1]}", service_key=SERVICE_KEY,
                          timeout_seconds=0.3, max_attempts=2, backoff_seconds=0.01)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError, match=r"read \(model_versions\) failed: no answer within the 0.3 s timeout "
                                             r"\(ReadTimeout\) \(after 2 attempts\)"):
            store.champion()
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    assert 0.6 <= time.monotonic() - started < 3


def test_the_backend_is_chosen_from_the_environment(monkeypatch):
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_KEY", "REINFORCEMENT_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert backend_from_environment({}) == "embedded"
    assert backend_from_environment({"REINFORCEMENT_DATABASE_URL": "postgresql://x"}) == "postgres"
    both = {"SUPABASE_URL": URL, "SUPABASE_SERVICE_KEY": SERVICE_KEY, "REINFORCEMENT_DATABASE_URL": "postgresql://x"}
    assert backend_from_environment(both) == "supabase"
    with pytest.raises(ValueError, match="SUPABASE_URL is set but SUPABASE_SERVICE_KEY is not"):
        backend_from_environment({"SUPABASE_URL": URL})

    monkeypatch.setenv("SUPABASE_URL", URL)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", SERVICE_KEY)
    resources = default_resources()
    assert isinstance(resources["store"], SupabaseStore)
    assert isinstance(resources["artifacts"], SupabaseArtifactStorage)
    assert isinstance(resources["io_manager"], SupabaseIOManager)
    # The key stays an EnvVar: resolved when a run starts, never written into the definitions.
    assert isinstance(resources["store"].service_key, dg.EnvVar)
    assert isinstance(resources["artifacts"].service_key, dg.EnvVar)
    with dg.build_resources({"store": resources["store"]}) as built:
        assert built.store.describe() == {"backend": "supabase", "project": "project-ref.supabase.test",
                                          "api": "PostgREST via supabase-py"}


def test_the_whole_graph_runs_on_the_supabase_backend(database_url, project, supabase, store):
    """Deploy, log a drifting week and materialise every asset with the Supabase store, storage and IO manager."""
    scenario = drift_scenario(5_000, seed=11)
    deploy_initial_model(supabase["store"], supabase["artifacts"], scenario)
    champion = supabase["store"].champion()
    old = supabase["artifacts"].read_value(champion.artifact_path, champion.sha256)
    log, _ = log_traffic(old, *scenario.window, START, END, model_version="v0", seed=11)
    supabase["store"].insert_evaluations(log)
    project.requests.clear()

    result = dg.materialize(
        assets + asset_checks, resources=supabase, tags={"source": "auto_daily"}, raise_on_error=False,
        run_config=dg.RunConfig({"evaluation_log": {"config": {"window_end": END.isoformat()}}}))
    assert result.success

    metadata = {e.materialization.asset_key.to_user_string():
                {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
    assert metadata["evaluation_log"]["store"]["backend"] == "supabase"
    assert metadata["run_metrics"]["promoted"]
    run = store.get_run(result.run_id)  # read back through psycopg: the rows are really there
    assert (run["status"], run["source"], run["fine_tune_flag"]) == ("completed", "auto_daily", True)
    new = store.champion()
    assert new.version == run["model_version"] and new.parent_version == "v0"

    # Artifacts went to the bucket; the training log's signed URL opens without credentials.
    objects = project.buckets["reinforcement-artifacts"].objects
    assert new.artifact_path in objects and f"logs/{result.run_id}.log" in objects
    assert any(key.startswith("assets/finetune_dataset/") and key.endswith(".parquet") for key in objects)
    with project.http_client() as anonymous:
        log_text = anonymous.get(run["log_url"]).text
    assert f'"version": "{new.version}"' in log_text
    assert metadata["finetune_dataset"]["uri"].startswith(f"{URL}/storage/v1/object/sign/reinforcement-artifacts/")

    # Every read of the log was paginated and filtered; no request carried more than the cap.
    reads = project.sent("GET", "/rest/v1/prediction_evaluations")
    assert reads and all(int(r.url.params["limit"]) <= 1_000 and r.url.params["reject_reason"] == "is.null"
                         for r in reads)
    assert not project.sent("GET", "/rest/v1/model_retraining_runs") or all(
        "limit" in r.url.params for r in project.sent("GET", "/rest/v1/model_retraining_runs"))
    # The run row was written through Supabase's RPC functions, not some other way.
    assert project.sent("POST", "/rest/v1/rpc/start_retraining_run") and project.sent(
        "POST", "/rest/v1/rpc/update_retraining_run")


def test_a_batch_of_outcomes_with_one_timestamp_splits_on_the_row_id_as_on_the_postgres_backend(
        supabase, store, logged):
    """The holdout's first row is inside a batch sharing one `evaluated_at` (with microseconds):
    PostgREST's key bounds select exactly the rows PostgreSQL's row comparison does."""
    log, _ = logged
    batch_at = END - pd.Timedelta(days=2, microseconds=123_457)
    log = log.assign(evaluated_at=log["evaluated_at"].where(log.index % 2 == 0, batch_at))
    sb = supabase["store"]
    sb.insert_evaluations(log)
    summary = sb.summarize_window(WINDOW, SCHEMA)
    assert summary == store.summarize_window(WINDOW, SCHEMA)
    assert summary.holdout_start.evaluated_at == batch_at and summary.holdout_start.id > 0
    train, holdout = summary.training_period(WINDOW), summary.holdout_period(WINDOW)
    loaded = {}
    for name, period in (("train", train), ("holdout", holdout)):
        query = period_query(period, SCHEMA, limit=50_000)
        loaded[name] = sb.load_rows(query)
        pd.testing.assert_frame_equal(loaded[name], store.load_rows(query))
        assert sb.count_rows(query) == len(loaded[name])
    assert (len(loaded["train"]), len(loaded["holdout"])) == (summary.train_rows, summary.holdout_rows)
    everything = store.load_rows(period_query(Period(WINDOW.start, WINDOW.end), SCHEMA, limit=50_000))
    assert set(loaded["train"]["id"]).isdisjoint(loaded["holdout"]["id"])
    assert set(loaded["train"]["id"]) | set(loaded["holdout"]["id"]) == set(everything["id"])
    at_batch = [frame.loc[frame["evaluated_at"] == batch_at, "id"] for frame in (loaded["train"], loaded["holdout"])]
    assert len(at_batch[0]) and len(at_batch[1]) and at_batch[0].max() < at_batch[1].min()


def drifted_week(supabase) -> str:
    """A champion deployed through Supabase and a drifting week of its predictions; returns its version."""
    scenario = drift_scenario(5_000, seed=11)
    model = deploy_initial_model(supabase["store"], supabase["artifacts"], scenario)
    log, _ = log_traffic(model, *scenario.window, START, END, model_version="v0", seed=11)
    supabase["store"].insert_evaluations(log)
    return supabase["store"].champion().version


def cycle(supabase, tags):
    return dg.materialize(assets + asset_checks, resources=supabase, tags=tags, raise_on_error=False,
                          run_config=dg.RunConfig({"evaluation_log": {"config": {"window_end": END.isoformat()}}}))


def test_a_storage_bucket_refusing_an_output_fails_the_run_and_its_request_without_the_key(project, supabase, store):
    champion = drifted_week(supabase)
    request = store.create_request("retrain, please")
    (claimed,) = store.claim_requests(1, "test")
    refusal = {"statusCode": "403", "error": "Unauthorized", "message": "new row violates row-level security policy"}
    project.fail(method="POST", path="/storage/v1/object/reinforcement-artifacts/assets/error_samples/", status=403,
                 body=refusal, times=10)

    result = cycle(supabase, {"source": "manual", "request_id": claimed.id})
    assert not result.success
    run = store.get_run(result.run_id)
    assert run["status"] == "failed" and run["completed_at"] is not None
    assert run["error_message"].startswith("error_samples: ArtifactStorageError: could not store its output in "
                                           f"artifact storage at assets/error_samples/{result.run_id}.parquet: ")
    assert "row-level security" in run["error_message"] and SERVICE_KEY not in run["error_message"]
    settled = store.get_request(request.id)
    assert (settled.status, settled.error_message) == ("failed", run["error_message"])
    assert store.champion().version == champion


def test_a_promotion_whose_answer_is_lost_leaves_registry_and_run_in_agreement(project, supabase, store):
    """The promotion commits, then its answer is lost (the run fails there): the run's row was written in the
    promotion's transaction, and the failure recorded afterwards does not undo it."""
    drifted_week(supabase)
    project.fail(method="POST", path="/rest/v1/rpc/promote_model_version", exception=httpx.ReadTimeout,
                 after_executing=True)

    result = cycle(supabase, {"source": "auto_daily"})
    assert not result.success
    champion, run = store.champion(), store.get_run(result.run_id)
    assert champion.version != "v0" and champion.version == run["model_version"]
    assert run["status"] == "completed" and run["metrics"]["promoted"] is True
    assert run["metrics"]["gate"]["winner"] and champion.metrics["gate"]["won"] is True
    assert run["error_message"].startswith("after the cycle was recorded: run_metrics: StoreError: promote")
