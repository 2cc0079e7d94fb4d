"""Drift recovery: does the loop do its job? Days of traffic, five strategies, the same streams and seeds.

    python -m benchmarks.drift --days 60 --rows-per-day 2000 --seeds 0 1 2

Each day the deployed model predicts that day's rows, the outcomes are logged (with 1 % broken
rows), then each strategy's daily step runs and may replace the model for the next day:

1. never     never retrain;
2. naive     update on the window's confident errors only, always promote;
3. default   this project's cycle: confident errors + replayed correct rows, an update (or a refit when
             the champion cannot be updated), promoted only through the gate. With `--real` (the
             reported run) it is the real `retraining_job` on embedded PostgreSQL, one Dagster run per
             day; otherwise the same core functions the assets call (`reinforcement_assets.core.cycle`), in
             the same order, on the log held in memory (used for the sweeps);
4. scratch   refit the learner on the whole window every day and deploy it (the ceiling);
5. river     river's StandardScaler | OneVsRest(LogisticRegression), predicting then learning every
             row as it arrives (it sees each outcome at once, which no batch strategy does);
6. hgb_loop  a user's HistGradientBoostingClassifier champion through the default cycle (its updates
             add boosting iterations; refits clone it);
7. hgb_daily a daily refit of that HistGradientBoostingClassifier on the window, always deployed.

The family of 1-4 is `--learner` (default: the fresh-install default, `REINFORCEMENT_LEARNER`).

Streams: `abrupt`, `gradual` (over 10 days) and `stable` from `reinforcement_assets.core.drift_data`,
`hyperplane` (river `Hyperplane`, the plane starts rotating on the drift day) and `rbf` (river
`RandomRBFDrift`, centroids start moving on the drift day); all generated on the fly.
Results: `benchmarks/results/<output>.json`, `docs/drift_accuracy.png`.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from reinforcement_assets import settings
from reinforcement_assets.core.cycle import (
    TrainingPlan,
    challenger_record,
    confirm_plan,
    errors_it_still_makes,
    plan_training,
    refit_skip_reason,
)
from reinforcement_assets.core.race import (
    Trained,
    judge_race,
    race_plans,
    train_race,
)
from reinforcement_assets.core.dataset import (
    finetune_frame, from_scratch_frame, holdout_of, newest_first, replay_size, split_holdout,
)
from reinforcement_assets.core.drift_data import make_stream
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.core.evaluation import classification_metrics
from reinforcement_assets.core.labels import class_type, predictions_text
from reinforcement_assets.core.metrics import GATE_METRICS
from reinforcement_assets.core.outliers import set_aside_outliers
from reinforcement_assets.core.learners import make_learner
from reinforcement_assets.core.records import ModelVersion, Window
from reinforcement_assets.core.rows import rows_from_records
from reinforcement_assets.demo import log_traffic
from reinforcement_assets.model import model_size, predict_text, train_from_scratch, update_method

from .machine import DOCS_DIR, begin_benchmark, embedded_server, save, scratch_database

STREAMS = ("abrupt", "gradual", "stable", "hyperplane", "rbf", "fraud")
STRATEGIES = ("never", "naive", "default", "scratch", "river", "river_arf", "hgb_loop", "hgb_daily", "race_hgb")
FRAUD_SHARE = 0.02  # positives in the `fraud` stream
HGB = "hist_gradient_boosting"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
BAD_ROW_SHARE = 0.01
GRADUAL_DAYS = 10


@dataclass(frozen=True)
class Stream:
    """Rows to train the first model on, then one (X, y) per day; `drift_day` is the first drifted day (1-based)."""

    name: str
    pretrain: tuple[pd.DataFrame, np.ndarray]
    days: list[tuple[pd.DataFrame, np.ndarray]]
    drift_day: int | None


@dataclass(frozen=True)
class Params:
    """The knobs of the default strategy (defaults: `reinforcement_assets.settings`)."""

    replay_ratio: float = settings.REPLAY_RATIO
    epochs: int = settings.DEFAULT_FINE_TUNE_EPOCHS
    learning_rate: float = settings.DEFAULT_LEARNING_RATE
    significance_level: float = settings.SIGNIFICANCE_LEVEL
    non_inferiority_margin: float = settings.NON_INFERIORITY_MARGIN
    confidence_threshold: float = settings.ERROR_CONFIDENCE_THRESHOLD
    min_error_samples: int = settings.MIN_ERROR_SAMPLES_FOR_RETRAINING
    lookback_days: float = settings.DEFAULT_LOOKBACK_DAYS
    holdout_share: float = settings.HOLDOUT_SHARE
    learner: str = settings.LEARNER
    update_growth: float = settings.UPDATE_GROWTH
    gate_metric: str = settings.GATE_METRIC
    challengers: tuple[str, ...] = settings.CHALLENGERS
    label_delay_days: int = 0  # outcomes arrive this many days after the prediction

    def label(self) -> str:
        return (f"learner {self.learner}, replay {self.replay_ratio:g}, epochs {self.epochs}, "
                f"lr {self.learning_rate:g}, growth {self.update_growth:g}, margin {self.non_inferiority_margin:g}, "
                f"alpha {self.significance_level:g}, gate {self.gate_metric}, "
                f"challengers {', '.join(self.challengers) or 'none'}, label delay {self.label_delay_days} d")


@dataclass
class Trace:
    """What one strategy did on one stream."""

    accuracy: list[float] = field(default_factory=list)  # per day, of the model deployed that day
    macro_f1: list[float] = field(default_factory=list)
    minority_recall: list[float] = field(default_factory=list)  # recall of the day's rarest true class
    promotions: int = 0
    bad_promotions: int = 0
    retrains: int = 0
    train_seconds: float = 0.0   # fitting only
    cycle_seconds: float = 0.0   # the whole daily step (loading, fitting, gating, recording)
    promoted_on: list[int] = field(default_factory=list)  # the days whose cycle promoted


# Streams.

def project_stream(kind: str, days: int, rows_per_day: int, pretrain_rows: int, drift_day: int,
                   seed: int) -> Stream:
    """`abrupt`, `gradual` or `stable` from the project's generator (10 features, 3 classes)."""
    total = pretrain_rows + days * rows_per_day
    drift_at = (pretrain_rows + (drift_day - 1) * rows_per_day) / total
    drift = {"abrupt": "abrupt", "gradual": "gradual", "stable": "none"}[kind]
    X, y, _ = make_stream(total, drift=drift, drift_at=drift_at,
                          drift_width=GRADUAL_DAYS * rows_per_day / total, seed=seed)
    return _cut(kind, X, y, pretrain_rows, rows_per_day, None if kind == "stable" else drift_day)


