"""Learners: the model family a refit starts from when there is no champion, or when a run names one.

A learner is a built-in name or an import path `package.module:factory` whose factory, called with
no argument, returns an unfitted scikit-learn classifier. Import paths run code, so they are taken
only from the environment (`REINFORCEMENT_LEARNER`) or the launchpad's run config, never from a
retraining request (any signed-in user can write one).
"""

from __future__ import annotations

import importlib
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .features import FeatureSchema

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

BUILT_IN_LEARNERS = ("sgd", "logistic_regression", "hist_gradient_boosting", "random_forest")
# The most categories a built-in learner keeps per feature; rarer values share one bucket. HGB takes
# at most 255 (its `max_bins`), the infrequent bucket included.
MAX_CATEGORIES = 255
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


class InvalidLearner(ValueError):
    """A learner setting that names no usable learner; the message says why."""


def built_in(name: str, schema: FeatureSchema, seed: int = 0) -> BaseEstimator:
    """An unfitted built-in learner for the features of `schema`, taking a frame in the dtypes of
    `features.typed_column`. Every built-in accepts missing values: numeric ones are imputed (linear
    learners) or handled natively (trees); a missing category or flag is a value of its own for
    linear learners, NaN for trees."""
    # Imported here: settings check learner names when read, and should not pay for scikit-learn.
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    if name == "sgd":  # the loop's original model: scaling, then logistic regression by SGD
        return _linear(schema, SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=200, tol=1e-4,
                                             learning_rate="constant", eta0=0.01, random_state=seed))
    if name == "logistic_regression":
        return _linear(schema, LogisticRegression(max_iter=1000))
    if name == "hist_gradient_boosting":
        # The encoded columns come first out of `_columns`: their positions are the categorical ones.
        return _trees(schema, HistGradientBoostingClassifier(
            max_iter=100, random_state=seed, categorical_features=list(range(len(_encoded(schema)))) or None))
    if name == "random_forest":
        return _trees(schema, RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=1,
                                                     random_state=seed))
    raise InvalidLearner(f"unknown learner {name!r}; built-in: {', '.join(BUILT_IN_LEARNERS)}")


def _linear(schema: FeatureSchema, estimator: BaseEstimator) -> BaseEstimator:
    """Numeric features imputed and scaled, categorical and boolean ones one-hot encoded (unknown
    values ignored, the rarest bucketed beyond `MAX_CATEGORIES`), then `estimator`."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler())])
    one_hot = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES)
    return Pipeline([("prepare", _columns(schema, encoded=one_hot, numeric=numeric)), ("classify", estimator)])


def _trees(schema: FeatureSchema, estimator: BaseEstimator) -> BaseEstimator:
    """Categorical and boolean features ordinal-encoded first (unknown and missing values as NaN, the
    rarest bucketed so that at most `MAX_CATEGORIES` remain: HGB's limit), numeric ones as they are."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                             encoded_missing_value=np.nan, max_categories=MAX_CATEGORIES)
    return Pipeline([("prepare", _columns(schema, encoded=ordinal, numeric="passthrough")), ("classify", estimator)])


def _columns(schema: FeatureSchema, *, encoded: Any, numeric: Any) -> BaseEstimator:
    from sklearn.compose import ColumnTransformer

    parts = [("encoded", encoded, _encoded(schema)),
             ("numeric", numeric, [f.name for f in schema.features if f.kind not in ("categorical", "boolean")])]
    return ColumnTransformer([part for part in parts if part[2]], remainder="drop")


def _encoded(schema: FeatureSchema) -> list[str]:
    """The features a built-in encodes (text and flags), in the order `_columns` puts them first."""
    return schema.names_of("categorical") + schema.names_of("boolean")


def frame_schema(X: pd.DataFrame) -> FeatureSchema:
    """The schema of a frame's columns by dtype (object or category: categorical; bool: boolean)."""
    def kind(column: pd.Series) -> str:
        values = column.dropna()
        if column.dtype == bool or (column.dtype == object and len(values) and values.map(type).eq(bool).all()):
            return "boolean"
        return "numeric" if pd.api.types.is_numeric_dtype(column) else "categorical"
    return FeatureSchema.of({str(name): kind(X[name]) for name in X.columns}, accepts_missing=True)


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


def make_learner(spec: str, schema: FeatureSchema, seed: int = 0) -> BaseEstimator:
    """The unfitted classifier `spec` names for the features of `schema` (import paths allowed: call
    only with trusted settings; their factory takes no argument)."""
    spec = check_learner(spec, allow_import_path=True)
    if not is_import_path(spec):
        return built_in(spec, schema, seed)
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


def learner_accepts_missing(spec: str) -> bool:
    """Whether the learner `spec` names takes missing values: every built-in does; an import path's
    learner where scikit-learn's tags say so (`allow_nan`)."""
    from sklearn.utils import get_tags

    if not is_import_path(check_learner(spec, allow_import_path=True)):
        return True
    try:
        return bool(get_tags(make_learner(spec, FeatureSchema(()))).input_tags.allow_nan)
    except (AttributeError, TypeError, ValueError):
        return False
