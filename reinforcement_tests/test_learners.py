"""The learner setting: built-in names, import paths from trusted settings only."""

import os
import subprocess
import sys

import pytest
from sklearn.base import is_classifier
from sklearn.ensemble import ExtraTreesClassifier

import numpy as np

from reinforcement_assets.core.features import FeatureSchema, feature_frame
from reinforcement_assets.core.learners import (
    BUILT_IN_LEARNERS,
    MAX_CATEGORIES,
    InvalidLearner,
    check_learner,
    learner_accepts_missing,
    make_learner,
)
from reinforcement_assets.model import accepts_missing, declared_categorical
from reinforcement_assets.defs.request_queue import InvalidRequest, parse_options, run_config


SCHEMA = FeatureSchema.of({"country": "categorical", "city": "categorical", "x": "numeric", "flag": "boolean"},
                          accepts_missing=True)


def mixed_rows(n: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Rows as logged: a 4-value and a 1,000-value categorical (more than HGB's 255), a number, a flag,
    each missing (null) one time in ten; the label depends on all three kinds."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for _ in range(n):
        row = {"country": str(rng.choice(["US", "FR", "DE", ""])), "city": f"c{rng.integers(1000)}",
               "x": float(rng.normal()), "flag": bool(rng.random() < 0.5)}
        labels.append("a" if row["country"] == "US" or row["x"] > 1 or (row["flag"] and row["country"] == "") else "b")
        for key in row:
            if rng.random() < 0.1:
                row[key] = None
        rows.append(row)
    return rows, np.array(labels, dtype=object)


@pytest.mark.parametrize("name", BUILT_IN_LEARNERS)
def test_every_built_in_learner_is_an_unfitted_classifier(name):
    learner = make_learner(name, SCHEMA, seed=3)
    assert is_classifier(learner) and not hasattr(learner, "classes_")


@pytest.mark.parametrize("name", BUILT_IN_LEARNERS)
def test_every_built_in_learner_takes_categoricals_flags_and_missing_values(name):
    rows, y = mixed_rows(3_000)
    X = feature_frame(rows, SCHEMA)
    model = make_learner(name, SCHEMA).fit(X[:2_500], y[:2_500])
    assert np.mean(model.predict(X[2_500:]) == y[2_500:]) > 0.8
    assert accepts_missing(model, SCHEMA) and learner_accepts_missing(name)
    # Categories never seen, and a feature with 1,000 values (rare ones bucketed): predicted, never a failure.
    unseen = feature_frame([{"country": "JP", "city": "nowhere", "x": 0.0, "flag": False}], SCHEMA)
    assert model.predict(unseen).tolist()[0] in ("a", "b")
    assert declared_categorical(model) == {"country", "city"}  # the flag is encoded, but as a flag


def test_hgb_buckets_rare_categories_to_its_limit():
    rows, y = mixed_rows(2_000, seed=1)
    model = make_learner("hist_gradient_boosting", SCHEMA).fit(feature_frame(rows, SCHEMA), y)
    encoder = model.named_steps["prepare"].named_transformers_["encoded"]
    city = list(encoder.feature_names_in_).index("city")
    assert len(encoder.categories_[city]) > MAX_CATEGORIES  # seen
    assert len(encoder.infrequent_categories_[city]) > 0    # but the rarest share one code


def test_an_import_path_names_a_factory():
    learner = make_learner("reinforcement_tests.learner_factories:extra_trees", SCHEMA)
    assert isinstance(learner, ExtraTreesClassifier)
    assert learner_accepts_missing("reinforcement_tests.learner_factories:extra_trees")  # its tags say so
    with pytest.raises(InvalidLearner, match="not a scikit-learn classifier"):
        make_learner("reinforcement_tests.learner_factories:regressor", SCHEMA)
    with pytest.raises(InvalidLearner, match="cannot import"):
        make_learner("reinforcement_tests.no_such_module:factory", SCHEMA)
    with pytest.raises(InvalidLearner, match="unknown learner 'xgboost'"):
        make_learner("xgboost", SCHEMA)


def test_requests_may_name_a_built_in_learner_but_never_an_import_path():
    options = parse_options({"learner": "random_forest"})
    assert run_config(options) == {"ops": {"retrained_model": {"config": {"learner": "random_forest"}}}}
    with pytest.raises(InvalidRequest, match="import path: only the environment"):
        parse_options({"learner": "os:system"})
    with pytest.raises(InvalidRequest, match="unknown learner"):
        parse_options({"learner": "gpt"})
    with pytest.raises(InvalidRequest, match="must be a learner name"):
        parse_options({"learner": ["sgd"]})
    assert check_learner("os.path:join", allow_import_path=True) == "os.path:join"  # the launchpad may


@pytest.mark.parametrize("factory, message", [
    ("nothing", "returned NoneType, not a scikit-learn classifier"),
    ("a_class", "returned ABCMeta, not a scikit-learn classifier"),
    ("broken", "raised RuntimeError: the feature store is down"),
])
def test_a_factory_that_gives_no_classifier_is_a_clear_learner_error(factory, message):
    with pytest.raises(InvalidLearner, match=message):
        make_learner(f"reinforcement_tests.learner_factories:{factory}", SCHEMA)


def test_the_learner_setting_is_checked_when_read():
    done = subprocess.run([sys.executable, "-c", "import reinforcement_assets.settings"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "REINFORCEMENT_LEARNER": "nope"})
    assert done.returncode != 0 and "REINFORCEMENT_LEARNER='nope' is not a valid str: unknown learner" in done.stderr
