"""The request sensor and the run write-back sensors, on the embedded PostgreSQL with real Dagster runs.

Sensor ticks are evaluated with `dg.build_sensor_context` against a real `DagsterInstance`
(`dg.instance_for_test`); run status sensors are evaluated through the instance's event log
(`evaluate_tick`, as the daemon does), after real runs of the retraining job.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter

import dagster as dg
import pandas as pd
import psycopg
import pytest
from psycopg import conninfo

from reinforcement_assets.backends.store import ModelVersion, StoreError
from reinforcement_assets.defs.assets import asset_checks, assets
from reinforcement_assets.defs.automation import retraining_job
from reinforcement_assets.defs.request_queue import InvalidRequest
from reinforcement_assets.defs.sensors import make_request_sensor, make_write_back_sensors
from reinforcement_assets.demo import deploy_initial_model, drift_scenario, log_traffic

USER = "8f2c1a9e-5b7d-4c3e-9a1f-2d6b8e4c7a10"


@pytest.fixture
def request_sensor():
    return make_request_sensor(requests_per_tick=25)


def tick(sensor, instance, store, cursor=None):
    """One evaluation of `sensor`: its run requests (or skip reason) and its new cursor."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"store": store}) as context:
        return sensor.evaluate_tick(context)


def sql(database_url, query, params=()):
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def statuses(database_url) -> Counter:
    return Counter(dict(sql(database_url, "select status, count(*) from model_retraining_requests group by 1")))


def backdate_claims(database_url, minutes=20):
    sql(database_url, "update model_retraining_requests set claimed_at = claimed_at - make_interval(mins => %s)"
                      " where status = 'processing'", (minutes,))


def retraining(resources):
    return dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[retraining_job],
                          resources=resources).resolve_job_def("retraining_job")


def launch(job, instance, run_request: dg.RunRequest):
    """Execute the run a sensor asked for, with its tags and run config, as the daemon's launcher would."""
    return job.execute_in_process(instance=instance, tags=run_request.tags, run_config=run_request.run_config,
                                  raise_on_error=False)


def test_requests_run_highest_priority_first_then_oldest(store, instance, database_url):
    low = store.create_request("nightly check", priority="low")
    normal = store.create_request("customer complaint", priority="normal", options={"from_scratch": True},
                                  requested_by=USER)
    high_old = store.create_request("accuracy alert", priority="high")
    high_new = store.create_request("second alert", priority="high", options={"force": True})

    first = tick(make_request_sensor(requests_per_tick=2), instance, store)
    assert [r.run_key for r in first.run_requests] == [high_old.id, high_new.id]
    rest = tick(make_request_sensor(requests_per_tick=2), instance, store)
    assert [r.run_key for r in rest.run_requests] == [normal.id, low.id]

    by_key = {r.run_key: r for r in first.run_requests + rest.run_requests}
    assert by_key[high_old.id].tags == {"source": "manual", "request_id": high_old.id, "request_priority": "high",
                                        "dagster/priority": "10", "dagster/sensor_name": "retraining_requests"}
    assert by_key[low.id].tags["dagster/priority"] == "-10" and by_key[normal.id].tags["dagster/priority"] == "0"
    assert by_key[normal.id].tags["triggered_by"] == USER
    assert by_key[normal.id].run_config == {
        "ops": {"finetune_dataset": {"config": {"from_scratch": True, "force": False}}}}
    assert by_key[high_new.id].run_config == {
        "ops": {"finetune_dataset": {"config": {"from_scratch": False, "force": True}}}}
    assert by_key[low.id].run_config == {}

    claimed = store.get_request(low.id)
    assert claimed.status == "processing" and claimed.claim_count == 1
    assert claimed.claimed_by.startswith("retraining_requests@") and claimed.claimed_at is not None
    again = tick(make_request_sensor(), instance, store)
    assert again.run_requests == [] and again.skip_message == "no pending retraining requests"


