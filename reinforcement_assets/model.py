"""The default classifier, and how it is trained from scratch or fine-tuned."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


class IncrementalPipeline(Pipeline):
    """A Pipeline whose every step learns incrementally, so the whole model supports `partial_fit`."""

    def partial_fit(self, X, y, classes=None):
        Xt = X
        for _, _, transformer in self._iter(with_final=False):
            Xt = transformer.partial_fit(Xt).transform(Xt)
        self._final_estimator.partial_fit(Xt, y, classes=classes)
        return self


class UnseenClassError(ValueError):
    """Fine-tuning data has a label the model was never trained on."""


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    loss: float
    seconds: float


def make_model(seed: int = 0) -> IncrementalPipeline:
    """Standard scaling then logistic regression by SGD: takes a DataFrame of feature columns."""
    classifier = SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=200, tol=1e-4, random_state=seed)
    return IncrementalPipeline([("scale", StandardScaler()), ("classify", classifier)])


def train_from_scratch(X: pd.DataFrame, y: np.ndarray, seed: int = 0) -> IncrementalPipeline:
    """A new model fitted on (X, y)."""
    if len(np.unique(y)) < 2:
        raise ValueError("training from scratch needs at least two classes in the window")
    return make_model(seed).fit(X, y)


def fine_tune(
    model: Pipeline, X: pd.DataFrame, y: np.ndarray, *, epochs: int, learning_rate: float, seed: int = 0
) -> tuple[Pipeline, list[EpochLog]]:
    """A copy of `model` updated by `epochs` shuffled `partial_fit` passes at a constant learning rate.

    The transformers stay as they are: only the classifier moves, so the update budget
    (epochs x learning rate) bounds how far the copy can drift from `model`.
    """
    unseen = sorted(set(y) - set(model.classes_))
    if unseen:
        raise UnseenClassError(f"labels {unseen} are not among the model's classes {list(model.classes_)}")
    tuned = copy.deepcopy(model)
    classifier = tuned[-1]
    classifier.set_params(learning_rate="constant", eta0=learning_rate)
    Xt = tuned[:-1].transform(X)
    y = np.asarray(y, dtype=object)
    rng = np.random.default_rng(seed)
    log = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = rng.permutation(len(y))
        classifier.partial_fit(Xt[order], y[order])
        loss = log_loss(y, classifier.predict_proba(Xt), labels=classifier.classes_)
        log.append(EpochLog(epoch, float(loss), time.perf_counter() - started))
    return tuned, log
