"""Labels as they are: text in the database, the model's own class type in training and scoring.

The log stores labels as text. A model trained on integers or booleans predicts integers or
booleans, so the log's text is mapped to the model's class type before training, and both sides
are compared as canonical text when scoring.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

CLASS_TYPES = ("str", "int", "bool", "float")
_TRUE, _FALSE = ("true", "1"), ("false", "0")


class LabelTypeError(ValueError):
    """A logged label cannot be read as the model's class type."""


def label_text(value: Any) -> str | None:
    """`value` as the text stored in the log: 3, 3.0, np.int64(3) and '3' are all '3'; None and NaN stay None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def class_type(classes: Iterable[Any]) -> str:
    """The type of a model's `classes_`: `bool`, `int`, `float` or `str`."""
    values = np.asarray(list(classes) if not isinstance(classes, np.ndarray) else classes)
    if values.dtype.kind == "b" or (values.dtype == object and all(isinstance(v, (bool, np.bool_)) for v in values)):
        return "bool"
    if values.dtype.kind in "iu" or (values.dtype == object and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values)):
        return "int"
    if values.dtype.kind == "f":
        return "float"
    return "str"


def parse_label(text: str, kind: str) -> Any:
    """One logged label as a value of class type `kind`, or `LabelTypeError`."""
    if kind == "str":
        return text
    stripped = str(text).strip()
    try:
        if kind == "bool":
            if stripped.lower() in _TRUE:
                return True
            if stripped.lower() in _FALSE:
                return False
            raise ValueError(stripped)
        if kind == "int" and stripped.lstrip("+-").isdigit():  # exact, also past 2**53
            return int(stripped)
        number = float(stripped)
        if kind == "float":
            return number
        if kind == "int" and number.is_integer():
            return int(number)
    except ValueError:
        pass
    raise LabelTypeError(f"label {text!r} is not a {kind}")


def typed_labels(texts: Iterable[str], kind: str) -> np.ndarray:
    """Logged labels as an array of class type `kind` (what `fit` and `partial_fit` are given)."""
    values = [parse_label(t, kind) for t in texts]
    dtype = {"str": object, "int": np.int64, "bool": bool, "float": np.float64}[kind]
    return np.asarray(values, dtype=dtype)


def readable(texts: Iterable[str], kind: str) -> np.ndarray:
    """For each label, whether it reads as class type `kind`."""
    def reads(text: str) -> bool:
        try:
            parse_label(text, kind)
        except LabelTypeError:
            return False
        return True
    return np.asarray([reads(t) for t in texts], dtype=bool)


def canonical_text(texts: Iterable[str], kind: str) -> np.ndarray:
    """Logged labels in the text `label_text` gives the model's predictions ('3.0' -> '3' for an int model);
    a label that is not of the type stays as it is (it then matches no prediction)."""
    out = []
    for text in texts:
        try:
            out.append(label_text(parse_label(text, kind)))
        except LabelTypeError:
            out.append(text)
    return np.asarray(out, dtype=object)


def predictions_text(predictions: Iterable[Any]) -> np.ndarray:
    """A model's predictions as text, comparable with `canonical_text`."""
    return np.asarray([label_text(p) for p in predictions], dtype=object)
