"""The race of candidates, as pure functions: which candidates run, training them, judging them
against the champion on the same holdout, and what a lost compare-and-swap means.

Like `cycle`, this imports neither Dagster nor a store backend.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import pandas as pd

from ..model import EpochLog, predict_text
from .cycle import (
    TrainingPlan,
    baseline_predictions,
    holdout_truth,
    labels_set_aside,
    train_challenger,
    version_name,
)
from .dataset import training_set
from .evaluation import RaceDecision, classification_metrics, compare_paired, decide_race
from .features import FeatureSchema, as_model_frame
from .labels import class_type
from .records import ModelVersion


def race_plans(first: TrainingPlan, champion: ModelVersion | None, challengers: Sequence[str]) -> list[TrainingPlan]:
    """A run's candidates, in order: `first` (the update, or the refit `plan_training` chose), a refit of
    the champion's family beside an update, then each challenger learner not in the race yet."""
    plans = [first]
    if first.update:
        plans.append(TrainingPlan(False, f"refit of the champion {champion.version}'s family"))
    for learner in challengers:
        if learner not in {p.name for p in plans}:
            plans.append(TrainingPlan(False, f"refit with the challenger learner {learner}", learner))
    return plans


@dataclass(frozen=True)
class Trained:
    """A candidate of the race once fitted, or why it could not be."""

    plan: TrainingPlan
    model: Any = None
    epochs: tuple[EpochLog, ...] = ()
    train_rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    set_aside: int = 0  # training rows whose label is not of the champion's class type


def train_race(plans: Sequence[TrainingPlan], champion: ModelVersion | None, champion_model: Any,
               dataset: pd.DataFrame, schema: FeatureSchema, *, epochs: int, learning_rate: float, growth: float,
               seed: int = 0) -> list[Trained]:
    """Each plan's candidate, fitted on its part of `dataset` (an update on errors and replay, a refit on
    the window sample). A candidate whose fit raises is kept with the error, and the race goes on."""
    trained = []
    for plan in plans:
        X, labels = training_set(dataset, schema, update=plan.update)
        set_aside = labels_set_aside(champion_model, labels)
        started = time.perf_counter()
        try:
            model, log = train_challenger(plan, champion, champion_model, X, labels, schema, epochs=epochs,
                                          learning_rate=learning_rate, growth=growth, seed=seed)
        except Exception as exc:  # the user's estimator: whatever its fit raises, the other candidates race on
            trained.append(Trained(plan, train_rows=len(labels) - set_aside, seconds=time.perf_counter() - started,
                                   error=f"{type(exc).__name__}: {exc}", set_aside=set_aside))
        else:
            trained.append(Trained(plan, model, tuple(log), len(labels) - set_aside, time.perf_counter() - started,
                                   set_aside=set_aside))
    return trained


def candidate_versions(now: datetime, run_id: str, plans: Sequence[TrainingPlan]) -> list[str]:
    """Each candidate's version name: `version_name`, then the candidate's name as a slug (numbered
    where two learners' names give the same slug)."""
    names: list[str] = []
    for plan in plans:
        slug = re.sub(r"[^a-z0-9]+", "-", plan.name.lower()).strip("-") or "candidate"
        name, n = f"{version_name(now, run_id)}-{slug}", 1
        while name in names:
            n += 1
            name = f"{version_name(now, run_id)}-{slug}-{n}"
        names.append(name)
    return names


@dataclass(frozen=True)
class RaceVerdict:
    """The candidates judged against the baseline on the same holdout rows."""

    decision: RaceDecision
    scores: dict[str, dict[str, float]]  # candidate name -> its metrics on the holdout
    champion: dict[str, float]  # the baseline's metrics on the holdout
    baseline: str  # what the candidates were compared with


def judge_race(candidates: Sequence[tuple[str, Any]], schema: FeatureSchema, champion_model: Any,
               champion_schema: FeatureSchema | None, holdout: pd.DataFrame, *, metric: str,
               significance_level: float, margin: float, seed: int = 0,
               failures: dict[str, str] | None = None, champion_unusable: str | None = None) -> RaceVerdict:
    """Score every (name, model) candidate and the baseline (the champion, or what was deployed) on the
    holdout, and the gate's decision, in the candidates' class type (the champion's). `failures`:
    candidates that could not be trained (name -> why), which lose untested. `champion_unusable`: why the
    champion's file could not be read (then `champion_model` is None), shown as the baseline's note."""
    if not candidates:
        raise ValueError("a race needs at least one trained candidate")
    kind = class_type(candidates[0][1].classes_)
    y_true = holdout_truth(holdout, kind)
    champion_pred, baseline = baseline_predictions(champion_model, champion_schema, holdout, kind, champion_unusable)
    frame = as_model_frame(holdout, schema)
    comparisons, scores, failures = {}, {}, {name: f"not trained ({why})" for name, why in (failures or {}).items()}
    for name, model in candidates:
        try:
            predicted = predict_text(model, frame, schema.names)
        except Exception as exc:  # the user's estimator: a candidate that cannot predict loses, the race goes on
            failures[name] = f"cannot predict the holdout ({type(exc).__name__})"
            continue
        comparisons[name] = compare_paired(y_true, champion_pred, predicted, metric=metric, margin=margin,
                                           significance_level=significance_level, seed=seed)
        scores[name] = classification_metrics(y_true, predicted)
    decision = decide_race(comparisons, metric=metric, significance_level=significance_level, margin=margin,
                           failures=failures)
    return RaceVerdict(decision, scores, classification_metrics(y_true, champion_pred), baseline)


def settle_promotion(decision: RaceDecision, champion_now: ModelVersion | None, version: str) -> RaceDecision:
    """The decision once the compare-and-swap answered: lost if another model became champion meanwhile."""
    if not decision.promote or (champion_now is not None and champion_now.version == version):
        return decision
    reason = (f"not promoted: the champion changed to {champion_now.version if champion_now else 'none'} during "
              f"the run, so this comparison no longer applies ({decision.reason})")
    standings = tuple(replace(s, won=False, reason=f"refused: {reason}") if s.won else s for s in decision.standings)
    return replace(decision, winner=None, reason=reason, standings=standings)
