"""Bring your own model: users' real scikit-learn models, registered with the command, carried through a
cycle on a drifted week (real Dagster materialisations on the embedded PostgreSQL)."""

import os
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from reinforcement_assets.cli import main
from reinforcement_assets.core.labels import class_type
from reinforcement_assets.core.records import ModelVersion
from reinforcement_assets.demo import accuracy, drift_scenario, log_traffic
from reinforcement_assets.model import IncrementalPipeline, final_estimator
from reinforcement_tests.supabase_transport import emulated_resources
from reinforcement_tests.test_graph import END, START, materialize, materialized

NAMES = [f"x{i}" for i in range(10)]


def as_int(y):
    return np.array([int(label.rsplit("_", 1)[1]) for label in y])


def as_bool(y):
    return np.asarray(y) == "class_1"


def column_transformer_pipeline():
    columns = ColumnTransformer([("first", StandardScaler(), NAMES[:5])], remainder=StandardScaler())
    return Pipeline([("columns", columns), ("classify", LogisticRegression(max_iter=1000))])


# name: (model, label conversion, classes, mode of the run, what an update grows)
ZOO = {
    "hist_gradient_boosting": (lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0), None, 3,
                               "update"),
    "random_forest": (lambda: RandomForestClassifier(n_estimators=20, min_samples_leaf=2, random_state=0), None, 3,
                      "update"),
    "mlp": (lambda: make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=300, random_state=0)), None, 3,
            "update"),
    "pipeline_logistic_regression": (lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                                     None, 3, "refit"),
    "column_transformer": (column_transformer_pipeline, None, 3, "refit"),
    "hinge_sgd": (lambda: make_pipeline(StandardScaler(), SGDClassifier(loss="hinge", random_state=0)), None, 3,
                  "update"),
    "int_labels": (lambda: make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)), as_int,
                   3, "update"),
    "bool_labels": (lambda: HistGradientBoostingClassifier(max_iter=30, random_state=0), as_bool, 2, "update"),
    "fitted_on_an_array": (lambda: make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)),
                           None, 3, "update"),
}


@pytest.fixture(autouse=True)
def environment(monkeypatch, database_url, tmp_path):
    """The CLI on the test's database and artifact folder (the resources the assets get, too)."""
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", database_url)
    monkeypatch.setattr("reinforcement_assets.settings.DATA_DIR", str(tmp_path))


def users_model(name, seed=21, window_rows=3_000):
    """A user's fitted model (trained before a drift), the scenario, and the label conversion it uses."""
    build, convert, n_classes, _ = ZOO[name]
    scenario = drift_scenario(window_rows, seed=seed, train_rows=2_000, after_rows=1_000, n_classes=n_classes)
    X, y = scenario.train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP's ConvergenceWarning on small data
        model = build().fit(X.to_numpy() if name == "fitted_on_an_array" else X, convert(y) if convert else y)
    return model, scenario, convert or (lambda y: y)


def log_week(store, model, scenario, convert, version, seed=21):
    X, y = scenario.window
    log, _ = log_traffic(model, X, convert(y), START, END, model_version=version, seed=seed)
    store.insert_evaluations(log)
    return log


