"""The cycle core: pure decisions, no Dagster and no backend."""

import json
import subprocess
import sys
import warnings
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reinforcement_assets.core.cycle import (
    NotAClassifier,
    baseline_predictions,
    challenger_record,
    confirm_plan,
    describe_model,
    errors_it_still_makes,
    TrainingPlan,
    holdout_truth,
    labels_set_aside,
    plan_of_dataset,
    plan_training,
    refit_skip_reason,
    train_challenger,
    training_log,
    version_name,
)
from reinforcement_assets.core.race import (
    candidate_versions,
    judge_race,
    race_plans,
    settle_promotion,
    train_race,
)
from reinforcement_assets.core.dataset import finetune_frame
from reinforcement_assets.core.evaluation import compare_paired, decide_race
from reinforcement_assets.core.labels import typed_labels
from reinforcement_assets.core.records import ModelVersion
from reinforcement_assets.demo import drift_scenario
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.model import EpochLog, train_from_scratch

NAMES = tuple(f"x{i}" for i in range(10))
SCHEMA = FeatureSchema.numeric(NAMES)


def test_the_core_imports_neither_dagster_nor_a_backend():
    core = ", ".join(f"reinforcement_assets.core.{m}" for m in ("cycle", "race", "evaluation", "metrics", "records", "rows", "dataset", "decay",
                                                               "drift_data"))
    code = (f"import sys, {core};"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'psycopg', 'supabase', 'httpx')"
            " or m.startswith(('reinforcement_assets.backends', 'reinforcement_assets.defs'))];"
            "print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def scenario():
    return drift_scenario(1_500, seed=4, train_rows=1_500, after_rows=500)


def record(model, version="v0", base_size=None) -> ModelVersion:
    return ModelVersion(version=version, artifact_path=f"models/{version}.joblib", sha256="0" * 64,
                        feature_names=NAMES, classes=tuple(model.classes_), base_size=base_size)


def plan(champion, model, errors, **kwargs):
    settings = {"from_scratch": False, "named_learner": None, "default_learner": "sgd", "growth": 0.25}
    return plan_training(champion, model, errors, **{**settings, **kwargs})


def test_the_training_mode_follows_the_champion_the_labels_and_the_run(scenario):
    sgd = train_from_scratch(*scenario.train)
    champion = record(sgd)
    errors = ["class_0", "class_1"]
    assert plan(champion, sgd, errors).update
    assert "by partial_fit" in plan(champion, sgd, errors).reason
    first = plan(None, None, errors)
    assert (first.update, first.learner) == (False, "sgd") and "no champion yet" in first.reason
    read_back = plan_of_dataset(False, None, named_learner=None, default_learner="sgd")
    assert (read_back.update, read_back.learner) == (first.update, first.learner)
    named = plan(champion, sgd, errors, named_learner="random_forest")
    assert not named.update and named.learner == "random_forest" and "names" in named.reason
    scratch = plan(champion, sgd, errors, from_scratch=True)
    assert not scratch.update and scratch.learner is None and "as asked" in scratch.reason
    new = plan(champion, sgd, ["class_0", "class_9"])
    assert not new.update and "class_9" in new.reason and new.learner is None
    logistic = make_pipeline(StandardScaler(), LogisticRegression()).fit(*scenario.train)
    assert "neither partial_fit nor a warm_start continuation" in plan(record(logistic), logistic, errors).reason


def test_a_warm_start_plan_is_confirmed_on_the_whole_set(scenario):
    hgb = HistGradientBoostingClassifier(max_iter=10).fit(*scenario.train)
    champion = record(hgb, base_size=10)
    planned = plan(champion, hgb, ["class_0"])  # the errors alone lack classes: fine at this point
    assert planned.update
    assert confirm_plan(planned, champion, hgb, ["class_0", "class_1", "class_2"], 0.25).update
    refit = confirm_plan(planned, champion, hgb, ["class_0", "class_1"], 0.25)
    assert not refit.update and "lacks ['class_2']" in refit.reason
    full = record(hgb, base_size=5)  # already twice its registered size
    assert "twice its registered size" in plan(full, hgb, ["class_0"]).reason