def river_stream(kind: str, days: int, rows_per_day: int, pretrain_rows: int, drift_day: int,
                 seed: int) -> Stream:
    """`hyperplane` or `rbf` from river's synthetic generators, drifting from `drift_day` on."""
    from river.datasets import synth

    if kind == "hyperplane":
        generator = synth.Hyperplane(seed=seed, n_features=10, n_drift_features=5, noise_percentage=0.02)
        attribute, speed = "mag_change", 0.001
    else:
        generator = synth.RandomRBFDrift(seed_model=seed, seed_sample=seed + 1, n_classes=4, n_features=10,
                                         n_centroids=20, n_drift_centroids=20)
        attribute, speed = "change_speed", 0.0001
    setattr(generator, attribute, 0.0)
    drift_start = pretrain_rows + (drift_day - 1) * rows_per_day
    total = pretrain_rows + days * rows_per_day
    rows, labels = [], []
    for i, (x, label) in enumerate(generator.take(total)):
        if i == drift_start:
            setattr(generator, attribute, speed)
        rows.append([x[k] for k in sorted(x)])
        labels.append(f"class_{label}")
    X = pd.DataFrame(rows, columns=[f"x{j}" for j in range(len(rows[0]))])
    return _cut(kind, X, np.asarray(labels, dtype=object), pretrain_rows, rows_per_day, drift_day)


def fraud_stream(days: int, rows_per_day: int, pretrain_rows: int, drift_day: int, seed: int) -> Stream:
    """`fraud`: about 2 % positives whose pattern changes on `drift_day` (the weights on the features
    rotate), with numeric features of unequal scales."""
    rng = np.random.default_rng(seed)
    total = pretrain_rows + days * rows_per_day
    scale, offset = 10.0 ** rng.uniform(-1, 1, 10), rng.uniform(-3, 3, 10)
    Z = rng.standard_normal((total, 10))
    before, after = rng.standard_normal(10), rng.standard_normal(10)
    drift_start = pretrain_rows + (drift_day - 1) * rows_per_day
    score = np.where(np.arange(total) < drift_start, Z @ before, Z @ after) + 0.3 * rng.standard_normal(total)
    threshold = np.quantile(Z[:drift_start] @ before, 1 - FRAUD_SHARE)
    threshold_after = np.quantile(Z[drift_start:] @ after, 1 - FRAUD_SHARE) if drift_start < total else threshold
    cut = np.where(np.arange(total) < drift_start, threshold, threshold_after)
    y = np.where(score > cut, "fraud", "ok").astype(object)
    X = pd.DataFrame(Z * scale + offset * scale, columns=[f"x{j}" for j in range(10)])
    return _cut("fraud", X, y, pretrain_rows, rows_per_day, drift_day)


