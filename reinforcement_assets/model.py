"""The user's model, continued: an update (`partial_fit` passes or a `warm_start` continuation) or a refit.

Any fitted scikit-learn classifier works: a bare estimator, a `Pipeline` (whose transformers an
update leaves as they are) or a `ColumnTransformer` inside one. The estimator API is the seam:
`partial_fit`, `warm_start`, `clone`, `get_params`/`set_params`. Nothing of this package ends up in
a model: what is stored is the user's objects only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, TargetEncoder

from .core.labels import class_type, predictions_text, readable, typed_labels
from .core.features import FeatureSchema, feature_frame
from .core.learners import built_in, frame_schema

ENCODERS = (OneHotEncoder, OrdinalEncoder, TargetEncoder)

class IncrementalPipeline(Pipeline):
    """The model class of earlier versions, kept so that their stored champions still load (see `plain`)."""

    def partial_fit(self, X, y, classes=None):
        Xt = X
        for _, _, transformer in self._iter(with_final=False):
            Xt = transformer.partial_fit(Xt).transform(Xt)
        self._final_estimator.partial_fit(Xt, y, classes=classes)
        return self


class UpdateImpossible(ValueError):
    """The model cannot be updated on this data (a refit can): the message says why."""


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    loss: float
    seconds: float


def plain(model: Any) -> Any:
    """`model` with nothing of this package in it: an earlier version's `IncrementalPipeline` becomes a
    scikit-learn `Pipeline` of the same fitted steps, its SGD set to the constant schedule those
    versions fine-tuned with."""
    if not isinstance(model, IncrementalPipeline):
        return model
    steps = [(name, copy.deepcopy(step)) for name, step in model.steps]
    final = steps[-1][1]
    if isinstance(final, SGDClassifier):
        final.set_params(learning_rate="constant")
    return Pipeline(steps)


def make_model(schema: FeatureSchema, seed: int = 0) -> Pipeline:
    """The built-in `sgd` learner for `schema`, unfitted."""
    return built_in("sgd", schema, seed)


def train_from_scratch(X: pd.DataFrame, y: np.ndarray, seed: int = 0, learner: Any = None) -> Any:
    """`learner` (default: the built-in `sgd` for X's columns) fitted on (X, y), labels as given."""
    return refit(learner if learner is not None else make_model(frame_schema(X), seed), X, y, list(X.columns))


def final_estimator(model: Any) -> Any:
    """The estimator that predicts: the last step of a (nested) Pipeline, else `model`."""
    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def model_input(model: Any, X: pd.DataFrame, feature_names: Sequence[str]) -> Any:
    """What `model` takes: the frame's columns in the order it was fitted with, or an array in the
    registered feature order for a model fitted without feature names."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        return with_declared_dtypes(model, X[[str(n) for n in names]])
    columns = X[list(feature_names)]
    numeric = all(pd.api.types.is_numeric_dtype(columns[c]) for c in columns.columns)
    return columns.to_numpy(dtype=float) if numeric else columns.to_numpy(dtype=object)


def fit_input(model: Any, X: pd.DataFrame) -> Any:
    """`X` for fitting `model`: for gradient boosting, which cannot bin a column of NaN alone, a
    numeric column missing in every row is 0 (a constant it never splits on); text beyond what a
    categorical HGB takes is bucketed (`with_declared_dtypes`)."""
    if isinstance(X, pd.DataFrame):
        boosting = isinstance(final_estimator(model), HistGradientBoostingClassifier)
        empty = [c for c in X.columns
                 if boosting and pd.api.types.is_float_dtype(X[c]) and len(X) and X[c].isna().all()]
        if empty:
            X = X.assign(**{c: 0.0 for c in empty})
        return with_declared_dtypes(model, X, fitting=True)
    return X


def with_declared_dtypes(model: Any, X: pd.DataFrame, *, fitting: bool = False) -> pd.DataFrame:
    """`X` as `model` reads it: a HistGradientBoostingClassifier taking raw columns with
    `categorical_features="from_dtype"` needs its text columns as pandas `category`. `fitting` a
    categorical HGB: a text column with more values than it takes (`max_bins`) keeps its most
    frequent ones, the rarest become missing values, rather than failing the fit."""
    first = _estimators(model)[0]
    if not isinstance(first, HistGradientBoostingClassifier) or first.get_params()["categorical_features"] is None:
        return X
    text = [c for c in X.columns if isinstance(X[c].dtype, (pd.StringDtype, pd.CategoricalDtype))
            or (X[c].dtype == object and X[c].map(lambda v: v is None or isinstance(v, str)).all())]
    if not text:
        return X
    X = X.copy()
    if fitting:
        limit = int(first.get_params()["max_bins"])
        for c in text:
            counts = X[c].value_counts()
            if len(counts) > limit:
                X[c] = X[c].where(X[c].isin(counts.index[:limit]), None)
    if isinstance(first.get_params()["categorical_features"], str) and \
            first.get_params()["categorical_features"] == "from_dtype":
        X = X.astype({c: "category" for c in text if not isinstance(X[c].dtype, pd.CategoricalDtype)})
    return X


def declared_categorical(model: Any, feature_names: Sequence[str] = ()) -> set[str]:
    """The features a fitted model itself takes as text: those its ColumnTransformers hand to an
    encoder fitted on strings, or a HistGradientBoostingClassifier reads as pandas categories of
    strings. An encoder of numbers or flags (integer codes, booleans) takes numbers or flags; the
    model says nothing of the other features. `feature_names`: the registered names, in input order,
    for a model fitted on an array (whose encoders select columns by position)."""
    found: set[str] = set()
    for position, step in enumerate(_estimators(model)):
        given = feature_names if position == 0 else ()  # only the first step reads the logged columns
        if isinstance(step, ColumnTransformer):
            found.update(_encoded_text(step, given))
        elif isinstance(step, HistGradientBoostingClassifier) and getattr(step, "_preprocessor", None) is not None:
            found.update(_encoded_text(step._preprocessor, given))  # its encoder of pandas categories
    return found


def _encoded_text(columns: ColumnTransformer, feature_names: Sequence[str] = ()) -> set[str]:
    """The columns a fitted ColumnTransformer hands to an encoder whose categories are strings."""
    own = getattr(columns, "feature_names_in_", None)
    names = [str(n) for n in own] if own is not None else [str(n) for n in feature_names]
    found: set[str] = set()
    for _, transformer, selection in getattr(columns, "transformers_", []):
        encoder = next((part for part in _estimators(transformer) if isinstance(part, ENCODERS)), None)
        if encoder is None or getattr(encoder, "categories_", None) is None:
            continue
        for name, values in zip(_column_names(selection, names), encoder.categories_):
            if any(isinstance(v, str) for v in np.asarray(values, dtype=object).tolist()):
                found.add(name)
    return found


def accepts_missing(model: Any, schema: FeatureSchema) -> bool:
    """Whether `model` predicts a row whose every feature is missing (NaN or None): the probe that
    decides whether a logged null may reach it."""
    row = model_input(model, feature_frame([{}], schema), schema.names)
    try:
        model.predict(row)
    except Exception:  # the user's model: whatever it raises means no
        return False
    return True


def _estimators(model: Any) -> list[Any]:
    """`model` and every estimator nested in its Pipelines (not inside ColumnTransformers)."""
    if isinstance(model, Pipeline):
        return [step for _, step in model.steps for step in _estimators(step)]
    return [model]


def _column_names(columns: Any, names: Sequence[str]) -> list[str]:
    """A ColumnTransformer's column selection as names (given as names, indices or a boolean mask)."""
    if isinstance(columns, str):
        return [columns]
    selected = list(np.atleast_1d(columns)) if not callable(columns) else []
    if selected and all(isinstance(c, (bool, np.bool_)) for c in selected):
        return [n for n, keep in zip(names, selected) if keep]
    return [names[int(c)] if isinstance(c, (int, np.integer)) and int(c) < len(names) else str(c) for c in selected]


def predict_text(model: Any, X: pd.DataFrame, feature_names: Sequence[str]) -> np.ndarray:
    """The model's predictions for the rows of `X`, as text comparable with the log's labels."""
    if len(X) == 0:
        return np.asarray([], dtype=object)
    return predictions_text(model.predict(model_input(model, X, feature_names)))


def predict_with_confidence(model: Any, X: pd.DataFrame, feature_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """What the model predicts for each row of `X` (as text; its `predict`, which need not be the most
    probable class: a tuned threshold, say) and the probability `predict_proba` gives that class;
    an AttributeError if the model has no `predict_proba` (a hinge SGD, say)."""
    if not hasattr(model, "predict_proba"):
        raise AttributeError(f"a {type(final_estimator(model)).__name__} has no predict_proba")
    if len(X) == 0:
        return np.asarray([], dtype=object), np.asarray([], dtype=float)
    rows = model_input(model, X, feature_names)
    predicted = np.asarray(model.predict(rows))
    probabilities = np.asarray(model.predict_proba(rows), dtype=float)
    column = {label: i for i, label in enumerate(np.asarray(model.classes_).tolist())}
    chosen = np.fromiter((column[label] for label in predicted.tolist()), dtype=np.int64, count=len(predicted))
    return predictions_text(predicted), probabilities[np.arange(len(predicted)), chosen]


def size_parameter(estimator: Any) -> str | None:
    """The parameter a warm-start continuation grows: boosting iterations or ensemble members."""
    params = estimator.get_params(deep=False)
    if "warm_start" not in params:
        return None
    if isinstance(estimator, HistGradientBoostingClassifier):
        return "max_iter"
    return "n_estimators" if "n_estimators" in params else None


def model_size(model: Any) -> int | None:
    """Iterations or trees of a model a warm-start update can grow, else None."""
    final = final_estimator(model)
    parameter = size_parameter(final)
    return int(final.get_params()[parameter]) if parameter else None


def at_size(model: Any, size: int | None) -> Any:
    """An unfitted copy of `model` whose iterations or trees are `size` (a grown champion's registered
    size, so refits do not inherit its updates' growth); `model` itself when it has no such size."""
    template = clone(plain(model))
    final = final_estimator(template)
    parameter = size_parameter(final)
    if parameter and size:
        final.set_params(**{parameter: int(size)})
    return template


def update_method(model: Any) -> str | None:
    """How `model` can be continued: `partial_fit`, `warm_start`, or None (refit only)."""
    final = final_estimator(model)
    # An MLP trained with early stopping refuses partial_fit ("partial_fit does not support early_stopping").
    if hasattr(final, "partial_fit") and not (isinstance(final, MLPClassifier) and final.early_stopping):
        return "partial_fit"
    return "warm_start" if size_parameter(final) else None


def grown_size(current: int, base: int, growth: float) -> int | None:
    """The size after one update: `growth` x `base` more (at least 1), never past 2 x `base`; None when full."""
    grown = min(current + max(1, int(round(growth * base))), 2 * base)
    return grown if grown > current else None


def update_obstacle(model: Any, labels: Sequence[str], *, base_size: int | None, growth: float,
                    whole_set: bool = True) -> str | None:
    """Why `model` cannot be updated on training labels `labels` (text), or None if it can.

    `whole_set=False` (only the errors are known yet) skips the check that every class is present.
    """
    method = update_method(model)
    if method is None:
        return (f"{type(final_estimator(model)).__name__} has neither partial_fit nor a warm_start continuation "
                "(iterations or trees to add)")
    kind = class_type(model.classes_)
    labels = np.asarray(labels, dtype=object)
    y = set(typed_labels(labels[readable(labels, kind)], kind).tolist())  # the others are set aside
    unseen = sorted(map(str, y - set(model.classes_.tolist())))
    if unseen:
        return f"labels {unseen} are new to the champion"
    if method == "warm_start" and whole_set:
        missing = sorted(map(str, set(model.classes_.tolist()) - y))
        if missing:
            return f"a warm-start update needs every class, and the fine-tuning set lacks {missing}"
    if method == "warm_start" and getattr(final_estimator(model), "is_categorical_", None) is not None \
            and final_estimator(model).is_categorical_.any():
        # Its warm-start fit re-encodes the categories on the new rows: the trees it has would read
        # the new codes as other categories.
        return (f"{type(final_estimator(model)).__name__} with categorical features re-encodes them in a "
                "warm-start fit, which would scramble its existing trees")
    if method == "warm_start" and final_estimator(model).get_params().get("oob_score"):
        return f"{type(final_estimator(model)).__name__} with oob_score=True cannot be continued by warm_start"
    if method == "warm_start":
        size = model_size(model)
        if grown_size(size, base_size or size, growth) is None:
            return f"the champion has {size} {size_parameter(final_estimator(model))}, twice its registered size"
    return None


def update(
    model: Any, X: pd.DataFrame, labels: Sequence[str], feature_names: Sequence[str], *, epochs: int,
    learning_rate: float, growth: float, base_size: int | None = None, seed: int = 0,
) -> tuple[Any, list[EpochLog]]:
    """A copy of `model` trained further on (X, labels); `model` itself is left alone.

    `partial_fit`: `epochs` shuffled passes, the step size (SGD's `eta0`, MLP's `learning_rate_init`,
    where they exist) set to `learning_rate`. `warm_start`: `growth` x `base_size` more iterations or
    trees fitted on the new rows, up to twice `base_size`. Transformers of a Pipeline stay as they are;
    no other hyperparameter changes.
    """
    tuned = copy.deepcopy(plain(model))
    obstacle = update_obstacle(tuned, labels, base_size=base_size, growth=growth)
    if obstacle:
        raise UpdateImpossible(obstacle)
    y = typed_labels(labels, class_type(tuned.classes_))
    Xt, step = model_input(tuned, fit_input(tuned, X), feature_names), tuned
    while isinstance(step, Pipeline):  # through every transformer, nested Pipelines' too
        if len(step.steps) > 1:
            Xt = step[:-1].transform(Xt)
        step = step.steps[-1][1]
    final = final_estimator(tuned)
    if update_method(tuned) == "partial_fit":
        return tuned, _partial_fit_passes(final, Xt, y, epochs, learning_rate, seed)
    started = time.perf_counter()
    parameter = size_parameter(final)
    size = int(final.get_params()[parameter])
    warm = final.get_params()["warm_start"]
    final.set_params(warm_start=True, **{parameter: grown_size(size, base_size or size, growth)})
    classes = final.classes_.copy()
    final.fit(Xt, y)
    final.set_params(warm_start=warm)
    if not np.array_equal(final.classes_, classes):  # defensive: update_obstacle rules this out
        raise UpdateImpossible(f"a warm-start update changed the classes from {classes} to {final.classes_}")
    return tuned, [EpochLog(1, training_loss(final, Xt, y), time.perf_counter() - started)]


def _partial_fit_passes(final: Any, Xt: Any, y: np.ndarray, epochs: int, learning_rate: float,
                        seed: int) -> list[EpochLog]:
    params = final.get_params()
    step = {name: learning_rate for name in ("eta0", "learning_rate_init") if name in params}
    original = {name: params[name] for name in step}
    final.set_params(**step)
    if "learning_rate_init" in step and hasattr(final, "_optimizer"):
        # An MLP's partial_fit reuses the optimizer of its last fit, step size included: start one at this rate.
        del final._optimizer
    rng = np.random.default_rng(seed)
    log = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = rng.permutation(len(y))
        final.partial_fit(Xt.iloc[order] if isinstance(Xt, pd.DataFrame) else Xt[order], y[order])
        log.append(EpochLog(epoch, training_loss(final, Xt, y), time.perf_counter() - started))
    final.set_params(**original)  # the stored challenger keeps the user's hyperparameters
    return log


def training_loss(estimator: Any, Xt: Any, y: np.ndarray) -> float:
    """Log loss where the estimator has `predict_proba` (hinge SGD has not: then the error rate)."""
    if hasattr(estimator, "predict_proba"):
        return float(log_loss(y, estimator.predict_proba(Xt), labels=estimator.classes_))
    return float(np.mean(estimator.predict(Xt) != y))


def refit(template: Any, X: pd.DataFrame, labels: Sequence[Any], feature_names: Sequence[str],
          kind: str | None = None) -> Any:
    """`clone(template)` (same family and hyperparameters, nothing fitted) fitted on (X, labels).

    `kind`: the class type to read text labels as (None: use them as given).
    """
    y = typed_labels(labels, kind) if kind else np.asarray(labels)
    if len(np.unique(y)) < 2:
        raise ValueError("a refit needs at least two classes in the training sample")
    return clone(plain(template)).fit(fit_input(template, X[list(feature_names)]), y)
