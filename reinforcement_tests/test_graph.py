"""The whole asset graph materialised on the embedded PostgreSQL, with real models."""

import math
import os
import subprocess
from contextlib import contextmanager
from datetime import datetime, timezone

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import conninfo

from reinforcement_assets import settings
from reinforcement_assets.backends.artifacts import ArtifactIOManager
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.defs.assets import asset_checks, assets
from reinforcement_assets.defs.sensors import make_write_back_sensors
from reinforcement_assets.demo import accuracy, deploy_initial_model, drift_scenario, log_traffic
from reinforcement_assets.model import predict_with_confidence, train_from_scratch

END = pd.Timestamp(datetime(2026, 11, 20, 2, tzinfo=timezone.utc))
START = END - pd.Timedelta(days=7)


def materialize(resources, *, tags=None, instance=None, **config):
    run_config = {"evaluation_log": {"config": {"window_end": END.isoformat()}}}
    for asset, values in config.items():
        run_config.setdefault(asset, {"config": {}})["config"].update(values)
    return dg.materialize(assets + asset_checks, resources=resources, run_config=dg.RunConfig(run_config),
                          tags=tags or {"source": "auto_daily"}, raise_on_error=False, instance=instance)


DIED: list[str] = []  # the databases DiesAfterPromotion stopped


def sensor_tick(sensor, instance, store, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"store": store}) as context:
        return sensor.evaluate_tick(context)


class DiesAfterPromotion(PostgresStore):
    """The store whose database stops accepting connections (and drops those it has) right after a
    promotion has committed."""

    server_url: str

    def promote(self, *args, **kwargs):
        champion = super().promote(*args, **kwargs)
        name = conninfo.conninfo_to_dict(self.database_url)["dbname"]
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f"alter database {name} allow_connections false")
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,))
        DIED.append(name)
        return champion


def materialized(result, key):
    events = [e for e in result.get_asset_materialization_events()
              if e.materialization.asset_key.to_user_string() == key]
    return {k: v.value for k, v in events[0].materialization.metadata.items()} if events else None


def skipped_run(store, resources) -> dict:
    """A cycle's row, after checking that the cycle succeeded and was recorded `skipped`."""
    result = materialize(resources)
    assert result.success
    run = store.get_run(result.run_id)
    assert run["status"] == "skipped"
    return run


