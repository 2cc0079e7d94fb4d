"""Features of any JSON type through whole cycles: categorical, boolean and missing values, extra keys
and features sent as JSON text; users' categorical models; the messages of runs that cannot train.

Real Dagster materialisations on the embedded PostgreSQL, and on the Supabase backend through the
`supabase` client against the project's HTTP emulator of PostgREST and Storage (built from Supabase's
documented shapes: Supabase's servers cannot run here).
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from reinforcement_assets.core.drift_data import with_mixed_kinds
from reinforcement_assets.demo import Scenario, drift_scenario, log_traffic, register_champion
from reinforcement_assets.model import train_from_scratch
from reinforcement_tests.supabase_transport import emulated_resources
from reinforcement_tests.test_graph import END, START, materialize, materialized, skipped_run

CATEGORICAL, BOOLEAN, MISSING = ["x7", "x8"], ["x9"], ["x0", "x7", "x9"]
KINDS = {**{f"x{i}": "numeric" for i in range(7)}, "x7": "categorical", "x8": "categorical", "x9": "boolean"}


def mixed_scenario(window_rows: int = 6_000, seed: int = 11) -> Scenario:
    """A drifting stream whose x7 and x8 are text (12 values), x9 a flag, x0, x7 and x9 sometimes missing."""
    scenario = drift_scenario(window_rows, seed=seed)
    parts = [scenario.train, scenario.window, scenario.after]
    X = with_mixed_kinds(pd.concat([p[0] for p in parts], ignore_index=True), categorical=CATEGORICAL,
                         boolean=BOOLEAN, missing=MISSING, seed=seed)
    cuts = np.cumsum([0] + [len(p[1]) for p in parts])
    return Scenario(*[(X.iloc[a:b].reset_index(drop=True), p[1]) for (a, b), p in zip(zip(cuts, cuts[1:]), parts)])


def users_pipeline(X: pd.DataFrame, y: np.ndarray) -> Pipeline:
    """A user's model: text one-hot encoded (unknown values ignored), then gradient boosting."""
    model = Pipeline([("prepare", ColumnTransformer([("text", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)],
                                                    remainder="passthrough")),
                      ("classify", HistGradientBoostingClassifier(max_iter=30, random_state=0))])
    return model.fit(X, y)