@pytest.mark.parametrize("name", list(ZOO))
def test_a_users_model_is_registered_and_carried_through_a_cycle_on_a_drifted_week(
        name, store, artifacts, resources, tmp_path, capsys):
    model, scenario, convert = users_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "X has feature names" for the model fitted on an array
        log = log_week(store, model, scenario, convert, "user-v1")
    path = tmp_path / f"{name}.joblib"
    joblib.dump(model, path)
    names = ["--feature-names", ",".join(NAMES)] if name == "fitted_on_an_array" else []

    assert main(["register", str(path), "--version", "user-v1", "--champion", "--reason", "adopted", *names]) == 0
    out = capsys.readouterr()
    champion = store.champion()
    assert champion.version == "user-v1" and "champion: user-v1" in out.out and out.err == ""
    usable = log.dropna(subset=["confidence"])
    assert champion.reference_accuracy == pytest.approx(
        float((usable["predicted_label"] == usable["actual_label"]).mean()), abs=0.02)
    assert champion.class_type == {"int_labels": "int", "bool_labels": "bool"}.get(name, "str")

    result = materialize(resources)
    assert result.success
    dataset = materialized(result, "finetune_dataset")
    assert dataset["mode"] == ZOO[name][3], dataset["mode_reason"]
    run = store.get_run(result.run_id)
    # The run shows the candidate it promoted (or scored best): its flag says whether that one was fine-tuned.
    assert run["status"] == "completed" and run["fine_tune_flag"] == (run["metrics"]["candidate"] == "update")
    (challenger,) = [v for v in store.model_versions() if v.version == run["model_version"]]
    new = artifacts.read_value(challenger.artifact_path, challenger.sha256)
    assert type(new) is type(model) and type(final_estimator(new)) is type(final_estimator(model))
    assert challenger.class_type == champion.class_type and challenger.classes == champion.classes
    assert class_type(new.classes_) == class_type(model.classes_)  # ints stay ints, booleans booleans
    updated = run["metrics"]["candidate"] == "update"
    assert challenger.parent_version == ("user-v1" if updated else None)
    loaded = load_without_the_package(artifacts.base_dir + "/" + challenger.artifact_path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[1:] == [type(model).__name__, "[]"]  # no module of this package was imported
    metrics = materialized(result, "run_metrics")
    assert 0 < metrics["challenger_accuracy"] <= 1 and metrics["champion_accuracy"] < 0.9
    X_after, y_after = scenario.after
    assert accuracy(new, X_after, convert(y_after)) > accuracy(model, X_after, convert(y_after))
    assert list(champion.feature_names) == NAMES
    if updated and name in ("hist_gradient_boosting", "random_forest"):
        grown, registered = final_estimator(new), final_estimator(model)
        size = "max_iter" if name == "hist_gradient_boosting" else "n_estimators"
        assert getattr(registered, size) < getattr(grown, size) <= 2 * getattr(registered, size)


def test_a_warm_start_update_missing_a_class_becomes_a_refit(store, artifacts, resources, tmp_path):
    model, scenario, convert = users_model("random_forest")
    log_week(store, model, scenario, convert, "user-v1")
    with store.connect("test") as conn:  # no correct row of class_2 to replay, no error of it either
        conn.execute("delete from prediction_evaluations where actual_label = 'class_2'")
    joblib.dump(model, tmp_path / "forest.joblib")
    assert main(["register", str(tmp_path / "forest.joblib"), "--version", "user-v1", "--champion"]) == 0
    result = materialize(resources)
    assert result.success
    dataset = materialized(result, "finetune_dataset")
    assert dataset["mode"] == "refit" and "lacks ['class_2']" in dataset["mode_reason"]
    assert dataset["window_sample_rows"] > 0 and dataset["error_rows"] == 0


def test_a_run_naming_a_learner_replaces_the_family(store, artifacts, resources, tmp_path):
    model, scenario, convert = users_model("hist_gradient_boosting")
    log_week(store, model, scenario, convert, "user-v1")
    joblib.dump(model, tmp_path / "hgb.joblib")
    assert main(["register", str(tmp_path / "hgb.joblib"), "--version", "user-v1", "--champion"]) == 0
    result = materialize(resources, retrained_model={"learner": "reinforcement_tests.learner_factories:extra_trees"})
    assert result.success
    assert materialized(result, "finetune_dataset")["mode"] == "refit"
    assert materialized(result, "retrained_model")["model"] == "ExtraTreesClassifier"


def test_with_no_champion_the_learner_setting_is_the_family(store, artifacts, resources, monkeypatch):
    model, scenario, convert = users_model("hist_gradient_boosting")
    log_week(store, model, scenario, convert, "deployed-elsewhere")
    monkeypatch.setattr("reinforcement_assets.settings.LEARNER", "random_forest")
    result = materialize(resources)
    assert result.success
    assert materialized(result, "retrained_model")["model"] == "RandomForestClassifier"
    assert "no champion yet, learner random_forest" in materialized(result, "finetune_dataset")["mode_reason"]


def load_without_the_package(path) -> subprocess.CompletedProcess:
    """joblib.load of `path` in a fresh interpreter that never imports reinforcement_assets."""
    code = ("import sys, joblib; model = joblib.load(sys.argv[1]);"
            "leaked = sorted(m for m in sys.modules if m.startswith('reinforcement'));"
            "print(type(model).__module__, type(model).__name__, leaked)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd="/", env=env)


def test_an_earlier_versions_champion_keeps_working_and_its_challenger_needs_no_package(
        store, artifacts, resources, tmp_path):
    scenario = drift_scenario(3_000, seed=22, train_rows=2_000, after_rows=500)
    legacy = IncrementalPipeline([("scale", StandardScaler()), ("classify", SGDClassifier(
        loss="log_loss", alpha=1e-4, max_iter=200, tol=1e-4, random_state=0))]).fit(*scenario.train)
    stored = artifacts.write_value("models/v0", legacy)  # as earlier versions stored their champions
    store.register_model_version(ModelVersion(version="v0", artifact_path=stored.path, sha256=stored.sha256,
                                              feature_names=tuple(NAMES), classes=tuple(legacy.classes_)))
    store.promote("v0", "an earlier version's champion")
    log_week(store, legacy, scenario, lambda y: y, "v0", seed=22)

    result = materialize(resources)
    assert result.success and materialized(result, "finetune_dataset")["mode"] == "update"
    champion = store.champion()
    assert champion.version != "v0"  # the drift was repaired
    done = load_without_the_package(tmp_path / "artifacts" / champion.artifact_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["sklearn.pipeline", "Pipeline"] and done.stdout.strip().endswith("[]")


def test_numeric_labels_round_trip_exactly_on_both_backends(store, project):
    log = pd.DataFrame({
        "prediction_id": ["p1", "p2", "p3"], "model_version": "v0",
        "features": [{"x0": 1.0}, {"x0": 2.0}, {"x0": 3.0}],
        "predicted_label": [3, 1, 2], "actual_label": [3.0, np.nan, 1.0],  # float64: an outcome column with a gap
        "confidence": 0.9, "evaluated_at": pd.Timestamp("2026-11-19", tz="UTC"),
    })
    store.insert_evaluations(log)
    emulated_resources(project)["store"].insert_evaluations(log.assign(prediction_id=["s1", "s2", "s3"]))
    with store.connect("test") as conn:
        rows = conn.execute("select prediction_id, predicted_label, actual_label, is_correct"
                            " from prediction_evaluations order by prediction_id").fetchall()
    assert rows == [("p1", "3", "3", True), ("p2", "1", None, None), ("p3", "2", "1", False),
                    ("s1", "3", "3", True), ("s2", "1", None, None), ("s3", "2", "1", False)]