def check(result, name):
    (evaluation,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return evaluation


@pytest.fixture
def drifted(store, artifacts):
    """A champion trained before an abrupt drift, and a week of its predictions across the drift."""
    scenario = drift_scenario(6_000, seed=11)
    champion = deploy_initial_model(store, artifacts, scenario)
    log, _ = log_traffic(champion, *scenario.window, START, END, model_version="v0", seed=11)
    store.insert_evaluations(log)
    return scenario, champion


def test_a_drift_is_repaired_and_the_better_model_promoted(store, artifacts, resources, drifted):
    scenario, old = drifted
    result = materialize(resources)
    assert result.success

    window = materialized(result, "evaluation_log")
    # 2 % broken rows; those missing a feature key (a sixth) are missing values the champion takes.
    assert window["rows"] + window["rows_rejected"] == 6_000 and window["rows_rejected"] == 100
    assert materialized(result, "error_samples")["count"] >= 10
    dataset = materialized(result, "finetune_dataset")
    assert dataset["mode"] == "update"
    assert dataset["replay_rows"] == round(settings.REPLAY_RATIO * dataset["error_rows"])
    metrics = materialized(result, "run_metrics")
    assert metrics["promoted"] and metrics["challenger_accuracy"] > metrics["champion_accuracy"] + 0.05
    assert check(result, "promotion_gate").passed and check(result, "holdout_is_disjoint").passed

    run = store.get_run(result.run_id)
    assert (run["status"], run["source"], run["fine_tune_flag"]) == ("completed", "auto_daily", True)
    assert run["dataset_size"] == dataset["train_rows"]
    assert run["metrics"]["accuracy"] == pytest.approx(metrics["challenger_accuracy"])
    assert run["metrics"]["gate"]["promote"] is True
    assert run["log_url"].startswith("file://") and '"epoch": 5' in open(run["log_url"][7:]).read()

    champion = store.champion()
    assert champion.version == run["model_version"] and champion.parent_version == "v0"
    assert champion.reference_accuracy == pytest.approx(metrics["challenger_accuracy"])
    new = artifacts.read_value(champion.artifact_path, champion.sha256)
    assert accuracy(new, *scenario.after) > accuracy(old, *scenario.after) + 0.05


def test_a_worse_challenger_is_kept_out(store, artifacts, resources):
    scenario = drift_scenario(6_000, drift="none", seed=12)
    deploy_initial_model(store, artifacts, scenario)
    champion = store.champion()
    model = artifacts.read_value(champion.artifact_path, champion.sha256)
    log, _ = log_traffic(model, *scenario.window, START, END, model_version="v0", seed=12)
    store.insert_evaluations(log)

    # Errors only, a huge step: the collapse the promotion gate exists for.
    result = materialize(resources, finetune_dataset={"replay_ratio": 0.0},
                         retrained_model={"learning_rate": 1.0, "epochs": 5})
    assert result.success
    metrics = materialized(result, "run_metrics")
    assert not metrics["promoted"] and metrics["challenger_accuracy"] < metrics["champion_accuracy"]
    gate = check(result, "promotion_gate")
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert store.champion().version == champion.version
    run = store.get_run(result.run_id)
    assert run["status"] == "completed" and run["metrics"]["promoted"] is False
    # Both candidates, the collapsed update and the refit of its family, are registered, neither promoted.
    standings = {c["name"]: c for c in metrics["gate"]["candidates"]}
    assert set(standings) == {"update", "refit"} and not any(c["won"] for c in standings.values())
    assert standings["update"]["candidate"] < standings["update"]["champion"] - 0.2
    challengers = [v for v in store.model_versions() if v.version != champion.version]
    assert len(challengers) == 2 and all(v.metrics["gate"]["reason"].startswith("refused") for v in challengers)


def test_too_few_errors_skips_the_run(store, artifacts, resources):
    scenario = drift_scenario(400, drift="none", seed=13)
    deploy_initial_model(store, artifacts, scenario)
    log, _ = log_traffic(artifacts.read_value(store.champion().artifact_path, store.champion().sha256),
                         *scenario.window, START, END, model_version="v0", bad_row_share=0.0, seed=13)
    wrong = np.flatnonzero(log["predicted_label"] != log["actual_label"])
    log.loc[log.index[wrong[5:]], "predicted_label"] = log["actual_label"].iloc[wrong[5:]]
    store.insert_evaluations(log)

    result = materialize(resources)
    assert result.success
    assert materialized(result, "finetune_dataset") is None
    assert materialized(result, "retrained_model") is None and materialized(result, "run_metrics") is None
    run = store.get_run(result.run_id)
    assert run["status"] == "skipped" and run["completed_at"] is not None
    assert "fewer than the 10 needed" in run["error_message"]
    assert len(store.model_versions()) == 1


def test_an_empty_window_is_skipped_with_its_bounds_not_failed(store, resources):
    # A new install: no champion, no predictions yet. The nightly run must not paint a failure.
    result = materialize(resources)
    assert result.success
    assert materialized(result, "evaluation_log")["rows"] == 0
    assert materialized(result, "finetune_dataset") is None and materialized(result, "run_metrics") is None
    run = store.get_run(result.run_id)
    assert run["status"] == "skipped"
    assert run["error_message"] == "skipped: no evaluated predictions in [2026-11-13 02:00, 2026-11-20 02:00) UTC"
    assert store.model_versions() == []


def test_a_window_whose_rows_are_all_set_aside_says_why(store, resources):
    rows = [{"prediction_id": f"p{i}", "model_version": "v0", "features": {"x0": 1.0},
             "predicted_label": "a", "actual_label": "b", "confidence": confidence,
             "predicted_at": END - pd.Timedelta(hours=2), "evaluated_at": END - pd.Timedelta(hours=1)}
            for i, confidence in enumerate([None, None, 1.5])]
    store.insert_evaluations(pd.DataFrame(rows))
    run = skipped_run(store, resources)
    assert run["error_message"] == ("skipped: all 3 evaluated rows of the window set aside: "
                                    "confidence_missing 2, confidence_out_of_range 1")


def test_a_first_refit_on_a_window_of_one_class_is_skipped(store, resources):
    # A new install whose outcomes so far are all one label: nothing to fit a classifier on yet.
    rows = [{"prediction_id": f"p{i}", "model_version": "v0", "features": {"x0": float(i)},
             "predicted_label": "a", "actual_label": "b", "confidence": 0.9,
             "predicted_at": END - pd.Timedelta(hours=60), "evaluated_at": END - pd.Timedelta(hours=48 + i % 24)}
            for i in range(50)]
    store.insert_evaluations(pd.DataFrame(rows))
    run = skipped_run(store, resources)
    assert run["error_message"] == ("skipped: a refit needs at least two classes, and the window's training "
                                    "rows have only 'b'")
    assert store.model_versions() == []


def test_a_failure_is_recorded_and_the_champion_stays(store, artifacts, resources, drifted):
    champion = store.champion()
    # A challenger learner that does not exist: the first step refuses the run's configuration.
    result = materialize(resources, tags={"source": "manual"}, retrained_model={"learner": "no_such_learner"})
    assert not result.success
    run = store.get_run(result.run_id)
    assert run["status"] == "failed" and run["completed_at"] is not None
    assert run["error_message"].startswith("evaluation_log: ") and "no_such_learner" in run["error_message"]
    assert store.champion().version == champion.version
    assert len(store.model_versions()) == 1


@contextmanager
def read_only(folder):
    """`folder` not writable: chmod, and immutable for root (whom permissions do not stop)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_artifact_storage_that_cannot_be_written_fails_the_run_and_settles_its_request(
        store, artifacts, resources, drifted, tmp_path):
    """The failure happens while Dagster's IO manager stores evaluation_log's output, outside the asset's
    body: the run's row and its request are still settled, by the run itself, with the step and the cause."""
    champion = store.champion()
    request = store.create_request("retrain, please")
    (claimed,) = store.claim_requests(1, "test")
    with read_only(tmp_path / "artifacts" / "assets"):
        result = materialize(resources, tags={"source": "manual", "request_id": claimed.id})
    assert not result.success
    run = store.get_run(result.run_id)
    assert run["status"] == "failed" and run["completed_at"] is not None
    assert run["error_message"].startswith("evaluation_log: ArtifactStorageError: could not store its output in "
                                           f"artifact storage at assets/evaluation_log/{result.run_id}.joblib: ")
    assert "not permitted" in run["error_message"] or "Permission denied" in run["error_message"]
    settled = store.get_request(request.id)
    assert (settled.status, settled.error_message) == ("failed", run["error_message"])
    assert store.champion().version == champion.version and len(store.model_versions()) == 1


def test_a_database_that_dies_right_after_the_promotion_leaves_registry_and_run_in_agreement(
        store, artifacts, database_url, server_url, drifted):
    """The run's outcome commits with the promotion: the database going away right after it cannot leave
    a new champion whose run row says `failed` (nor one without its gate)."""
    name = conninfo.conninfo_to_dict(database_url)["dbname"]
    dying = DiesAfterPromotion(database_url=database_url, server_url=server_url)
    failed_sensor = next(s for s in make_write_back_sensors(attempts=1) if s.name == "retraining_run_failed")
    with dg.instance_for_test() as instance:
        cursor = sensor_tick(failed_sensor, instance, store).cursor
        try:
            result = materialize({"store": dying, "artifacts": artifacts,
                                  "io_manager": ArtifactIOManager(storage=artifacts)}, instance=instance)
        finally:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f"alter database {name} allow_connections true")
        assert name in DIED
        # Whatever the run managed, the run-failure sensor (the daemon's) writes back what it saw.
        tick = sensor_tick(failed_sensor, instance, store, cursor)
        assert [r.error for r in tick.dagster_run_reactions] == ([] if result.success else [None])
    champion = store.champion()
    run = store.get_run(result.run_id)
    assert champion.version != "v0" and champion.version == run["model_version"]
    assert run["status"] == "completed" and run["metrics"]["promoted"] is True
    assert run["metrics"]["gate"]["winner"] and run["metrics"]["challenger_version"] == champion.version
    assert champion.metrics["gate"]["won"] is True