def test_bad_requests_are_refused_or_failed_with_a_reason(store, instance, database_url, request_sensor):
    with pytest.raises(InvalidRequest, match="unknown priority 'urgent'"):
        store.create_request("x", priority="urgent")
    with pytest.raises(InvalidRequest, match="unknown option"):
        store.create_request("x", options={"turbo": True})
    with pytest.raises(psycopg.errors.CheckViolation):  # the table refuses what a web client cannot queue
        sql(database_url, "insert into model_retraining_requests (priority) values ('urgent')")
    assert statuses(database_url) == Counter()

    # What a web client may still insert: options the loop does not understand.
    rows = sql(database_url, "insert into model_retraining_requests (reason, options) values"
                             " ('a', '{\"turbo\": true}'), ('b', '{\"force\": \"yes\"}'), ('c', '[1, 2]'),"
                             " ('d', '{\"force\": true}'), ('e', '{\"learner\": \"os:system\"}'),"
                             " ('f', '{\"learner\": \"random_forest\"}') returning id, reason")
    ids = {reason: str(i) for i, reason in rows}
    result = tick(request_sensor, instance, store)
    assert sorted(r.run_key for r in result.run_requests) == sorted([ids["d"], ids["f"]])
    forest = next(r for r in result.run_requests if r.run_key == ids["f"])
    assert forest.run_config == {"ops": {"retrained_model": {"config": {"learner": "random_forest"}}}}
    assert store.get_request(ids["e"]).error_message.startswith(
        "invalid request: option 'learner': learner 'os:system' is an import path: only the environment")
    assert store.get_request(ids["a"]).error_message == (
        "invalid request: unknown option(s) 'turbo'; allowed: from_scratch, force, learner")
    assert store.get_request(ids["b"]).error_message == "invalid request: option 'force' must be true or false, got 'yes'"
    assert store.get_request(ids["c"]).error_message.startswith("invalid request: options must be a JSON object")
    failed = [store.get_request(ids[k]) for k in "abce"]
    assert {r.status for r in failed} == {"failed"} and all(r.processed_at for r in failed)


def test_cancelled_requests_never_run(store, instance, database_url, request_sensor, resources):
    keep, cancel = store.create_request("keep"), store.create_request("cancel")
    sql(database_url, "update model_retraining_requests set status = 'cancelled' where id = %s", (cancel.id,))
    result = tick(request_sensor, instance, store)
    assert [r.run_key for r in result.run_requests] == [keep.id]
    assert store.get_request(cancel.id).status == "cancelled"

    # Cancelled after the claim, before its run started: the run refuses and trains nothing.
    sql(database_url, "update model_retraining_requests set status = 'cancelled' where id = %s", (keep.id,))
    run = launch(retraining(resources), instance, result.run_requests[0])
    assert not run.success
    assert "was cancelled before its run started" in store.get_run(run.run_id)["error_message"]
    assert store.get_request(keep.id).status == "cancelled" and store.model_versions() == []


def test_a_thousand_requests_from_many_threads_each_get_exactly_one_run(store, instance, database_url):
    writers, per_writer, sensors = 4, 250, 2
    created: list[str] = []
    emitted: list[str] = []
    ticks: list[list[str]] = []
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []

    def write(seed):
        rng = random.Random(seed)
        try:
            for i in range(per_writer):
                request = store.create_request(f"writer {seed} #{i}", priority=rng.choice(["high", "normal", "low"]))
                with lock:
                    created.append(request.id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def run_sensor():
        sensor = make_request_sensor(requests_per_tick=25)
        try:
            while True:
                still_writing = writing.is_set()
                keys = [r.run_key for r in tick(sensor, instance, store).run_requests]
                with lock:
                    emitted.extend(keys)
                    ticks.append(keys)
                if not keys and not still_writing:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(writers)]
    tickers = [threading.Thread(target=run_sensor) for _ in range(sensors)]
    for t in threads + tickers:
        t.start()
    for t in threads:
        t.join()
    writing.clear()
    for t in tickers:
        t.join()

    assert errors == []
    assert len(created) == writers * per_writer == len(set(created))
    counts = Counter(emitted)
    assert set(counts) == set(created), "every request got a run request"
    assert max(counts.values()) == 1, "no request got two"
    assert statuses(database_url) == Counter({"processing": 1000})
    assert len([t for t in ticks if t]) >= 1000 // 25


def test_a_tick_that_raises_midway_loses_nothing(store, instance, database_url, request_sensor):
    first, bad, last = (store.create_request("first", priority="high"),
                        store.create_request("bad"), store.create_request("last", priority="low"))
    sql(database_url, """update model_retraining_requests set options = '{"turbo": 1}' where id = %s""", (bad.id,))
    # The database refuses to fail a request, so the tick raises after its claim committed.
    sql(database_url, "alter table model_retraining_requests add constraint refuse_failures"
                      " check (status <> 'failed') not valid")
    with pytest.raises(StoreError, match="refuse_failures"):
        tick(request_sensor, instance, store)
    assert statuses(database_url) == Counter({"pending": 3}), "the claims went straight back to the queue"

    sql(database_url, "alter table model_retraining_requests drop constraint refuse_failures")
    retried = tick(request_sensor, instance, store)
    assert [r.run_key for r in retried.run_requests] == [first.id, last.id]
    assert store.get_request(bad.id).status == "failed"
    assert store.get_request(first.id).claim_count == 2


