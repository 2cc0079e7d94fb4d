"""Updates and refits of real scikit-learn models: every update path, with and without all classes."""

import warnings

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from reinforcement_assets.demo import accuracy, drift_scenario
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.model import (
    IncrementalPipeline,
    UpdateImpossible,
    grown_size,
    make_model,
    model_size,
    plain,
    refit,
    train_from_scratch,
    update,
    update_method,
    update_obstacle,
)

NAMES = [f"x{i}" for i in range(10)]


@pytest.fixture(scope="module")
def scenario():
    return drift_scenario(2_000, seed=3, train_rows=2_000, after_rows=1_500)


@pytest.fixture(scope="module")
def champion(scenario):
    return train_from_scratch(*scenario.train)


def fitted(estimator, scenario):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP's ConvergenceWarning on purpose-small data
        return train_from_scratch(*scenario.train, learner=estimator)


def test_the_default_model_is_a_plain_pipeline_and_learns_the_concept(scenario, champion):
    assert type(champion) is Pipeline and list(champion.feature_names_in_) == NAMES
    assert accuracy(champion, *scenario.train) > 0.85


def test_a_partial_fit_update_adapts_a_copy_and_leaves_the_champion_alone(scenario, champion):
    X_after, y_after = scenario.after
    before = champion[-1].coef_.copy()
    tuned, log = update(champion, X_after[:1000], y_after[:1000], NAMES, epochs=5, learning_rate=0.01, growth=0.25)
    np.testing.assert_array_equal(champion[-1].coef_, before)
    assert [e.epoch for e in log] == [1, 2, 3, 4, 5] and log[-1].loss < log[0].loss
    assert accuracy(tuned, X_after[1000:], y_after[1000:]) > accuracy(champion, X_after[1000:], y_after[1000:])


def test_the_update_budget_bounds_how_far_an_update_moves(scenario, champion):
    X, y = scenario.after
    assert champion[-1].learning_rate == "constant"  # the schedule under which eta0 is the step size
    small, _ = update(champion, X, y, NAMES, epochs=2, learning_rate=1e-4, growth=0.25)
    large, _ = update(champion, X, y, NAMES, epochs=2, learning_rate=1e-2, growth=0.25)
    moved = [np.abs(m[-1].coef_ - champion[-1].coef_).sum() for m in (small, large)]
    assert moved[0] < moved[1]


def test_the_learning_rate_sets_only_the_step_size_and_nothing_else_changes(scenario):
    X, y = scenario.after
    for model, step in [(fitted(make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)),
                                scenario), "eta0"),
                        (fitted(make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=50, random_state=0)),
                                scenario), "learning_rate_init")]:
        tuned, _ = update(model, X, y, NAMES, epochs=2, learning_rate=0.0123, growth=0.25)
        before, after = model[-1].get_params(), tuned[-1].get_params()
        if step == "learning_rate_init":  # the optimizer partial_fit used ran at that rate
            assert tuned[-1]._optimizer.learning_rate_init == 0.0123
        # The stored challenger keeps every hyperparameter the user chose, the step size too.
        assert after == before


@pytest.mark.parametrize("estimator", [SGDClassifier(loss="log_loss", random_state=0), SGDClassifier(random_state=0),
                                       MLPClassifier((16,), max_iter=50, random_state=0)],
                         ids=["sgd_log_loss", "sgd_hinge", "mlp"])
def test_partial_fit_updates_work_when_the_set_lacks_a_class(scenario, estimator):
    model = fitted(make_pipeline(StandardScaler(), estimator), scenario)
    X, y = scenario.after
    keep = y != "class_2"
    assert update_obstacle(model, y[keep], base_size=None, growth=0.25) is None
    tuned, log = update(model, X[keep], y[keep], NAMES, epochs=2, learning_rate=0.01, growth=0.25)
    assert list(tuned.classes_) == list(model.classes_) and len(log) == 2
    assert set(tuned.predict(X)) <= set(model.classes_)
    if not hasattr(estimator, "predict_proba"):  # hinge: the log records the error rate instead of log loss
        assert 0 <= log[-1].loss <= 1


@pytest.mark.parametrize("estimator, parameter", [
    (HistGradientBoostingClassifier(max_iter=20, random_state=0), "max_iter"),
    (RandomForestClassifier(n_estimators=8, random_state=0), "n_estimators"),
], ids=["hist_gradient_boosting", "random_forest"])
def test_warm_start_updates_grow_by_a_bounded_step_and_never_past_twice_the_registered_size(
        scenario, estimator, parameter):
    model = fitted(estimator, scenario)
    X, y = scenario.after
    assert update_method(model) == "warm_start" and model_size(model) == model.get_params()[parameter]
    base = model_size(model)
    sizes, current = [], model
    for _ in range(6):
        if update_obstacle(current, y, base_size=base, growth=0.25):
            break
        current, log = update(current, X, y, NAMES, epochs=5, learning_rate=0.5, growth=0.25, base_size=base)
        sizes.append(model_size(current))
    assert sizes[0] == base + round(0.25 * base) and sizes[-1] == 2 * base
    assert "twice its registered size" in update_obstacle(current, y, base_size=base, growth=0.25)
    with pytest.raises(UpdateImpossible, match="twice"):
        update(current, X, y, NAMES, epochs=1, learning_rate=0.01, growth=0.25, base_size=base)
    grown = current.estimators_ if parameter == "n_estimators" else range(current.n_iter_)
    assert len(grown) > base and not current.get_params()["warm_start"]  # the user's setting is restored
    assert model_size(model) == base  # the champion itself is untouched
    assert accuracy(current, X, y) > accuracy(model, X, y)