@pytest.mark.parametrize("damage", ["deleted", "changed"])
def test_an_unusable_champion_file_still_lets_a_run_complete_and_promote(store, artifacts, resources, drifted,
                                                                         tmp_path, damage):
    champion = store.champion()
    path = tmp_path / "artifacts" / champion.artifact_path
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-1] + b"!")  # a corrupted (or swapped) model file

    for config in ({}, {"finetune_dataset": {"from_scratch": True}}):  # a from-scratch request too
        result = materialize(resources, tags={"source": "manual"}, **config)
        assert result.success
        window = materialized(result, "evaluation_log")
        why = window["champion_unusable"]
        assert why.startswith(f"the champion {champion.version}'s file is unusable: ")
        assert ("not found" if damage == "deleted" else "refusing to load") in why
        dataset = materialized(result, "finetune_dataset")
        assert dataset["mode"] == "refit" and why in dataset["mode_reason"]
        assert settings.LEARNER in dataset["mode_reason"]
        assert materialized(result, "retrained_model")["champion_unusable"] == why
        metrics = materialized(result, "run_metrics")
        assert metrics["baseline"] == f"{why}: compared with what was deployed"
        run = store.get_run(result.run_id)
        assert run["status"] == "completed" and run["metrics"]["champion_unusable"] == why
        if metrics["promoted"]:
            break
    assert metrics["promoted"] and config == {}  # the first run already replaced the broken champion
    assert store.champion().version == run["model_version"] != champion.version
    # The baseline was what was deployed: the logged predictions of the holdout.
    new = store.champion()
    assert artifacts.read_value(new.artifact_path, new.sha256) is not None and new.fine_tuned is False


