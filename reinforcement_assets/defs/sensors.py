"""Triggers: the retraining request sensor, the run write-back sensors and the decay sensor.

How they keep requests exactly-once and the tables in step with Dagster: docs/triggers.md.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import dagster as dg

from .. import settings
from ..backends.store import RetrainingRequest, Store, StoreError, as_uuid
from ..core.decay import DecayThresholds, assess_decay, cooling_down, reference_for
from ..core.metrics import check_gate_metric
from .automation import retraining_job
from .instance import CYCLE_TAG, CYCLE_TAG_VALUE, is_cycle_run
from .request_queue import InvalidRequest, run_request_for
from .run_end import record_failed_run

T = TypeVar("T")

WAITING_OR_RUNNING = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]


def cycles_in_progress() -> dg.RunsFilter:
    """The retraining runs (those carrying the cycle tag) that are queued or running."""
    return dg.RunsFilter(statuses=WAITING_OR_RUNNING, tags={CYCLE_TAG: CYCLE_TAG_VALUE})


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def claimant(sensor_name: str) -> str:
    """Who claims: recorded in `model_retraining_requests.claimed_by` for diagnosis."""
    return f"{sensor_name}@{socket.gethostname()}:{os.getpid()}"


# Write-back: make `model_retraining_runs` and `model_retraining_requests` agree with Dagster.
def write_back(store: Store, run: dg.DagsterRun, status: dg.DagsterRunStatus, error: str | None = None) -> str:
    """Record how `run` ended in its row and its request; returns what was done. Safe to repeat."""
    tags = run.tags
    request_id = as_uuid(tags.get("request_id"))
    if status == dg.DagsterRunStatus.SUCCESS:
        if request_id is None:
            return f"run {run.run_id} succeeded; its row was written by the run itself"
        row = store.get_run(run.run_id)
        note = row.get("error_message") if row and row.get("status") == "skipped" else None
        request = store.finish_request(request_id, "completed", note, run.run_id)
        return f"run {run.run_id} succeeded; request {request_id} is {request.status}"
    if status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        raise ValueError(f"run {run.run_id} has not ended: {status.value}")
    cancelled = status == dg.DagsterRunStatus.CANCELED
    message = (f"cancelled in Dagster{': ' + error if error else ''}" if cancelled
               else error or f"the Dagster run {run.run_id} failed")
    record_failed_run(store, run.run_id, tags, message, cancelled=cancelled)
    return f"run {run.run_id} {'cancelled' if cancelled else 'failed'}: {message[:200]}"


def with_retries(write: Callable[[], T], *, attempts: int, first_delay: float, log) -> T:
    """`write()`, retried with doubling delays while the store is unreachable.

    Run status sensors advance their cursor even when a tick fails, so a write-back that gave up
    would never be retried by Dagster; the request sensor's stale-claim check is the last resort.
    """
    for attempt in range(1, attempts + 1):
        try:
            return write()
        except StoreError as exc:
            if attempt == attempts:
                raise
            delay = first_delay * 2 ** (attempt - 1)
            log.warning(f"write-back failed (attempt {attempt} of {attempts}), retrying in {delay:g} s: {exc}")
            time.sleep(delay)
    raise AssertionError("unreachable")


def failure_message(context: dg.RunFailureSensorContext) -> str:
    """The run's step errors (innermost cause, which names the exception), else Dagster's failure message."""
    lines = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            lines.append(f"{event.step_key}: {error.message.strip()}")
    return "\n".join(lines) or (context.failure_event.message or "the run failed")


def make_write_back_sensors(
    *, attempts: int = settings.WRITE_BACK_ATTEMPTS, first_delay: float = 0.5, minimum_interval_seconds: int = 30,
) -> list[dg.RunStatusSensorDefinition]:
    """Sensors writing a retraining run's end into its row and its request: success, failure, cancellation."""
    # Every retraining run on the instance, whatever launched it: the UI's "Materialize all" (Dagster's
    # implicit asset job), and the CLI's in-process runs, which belong to no code location — the
    # run monitoring daemon fails those too when their process died.
    common = dict(default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=True,
                  minimum_interval_seconds=minimum_interval_seconds)

    def record(context: dg.RunStatusSensorContext, store: Store, status: dg.DagsterRunStatus,
               error: str | None = None) -> None:
        if not is_cycle_run(context.dagster_run):
            return
        done = with_retries(lambda: write_back(store, context.dagster_run, status, error),
                            attempts=attempts, first_delay=first_delay, log=context.log)
        context.log.info(done)

    @dg.run_status_sensor(
        name="retraining_run_succeeded", run_status=dg.DagsterRunStatus.SUCCESS, **common,
        description="Completes the retraining request of a run that succeeded.",
    )
    def retraining_run_succeeded(context: dg.RunStatusSensorContext, store: Store) -> None:
        record(context, store, dg.DagsterRunStatus.SUCCESS)

    @dg.run_failure_sensor(
        name="retraining_run_failed", **common,
        description="Marks a failed retraining run, and its request, failed with the error.",
    )
    def retraining_run_failed(context: dg.RunFailureSensorContext, store: Store) -> None:
        record(context, store, dg.DagsterRunStatus.FAILURE, failure_message(context))

    @dg.run_status_sensor(
        name="retraining_run_cancelled", run_status=dg.DagsterRunStatus.CANCELED, **common,
        description="Marks a cancelled retraining run failed and its request cancelled.",
    )
    def retraining_run_cancelled(context: dg.RunStatusSensorContext, store: Store) -> None:
        record(context, store, dg.DagsterRunStatus.CANCELED)

    return [retraining_run_succeeded, retraining_run_failed, retraining_run_cancelled]


