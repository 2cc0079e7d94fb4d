import math

import pytest

from reinforcement_assets.core.rows import (
    FeatureSchemaError,
    check_feature_names,
    choose_feature_names,
    reject_reason,
    rows_from_records,
)

NAMES = ("x0", "x1")


def record(**overrides):
    base = {"id": 1, "prediction_id": "p1", "evaluated_at": "2026-11-20T10:00:00+00:00",
            "predicted_label": "a", "actual_label": "b", "confidence": 0.9, "features": {"x0": 1.0, "x1": 2}}
    return {**base, **overrides}


def test_choose_feature_names_takes_the_most_common_key_set():
    keys = [("x1", "x0"), ("x0", "x1"), ("x0",), ("x0", "x1", "x2")]
    assert choose_feature_names(keys) == ("x0", "x1")


def test_choose_feature_names_without_rows_is_empty():
    assert choose_feature_names([]) == () and choose_feature_names([()]) == ()


def test_feature_names_may_not_shadow_row_columns():
    with pytest.raises(FeatureSchemaError, match="confidence"):
        check_feature_names(["x0", "confidence"])


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({}, None),
        ({"actual_label": ""}, "label_missing"),
        ({"predicted_label": None}, "label_missing"),
        ({"confidence": None}, "confidence_missing"),
        ({"confidence": math.nan}, "confidence_missing"),
        ({"confidence": 1.5}, "confidence_out_of_range"),
        ({"confidence": -0.1}, "confidence_out_of_range"),
        ({"features": "x0=1"}, "feature_not_numeric"),
        ({"features": {}}, "features_empty"),
        ({"features": {"x0": "n/a", "x1": 1}}, "feature_not_numeric"),
        ({"features": {"x0": True, "x1": 1}}, "feature_not_numeric"),
        ({"features": {"x0": {"v": 1}, "x1": 1}}, "feature_not_numeric"),
        ({"features": {"x0": 1.0}}, "feature_missing"),
        ({"features": {"x0": 1.0, "x1": 2.0, "extra": 3.0}}, None),
    ],
)
def test_reject_reason(overrides, reason):
    assert reject_reason(record(**overrides), NAMES) == reason


def test_rows_from_records_sets_bad_rows_aside_and_counts_them():
    records = [record(id=1), record(id=2, confidence=None), record(id=3, features={"x0": "?", "x1": 1}),
               record(id=4, features={"x1": 5.0, "x0": -1.5})]
    frame, rejected = rows_from_records(records, NAMES)
    assert frame["id"].tolist() == [1, 4]
    assert frame[["x0", "x1"]].to_numpy().tolist() == [[1.0, 2.0], [-1.5, 5.0]]
    assert str(frame["evaluated_at"].dt.tz) == "UTC"
    assert dict(rejected) == {"confidence_missing": 1, "feature_not_numeric": 1}


def test_rows_from_records_with_nothing_usable_gives_an_empty_typed_frame():
    frame, rejected = rows_from_records([record(features={})], NAMES)
    assert frame.empty and list(frame.columns[-2:]) == list(NAMES)
    assert rejected == {"features_empty": 1}
