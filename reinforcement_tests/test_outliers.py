"""Rows set aside as `feature_outlier`: one extreme value leaves the gate's decision as it was."""

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import conninfo

from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.core.outliers import OUTLIER_FACTOR, outlier_fences, set_aside_outliers
from reinforcement_assets.defs.assets import asset_checks, assets
from reinforcement_assets.demo import deploy_initial_model, drift_scenario, log_traffic
from reinforcement_assets.model import train_from_scratch
from reinforcement_tests.test_graph import END, START, materialized

SCHEMA = FeatureSchema.of({"x": "numeric", "sparse": "numeric", "country": "categorical"})


def test_the_fence_is_a_multiple_of_a_percentile_no_single_row_can_move():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"x": rng.normal(size=200), "sparse": np.where(np.arange(200) % 50 == 0, 1.0, 0.0),
                         "country": "US"})
    fences = outlier_fences(rows, SCHEMA)
    assert set(fences) == {"x", "sparse"}  # numeric features only
    assert fences["sparse"] == OUTLIER_FACTOR  # its nonzero values are all 1: zeros do not make it 0
    for extreme in (1e6, -1e6, 1e200):
        with_it = pd.concat([rows, pd.DataFrame({"x": [extreme], "sparse": [0.0], "country": ["US"]})],
                            ignore_index=True)
        assert outlier_fences(with_it, SCHEMA)["x"] == pytest.approx(fences["x"], rel=0.02)
        kept, counts = set_aside_outliers(with_it, SCHEMA)
        assert counts == {"x": 1} and len(kept) == 200 and extreme not in kept["x"].to_numpy()
    # A heavy tail is not an outlier: 100,000 lognormal values of sigma 3, or Pareto of alpha 1.1, stay.
    for tail in (rng.lognormal(0, 3, size=100_000), rng.pareto(1.1, size=100_000) + 1):
        assert set_aside_outliers(pd.DataFrame({"x": tail, "sparse": 0.0, "country": "US"}), SCHEMA)[1] == {}
    # A sentinel repeated, among 30 rows; a single value that overflows, among zeros.
    small = rows.iloc[:28].assign(x=rows["x"].iloc[:28])
    repeated = pd.concat([small, pd.DataFrame({"x": [-999_999.0] * 2, "sparse": [0.0] * 2, "country": "US"})],
                         ignore_index=True)
    assert set_aside_outliers(repeated, SCHEMA)[1] == {"x": 2}
    zeros = pd.DataFrame({"x": [0.0] * 999 + [1e200], "sparse": 0.0, "country": "US"})
    assert set_aside_outliers(zeros, SCHEMA)[1] == {"x": 1}
    # Missing values and a row outlying on two features are counted once, under the first.
    two = pd.DataFrame({"x": [1.0, np.nan, 2.0, 1e9], "sparse": [1.0, 1.0, 1.0, 1e9], "country": "US"})
    assert set_aside_outliers(two, SCHEMA)[1] == {"x": 1}


@pytest.fixture
def twin_store(server_url, template_db):
    """A fresh migrated database beside the test's own, by name."""
    def make(name: str) -> PostgresStore:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name}")
            conn.execute(f"create database {name} template {template_db}")
        return PostgresStore(database_url=conninfo.make_conninfo(server_url, dbname=name))
    return make


def cycle(store: PostgresStore, artifacts: LocalArtifactStorage, log: pd.DataFrame, scenario) -> dg.ExecuteInProcessResult:
    """The champion `deploy_initial_model` trains (the same model every time), `log`, one cycle."""
    deploy_initial_model(store, artifacts, scenario)
    store.insert_evaluations(log)
    resources = {"store": store, "artifacts": artifacts, "io_manager": ArtifactIOManager(storage=artifacts)}
    return dg.materialize(assets + asset_checks, resources=resources, tags={"source": "auto_daily"},
                          run_config=dg.RunConfig({"evaluation_log": {"config": {"window_end": END.isoformat()}}}))


def test_one_extreme_row_leaves_the_gates_decision_as_it_was(store, twin_store, tmp_path):
    """Before, one row at -1e6 made every candidate "significantly worse" and one at 1e200 failed the
    run on NaN. Now each is set aside, counted, and the race decides as on the log without it."""
    scenario = drift_scenario(6_000, seed=11)
    X, y = scenario.window
    deployed = train_from_scratch(scenario.train[0].iloc[:4_000], scenario.train[1][:4_000])  # as deploy_initial_model
    log, _ = log_traffic(deployed, X, y, START, END, model_version="v0", seed=11)
    plain = cycle(store, LocalArtifactStorage(base_dir=str(tmp_path / "plain")), log, scenario)
    assert plain.success
    expected = materialized(plain, "run_metrics")
    assert expected["promoted"] and expected["winner"]
    for n, extreme in enumerate((-1e6, 1e200)):
        # The same log and one more row, in the training part, with one feature at the extreme: a
        # confident mistake of the champion (as such a row would be), so the update trains on it too.
        odd = log.iloc[[len(log) // 3]].copy()
        odd["prediction_id"] = "outlier"
        odd["predicted_label"] = next(c for c in sorted(set(y)) if c != odd["actual_label"].iloc[0])
        odd["confidence"] = 0.95
        odd["features"] = [{**odd["features"].iloc[0], X.columns[0]: extreme}]
        twin = twin_store(f"loop_outliers_{n}")
        result = cycle(twin, LocalArtifactStorage(base_dir=str(tmp_path / str(n))),
                       pd.concat([log, odd], ignore_index=True), scenario)
        assert result.success, extreme
        decided = materialized(result, "run_metrics")
        # The same winner; its figures differ only by what one row more in the window moves (the share
        # of the replay sampled, the holdout's size).
        assert (decided["promoted"], decided["winner"]) == (True, expected["winner"]), extreme
        dataset = materialized(result, "finetune_dataset")
        assert dataset["rows_set_aside"] == {"feature_outlier": 1}
        assert dataset["set_aside_by_feature"] == {"feature_outlier": {X.columns[0]: 1}}
        assert twin.get_run(result.run_id)["metrics"]["rows_outlying"] == 1
        assert decided["challenger_accuracy"] == pytest.approx(expected["challenger_accuracy"], abs=0.03)
        assert dataset["train_rows"] == pytest.approx(materialized(plain, "finetune_dataset")["train_rows"], rel=0.01)
