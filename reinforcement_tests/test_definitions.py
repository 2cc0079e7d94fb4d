"""The code location: Definitions, the daily schedule, and what `dagster dev` shows."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from reinforcement_assets.backends.embedded import postmaster_pid
from reinforcement_assets.definitions import defs
from reinforcement_assets.defs.automation import auto_daily, retraining_job

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ["evaluation_log", "error_samples", "finetune_dataset", "retrained_model", "run_metrics"]


def test_definitions_load_with_no_environment_set(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SUPABASE_", "REINFORCEMENT_", "DAGSTER_"))}
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:reinforcement_assets", "-c",
         "from reinforcement_assets.definitions import defs; g = defs.resolve_asset_graph();"
         "print(sorted(k.to_user_string() for k in g.get_all_asset_keys()))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().replace("'", '"')) == sorted(ASSETS)
    assert not (tmp_path / ".reinforcement").exists()  # nothing starts at import


def test_the_assets_form_one_chain_with_descriptions_groups_and_kinds():
    graph = defs.resolve_asset_graph()
    for upstream, downstream in zip(ASSETS, ASSETS[1:]):
        assert dg.AssetKey(upstream) in graph.get(dg.AssetKey(downstream)).parent_keys
    for name in ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "reinforcement_loop" and node.description and node.kinds


def test_the_daily_schedule():
    assert (auto_daily.cron_schedule, auto_daily.execution_timezone) == ("0 2 * * *", "UTC")
    assert auto_daily.default_status == dg.DefaultScheduleStatus.RUNNING
    assert auto_daily.job_name == retraining_job.name
    tick = datetime(2026, 11, 27, 2, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance, \
            dg.build_schedule_context(instance=instance, scheduled_execution_time=tick) as context:
        (request,) = auto_daily.evaluate_tick(context).run_requests
    assert request.tags["source"] == "auto_daily"
    job = defs.resolve_job_def("retraining_job")
    assert job.name == "retraining_job"
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey(name) for name in ASSETS}


def test_a_scheduled_run_works_on_the_window_ending_at_its_tick(resources):
    tick = "2026-11-27T02:00:00+00:00"
    result = dg.materialize(
        [next(a for a in defs.assets if dg.AssetKey("evaluation_log") in a.keys)],
        resources=resources,
        tags={"source": "auto_daily", "dagster/scheduled_execution_time": tick},
    )
    # On an empty log the window still ends at the tick.
    (materialization,) = result.asset_materializations_for_node("evaluation_log")
    assert materialization.metadata["window_end"].value == tick
    assert materialization.metadata["rows"].value == 0

    # With one evaluated row the same scheduled run succeeds, on the window ending at the tick.
    evaluated_at = datetime(2026, 11, 27, 1, tzinfo=timezone.utc)
    resources["store"].insert_evaluations(pd.DataFrame([{
        "prediction_id": "p1", "model_version": "v0", "features": {"x0": 1.0, "x1": 2.0},
        "predicted_label": "a", "actual_label": "a", "confidence": 0.9,
        "predicted_at": evaluated_at - timedelta(minutes=5), "evaluated_at": evaluated_at,
    }]))
    result = dg.materialize(
        [next(a for a in defs.assets if dg.AssetKey("evaluation_log") in a.keys)],
        resources=resources, tags={"source": "auto_daily", "dagster/scheduled_execution_time": tick},
    )
    (materialization,) = result.asset_materializations_for_node("evaluation_log")
    assert materialization.metadata["window_end"].value == tick
    assert materialization.metadata["rows"].value == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_webserver(base: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/server_info", timeout=2)
            return
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                pytest.fail("the webserver did not start")
            time.sleep(0.5)


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=30))["data"]


def poll(fetch, timeout: float = 60):
    """`fetch()` until it returns something truthy (the code location may still be loading)."""
    deadline = time.time() + timeout
    while not (found := fetch()) and time.time() < deadline:
        time.sleep(0.5)
    return found


def test_the_dagster_ui_shows_the_asset_lineage(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w",
         str(ROOT / "workspace.yaml")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_webserver(base, server)
        query = "{ assetNodes { assetKey { path } dependencyKeys { path } groupName } }"
        nodes = poll(lambda: graphql(base, query)["assetNodes"])
        lineage = {n["assetKey"]["path"][0]: sorted(d["path"][0] for d in n["dependencyKeys"]) for n in nodes}
        assert lineage == {"evaluation_log": [], "error_samples": ["evaluation_log"],
                           "finetune_dataset": ["error_samples", "evaluation_log"],
                           "retrained_model": ["evaluation_log", "finetune_dataset"],
                           "run_metrics": ["finetune_dataset", "retrained_model"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_runs_of_the_cli_show_in_reinforcement_dev_and_ctrl_c_stops_the_database(tmp_path):
    """The README's path: `reinforcement demo`, then `reinforcement dev`; the demo's run is in the UI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "REINFORCEMENT_", "DAGSTER_"))}
    script = str(Path(sys.executable).with_name("reinforcement"))
    demo = subprocess.run([script, "demo", "--rows", "1500"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    run_id = next(line.split()[1].rstrip(":") for line in demo.stdout.splitlines() if line.startswith("run "))
    assert (tmp_path / ".reinforcement" / "dagster_home").is_dir()

    port = free_port()
    ui = subprocess.Popen([script, "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    pgdata = tmp_path / ".reinforcement" / "pgdata"
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_webserver(base, ui)
        runs = graphql(base, "{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
        assert {"runId": run_id, "status": "SUCCESS"} in runs
        # The daemon's first sensor ticks use the store: the embedded server runs again.
        assert poll(lambda: postmaster_pid(pgdata), timeout=90)
    finally:
        os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C in the terminal
        ui.wait(timeout=60)
    assert poll(lambda: postmaster_pid(pgdata) is None, timeout=30)
