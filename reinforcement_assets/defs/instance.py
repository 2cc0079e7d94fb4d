"""The Dagster instance's pieces: the run queue's cycle tag, the data folder's `dagster.yaml`, a run
coordinator that tags every run of the graph, and a run launcher that tells run monitoring when a
run's worker process died.

Dagster loads the coordinator and the launcher in the webserver and the daemon: this module imports
nothing of the loop beyond the standard library and Dagster.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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

# Dagster's default launcher, whose run workers are forked from a warm process that has already
# imported the code location (warm_workers: false for a fresh `dagster api execute_run` per run). It
# also checks that a run's worker process is alive: run monitoring fails the run of a worker that
# died (killed, machine restarted).
run_launcher:
  module: reinforcement_assets.defs.instance
  class: LocalRunLauncher
  config:
    warm_workers: true

run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  start_timeout_seconds: 300  # launched but never started: failed after 5 minutes
  cancel_timeout_seconds: 180
  max_runtime_seconds: 21600  # 6 hours; a run's dagster/max_runtime tag overrides it
  max_resume_run_attempts: 0
"""


CYCLE_JOB = "retraining_job"
# On the runs whose worker LocalRunLauncher forked warm (its `terminate` interrupts that worker).
WARM_WORKER_TAG = "reinforcement/run_worker"


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


# Imported once by the warm process the run workers are forked from (the code location's module
# is added from each run's origin).
# Dagster's run body and the instance's storage are preloaded too: they are a run worker's other
# import cost (about 2.5 s before its RUN_START). A module that is not installed is skipped.
WARM_MODULES = ("pandas", "scipy.stats", "sklearn.ensemble", "sklearn.linear_model", "dagster._cli.api",
                "dagster._core.storage.sqlite_storage", "dagster._core.storage.runs.sqlite.sqlite_run_storage",
                "dagster._core.storage.event_log.sqlite.sqlite_event_log",
                "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage", "dagster_postgres")

logger = logging.getLogger(__name__)


def execute_run(instance_ref: str, run_id: str) -> None:
    """A run worker's body: what `dagster api execute_run` does for the run, in a forked process."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts(), dg.DagsterInstance.from_ref(deserialize_value(instance_ref)) as instance:
        _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=False)


def source_stamp(working_directory: str | None, module: str) -> float:
    """The newest modification time of the code location's Python files (0 when not found)."""
    package = Path(working_directory or os.getcwd()) / module.split(".")[0]
    files = package.rglob("*.py") if package.is_dir() else [package.with_suffix(".py")]
    return max((f.stat().st_mtime for f in files if f.exists()), default=0.0)


class WarmWorkers:
    """Run workers forked from a `multiprocessing` forkserver that has imported the code location.

    The forkserver starts with the first run, inheriting this process's environment and sys.path;
    `stale` says when the code location's files changed since then (the launcher then takes
    Dagster's default path until this process restarts).
    """

    def __init__(self, module: str, working_directory: str | None, preload: Iterable[str]):
        import sys

        if working_directory and working_directory not in sys.path:
            sys.path.insert(0, working_directory)
        self.module, self.working_directory = module, working_directory
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([*preload, module])
        self.stamp = source_stamp(working_directory, module)

    @property
    def stale(self) -> bool:
        return source_stamp(self.working_directory, self.module) != self.stamp

    def start(self, instance_ref: str, run_id: str) -> int:
        """Fork a run worker for `run_id`; its pid."""
        multiprocessing.active_children()  # reaps finished workers
        process = self.context.Process(target=execute_run, args=(instance_ref, run_id),
                                       name=f"dagster-run-{run_id}")
        process.start()
        return process.pid


def module_origin(run: dg.DagsterRun) -> tuple[str, str | None] | None:
    """(module, working directory) of the run's code location when it is loaded from a module."""
    from dagster._core.code_pointer import ModuleCodePointer

    origin = run.job_code_origin
    pointer = origin.repository_origin.code_pointer if origin else None
    if isinstance(pointer, ModuleCodePointer):
        return pointer.module, pointer.working_directory
    return None


class LocalRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default run launcher, whose run workers start warm, and which answers run
    monitoring's worker health check.

    With `warm_workers` (the default) a run's worker is forked from a process that has already imported
    the code location and the heavy libraries, and runs Dagster's own `execute_run` body: same events,
    same lifecycle, no import cost. On any problem (a code location not loaded from a module, its
    files changed since the warm process started, a failed fork) the run takes Dagster's default
    path: a fresh `dagster api execute_run` process started by the code server.

    A run's worker is the process that emitted its RUN_START event. For one machine only
    (`reinforcement dev`): a worker on another host would look dead.
    """

    def __init__(self, inst_data=None, warm_workers: bool = True, preload_modules: Iterable[str] = WARM_MODULES):
        super().__init__(inst_data=inst_data)
        self.warm_workers = warm_workers
        self.preload_modules = tuple(preload_modules)
        self._warm: dict[tuple[str, str | None], WarmWorkers] = {}

    @classmethod
    def config_type(cls):
        return {"warm_workers": dg.Field(bool, is_required=False, default_value=True),
                "preload_modules": dg.Field([str], is_required=False, default_value=list(WARM_MODULES))}

    @classmethod
    def from_config_value(cls, inst_data, config_value: Mapping[str, Any]) -> LocalRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context) -> None:
        if self.warm_workers:
            try:
                if self._launch_warm(context.dagster_run):
                    return
            except Exception:  # noqa: BLE001 - any problem: Dagster's default path
                logger.warning("warm run worker failed to start; using Dagster's default launch",
                               exc_info=True)
        super().launch_run(context)

    def _launch_warm(self, run: dg.DagsterRun) -> bool:
        """Fork the run's worker from the warm process; False when the default path should be taken."""
        from dagster._serdes import serialize_value

        origin = module_origin(run)
        if origin is None:
            return False
        workers = self._warm.get(origin)
        if workers is None:
            workers = self._warm[origin] = WarmWorkers(*origin, self.preload_modules)
        if workers.stale:
            return False
        self._instance.add_run_tags(run.run_id, {WARM_WORKER_TAG: "warm"})
        pid = workers.start(serialize_value(self._instance.get_ref()), run.run_id)
        self._instance.report_engine_event(f"Forked warm run worker (pid: {pid}).", run,
                                           cls=self.__class__)
        return True

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        worker = worker_process(self._instance, run_id) if run and not run.is_finished else None
        if worker is None or run.tags.get(WARM_WORKER_TAG) != "warm":  # not forked here, or not started
            return super().terminate(run_id)
        pid, started_at = worker
        if not process_alive(pid, started_at):
            return False
        self._instance.report_run_canceling(run)
        os.kill(pid, signal.SIGINT)  # as Dagster interrupts its run workers: the run ends CANCELED
        return True

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
