"""The cycle's decisions, as pure functions: what to train, how to name and log it, what to compare it
with, and which errors the champion still makes (the race of candidates: `race`).

The assets, the `register` command and the drift benchmark all call these; this module imports
neither Dagster nor a store backend (a test checks it), only scikit-learn and the plain records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..model import (
    EpochLog,
    accepts_missing,
    at_size,
    declared_categorical,
    model_size,
    predict_text,
    predict_with_confidence,
    refit,
    update,
    update_method,
    update_obstacle,
)
from .features import Feature, FeatureSchema, TypeSetCount, as_model_frame, complete_kinds, infer_schema
from .labels import canonical_text, class_type, predictions_text, readable
from .learners import is_estimator_classifier, learner_accepts_missing, make_learner
from .records import ModelVersion
from .rows import RESERVED_COLUMNS, FeatureSchemaError, check_feature_names


@dataclass(frozen=True)
class TrainingPlan:
    """What a run trains: an update of the champion, or a refit (of the champion's family, or of
    `learner` when the run names one or there is no champion)."""

    update: bool
    reason: str
    learner: str | None = None

    @property
    def mode(self) -> str:
        return "update" if self.update else "refit"

    @property
    def name(self) -> str:
        """The candidate's name in a race: `update`, `refit` (the champion's family) or its learner."""
        return "update" if self.update else (self.learner or "refit")


def trains_new_model(champion: ModelVersion | None, named_learner: str | None,
                     champion_unusable: str | None = None) -> bool:
    """Whether a run builds a model of its own (no champion, the run names a learner, or the champion's
    file is unusable) rather than continue or refit the champion's family: then it takes the features
    the log has now."""
    return champion is None or bool(named_learner) or bool(champion_unusable)


def unusable_champion(champion: ModelVersion, problem: str) -> str:
    """Why a run cannot use the champion's model (its file is missing, or fails its sha256): it cannot be
    updated or cloned, so the run refits the default learner and compares with what was deployed."""
    return f"the champion {champion.version}'s file is unusable: {problem}"


def new_model_schema(type_sets: Sequence[TypeSetCount], learner: str) -> FeatureSchema:
    """The schema of a model a run builds: the features most recent rows have, of the kinds their
    values are; missing values as the learner takes them. Keys named like a column of the loaded
    rows (`id`, `confidence`, ...) are metadata a service logged, not features."""
    schema = infer_schema(type_sets, learner_accepts_missing(learner))
    return replace(schema, features=tuple(f for f in schema.features if f.name not in RESERVED_COLUMNS))


def completed_schema(champion: ModelVersion, champion_model: Any, type_sets: Sequence[TypeSetCount]) -> FeatureSchema:
    """The champion's schema with what its registry row lacks: kinds from the log, and whether the
    model accepts missing values (probed)."""
    schema = complete_kinds(champion.schema, type_sets)
    if schema.accepts_missing is None:
        schema = schema.with_missing(accepts_missing(champion_model, schema))
    return schema


def plan_training(
    champion: ModelVersion | None, champion_model: Any, error_labels: Sequence[str], *, from_scratch: bool,
    named_learner: str | None, default_learner: str, growth: float, champion_unusable: str | None = None,
) -> TrainingPlan:
    """Update when the champion supports it and no error label is new to it; else refit.

    A learner the run names replaces the family; with no champion, or one whose file is unusable, the
    default learner is the family.
    """
    if champion is not None and champion_unusable:
        learner = named_learner or default_learner
        return TrainingPlan(False, f"refit with the learner {learner}: {champion_unusable}", learner)
    if champion is None:
        return TrainingPlan(False, f"refit: no champion yet, learner {named_learner or default_learner}",
                            named_learner or default_learner)
    if named_learner:
        return TrainingPlan(False, f"refit with the learner {named_learner} this run names", named_learner)
    if from_scratch:
        return TrainingPlan(False, f"refit of the champion {champion.version}'s family, as asked")
    obstacle = update_obstacle(champion_model, error_labels, base_size=champion.base_size, growth=growth,
                               whole_set=False)
    if obstacle:
        return TrainingPlan(False, f"refit of the champion {champion.version}'s family: {obstacle}")
    method = update_method(champion_model)
    return TrainingPlan(True, f"update of the champion {champion.version} by {method}")


def confirm_plan(plan: TrainingPlan, champion: ModelVersion | None, champion_model: Any,
                 train_labels: Sequence[str], growth: float) -> TrainingPlan:
    """`plan` checked against the whole fine-tuning set: a warm-start update needs every class in it."""
    if not plan.update:
        return plan
    obstacle = update_obstacle(champion_model, train_labels, base_size=champion.base_size, growth=growth)
    if obstacle:
        return TrainingPlan(False, f"refit of the champion {champion.version}'s family: {obstacle}")
    return plan


def refit_skip_reason(plan: TrainingPlan, champion_model: Any, train_labels: Sequence[str]) -> str | None:
    """Why a refit has nothing to learn from (its learnable training rows hold fewer than two classes), or None."""
    if plan.update:
        return None
    kind = label_kind(champion_model)
    labels = np.asarray(train_labels, dtype=object)
    classes = sorted(set(canonical_text(labels[readable(labels, kind)], kind)))
    if len(classes) >= 2:
        return None
    found = f"only {classes[0]!r}" if classes else "no rows"
    return f"skipped: a refit needs at least two classes, and the window's training rows have {found}"


def plan_of_dataset(is_update_set: bool, champion: ModelVersion | None, *, named_learner: str | None,
                    default_learner: str, champion_unusable: str | None = None) -> TrainingPlan:
    """The plan a fine-tuning set was built for, read back from it (a window sample means a refit)."""
    if is_update_set and champion is not None and not champion_unusable:
        return TrainingPlan(True, f"update of the champion {champion.version}")
    learner = named_learner or (None if champion and not champion_unusable else default_learner)
    return TrainingPlan(False, "refit", learner)


def label_kind(champion_model: Any) -> str:
    """The class type a challenger learns: the champion's (a serving system expects it), else text."""
    return "str" if champion_model is None else class_type(champion_model.classes_)