def test_training_from_scratch_when_asked(store, artifacts, resources, drifted):
    result = materialize(resources, finetune_dataset={"from_scratch": True})
    assert result.success
    assert materialized(result, "finetune_dataset")["mode"] == "refit"
    run = store.get_run(result.run_id)
    assert run["fine_tune_flag"] is False
    version = next(v for v in store.model_versions() if v.version == run["model_version"])
    assert version.fine_tuned is False and version.parent_version is None


def test_with_no_champion_the_baseline_is_what_was_deployed(store, artifacts, resources):
    """A user's first run: their model logged predictions, the loop has no champion of its own yet."""
    scenario = drift_scenario(6_000, seed=14)
    external = deploy_initial_model(store, artifacts, scenario)
    with store.connect("test") as conn:
        conn.execute("delete from model_versions")
    log, _ = log_traffic(external, *scenario.window, START, END, model_version="external", seed=14)
    store.insert_evaluations(log)

    result = materialize(resources)
    assert result.success
    metrics = materialized(result, "run_metrics")
    holdout = log[log["evaluated_at"] >= END - pd.Timedelta(days=7 * 0.2)]
    logged = holdout.dropna(subset=["confidence"])
    assert metrics["champion_accuracy"] == pytest.approx(
        float((logged["predicted_label"] == logged["actual_label"]).mean()), abs=0.02)
    assert metrics["promoted"] and store.champion().fine_tuned is False


def test_a_run_never_replaces_a_champion_it_was_not_compared_with(store, artifacts, resources, drifted):
    with dg.instance_for_test() as instance:
        trained = dg.materialize(assets + asset_checks, selection=assets[:4], resources=resources,
                                 instance=instance, tags={"source": "manual"},
                                 run_config=dg.RunConfig({"evaluation_log": {"config": {"window_end": END.isoformat()}}}))
        assert trained.success and materialized(trained, "run_metrics") is None
        other = materialize(resources, finetune_dataset={"from_scratch": True})  # promotes its own challenger
        meanwhile = store.champion()
        assert materialized(other, "run_metrics")["promoted"] and meanwhile.version != "v0"

        # Only run_metrics, in a new run (what "re-execute from failure" does): it has its row too.
        gated = dg.materialize(assets + asset_checks, selection=[assets[4]], resources=resources,
                               instance=instance, tags={"source": "manual"})
    assert gated.success
    metrics = materialized(gated, "run_metrics")
    assert not metrics["promoted"] and "champion changed" in metrics["decision"]
    assert store.champion().version == meanwhile.version
    run = store.get_run(gated.run_id)
    assert run["status"] == "completed" and run["metrics"]["promoted"] is False


def test_labels_new_to_the_champion_switch_to_training_from_scratch(store, artifacts, resources, drifted):
    with store.connect("test") as conn:
        conn.execute("update prediction_evaluations set actual_label = 'class_new'"
                     " where id % 7 = 0 and not is_correct")
    result = materialize(resources)
    assert result.success
    dataset = materialized(result, "finetune_dataset")
    assert dataset["mode"] == "refit" and "class_new" in dataset["mode_reason"]