def _cut(name: str, X: pd.DataFrame, y: np.ndarray, pretrain_rows: int, rows_per_day: int,
         drift_day: int | None) -> Stream:
    days = []
    for start in range(pretrain_rows, len(X), rows_per_day):
        days.append((X.iloc[start:start + rows_per_day].reset_index(drop=True), y[start:start + rows_per_day]))
    return Stream(name, (X.iloc[:pretrain_rows].reset_index(drop=True), y[:pretrain_rows]), days, drift_day)


def make_streams(names: Iterable[str], days: int, rows_per_day: int, pretrain_rows: int, drift_day: int,
                 seed: int) -> list[Stream]:
    made = []
    for name in names:
        if name == "fraud":
            made.append(fraud_stream(days, rows_per_day, pretrain_rows, drift_day, seed))
            continue
        build = river_stream if name in ("hyperplane", "rbf") else project_stream
        made.append(build(name, days, rows_per_day, pretrain_rows, drift_day, seed))
    return made


# The log, held in memory for the strategies that do not run on the database.

def day_bounds(day: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of simulated day `day` (1-based)."""
    start = pd.Timestamp(START) + pd.Timedelta(days=day - 1)
    return start, start + pd.Timedelta(days=1)


def logged_day(model, X: pd.DataFrame, y: np.ndarray, day: int, version: str, seed: int,
               delay_days: int = 0) -> pd.DataFrame:
    """What the deployed `model` logged on `day`, with `BAD_ROW_SHARE` broken rows; its outcomes are
    evaluated `delay_days` later."""
    start, end = day_bounds(day + delay_days)
    log, _ = log_traffic(model, X, y, start, end, model_version=version, bad_row_share=BAD_ROW_SHARE,
                         seed=seed * 1000 + day, prefix=f"day{day}")
    return log


def usable_rows(log: pd.DataFrame, names: Sequence[str], first_id: int) -> pd.DataFrame:
    """The usable rows of a day's log, as `load_rows` returns them (bad rows set aside by
    `rows_from_records`), with the version that predicted them (one per day)."""
    rows, _ = rows_from_records(log.assign(id=np.arange(len(log)) + first_id).to_dict("records"),
                                FeatureSchema.numeric(names))
    return rows.assign(model_version=log["model_version"].iloc[0] if len(log) else None)


def window_rows(days: list[pd.DataFrame], window: Window) -> pd.DataFrame:
    """The usable rows of `days` that fall in the window."""
    frame = pd.concat(days, ignore_index=True)
    return frame[(frame["evaluated_at"] >= window.start) & (frame["evaluated_at"] < window.end)]


@dataclass
class Champion:
    """The deployed model and its registry record (what the core functions decide on)."""

    record: ModelVersion
    model: Any


def champion_of(model, version: str, names: Sequence[str]) -> Champion:
    """A model as the registry would record it on registration."""
    return Champion(ModelVersion(version=version, artifact_path=f"models/{version}.joblib", sha256="0" * 64,
                                 feature_names=tuple(names), feature_schema=FeatureSchema.numeric(names), classes=tuple(predictions_text(model.classes_)),
                                 class_type=class_type(model.classes_), base_size=model_size(model)), model)


def stream_learner(stream: Stream, params: Params, seed: int) -> Any:
    """The unfitted learner `params` names, for the stream's (numeric) features."""
    return make_learner(params.learner, FeatureSchema.numeric(stream.pretrain[0].columns), seed)