def test_stale_claims_are_requeued_failed_or_settled(store, instance, database_url, request_sensor):
    # A tick claimed these, then its process died before Dagster saw any run request.
    crashed = [store.create_request(f"crashed {i}") for i in range(2)]
    assert len(store.claim_requests(10, "retraining_requests@dead-host:1")) == 2
    assert tick(request_sensor, instance, store).run_requests == []  # not stale yet: left alone

    backdate_claims(database_url)
    recovered = tick(request_sensor, instance, store)
    assert sorted(r.run_key for r in recovered.run_requests) == sorted(r.id for r in crashed)
    assert {store.get_request(r.id).claim_count for r in crashed} == {2}

    # Claimed too often without a run ever starting: failed, not re-queued forever.
    backdate_claims(database_url)
    sql(database_url, "update model_retraining_requests set claim_count = 3")
    assert tick(request_sensor, instance, store).run_requests == []
    gave_up = store.get_request(crashed[0].id)
    assert gave_up.status == "failed" and gave_up.error_message.startswith("claimed 3 times but no retraining run")


def test_stale_claims_are_checked_against_dagster(store, instance, database_url, request_sensor, stand_in):
    waiting, finished, vanished = (store.create_request(n) for n in ("waiting", "finished", "vanished"))
    store.claim_requests(10, "retraining_requests@host:1")

    running = instance.create_run_for_job(stand_in, tags={"request_id": waiting.id}, status=dg.DagsterRunStatus.STARTED)
    done = stand_in.execute_in_process(instance=instance, tags={"request_id": finished.id})
    store.attach_request_run(finished.id, done.run_id)
    store.attach_request_run(vanished.id, "deleted-run")
    backdate_claims(database_url)

    assert tick(request_sensor, instance, store).run_requests == []
    assert store.get_request(waiting.id).status == "processing", f"its run {running.run_id} is running"
    assert store.get_request(finished.id).status == "completed", "the missed write-back is done late"
    gone = store.get_request(vanished.id)
    assert (gone.status, gone.error_message) == ("failed", "its Dagster run deleted-run no longer exists")
    assert store.get_run("deleted-run")["status"] == "failed"


@pytest.fixture
def deployed(store, artifacts):
    """A champion and a week of its predictions (drifting) up to now."""
    scenario = drift_scenario(3_000, seed=5)
    model = deploy_initial_model(store, artifacts, scenario)
    end = pd.Timestamp.now(tz="UTC")
    log, _ = log_traffic(model, *scenario.window, end - pd.Timedelta(days=7), end, model_version="v0", seed=5)
    store.insert_evaluations(log)


def test_a_request_runs_end_to_end_and_completes(store, instance, resources, request_sensor, deployed):
    write_back = make_write_back_sensors()
    succeeded = next(s for s in write_back if s.name == "retraining_run_succeeded")
    cursor = tick(succeeded, instance, store).cursor  # starts watching from now

    request = store.create_request("model looks off", priority="high", options={"force": True}, requested_by=USER)
    (run_request,) = tick(request_sensor, instance, store).run_requests
    run = launch(retraining(resources), instance, run_request)
    assert run.success

    tick(succeeded, instance, store, cursor)
    done = store.get_request(request.id)
    row = store.get_run(run.run_id)
    assert done.status == "completed" and done.dagster_run_id == run.run_id
    assert done.retraining_run_id == str(row["id"]) and done.processed_at is not None
    assert (row["source"], str(row["triggered_by"]), str(row["request_id"])) == ("manual", USER, request.id)
    assert row["status"] == "completed" and row["model_version"]  # force: trained even below the minimum


def test_a_failed_run_writes_its_error_back(store, instance, resources, database_url, server_url):
    failed_sensor = next(s for s in make_write_back_sensors(first_delay=0.25) if s.name == "retraining_run_failed")
    cursor = tick(failed_sensor, instance, store).cursor
    request = store.create_request("retrain please", requested_by=USER)
    (run_request,) = tick(make_request_sensor(), instance, store).run_requests

    # A champion registered with a feature named like a column of the log: evaluation_log refuses it.
    stored = resources["artifacts"].write_value("models/bad", {"a": "stand-in model"})
    store.register_model_version(ModelVersion(version="bad", artifact_path=stored.path, sha256=stored.sha256,
                                              feature_names=("confidence",), classes=("a", "b")))
    store.promote("bad", "registered by hand")
    run = launch(retraining(resources), instance, run_request)
    assert not run.success

    # The database is unreachable for a moment when the sensor writes back: it retries.
    name = conninfo.conninfo_to_dict(database_url)["dbname"]
    sql(server_url, f"alter database {name} allow_connections false")
    reopen = threading.Timer(1.0, sql, (server_url, f"alter database {name} allow_connections true"))
    reopen.start()
    started = time.monotonic()
    try:
        result = tick(failed_sensor, instance, store, cursor)
    finally:
        reopen.join()
    assert time.monotonic() - started >= 1.0
    assert [r.error for r in result.dagster_run_reactions] == [None]

    failed = store.get_request(request.id)
    row = store.get_run(run.run_id)
    assert failed.status == "failed" and row["status"] == "failed"
    assert "clash with reserved columns" in failed.error_message
    assert failed.error_message == row["error_message"] and failed.retraining_run_id == str(row["id"])