def test_the_update_learns_the_errors_the_champion_still_makes(store, artifacts, resources):
    """Rows an earlier version predicted count as errors only where the champion, scoring them
    itself, is confidently wrong: the mistakes it already fixed are not 'fixed' again."""
    scenario = drift_scenario(4_000, drift="none", seed=21)
    champion = deploy_initial_model(store, artifacts, scenario)
    X, y = scenario.window
    half, middle = len(y) // 2, START + pd.Timedelta(days=3)
    classes = sorted(set(y))
    shifted = np.array([classes[(classes.index(v) + 1) % len(classes)] for v in y[:half]], dtype=object)
    old = train_from_scratch(X.iloc[:half], shifted)  # an earlier version, confidently wrong on most rows
    earlier, _ = log_traffic(old, X.iloc[:half], y[:half], START, middle, model_version="v-old", seed=21,
                             prefix="old")
    recent, _ = log_traffic(champion, X.iloc[half:], y[half:], middle, END, model_version="v0", seed=22,
                            prefix="new")
    store.insert_evaluations(pd.concat([earlier, recent], ignore_index=True))

    result = materialize(resources)
    assert result.success
    meta = materialized(result, "error_samples")
    errors = artifacts.read_value(meta["path"], meta["sha256"])
    from_earlier = errors[errors["prediction_id"].str.startswith("old")]
    assert meta["rescored_rows"] > 1000 and meta["rescored_errors"] == len(from_earlier) > 0
    assert meta["logged_errors"] == len(errors) - len(from_earlier) > 0
    assert set(errors.loc[~errors.index.isin(from_earlier.index), "prediction_id"].str[:3]) == {"new"}
    # Each earlier row kept is one the champion gets wrong, with its own prediction and confidence.
    predicted, confidence = predict_with_confidence(champion, from_earlier[list(X.columns)], list(X.columns))
    assert (predicted == from_earlier["predicted_label"].to_numpy()).all()
    assert (predicted != from_earlier["actual_label"].to_numpy()).all() and (confidence > 0.7).all()
    assert np.allclose(confidence, from_earlier["confidence"])
    logged_wrong = ((earlier["predicted_label"] != earlier["actual_label"]) & (earlier["confidence"] > 0.7)).sum()
    assert len(from_earlier) < 0.2 * logged_wrong  # most of what the old version got wrong, the champion gets right


def test_outcomes_that_arrive_in_batches_still_leave_a_holdout_and_a_repair(store, artifacts, resources):
    """Outcomes land in three batches, each with one timestamp, none in the window's last two days:
    a holdout by clock would be empty and nothing could ever be promoted. By rows, the holdout is the
    newest 20 % of them, split inside the last batch on the row id."""
    scenario = drift_scenario(6_000, seed=11)
    deploy_initial_model(store, artifacts, scenario)
    champion = store.champion()
    log, _ = log_traffic(artifacts.read_value(champion.artifact_path, champion.sha256), *scenario.window,
                         START, END, model_version="v0", seed=11)
    batches = [START + pd.Timedelta(days=d) for d in (2, 4, 5)]
    arrival = np.searchsorted(np.array(batches, dtype="datetime64[ns]"),
                              pd.DatetimeIndex(log["evaluated_at"]).tz_convert(None).to_numpy("datetime64[ns]"))
    log["evaluated_at"] = [batches[i] if i < len(batches) else None for i in arrival]
    log.loc[arrival >= len(batches), "actual_label"] = None  # not known yet
    store.insert_evaluations(log)

    result = materialize(resources)
    assert result.success
    window = materialized(result, "evaluation_log")
    usable = window["rows"]
    dataset = materialized(result, "finetune_dataset")
    assert dataset["holdout_rows"] == window["holdout_rows"] == math.ceil(0.2 * usable) > 100
    assert window["holdout_start"].startswith(batches[-1].isoformat())
    assert check(result, "holdout_is_disjoint").passed
    metrics = materialized(result, "run_metrics")
    assert metrics["promoted"] and store.champion().version != "v0"
    with store.connect("test") as conn:
        last_batch = conn.execute("select count(*) from prediction_evaluations where evaluated_at = %s"
                                  " and reject_reason is null", (batches[-1],)).fetchone()[0]
    assert last_batch > dataset["holdout_rows"]  # the split fell inside one timestamp


def test_a_label_seen_only_among_replayed_rows_still_completes_the_run(store, artifacts, resources, drifted):
    """Correct rows an earlier model logged with a label the champion lacks reach the update only through
    the replay: the run completes (the update becomes a refit that learns the label) and says why."""
    with store.connect("test") as conn:
        conn.execute("update prediction_evaluations set predicted_label = 'class_new', actual_label = 'class_new',"
                     " model_version = 'v-older' where id % 5 = 0 and is_correct")
    result = materialize(resources)
    assert result.success
    run = store.get_run(result.run_id)
    assert run["status"] == "completed", run["error_message"]
    dataset = materialized(result, "finetune_dataset")
    assert dataset["mode"] == "refit" and "class_new" in dataset["mode_reason"]


