"""`reinforcement request | status | rollback | prune` end to end on the embedded PostgreSQL.

`main([...])` runs in this process with `REINFORCEMENT_DATABASE_URL` pointing at the test
database; one test runs the installed `reinforcement` script in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest

from reinforcement_assets.backends.artifacts import LocalArtifactStorage
from reinforcement_assets.backends.store import ModelVersion
from reinforcement_assets.cli import main
from reinforcement_assets.defs.sensors import make_request_sensor

USER = "3b9d6c1e-0f4a-4e8b-b2d7-5a1c9e8f6d20"


@pytest.fixture(autouse=True)
def environment(monkeypatch, database_url, tmp_path):
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", database_url)
    monkeypatch.setenv("REINFORCEMENT_DATA_DIR", str(tmp_path / "data"))  # main() sets DAGSTER_HOME from it
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def register(store, version: str, promote: str | None = None, reference: float | None = None) -> None:
    store.register_model_version(ModelVersion(version=version, artifact_path=f"models/{version}.joblib",
                                              sha256="0" * 64, feature_names=("x0", "x1"), classes=("a", "b")))
    if promote:
        store.promote(version, promote, reference_accuracy=reference)


def test_request_queues_what_the_sensor_then_runs(store, capsys):
    code = main(["request", "--reason", "accuracy looks off since Monday", "--priority", "high", "--from-scratch",
                 "--force", "--requested-by", USER])
    out = capsys.readouterr().out
    assert code == 0 and "priority high, options from_scratch, force" in out
    (request,) = store.latest_requests()
    assert request.id in out
    assert (request.status, request.priority, request.reason, request.requested_by) == (
        "pending", "high", "accuracy looks off since Monday", USER)
    assert request.options == {"from_scratch": True, "force": True}

    with dg.instance_for_test() as instance, \
            dg.build_sensor_context(instance=instance, resources={"store": store}) as context:
        (run_request,) = make_request_sensor()(context).run_requests
    assert run_request.run_key == request.id and run_request.tags["triggered_by"] == USER
    assert run_request.run_config["ops"]["finetune_dataset"]["config"] == {"from_scratch": True, "force": True}


def test_bad_requests_are_refused_and_nothing_is_queued(store, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["request", "--reason", "x", "--priority", "urgent"])
    assert exit_info.value.code == 2 and "invalid choice: 'urgent'" in capsys.readouterr().err
    assert main(["request", "--reason", "x", "--requested-by", "alice"]) == 2
    assert "requested_by must be a user id (UUID), got 'alice'" in capsys.readouterr().err
    assert main(["request", "--reason", "  "]) == 2
    assert "--reason must say why" in capsys.readouterr().err
    assert store.latest_requests() == []


def test_status_shows_champion_runs_and_requests(store, capsys):
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "champion: none yet" in out and "latest runs: none" in out and "latest requests: none" in out

    register(store, "v0", promote="initial model", reference=0.9312)
    store.start_run("dagster-run-1", "manual")
    store.update_run("dagster-run-1", status="failed", error_message="evaluation_log: boom")
    store.create_request("please retrain", priority="low")
    assert main(["status", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "champion: v0 since" in out and "reference accuracy 0.931: initial model" in out
    assert "dagster-run-1" in out and "evaluation_log: boom" in out
    assert "please retrain" in out and "pending" in out and "low" in out


def test_rollback_restores_the_previous_champion_and_records_why(store, capsys):
    register(store, "v0", promote="initial model", reference=0.93)
    register(store, "v1", promote="challenger not worse", reference=0.95)
    register(store, "v2")  # never promoted: not a rollback target

    assert main(["rollback", "--reason", "v1 misclassifies the new product line"]) == 0
    assert "v0 is the champion again (was v1)" in capsys.readouterr().out
    champion = store.champion()
    assert champion.version == "v0" and champion.reference_accuracy == 0.93
    assert champion.promotion_reason == "rollback from v1: v1 misclassifies the new product line"

    assert main(["rollback", "v1", "--reason", "false alarm"]) == 0
    assert store.champion().version == "v1"
    capsys.readouterr()


def test_rollback_refuses_what_it_cannot_do(store, capsys):
    assert main(["rollback", "--reason", "x"]) == 2
    assert "no earlier champion" in capsys.readouterr().err
    register(store, "v0", promote="initial model")
    assert main(["rollback", "v0", "--reason", "x"]) == 2
    assert "v0 is already the champion" in capsys.readouterr().err
    assert main(["rollback", "v9", "--reason", "x"]) == 1
    assert "unknown model version v9" in capsys.readouterr().err
    assert store.champion().version == "v0"


def test_the_installed_command_runs_in_a_subprocess(store, database_url, tmp_path):
    store.create_request("from the web UI", priority="high")
    script = Path(sys.executable).with_name("reinforcement")
    done = subprocess.run([str(script), "status"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "REINFORCEMENT_DATABASE_URL": database_url})
    assert done.returncode == 0, done.stderr
    assert "from the web UI" in done.stdout and "champion: none yet" in done.stdout


def test_store_errors_are_one_line_without_the_password(monkeypatch, capsys):
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", "postgresql://app:Pw@s3cretpw@db.invalid/x?connect_timeout=1")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: read model_versions failed") and "s3cret" not in err
    assert "Traceback" not in err


def test_prune_says_what_it_would_delete_then_deletes_it_and_rollback_refuses_a_pruned_version(
        store, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("reinforcement_assets.settings.DATA_DIR", str(tmp_path / "data"))  # read at import
    artifacts = LocalArtifactStorage(base_dir=str(tmp_path / "data" / "artifacts"))
    for i, version in enumerate(("v0", "v1", "v2", "v3")):
        artifacts.write(f"models/{version}.joblib", b"m" * (1000 + i))
        register(store, version, promote="initial model" if version == "v0" else None)
    runs = [str(uuid.uuid4()) for _ in range(2)]
    for run_id in runs:
        store.start_run(run_id, "auto_daily")
        store.update_run(run_id, status="completed")
        artifacts.write(f"assets/finetune_dataset/{run_id}.parquet", b"p" * 2048)
    files = tmp_path / "data" / "artifacts"

    assert main(["prune", "--keep", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "would prune model version v2: models/v2.joblib (1002 bytes)",
        "would prune model version v1: models/v1.joblib (1001 bytes)",
        f"would prune asset outputs of run {runs[0]}: 1 file(s) (2.0 KB)",
        "would prune 2 model file(s) (2.0 KB) and 1 asset output(s) of 1 run(s) (2.0 KB): 4.0 KB in all; kept "
        "the files of 2 model version(s) and the outputs of 1 run(s) (keep 1) (dry run: nothing was deleted)"]
    assert (files / "models/v1.joblib").exists() and store.model_version("v1").artifact_pruned_at is None

    assert main(["prune", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "pruned model version v2: models/v2.joblib (1002 bytes)\npruned model version v1:" in out
    assert out.splitlines()[-1].startswith("pruned 2 model file(s) (2.0 KB) and 1 asset output(s) of 1 run(s)")
    assert sorted(p.name for p in (files / "models").iterdir()) == ["v0.joblib", "v3.joblib"]
    assert not (files / f"assets/finetune_dataset/{runs[0]}.parquet").exists()
    assert (files / f"assets/finetune_dataset/{runs[1]}.parquet").exists()
    assert len(store.model_versions()) == 4  # every row stays

    pruned_at = store.model_version("v1").artifact_pruned_at
    assert main(["rollback", "v1", "--reason", "v0 regressed"]) == 2
    assert capsys.readouterr().err == (f"refused: model version v1's file was pruned on {pruned_at:%Y-%m-%d %H:%M} UTC;"
                                       " it cannot be restored\n")
    assert store.champion().version == "v0"

    assert main(["prune"]) == 0  # the default keeps 20: nothing more to do
    assert capsys.readouterr().out.startswith("pruned 0 model file(s)")


def test_prune_refuses_a_negative_count_and_the_setting_is_checked_when_read(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "--keep", "-1"])
    assert exit_info.value.code == 2
    assert "the number of artifacts to keep must be 0 or more, not -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prune", "--keep", "many"])
    assert "not a whole number: 'many'" in capsys.readouterr().err

    done = subprocess.run([sys.executable, "-m", "reinforcement_assets.cli", "prune", "--dry-run"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "KEEP_CANDIDATE_ARTIFACTS": "-5"})
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "error: environment variable KEEP_CANDIDATE_ARTIFACTS='-5' is not a valid int: "
        "the number of artifacts to keep must be 0 or more, not -5")