@pytest.mark.parametrize("estimator", [HistGradientBoostingClassifier(max_iter=10, random_state=0),
                                       RandomForestClassifier(n_estimators=5, random_state=0)],
                         ids=["hist_gradient_boosting", "random_forest"])
def test_warm_start_updates_refuse_a_set_missing_a_class_so_the_run_refits(scenario, estimator):
    model = fitted(estimator, scenario)
    X, y = scenario.after
    keep = y != "class_2"
    assert "lacks ['class_2']" in update_obstacle(model, y[keep], base_size=None, growth=0.25)
    assert update_obstacle(model, y[keep], base_size=None, growth=0.25, whole_set=False) is None  # errors only
    with pytest.raises(UpdateImpossible, match="needs every class"):
        update(model, X[keep], y[keep], NAMES, epochs=1, learning_rate=0.01, growth=0.25)
    refitted = refit(model, X, y, NAMES)
    assert type(refitted) is type(model) and refitted.get_params() == model.get_params()


def test_models_without_an_update_path_are_refit_with_their_own_hyperparameters(scenario):
    model = fitted(make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=500)), scenario)
    assert update_method(model) is None
    assert "neither partial_fit nor a warm_start continuation" in update_obstacle(model, ["class_0"], base_size=None, growth=0.25)
    X, y = scenario.after
    refitted = refit(model, X, y, NAMES)
    assert refitted is not model and refitted[-1].C == 0.3
    assert accuracy(refitted, X, y) > accuracy(model, X, y)


def test_an_mlp_with_early_stopping_has_no_partial_fit_so_it_is_refit(scenario):
    model = fitted(make_pipeline(StandardScaler(), MLPClassifier((8,), early_stopping=True, max_iter=30,
                                                                 random_state=0)), scenario)
    assert update_method(model) is None
    X, y = scenario.after
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refitted = refit(model, X, y, NAMES)
    assert refitted[-1].early_stopping and refitted[-1].hidden_layer_sizes == (8,)


def test_an_update_refuses_labels_the_model_never_saw(scenario, champion):
    X, _ = scenario.after
    with pytest.raises(UpdateImpossible, match="class_new"):
        update(champion, X[:3], np.array(["class_0", "class_new", "class_1"], dtype=object), NAMES,
               epochs=1, learning_rate=0.01, growth=0.25)


def test_an_int_labelled_model_is_updated_and_refit_from_text_labels(scenario):
    X, y = scenario.train
    ints = np.array([int(label[-1]) for label in y])
    model = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)).fit(X, ints)
    X_after, y_after = scenario.after
    text = np.array([label[-1] + ".0" for label in y_after], dtype=object)  # as a float column once stored them
    tuned, _ = update(model, X_after, text, NAMES, epochs=2, learning_rate=0.01, growth=0.25)
    assert tuned.classes_.dtype.kind == "i" and set(tuned.predict(X_after)) <= {0, 1, 2}
    refitted = refit(model, X_after, text, NAMES, kind="int")
    assert refitted.classes_.tolist() == [0, 1, 2]


def test_an_earlier_versions_champion_becomes_a_plain_pipeline(scenario):
    X, y = scenario.train
    legacy = IncrementalPipeline([("scale", StandardScaler()),
                                  ("classify", SGDClassifier(loss="log_loss", random_state=0))]).fit(X, y)
    converted = plain(legacy)
    assert type(converted) is Pipeline and converted[-1].learning_rate == "constant"
    np.testing.assert_array_equal(converted.predict(X), legacy.predict(X))
    tuned, _ = update(legacy, *scenario.after, NAMES, epochs=1, learning_rate=0.01, growth=0.25)
    assert type(tuned) is Pipeline


def test_grown_size_adds_at_least_one_and_stops_at_twice_the_base():
    assert grown_size(100, 100, 0.25) == 125 and grown_size(190, 100, 0.25) == 200
    assert grown_size(200, 100, 0.25) is None and grown_size(3, 3, 0.01) == 4


def test_a_refit_needs_two_classes(scenario):
    X, _ = scenario.train
    with pytest.raises(ValueError, match="two classes"):
        train_from_scratch(X[:10], np.array(["a"] * 10, dtype=object))
    assert make_model(FeatureSchema.numeric(["x0"]))[-1].learning_rate == "constant"