def test_a_run_that_died_before_writing_gets_a_row(store, instance, resources):
    failed_sensor = next(s for s in make_write_back_sensors() if s.name == "retraining_run_failed")
    cursor = tick(failed_sensor, instance, store).cursor
    run = retraining(resources).execute_in_process(instance=instance, tags={"source": "nightly"},
                                                   raise_on_error=False)
    assert not run.success
    # Its failing step wrote the row itself (its failure hook); as if it had died before it could:
    sql(store.database_url, "delete from model_retraining_runs where dagster_run_id = %s", (run.run_id,))

    tick(failed_sensor, instance, store, cursor)
    row = store.get_run(run.run_id)
    assert (row["status"], row["source"]) == ("failed", "manual")
    assert row["error_message"].startswith("evaluation_log: ValueError: run tag source='nightly' is not one of")


def test_a_cancelled_run_cancels_its_request(store, instance, resources, request_sensor):
    cancelled_sensor = next(s for s in make_write_back_sensors() if s.name == "retraining_run_cancelled")
    cursor = tick(cancelled_sensor, instance, store).cursor
    request = store.create_request("retrain", requested_by=USER)
    (run_request,) = tick(request_sensor, instance, store).run_requests
    run = instance.create_run_for_job(retraining(resources), tags=run_request.tags,
                                      status=dg.DagsterRunStatus.NOT_STARTED)
    instance.report_run_canceled(run)

    tick(cancelled_sensor, instance, store, cursor)
    ended = store.get_request(request.id)
    row = store.get_run(run.run_id)
    assert (ended.status, ended.error_message) == ("cancelled", "cancelled in Dagster")
    assert (row["status"], row["error_message"], str(row["triggered_by"])) == ("failed", "cancelled in Dagster", USER)



def test_the_daemon_queues_one_run_per_request_and_never_a_second(store, database_url, tmp_path):
    """Through the sensor daemon's own tick (`execute_sensor_iteration`, internal API also used by
    Dagster's tests) with a queued run coordinator: runs are created, deduplicated by run key."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    location = tmp_path / "location.py"
    location.write_text(
        "import dagster as dg\n"
        "from reinforcement_assets.defs.assets import asset_checks, assets\n"
        "from reinforcement_assets.defs.automation import retraining_job\n"
        "from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage\n"
        "from reinforcement_assets.backends.postgres_store import PostgresStore\n"
        "from reinforcement_assets.defs.sensors import make_request_sensor\n"
        f"artifacts = LocalArtifactStorage(base_dir={str(tmp_path / 'artifacts')!r})\n"
        "defs = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[retraining_job],\n"
        "    sensors=[make_request_sensor(minimum_interval_seconds=1)],\n"
        f"    resources={{'store': PostgresStore(database_url={database_url!r}), 'artifacts': artifacts,\n"
        "               'io_manager': ArtifactIOManager(storage=artifacts)})\n"
    )
    requests = [store.create_request(f"r{i}", priority=p) for i, p in enumerate(["low", "high", "normal"])]
    queued = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(location), attribute="defs"),
                                         location_name="loop")
    with dg.instance_for_test(overrides=queued) as instance, \
            WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as workspace:
        list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))
        runs = {r.tags["dagster/run_key"]: r for r in instance.get_runs()}
        assert set(runs) == {r.id for r in requests}
        assert {r.status for r in runs.values()} == {dg.DagsterRunStatus.QUEUED}
        assert [runs[r.id].tags["dagster/priority"] for r in requests] == ["-10", "10", "0"]

        # The request shows up again (as after a lost claim): the sensor re-emits it, Dagster refuses a second run.
        sql(database_url, "update model_retraining_requests set status = 'pending' where id = %s", (requests[0].id,))
        time.sleep(1.1)  # the sensor's minimum interval
        list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))
        assert len(instance.get_runs()) == 3
        assert store.get_request(requests[0].id).claim_count == 2
