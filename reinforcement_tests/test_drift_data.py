from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reinforcement_assets.core.drift_data import (
    BAD_ROW_KINDS,
    FEATURE_PREFIX,
    Concept,
    corrupt_rows,
    make_stream,
    prediction_log,
    random_concept,
    rotated,
    timestamps,
)
from reinforcement_assets.demo import accuracy

LOG_COLUMNS = [
    "prediction_id",
    "model_version",
    "features",
    "predicted_label",
    "actual_label",
    "confidence",
    "predicted_at",
    "evaluated_at",
]
START = pd.Timestamp("2024-01-01", tz="UTC")
END = pd.Timestamp("2024-01-31", tz="UTC")


def fit_model(X, y):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)


@pytest.fixture(scope="module")
def log_and_model():
    X, y, _ = make_stream(3000, drift="abrupt", seed=3)
    model = fit_model(X.iloc[:1000], y[:1000])
    evaluated_at = timestamps(len(X), START, END, seed=3)
    log = prediction_log(model, X, y, evaluated_at, model_version="v7", prefix="t", seed=3)
    return log, model, X, y, evaluated_at


def test_concept_labels_are_argmax_of_linear_scores():
    concept = Concept(
        weights=np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]),
        bias=np.zeros(3),
        classes=("a", "b", "c"),
    )
    X = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(concept.label(X), ["a", "b", "c"])


def test_random_concept_shapes_and_classes():
    rng = np.random.default_rng(0)
    concept = random_concept(6, 4, rng)
    assert concept.weights.shape == (4, 6)
    assert concept.bias.shape == (4,)
    assert len(concept.classes) == 4 == len(set(concept.classes))
    named = random_concept(6, 2, rng, classes=["cat", "dog"])
    assert named.classes == ("cat", "dog")
    assert set(named.label(rng.standard_normal((200, 6)))) == {"cat", "dog"}
    with pytest.raises(ValueError):
        random_concept(6, 3, rng, classes=["cat", "dog"])


def test_rotated_keeps_classes_and_norms_and_changes_labels():
    rng = np.random.default_rng(1)
    concept = random_concept(10, 3, rng)
    drifted = rotated(concept, 1.2, rng)
    assert drifted.classes == concept.classes
    np.testing.assert_allclose(
        np.linalg.norm(drifted.weights, axis=1), np.linalg.norm(concept.weights, axis=1)
    )
    X = rng.standard_normal((5000, 10))
    assert np.mean(drifted.label(X) != concept.label(X)) > 0.2
    same = rotated(concept, 0.0, rng)
    np.testing.assert_allclose(same.weights, concept.weights)


def test_make_stream_shapes_columns_and_dtypes():
    X, y, position = make_stream(500, n_features=4, n_classes=5, seed=1)
    assert list(X.columns) == [f"{FEATURE_PREFIX}{j}" for j in range(4)]
    assert X.shape == (500, 4)
    assert all(dtype == np.float64 for dtype in X.dtypes)
    assert y.shape == (500,) and position.shape == (500,)
    assert all(isinstance(label, str) for label in y.tolist())
    assert len(set(y.tolist())) == 5
    assert position[0] == 0.0 and position[-1] < 1.0
    assert np.all(np.diff(position) > 0)


def test_make_stream_features_need_scaling():
    X, _, _ = make_stream(5000, seed=0)
    std = X.std()
    assert std.max() / std.min() > 50
    assert (X.mean().abs() > 3 * std).any()


def test_make_stream_is_deterministic_by_seed():
    X1, y1, p1 = make_stream(1000, drift="gradual", seed=5)
    X2, y2, p2 = make_stream(1000, drift="gradual", seed=5)
    pd.testing.assert_frame_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(p1, p2)
    X3, y3, _ = make_stream(1000, drift="gradual", seed=6)
    assert not np.allclose(X1.to_numpy(), X3.to_numpy())