def uniform_sample(rows: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to `n` rows drawn uniformly, in time order (the store's `sample_key` samples uniformly too)."""
    return rows if len(rows) <= n else rows.iloc[np.sort(rng.choice(len(rows), size=n, replace=False))]


def pure_cycle(champion: Champion, rows: pd.DataFrame, window: Window, params: Params, names: Sequence[str],
               rng: np.random.Generator, naive: bool = False, day: int = 0):
    """The assets' steps on in-memory rows, their decisions made by the same core functions
    (`plan_training`, `confirm_plan`, `refit_skip_reason`, `race_plans`, `train_race`, `judge_race`).

    Only the row selection (the store's part) is done here, in memory. Returns (new Champion or
    None, seconds spent fitting, retrained?). `naive`: errors only, always promoted.
    """
    schema = FeatureSchema.numeric(names)
    train, holdout = split_holdout(rows, window.holdout_share)
    wrong = train["predicted_label"] != train["actual_label"]
    confident = train["confidence"] > params.confidence_threshold
    own = train["model_version"] == champion.record.version
    if naive:  # the log's errors, whoever made them
        errors = newest_first(train[wrong & confident])
    else:  # as error_samples: the champion's own, and earlier versions' it still makes
        rescored, _ = errors_it_still_makes(champion.model, schema,
                                            uniform_sample(train[~own], settings.MAX_ERROR_ROWS, rng),
                                            params.confidence_threshold)
        errors = newest_first(train[wrong & confident & own], rescored)
    errors = newest_first(errors).head(settings.MAX_ERROR_ROWS)
    if len(errors) < params.min_error_samples:
        return None, 0.0, False
    holdout = uniform_sample(holdout, settings.MAX_HOLDOUT_ROWS, rng)
    sample = uniform_sample(train, settings.MAX_TRAINING_ROWS, rng)
    plan = plan_training(champion.record, champion.model, errors["actual_label"], from_scratch=False,
                         named_learner=None, default_learner=params.learner, growth=params.update_growth)
    if naive:
        if update_method(champion.model) is None:
            return None, 0.0, False
        plans, dataset = [TrainingPlan(True, "naive")], finetune_frame(errors, errors.iloc[0:0], holdout)
    else:
        if plan.update:
            replay = uniform_sample(train[~wrong], replay_size(len(errors), params.replay_ratio,
                                                               settings.MAX_TRAINING_ROWS), rng)
            plan = confirm_plan(plan, champion.record, champion.model,
                                pd.concat([errors["actual_label"], replay["actual_label"]]), params.update_growth)
        dataset = (finetune_frame(errors, replay, holdout, sample) if plan.update
                   else from_scratch_frame(sample, holdout))
        if refit_skip_reason(plan, champion.model, sample["actual_label"]):  # as finetune_dataset
            return None, 0.0, False
        plans = race_plans(plan, champion.record, params.challengers)
    dataset, _ = set_aside_outliers(dataset, schema)
    trained = train_race(plans, champion.record, champion.model, dataset, schema, epochs=params.epochs,
                         learning_rate=params.learning_rate, growth=params.update_growth)
    seconds = sum(t.seconds for t in trained)
    fitted = {t.plan.name: t for t in trained if t.model is not None}
    if not fitted:  # e.g. a naive update meeting a new label
        return None, seconds, False
    if naive:
        only = next(iter(fitted.values()))
        return Champion(record_of(only, champion, schema, day), only.model), seconds, True
    verdict = judge_race([(name, t.model) for name, t in fitted.items()], schema, champion.model,
                         champion.record.schema, holdout_of(dataset), metric=params.gate_metric,
                         significance_level=params.significance_level, margin=params.non_inferiority_margin,
                         failures={t.plan.name: t.error for t in trained if t.model is None})
    winner = verdict.decision.winner
    return (Champion(record_of(fitted[winner], champion, schema, day), fitted[winner].model) if winner
            else None), seconds, True


def record_of(trained: Trained, champion: Champion, schema: FeatureSchema, day: int) -> ModelVersion:
    """The registry row a trained candidate would get."""
    return challenger_record(trained.model, trained.plan, champion.record, version=f"day{day}-{trained.plan.name}",
                             artifact_path="", sha256="0" * 64, schema=schema, training_run_id=None)


def score_day(trace: Trace, predicted, y: np.ndarray) -> None:
    """Add a day's accuracy, macro-F1 and recall of its rarest true class to `trace`."""
    truth, predicted = predictions_text(y), np.asarray(predicted, dtype=object)
    metrics = classification_metrics(truth, predicted)
    labels, counts = np.unique(truth, return_counts=True)
    rare = truth == labels[np.argmin(counts)]
    trace.accuracy.append(metrics["accuracy"])
    trace.macro_f1.append(metrics["macro_f1"])
    trace.minority_recall.append(float(np.mean(predicted[rare] == truth[rare])))


def day_metric(model, X: pd.DataFrame, y: np.ndarray, metric: str) -> float:
    return classification_metrics(predictions_text(y), predict_text(model, X, list(X.columns)))[metric]


def _count_promotion(trace: Trace, previous, promoted, stream: Stream, day: int, metric: str = "accuracy") -> None:
    """Record a promotion at the end of `day`; bad if worse than the replaced model on the next day's
    rows, in the gate's metric."""
    trace.promotions += 1
    trace.promoted_on.append(day)
    if day < len(stream.days):
        X_next, y_next = stream.days[day]
        if day_metric(promoted, X_next, y_next, metric) < day_metric(previous, X_next, y_next, metric):
            trace.bad_promotions += 1


def simulate_batch(stream: Stream, strategy: str, params: Params, seed: int) -> Trace:
    """Strategies never, naive, scratch, default and the HGB ones on the core functions, over every day of `stream`."""
    names = list(stream.pretrain[0].columns)
    if strategy in ("hgb_loop", "hgb_daily"):
        params = replace(params, learner=HGB)
        strategy = {"hgb_loop": "default", "hgb_daily": "scratch"}[strategy]
    if strategy == "race_hgb":
        params, strategy = replace(params, challengers=(*params.challengers, HGB)), "default"
    model = train_from_scratch(*stream.pretrain, learner=stream_learner(stream, params, seed))
    champion = champion_of(model, "initial", names)
    rng = np.random.default_rng(seed)
    trace, log = Trace(), []
    for day, (X, y) in enumerate(stream.days, start=1):
        score_day(trace, predict_text(champion.model, X, names), y)
        if strategy == "never":
            continue
        started = time.perf_counter()
        log.append(usable_rows(logged_day(champion.model, X, y, day, champion.record.version, seed,
                                          params.label_delay_days), names, first_id=day * len(y)))
        window = Window.ending_at(day_bounds(day)[1].to_pydatetime(), params.lookback_days, params.holdout_share)
        log = [frame for frame in log if len(frame) and frame["evaluated_at"].max() >= window.start]
        rows = window_rows(log, window)
        if rows.empty:  # outcomes not in yet
            continue
        if strategy == "scratch":
            fit_started = time.perf_counter()
            new_model = train_from_scratch(rows[names], rows["actual_label"].to_numpy(dtype=object),
                                           learner=stream_learner(stream, params, seed))
            new = champion_of(new_model, f"day{day}", names)
            trace.train_seconds += time.perf_counter() - fit_started
            retrained = True
        else:
            new, seconds, retrained = pure_cycle(champion, rows, window, params, names, rng,
                                                 naive=strategy == "naive", day=day)
            trace.train_seconds += seconds
        trace.retrains += retrained
        if new is not None:
            _count_promotion(trace, champion.model, new.model, stream, day, params.gate_metric)
            champion = new
        trace.cycle_seconds += time.perf_counter() - started
    return trace


def simulate_river(stream: Stream, seed: int, forest: bool = False) -> Trace:
    """river, online: predict each row, then learn its outcome at once. Its logistic regression
    (scaled, one-vs-rest), or with `forest` its adaptive random forest (`ARFClassifier`)."""
    from river import forest as river_forest
    from river import linear_model, multiclass, preprocessing

    if forest:
        model = river_forest.ARFClassifier(n_models=10, seed=seed)
    else:
        model = preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
    started = time.perf_counter()
    for x, label in zip(stream.pretrain[0].to_dict("records"), stream.pretrain[1]):
        model.learn_one(x, label)
    trace = Trace()
    for X, y in stream.days:
        predicted = []
        for x, label in zip(X.to_dict("records"), y):
            predicted.append(model.predict_one(x))
            model.learn_one(x, label)
        score_day(trace, [str(v) for v in predicted], y)
    trace.train_seconds = trace.cycle_seconds = time.perf_counter() - started
    return trace


def simulate_real(stream: Stream, params: Params, seed: int, server_url: str, work_dir) -> Trace:
    """The default strategy through the real `retraining_job` on embedded PostgreSQL, one run per day."""
    import dagster as dg

    from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage
    from reinforcement_assets.backends.postgres_store import PostgresStore
    from reinforcement_assets.defs.assets import asset_checks, assets
    from reinforcement_assets.defs.automation import retraining_job
    from reinforcement_assets.demo import register_champion

    from .scale import step_times

    name = f"bench_drift_{stream.name}_{seed}"
    with scratch_database(server_url, name) as url:
        store = PostgresStore(database_url=url)
        artifacts = LocalArtifactStorage(base_dir=str(work_dir / name))
        resources = {"store": store, "artifacts": artifacts, "io_manager": ArtifactIOManager(storage=artifacts)}
        job = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[retraining_job],
                             resources=resources).resolve_job_def("retraining_job")
        instance = dg.DagsterInstance.ephemeral()
        model = train_from_scratch(*stream.pretrain, learner=stream_learner(stream, params, seed))
        version = register_champion(store, artifacts, model, "initial", "trained before day 1").version
        trace = Trace()
        config = {
            "error_samples": {"config": {"confidence_threshold": params.confidence_threshold}},
            "finetune_dataset": {"config": {"replay_ratio": params.replay_ratio,
                                            "min_error_samples": params.min_error_samples}},
            "retrained_model": {"config": {"epochs": params.epochs, "learning_rate": params.learning_rate,
                                           "update_growth": params.update_growth,
                                           "challengers": list(params.challengers)}},
            "run_metrics": {"config": {"significance_level": params.significance_level,
                                       "non_inferiority_margin": params.non_inferiority_margin,
                                       "gate_metric": params.gate_metric}},
        }
        for day, (X, y) in enumerate(stream.days, start=1):
            score_day(trace, predict_text(model, X, list(X.columns)), y)
            store.insert_evaluations(logged_day(model, X, y, day, version, seed, params.label_delay_days))
            run_config = copy.deepcopy(config)
            run_config["evaluation_log"] = {"config": {
                "window_end": day_bounds(day)[1].isoformat(), "lookback_days": params.lookback_days,
                "holdout_share": params.holdout_share}}
            started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance, tags={"source": "auto_daily"}, raise_on_error=False,
                run_config=dg.RunConfig(run_config, loggers={"console": {"config": {"log_level": "ERROR"}}}))
            trace.cycle_seconds += time.perf_counter() - started
            if not result.success:
                raise RuntimeError(f"retraining_job failed on day {day} of {stream.name}")
            spans = step_times(instance, result.run_id)
            if "retrained_model" in spans:
                trace.retrains += 1
                trace.train_seconds += spans["retrained_model"]["end"] - spans["retrained_model"]["start"]
            champion = store.champion()
            if champion.version != version:
                promoted = artifacts.read_value(champion.artifact_path, champion.sha256)
                _count_promotion(trace, model, promoted, stream, day, params.gate_metric)
                model, version = promoted, champion.version
        return trace