def test_a_challenger_keeps_the_family_and_its_record_says_how_it_was_made(scenario):
    X, y = scenario.after
    hgb = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(*scenario.train)
    champion = record(hgb, base_size=10)
    planned = plan(champion, hgb, list(y))
    model, log = train_challenger(planned, champion, hgb, X, y, SCHEMA, epochs=5, learning_rate=0.01, growth=0.5)
    assert type(model) is HistGradientBoostingClassifier and model.max_iter == 15 and len(log) == 1
    made = challenger_record(model, planned, champion, version="v1", artifact_path="models/v1.joblib",
                             sha256="1" * 64, schema=SCHEMA, training_run_id=None)
    assert (made.parent_version, made.fine_tuned, made.base_size, made.class_type) == ("v0", True, 10, "str")
    refit_plan = plan(champion, hgb, list(y), from_scratch=True)
    refitted, _ = train_challenger(refit_plan, champion, hgb, X, y, SCHEMA, epochs=5, learning_rate=0.01, growth=0.5)
    made = challenger_record(refitted, refit_plan, champion, version="v2", artifact_path="models/v2.joblib",
                             sha256="2" * 64, schema=SCHEMA, training_run_id=None)
    assert type(refitted) is HistGradientBoostingClassifier and refitted.max_iter == 10
    assert (made.parent_version, made.fine_tuned, made.base_size) == (None, False, 10)


def test_a_refit_of_a_grown_champion_starts_again_from_its_registered_size(scenario):
    X, y = scenario.after
    grown = RandomForestClassifier(n_estimators=16, random_state=0).fit(*scenario.train)  # 8 registered, updated
    champion = record(grown, base_size=8)
    refit_plan = plan(champion, grown, list(y), from_scratch=True)
    refitted, _ = train_challenger(refit_plan, champion, grown, X, y, SCHEMA, epochs=1, learning_rate=0.01,
                                   growth=1.0)
    made = challenger_record(refitted, refit_plan, champion, version="v1", artifact_path="models/v1.joblib",
                             sha256="1" * 64, schema=SCHEMA, training_run_id=None)
    assert refitted.n_estimators == 8 and made.base_size == 8  # the 2x bound cannot creep up refit by refit
    assert grown.n_estimators == 16


def test_a_refit_keeps_an_integer_champions_class_type_and_sets_other_labels_aside(scenario):
    X, y = scenario.after
    ints = np.array([v[-1] for v in y], dtype=object)
    ints[:25] = "unknown"  # a label the service never predicts, logged by mistake
    champion_model = HistGradientBoostingClassifier(max_iter=5).fit(scenario.train[0],
                                                                    [int(v[-1]) for v in scenario.train[1]])
    champion = record(champion_model)
    refit_plan = plan(champion, champion_model, list(ints), from_scratch=True)
    assert labels_set_aside(champion_model, ints) == 25
    refitted, _ = train_challenger(refit_plan, champion, champion_model, X, ints, SCHEMA, epochs=1,
                                   learning_rate=0.01, growth=0.25)
    assert refitted.classes_.tolist() == [0, 1, 2]


def test_with_no_champion_the_baseline_is_what_the_deployed_model_predicted(scenario):
    holdout = pd.DataFrame({"predicted_label": ["1", "2.0", "2"], "actual_label": ["1", "2", "3"],
                            **{n: [0.0, 0.0, 0.0] for n in NAMES}})
    predictions, note = baseline_predictions(None, None, holdout, "int")
    assert predictions.tolist() == ["1", "2", "2"] and note.startswith("no champion")
    assert holdout_truth(holdout, "int").tolist() == ["1", "2", "3"]


def test_a_lost_compare_and_swap_is_not_a_promotion():
    comparison = compare_paired(["a"] * 40, ["b"] * 40, ["a"] * 40, metric="accuracy", margin=0.0,
                                significance_level=0.05)
    decision = decide_race({"update": comparison}, metric="accuracy", significance_level=0.05, margin=0.0)
    assert decision.promote and decision.winner == "update"
    winner = ModelVersion(version="other", artifact_path="x", sha256="0" * 64, feature_names=(), classes=())
    lost = settle_promotion(decision, winner, "mine")
    assert not lost.promote and "the champion changed to other" in lost.reason and decision.reason in lost.reason
    assert not lost.standing("update").won and "the champion changed to other" in lost.standing("update").reason
    assert settle_promotion(decision, None, "mine").reason.startswith("not promoted: the champion changed to none")
    mine = ModelVersion(version="mine", artifact_path="x", sha256="0" * 64, feature_names=(), classes=())
    assert settle_promotion(decision, mine, "mine") == decision


def test_version_names_and_the_training_log():
    when = datetime(2026, 12, 1, 2, 3, 4, tzinfo=timezone.utc)
    assert version_name(when, "5975a3a2-aaaa") == "20261201-020304-5975a3a2"
    plans = [TrainingPlan(True, ""), TrainingPlan(False, "", "my_pkg.models:Make_Tree"),
             TrainingPlan(False, "", "my.pkg.models:make_tree")]
    assert candidate_versions(when, "5975a3a2-aaaa", plans) == [
        "20261201-020304-5975a3a2-update", "20261201-020304-5975a3a2-my-pkg-models-make-tree",
        "20261201-020304-5975a3a2-my-pkg-models-make-tree-2"]
    text = training_log({"version": "v1", "mode": "update"}, [EpochLog(1, 0.5, 0.1), EpochLog(2, 0.4, 0.1)])
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0] == {"version": "v1", "mode": "update"} and [line["epoch"] for line in lines[1:]] == [1, 2]


