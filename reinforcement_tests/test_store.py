"""The PostgreSQL store against a real (embedded) PostgreSQL."""

from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest

from reinforcement_assets.backends.schema import MIGRATIONS_DIR, apply_migrations
from reinforcement_assets.backends.store import ModelVersion, RowQuery, StoreError, Window
from reinforcement_assets.core.drift_data import BAD_ROW_KINDS
from reinforcement_assets.core.rows import reject_reason

END = datetime(2026, 11, 20, 2, tzinfo=timezone.utc)
NAMES = ("x0", "x1")


def row(pid, evaluated_at, predicted="a", actual="a", confidence=0.9, features=None):
    return {"prediction_id": pid, "model_version": "v0", "features": features or {"x0": 1.0, "x1": 2.0},
            "predicted_label": predicted, "actual_label": actual, "confidence": confidence,
            "predicted_at": evaluated_at - timedelta(minutes=5) if evaluated_at else END, "evaluated_at": evaluated_at}


def test_migrations_are_recorded_and_idempotent(database_url):
    assert apply_migrations(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [v for (v,) in conn.execute("select version from supabase_migrations.schema_migrations")]
        for path in MIGRATIONS_DIR.glob("*.sql"):  # applying a file twice changes nothing
            conn.execute(path.read_text().encode())
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
    summary = store.summarize_window(window, NAMES)
    assert (summary.rows, summary.correct, summary.train_rows, summary.train_correct, summary.holdout_rows) == (
        3, 2, 2, 1, 1)
    assert summary.accuracy == pytest.approx(2 / 3)
    assert summary.rejected == {"confidence_out_of_range": 1, "feature_missing": 1, "feature_not_numeric": 1}


def test_sql_and_python_agree_on_every_kind_of_bad_row(store):
    from reinforcement_assets.demo import drift_scenario, log_traffic, train_from_scratch

    scenario = drift_scenario(600, seed=5, train_rows=500, after_rows=10)
    model = train_from_scratch(*scenario.train)
    log, kinds = log_traffic(model, *scenario.window, END - timedelta(days=7), END, model_version="v0",
                             bad_row_share=0.3, seed=5)
    store.insert_evaluations(log)
    names = tuple(scenario.window[0].columns)
    with store.connect("test") as conn:
        in_sql = dict(conn.execute(
            "select prediction_id, coalesce(reject_reason, case when not features ?& %s then 'feature_missing' end)"
            " from prediction_evaluations", (list(names),)).fetchall())
    in_python = {r["prediction_id"]: reject_reason(r, names) for r in log.to_dict("records")}
    assert in_sql == in_python
    assert set(in_python.values()) - {None} == set(BAD_ROW_KINDS)
    assert {pid: kind for pid, kind in zip(log["prediction_id"], kinds) if isinstance(kind, str)} == {
        pid: reason for pid, reason in in_python.items() if reason}


def test_load_rows_pushes_the_filters_down(store):
    log = pd.DataFrame([
        row("correct", END - timedelta(days=1)),
        row("confident-error", END - timedelta(days=2), predicted="b", confidence=0.95),
        row("unsure-error", END - timedelta(days=2), predicted="b", confidence=0.6),
        row("old-error", END - timedelta(days=9), predicted="b", confidence=0.95),
    ])
    store.insert_evaluations(log)
    query = RowQuery(END - timedelta(days=7), END, NAMES, limit=100, is_correct=False, min_confidence=0.7)
    errors = store.load_rows(query)
    assert errors["prediction_id"].tolist() == ["confident-error"]
    assert list(errors.columns) == ["id", "prediction_id", "evaluated_at", "predicted_label", "actual_label",
                                    "confidence", "x0", "x1"]
    assert errors["x1"].dtype == "float64" and errors.loc[0, "actual_label"] == "a"
    assert store.count_rows(query) == 1
    statement, _ = store.copy_rows_statement(query)
    with store.connect("render") as conn:
        sent = statement.as_string(conn)
    for pushed_down in ("evaluated_at >= %(start)s", "evaluated_at < %(end)s", "is_correct is false",
                        "confidence > %(min_confidence)s", "reject_reason is null", "limit 100"):
        assert pushed_down in sent
    assert "select *" not in sent.lower() and "(features ->> 'x0')::float8" in sent


def test_samples_are_uniform_reproducible_and_capped(store):
    log = pd.DataFrame([row(f"p{i}", END - timedelta(minutes=i + 1)) for i in range(2_000)])
    store.insert_evaluations(log)
    query = RowQuery(END - timedelta(days=7), END, NAMES, limit=300, sample_fraction=0.2)
    first, again = store.load_rows(query), store.load_rows(query)
    assert len(first) == 300 and first["id"].tolist() == again["id"].tolist()
    assert 250 < store.count_rows(query) < 550  # about 20% of 2,000
    ages = (END - first["evaluated_at"]).dt.total_seconds() / 60
    assert 700 < ages.median() < 1300  # spread over the whole period, not the newest rows


def test_load_many_gives_what_each_load_gives(store):
    store.insert_evaluations(pd.DataFrame([row(f"p{i}", END - timedelta(minutes=i + 1), predicted="ab"[i % 2])
                                           for i in range(300)]))
    errors = RowQuery(END - timedelta(days=1), END, NAMES, limit=100, is_correct=False)
    sample = RowQuery(END - timedelta(days=1), END, NAMES, limit=50, sample_fraction=0.5)
    together = store.load_many(errors, sample)
    for frame, query in zip(together, (errors, sample), strict=True):
        pd.testing.assert_frame_equal(frame, store.load_rows(query))
    assert [len(f) for f in together] == [100, 50]


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
