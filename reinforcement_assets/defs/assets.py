"""The asset graph: evaluation_log -> error_samples -> finetune_dataset -> retrained_model -> run_metrics.

Each asset is a thin shell: it reads through the store, calls the pure functions of `cycle` (the
cycle's decisions), `rows`, `dataset` and `evaluation`, and records what happened in
`model_retraining_runs`.
(No `from __future__ import annotations`: Dagster reads the config and resource annotations.)
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import dagster as dg
import pandas as pd
import pydantic

from .. import settings
from ..backends.artifacts import ArtifactIntegrityError, ArtifactStorage
from ..backends.store import (
    RUN_SOURCES, ModelVersion, Period, RunOutcome, Store, StoreError, Window, WindowSummary, period_query,
)
from ..core.cycle import (
    challenger_record,
    completed_schema,
    confirm_plan,
    errors_it_still_makes,
    label_kind,
    new_model_schema,
    plan_of_dataset,
    plan_training,
    refit_skip_reason,
    trains_new_model,
    training_log,
    unusable_champion,
)
from ..core.race import (
    RaceVerdict,
    Trained,
    candidate_versions,
    judge_race,
    race_plans,
    settle_promotion,
    train_race,
)
from ..core.dataset import (
    finetune_frame,
    from_scratch_frame,
    holdout_of,
    is_update_set,
    leaked_rows,
    newest_first,
    replay_size,
    sample_fraction,
    skip_reason,
)
from ..core.evaluation import RaceDecision
from ..core.features import FeatureSchema, TypeSetCount, complete_kinds, unlogged
from ..core.learners import check_learner
from ..core.metrics import check_gate_metric
from ..core.outliers import OUTLIER_REASON, set_aside_outliers
from ..core.rows import check_feature_names
from ..model import final_estimator
from ..pruning import prune_artifacts
from .request_queue import check_request_run
from .run_end import record_step_failure

GROUP = "reinforcement_loop"


@dataclass(frozen=True)
class EvaluatedWindow:
    """The window a run works on: bounds, the feature schema its rows are judged against and
    statistics (not its rows), and the champion when the run started — the model every later step
    fine-tunes and must beat."""

    window: Window
    schema: FeatureSchema
    summary: WindowSummary
    champion: ModelVersion | None
    unlogged: tuple[str, ...] = ()  # features of the schema no row of the window logs with a value
    champion_schema: FeatureSchema | None = None  # the champion's, its kinds completed from the log
    # Why the champion's file cannot be used (missing, or failing its sha256): every step then refits
    # REINFORCEMENT_LEARNER and compares with what was deployed. None: usable (or no champion).
    champion_unusable: str | None = None

    @property
    def training_period(self) -> Period:
        return self.summary.training_period(self.window)

    @property
    def holdout_period(self) -> Period:
        return self.summary.holdout_period(self.window)


@dataclass(frozen=True)
class Candidate:
    """A candidate of the race as registered (its file is in artifact storage, written once)."""

    name: str  # `update`, `refit` (the champion's family) or a learner
    model: ModelVersion


@dataclass(frozen=True)
class Race:
    """The candidates a run trained, and the champion they have to beat (None: none yet)."""

    candidates: tuple[Candidate, ...]
    baseline: ModelVersion | None
    baseline_schema: FeatureSchema | None = None  # the champion's features, kinds completed from the log
    failed: tuple[tuple[str, str], ...] = ()  # (candidate, why it could not be trained)
    baseline_unusable: str | None = None  # why the champion's file could not be used (EvaluatedWindow)

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)


# Every numeric setting has the range of its environment variable (settings.py): Dagster refuses a value
# out of range when the step reads its config, and `evaluation_log` checks every asset's config of the run
# before any work (`check_run_config`).
class EvaluationLogConfig(dg.Config):
    lookback_days: float = settings.POSITIVE.field(settings.DEFAULT_LOOKBACK_DAYS)
    holdout_share: float = settings.SHARE.field(settings.HOLDOUT_SHARE)
    window_end: Optional[str] = None  # ISO 8601; default: the run's logical time


class ErrorSamplesConfig(dg.Config):
    confidence_threshold: float = settings.PROBABILITY.field(settings.ERROR_CONFIDENCE_THRESHOLD)
    max_errors: int = settings.POSITIVE_COUNT.field(settings.MAX_ERROR_ROWS)


class FinetuneDatasetConfig(dg.Config):
    min_error_samples: int = settings.COUNT.field(settings.MIN_ERROR_SAMPLES_FOR_RETRAINING)
    replay_ratio: float = settings.NON_NEGATIVE.field(settings.REPLAY_RATIO)
    max_training_rows: int = settings.POSITIVE_COUNT.field(settings.MAX_TRAINING_ROWS)
    max_holdout_rows: int = settings.POSITIVE_COUNT.field(settings.MAX_HOLDOUT_ROWS)
    from_scratch: bool = False
    force: bool = False  # retrain even below min_error_samples (a window with no error is still skipped)


class RetrainedModelConfig(dg.Config):
    epochs: int = settings.POSITIVE_COUNT.field(settings.DEFAULT_FINE_TUNE_EPOCHS)  # partial_fit passes of an update
    learning_rate: float = settings.POSITIVE.field(settings.DEFAULT_LEARNING_RATE)  # SGD's eta0, MLP's learning_rate_init
    # Share of the registered size a warm-start update adds.
    update_growth: float = settings.NON_NEGATIVE.field(settings.UPDATE_GROWTH)
    # A built-in name or package.module:factory: the family of this run's refit. Unset: the champion's
    # family (REINFORCEMENT_LEARNER when there is no champion).
    learner: Optional[str] = None
    # Learners racing beside the update and the refit (names or import paths); default CHALLENGERS.
    challengers: list[str] = list(settings.CHALLENGERS)
    seed: int = settings.COUNT.field(0)


class RunMetricsConfig(dg.Config):
    gate_metric: str = settings.GATE_METRIC  # accuracy, balanced_accuracy or macro_f1
    significance_level: float = settings.SHARE.field(settings.SIGNIFICANCE_LEVEL)
    non_inferiority_margin: float = settings.MARGIN.field(settings.NON_INFERIORITY_MARGIN)
    seed: int = settings.COUNT.field(0)  # of the paired bootstrap


class RunConfigError(ValueError):
    """A run's config has a value out of range; the message names the asset and the setting."""


