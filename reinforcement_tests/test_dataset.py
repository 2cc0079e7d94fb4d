import pandas as pd

from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.core.dataset import (
    finetune_frame,
    from_scratch_frame,
    holdout_of,
    is_update_set,
    leaked_rows,
    replay_size,
    sample_fraction,
    split_holdout,
    training_set,
)
from reinforcement_assets.core.records import holdout_size


def rows(ids, start, predicted, actual):
    n = len(ids)
    return pd.DataFrame({
        "id": ids, "prediction_id": [f"p{i}" for i in ids],
        "evaluated_at": pd.date_range(start, periods=n, freq="h", tz="UTC"),
        "predicted_label": predicted, "actual_label": actual, "confidence": [0.9] * n,
        "x0": [float(i) for i in ids], "x1": [1.0] * n,
    })


ERRORS = rows([1, 2], "2026-11-01", ["a", "a"], ["b", "c"])
REPLAY = rows([3, 4, 5], "2026-11-02", ["a", "b", "c"], ["a", "b", "c"])
HOLDOUT = rows([6, 7], "2026-11-06", ["a", "b"], ["a", "c"])


def test_replay_size_follows_the_ratio_up_to_the_cap():
    assert replay_size(10, 4.0, 1000) == 40
    assert replay_size(10, 4.0, 25) == 25
    assert replay_size(10, 0.0, 25) == 0


def test_sample_fraction_preselects_a_little_more_than_wanted():
    assert sample_fraction(100, 1000) == 0.125
    assert sample_fraction(1000, 100) == 1.0
    assert sample_fraction(10, 0) == 1.0


def test_errors_are_relabelled_with_the_true_label():
    dataset = finetune_frame(ERRORS, REPLAY, HOLDOUT)
    errors = dataset[dataset["origin"] == "error"]
    assert errors["label"].tolist() == ["b", "c"]
    assert (errors["label"] != errors["predicted_label"]).all()
    assert dataset.groupby("origin").size().to_dict() == {"error": 2, "replay": 3, "holdout": 2}
    assert is_update_set(dataset)


WINDOW = rows([1, 3, 9], "2026-11-01", ["a", "a", "b"], ["b", "a", "b"])


def test_each_candidate_trains_on_its_own_rows_and_never_on_the_holdout():
    dataset = finetune_frame(ERRORS, REPLAY, HOLDOUT, window_sample=WINDOW)
    schema = FeatureSchema.numeric(["x0", "x1"])
    X, y = training_set(dataset, schema, update=True)
    assert list(X.columns) == ["x0", "x1"] and X["x0"].tolist() == [1, 2, 3, 4, 5] and len(y) == 5
    X, y = training_set(dataset, schema, update=False)  # a refit: the window sample, labels the truth
    assert X["x0"].tolist() == [1, 3, 9] and y.tolist() == ["b", "a", "b"]
    assert holdout_of(dataset)["id"].tolist() == [6, 7]
    assert leaked_rows(dataset) == 0
    # A set with no window sample (built for an update only) gives a refit every training row.
    assert len(training_set(finetune_frame(ERRORS, REPLAY, HOLDOUT), schema, update=False)[1]) == 5


def test_leaked_rows_finds_training_rows_from_the_holdout_period():
    late = rows([8], "2026-11-07", ["a"], ["b"])
    assert leaked_rows(finetune_frame(late, REPLAY, HOLDOUT)) == 1
    # A training row sharing an id with the holdout leaks however old it is.
    same_id = rows([6], "2026-11-01", ["a"], ["b"])
    assert same_id["evaluated_at"].max() < HOLDOUT["evaluated_at"].min()
    assert leaked_rows(finetune_frame(same_id, REPLAY, HOLDOUT)) == 1
    assert leaked_rows(finetune_frame(pd.concat([same_id, late]), REPLAY, HOLDOUT)) == 2


def test_a_training_row_at_the_holdouts_instant_leaks_only_from_its_first_id_on():
    """Rows of one batch share a timestamp: the holdout's order is (evaluated_at, id)."""
    batch = rows([10, 11, 12, 13], "2026-11-06", ["a"] * 4, ["a"] * 4).assign(
        evaluated_at=pd.Timestamp("2026-11-06", tz="UTC"))
    before, holdout = batch.iloc[:2], batch.iloc[2:]
    assert leaked_rows(from_scratch_frame(before, holdout)) == 0
    assert leaked_rows(from_scratch_frame(batch.iloc[[0, 3]], batch.iloc[[1, 2]])) == 1  # id 13 is after 11


def test_the_holdout_is_the_newest_share_of_rows_split_on_time_then_id():
    assert [holdout_size(n, 0.2) for n in (0, 1, 4, 5, 10, 11, 1_000)] == [0, 1, 1, 1, 2, 3, 200]
    assert holdout_size(10, 0.7) == 7 and holdout_size(100, 0.3) == 30  # no float noise rounded up
    one_instant = rows([15, 13, 19, 11, 17], "2026-11-06", ["a"] * 5, ["a"] * 5).assign(
        evaluated_at=pd.Timestamp("2026-11-06", tz="UTC"))
    train, holdout = split_holdout(pd.concat([REPLAY, one_instant]), 0.5)
    assert train["id"].tolist() == [3, 4, 5, 11] and holdout["id"].tolist() == [13, 15, 17, 19]
    assert leaked_rows(from_scratch_frame(train, holdout)) == 0


def test_from_scratch_dataset():
    dataset = from_scratch_frame(REPLAY, HOLDOUT)
    assert not is_update_set(dataset)
    assert set(dataset["split"]) == {"train", "holdout"}
    assert dataset.loc[dataset["split"] == "train", "id"].tolist() == [3, 4, 5]
    assert dataset.loc[dataset["split"] == "holdout", "id"].tolist() == [6, 7]
    assert dataset["label"].tolist() == dataset["actual_label"].tolist() == ["a", "b", "c", "a", "c"]
    assert leaked_rows(dataset) == 0


def test_empty_parts_are_fine():
    dataset = finetune_frame(ERRORS, REPLAY.iloc[0:0], HOLDOUT.iloc[0:0])
    assert len(dataset) == 2 and set(dataset["origin"]) == {"error"}
