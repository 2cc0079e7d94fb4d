"""Feature schemas: JSON types, judging against a schema, inferring one from the log, and the frame a
model gets (pure functions, no database)."""

import math

import numpy as np
import pandas as pd
import pytest

from reinforcement_assets.core.features import (
    Feature,
    FeatureSchema,
    TypeSetCount,
    as_model_frame,
    complete_kinds,
    feature_frame,
    feature_types,
    infer_schema,
    json_type,
    judge_types,
    typed_column,
    unlogged,
)


@pytest.mark.parametrize("value, expected", [
    (1, "number"), (2.5, "number"), (-1e299, "number"), (1e300, "out_of_range"), (True, "boolean"), (np.bool_(False), "boolean"),
    ("", "string"), ("US", "string"), (None, "null"), (math.nan, "null"), (math.inf, "null"), ({"a": 1}, "object"),
    ([1], "array"), (np.int64(3), "number"), (np.float32(0.5), "number"), (0.0, "number"), (1e-300, "number"),
    (1e-301, "out_of_range"), (-5e-324, "out_of_range"), (10 ** 300, "out_of_range"), (10 ** 300 - 1, "number"),
    (9.999999999999999e299, "number"),
])
def test_json_type(value, expected):
    assert json_type(value) == expected


SCHEMA = FeatureSchema.of({"country": "categorical", "x": "numeric", "flag": "boolean"}, accepts_missing=False)


@pytest.mark.parametrize("features, verdict", [
    ({"country": "US", "x": 1, "flag": True}, None),
    ({"country": "", "x": 0, "flag": False, "extra": [1], "other": None}, None),  # extra keys are ignored
    ({"x": 1, "flag": True}, ("feature_missing", "country")),
    ({"country": None, "x": 1, "flag": True}, ("feature_missing", "country")),
    ({"country": 1, "x": 1, "flag": True}, ("feature_not_categorical", "country")),
    ({"country": "US", "x": "1", "flag": True}, ("feature_not_numeric", "x")),
    ({"country": "US", "x": True, "flag": True}, ("feature_not_numeric", "x")),
    ({"country": "US", "x": 1e308, "flag": True}, ("feature_not_numeric", "x")),
    ({"country": "US", "x": 1, "flag": 1}, ("feature_not_boolean", "flag")),
    ({"country": {"iso": "US"}, "x": [1], "flag": "yes"}, ("feature_not_categorical", "country")),  # first failing
])
def test_rows_are_judged_on_the_schema_features_only(features, verdict):
    assert judge_types(feature_types(features), SCHEMA) == verdict


def test_nulls_pass_only_where_the_model_takes_missing_values():
    nulls = feature_types({"country": None, "x": None, "flag": None})
    assert judge_types(nulls, SCHEMA) == ("feature_missing", "country")
    assert judge_types(nulls, SCHEMA.with_missing(True)) is None
    # A key not logged is a missing value too.
    assert judge_types(feature_types({"x": None, "flag": None}), SCHEMA.with_missing(True)) is None
    assert judge_types(feature_types({"x": 1, "flag": True}), SCHEMA) == ("feature_missing", "country")


def test_a_kind_not_known_yet_checks_presence_only():
    schema = FeatureSchema((Feature("x"),), accepts_missing=False)
    assert judge_types({"x": "string"}, schema) is None and judge_types({}, schema) == ("feature_missing", "x")


def test_a_new_model_takes_the_features_most_rows_have_of_the_kind_most_values_are():
    type_sets = [
        TypeSetCount({"country": "string", "x": "number", "flag": "boolean", "note": "object"}, 600),
        TypeSetCount({"country": "null", "x": "number", "flag": "boolean"}, 300),
        TypeSetCount({"country": "number", "x": "out_of_range", "flag": "boolean"}, 50),
        TypeSetCount({"x": "number"}, 400),
    ]
    schema = infer_schema(type_sets, accepts_missing=True)
    assert schema.kinds == {"country": "categorical", "flag": "boolean", "x": "numeric"}
    assert schema.accepts_missing is True
    assert infer_schema([], True).features == () and infer_schema([TypeSetCount({"a": "array"}, 5)], True).names == ()


def test_a_registered_models_unknown_kinds_come_from_the_log_but_never_as_text():
    schema = FeatureSchema((Feature("country", "categorical"), Feature("flag"), Feature("x"), Feature("gone")))
    logged = [TypeSetCount({"country": "string", "flag": "boolean", "x": "string"}, 10)]
    completed = complete_kinds(schema, logged)
    # x is sent as text but the model did not declare it categorical: it takes numbers, and rows are set aside.
    assert completed.kinds == {"country": "categorical", "flag": "boolean", "x": "numeric", "gone": "numeric"}
    assert FeatureSchema.from_json(completed.as_json(), True) == completed.with_missing(True)
    assert unlogged(schema, logged) == ["gone"]  # never logged: nothing to learn, its kind a guess
    assert unlogged(schema, []) == ["country", "flag", "x", "gone"]


def test_the_frame_a_model_gets_has_one_dtype_per_kind():
    schema = SCHEMA.with_missing(True)
    frame = feature_frame([{"country": "US", "x": 1, "flag": True}, {"country": "", "x": None, "flag": None},
                           {"country": None, "x": 2.5, "flag": False}], schema)
    assert frame["country"].dtype == object and frame["country"].tolist() == ["US", "", None]
    assert frame["x"].dtype == "float64" and math.isnan(frame["x"][1])
    assert frame["flag"].tolist() == [True, None, False]
    complete = feature_frame([{"country": "US", "x": 1, "flag": True}], schema)
    assert complete["flag"].dtype == object and complete["flag"].tolist() == [True]  # one dtype, missing or not


def test_a_parquet_round_trip_is_typed_back():
    schema = SCHEMA.with_missing(True)
    stored = pd.DataFrame({"country": pd.array(["US", None, ""], dtype="str"), "x": [1, 2, 3],
                           "flag": pd.array([True, None, False], dtype="boolean"), "split": "train"},
                          index=[5, 6, 7])
    frame = as_model_frame(stored, schema)
    assert list(frame.columns) == ["country", "x", "flag"] and frame.index.tolist() == [5, 6, 7]
    assert frame["country"].tolist() == ["US", None, ""] and frame["country"].dtype == object
    assert frame["x"].dtype == "float64" and frame["flag"].tolist() == [True, None, False]
    assert typed_column(pd.Series([1, None], dtype=object), "numeric").tolist()[0] == 1.0