def labels_set_aside(champion_model: Any, labels: Sequence[str]) -> int:
    """How many training labels a challenger cannot learn: not of the champion's class type."""
    return int((~readable(labels, label_kind(champion_model))).sum())


def learnable(champion_model: Any, X: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The training rows whose label reads as the champion's class type (the others are set aside)."""
    labels = np.asarray(labels, dtype=object)
    keep = readable(labels, label_kind(champion_model))
    return X[keep], labels[keep]


def train_challenger(
    plan: TrainingPlan, champion: ModelVersion | None, champion_model: Any, X: pd.DataFrame,
    labels: Sequence[str], schema: FeatureSchema, *, epochs: int, learning_rate: float, growth: float,
    seed: int = 0,
) -> tuple[Any, list[EpochLog]]:
    """The challenger `plan` asks for, fitted on (X, labels); the champion is left untouched."""
    X, labels = learnable(champion_model, X, labels)
    if plan.update:
        return update(champion_model, X, labels, schema.names, epochs=epochs, learning_rate=learning_rate,
                      growth=growth, base_size=champion.base_size, seed=seed)
    template = (make_learner(plan.learner, schema, seed) if plan.learner
                else at_size(champion_model, champion.base_size))
    return refit(template, X, labels, schema.names, label_kind(champion_model)), []


def errors_it_still_makes(champion_model: Any, schema: FeatureSchema, rows: pd.DataFrame,
                          threshold: float) -> tuple[pd.DataFrame, str | None]:
    """The rows (logged by earlier versions) the champion itself gets wrong with confidence above
    `threshold` when it scores them: its prediction and probability replace the logged ones. With
    no way to score them (no `predict_proba`, or rows it cannot take), none, and why."""
    if rows.empty:
        return rows, None
    try:
        predicted, confidence = predict_with_confidence(champion_model, as_model_frame(rows, schema), schema.names)
    except Exception as exc:  # the user's model: whatever it raises, only its own logged errors are used
        return rows.iloc[0:0], f"the champion cannot score earlier rows by predict_proba ({type(exc).__name__})"
    truth = holdout_truth(rows, label_kind(champion_model))
    wrong = (predicted != truth) & (confidence > threshold)
    return rows[wrong].assign(predicted_label=predicted[wrong], confidence=confidence[wrong]), None


def version_name(now: datetime, run_id: str) -> str:
    """A new model version's name: UTC time of training, then the run's id."""
    return f"{now:%Y%m%d-%H%M%S}-{run_id[:8]}"


def challenger_record(
    model: Any, plan: TrainingPlan, champion: ModelVersion | None, *, version: str, artifact_path: str,
    sha256: str, schema: FeatureSchema, training_run_id: str | None,
) -> ModelVersion:
    """The registry row of a challenger: an update descends from the champion and keeps its base size;
    whether it accepts missing values is probed on the challenger itself."""
    parent = champion if plan.update else None
    base = (champion.base_size or model_size(model)) if plan.update else model_size(model)
    return ModelVersion(
        version=version, artifact_path=artifact_path, sha256=sha256, feature_names=schema.names,
        feature_schema=schema.with_missing(accepts_missing(model, schema)),
        classes=tuple(predictions_text(model.classes_)), class_type=class_type(model.classes_),
        parent_version=parent.version if parent else None, training_run_id=training_run_id,
        fine_tuned=plan.update, base_size=base,
    )


def training_log(header: dict[str, Any], epochs: Sequence[EpochLog]) -> str:
    """The training log: one JSON line describing the fit, then one per epoch."""
    lines = [header, *({"epoch": e.epoch, "loss": e.loss, "seconds": e.seconds} for e in epochs)]
    return "\n".join(json.dumps(line) for line in lines) + "\n"


def holdout_truth(holdout: pd.DataFrame, kind: str) -> np.ndarray:
    """The holdout's true labels as text comparable with a model of class type `kind`."""
    return canonical_text(holdout["actual_label"], kind)


def baseline_predictions(champion_model: Any, champion_schema: FeatureSchema | None, holdout: pd.DataFrame,
                         kind: str, champion_unusable: str | None = None) -> tuple[np.ndarray, str]:
    """What the challenger is compared with, and a note saying which: the champion's predictions, or
    what the deployed model actually predicted (the log's `predicted_label`) with no champion, when
    the holdout lacks the champion's features (a run that built a model on the features the log has
    now), when the champion cannot predict the holdout (a category its encoder refuses, say), or when its
    file is unusable (`champion_unusable`: why)."""
    if champion_model is None:
        note = champion_unusable or "no champion"
        return canonical_text(holdout["predicted_label"], kind), f"{note}: compared with what was deployed"
    if not set(champion_schema.names) <= set(holdout.columns):
        note = "the holdout lacks the champion's features: compared with what was deployed"
    else:
        try:
            frame = as_model_frame(holdout, champion_schema)  # text where the champion takes numbers: a ValueError
        except ValueError as exc:
            note = f"the holdout does not fit the champion's features ({type(exc).__name__}): compared with what was deployed"
        else:
            try:
                return predict_text(champion_model, frame, champion_schema.names), "the champion"
            except Exception as exc:  # the user's model: whatever it raises, the comparison goes on
                # Only the exception's type: its message may quote logged values, and users may read run metrics.
                note = (f"the champion cannot predict the holdout ({type(exc).__name__}): compared with what was "
                        "deployed")
    return canonical_text(holdout["predicted_label"], kind), note


class NotAClassifier(ValueError):
    """A file offered as a model is not a fitted scikit-learn classifier with feature names."""


@dataclass(frozen=True)
class ModelDescription:
    """What the registry records about a user's model."""

    feature_names: tuple[str, ...]
    schema: FeatureSchema  # the kinds the model says (its encoders); the others are inferred from the log
    classes: tuple[str, ...]
    class_type: str
    base_size: int | None


def describe_model(model: Any, feature_names: Sequence[str] | None = None,
                   categorical: Sequence[str] | None = None) -> ModelDescription:
    """Feature names and schema, classes and size of a fitted classifier, or `NotAClassifier` saying
    what is wrong. Features are categorical where the model's encoders say so or `categorical` names
    them; the other kinds are left to the log."""
    if not is_estimator_classifier(model):
        raise NotAClassifier(f"a {type(model).__module__}.{type(model).__name__} is not a scikit-learn classifier")
    try:
        check_is_fitted(model)
        classes = model.classes_
    except (NotFittedError, AttributeError):
        raise NotAClassifier(f"the {type(model).__name__} is not fitted: fit it before registering it") from None
    own = getattr(model, "feature_names_in_", None)
    own = tuple(str(n) for n in own) if own is not None else None
    given = tuple(n.strip() for n in feature_names) if feature_names else None
    if own and given and set(own) != set(given):
        raise NotAClassifier(f"the feature names given {list(given)} differ from those the model was fitted with "
                             f"{list(own)}")
    if given and len(set(given)) != len(given):
        raise NotAClassifier(f"the feature names given {list(given)} repeat a name")
    names = own or given
    if not names:
        raise NotAClassifier("the model was fitted without feature names: give them (--feature-names a,b,c), in "
                             "the order of its input columns")
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and expected != len(names):
        raise NotAClassifier(f"the model takes {expected} features, but {len(names)} names were given")
    try:
        check_feature_names(names)
    except FeatureSchemaError as exc:  # every run would refuse them: refuse them now
        raise NotAClassifier(f"{exc}: the loop cannot feed this model, register one fitted on other names") from None
    unknown = sorted(set(categorical or ()) - set(names))
    if unknown:
        raise NotAClassifier(f"categorical features {unknown} are not among the model's features {list(names)}")
    text = declared_categorical(model, names) | set(categorical or ())
    schema = FeatureSchema(tuple(Feature(n, "categorical" if n in text else None) for n in names))
    if all(f.kind for f in schema.features):  # else probed once the log has told the kinds
        schema = schema.with_missing(accepts_missing(model, schema))
    return ModelDescription(names, schema, tuple(predictions_text(classes)), class_type(classes), model_size(model))
