"""The decay trigger: its tests on their own (the binomial test, the bootstrap of the confusion matrix),
then the sensor on real drifting, stable and imbalanced streams.

The streams come from the demo generator, logged by a real model into the embedded PostgreSQL;
the sensor is ticked every 30 simulated minutes with `dg.build_sensor_context` on a real
`DagsterInstance`, its clock moved along the stream.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, binomtest

from reinforcement_assets.backends.store import AccuracyCount, ConfusionCount, ModelVersion
from reinforcement_assets.core import decay
from reinforcement_assets.core.decay import (
    DecayThresholds,
    assess_decay,
    bootstrap_p_value,
    cooling_down,
    reference_for,
)
from reinforcement_assets.core.evaluation import classification_metrics
from reinforcement_assets.core.metrics import confusion, metric_of
from reinforcement_assets.defs.instance import CYCLE_TAG, CYCLE_TAG_VALUE
from reinforcement_assets.defs.sensors import make_decay_sensor
from reinforcement_assets.demo import accuracy, drift_scenario, log_traffic, register_champion
from reinforcement_assets.model import train_from_scratch

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 7
SEEN = re.compile(r"n=\d+, accuracy 0\.\d{3} vs reference 0\.\d{3}, p=\S+ for accuracy below 0\.\d{3}")


def test_a_significant_drop_beyond_the_tolerance_is_decay():
    thresholds = DecayThresholds(min_samples=200, min_drop=0.05, significance_level=0.01)
    verdict = assess_decay(AccuracyCount(evaluated=1000, correct=600), 0.93, thresholds)
    assert verdict.decayed and verdict.accuracy == 0.6 and verdict.evaluated == 1000
    assert verdict.p_value == pytest.approx(binomtest(600, 1000, 0.88, alternative="less").pvalue)
    assert "n=1000, accuracy 0.600 vs reference 0.930" in verdict.reason and "accuracy has decayed" in verdict.reason


def test_a_drop_within_the_tolerance_or_on_few_samples_is_not_decay():
    thresholds = DecayThresholds(min_samples=200, min_drop=0.05, significance_level=0.01)
    small_drop = assess_decay(AccuracyCount(evaluated=100_000, correct=90_000), 0.93, thresholds)
    assert not small_drop.decayed and small_drop.p_value > 0.5, "3 points down on a huge n is not a 5-point drop"
    few = assess_decay(AccuracyCount(evaluated=150, correct=30), 0.93, thresholds)
    assert not few.decayed and few.p_value is None and "fewer than the 200 predictions" in few.reason
    no_reference = assess_decay(AccuracyCount(evaluated=1000, correct=100), None, thresholds)
    assert not no_reference.decayed and "no reference accuracy" in no_reference.reason
    no_room = assess_decay(AccuracyCount(evaluated=1000, correct=0), 0.04, thresholds)
    assert not no_room.decayed and "no room for a drop" in no_room.reason


def test_thresholds_are_checked_and_the_cooldown_counts_from_the_last_firing():
    with pytest.raises(ValueError, match="min_drop"):
        DecayThresholds(min_drop=1.5)
    with pytest.raises(ValueError, match="significance_level"):
        DecayThresholds(significance_level=0)
    fired = START
    assert cooling_down(fired, fired + timedelta(hours=23), timedelta(hours=24))
    assert not cooling_down(fired, fired + timedelta(hours=24), timedelta(hours=24))
    assert not cooling_down(None, fired, timedelta(hours=24))


def matrix_count(y_true, y_pred) -> ConfusionCount:
    """What the store would count for these predictions."""
    labels = sorted(set(y_true) | set(y_pred))
    matrix = confusion(y_true, y_pred, labels)
    return ConfusionCount(tuple(labels), tuple(map(tuple, matrix.tolist())), len(y_true),
                          int(np.sum(np.asarray(y_true) == np.asarray(y_pred))))


def rare_positives(n: int, rng: np.random.Generator, *, recall: float, false_positive_rate: float,
                   positive_share: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of which `positive_share` are 'fraud', and predictions catching `recall` of them."""
    fraud = rng.random(n) < positive_share
    flagged = np.where(fraud, rng.random(n) < recall, rng.random(n) < false_positive_rate)
    return np.where(fraud, "fraud", "legit"), np.where(flagged, "fraud", "legit")


HEALTHY = dict(recall=0.8, false_positive_rate=0.01)
COLLAPSED = dict(recall=0.1, false_positive_rate=0.002)  # misses most frauds, flags fewer legit ones


