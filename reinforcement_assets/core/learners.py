"""Learners: the model family a refit starts from when there is no champion, or when a run names one.

A learner is a built-in name or an import path `package.module:factory` whose factory, called with
no argument, returns an unfitted scikit-learn classifier. Import paths run code, so they are taken
only from the environment (`REINFORCEMENT_LEARNER`) or the launchpad's run config, never from a
retraining request (any signed-in user can write one).
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

BUILT_IN_LEARNERS = ("sgd", "logistic_regression", "hist_gradient_boosting", "random_forest")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class InvalidLearner(ValueError):
    """A learner setting that names no usable learner; the message says why."""


def built_in(name: str, seed: int = 0) -> BaseEstimator:
    """An unfitted built-in learner; each takes a DataFrame with one column per feature."""
    # Imported here: settings check learner names when read, and should not pay for scikit-learn.
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "sgd":  # the loop's original model: scaling, then logistic regression by SGD
        return Pipeline([("scale", StandardScaler()), ("classify", SGDClassifier(
            loss="log_loss", alpha=1e-4, max_iter=200, tol=1e-4, learning_rate="constant", eta0=0.01,
            random_state=seed))])
    if name == "logistic_regression":
        return Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))])
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=1, random_state=seed)
    raise InvalidLearner(f"unknown learner {name!r}; built-in: {', '.join(BUILT_IN_LEARNERS)}")


def is_import_path(spec: str) -> bool:
    return ":" in spec


def check_learner(spec: str, *, allow_import_path: bool) -> str:
    """`spec` if it names a learner: a built-in name, or (only where allowed) an import path."""
    spec = spec.strip() if isinstance(spec, str) else spec
    if spec in BUILT_IN_LEARNERS:
        return spec
    if isinstance(spec, str) and is_import_path(spec):
        if not allow_import_path:
            raise InvalidLearner(f"learner {spec!r} is an import path: only the environment (REINFORCEMENT_LEARNER) "
                                 "or the launchpad's run config may name one; built-in: "
                                 f"{', '.join(BUILT_IN_LEARNERS)}")
        if not _IMPORT_PATH.match(spec):
            raise InvalidLearner(f"learner {spec!r} is not an import path of the form package.module:factory")
        return spec
    raise InvalidLearner(f"unknown learner {spec!r:.100}; built-in: {', '.join(BUILT_IN_LEARNERS)}, "
                         "or an import path package.module:factory")


def make_learner(spec: str, seed: int = 0) -> BaseEstimator:
    """The unfitted classifier `spec` names (import paths allowed: call only with trusted settings)."""
    spec = check_learner(spec, allow_import_path=True)
    if not is_import_path(spec):
        return built_in(spec, seed)
    module_name, _, attribute = spec.partition(":")
    try:
        target = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidLearner(f"learner {spec!r}: cannot import it ({type(exc).__name__}: {exc})") from None
    try:
        estimator = target()
    except Exception as exc:  # the factory is the user's code: say which setting broke
        raise InvalidLearner(f"learner {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not is_estimator_classifier(estimator):
        raise InvalidLearner(f"learner {spec!r} returned {type(estimator).__name__}, not a scikit-learn classifier")
    return estimator


def is_estimator_classifier(value: object) -> bool:
    """Whether `value` is a scikit-learn classifier instance (not a class, not anything without the API)."""
    from sklearn.base import is_classifier

    if isinstance(value, type) or not all(hasattr(value, m) for m in ("fit", "predict", "get_params")):
        return False
    try:
        return is_classifier(value)
    except (AttributeError, TypeError):
        return False
