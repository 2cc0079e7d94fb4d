"""The Dagster instance's pieces: the run queue's cycle tag, the data folder's `dagster.yaml`, a run
coordinator that tags every run of the graph, and a run launcher that tells run monitoring when a
run's worker process died.

Dagster loads the coordinator and the launcher in the webserver and the daemon: this module imports
nothing of the loop beyond the standard library and Dagster.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psutil
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.run_coordinator import SubmitRunContext

# The run queue's limit (`tag_concurrency_limits`) is on this tag: one cycle at a time.
CYCLE_TAG = "reinforcement/cycle"
CYCLE_TAG_VALUE = "retraining"
# The graph's assets (test_run_health checks this against the definitions).
CYCLE_ASSETS = frozenset(dg.AssetKey(name) for name in (
    "evaluation_log", "error_samples", "finetune_dataset", "retrained_model", "run_metrics"))

# Written into a data folder's DAGSTER_HOME when it has none (docs/deployment.md#the-local-instance).
LOCAL_INSTANCE_YAML = """\
# The Dagster instance of this data folder, written by `reinforcement` because there was none
# (docs/deployment.md#the-local-instance). Edit freely: it is never overwritten.

# Runs wait in a queue; the daemon (`reinforcement dev` starts it) starts them within the limits
# below. Every run of the graph carries the tag reinforcement/cycle: one cycle at a time.
run_coordinator:
  module: reinforcement_assets.defs.instance
  class: CycleRunCoordinator
  config:
    dequeue_interval_seconds: 2

concurrency:
  runs:
    tag_concurrency_limits:
      - key: reinforcement/cycle
        limit: 1

# Dagster's default launcher (a worker process per run), which also checks that a run's worker
# process is alive: run monitoring fails the run of a worker that died (killed, machine restarted).
run_launcher:
  module: reinforcement_assets.defs.instance
  class: LocalRunLauncher

run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  start_timeout_seconds: 300  # launched but never started: failed after 5 minutes
  cancel_timeout_seconds: 180
  max_runtime_seconds: 21600  # 6 hours; a run's dagster/max_runtime tag overrides it
  max_resume_run_attempts: 0
"""


CYCLE_JOB = "retraining_job"


def is_cycle_run(run: dg.DagsterRun) -> bool:
    """Whether `run` is a retraining cycle: it carries the cycle tag, is a run of `retraining_job`, or
    materialises an asset of the graph."""
    return (CYCLE_TAG in run.tags or run.job_name == CYCLE_JOB
            or bool(CYCLE_ASSETS & set(run.asset_selection or ())))


def ensure_local_instance(dagster_home: Path) -> bool:
    """Write the data folder's `dagster.yaml` into `dagster_home` unless it has one; True if written."""
    config = dagster_home / "dagster.yaml"
    if config.exists():
        return False
    dagster_home.mkdir(parents=True, exist_ok=True)
    config.write_text(LOCAL_INSTANCE_YAML)
    return True


class CycleRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's run queue, which first tags every run of the graph with the cycle tag.

    `retraining_job` carries the tag itself; the UI's "Materialize" launches Dagster's implicit asset
    job, which has no tags of its own, so its runs get the tag here and wait their turn too.
    """

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if CYCLE_TAG not in run.tags and is_cycle_run(run):
            self._instance.add_run_tags(run.run_id, {CYCLE_TAG: CYCLE_TAG_VALUE})
            run = self._instance.get_run_by_id(run.run_id)
            context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)


def worker_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the process that started run `run_id` and when it did, from its RUN_START event."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    if not records or records[0].event_log_entry.dagster_event is None:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid
    return (pid, entry.timestamp) if pid else None


def process_alive(pid: int, started_at: float) -> bool:
    """Whether process `pid` is running and is the one that existed at `started_at` (pids get reused)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= started_at + 1
    except psutil.NoSuchProcess:
        return False


class LocalRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default run launcher, which also answers run monitoring's worker health check.

    A run's worker is the process that emitted its RUN_START event: the run worker the code server
    started, or the CLI's own process for `reinforcement demo`. For one machine only (`reinforcement
    dev`): a worker on another host would look dead.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        worker = worker_process(self._instance, run.run_id)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event yet")
        pid, started_at = worker
        if process_alive(pid, started_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone")