# Summaries.

def ceiling_level(scratch: list[float], last_days: int = 10) -> float:
    """The level the ceiling (retrain from scratch daily) settles at: its mean over the last `last_days` days."""
    return float(np.mean(scratch[-last_days:]))


def days_to_recover(trace: list[float], level: float, drift_day: int, tolerance: float = 0.05) -> int | None:
    """Daily cycles after the first drifted day until accuracy is back within `tolerance` (relative) of
    `level` and stays there to the end of the run; None if it never settles there.

    0: the strategy never left that range; 2: back on the second day after the first drifted day
    (two cycles ran on drifted data) and never out again.
    """
    floor = (1 - tolerance) * level
    after = trace[drift_day - 1:]
    for offset in range(len(after)):
        if all(value >= floor for value in after[offset:]):
            return offset
    return None


def days_to_track(trace: list[float], ceiling: list[float], drift_day: int, tolerance: float = 0.05) -> int | None:
    """Daily cycles after the first drifted day until accuracy is within `tolerance` of the ceiling's on the
    same day, and stays so to the end of the run; None if never."""
    pairs = list(zip(trace, ceiling))[drift_day - 1:]
    for offset in range(len(pairs)):
        if all(value >= (1 - tolerance) * top for value, top in pairs[offset:]):
            return offset
    return None


