import numpy as np
import pytest

from reinforcement_assets.demo import accuracy, drift_scenario
from reinforcement_assets.model import UnseenClassError, fine_tune, make_model, train_from_scratch


@pytest.fixture(scope="module")
def scenario():
    return drift_scenario(4_000, seed=3, train_rows=3_000, after_rows=2_000)


@pytest.fixture(scope="module")
def champion(scenario):
    return train_from_scratch(*scenario.train)


def test_the_default_model_takes_a_dataframe_and_learns_the_concept(scenario, champion):
    assert list(champion.feature_names_in_) == list(scenario.train[0].columns)
    X, y = scenario.train
    assert accuracy(champion, X, y) > 0.85


def test_the_pipeline_supports_partial_fit(scenario):
    X, y = scenario.train
    model = make_model().partial_fit(X[:500], y[:500], classes=np.unique(y))
    for _ in range(5):
        model.partial_fit(X, y)
    assert accuracy(model, X, y) > 0.8


def test_fine_tune_adapts_a_copy_and_leaves_the_champion_alone(scenario, champion):
    X_after, y_after = scenario.after
    before = champion[-1].coef_.copy()
    tuned, log = fine_tune(champion, X_after[:1000], y_after[:1000], epochs=5, learning_rate=0.01)
    np.testing.assert_array_equal(champion[-1].coef_, before)
    assert [e.epoch for e in log] == [1, 2, 3, 4, 5]
    assert log[-1].loss < log[0].loss
    assert accuracy(tuned, X_after[1000:], y_after[1000:]) > accuracy(champion, X_after[1000:], y_after[1000:])


def test_the_update_budget_bounds_how_far_fine_tuning_moves(scenario, champion):
    X, y = scenario.after
    small, _ = fine_tune(champion, X, y, epochs=1, learning_rate=1e-4)
    large, _ = fine_tune(champion, X, y, epochs=5, learning_rate=1e-2)
    moved = [np.abs(m[-1].coef_ - champion[-1].coef_).sum() for m in (small, large)]
    assert moved[0] < moved[1]


def test_fine_tune_refuses_labels_the_model_never_saw(scenario, champion):
    X, y = scenario.after
    with pytest.raises(UnseenClassError, match="class_new"):
        fine_tune(champion, X[:3], np.array(["class_0", "class_new", "class_1"], dtype=object),
                  epochs=1, learning_rate=0.01)


def test_training_from_scratch_needs_two_classes(scenario):
    X, _ = scenario.train
    with pytest.raises(ValueError, match="two classes"):
        train_from_scratch(X[:10], np.array(["a"] * 10, dtype=object))