# Requests.
def request_run(instance: dg.DagsterInstance, request_id: str) -> dg.DagsterRun | None:
    """The newest Dagster run carrying `request_id`, if this instance has one."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"request_id": request_id}), limit=1)
    return runs[0] if runs else None


def recover_stale_claims(
    instance: dg.DagsterInstance, store: Store, *, stale_after: timedelta, max_claims: int, now: datetime,
) -> list[str]:
    """Settle requests `processing` for longer than `stale_after`; returns what was done to each.

    Checked against Dagster: a request whose run is waiting or running is left alone; one whose
    run ended gets the write-back it missed; one whose run vanished is failed; one that never got
    a run (the claiming tick died, or its run was created but never submitted) is re-queued, so
    the next claim re-emits it under the same run key, or failed after `max_claims` claims.
    """
    notes, orphans = [], []
    for request in store.stale_requests(claimed_before=now - stale_after):
        run = request_run(instance, request.id)
        if run is None and request.dagster_run_id:
            message = f"its Dagster run {request.dagster_run_id} no longer exists"
            store.record_run_end(request.dagster_run_id, "failed", message, source="manual", request_id=request.id,
                                 triggered_by=request.requested_by, request_status="failed")
            notes.append(f"request {request.id} failed: {message}")
        elif run is None or run.status == dg.DagsterRunStatus.NOT_STARTED:
            orphans.append(request.id)
        elif run.is_finished:
            notes.append(f"late write-back: {write_back(store, run, run.status)}")
    if orphans:
        for request in store.recover_requests(orphans, stale_after, max_claims):
            notes.append(f"request {request.id} {'re-queued' if request.status == 'pending' else request.status}: "
                         f"{request.error_message}")
    return notes


def plan_runs(store: Store, claimed: list[RetrainingRequest]) -> list[dg.RunRequest]:
    """Run requests for the claimed requests, in queue order; invalid ones are failed with the reason."""
    run_requests = []
    for request in claimed:
        try:
            run_requests.append(run_request_for(request))
        except InvalidRequest as exc:
            store.finish_request(request.id, "failed", f"invalid request: {exc}")
    return run_requests


def make_request_sensor(
    *, name: str = "retraining_requests", requests_per_tick: int = settings.REQUESTS_PER_TICK,
    stale_after: timedelta = timedelta(minutes=settings.REQUEST_STALE_AFTER_MINUTES),
    max_claims: int = settings.REQUEST_MAX_CLAIMS,
    minimum_interval_seconds: int = settings.REQUEST_SENSOR_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The sensor starting one retraining run per pending request, highest priority first, then oldest."""

    @dg.sensor(
        name=name, job=retraining_job, minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Claims pending rows of model_retraining_requests (highest priority first, then oldest) "
        "and starts one retraining run for each, with the request id as run key.",
    )
    def retraining_requests(context: dg.SensorEvaluationContext, store: Store):
        for note in recover_stale_claims(context.instance, store, stale_after=stale_after, max_claims=max_claims,
                                         now=utc_now()):
            context.log.info(note)
        who = claimant(name)
        claimed = store.claim_requests(requests_per_tick, who)
        try:
            run_requests = plan_runs(store, claimed)
        except BaseException:
            # Nothing of this tick reaches Dagster: hand the claims straight back to the queue.
            try:
                store.release_requests([r.id for r in claimed], who)
            except StoreError as exc:
                context.log.warning(f"could not release claims, the stale-claim check will: {exc}")
            raise
        if not claimed:
            return dg.SkipReason("no pending retraining requests")
        invalid = len(claimed) - len(run_requests)
        context.log.info(f"claimed {len(claimed)} request(s): {len(run_requests)} to run, {invalid} invalid")
        if not run_requests:
            return dg.SkipReason(f"{invalid} invalid request(s) failed; none to run")
        return dg.SensorResult(run_requests=run_requests)

    return retraining_requests