ASSET_CONFIGS = {"evaluation_log": EvaluationLogConfig, "error_samples": ErrorSamplesConfig,
                 "finetune_dataset": FinetuneDatasetConfig, "retrained_model": RetrainedModelConfig,
                 "run_metrics": RunMetricsConfig}


def asset_config(context: dg.AssetExecutionContext, asset: str) -> Any:
    """The config `asset` reads in this run, or a `RunConfigError` naming each bad setting and its range."""
    ops = (context.run.run_config or {}).get("ops", {})
    cls = ASSET_CONFIGS[asset]
    try:
        return cls(**(ops.get(asset, {}).get("config") or {}))
    except pydantic.ValidationError as exc:
        raise RunConfigError("; ".join(config_problem(asset, cls, e) for e in exc.errors())) from None


def config_problem(asset: str, cls: type, error: dict[str, Any]) -> str:
    """One pydantic error as `error_samples.max_errors = -1: must be at least 1`."""
    name = ".".join(str(part) for part in error["loc"])
    field = cls.model_fields.get(str(error["loc"][0])) if error["loc"] else None
    allowed = field.description if field is not None and field.description else error["msg"]
    return f"{asset}.{name} = {error.get('input')!r}: must be {allowed}"


def check_run_config(context: dg.AssetExecutionContext) -> None:
    """Every asset's config of this run in range, so a bad value fails the first step, before any work."""
    for asset in ASSET_CONFIGS:
        asset_config(context, asset)


@contextmanager
def run_record(context: dg.AssetExecutionContext, store: Store) -> Iterator[str]:
    """The run's row in `model_retraining_runs`, created or resumed as `running`; yields its id.

    Every asset enters it, so a run re-executed from any step has its row. A failure, in the body or
    outside it (loading inputs, storing the output), is recorded by every asset's failure hook
    (`run_end.record_step_failure`): the row failed with the error, its request settled, the champion
    untouched.
    """
    tags = context.run.tags
    source = tags.get("source", "manual")
    if source not in RUN_SOURCES:
        raise ValueError(f"run tag source={source!r} is not one of {RUN_SOURCES}")
    yield store.start_run(context.run.run_id, source, triggered_by=tags.get("triggered_by"),
                          request_id=tags.get("request_id"))


def holdout_start_text(summary: WindowSummary) -> str:
    """Where the holdout starts, for the UI: the time and id of its first row."""
    key = summary.holdout_start
    return "" if key is None else f"{key.evaluated_at.isoformat()} (row id {key.id})"


