"""Launch-to-completed latency of a retraining run launched as the UI and the sensors launch it,
against an in-process run of the same job.

    python -m benchmarks.launch_latency --rows 3000 --repeats 5 --executors in_process multiprocess

On a fresh database of the embedded PostgreSQL, the demo's world (a model trained before a drift,
`--rows` of its predictions over 7 days). *Launched*: the UI's GraphQL mutation
`launchPipelineExecution` on a real instance (a temporary DAGSTER_HOME) with the data folder's run
launcher (`--launcher warm`: workers forked warm; `default`: Dagster's default path) and a real code location (`reinforcement_assets.definitions`, served by a code server
process, as `dagster dev` runs it); timed from the mutation to the run's SUCCESS in the instance.
The run queue's dequeue interval and a sensor's interval are not counted (the instance launches
at once). *In process*: `execute_in_process` of the same job in this process, on the same data.
Each run starts from the same champion (the deployed model is promoted back before each run).
`--executors` repeats the launched runs with the code location's RUN_EXECUTOR set to each value.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .machine import begin_benchmark, embedded_server, save, scratch_database

LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def seed(url: str, data_dir: Path, rows: int):
    """The demo's deployed model and `rows` of its predictions up to now; returns (store, window end)."""
    import pandas as pd

    from reinforcement_assets.backends.artifacts import LocalArtifactStorage
    from reinforcement_assets.backends.postgres_store import PostgresStore
    from reinforcement_assets.demo import deploy_initial_model, drift_scenario, log_traffic

    store = PostgresStore(database_url=url)
    scenario = drift_scenario(rows, seed=0)
    model = deploy_initial_model(store, LocalArtifactStorage(base_dir=str(data_dir / "artifacts")), scenario)
    end = pd.Timestamp.now(tz="UTC").floor("min")
    log, _ = log_traffic(model, *scenario.window, end - pd.Timedelta(days=7), end, model_version="v0", seed=0)
    store.insert_evaluations(log)
    return store, end


def wait_until_finished(instance, run_id: str, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(0.02)
    raise RuntimeError(f"run {run_id} did not finish within {timeout:g} s")


PHASES = ("RUN_STARTING", "RUN_START", "STEP_START", "RUN_SUCCESS")


def phases(instance, run_id: str, launched_at: float) -> dict[str, float]:
    """Seconds from the launch to the run's first event of each of PHASES."""
    seen: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        kind = entry.dagster_event.event_type.name if entry.dagster_event else None
        if kind in PHASES and kind not in seen:
            seen[kind] = round(entry.timestamp - launched_at, 3)
    return seen


def launched_run(workspace, instance, run_config: dict, timeline: list) -> float:
    """Seconds from the UI's launch mutation to the run's SUCCESS (its phases appended to `timeline`)."""
    import dagster as dg
    from dagster_graphql.test.utils import execute_dagster_graphql

    context = workspace.create_request_context()
    (location,) = context.code_location_names
    params = {"selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                           "pipelineName": "retraining_job"},
              "runConfigData": run_config, "mode": "default",
              "executionMetadata": {"tags": [{"key": "source", "value": "manual"}]}}
    started, launched_at = time.perf_counter(), time.time()
    result = execute_dagster_graphql(context, LAUNCH, {"executionParams": params})
    answer = result.data["launchPipelineExecution"]
    if answer["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch failed: {answer}")
    run = wait_until_finished(instance, answer["run"]["runId"])
    seconds = time.perf_counter() - started
    if run.status != dg.DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"run {run.run_id} ended {run.status.value}")
    timeline.append(phases(instance, run.run_id, launched_at))
    print(f"  {seconds:.2f} s; events after launch: {timeline[-1]}", flush=True)
    return seconds


def in_process_run(job, instance, run_config: dict) -> float:
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, run_config=run_config, tags={"source": "manual"})
    seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"run {result.run_id} failed")
    return seconds