# Decay.
def last_fired(cursor: str | None) -> datetime | None:
    return datetime.fromisoformat(json.loads(cursor)["last_fired_at"]) if cursor else None


def make_decay_sensor(
    *, name: str = "accuracy_decay", thresholds: DecayThresholds | None = None, metric: str = settings.GATE_METRIC,
    only_champion_predictions: bool = True, clock: Callable[[], datetime] = utc_now,
    minimum_interval_seconds: int = settings.DECAY_SENSOR_INTERVAL_SECONDS,
) -> dg.SensorDefinition:
    """The sensor starting a `decay_triggered` run when the champion's `metric` (accuracy,
    balanced_accuracy or macro_f1) has dropped significantly below its reference.

    `only_champion_predictions` counts only log rows whose `model_version` is the champion's.
    The cursor holds when it last fired, for the cooldown.
    """
    thresholds = thresholds or DecayThresholds()
    metric = check_gate_metric(metric)
    test = "one-sided exact binomial test" if metric == "accuracy" else "one-sided parametric bootstrap"

    @dg.sensor(
        name=name, job=retraining_job, minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts a retraining run when the champion's recent {metric} is significantly below its "
        f"reference {metric} ({test}), at most once per cooldown.",
    )
    def accuracy_decay(context: dg.SensorEvaluationContext, store: Store):
        now = clock()
        champion = store.champion()
        if champion is None:
            return dg.SkipReason("no champion model yet")
        start, version = now - thresholds.window, champion.version if only_champion_predictions else None
        # Accuracy needs two numbers; the other metrics the confusion matrix (both from the hourly counts).
        count = (store.count_correct(start, now, version) if metric == "accuracy"
                 else store.confusion_counts(start, now, version))
        verdict = assess_decay(count, reference_for(champion, metric), thresholds, metric)
        seen = f"champion {champion.version}, last {thresholds.window / timedelta(hours=1):g} h: {verdict.reason}"
        if not verdict.decayed:
            return dg.SkipReason(seen)
        fired = last_fired(context.cursor)
        if cooling_down(fired, now, thresholds.cooldown):
            return dg.SkipReason(f"{seen}; cooling down: a run was requested at {fired.isoformat()}")
        busy = context.instance.get_runs(filters=cycles_in_progress(), limit=1)
        if busy:
            return dg.SkipReason(f"{seen}; retraining run {busy[0].run_id} is already {busy[0].status.value}")
        context.log.info(seen)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(
                run_key=f"decay:{champion.version}:{now.isoformat()}",
                tags={"source": "decay_triggered", "decay/champion": champion.version, "decay/metric": metric,
                      "decay/evaluated": str(verdict.evaluated), f"decay/{metric}": f"{verdict.value:.4f}",
                      "decay/reference": f"{verdict.reference:.4f}", "decay/p_value": f"{verdict.p_value:.3g}"},
            )],
            cursor=json.dumps({"last_fired_at": now.isoformat(), "champion": champion.version}),
        )

    return accuracy_decay


retraining_requests = make_request_sensor()
accuracy_decay = make_decay_sensor()
write_back_sensors = make_write_back_sensors()
sensors = [retraining_requests, accuracy_decay, *write_back_sensors]
