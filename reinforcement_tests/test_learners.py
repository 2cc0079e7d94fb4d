"""The learner setting: built-in names, import paths from trusted settings only."""

import os
import subprocess
import sys

import pytest
from sklearn.base import is_classifier
from sklearn.ensemble import ExtraTreesClassifier

from reinforcement_assets.core.learners import BUILT_IN_LEARNERS, InvalidLearner, check_learner, make_learner
from reinforcement_assets.defs.request_queue import InvalidRequest, parse_options, run_config


@pytest.mark.parametrize("name", BUILT_IN_LEARNERS)
def test_every_built_in_learner_is_an_unfitted_classifier(name):
    learner = make_learner(name, seed=3)
    assert is_classifier(learner) and not hasattr(learner, "classes_")


def test_an_import_path_names_a_factory():
    learner = make_learner("reinforcement_tests.learner_factories:extra_trees")
    assert isinstance(learner, ExtraTreesClassifier)
    with pytest.raises(InvalidLearner, match="not a scikit-learn classifier"):
        make_learner("reinforcement_tests.learner_factories:regressor")
    with pytest.raises(InvalidLearner, match="cannot import"):
        make_learner("reinforcement_tests.no_such_module:factory")
    with pytest.raises(InvalidLearner, match="unknown learner 'xgboost'"):
        make_learner("xgboost")


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
        make_learner(f"reinforcement_tests.learner_factories:{factory}")


def test_the_learner_setting_is_checked_when_read():
    done = subprocess.run([sys.executable, "-c", "import reinforcement_assets.settings"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "REINFORCEMENT_LEARNER": "nope"})
    assert done.returncode != 0 and "REINFORCEMENT_LEARNER='nope' is not a valid str: unknown learner" in done.stderr
