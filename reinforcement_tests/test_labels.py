"""Labels as they are: stored as text, numeric labels round-trip exactly, models keep their class type."""

import numpy as np
import pandas as pd
import pytest

from reinforcement_assets.backends.store import evaluation_frame
from reinforcement_assets.core.labels import (
    LabelTypeError,
    canonical_text,
    class_type,
    label_text,
    predictions_text,
    typed_labels,
)


def test_numbers_are_stored_as_their_shortest_exact_text():
    assert [label_text(v) for v in (3, np.int64(3), 3.0, np.float64(3.0), "3", 2.5, -1.0, True, np.bool_(False))] == [
        "3", "3", "3", "3", "3", "2.5", "-1", "True", "False"]
    assert label_text(None) is None and label_text(float("nan")) is None and label_text("fraud") == "fraud"


def test_a_float_column_with_gaps_is_stored_as_integers_and_nulls():
    log = pd.DataFrame({"prediction_id": ["a", "b", "c"], "predicted_label": [3, 1, 2],
                        "actual_label": [3.0, np.nan, 2.0]})
    assert log["actual_label"].dtype == np.float64  # what pandas makes of integers with a gap
    frame = evaluation_frame(log)
    assert frame["predicted_label"].tolist() == ["3", "1", "2"]
    assert frame["actual_label"].tolist() == ["3", None, "2"]


@pytest.mark.parametrize("classes, kind", [
    (np.array([0, 1, 2]), "int"), (np.array([False, True]), "bool"), (np.array([0.5, 1.5]), "float"),
    (np.array(["a", "b"], dtype=object), "str"), (np.array([1, 2], dtype=object), "int"),
    (np.array(["1", "2"]), "str"),
])
def test_the_class_type_of_a_model(classes, kind):
    assert class_type(classes) == kind


def test_logged_text_reads_as_the_models_class_type():
    assert typed_labels(["3", "3.0", "0"], "int").tolist() == [3, 3, 0]
    assert typed_labels(["True", "false", "1"], "bool").tolist() == [True, False, True]
    assert typed_labels(["2.5"], "float").tolist() == [2.5]
    with pytest.raises(LabelTypeError, match="'cat' is not a int"):
        typed_labels(["cat"], "int")
    with pytest.raises(LabelTypeError):
        typed_labels(["2.5"], "int")


def test_truth_and_predictions_compare_as_the_same_text():
    truth = canonical_text(["3.0", "1", "cat"], "int")  # '3.0': a row stored by an earlier version
    assert truth.tolist() == ["3", "1", "cat"]
    assert (predictions_text(np.array([3, 1, 1])) == truth).tolist() == [True, True, False]
    assert canonical_text(["true", "False"], "bool").tolist() == ["True", "False"]