def logical_time(context: dg.AssetExecutionContext, window_end: str | None) -> datetime:
    """The end of the window: configured, else the schedule tick, else when the (root) run was created."""
    if window_end:
        end = datetime.fromisoformat(window_end)
        return end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    tags = context.run.tags
    if "dagster/scheduled_execution_time" in tags:
        return datetime.fromisoformat(tags["dagster/scheduled_execution_time"])
    record = context.instance.get_run_record_by_id(tags.get("dagster/root_run_id", context.run.run_id))
    return record.create_timestamp if record else datetime.now(timezone.utc)


def run_metrics_config(context: dg.AssetExecutionContext) -> RunMetricsConfig:
    """`run_metrics`' config of this run, its gate metric checked (so a typo fails the first step,
    not the last one after every candidate was trained)."""
    config = asset_config(context, "run_metrics")
    check_gate_metric(config.gate_metric)
    return config


def retraining_config(context: dg.AssetExecutionContext) -> RetrainedModelConfig:
    """`retrained_model`'s config of this run: `finetune_dataset` picks the training set it will need."""
    config = asset_config(context, "retrained_model")
    for learner in [config.learner or settings.LEARNER, *config.challengers]:
        check_learner(learner, allow_import_path=True)  # run config is the launchpad's: trusted
    return config


def record_skip(context: dg.AssetExecutionContext, store: Store, reason: str) -> None:
    """The run ends here, `skipped` with its reason: the rest of the graph does not run."""
    store.update_run(context.run.run_id, status="skipped", error_message=reason, dataset_size=0,
                     metrics={"skip_reason": reason})
    context.log.info(reason)


def read_champion(champion: ModelVersion | None, artifacts: ArtifactStorage) -> tuple[Any, str | None]:
    """The champion's model (its sha256 checked) and None; or None and why its file is unusable (missing,
    or its bytes differ from those registered). The one place that decides it: `evaluation_log` records
    the answer and every later step follows it. Other storage errors (unreachable) fail the run."""
    if champion is None:
        return None, None
    try:
        return artifacts.read_value(champion.artifact_path, champion.sha256), None
    except (ArtifactIntegrityError, FileNotFoundError) as exc:
        return None, unusable_champion(champion, str(exc))


def champion_model(window: EvaluatedWindow, artifacts: ArtifactStorage) -> Any:
    """The champion's model for this run: None with no champion, or when `evaluation_log` found its file
    unusable."""
    champion = window.champion
    if champion is None or window.champion_unusable:
        return None
    return artifacts.read_value(champion.artifact_path, champion.sha256)


def run_learner(context: dg.AssetExecutionContext, champion_unusable: str | None) -> str | None:
    """The learner the run builds its own model with: the one it names, else REINFORCEMENT_LEARNER when the
    champion's file is unusable (it cannot be cloned), else None (the champion's family)."""
    return retraining_config(context).learner or (settings.LEARNER if champion_unusable else None)