def test_the_bootstrap_resamples_the_matrix_as_many_rows_at_a_time():
    rng = np.random.default_rng(0)
    y_true, y_pred = rare_positives(4_000, rng, **HEALTHY)
    matrix = matrix_count(y_true, y_pred).array
    observed = metric_of("macro_f1", matrix)
    assert bootstrap_p_value(matrix, "macro_f1", observed - 0.2) == 1.0
    assert bootstrap_p_value(matrix, "macro_f1", observed + 0.2) == 0.0
    assert 0.3 < bootstrap_p_value(matrix, "macro_f1", observed) < 0.7  # the observed value is the resamples' centre
    assert bootstrap_p_value(matrix, "macro_f1", observed - 0.01) == bootstrap_p_value(matrix, "macro_f1",
                                                                                      observed - 0.01)  # seeded
    # For accuracy, the share of resamples at least at the floor is the binomial tail at the observed accuracy.
    n, right = int(matrix.sum()), int(np.trace(matrix))
    floor = right / n - 0.004
    assert bootstrap_p_value(matrix, "accuracy", floor) == pytest.approx(
        binom.sf(np.ceil(floor * n) - 1, n, right / n), abs=0.03)


def test_the_bootstrap_of_many_labels_is_held_in_chunks_with_the_same_result(monkeypatch):
    rng = np.random.default_rng(1)
    labels = [f"c{i}" for i in range(60)]
    y_true = rng.choice(labels, 20_000)
    y_pred = np.where(rng.random(20_000) < 0.6, y_true, rng.choice(labels, 20_000))
    matrix = matrix_count(y_true, y_pred).array
    floor = metric_of("balanced_accuracy", matrix) - 0.005
    chunked = bootstrap_p_value(matrix, "balanced_accuracy", floor)  # 60 x 60 cells: 1,111 resamples at a time
    monkeypatch.setattr(decay, "_CELLS_PER_CHUNK", 10 ** 9)
    assert bootstrap_p_value(matrix, "balanced_accuracy", floor) == chunked and 0.5 < chunked < 1


@pytest.mark.parametrize("metric", ["balanced_accuracy", "macro_f1"])
def test_a_collapse_of_minority_recall_fires_on_the_per_class_metrics_not_on_accuracy(metric):
    """2 % frauds: a model that stops catching them keeps its accuracy (the frauds are few) but not
    its balanced accuracy or macro-F1."""
    rng = np.random.default_rng(2)
    reference = classification_metrics(*rare_positives(20_000, rng, **HEALTHY))
    recent = matrix_count(*rare_positives(3_000, rng, **COLLAPSED))
    thresholds = DecayThresholds(min_samples=200, min_drop=0.05, significance_level=0.01)

    by_accuracy = assess_decay(recent, reference["accuracy"], thresholds, "accuracy")
    assert not by_accuracy.decayed and recent.accuracy > reference["accuracy"] - 0.02
    assert by_accuracy.p_value == pytest.approx(
        binomtest(recent.correct, recent.evaluated, reference["accuracy"] - 0.05, alternative="less").pvalue)

    verdict = assess_decay(recent, reference[metric], thresholds, metric)
    assert verdict.decayed and verdict.p_value < 0.01 and verdict.metric == metric
    assert verdict.value == pytest.approx(metric_of(metric, recent.array)) and verdict.accuracy is None
    assert verdict.value < reference[metric] - 0.2
    assert (f"n=3000, {metric} {verdict.value:.3f} vs reference {reference[metric]:.3f}, p=" in verdict.reason
            and f"for {metric} below {reference[metric] - 0.05:.3f} (reference - 0.05) < 0.01: {metric} has decayed"
            in verdict.reason)


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "macro_f1"])
def test_a_stable_imbalanced_stream_does_not_fire(metric):
    rng = np.random.default_rng(3)
    reference = classification_metrics(*rare_positives(50_000, rng, **HEALTHY))[metric]
    thresholds = DecayThresholds(min_samples=200, min_drop=0.05, significance_level=0.01)
    verdicts = [assess_decay(matrix_count(*rare_positives(3_000, rng, **HEALTHY)), reference, thresholds, metric)
                for _ in range(30)]
    assert not any(v.decayed for v in verdicts) and all(v.p_value > 0.05 for v in verdicts)