def messy_log(model, scenario: Scenario, version: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The week `model` logged, as services log it: an extra key on every row, a share of rows sent as
    JSON text, some text features logged as numbers; and how many rows were made bad, by kind."""
    log, _ = log_traffic(model, *scenario.window, START, END, model_version=version, seed=11, bad_row_share=0.0)
    rng = np.random.default_rng(5)
    features = []
    wrong_kind = json_text = 0
    for row in log["features"]:
        row = {**row, "request_source": "api", "debug": bool(rng.random() < 0.5)}  # keys the model does not use
        if rng.random() < 0.02:
            row["x8"], wrong_kind = 3, wrong_kind + 1
        if rng.random() < 0.05:
            row, json_text = json.dumps(row), json_text + 1
        features.append(row)
    return log.assign(features=features), {"feature_not_categorical": wrong_kind, "json_text": json_text}


@pytest.fixture(params=["postgres", "supabase"])
def backend(request, resources, project):
    return resources if request.param == "postgres" else emulated_resources(project)


def test_a_users_categorical_pipeline_is_retrained_on_a_messy_log(backend):
    store, artifacts = backend["store"], backend["artifacts"]
    scenario = mixed_scenario()
    model = users_pipeline(*scenario.train)
    register_champion(store, artifacts, model, "user-v1", "the user's model")
    log, bad = messy_log(model, scenario, "user-v1")
    assert store.insert_evaluations(log) == len(log)

    result = materialize(backend)
    assert result.success
    window = materialized(result, "evaluation_log")
    assert window["feature_schema"] == [{"name": n, "kind": k} for n, k in KINDS.items()]
    assert window["accepts_missing"] is True  # its encoder ignores None, boosting takes NaN
    # Only the rows whose x8 came as a number are set aside; JSON text was parsed, extra keys ignored.
    assert window["rejected_by_feature"] == {"feature_not_categorical": {"x8": bad["feature_not_categorical"]}}
    assert window["rows"] == len(log) - bad["feature_not_categorical"] and bad["json_text"] > 100
    assert materialized(result, "finetune_dataset")["mode"] == "update"
    metrics = materialized(result, "run_metrics")
    assert metrics["promoted"] and metrics["challenger_accuracy"] > metrics["champion_accuracy"]

    champion = store.champion()
    assert champion.version == metrics["challenger_version"]
    assert champion.schema.kinds == KINDS and champion.schema.accepts_missing is True
    registered = {v.version: v for v in store.model_versions()}["user-v1"]
    assert registered.schema.kinds == KINDS  # completed from the log on its first run, and recorded
    challenger = artifacts.read_value(champion.artifact_path, champion.sha256)
    X_after, y_after = scenario.after
    assert np.mean(challenger.predict(X_after) == y_after) > np.mean(model.predict(X_after) == y_after)


def test_a_bare_hgb_on_pandas_categories_is_refit_never_warm_started(store, artifacts, resources):
    scenario = mixed_scenario(seed=12)
    X, y = scenario.train
    as_categories = X.astype({name: "category" for name in CATEGORICAL})
    model = HistGradientBoostingClassifier(max_iter=30, categorical_features="from_dtype", random_state=0)
    model.fit(as_categories, y)
    register_champion(store, artifacts, model, "hgb-v1", "categorical HGB")
    log, _ = log_traffic(model, *scenario.window, START, END, model_version="hgb-v1", seed=3)
    store.insert_evaluations(log)
    result = materialize(resources)
    assert result.success
    assert materialized(result, "evaluation_log")["feature_schema"][7] == {"name": "x7", "kind": "categorical"}
    # A warm start would re-encode its categories on the new rows and scramble the trees it has.
    dataset = materialized(result, "finetune_dataset")
    assert dataset["mode"] == "refit" and "re-encodes them in a warm-start fit" in dataset["mode_reason"]
    assert materialized(result, "retrained_model")["model"] == "HistGradientBoostingClassifier"


def test_with_no_champion_the_learner_takes_the_features_the_log_has(store, resources, monkeypatch):
    scenario = mixed_scenario(seed=13)
    deployed = users_pipeline(*scenario.train)
    log, _ = messy_log(deployed, scenario, "elsewhere")
    store.insert_evaluations(log)
    monkeypatch.setattr("reinforcement_assets.settings.LEARNER", "hist_gradient_boosting")
    result = materialize(resources)
    assert result.success
    window = materialized(result, "evaluation_log")
    # The most common key set, extra keys included; each of the kind most of its values have.
    kinds = {f["name"]: f["kind"] for f in window["feature_schema"]}
    assert kinds == {**KINDS, "request_source": "categorical", "debug": "boolean"}
    assert materialized(result, "finetune_dataset")["mode"] == "refit"
    assert store.champion().schema.accepts_missing is True


def test_rows_a_numeric_champion_cannot_read_are_counted_and_named(store, artifacts, resources):
    scenario = drift_scenario(3_000, seed=14)
    X, y = scenario.train
    register_champion(store, artifacts, train_from_scratch(X, y), "numbers-v1", "numeric model")
    window_X = scenario.window[0].assign(x3=np.where(np.arange(3_000) % 2, "US", "FR"))  # text where it takes numbers
    log, _ = log_traffic(lambda_model(), window_X, scenario.window[1], START, END, model_version="numbers-v1",
                         bad_row_share=0.0)
    store.insert_evaluations(log)
    run = skipped_run(store, resources)
    assert run["error_message"] == ("skipped: all 3,000 evaluated rows of the window set aside: "
                                    "feature_not_numeric on 'x3' 3,000 (a model that takes text there says so "
                                    "with `reinforcement register --categorical`)")


def test_a_window_without_a_champion_feature_says_which(store, artifacts, resources):
    scenario = drift_scenario(3_000, seed=15)
    X, y = scenario.train
    register_champion(store, artifacts, train_from_scratch(X, y), "numbers-v1", "numeric model")
    log, _ = log_traffic(lambda_model(), scenario.window[0].drop(columns="x4"), scenario.window[1], START, END,
                         model_version="numbers-v1", bad_row_share=0.0)
    store.insert_evaluations(log)
    run = skipped_run(store, resources)
    assert run["error_message"] == ("skipped: no row of the window logs the model's feature 'x4' (absent or null "
                                    "in all 3,000 evaluated rows): a run naming a learner trains a new model on "
                                    "the features the log has now")
    # As the message says: a run naming a learner trains on the features the log has now.
    result = materialize(resources, retrained_model={"learner": "logistic_regression"})
    assert result.success
    names = [f["name"] for f in materialized(result, "evaluation_log")["feature_schema"]]
    assert names == sorted(set(X.columns) - {"x4"})
    assert materialized(result, "run_metrics")["champion_accuracy"] > 0  # judged against what was deployed


def test_high_cardinality_text_is_bucketed_never_a_failed_run(store, resources, monkeypatch):
    scenario = drift_scenario(4_000, seed=16)
    X, y = scenario.window
    rng = np.random.default_rng(0)
    window_X = X.assign(user=[f"user-{i}" for i in rng.integers(0, 2_000, len(X))])  # ~2,000 values
    log, _ = log_traffic(lambda_model(), window_X, y, START, END, model_version="elsewhere", bad_row_share=0.0)
    store.insert_evaluations(log)
    monkeypatch.setattr("reinforcement_assets.settings.LEARNER", "hist_gradient_boosting")
    result = materialize(resources)
    assert result.success and materialized(result, "retrained_model")["train_rows"] > 1_000


def lambda_model():
    """A stand-in deployed model for logging: predicts class_0 with confidence 0.9 on any input."""
    class Deployed:
        classes_ = np.array(["class_0", "class_1", "class_2"], dtype=object)

        def predict_proba(self, X):
            return np.tile([0.9, 0.05, 0.05], (len(X), 1))
    return Deployed()


def test_the_serving_contract_in_the_readme(store, artifacts, resources, tmp_path):
    """A champion predicts from JSON feature objects the way the README shows, in a process that does
    not import this package (only scikit-learn, pandas and joblib)."""
    scenario = mixed_scenario(seed=17)
    model = users_pipeline(*scenario.train)
    register_champion(store, artifacts, model, "user-v1", "the user's model")
    log, _ = messy_log(model, scenario, "user-v1")
    store.insert_evaluations(log)
    assert materialize(resources).success
    champion = store.champion()
    path = os.path.join(artifacts.base_dir, champion.artifact_path)
    rows = [{"x0": None, "x1": 0.3, "x2": -1.0, "x3": 2.0, "x4": 0.0, "x5": 1.0, "x6": 0.5, "x7": "k3", "x8": "new",
             "x9": True, "unused": "ignored"},
            {"x0": 1.5, "x1": 0.1, "x2": 0.2, "x3": 0.3, "x4": 0.4, "x5": 0.5, "x6": 0.6, "x7": None, "x8": "k1",
             "x9": None}]
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        import joblib, pandas as pd
        assert "reinforcement_assets" not in sys.modules
        model = joblib.load({str(path)!r})
        schema = json.loads({json.dumps(json.dumps(champion.schema.as_json()))})
        rows = json.loads({json.dumps(json.dumps(rows))})
        # The README's serving contract: numeric as float, categorical and boolean as object, missing
        # as NaN/None; columns in the schema's order.
        def column(values, kind):
            if kind == "numeric":
                return pd.Series([float("nan") if v is None else v for v in values], dtype="float64")
            return pd.Series(values, dtype=object)
        X = pd.DataFrame({{f["name"]: column([r.get(f["name"]) for r in rows], f["kind"]) for f in schema}})
        print(json.dumps([str(p) for p in model.predict(X)]))
        assert "reinforcement_assets" not in sys.modules
    """))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2 and set(json.loads(done.stdout)) <= set(champion.classes)