@dg.asset(
    group_name=GROUP,
    hooks={record_step_failure},
    kinds={"postgres", "sql"},
    description="The evaluated predictions of the lookback window ending at the run's logical time: bounds, "
    "feature schema, accuracy and rows set aside by reason. The rows stay in the database.",
)
def evaluation_log(
    context: dg.AssetExecutionContext, config: EvaluationLogConfig, store: Store, artifacts: ArtifactStorage,
) -> dg.Output[EvaluatedWindow]:
    run_id = context.run.run_id
    with run_record(context, store):
        if request_id := context.run.tags.get("request_id"):
            note = check_request_run(store.attach_request_run(request_id, run_id), run_id)
            if note:
                context.log.warning(note)
        check_run_config(context)
        window = Window.ending_at(logical_time(context, config.window_end), config.lookback_days,
                                  config.holdout_share)
        run_metrics_config(context)
        champion = store.champion()
        model, unusable = read_champion(champion, artifacts)
        learner = run_learner(context, unusable)
        if unusable:
            context.log.warning(f"{unusable}; this run refits {learner} and compares it with what was deployed "
                                "(the logged predictions)")
        type_sets = store.feature_type_sets(window.start, window.end)
        schema, champion_schema = run_schemas(store, window, type_sets, champion, model, learner)
        summary = store.summarize_window(window, schema)
        missing = tuple(unlogged(schema, type_sets))
        if summary.evaluated_early:
            context.log.warning(f"{summary.evaluated_early} rows predicted in the window were evaluated before they "
                                "were predicted (evaluated_at < predicted_at): a clock or pipeline bug; they are "
                                "still used")
        store.update_run(run_id, metrics={"window_rows": summary.rows, "window_accuracy": summary.accuracy,
                                          "rows_rejected": summary.rows_rejected,
                                          **({"champion_unusable": unusable} if unusable else {})})
    return dg.Output(
        EvaluatedWindow(window, schema, summary, champion, missing, champion_schema, unusable),
        metadata={
            "rows": summary.rows,
            "rows_rejected": summary.rows_rejected,
            "rejected_by_reason": dg.MetadataValue.json(summary.rejected),
            "rejected_by_feature": dg.MetadataValue.json(summary.rejected_on),
            "accuracy": summary.accuracy if summary.accuracy is not None else float("nan"),
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "holdout_rows": summary.holdout_rows,
            "holdout_start": holdout_start_text(summary),
            "evaluated_before_predicted": summary.evaluated_early,
            "feature_names": dg.MetadataValue.json(list(schema.names)),
            "feature_schema": dg.MetadataValue.json(schema.as_json()),
            "accepts_missing": bool(schema.accepts_missing),
            "features_not_logged": dg.MetadataValue.json(list(missing)),
            "champion": champion.version if champion else "",
            "champion_unusable": unusable or "",
            "store": dg.MetadataValue.json(store.describe()),
        },
    )


def run_schemas(store: Store, window: Window, type_sets: list[TypeSetCount], champion: ModelVersion | None,
                model: Any, named_learner: str | None) -> tuple[FeatureSchema, FeatureSchema | None]:
    """The features a run judges and loads rows by, and the champion's (None: no champion).

    A model the run builds takes those of the log now. Otherwise they are the champion's, completed
    from the log (`type_sets`, the window's) the first time it is trained, and recorded once the log
    has shown every one of them.
    """
    if trains_new_model(champion, named_learner):
        recent = store.feature_type_sets(window.recent_start, window.end) or type_sets
        schema = new_model_schema(recent, named_learner or settings.LEARNER)
        return schema, None if champion is None else complete_kinds(champion.schema, type_sets)
    schema = champion.schema
    check_feature_names(schema.names)
    if not schema.complete:
        completed = completed_schema(champion, model, type_sets)
        if not unlogged(schema, type_sets):
            store.record_feature_schema(champion.version, completed)
        schema = completed
    return schema, schema


@dg.asset(
    group_name=GROUP,
    hooks={record_step_failure},
    kinds={"postgres", "pandas"},
    description="Confident mistakes the champion makes, in the training part of the window, newest first: "
    "rows it predicted wrong with confidence above the threshold, and rows earlier versions predicted that it "
    "still gets wrong when it scores them (a uniform sample of them, confidence from its predict_proba).",
)
def error_samples(
    context: dg.AssetExecutionContext, config: ErrorSamplesConfig, evaluation_log: EvaluatedWindow,
    store: Store, artifacts: ArtifactStorage,
) -> dg.Output[pd.DataFrame]:
    schema, champion, train = evaluation_log.schema, evaluation_log.champion, evaluation_log.training_period
    with run_record(context, store):
        rescored = older = pd.DataFrame(columns=["id"])
        note = None
        if trains_new_model(champion, run_learner(context, evaluation_log.champion_unusable)):  # no update: the log's errors
            query = period_query(train, schema, limit=config.max_errors, is_correct=False,
                                 min_confidence=config.confidence_threshold)
            own = store.load_rows(query)
        else:  # the errors the champion makes: its own, and earlier versions' it still makes
            query = period_query(train, schema, limit=config.max_errors, is_correct=False,
                                 min_confidence=config.confidence_threshold, logged_by=champion.version)
            earlier = (evaluation_log.summary.train_rows
                       - store.count_correct(train.start, train.end, champion.version).evaluated)
            own, older = store.load_many(query, period_query(
                train, schema, limit=config.max_errors, not_logged_by=champion.version,
                sample_fraction=sample_fraction(config.max_errors, earlier)))
            rescored, note = errors_it_still_makes(champion_model(evaluation_log, artifacts), schema, older,
                                                   config.confidence_threshold)
            if note:
                context.log.warning(note)
        errors = newest_first(own, rescored).head(config.max_errors)
        logged_in_window = store.count_rows(query) if len(own) >= config.max_errors else len(own)
        kept_rescored = int(errors["id"].isin(rescored["id"]).sum())
    per_class = errors["actual_label"].value_counts().sort_index()
    return dg.Output(
        errors,
        metadata={
            "count": len(errors),
            "count_in_window": logged_in_window,  # as logged; rescored_errors come from a sample
            "logged_errors": len(errors) - kept_rescored,
            "rescored_rows": len(older),
            "rescored_errors": kept_rescored,
            "rescore_note": note or "",
            "confidence_threshold": config.confidence_threshold,
            "per_class": dg.MetadataValue.json({str(k): int(v) for k, v in per_class.items()}),
        },
    )