def test_feature_names_of_any_length_survive_a_model_the_loop_builds_and_its_next_run(store, artifacts, resources):
    """A first run builds a model on features named past PostgreSQL's 63-byte identifier limit, with
    spaces, quotes, unicode or no text at all; the next run updates it on the same rows: none set aside."""
    scenario = drift_scenario(3_000, seed=5)
    long_names = ["x" * 70 + str(i) for i in range(6)] + ["", "with space", 'quo"te', "é" * 40]
    X, y = scenario.window
    X = X.set_axis(long_names, axis=1)
    model = train_from_scratch(scenario.train[0].set_axis(long_names, axis=1), scenario.train[1])
    log, _ = log_traffic(model, X, y, START, END, model_version="deployed", bad_row_share=0.0, seed=5)
    store.insert_evaluations(log)
    first = materialize(resources)
    assert first.success and store.get_run(first.run_id)["status"] == "completed"
    assert set(materialized(first, "evaluation_log")["feature_names"]) == set(long_names)
    assert store.champion() is not None and set(store.champion().feature_names) == set(long_names)
    second = materialize(resources)
    assert second.success and store.get_run(second.run_id)["status"] == "completed"
    assert materialized(second, "evaluation_log")["rows_rejected"] == 0


def test_a_forced_run_with_no_error_to_learn_is_skipped_with_the_reason(store, artifacts, resources):
    scenario = drift_scenario(400, drift="none", seed=13)
    deploy_initial_model(store, artifacts, scenario)
    log, _ = log_traffic(artifacts.read_value(store.champion().artifact_path, store.champion().sha256),
                         *scenario.window, START, END, model_version="v0", bad_row_share=0.0, seed=13)
    log["predicted_label"] = log["actual_label"]  # the champion is never wrong: nothing to learn
    store.insert_evaluations(log)

    result = materialize(resources, finetune_dataset={"force": True, "min_error_samples": 0})
    assert result.success
    run = store.get_run(result.run_id)
    assert run["status"] == "skipped" and "no high-confidence errors" in run["error_message"]
    assert len(store.model_versions()) == 1


@pytest.mark.parametrize("asset, setting, value, expected", [
    ("error_samples", "max_errors", -1, "at least 1"),
    ("finetune_dataset", "replay_ratio", -0.5, "at least 0"),
    ("finetune_dataset", "max_training_rows", 0, "at least 1"),
    ("finetune_dataset", "min_error_samples", -3, "at least 0"),
    ("retrained_model", "epochs", 0, "at least 1"),
    ("retrained_model", "learning_rate", 0.0, "more than 0"),
    ("run_metrics", "significance_level", 1.5, "in (0, 1)"),
    ("run_metrics", "non_inferiority_margin", -0.1, "in [0, 1)"),
])
def test_a_setting_out_of_range_fails_the_first_step_naming_it(store, resources, drifted, asset, setting, value,
                                                               expected):
    """Every asset's config is checked when the run starts: nothing is loaded, trained or registered."""
    result = materialize(resources, **{asset: {setting: value}})
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["evaluation_log"]
    message = failures[0].event_specific_data.error.to_string()
    assert f"{asset}.{setting} = {value!r}: must be {expected}" in message
    assert store.get_run(result.run_id)["status"] == "failed"
    assert f"{asset}.{setting}" in store.get_run(result.run_id)["error_message"]
    assert not result.get_asset_materialization_events() and len(store.model_versions()) == 1


@pytest.mark.parametrize("setting, value", [("holdout_share", -0.5), ("lookback_days", 0), ("holdout_share", 1.0)])
def test_the_first_steps_own_setting_out_of_range_fails_before_it_runs(store, resources, setting, value):
    result = materialize(resources, evaluation_log={setting: value})
    assert not result.success and not result.get_asset_materialization_events()
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert setting in str(failure.event_specific_data.error.to_string())


def test_a_hand_inserted_champion_fails_the_run_naming_it(store, resources, drifted):
    with store.connect("test") as conn:
        conn.execute("update model_versions set is_champion = false")
        conn.execute("insert into model_versions (version, artifact_path, sha256, is_champion)"
                     " values ('by-hand', 'models/by-hand', repeat('a', 64), true)")
    result = materialize(resources)
    assert not result.success
    run = store.get_run(result.run_id)
    assert run["status"] == "failed" and "model_versions row 'by-hand' cannot be used" in run["error_message"]
    assert "feature_names" in run["error_message"] and "classes" in run["error_message"]