def test_kinds_are_recorded_only_once_the_log_has_shown_them(store, artifacts, resources):
    scenario = mixed_scenario(seed=18)
    model = users_pipeline(*scenario.train)
    register_champion(store, artifacts, model, "user-v1", "the user's model")
    assert skipped_run(store, resources)["error_message"].startswith("skipped: no evaluated predictions")
    assert store.champion().schema.kinds["x9"] is None  # an empty window tells nothing: not recorded
    log, _ = messy_log(model, scenario, "user-v1")
    store.insert_evaluations(log)
    assert materialize(resources).success
    assert {v.version: v for v in store.model_versions()}["user-v1"].schema.kinds == KINDS


@pytest.mark.parametrize("backend_name", ["postgres", "supabase"])
def test_a_champion_that_cannot_read_a_new_category_is_compared_by_what_it_deployed(
        backend_name, resources, project):
    backend = resources if backend_name == "postgres" else emulated_resources(project)
    store, artifacts = backend["store"], backend["artifacts"]
    scenario = mixed_scenario(seed=19)
    X, y = scenario.train
    strict = Pipeline([("prepare", ColumnTransformer([("text", OneHotEncoder(handle_unknown="error"), CATEGORICAL)],
                                                     remainder="passthrough")),
                       ("classify", HistGradientBoostingClassifier(max_iter=30, random_state=0))])
    strict.fit(X.assign(x7=X["x7"].fillna("k0")), y)
    register_champion(store, artifacts, strict, "strict-v1", "refuses unknown categories")
    window_X = scenario.window[0].assign(x7=scenario.window[0]["x7"].fillna("brand-new"))  # never seen
    log, _ = log_traffic(lambda_model(), window_X, scenario.window[1], START, END, model_version="strict-v1",
                         bad_row_share=0.0)
    store.insert_evaluations(log)
    result = materialize(backend, finetune_dataset={"from_scratch": True})
    assert result.success
    metrics = materialized(result, "run_metrics")
    assert metrics["baseline"] == "the champion cannot predict the holdout (ValueError): compared with what was deployed"
    recorded = store.get_run(result.run_id)["metrics"]
    assert recorded["baseline"] == metrics["baseline"]
    assert "brand-new" not in json.dumps(recorded)  # logged values stay out of what users may read