@dg.asset(
    group_name=GROUP,
    hooks={record_step_failure},
    kinds={"pandas", "parquet"},
    output_required=False,
    description="The rows of the race: the update's (errors relabelled with the true label plus replayed correct "
    "rows), the refits' (a uniform sample of the window) and the time-ordered holdout, in one frame with `split` "
    "and `origin` columns. Skips the rest of the run when there are too few errors.",
)
def finetune_dataset(
    context: dg.AssetExecutionContext, config: FinetuneDatasetConfig, evaluation_log: EvaluatedWindow,
    error_samples: pd.DataFrame, store: Store, artifacts: ArtifactStorage,
) -> Iterator[dg.Output[pd.DataFrame]]:
    run_id = context.run.run_id
    with run_record(context, store):
        reason = skip_reason(evaluation_log.window, evaluation_log.summary, evaluation_log.schema,
                             len(error_samples), config.min_error_samples, config.force, evaluation_log.unlogged)
        if reason:
            record_skip(context, store, reason)
            return
        schema, summary = evaluation_log.schema, evaluation_log.summary
        champion, training = evaluation_log.champion, retraining_config(context)
        model = champion_model(evaluation_log, artifacts)
        plan = plan_training(champion, model, error_samples["actual_label"], from_scratch=config.from_scratch,
                             named_learner=training.learner, default_learner=settings.LEARNER,
                             growth=training.update_growth, champion_unusable=evaluation_log.champion_unusable)
        train = evaluation_log.training_period
        holdout_query = period_query(evaluation_log.holdout_period, schema, limit=config.max_holdout_rows,
                                     sample_fraction=sample_fraction(config.max_holdout_rows, summary.holdout_rows))
        window_query = period_query(train, schema, limit=config.max_training_rows,
                                    sample_fraction=sample_fraction(config.max_training_rows, summary.train_rows))
        if plan.update:
            wanted = replay_size(len(error_samples), config.replay_ratio, config.max_training_rows)
            replay, sample, holdout = store.load_many(
                period_query(train, schema, limit=wanted, is_correct=True,
                             sample_fraction=sample_fraction(wanted, summary.train_correct)),
                window_query, holdout_query)
            update_labels = pd.concat([error_samples["actual_label"], replay["actual_label"]])
            plan = confirm_plan(plan, champion, model, update_labels, training.update_growth)
            # A warm-start update missing a class is dropped from the race: the refits race on.
            dataset = (finetune_frame(error_samples, replay, holdout, sample) if plan.update
                       else from_scratch_frame(sample, holdout))
        else:
            sample, holdout = store.load_many(window_query, holdout_query)
            dataset = from_scratch_frame(sample, holdout)
        dataset, outliers = set_aside_outliers(dataset, schema)
        if outliers:
            context.log.warning(f"{sum(outliers.values()):,} rows set aside as {OUTLIER_REASON}: {outliers}")
        train_rows = int((dataset["split"] == "train").sum())
        if reason := refit_skip_reason(plan, model, sample["actual_label"]):
            record_skip(context, store, reason)
            return
        store.update_run(run_id, dataset_size=train_rows, fine_tune_flag=plan.update,
                         metrics={"rows_outlying": sum(outliers.values())})
    context.log.info(plan.reason)
    origins = dataset["origin"].value_counts()
    yield dg.Output(
        dataset,
        metadata={
            "mode": plan.mode,
            "mode_reason": plan.reason,
            "champion_unusable": evaluation_log.champion_unusable or "",
            "train_rows": train_rows,
            "holdout_rows": int(origins.get("holdout", 0)),
            "error_rows": int(origins.get("error", 0)),
            "replay_rows": int(origins.get("replay", 0)),
            "window_sample_rows": int(origins.get("window", 0)),
            "rows_set_aside": dg.MetadataValue.json({OUTLIER_REASON: sum(outliers.values())} if outliers else {}),
            "set_aside_by_feature": dg.MetadataValue.json({OUTLIER_REASON: outliers} if outliers else {}),
        },
    )