def test_the_per_class_metrics_follow_the_same_rules_and_need_a_matrix():
    thresholds = DecayThresholds(min_samples=200)
    few = matrix_count(["a"] * 100 + ["b"] * 50, ["a"] * 150)
    verdict = assess_decay(few, 0.9, thresholds, "macro_f1")
    assert not verdict.decayed and verdict.p_value is None and "fewer than the 200 predictions" in verdict.reason
    none = assess_decay(few, None, thresholds, "balanced_accuracy")
    assert "the champion has no reference balanced_accuracy (recorded at promotion or registration)" in none.reason
    with pytest.raises(TypeError, match="macro_f1 needs a ConfusionCount"):
        assess_decay(AccuracyCount(evaluated=1000, correct=900), 0.9, thresholds, "macro_f1")
    with pytest.raises(ValueError, match="unknown gate metric"):
        assess_decay(few, 0.9, thresholds, "f2")
    # Rows the store left out of the matrix (rarer labels) are said, and not tested.
    left_out = ConfusionCount(few.labels, few.matrix, evaluated=400, correct=300)
    assert "n=150 (250 more with rarer labels left out), macro_f1" in assess_decay(left_out, 0.9, thresholds,
                                                                                  "macro_f1").reason
    # Accuracy from a matrix is the exact test on its counts.
    as_accuracy = assess_decay(ConfusionCount(evaluated=1000, correct=600), 0.93, thresholds)
    assert as_accuracy == assess_decay(AccuracyCount(evaluated=1000, correct=600), 0.93, thresholds)


def test_the_reference_is_the_champions_recorded_metric():
    version = ModelVersion(version="v", artifact_path="m", sha256="0" * 64, feature_names=("x",), classes=("a",),
                           reference_accuracy=0.9,
                           metrics={"accuracy": 0.8, "macro_f1": 0.7, "balanced_accuracy": float("nan")})
    assert reference_for(version, "accuracy") == 0.9  # the reference accuracy (set at promotion, or given) first
    assert reference_for(version, "macro_f1") == 0.7
    assert reference_for(version, "balanced_accuracy") is None
    unreferenced = ModelVersion(version="v", artifact_path="m", sha256="0" * 64, feature_names=("x",), classes=("a",),
                                metrics={"accuracy": 0.8, "macro_f1": True})
    assert reference_for(unreferenced, "accuracy") == 0.8 and reference_for(unreferenced, "macro_f1") is None
    earlier = ModelVersion(version="v", artifact_path="m", sha256="0" * 64, feature_names=("x",), classes=("a",),
                           metrics={"f1": 0.75, "recall": 0.7})  # promoted before macro_f1 was recorded
    assert reference_for(earlier, "macro_f1") == 0.75 and reference_for(earlier, "balanced_accuracy") is None


def deploy(store, artifacts, drift: str, seed: int) -> datetime:
    """A champion with its reference accuracy, and a week of its predictions; returns when the drift hits."""
    scenario = drift_scenario(14_000, drift=drift, drift_within_window=0.5, seed=seed)
    X, y = scenario.train
    model = train_from_scratch(X.iloc[:4_000], y[:4_000])
    register_champion(store, artifacts, model, "v0", "deployed")
    store.promote("v0", "deployed", reference_accuracy=accuracy(model, X.iloc[4_000:], y[4_000:]))
    log, _ = log_traffic(model, *scenario.window, pd.Timestamp(START), pd.Timestamp(START + timedelta(days=DAYS)),
                         model_version="v0", seed=seed)
    assert store.insert_evaluations(log) == 14_000
    return START + timedelta(days=DAYS / 2)


def ticks(store, instance, sensor_for, times):
    """Tick the sensor at each simulated time, carrying its cursor; returns (time, result) pairs."""
    now = [START]
    sensor = sensor_for(lambda: now[0])
    cursor, results = None, []
    for now[0] in times:
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"store": store}) as context:
            result = sensor.evaluate_tick(context)
        cursor = result.cursor or cursor
        results.append((now[0], result))
    return results


def every(start: datetime, end: datetime, step=timedelta(minutes=30)) -> list[datetime]:
    return [start + i * step for i in range(int((end - start) / step))]


def test_a_real_drift_fires_one_run(store, artifacts, instance):
    drift_at = deploy(store, artifacts, "abrupt", seed=0)
    thresholds = DecayThresholds()  # the defaults: 24 h window, 200 samples, 5 points, 1 %, 24 h cooldown
    results = ticks(store, instance, lambda clock: make_decay_sensor(thresholds=thresholds, clock=clock),
                    every(START + timedelta(days=1), drift_at + thresholds.cooldown))

    fired = [(t, r) for t, r in results if r.run_requests]
    assert len(fired) == 1, f"{len(fired)} runs requested for one drift"
    (when, result), = fired
    assert drift_at < when < drift_at + timedelta(hours=8), f"fired {when - drift_at} after the drift"
    (run_request,) = result.run_requests
    assert run_request.tags["source"] == "decay_triggered" and run_request.tags["decay/champion"] == "v0"
    assert float(run_request.tags["decay/p_value"]) < 0.01

    before = [r.skip_message for t, r in results if t < drift_at]
    assert all(SEEN.search(m) and "no significant decay" in m for m in before)
    after = [r.skip_message for t, r in results if t > when]
    assert after and all("cooling down" in m and "accuracy has decayed" in m for m in after)