def test_abrupt_drift_breaks_a_model_trained_before_it():
    X, y, position = make_stream(20_000, drift="abrupt", drift_at=0.5, seed=0)
    train = position < 0.4
    model = fit_model(X[train], y[train])
    pre = (position >= 0.4) & (position < 0.5)
    post = position >= 0.5
    pre_acc, post_acc = accuracy(model, X[pre], y[pre]), accuracy(model, X[post], y[post])
    assert pre_acc > 0.9
    assert post_acc < pre_acc - 0.2


def test_no_drift_keeps_accuracy_stable():
    X, y, position = make_stream(20_000, drift="none", seed=0)
    train = position < 0.4
    model = fit_model(X[train], y[train])
    first = (position >= 0.4) & (position < 0.7)
    second = position >= 0.7
    first_acc, second_acc = accuracy(model, X[first], y[first]), accuracy(model, X[second], y[second])
    assert first_acc > 0.9
    assert abs(first_acc - second_acc) < 0.02


def test_gradual_drift_mixes_concepts_across_the_window():
    kwargs = dict(n_rows=40_000, label_noise=0.0, seed=2)
    X_a, y_a, position = make_stream(drift="none", **kwargs)
    X_b, y_b, _ = make_stream(drift="abrupt", drift_at=0.0, **kwargs)
    X, y, _ = make_stream(drift="gradual", drift_at=0.4, drift_width=0.4, **kwargs)
    pd.testing.assert_frame_equal(X, X_a)
    pd.testing.assert_frame_equal(X, X_b)
    assert np.all((y == y_a) | (y == y_b))

    differ = y_a != y_b
    from_b = (y == y_b) & differ
    edges = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
    shares = [
        from_b[(position >= lo) & (position < hi)].sum()
        / differ[(position >= lo) & (position < hi)].sum()
        for lo, hi in zip(edges[:-1], edges[1:])
    ]
    assert shares[0] == 0.0
    assert shares[-1] == 1.0
    assert np.all(np.diff(shares) > 0)
    np.testing.assert_allclose(shares[1:5], [0.125, 0.375, 0.625, 0.875], atol=0.06)


def test_label_noise_share():
    _, clean, _ = make_stream(100_000, drift="none", label_noise=0.0, seed=4)
    _, noisy, _ = make_stream(100_000, drift="none", label_noise=0.1, seed=4)
    assert np.mean(clean != noisy) == pytest.approx(0.1, abs=0.005)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drift": "sideways"},
        {"drift_at": 1.5},
        {"drift": "gradual", "drift_width": 0.0},
        {"label_noise": -0.1},
    ],
)
def test_make_stream_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        make_stream(10, **kwargs)


def test_prediction_log_columns_and_types(log_and_model):
    log, _, X, _, _ = log_and_model
    assert list(log.columns) == LOG_COLUMNS
    assert len(log) == len(X)
    assert log["prediction_id"].is_unique
    assert log["prediction_id"].iloc[0] == "t-3-0"
    assert (log["model_version"] == "v7").all()
    for column in ("predicted_label", "actual_label"):
        assert all(isinstance(label, str) for label in log[column])
    for column in ("predicted_at", "evaluated_at"):
        assert isinstance(log[column].dtype, pd.DatetimeTZDtype)
        assert str(log[column].dt.tz) == "UTC"
    assert (log["predicted_at"] < log["evaluated_at"]).all()
    assert (log["evaluated_at"] - log["predicted_at"] == pd.Timedelta(minutes=30)).all()


def test_prediction_log_matches_the_model(log_and_model):
    log, model, X, y, evaluated_at = log_and_model
    proba = model.predict_proba(X)
    np.testing.assert_allclose(log["confidence"], proba.max(axis=1))
    assert log["confidence"].between(0.0, 1.0).all()
    np.testing.assert_array_equal(log["predicted_label"], model.predict(X))
    np.testing.assert_array_equal(log["actual_label"], y)
    np.testing.assert_array_equal(log["evaluated_at"], evaluated_at)
    features = log["features"].iloc[7]
    assert list(features) == list(X.columns)
    assert all(type(value) is float for value in features.values())
    np.testing.assert_allclose(list(features.values()), X.iloc[7].to_numpy())