# A separate check, not a check spec: an asset that may skip its output cannot promise check results.
@dg.asset_check(asset=finetune_dataset, description="No training row comes from the holdout period.")
def holdout_is_disjoint(finetune_dataset: pd.DataFrame) -> dg.AssetCheckResult:
    leaked = leaked_rows(finetune_dataset)
    return dg.AssetCheckResult(passed=leaked == 0, metadata={"leaked_rows": leaked})


@dg.asset(
    group_name=GROUP,
    hooks={record_step_failure},
    kinds={"scikitlearn"},
    description="The race's candidates, each registered in model_versions with the sha256 of its file: the "
    "champion's update (partial_fit passes, or a warm-start continuation), a refit of its family (a clone) on a "
    "window sample, and a refit of each learner in `challengers`.",
)
def retrained_model(
    context: dg.AssetExecutionContext, config: RetrainedModelConfig, evaluation_log: EvaluatedWindow,
    finetune_dataset: pd.DataFrame, store: Store, artifacts: ArtifactStorage,
) -> dg.Output[Race]:
    run_id = context.run.run_id
    with run_record(context, store) as row_id:
        schema, baseline = evaluation_log.schema, evaluation_log.champion
        model = champion_model(evaluation_log, artifacts)
        if evaluation_log.champion_unusable:
            context.log.warning(evaluation_log.champion_unusable)
        first = plan_of_dataset(is_update_set(finetune_dataset), baseline, named_learner=config.learner,
                                default_learner=settings.LEARNER, champion_unusable=evaluation_log.champion_unusable)
        trained = train_race(race_plans(first, baseline, config.challengers), baseline, model, finetune_dataset,
                             schema, epochs=config.epochs, learning_rate=config.learning_rate,
                             growth=config.update_growth, seed=config.seed)
        failed = [t for t in trained if t.model is None]
        for t in failed:
            context.log.warning(f"candidate {t.plan.name} could not be trained: {t.error}")
        if set_aside := max(t.set_aside for t in trained):
            context.log.warning(f"{set_aside} training rows set aside: their label is not a {label_kind(model)}, "
                                "the type of the champion's classes")
        if len(failed) == len(trained):
            raise RuntimeError("no candidate could be trained: " + "; ".join(f"{t.plan.name}: {t.error}" for t in failed))
        fitted, candidates, blocks = [t for t in trained if t.model is not None], [], []
        for t, version in zip(fitted, candidate_versions(datetime.now(timezone.utc), run_id, [t.plan for t in fitted])):
            stored = artifacts.write_value(f"models/{version}", t.model)
            registered = challenger_record(t.model, t.plan, baseline, version=version, artifact_path=stored.path,
                                           sha256=stored.sha256, schema=schema, training_run_id=row_id)
            store.register_model_version(registered)
            candidates.append(Candidate(t.plan.name, registered))
            blocks.append(training_log(
                {"candidate": t.plan.name, "version": version, "parent_version": registered.parent_version,
                 "mode": t.plan.mode, "reason": t.plan.reason, "model": type(final_estimator(t.model)).__name__,
                 "learner": t.plan.learner, "train_rows": t.train_rows, "seconds": round(t.seconds, 3),
                 "epochs": config.epochs, "learning_rate": config.learning_rate, "update_growth": config.update_growth,
                 "base_size": registered.base_size, "seed": config.seed, "sha256": stored.sha256}, t.epochs))
        log = artifacts.write(f"logs/{run_id}.log", "".join(blocks).encode(), "text/plain")
        updated = any(c.model.fine_tuned for c in candidates)
        store.update_run(run_id, fine_tune_flag=updated, log_url=log.uri, model_version=candidates[0].model.version)
    return dg.Output(
        Race(tuple(candidates), baseline, evaluation_log.champion_schema, tuple((t.plan.name, t.error) for t in failed),
             evaluation_log.champion_unusable),
        metadata={
            "candidates": dg.MetadataValue.md(candidates_table(trained, candidates)),
            "race": dg.MetadataValue.json([{"candidate": t.plan.name, "reason": t.plan.reason, "train_rows": t.train_rows,
                                            "seconds": round(t.seconds, 3), "error": t.error} for t in trained]),
            "version": candidates[0].model.version,
            "model": type(final_estimator(trained[0].model)).__name__ if trained[0].model is not None else "",
            "models": dg.MetadataValue.json({t.plan.name: type(final_estimator(t.model)).__name__
                                             for t in trained if t.model is not None}),
            "mode": "update" if updated else "refit",
            "fine_tuned": updated,
            "train_rows": int((finetune_dataset["split"] == "train").sum()),  # the rows the candidates share
            "labels_not_of_class_type": max(t.set_aside for t in trained),
            "training_seconds": sum(t.seconds for t in trained),
            "training_log": dg.MetadataValue.url(log.uri),
            "training_log_sha256": log.sha256,
            "champion_unusable": evaluation_log.champion_unusable or "",
        },
    )