def summarise(traces: dict[str, Trace], stream: Stream) -> dict[str, dict[str, Any]]:
    """Per strategy: mean accuracy after the drift, days to recover, promotions, bad ones, compute time."""
    after = slice((stream.drift_day or 1) - 1, None)
    scratch = traces["scratch"].accuracy if "scratch" in traces else None
    ceiling = ceiling_level(scratch) if scratch else None
    out = {}
    for strategy, trace in traces.items():
        out[strategy] = {
            "mean_accuracy_after_drift": float(np.mean(trace.accuracy[after])),
            "mean_macro_f1_after_drift": float(np.mean(trace.macro_f1[after])),
            "mean_minority_recall_after_drift": float(np.mean(trace.minority_recall[after])),
            "mean_accuracy": float(np.mean(trace.accuracy)),
            "days_to_within_5pct_of_scratch": (days_to_recover(trace.accuracy, ceiling, stream.drift_day)
                                               if ceiling and stream.drift_day else None),
            "days_to_within_5pct_of_scratch_same_day": (days_to_track(trace.accuracy, scratch, stream.drift_day)
                                                        if scratch and stream.drift_day else None),
            "ceiling_level": ceiling,
            "promotions": trace.promotions,
            "bad_promotions": trace.bad_promotions,
            "retrains": trace.retrains,
            "train_seconds": trace.train_seconds,
            "cycle_seconds": trace.cycle_seconds,
            "accuracy": trace.accuracy,
            "promoted_on": trace.promoted_on,
        }
    return out


