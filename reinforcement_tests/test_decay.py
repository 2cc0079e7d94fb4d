"""The decay trigger: the binomial test on its own, then the sensor on real drifting and stable streams.

The streams come from the demo generator, logged by a real model into the embedded PostgreSQL;
the sensor is ticked every 30 simulated minutes with `dg.build_sensor_context` on a real
`DagsterInstance`, its clock moved along the stream.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest
from scipy.stats import binomtest

from reinforcement_assets.backends.store import AccuracyCount
from reinforcement_assets.core.decay import DecayThresholds, assess_decay, cooling_down
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

    running = instance.create_run_for_job(stand_in, status=dg.DagsterRunStatus.STARTED)
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