def candidates_table(trained: list[Trained], registered: list[Candidate]) -> str:
    """The race as a Markdown table for the Dagster UI."""
    versions = {c.name: c.model.version for c in registered}
    rows = ["| candidate | version | model | training rows | seconds | note |", "|---|---|---|---:|---:|---|"]
    for t in trained:
        model = type(final_estimator(t.model)).__name__ if t.model is not None else ""
        note = f"not trained: {t.error}" if t.error else t.plan.reason
        rows.append(f"| {t.plan.name} | {versions.get(t.plan.name, '')} | {model} | {t.train_rows:,} | "
                    f"{t.seconds:.2f} | {_cell(note)} |")
    return "\n".join(rows)


def standings_table(verdict: RaceVerdict, race: Race) -> str:
    """The gate's standings as a Markdown table for the Dagster UI."""
    metric = verdict.decision.metric
    rows = [f"| candidate | version | {metric} | champion | delta | interval | p | Holm p | result |",
            "|---|---|---:|---:|---:|---|---:|---:|---|"]
    versions = {c.name: c.model.version for c in race.candidates}
    for s in verdict.decision.standings:
        c = s.comparison
        rows.append(f"| {s.name} | {versions.get(s.name, '')} | {c.candidate:.4f} | {c.champion:.4f} | {c.delta:+.4f} | "
                    f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.p_value:.3g} | {s.adjusted_p_value:.3g} | "
                    f"{_cell(s.reason)} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dg.asset(
    group_name=GROUP,
    hooks={record_step_failure},
    kinds={"scipy"},
    check_specs=[dg.AssetCheckSpec("promotion_gate", asset="run_metrics",
                                   description="A candidate is shown better than the champion (minus the margin) on "
                                   "the gate metric, after Holm's correction across the race.")],
    description="Every candidate and the champion scored on the same holdout (accuracy, balanced accuracy, "
    "precision, recall, F1), the paired test of each against the champion on the gate metric, and the "
    "promotion of the winner.",
)
def run_metrics(
    context: dg.AssetExecutionContext, config: RunMetricsConfig, finetune_dataset: pd.DataFrame,
    retrained_model: Race, store: Store, artifacts: ArtifactStorage,
) -> dg.MaterializeResult:
    race = retrained_model
    baseline = race.baseline
    with run_record(context, store):
        check_gate_metric(config.gate_metric)
        schema = race.candidates[0].model.schema
        models = [(c.name, artifacts.read_value(c.model.artifact_path, c.model.sha256)) for c in race.candidates]
        unusable = race.baseline_unusable
        verdict = judge_race(models, schema, None if unusable else baseline_model(baseline, artifacts),
                             race.baseline_schema, holdout_of(finetune_dataset), metric=config.gate_metric,
                             significance_level=config.significance_level, margin=config.non_inferiority_margin,
                             seed=config.seed, failures=dict(race.failed), champion_unusable=unusable)
        decision = verdict.decision
        if verdict.baseline != "the champion":
            context.log.warning(f"baseline: {verdict.baseline}")
        if decision.winner:
            # The run's outcome commits with the promotion, so registry and run row agree whatever fails next.
            winner = race.candidate(decision.winner).model.version
            now = store.promote(winner, decision.reason, reference_accuracy=verdict.scores[decision.winner]["accuracy"],
                                expected_champion=baseline.version if baseline else None, check_champion=True,
                                outcome=cycle_outcome(context.run.run_id, verdict, decision, race))
            decision = settle_promotion(decision, now, winner)
        if not decision.promote:  # nothing promoted (or the swap was lost): the outcome is written here
            outcome = cycle_outcome(context.run.run_id, verdict, decision, race)
            for version, metrics in outcome.model_metrics.items():
                store.record_model_metrics(version, metrics)
            store.update_run(outcome.dagster_run_id, **outcome.fields, metrics=outcome.metrics)
        shown = shown_candidate(verdict, decision, race)
        scores = verdict.scores.get(shown.name, {})
    try:
        pruned = prune_artifacts(store, artifacts, settings.KEEP_CANDIDATE_ARTIFACTS, protect_runs=[context.run.run_id])
    except (StoreError, OSError) as exc:  # the cycle is done and recorded; the next run prunes again
        context.log.warning(f"pruning skipped: {exc}")
    else:
        context.log.info(pruned.summary())
        for failure in pruned.failures:
            context.log.warning(failure)
    standing = decision.standing(shown.name)
    numeric = {f"challenger_{k}": v for k, v in scores.items()}
    numeric.update({f"champion_{k}": v for k, v in verdict.champion.items()})
    return dg.MaterializeResult(
        metadata={**numeric, "promoted": decision.promote, "winner": decision.winner or "",
                  "gate_metric": decision.metric, "p_value": standing.comparison.p_value,
                  "adjusted_p_value": standing.adjusted_p_value, "metric_delta": standing.comparison.delta,
                  "accuracy_delta": scores.get("accuracy", float("nan")) - verdict.champion["accuracy"],
                  "challenger_version": shown.model.version, "decision": decision.reason,
                  "baseline": verdict.baseline, "race": dg.MetadataValue.md(standings_table(verdict, race)),
                  "gate": dg.MetadataValue.json(decision.as_dict())},
        check_results=[dg.AssetCheckResult(
            check_name="promotion_gate", passed=decision.promote, severity=dg.AssetCheckSeverity.WARN,
            description=decision.reason,
            metadata={"winner": decision.winner or "", "gate_metric": decision.metric,
                      "margin": decision.margin, "significance_level": decision.significance_level,
                      "holdout_rows": standing.comparison.holdout_rows,
                      **{f"{s.name}_p_value": s.comparison.p_value for s in decision.standings},
                      **{f"{s.name}_holm_p_value": s.adjusted_p_value for s in decision.standings}},
        )],
    )