def test_describe_model_refuses_what_is_not_a_fitted_classifier_with_feature_names(scenario):
    X, y = scenario.train
    with pytest.raises(NotAClassifier, match="not a scikit-learn classifier"):
        describe_model(RandomForestRegressor(n_estimators=2).fit(X, np.arange(len(X))))
    with pytest.raises(NotAClassifier, match="not fitted"):
        describe_model(LogisticRegression())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bare = LogisticRegression(max_iter=500).fit(X.to_numpy(), y)
    with pytest.raises(NotAClassifier, match="without feature names"):
        describe_model(bare)
    with pytest.raises(NotAClassifier, match="takes 10 features, but 2"):
        describe_model(bare, ["a", "b"])
    assert describe_model(bare, list(NAMES)).feature_names == NAMES
    named = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    with pytest.raises(NotAClassifier, match="differ"):
        describe_model(named, ["a"] * 10)
    described = describe_model(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y == "class_1"))
    assert (described.classes, described.class_type, described.base_size) == (("False", "True"), "bool", None)


def test_candidates_are_judged_on_the_holdout_against_the_champion(scenario):
    X, y = scenario.after
    holdout = X.assign(actual_label=y, predicted_label=y)
    old = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(*scenario.train)
    new = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)  # fitted on these very rows
    same = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(*scenario.train)
    verdict = judge_race([("refit", new), ("twin", same)], SCHEMA, old, SCHEMA, holdout, metric="accuracy",
                         significance_level=0.05, margin=0.0, failures={"broken": "ValueError: bad"})
    assert verdict.scores["refit"]["accuracy"] > verdict.champion["accuracy"] and verdict.decision.winner == "refit"
    assert verdict.decision.standing("refit").comparison.holdout_rows == len(holdout)
    assert "nothing to gain" in verdict.decision.standing("twin").reason
    assert verdict.decision.standing("broken").reason == "refused: not trained (ValueError: bad)"
    for metric in ("balanced_accuracy", "macro_f1"):
        other = judge_race([("refit", new)], SCHEMA, old, SCHEMA, holdout, metric=metric, significance_level=0.05,
                           margin=0.0)
        assert other.decision.winner == "refit" and other.decision.standing("refit").comparison.test == "paired_bootstrap"
    # With no champion, the baseline is what was deployed: here it predicted every row right.
    first = judge_race([("sgd", new)], SCHEMA, None, None, holdout, metric="accuracy", significance_level=0.05,
                       margin=0.0)
    assert first.champion["accuracy"] == 1.0 and not first.decision.promote


def test_a_candidate_that_cannot_predict_loses_and_the_race_goes_on(scenario):
    X, y = scenario.after
    holdout = X.assign(actual_label=y, predicted_label=y)
    good = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)

    class Refuses(LogisticRegression):
        def predict(self, X):
            raise RuntimeError("the feature service is down")

    narrow = Refuses(max_iter=1000).fit(X, y)
    old = HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(*scenario.train)
    verdict = judge_race([("narrow", narrow), ("refit", good)], SCHEMA, old, SCHEMA, holdout, metric="accuracy",
                         significance_level=0.05, margin=0.0)
    assert verdict.decision.winner == "refit"
    assert verdict.decision.standing("narrow").reason.startswith("refused: cannot predict the holdout (")


def test_the_race_holds_the_update_the_familys_refit_and_each_challenger_once(scenario):
    X, y = scenario.train
    sgd = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    champion = record(sgd)
    update = TrainingPlan(True, "update")
    plans = race_plans(update, champion, ["hist_gradient_boosting", "random_forest", "hist_gradient_boosting"])
    assert [p.name for p in plans] == ["update", "refit", "hist_gradient_boosting", "random_forest"]
    assert [p.name for p in race_plans(TrainingPlan(False, "no champion", "sgd"), None, ["sgd", "random_forest"])] \
        == ["sgd", "random_forest"]
    # Each candidate trains on its own rows: the update on errors and replay, refits on the window sample.
    rows = X.assign(id=range(len(X)), prediction_id="p", evaluated_at=pd.Timestamp("2026-11-01", tz="UTC"),
                    predicted_label=y, actual_label=y, confidence=0.9)
    dataset = finetune_frame(rows.iloc[:40], rows.iloc[40:80], rows.iloc[-200:], window_sample=rows.iloc[:-200])
    failing = TrainingPlan(False, "a factory that raises", "reinforcement_tests.learner_factories:broken")
    trained = train_race([*plans[:2], failing], champion, sgd, dataset, SCHEMA, epochs=2, learning_rate=0.01,
                         growth=0.25)
    assert [t.train_rows for t in trained] == [80, len(X) - 200, len(X) - 200]
    assert trained[0].model is not sgd and trained[0].epochs and trained[1].model is not None
    assert trained[2].model is None and trained[2].error


