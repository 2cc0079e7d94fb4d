"""deploy/dagster.yaml, the instance of docs/deployment.md, on the embedded PostgreSQL.

The file is loaded as shipped except its run launcher: `dagster_docker.DockerRunLauncher` needs a
Docker engine, which the test machine does not have, so the test checks that section and swaps in
Dagster's default launcher (runs as local processes); storage, run queue, concurrency limits and
run monitoring are the file's own. Its `env:` values come from the environment as in production:
the embedded server listens only on a Unix socket, so `DAGSTER_PG_HOST` is empty and libpq takes
the socket directory from `PGHOST`.

One test runs the production path on it with the real `dagster-daemon` (about 40 s, most of it
Python starting the run worker and a process per step): a retraining request, the request sensor,
the run queue, and a run worker the daemon launches in a process of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
import yaml
from psycopg import conninfo, errors

from reinforcement_assets import definitions
from reinforcement_assets.defs.automation import CYCLE_TAG
from reinforcement_assets.demo import deploy_initial_model, drift_scenario, log_traffic, register_champion
from reinforcement_assets.model import train_from_scratch
from reinforcement_tests.test_security import acting_as

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "dagster.yaml"
MIGRATION = ROOT / "supabase" / "migrations" / "20261201000000_dagster_schema.sql"
END = pd.Timestamp(datetime(2026, 11, 20, 2, tzinfo=timezone.utc))


def env_names(value) -> set[str]:
    """Every environment variable an `env:` source in a parsed dagster.yaml reads."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return {value["env"]}
        return set().union(*map(env_names, value.values()))
    if isinstance(value, list):
        return set().union(*map(env_names, value))
    return set()


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture
def dagster_env(monkeypatch, database_url) -> dict[str, str]:
    """The variables the shipped file reads, pointing at the test's database."""
    params = conninfo.conninfo_to_dict(database_url)
    values = {"DAGSTER_PG_HOST": "", "DAGSTER_PG_DB": params["dbname"], "DAGSTER_PG_USER": params["user"],
              "DAGSTER_PG_PASSWORD": params.get("password") or "", "PGHOST": params["host"]}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def instance_from(config: dict, home: Path) -> dg.DagsterInstance:
    """The shipped configuration with the default run launcher, as $DAGSTER_HOME/dagster.yaml in `home`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({**config, "run_launcher": {
        "module": "dagster", "class": "DefaultRunLauncher"}}))
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def deployed(shipped, dagster_env, tmp_path) -> Iterator[dg.DagsterInstance]:
    with instance_from(shipped, tmp_path / "dagster_home") as instance:
        yield instance


def test_the_launcher_is_docker_and_forwards_what_a_run_needs(shipped):
    launcher = shipped["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    forwarded = set(launcher["config"]["env_vars"])
    # A run container gets the daemon's instance configuration with its `env:` unresolved.
    assert env_names(shipped) == {"DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD"}
    assert env_names(shipped) <= forwarded
    assert {"REINFORCEMENT_DATABASE_URL", "REINFORCEMENT_DATA_DIR"} <= forwarded
    # No secret in the file: the password comes from the environment.
    assert shipped["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert "postgres_url" not in shipped["storage"]["postgres"]


def test_the_file_loads_unchanged_where_dagster_docker_is_installed(dagster_env, tmp_path):
    import dagster_docker  # noqa: F401  (the deploy extra, which the test extra includes)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(CONFIG, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "DockerRunLauncher" and launcher.supports_check_run_worker_health
        assert launcher.networks == ["reinforcement"]


def test_the_instance_has_the_queue_the_limits_and_monitoring(deployed):
    assert type(deployed.run_storage).__module__.startswith("dagster_postgres")
    assert type(deployed.event_log_storage).__module__.startswith("dagster_postgres")
    assert type(deployed.schedule_storage).__module__.startswith("dagster_postgres")
    assert isinstance(deployed.run_coordinator, dg.QueuedRunCoordinator)
    queue = deployed.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 4
    assert [dict(limit) for limit in queue.tag_concurrency_limits] == [{"key": "reinforcement/cycle", "limit": 1}]
    assert deployed.run_monitoring_enabled
    assert deployed.run_monitoring_max_runtime_seconds == 3600
    assert deployed.run_monitoring_max_resume_run_attempts == 0


def test_dagster_creates_its_tables_in_the_dagster_schema_only(deployed, database_url):
    with psycopg.connect(database_url) as conn:
        tables = dict(conn.execute(
            "select table_schema, array_agg(table_name::text order by table_name) from information_schema.tables"
            " where table_schema in ('public', 'dagster') group by 1").fetchall())
        owner = conn.execute("select nspowner::regrole::text from pg_namespace where nspname = 'dagster'").fetchone()
    assert {"runs", "event_logs", "instigators", "jobs", "alembic_version"} <= set(tables["dagster"])
    assert not set(tables["dagster"]) & set(tables["public"])  # nothing of Dagster's in public
    assert owner == (conninfo.conninfo_to_dict(database_url)["user"],)


def test_anon_and_authenticated_cannot_reach_dagsters_storage(shipped, dagster_env, database_url, tmp_path):
    # Supabase's default privileges grant anon and authenticated everything in public; here worse,
    # in every schema, before Dagster creates its tables: the schema still keeps them out.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter default privileges grant all on tables to anon, authenticated")
        conn.execute("alter default privileges in schema public grant all on tables to anon, authenticated")
    with instance_from(shipped, tmp_path / "dagster_home"):
        pass
    for role in ("anon", "authenticated", "service_role"):
        for table in ("runs", "event_logs", "kvs"):
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied for schema dagster"):
                with acting_as(database_url, role) as conn:
                    conn.execute(f"select count(*) from dagster.{table}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("select has_table_privilege('anon', 'dagster.runs', 'select')").fetchone()[0]
        # Re-running the migration takes back what was granted on Dagster's tables since.
        conn.cursor().execute(MIGRATION.read_bytes(), prepare=False)
        granted = conn.execute(
            "select count(*) from pg_class c, aclexplode(c.relacl) a where c.relnamespace = 'dagster'::regnamespace"
            " and a.grantee in ('anon'::regrole, 'authenticated'::regrole)").fetchone()[0]
        usage = conn.execute("select r, has_schema_privilege(r, 'dagster', 'usage') from"
                             " unnest(array['anon', 'authenticated', 'service_role']) r").fetchall()
    assert granted == 0
    assert usage == [("anon", False), ("authenticated", False), ("service_role", False)]


def test_one_cycle_runs_on_the_deployed_instance(shipped, dagster_env, deployed, store, artifacts, resources,
                                                 database_url, tmp_path):
    scenario = drift_scenario(3_000, seed=21)
    model = deploy_initial_model(store, artifacts, scenario)
    log, _ = log_traffic(model, *scenario.window, END - pd.Timedelta(days=7), END, model_version="v0", seed=21)
    store.insert_evaluations(log)

    # The code location's own job, assets and checks, with the test's store and artifacts.
    location = dg.Definitions(assets=definitions.defs.assets, asset_checks=definitions.defs.asset_checks,
                              jobs=definitions.defs.jobs, resources=resources)
    job = location.resolve_job_def("retraining_job")
    result = job.execute_in_process(
        instance=deployed, tags={"source": "manual"}, raise_on_error=False,
        run_config={"ops": {"evaluation_log": {"config": {"window_end": END.isoformat()}}}},
    )
    assert result.success
    assert store.get_run(result.run_id)["status"] == "completed"

    with psycopg.connect(database_url) as conn:
        (status,) = conn.execute("select status from dagster.runs where run_id = %s", (result.run_id,)).fetchone()
        materialized = conn.execute(
            "select count(*) from dagster.event_logs where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,)).fetchone()[0]
    assert status == "SUCCESS" and materialized == 5
    assert deployed.get_run_by_id(result.run_id).tags[CYCLE_TAG] == "retraining"  # the queue's limit applies

    # Another process loading the same file (the webserver, the daemon) sees the run and its assets.
    with instance_from(shipped, tmp_path / "another_home") as other:
        assert other.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert other.get_latest_materialization_event(dg.AssetKey("run_metrics")).run_id == result.run_id


def run_statuses(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [status for (status,) in conn.execute("select status from dagster.runs")]


def test_a_request_goes_through_the_queue_and_a_launched_run_on_the_daemon(shipped, dagster_env, store, artifacts,
                                                                            database_url, tmp_path):
    # A champion with no reference accuracy (so the decay sensor stays quiet) and a week of its
    # predictions up to now: a request's run works on the window ending when it was created.
    scenario = drift_scenario(3_000, seed=22)
    model = train_from_scratch(*scenario.train)
    register_champion(store, artifacts, model, "v0", "deployed before the test")
    now = pd.Timestamp.now(tz="UTC").floor("min")
    log, _ = log_traffic(model, *scenario.window, now - pd.Timedelta(days=7), now - pd.Timedelta(minutes=1),
                         model_version="v0", seed=22)
    store.insert_evaluations(log)
    request = store.create_request("deployment test", priority="high")

    home = tmp_path / "dagster_home"
    instance_from(shipped, home).dispose()  # the file as the test ships it; Dagster's tables created
    (home / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "reinforcement_assets.definitions", "location_name": "reinforcement_loop"}}]}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "REINFORCEMENT_", "DAGSTER_"))},
           **dagster_env, "DAGSTER_HOME": str(home), "REINFORCEMENT_DATABASE_URL": database_url,
           "REINFORCEMENT_DATA_DIR": str(tmp_path), "REQUEST_SENSOR_INTERVAL_SECONDS": "1"}
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w",
                               str(home / "workspace.yaml")], cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not {"SUCCESS", "FAILURE", "CANCELED"} & set(run_statuses(database_url)):
            assert daemon.poll() is None, "the daemon stopped"
            assert time.time() < deadline, "no finished run within 4 minutes"
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)  # the daemon, its code server and any run worker
        daemon.wait(timeout=60)

    with psycopg.connect(database_url) as conn:
        ((run_id, status),) = conn.execute("select run_id, status from dagster.runs").fetchall()
        events = dict(conn.execute("select dagster_event_type, count(*) from dagster.event_logs where run_id = %s"
                                   " group by 1", (run_id,)).fetchall())
        row = conn.execute("select status, request_id::text from model_retraining_runs where dagster_run_id = %s",
                           (run_id,)).fetchone()
    assert status == "SUCCESS" and row == ("completed", request.id)
    # Queued, then dequeued by the daemon and started in a run worker of its own.
    assert events["PIPELINE_ENQUEUED"] == 1 and events["PIPELINE_STARTING"] == 1
    assert events["ASSET_MATERIALIZATION"] == 5