def run(streams: Sequence[str], days: int, rows_per_day: int, pretrain_rows: int, drift_day: int,
        seeds: Sequence[int], strategies: Sequence[str] = STRATEGIES, params: Params = Params(),
        server_url: str | None = None, work_dir=None) -> dict[str, Any]:
    """Every strategy on every stream and seed; results keyed by seed, then stream, then strategy.

    With `server_url` (an embedded PostgreSQL) the default strategy runs the real `retraining_job`.
    """
    results: dict[str, Any] = {}
    for seed in seeds:
        for stream in make_streams(streams, days, rows_per_day, pretrain_rows, drift_day, seed):
            traces = {}
            for strategy in strategies:
                if strategy in ("river", "river_arf"):
                    traces[strategy] = simulate_river(stream, seed, forest=strategy == "river_arf")
                elif strategy == "default" and server_url:
                    traces[strategy] = simulate_real(stream, params, seed, server_url, work_dir)
                else:
                    traces[strategy] = simulate_batch(stream, strategy, params, seed)
            results.setdefault(str(seed), {})[stream.name] = {
                "drift_day": stream.drift_day, "strategies": summarise(traces, stream)}
    return results


def aggregate(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians over seeds of each summary figure (accuracy curves: mean per day); stream -> strategy -> figure."""
    seeds = list(results)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for stream in results[seeds[0]]:
        out[stream] = {}
        for strategy in results[seeds[0]][stream]["strategies"]:
            per_seed = [results[s][stream]["strategies"][strategy] for s in seeds]
            recover = [p["days_to_within_5pct_of_scratch"] for p in per_seed]
            track = [p.get("days_to_within_5pct_of_scratch_same_day") for p in per_seed]
            out[stream][strategy] = {
                "mean_accuracy_after_drift": statistics.median(p["mean_accuracy_after_drift"] for p in per_seed),
                "mean_macro_f1_after_drift": statistics.median(p["mean_macro_f1_after_drift"] for p in per_seed),
                "mean_minority_recall_after_drift": statistics.median(p["mean_minority_recall_after_drift"]
                                                                      for p in per_seed),
                "days_to_within_5pct_of_scratch": (None if any(r is None for r in recover)
                                                   else statistics.median(recover)),
                "days_to_recover_per_seed": recover,
                "days_to_track_scratch": (None if any(t is None for t in track) else statistics.median(track)),
                "days_to_track_per_seed": track,
                "promotions": sum(p["promotions"] for p in per_seed),
                "bad_promotions": sum(p["bad_promotions"] for p in per_seed),
                "train_seconds": statistics.median(p["train_seconds"] for p in per_seed),
                "cycle_seconds": statistics.median(p["cycle_seconds"] for p in per_seed),
                "accuracy": np.mean([p["accuracy"] for p in per_seed], axis=0).tolist(),
                "drift_day": results[seeds[0]][stream]["drift_day"],
            }
    return out


def table(agg: dict[str, dict[str, dict[str, Any]]], n_seeds: int) -> str:
    lines = [f"| stream | strategy | mean accuracy after drift | days until back for good within 5 % of scratch's "
             f"settled level | days until for good within 5 % of scratch that day | promotions (sum of {n_seeds} "
             f"seeds) | bad promotions (sum) | training s | whole daily steps s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def days(value, drifted):
        return "never" if value is None and drifted else ("n/a" if value is None else f"{value:g}")

    for stream, strategies in agg.items():
        for strategy, s in strategies.items():
            lines.append(
                f"| {stream} | {strategy} | {s['mean_accuracy_after_drift']:.3f} | "
                f"{days(s['days_to_within_5pct_of_scratch'], s['drift_day'])} | "
                f"{days(s['days_to_track_scratch'], s['drift_day'])} | {s['promotions']:g} | "
                f"{s['bad_promotions']} | {s['train_seconds']:.1f} | {s['cycle_seconds']:.1f} |")
    return "\n".join(lines)


def learner_table(by_learner: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> str:
    """Per stream and learner: the loop (`default`) against a daily refit (`scratch`) of the same family."""
    lines = ["| stream | learner | loop: accuracy after drift | loop: promotions / bad | daily refit: accuracy after "
             "drift | daily refit: bad deployments | loop training s | refit training s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    streams = next(iter(by_learner.values()))
    for stream in streams:
        for learner, agg in by_learner.items():
            loop, refit = agg[stream]["default"], agg[stream]["scratch"]
            lines.append(f"| {stream} | {learner} | {loop['mean_accuracy_after_drift']:.3f} | {loop['promotions']:g} / "
                         f"{loop['bad_promotions']} | {refit['mean_accuracy_after_drift']:.3f} | "
                         f"{refit['bad_promotions']} | {loop['train_seconds']:.1f} | {refit['train_seconds']:.1f} |")
    means = {learner: np.mean([agg[s]["default"]["mean_accuracy_after_drift"] for s in agg])
             for learner, agg in by_learner.items()}
    lines.append("")
    lines.append("Mean over the streams of the loop's accuracy after the drift: "
                 + ", ".join(f"{learner} {value:.3f}" for learner, value in means.items()) + ".")
    return "\n".join(lines)


def plot(agg: dict[str, dict[str, dict[str, Any]]], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    streams = list(agg)
    fig, axes = plt.subplots(len(streams), 1, figsize=(9, 2.6 * len(streams)), sharex=True, squeeze=False)
    styles = {"never": ("grey", ":"), "naive": ("tab:red", "-"), "default": ("tab:blue", "-"),
              "scratch": ("black", "--"), "river": ("tab:green", "-"), "hgb_loop": ("tab:purple", "-"),
              "hgb_daily": ("tab:purple", "--")}
    for ax, stream in zip(axes[:, 0], streams):
        for strategy, s in agg[stream].items():
            color, line = styles.get(strategy, (None, "-"))
            ax.plot(range(1, len(s["accuracy"]) + 1), s["accuracy"], color=color, linestyle=line, label=strategy,
                    linewidth=1.4)
        drift_day = next(iter(agg[stream].values()))["drift_day"]
        if drift_day:
            ax.axvline(drift_day, color="orange", alpha=0.6, linewidth=1)
        ax.set_ylabel("accuracy")
        ax.set_title(stream, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(ncol=7, fontsize=8, loc="lower left")
    axes[-1, 0].set_xlabel("day (orange: first drifted day)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=STREAMS)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--drift-day", type=int, default=31, help="first drifted day (default 31)")
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--pretrain-rows", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--real", action="store_true",
                        help="run the default strategy through the real retraining_job on embedded PostgreSQL")
    parser.add_argument("--data-dir", help="embedded PostgreSQL folder for --real (default: temporary)")
    for name in ("replay_ratio", "learning_rate", "significance_level", "non_inferiority_margin"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(Params(), name))
    parser.add_argument("--epochs", type=int, default=Params().epochs)
    parser.add_argument("--learner", default=Params().learner, help="family of never/naive/default/scratch")
    parser.add_argument("--update-growth", type=float, default=Params().update_growth)
    parser.add_argument("--gate-metric", default=Params().gate_metric, choices=GATE_METRICS)
    parser.add_argument("--challengers", nargs="*", default=list(Params().challengers),
                        help="learners racing beside the update and the refit in `default`")
    parser.add_argument("--label-delay", type=int, default=0, help="days before outcomes arrive")
    parser.add_argument("--output", default="drift")
    parser.add_argument("--plot", default="drift_accuracy.png", help="file name in docs/ ('' for none)")
    args = parser.parse_args(argv)
    begin_benchmark()
    params = Params(replay_ratio=args.replay_ratio, epochs=args.epochs, learning_rate=args.learning_rate,
                    learner=args.learner, update_growth=args.update_growth, gate_metric=args.gate_metric,
                    challengers=tuple(args.challengers), label_delay_days=args.label_delay,
                    significance_level=args.significance_level, non_inferiority_margin=args.non_inferiority_margin)
    print(f"default strategy: {params.label()}{' (real retraining_job)' if args.real else ''}")
    started = time.perf_counter()
    with (embedded_server(args.data_dir) if args.real else nullcontext((None, None))) as (server_url, work_dir):
        results = run(args.streams, args.days, args.rows_per_day, args.pretrain_rows, args.drift_day, args.seeds,
                      args.strategies, params, server_url=server_url, work_dir=work_dir)
    agg = aggregate(results)
    print(table(agg, len(args.seeds)))
    print(f"\n{time.perf_counter() - started:.0f} s")
    path = save(args.output, {"config": {**{k: v for k, v in vars(args).items()}, "params": vars(params)},
                              "aggregate": agg, "per_seed": results})
    print(f"results: {path}")
    if args.plot:
        plot(agg, DOCS_DIR / args.plot)
        print(f"plot: {DOCS_DIR / args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