def test_labels_not_of_the_champions_type_are_set_aside_alike_for_plans_skips_and_training(scenario):
    X, y = scenario.after
    ints = [int(v[-1]) for v in scenario.train[1]]
    sgd = SGDClassifier(loss="log_loss", random_state=0).fit(scenario.train[0], ints)
    champion = record(sgd)
    errors = [v[-1] for v in y[:60]] + ["unknown"]  # one stray label does not rule the update out
    assert plan(champion, sgd, errors).update
    # '1' and '1.0' are one class of an int model: a refit on them has nothing to learn.
    one_class = ["1"] * 30 + ["1.0"] * 30 + ["unknown"] * 2
    refit_plan = plan(champion, sgd, one_class, from_scratch=True)
    assert refit_skip_reason(refit_plan, sgd, one_class) == (
        "skipped: a refit needs at least two classes, and the window's training rows have only '1'")
    labels = np.array([v[-1] for v in y], dtype=object)
    labels[:5] = "unknown"
    updated, _ = train_challenger(plan(champion, sgd, list(labels)), champion, sgd, X, labels, SCHEMA, epochs=1,
                                  learning_rate=0.01, growth=0.25)
    assert updated.classes_.tolist() == [0, 1, 2]


def test_int_labels_read_exactly_past_two_to_the_53():
    assert typed_labels(["9007199254740993", "-3", "+4", "5.0"], "int").tolist() == [9007199254740993, -3, 4, 5]


def test_a_new_model_leaves_out_keys_named_like_row_columns():
    from reinforcement_assets.core.cycle import new_model_schema
    from reinforcement_assets.core.features import TypeSetCount

    schema = new_model_schema([TypeSetCount({"id": "number", "label": "string", "x": "number", "c": "string"}, 9)],
                              "sgd")
    assert schema.kinds == {"c": "categorical", "x": "numeric"} and schema.accepts_missing is True


def test_missing_values_are_probed_only_once_every_kind_is_known():
    from sklearn.impute import SimpleImputer

    X = pd.DataFrame({"x": np.arange(40.0), "y": np.arange(40.0) % 3})
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(X, np.arange(40) % 2)
    assert describe_model(model).schema.accepts_missing is None  # kinds come from the log first
    assert describe_model(model, categorical=[]).schema.kinds == {"x": None, "y": None}


def test_errors_of_earlier_versions_count_only_where_the_champion_still_makes_them(scenario):
    X, y = scenario.after
    rows = X.assign(id=range(len(X)), prediction_id="p", evaluated_at=pd.Timestamp("2026-11-01", tz="UTC"),
                    predicted_label="class_0", actual_label=y, confidence=0.99)  # logged: all "class_0"
    champion = LogisticRegression(max_iter=1000).fit(*scenario.train)
    errors, note = errors_it_still_makes(champion, SCHEMA, rows, threshold=0.7)
    predicted = champion.predict(X)
    proba = champion.predict_proba(X).max(axis=1)
    expected = (predicted != y) & (proba > 0.7)
    assert note is None and errors["id"].tolist() == rows["id"][expected].tolist()
    assert (errors["predicted_label"] == predicted[expected]).all() and np.allclose(errors["confidence"], proba[expected])
    # A champion with no probabilities (hinge loss) cannot say how confident it is: no earlier rows used.
    hinge = SGDClassifier(loss="hinge", random_state=0).fit(*scenario.train)
    none, note = errors_it_still_makes(hinge, SCHEMA, rows, threshold=0.7)
    assert none.empty and "cannot score earlier rows by predict_proba (AttributeError)" in note


def test_a_champion_with_a_tuned_threshold_is_judged_on_what_it_predicts(scenario):
    from sklearn.model_selection import FixedThresholdClassifier

    X, y = scenario.after
    binary = np.where(y == "class_0", "class_0", "other").astype(object)
    champion = FixedThresholdClassifier(LogisticRegression(max_iter=1000), threshold=0.9).fit(
        scenario.train[0], np.where(scenario.train[1] == "class_0", "class_0", "other"))
    rows = X.assign(id=range(len(X)), prediction_id="p", evaluated_at=pd.Timestamp("2026-11-01", tz="UTC"),
                    predicted_label="class_0", actual_label=binary, confidence=0.99)
    errors, _ = errors_it_still_makes(champion, SCHEMA, rows, threshold=0.5)
    predicted = champion.predict(X)  # not the most probable class: the threshold is 0.9
    assert (predicted != champion.classes_[champion.predict_proba(X).argmax(axis=1)]).any()
    wrong = set(rows["id"][predicted != binary])
    assert set(errors["id"]) <= wrong and (errors["predicted_label"] == predicted[errors["id"]]).all()