def test_an_update_goes_through_the_transformers_of_a_nested_pipeline(scenario):
    from sklearn.preprocessing import PolynomialFeatures

    inner = Pipeline([("poly", PolynomialFeatures(2)), ("sgd", SGDClassifier(loss="log_loss", random_state=0))])
    model = fitted(Pipeline([("scale", StandardScaler()), ("inner", inner)]), scenario)
    X, y = scenario.after
    tuned, _ = update(model, X, y, NAMES, epochs=1, learning_rate=0.01, growth=0.25)
    assert tuned[-1][-1].coef_.shape == model[-1][-1].coef_.shape  # fed the 66 polynomial columns
    assert not np.array_equal(tuned[-1][-1].coef_, model[-1][-1].coef_)


def test_a_bagging_model_with_an_out_of_bag_score_is_refit_not_updated(scenario):
    from sklearn.ensemble import BaggingClassifier

    model = fitted(BaggingClassifier(n_estimators=4, oob_score=True, random_state=0), scenario)
    assert "oob_score=True cannot be continued" in update_obstacle(model, scenario.after[1], base_size=4,
                                                                   growth=0.25)


def test_a_refit_of_a_categorical_hgb_keeps_its_most_frequent_values_when_there_are_too_many():
    import pandas as pd

    from reinforcement_assets.model import refit

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"city": pd.Series([f"c{i}" for i in rng.integers(0, 1_000, 4_000)], dtype=object),
                      "x": rng.normal(size=4_000)})
    y = np.where(X["x"] > 0, "a", "b")
    template = HistGradientBoostingClassifier(max_iter=10, categorical_features="from_dtype")
    model = refit(template, X, y, ["city", "x"])  # 1,000 values: more than its 255 bins
    assert model.is_categorical_.tolist() == [True, False]
    assert np.mean(model.predict(X) == y) > 0.95  # served text (object) predicts too
    # A window bringing 2,000 new values (pandas' own str dtype): refit (never warm-started), bucketed too.
    fresh = X.assign(city=[f"new{i}" for i in rng.integers(0, 2_000, 4_000)])
    refitted = refit(model, fresh, y, ["city", "x"])
    assert refitted.is_categorical_.tolist() == [True, False] and np.mean(refitted.predict(fresh) == y) > 0.95


def test_only_encoders_of_text_declare_a_feature_categorical():
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    from reinforcement_assets.model import declared_categorical

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=300), "flag": rng.random(300) < 0.5, "code": rng.integers(0, 3, 300),
                      "city": pd.Series(rng.choice(["a", "b"], 300), dtype=object)})
    y = rng.choice(["p", "q"], 300)
    encoded = Pipeline([("columns", ColumnTransformer([("one_hot", OneHotEncoder(), ["flag", "code", "city"])],
                                                      remainder="passthrough")),
                        ("classify", HistGradientBoostingClassifier(max_iter=3))]).fit(X, y)
    assert declared_categorical(encoded) == {"city"}  # flags and integer codes stay flags and numbers
    codes = HistGradientBoostingClassifier(max_iter=3, categorical_features=["code"]).fit(X[["x", "code"]], y)
    assert declared_categorical(codes) == set()
    categories = X.assign(city=X["city"].astype("category"), code=X["code"].astype("category"))
    from_dtype = HistGradientBoostingClassifier(max_iter=3, categorical_features="from_dtype")
    assert declared_categorical(from_dtype.fit(categories[["x", "code", "city"]], y)) == {"city"}


def test_a_boosting_model_with_categorical_features_is_never_warm_started():
    """Its warm-start fit re-encodes categories on the new rows: its trees would read other categories."""
    from reinforcement_assets.core.features import FeatureSchema, feature_frame
    from reinforcement_assets.core.learners import built_in
    from reinforcement_assets.model import update_obstacle

    schema = FeatureSchema.of({"c": "categorical", "x": "numeric"}, accepts_missing=True)
    rng = np.random.default_rng(0)
    rows = [{"c": str(rng.choice(list("ABCDE"))), "x": float(rng.normal())} for _ in range(500)]
    y = np.array(["yes" if r["c"] in "AC" else "no" for r in rows], dtype=object)
    model = built_in("hist_gradient_boosting", schema).fit(feature_frame(rows, schema), y)
    assert "re-encodes them in a warm-start fit" in update_obstacle(model, list(y), base_size=100, growth=0.5)
    numeric = built_in("hist_gradient_boosting", FeatureSchema.numeric(["x"])).fit(feature_frame(rows, schema)[["x"]], y)
    assert update_obstacle(numeric, list(y), base_size=100, growth=0.5) is None


def test_an_array_fitted_encoder_declares_its_text_columns_by_the_registered_names():
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    from reinforcement_assets.core.cycle import describe_model

    X = np.array([[1.0, "a"], [2.0, "b"], [3.0, "a"], [4.0, "b"]], dtype=object)
    model = Pipeline([("columns", ColumnTransformer([("text", OneHotEncoder(), [1])], remainder="passthrough")),
                      ("classify", LogisticRegression())]).fit(X, [0, 1, 0, 1])
    assert describe_model(model, ["amount", "country"]).schema.kinds == {"amount": None, "country": "categorical"}