def test_prediction_log_is_deterministic_and_normalises_timezones(log_and_model):
    _, model, X, y, evaluated_at = log_and_model
    naive = evaluated_at.tz_localize(None)
    first = prediction_log(model, X, y, naive, prefix="t", seed=3)
    second = prediction_log(model, X, y, evaluated_at.tz_convert("Europe/Paris"), prefix="t", seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert str(first["evaluated_at"].dt.tz) == "UTC"


def test_prediction_log_rejects_mismatched_lengths(log_and_model):
    _, model, X, y, evaluated_at = log_and_model
    with pytest.raises(ValueError):
        prediction_log(model, X, y[:-1], evaluated_at)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_corrupt_rows_share_kinds_and_damage(log_and_model):
    log, _, _, _, _ = log_and_model
    before = log.copy()
    before_features = copy.deepcopy(log["features"].tolist())

    bad, kinds = corrupt_rows(log, 0.1, seed=1)

    pd.testing.assert_frame_equal(log.drop(columns="features"), before.drop(columns="features"))
    assert log["features"].tolist() == before_features
    assert kinds.index.equals(log.index)
    corrupted = kinds.notna()
    assert corrupted.sum() == 300
    counts = kinds[corrupted].value_counts()
    assert set(counts.index) == set(BAD_ROW_KINDS)
    assert counts.max() - counts.min() <= 1

    clean = ~corrupted
    pd.testing.assert_frame_equal(bad[clean].drop(columns="features"), log[clean].drop(columns="features"))
    assert bad.loc[clean, "features"].tolist() == log.loc[clean, "features"].tolist()

    for i in kinds.index[corrupted]:
        row, original, kind = bad.loc[i], log.loc[i], kinds[i]
        if kind == "confidence_missing":
            assert pd.isna(row["confidence"])
        elif kind == "confidence_out_of_range":
            assert not 0.0 <= row["confidence"] <= 1.0
        elif kind == "feature_not_numeric":
            assert row["features"].keys() == original["features"].keys()
            assert sum(not is_number(v) for v in row["features"].values()) == 1
        elif kind == "feature_missing":
            assert len(row["features"]) == len(original["features"]) - 1
            assert row["features"].keys() < original["features"].keys()
        elif kind == "features_empty":
            assert row["features"] == {}
        elif kind == "label_missing":
            assert row["actual_label"] == ""


def test_corrupt_rows_is_deterministic_and_handles_zero_share(log_and_model):
    log, _, _, _, _ = log_and_model
    first, first_kinds = corrupt_rows(log, 0.05, seed=9)
    second, second_kinds = corrupt_rows(log, 0.05, seed=9)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_series_equal(first_kinds, second_kinds)

    untouched, none = corrupt_rows(log, 0.0)
    pd.testing.assert_frame_equal(untouched, log)
    assert none.isna().all()
    with pytest.raises(ValueError):
        corrupt_rows(log, 1.5)


def test_timestamps_sorted_in_range_and_utc():
    stamps = timestamps(10_000, START, END, seed=0)
    assert isinstance(stamps, pd.DatetimeIndex)
    assert len(stamps) == 10_000
    assert str(stamps.tz) == "UTC"
    assert stamps.is_monotonic_increasing
    assert stamps.min() >= START and stamps.max() < END
    days = (stamps - START) / pd.Timedelta(days=1)
    assert np.histogram(days, bins=10)[0].min() > 800


def test_timestamps_deterministic_and_accept_naive_bounds():
    naive = timestamps(100, pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02"), seed=7)
    aware = timestamps(100, pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC"), seed=7)
    assert naive.equals(aware)
    assert not naive.equals(timestamps(100, START, END, seed=8))
    with pytest.raises(ValueError):
        timestamps(10, END, START)
