import math

import pytest

from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.core.rows import (
    FeatureSchemaError,
    check_feature_names,
    parse_features,
    reject_reason,
    rows_from_records,
)

SCHEMA = FeatureSchema.numeric(("x0", "x1"))
MIXED = FeatureSchema.of({"country": "categorical", "x": "numeric", "flag": "boolean"}, accepts_missing=True)


def record(**overrides):
    base = {"id": 1, "prediction_id": "p1", "evaluated_at": "2026-11-20T10:00:00+00:00",
            "predicted_label": "a", "actual_label": "b", "confidence": 0.9, "features": {"x0": 1.0, "x1": 2}}
    return {**base, **overrides}


def test_feature_names_may_not_shadow_row_columns():
    with pytest.raises(FeatureSchemaError, match="confidence"):
        check_feature_names(["x0", "confidence"])


@pytest.mark.parametrize(
    "overrides, verdict",
    [
        ({}, None),
        ({"actual_label": ""}, ("label_missing", None)),
        ({"predicted_label": None}, ("label_missing", None)),
        ({"confidence": None}, ("confidence_missing", None)),
        ({"confidence": math.nan}, ("confidence_missing", None)),
        ({"confidence": 1.5}, ("confidence_out_of_range", None)),
        ({"confidence": -0.1}, ("confidence_out_of_range", None)),
        ({"features": "x0=1"}, ("features_not_object", None)),
        ({"features": '{"x0": 1, "x1": 2}'}, ("features_json_text", None)),
        ({"features": [1, 2]}, ("features_not_object", None)),
        ({"features": {}}, ("features_empty", None)),
        ({"features": {"x0": "n/a", "x1": 1}}, ("feature_not_numeric", "x0")),
        ({"features": {"x0": True, "x1": 1}}, ("feature_not_numeric", "x0")),
        ({"features": {"x0": {"v": 1}, "x1": 1}}, ("feature_not_numeric", "x0")),
        ({"features": {"x0": 1e301, "x1": 1}}, ("feature_not_numeric", "x0")),
        ({"features": {"x0": 1.0}}, ("feature_missing", "x1")),
        ({"features": {"x0": 1.0, "x1": None}}, ("feature_missing", "x1")),
        ({"features": {"x0": 1.0, "x1": 2.0, "extra": "text", "flag": True, "n": None}}, None),
    ],
)
def test_reject_reason_judges_only_the_schema_features(overrides, verdict):
    assert reject_reason(record(**overrides), SCHEMA) == verdict


def test_a_null_is_a_missing_value_where_the_model_takes_them():
    row = record(features={"country": None, "x": None, "flag": None})
    assert reject_reason(row, MIXED) is None
    assert reject_reason(row, MIXED.with_missing(False)) == ("feature_missing", "country")
    assert reject_reason(record(features={"country": 3, "x": 1, "flag": True}), MIXED) == \
        ("feature_not_categorical", "country")
    assert reject_reason(record(features={"country": "US", "x": 1, "flag": "yes"}), MIXED) == \
        ("feature_not_boolean", "flag")


def test_parse_features_reads_json_text_holding_an_object_only():
    assert parse_features('{"a": 1}') == {"a": 1}
    assert parse_features("[1, 2]") == "[1, 2]" and parse_features("not json") == "not json"
    assert parse_features({"a": 1}) == {"a": 1} and parse_features(None) is None


def test_rows_from_records_sets_bad_rows_aside_and_counts_them():
    records = [record(id=1), record(id=2, confidence=None), record(id=3, features={"x0": "?", "x1": 1}),
               record(id=4, features={"x1": 5.0, "x0": -1.5})]
    frame, rejected = rows_from_records(records, SCHEMA)
    assert frame["id"].tolist() == [1, 4]
    assert frame[["x0", "x1"]].to_numpy().tolist() == [[1.0, 2.0], [-1.5, 5.0]]
    assert str(frame["evaluated_at"].dt.tz) == "UTC"
    assert dict(rejected) == {("confidence_missing", None): 1, ("feature_not_numeric", "x0"): 1}


def test_rows_from_records_types_each_feature_by_its_kind():
    records = [record(id=1, features={"country": "US", "x": 1, "flag": True}),
               record(id=2, features={"country": "", "x": None, "flag": None, "extra": [1]}),
               record(id=3, features={"x": 2.5, "flag": False, "country": None}),
               record(id=4, features={"x": 2.5, "flag": False})]  # a feature not logged: missing too
    frame, rejected = rows_from_records(records, MIXED)
    assert not rejected
    assert frame["country"].tolist() == ["US", "", None, None] and frame["country"].dtype == object
    assert frame["x"].dtype == "float64" and math.isnan(frame["x"][1])
    assert frame["flag"].tolist() == [True, None, False, False]
    _, rejected = rows_from_records(records, MIXED.with_missing(False))
    assert rejected == {("feature_missing", "country"): 2, ("feature_missing", "x"): 1}


def test_rows_from_records_with_nothing_usable_gives_an_empty_typed_frame():
    frame, rejected = rows_from_records([record(features={})], SCHEMA)
    assert frame.empty and list(frame.columns[-2:]) == ["x0", "x1"]
    assert rejected == {("features_empty", None): 1}
