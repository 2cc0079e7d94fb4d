"""A demo world: a model deployed on one concept, a week of traffic that drifts away from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .backends.artifacts import ArtifactStorage, encode
from .backends.store import Store
from .core.drift_data import corrupt_rows, make_stream, prediction_log, timestamps
from .core.labels import predictions_text
from .core.records import ModelVersion
from .model import predict_text, train_from_scratch
from .registration import register_loaded


@dataclass(frozen=True)
class Scenario:
    """Rows before deployment (to train the first model), the logged window, and the day after it."""

    train: tuple[pd.DataFrame, np.ndarray]
    window: tuple[pd.DataFrame, np.ndarray]
    after: tuple[pd.DataFrame, np.ndarray]


def drift_scenario(
    window_rows: int, *, drift: str = "abrupt", drift_within_window: float = 0.4, train_rows: int = 5_000,
    after_rows: int = 5_000, n_features: int = 10, n_classes: int = 3, seed: int = 0,
) -> Scenario:
    """One stream cut in three: pre-deployment rows, the window (drifting at `drift_within_window`), after."""
    total = train_rows + window_rows + after_rows
    drift_at = (train_rows + drift_within_window * window_rows) / total
    X, y, _ = make_stream(total, n_features=n_features, n_classes=n_classes, drift=drift, drift_at=drift_at,
                          drift_width=0.3 * window_rows / total, seed=seed)
    cuts = [0, train_rows, train_rows + window_rows, total]
    parts = [(X.iloc[a:b].reset_index(drop=True), y[a:b]) for a, b in zip(cuts, cuts[1:])]
    return Scenario(*parts)


def log_traffic(
    model, X: pd.DataFrame, y: np.ndarray, start: pd.Timestamp, end: pd.Timestamp, *,
    model_version: str, bad_row_share: float = 0.02, seed: int = 0, prefix: str = "demo",
) -> tuple[pd.DataFrame, pd.Series]:
    """What `model` logged for (X, y) over [start, end), with a share of broken rows, and their kinds."""
    log = prediction_log(model, X, y, timestamps(len(X), start, end, seed=seed), model_version=model_version,
                         prefix=prefix, seed=seed)
    return corrupt_rows(log, bad_row_share, seed=seed)


def register_champion(
    store: Store, artifacts: ArtifactStorage, model, version: str, reason: str, reference_accuracy: float | None = None,
) -> ModelVersion:
    """Save `model`, register it and make it the champion (what `reinforcement register --champion` does).

    `reference_accuracy` (measured on data the model did not train on) is what the decay
    trigger compares its live accuracy with; without it, decay cannot fire.
    """
    data, _, _ = encode(model)
    return register_loaded(store, artifacts, data, model, version=version, champion=True, reason=reason,
                           reference_accuracy=reference_accuracy).version


def deploy_initial_model(store: Store, artifacts: ArtifactStorage, scenario: Scenario, version: str = "v0"):
    """Train the first model on most pre-deployment rows, measure it on the rest, make it the champion."""
    X, y = scenario.train
    cut = int(len(y) * 0.8)
    model = train_from_scratch(X.iloc[:cut], y[:cut])
    register_champion(store, artifacts, model, version, "initial model deployed before the demo window",
                      reference_accuracy=accuracy(model, X.iloc[cut:], y[cut:]))
    return model


def accuracy(model, X: pd.DataFrame, y: np.ndarray) -> float:
    """The share of rows of X `model` labels as y (compared as text, so an int model scores on text labels)."""
    return float(np.mean(predict_text(model, X, list(X.columns)) == predictions_text(y)))