def code_location(instance, working_directory: str):
    """A workspace serving `reinforcement_assets.definitions` from a code server process of its own."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    target = ModuleTarget(module_name="reinforcement_assets.definitions", attribute=None,
                          working_directory=working_directory, location_name="reinforcement_loop")
    return WorkspaceProcessContext(instance, target)


def instance_yaml(launcher: str) -> str:
    """Dagster's default run coordinator (the launch happens in the mutation) and the data folder's
    run launcher: run workers forked warm (`warm`), or Dagster's default path (`default`)."""
    return ("run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
            "run_launcher:\n  module: reinforcement_assets.defs.instance\n  class: LocalRunLauncher\n"
            f"  config:\n    warm_workers: {str(launcher == 'warm').lower()}\n"
            "telemetry:\n  enabled: false\n")


def bench(server_url: str, rows: int, repeats: int, executors: Sequence[str], launcher: str) -> dict[str, Any]:
    import dagster as dg

    with scratch_database(server_url, "bench_launch") as url, tempfile.TemporaryDirectory() as folder:
        data_dir, home = Path(folder) / "data", Path(folder) / "dagster_home"
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text(instance_yaml(launcher))
        os.environ.update(REINFORCEMENT_DATABASE_URL=url, REINFORCEMENT_DATA_DIR=str(data_dir),
                          DAGSTER_HOME=str(home))
        store, end = seed(url, data_dir, rows)
        run_config = {"ops": {"evaluation_log": {"config": {"window_end": end.isoformat()}}}}

        from reinforcement_assets.definitions import defs
        job = defs.resolve_job_def("retraining_job")
        results: dict[str, Any] = {"rows": rows, "repeats": repeats, "launcher": launcher, "launched": {},
                                   "load_average_before": os.getloadavg()}
        with dg.DagsterInstance.get() as instance:
            def fresh(run) -> float:
                store.promote("v0", "benchmark: every run starts from the deployed model")
                return run()

            fresh(lambda: in_process_run(job, instance, run_config))  # warm-up: imports, connections
            times = [fresh(lambda: in_process_run(job, instance, run_config)) for _ in range(repeats)]
            results["in_process_seconds"] = times
            print(f"in process: median {statistics.median(times):.2f} s of {times}", flush=True)
            for executor in executors:
                os.environ["RUN_EXECUTOR"] = executor  # read by the code server when it loads the location
                timeline: list = []
                with code_location(instance, os.getcwd()) as workspace:
                    times = [fresh(lambda: launched_run(workspace, instance, run_config, timeline))
                             for _ in range(repeats)]
                results["launched"][executor] = times
                results.setdefault("phases", {})[executor] = timeline
                print(f"launched, {executor} executor: median {statistics.median(times):.2f} s of {times}",
                      flush=True)
            os.environ.pop("RUN_EXECUTOR", None)
    results["load_average_after"] = os.getloadavg()
    return results


def table(results: dict[str, Any]) -> str:
    base = statistics.median(results["in_process_seconds"])
    lines = ["| run | executor | launch to completed (s, median) | min | max | ratio to in process |",
             "|---|---|---:|---:|---:|---:|",
             f"| `execute_in_process` (this process) | in_process | {base:.2f} | "
             f"{min(results['in_process_seconds']):.2f} | {max(results['in_process_seconds']):.2f} | 1.00x |"]
    for executor, times in results["launched"].items():
        median = statistics.median(times)
        launcher = {"warm": "LocalRunLauncher, warm worker", "default": "LocalRunLauncher, warm_workers: false"}
        lines.append(f"| launched (UI mutation, {launcher[results.get('launcher', 'default')]}) | {executor} | {median:.2f} | "
                     f"{min(times):.2f} | {max(times):.2f} | {median / base:.2f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000, help="predictions in the window (default 3000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--executors", nargs="+", choices=["in_process", "multiprocess"], default=["in_process"])
    parser.add_argument("--launcher", choices=["warm", "default"], default="warm",
                        help="run workers forked from the warm process, or Dagster's default path")
    parser.add_argument("--output", default="launch_latency")
    args = parser.parse_args(argv)
    begin_benchmark()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    with embedded_server() as (server_url, _):
        results = bench(server_url, args.rows, args.repeats, args.executors, args.launcher)
    print(table(results))
    print(f"results: {save(args.output, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