def test_a_decayed_champion_waits_for_a_retraining_run_in_progress(store, artifacts, instance, resources, stand_in):
    drift_at = deploy(store, artifacts, "abrupt", seed=1)

    running = instance.create_run_for_job(stand_in, status=dg.DagsterRunStatus.STARTED,
                                          tags={CYCLE_TAG: CYCLE_TAG_VALUE})
    ((_, result),) = ticks(store, instance, lambda clock: make_decay_sensor(clock=clock),
                           [drift_at + timedelta(hours=20)])
    assert result.run_requests == []
    assert f"retraining run {running.run_id} is already STARTED" in result.skip_message
    assert result.cursor is None  # a skipped tick did not fire: no cooldown starts

    # Once that run has ended, the next tick requests the retraining run.
    instance.report_run_failed(running)
    ((_, result),) = ticks(store, instance, lambda clock: make_decay_sensor(clock=clock),
                           [drift_at + timedelta(hours=20, minutes=30)])
    (run_request,) = result.run_requests
    assert run_request.tags["source"] == "decay_triggered" and result.cursor


@pytest.mark.parametrize("seed", [0, 1])  # the seeds whose live accuracy sits below the reference
def test_a_stable_stream_never_fires(store, artifacts, instance, seed):
    deploy(store, artifacts, "none", seed=seed)
    no_cooldown = DecayThresholds(cooldown=timedelta(0))  # every alarm counts
    results = ticks(store, instance, lambda clock: make_decay_sensor(thresholds=no_cooldown, clock=clock),
                    every(START + timedelta(days=1), START + timedelta(days=DAYS)))

    false_alarms = [t for t, r in results if r.run_requests]
    assert len(results) == 288 and false_alarms == []
    assert all(SEEN.search(r.skip_message) for _, r in results)


def deploy_fraud_model(store, seed: int) -> datetime:
    """A champion of a 2 % fraud stream, promoted with the metrics of a healthy holdout, and two days of
    its predictions: the first healthy, the second catching almost no fraud. Returns the second's start."""
    rng = np.random.default_rng(seed)
    holdout = classification_metrics(*rare_positives(20_000, rng, **HEALTHY))
    store.register_model_version(ModelVersion(version="fraud-v1", artifact_path="models/fraud-v1",
                                              sha256="0" * 64, feature_names=("x0",), classes=("fraud", "legit")))
    store.promote("fraud-v1", "deployed", reference_accuracy=holdout["accuracy"])
    store.record_model_metrics("fraud-v1", holdout)
    days = [rare_positives(3_000, rng, **HEALTHY), rare_positives(3_000, rng, **COLLAPSED)]
    log = pd.concat([pd.DataFrame({
        "prediction_id": [f"d{day}-{i}" for i in range(3_000)], "model_version": "fraud-v1",
        "features": [{"x0": float(i)} for i in range(3_000)], "predicted_label": predicted, "actual_label": actual,
        "confidence": 0.9, "predicted_at": START + timedelta(days=day),
        "evaluated_at": [START + timedelta(days=day, seconds=28.8 * i) for i in range(3_000)],
    }) for day, (actual, predicted) in enumerate(days)], ignore_index=True)
    assert store.insert_evaluations(log) == 6_000
    return START + timedelta(days=1)


def test_the_sensor_watches_the_gate_metric_of_an_imbalanced_stream(store, instance):
    collapsed_from = deploy_fraud_model(store, seed=4)
    thresholds = DecayThresholds(cooldown=timedelta(0))
    fired = {}
    for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
        results = ticks(store, instance, lambda clock: make_decay_sensor(thresholds=thresholds, metric=metric,
                                                                         clock=clock),
                        [collapsed_from, collapsed_from + timedelta(days=1)])
        (_, healthy), (_, collapsed) = results
        assert healthy.run_requests == [] and f"n=3000, {metric} " in healthy.skip_message
        assert "no significant decay" in healthy.skip_message
        fired[metric] = collapsed.run_requests
        if not collapsed.run_requests:
            assert f"for {metric} below" in collapsed.skip_message and "no significant decay" in collapsed.skip_message
    assert fired["accuracy"] == []
    for metric in ("balanced_accuracy", "macro_f1"):
        (run_request,) = fired[metric]
        tags = run_request.tags
        assert tags["source"] == "decay_triggered" and tags["decay/metric"] == metric
        assert float(tags[f"decay/{metric}"]) < float(tags["decay/reference"]) - 0.2
        assert float(tags["decay/p_value"]) < 0.01 and tags["decay/evaluated"] == "3000"
