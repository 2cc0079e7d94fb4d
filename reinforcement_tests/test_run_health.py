"""Runs that never wedge: a dead worker's run is failed and settled, one cycle at a time through the
run queue, the graph's steps in one process.

Dagster's daemons are driven through their own iteration functions (internal APIs, as Dagster's
own tests drive them): run monitoring (`execute_run_monitoring_iteration`), the run queue
(`QueuedRunCoordinatorDaemon.run_iteration`) and sensors (`execute_sensor_iteration`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from reinforcement_assets import cli
from reinforcement_assets.defs.assets import asset_checks, assets
from reinforcement_assets.defs.automation import retraining_job
from reinforcement_assets.defs.instance import (
    CYCLE_ASSETS, CYCLE_TAG, CYCLE_TAG_VALUE, LocalRunLauncher, ensure_local_instance, is_cycle_run,
)
from reinforcement_assets.defs.sensors import make_decay_sensor, make_request_sensor
from reinforcement_assets.demo import deploy_initial_model, drift_scenario, log_traffic
from reinforcement_tests.test_decay import deploy, ticks
from reinforcement_tests.test_sensors import tick

LOG = logging.getLogger("test_run_health")
REPO = Path(__file__).resolve().parent.parent


def wait_for(condition, what: str, timeout: float = 180.0):
    """Poll `condition()` until it is truthy (returned) or `timeout` seconds pass (fails naming `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def local_home(tmp_path) -> Path:
    """A DAGSTER_HOME with the data folder's dagster.yaml, as `reinforcement` writes it."""
    home = tmp_path / "dagster_home"
    assert ensure_local_instance(home)
    return home


def location_file(tmp_path: Path, database_url: str) -> Path:
    """A code location on the test database: the graph, the write-back and request sensors (ticking every second)."""
    location = tmp_path / "location.py"
    location.write_text(
        "import dagster as dg\n"
        "from reinforcement_assets.defs.assets import asset_checks, assets\n"
        "from reinforcement_assets.defs.automation import retraining_job\n"
        "from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage\n"
        "from reinforcement_assets.backends.postgres_store import PostgresStore\n"
        "from reinforcement_assets.defs.sensors import make_write_back_sensors\n"
        f"artifacts = LocalArtifactStorage(base_dir={str(tmp_path / 'artifacts')!r})\n"
        "defs = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[retraining_job],\n"
        "    sensors=make_write_back_sensors(minimum_interval_seconds=1),\n"
        f"    resources={{'store': PostgresStore(database_url={database_url!r}), 'artifacts': artifacts,\n"
        "               'io_manager': ArtifactIOManager(storage=artifacts)}, executor=dg.in_process_executor)\n"
    )
    return location


def workspace_for(instance, location: Path | None = None):
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget, InProcessWorkspaceLoadTarget

    if location is None:
        return WorkspaceProcessContext(instance, EmptyWorkspaceTarget())
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(location), attribute="defs"),
                                         location_name="loop")
    return WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin))


# The worker: the CLI's way of running a cycle (execute_in_process on the instance), in a process we kill.
WORKER = """
import json, os, sys
import dagster as dg
from reinforcement_assets.defs.assets import asset_checks, assets
from reinforcement_assets.defs.automation import retraining_job
from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage
from reinforcement_assets.backends.postgres_store import PostgresStore
args = json.loads(sys.argv[1])
artifacts = LocalArtifactStorage(base_dir=args["artifacts"])
job = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[retraining_job], resources={
    "store": PostgresStore(database_url=args["database_url"]), "artifacts": artifacts,
    "io_manager": ArtifactIOManager(storage=artifacts)}).resolve_job_def("retraining_job")
job.execute_in_process(instance=dg.DagsterInstance.get(), run_id=args["run_id"], tags=args["tags"],
                       run_config=args["run_config"])
"""


def test_a_run_killed_mid_training_is_failed_settled_and_its_request_can_run_again(
        store, artifacts, database_url, tmp_path, local_home):
    scenario = drift_scenario(3_000, seed=5)
    model = deploy_initial_model(store, artifacts, scenario)
    end = pd.Timestamp.now(tz="UTC")
    log, _ = log_traffic(model, *scenario.window, end - pd.Timedelta(days=7), end, model_version="v0", seed=5)
    store.insert_evaluations(log)

    instance = dg.DagsterInstance.from_config(str(local_home))
    assert isinstance(instance.run_launcher, LocalRunLauncher) and instance.run_monitoring_enabled
    request = store.create_request("accuracy collapsed", priority="high", options={"force": True})
    (run_request,) = tick(make_request_sensor(), instance, store).run_requests
    run_config = dict(run_request.run_config)
    run_config.setdefault("ops", {}).setdefault("retrained_model", {"config": {}})["config"]["learner"] = \
        "reinforcement_tests.learner_factories:hanging"

    with workspace_for(instance, location_file(tmp_path, database_url)) as workspace:
        from dagster._daemon.monitoring import execute_run_monitoring_iteration
        from dagster._daemon.sensor import execute_sensor_iteration

        def sensor_iteration():
            list(execute_sensor_iteration(workspace, LOG, None, None))

        sensor_iteration()  # the write-back sensors start watching from here

        run_id, marker = str(uuid.uuid4()), tmp_path / "training_started"
        env = {**os.environ, "DAGSTER_HOME": str(local_home), "HANGING_MARKER": str(marker),
               "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        args = {"artifacts": str(tmp_path / "artifacts"), "database_url": database_url, "run_id": run_id,
                "tags": dict(run_request.tags), "run_config": run_config}
        worker = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: marker.exists() or worker.poll() is not None, "the worker to start training")
            assert worker.poll() is None, "the worker exited before training"
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()

        # Wedged: Dagster says STARTED, the row says running, the request processing.
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        assert store.get_run(run_id)["status"] == "running"
        assert store.get_request(request.id).status == "processing"

        list(execute_run_monitoring_iteration(workspace, LOG))
        failed = instance.get_run_by_id(run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE

        wait_for(lambda: sensor_iteration() or store.get_run(run_id)["status"] == "failed",
                 "the failure sensor to write the failure back")
    row, settled = store.get_run(run_id), store.get_request(request.id)
    assert f"run worker process {worker.pid} is gone" in row["error_message"]
    assert (settled.status, settled.error_message) == ("failed", row["error_message"])

    # Nothing is left in progress: a new request for the same thing gets its run.
    store.create_request("accuracy collapsed, again", priority="high", options={"force": True})
    (again,) = tick(make_request_sensor(), instance, store).run_requests
    assert again.tags["request_id"] != request.id


def test_a_live_worker_is_healthy_and_a_reused_pid_is_not(local_home):
    instance = dg.DagsterInstance.from_config(str(local_home))
    result = retraining_job_stand_in().execute_in_process(instance=instance)
    launcher = instance.run_launcher
    health = launcher.check_run_worker_health(instance.get_run_by_id(result.run_id))
    assert health.status.value == "RUNNING" and str(os.getpid()) in health.msg  # this process ran it

    from reinforcement_assets.defs.instance import process_alive
    assert not process_alive(os.getpid(), started_at=0.0)  # this pid, but created after "its" run started


@dg.op
def _noop() -> None:
    pass


def retraining_job_stand_in() -> dg.JobDefinition:
    @dg.job(name="stand_in")
    def stand_in():
        _noop()
    return stand_in


def test_the_decay_sensor_is_busy_only_with_retraining_runs(store, artifacts, instance):
    drift_at = deploy(store, artifacts, "abrupt", seed=1)
    unrelated = instance.create_run_for_job(retraining_job_stand_in(), status=dg.DagsterRunStatus.STARTED)
    ((_, result),) = ticks(store, instance, lambda clock: make_decay_sensor(clock=clock),
                           [drift_at + timedelta(hours=20)])
    assert len(result.run_requests) == 1, result.skip_message  # an unrelated run does not hold it back
    assert not is_cycle_run(unrelated)

    cycle = instance.create_run_for_job(retraining_job_stand_in(), status=dg.DagsterRunStatus.STARTED,
                                        tags={CYCLE_TAG: CYCLE_TAG_VALUE})
    ((_, result),) = ticks(store, instance, lambda clock: make_decay_sensor(clock=clock),
                           [drift_at + timedelta(hours=20)])
    assert result.run_requests == [] and f"retraining run {cycle.run_id} is already STARTED" in result.skip_message


# One cycle at a time, through Dagster's run queue.
@pytest.fixture
def queued_instance(tmp_path, local_home):
    """The data folder's instance as written, but with Dagster's test launcher (records launches, starts nothing)."""
    config = yaml.safe_load((local_home / "dagster.yaml").read_text())
    config["run_launcher"] = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
    home = tmp_path / "queued_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def submit(instance, run: dg.DagsterRun) -> dg.DagsterRun:
    from dagster._core.run_coordinator import SubmitRunContext
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))


def test_one_cycle_runs_at_a_time_whoever_launched_it(queued_instance, resources, database_url, tmp_path):
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    instance = queued_instance
    defs = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[retraining_job], resources=resources)
    job = defs.resolve_job_def("retraining_job")
    implicit = defs.resolve_implicit_global_asset_job_def()
    with workspace_for(instance, location_file(tmp_path, database_url)) as workspace:
        repo = next(iter(workspace.create_request_context().get_code_location("loop").get_repositories().values()))
        origins = {name: repo.get_full_job(name).get_remote_origin() for name in ("retraining_job", "__ASSET_JOB")}

    def queued(job_def, origin, **kwargs) -> dg.DagsterRun:
        return submit(instance, instance.create_run_for_job(job_def, remote_job_origin=origins[origin], **kwargs))

    scheduled = queued(job, "retraining_job", tags={**job.run_tags, "source": "auto_daily"})  # as Dagster launches
    requested = queued(job, "retraining_job", tags={"source": "manual"})
    # The UI's "Materialize all": Dagster's implicit asset job, which has no tags of its own.
    ui = queued(implicit, "__ASSET_JOB", asset_selection=frozenset(CYCLE_ASSETS))
    other = queued(retraining_job_stand_in(), "retraining_job")
    assert [r.tags.get(CYCLE_TAG) for r in (scheduled, requested, ui, other)] == [CYCLE_TAG_VALUE] * 3 + [None]

    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

    def dequeue() -> dict[str, dg.DagsterRunStatus]:
        with workspace_for(instance) as workspace:
            list(daemon.run_iteration(workspace))
        return {r.run_id: r.status for r in instance.get_runs()}

    status = dequeue()
    launched = [r.run_id for r in (scheduled, requested, ui) if status[r.run_id] != dg.DagsterRunStatus.QUEUED]
    assert launched == [scheduled.run_id] and status[other.run_id] != dg.DagsterRunStatus.QUEUED
    assert dequeue()[requested.run_id] == dg.DagsterRunStatus.QUEUED  # still one at a time

    for finished in (scheduled, requested):
        instance.report_run_failed(instance.get_run_by_id(finished.run_id))
        status = dequeue()
        waiting = [r for r in (requested, ui) if status[r.run_id] == dg.DagsterRunStatus.QUEUED]
        assert len(waiting) == (1 if finished is scheduled else 0)


def test_the_cli_says_its_in_process_cycle_bypasses_the_queue(instance):
    assert cli.bypass_notes(instance) == []
    run = instance.create_run_for_job(retraining_job_stand_in(), status=dg.DagsterRunStatus.STARTED,
                                      tags={CYCLE_TAG: CYCLE_TAG_VALUE})
    (note,) = cli.bypass_notes(instance)
    assert run.run_id in note and "outside Dagster's run queue" in note


def test_the_cli_writes_the_data_folders_instance_once(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("REINFORCEMENT_DATA_DIR", raising=False)
    cli.use_data_dir(str(tmp_path / "data"))
    config = tmp_path / "data" / "dagster_home" / "dagster.yaml"
    instance = dg.DagsterInstance.from_config(str(config.parent))
    assert isinstance(instance.run_launcher, LocalRunLauncher)
    queue = instance.get_concurrency_config().run_queue_config
    assert [dict(limit) for limit in queue.tag_concurrency_limits] == [{"key": CYCLE_TAG, "limit": 1}]
    assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds <= 600

    config.write_text("# mine\n")
    cli.use_data_dir(str(tmp_path / "data"))
    assert config.read_text() == "# mine\n"  # never overwritten

    own = tmp_path / "own_home"
    monkeypatch.setenv("DAGSTER_HOME", str(own))
    cli.use_data_dir(str(tmp_path / "data"))
    assert not (own / "dagster.yaml").exists()  # a DAGSTER_HOME the user set is theirs


def test_the_cycle_assets_are_the_graphs():
    assert CYCLE_ASSETS == {key for a in assets for key in a.keys}


# The graph's steps in one process.
def test_runs_execute_their_steps_in_one_process_unless_configured():
    from reinforcement_assets.definitions import defs

    assert retraining_job.executor_def is dg.in_process_executor
    assert defs.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor

    probe = ("from reinforcement_assets.defs.automation import retraining_job;"
             "print(retraining_job.executor_def.name)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "RUN_EXECUTOR": "multiprocess"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "multiprocess"
    bad = subprocess.run([sys.executable, "-c", probe], env={**env, "RUN_EXECUTOR": "threads"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "RUN_EXECUTOR='threads'" in bad.stderr and "in_process, multiprocess" in bad.stderr


# Run workers forked warm by LocalRunLauncher.
WARM_LOCATION = """
import os, pathlib, time
import dagster as dg

@dg.op
def wait_for_release() -> int:
    folder = pathlib.Path(os.environ["WARM_TEST_DIR"])
    (folder / "started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()

@dg.job(executor_def=dg.in_process_executor)  # the step runs in the run worker, as the loop's do
def warm_job():
    wait_for_release()

defs = dg.Definitions(jobs=[warm_job])
"""


def launch_warm(instance, workspace, module) -> dg.DagsterRun:
    """A run of the module location's `warm_job`, launched through the instance (as the run queue does)."""
    location = workspace.create_request_context().get_code_location("warm")
    remote = next(iter(location.get_repositories().values())).get_full_job("warm_job")
    run = instance.create_run_for_job(module.warm_job, remote_job_origin=remote.get_remote_origin(),
                                      job_code_origin=remote.get_python_origin())
    return instance.launch_run(run.run_id, workspace.create_request_context())


def test_a_launched_run_is_forked_warm_goes_through_dagsters_lifecycle_and_is_health_checked(
        tmp_path, local_home, monkeypatch):
    import importlib

    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    name = f"warm_location_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(WARM_LOCATION)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WARM_TEST_DIR", str(tmp_path))
    module = importlib.import_module(name)
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name=name, attribute="defs", working_directory=str(tmp_path)),
        location_name="warm")
    started, release = tmp_path / "started", tmp_path / "release"
    with dg.DagsterInstance.from_config(str(local_home)) as instance, \
            WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as workspace:
        launcher = instance.run_launcher
        assert isinstance(launcher, LocalRunLauncher) and launcher.warm_workers

        run = launch_warm(instance, workspace, module)
        pid = int(wait_for(lambda: started.exists() and started.read_text(), "the run's step to start"))
        assert pid != os.getpid()
        health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
        assert health.status.value == "RUNNING" and f"process {pid} is alive" in health.msg
        release.write_text("go")
        done = wait_for(lambda: (r := instance.get_run_by_id(run.run_id)).is_finished and r, "the run to end")
        assert done.status == dg.DagsterRunStatus.SUCCESS
        events = [e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event]
        kinds = [e.event_type for e in events]
        lifecycle = [dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START,
                     dg.DagsterEventType.RUN_SUCCESS]
        assert [k for k in kinds if k in lifecycle] == lifecycle
        assert any("Forked warm run worker" in (e.message or "") for e in events)
        assert next(e for e in events if e.event_type == dg.DagsterEventType.RUN_START).pid == pid
        wait_for(lambda: launcher.check_run_worker_health(done).status.value == "FAILED",
                 "the finished worker to be seen gone")

        # Terminated from the UI: the worker is interrupted and the run ends CANCELED.
        release.unlink()
        started.unlink()
        run = launch_warm(instance, workspace, module)
        wait_for(started.exists, "the second run's step to start")
        assert launcher.terminate(run.run_id)
        canceled = wait_for(lambda: (r := instance.get_run_by_id(run.run_id)).is_finished and r, "the cancel")
        assert canceled.status == dg.DagsterRunStatus.CANCELED