def baseline_model(baseline: ModelVersion | None, artifacts: ArtifactStorage) -> Any:
    """The champion the race was run against, its sha256 checked (None: there was none)."""
    return artifacts.read_value(baseline.artifact_path, baseline.sha256) if baseline else None


def shown_candidate(verdict: RaceVerdict, decision: RaceDecision, race: Race) -> Candidate:
    """The candidate a run reports: the winner, else the best estimate of the gate metric."""
    return race.candidate(decision.winner or best_candidate(verdict, race))


def cycle_outcome(run_id: str, verdict: RaceVerdict, decision: RaceDecision, race: Race) -> RunOutcome:
    """What the run records once judged: its row `completed` with the shown candidate's scores and the gate,
    and every candidate's scores and standing in the registry."""
    baseline, shown = race.baseline, shown_candidate(verdict, decision, race)
    metrics = {
        **verdict.scores.get(shown.name, {}), "champion": verdict.champion,
        "champion_version": baseline.version if baseline else None, "challenger_version": shown.model.version,
        "candidate": shown.name, "promoted": decision.promote, "gate_metric": decision.metric,
        "gate": decision.as_dict(), "baseline": verdict.baseline,
        **({"champion_unusable": race.baseline_unusable} if race.baseline_unusable else {})}
    return RunOutcome(
        run_id, {"status": "completed", "model_version": shown.model.version, "fine_tune_flag": shown.model.fine_tuned},
        metrics, {c.model.version: {**verdict.scores.get(c.name, {}), "gate": decision.standing(c.name).as_dict()}
                  for c in race.candidates})


def best_candidate(verdict: RaceVerdict, race: Race) -> str:
    """The candidate with the best estimate of the gate metric (the first one if none was scored)."""
    scored = [c.name for c in race.candidates if c.name in verdict.scores]
    return max(scored, key=lambda name: verdict.decision.standing(name).comparison.candidate) if scored \
        else race.candidates[0].name


assets = [evaluation_log, error_samples, finetune_dataset, retrained_model, run_metrics]
asset_checks = [holdout_is_disjoint]
