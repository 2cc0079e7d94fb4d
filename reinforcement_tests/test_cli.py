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
    monkeypatch.setattr("reinforcement_assets.settings.DATA_DIR", str(tmp_path / "data"))  # read at import
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture
def files(tmp_path) -> LocalArtifactStorage:
    """The artifact storage the CLI uses (the data folder's)."""
    return LocalArtifactStorage(base_dir=str(tmp_path / "data" / "artifacts"))


def register(store, version: str, promote: str | None = None, reference: float | None = None,
             files: LocalArtifactStorage | None = None) -> None:
    """A registry row; with `files`, its model file too (bytes standing in for a model)."""
    path, sha = f"models/{version}.joblib", "0" * 64
    if files is not None:
        sha = files.write(path, f"model {version}".encode()).sha256
    store.register_model_version(ModelVersion(version=version, artifact_path=path, sha256=sha,
                                              feature_names=("x0", "x1"), classes=("a", "b")))
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
    assert "a request needs a reason: say why the model should be retrained (--reason)" in capsys.readouterr().err
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


def test_rollback_restores_the_previous_champion_and_records_why(store, capsys, files):
    register(store, "v0", promote="initial model", reference=0.93, files=files)
    register(store, "v1", promote="challenger not worse", reference=0.95, files=files)
    register(store, "v2", files=files)  # never promoted: not a rollback target

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
    assert capsys.readouterr().err == "refused: unknown model version v9\n"  # one line, no PL/pgSQL context
    assert store.champion().version == "v0"


def test_rollback_refuses_a_missing_or_altered_file_and_a_never_promoted_version_without_force(
        store, capsys, files, tmp_path):
    for version in ("v0", "v1", "v2", "v3"):
        register(store, version, promote="was champion" if version in ("v0", "v1", "v2") else None, files=files)
    (tmp_path / "data" / "artifacts" / "models" / "v0.joblib").unlink()
    (tmp_path / "data" / "artifacts" / "models" / "v1.joblib").write_bytes(b"tampered")

    assert main(["rollback", "v0", "--reason", "x"]) == 2
    assert capsys.readouterr().err == (
        "refused: v0's file models/v0.joblib cannot be read (FileNotFoundError): it cannot be restored\n")
    assert main(["rollback", "v1", "--reason", "x", "--force"]) == 2  # --force never skips the file check
    err = capsys.readouterr().err
    assert err.startswith("refused: v1's file does not match the registry: refusing to load models/v1.joblib: "
                          "its sha256 is ") and err.count("\n") == 1
    assert main(["rollback", "v3", "--reason", "x"]) == 2
    assert capsys.readouterr().err == ("refused: v3 was never champion (a candidate the gate did not promote); "
                                       "add --force to promote it anyway\n")
    assert store.champion().version == "v2"

    assert main(["rollback", "v3", "--reason", "the gate was too strict", "--force"]) == 0
    assert "v3 is the champion (was v2) (it had never been champion: --force)" in capsys.readouterr().out
    assert store.champion().version == "v3"


def test_cancel_cancels_a_pending_request_and_refuses_what_it_cannot(store, capsys):
    pending = store.create_request("please retrain", requested_by=USER)
    assert main(["cancel", pending.id]) == 0
    assert f"cancelled request {pending.id} (normal: please retrain); it will not run" in capsys.readouterr().out
    cancelled = store.get_request(pending.id)
    assert (cancelled.status, cancelled.error_message) == ("cancelled", "cancelled by its requester")
    assert main(["cancel", pending.id]) == 0  # again: nothing changes
    capsys.readouterr()
    with dg.instance_for_test() as instance, \
            dg.build_sensor_context(instance=instance, resources={"store": store}) as context:
        assert isinstance(make_request_sensor()(context), dg.SkipReason)  # a cancelled request is never claimed

    running = store.create_request("already claimed")
    store.claim_requests(1, "test")
    unknown = str(uuid.uuid4())
    for request_id, message in [
        (running.id, f"retraining request {running.id} is processing, not pending: only a pending request can be "
                     "cancelled; hint: its run may have started; cancel that run in Dagster"),
        (unknown, f"unknown retraining request {unknown}"),
        ("42", "not a retraining request id (a UUID): '42'"),
    ]:
        assert main(["cancel", request_id]) == 1
        err = capsys.readouterr().err
        assert err.startswith("refused: ") and err.endswith(message + "\n") and err.count("\n") == 1, err
    assert store.get_request(running.id).status == "processing"


@pytest.mark.parametrize("argv, message", [
    (["status", "--limit", "-1"], "argument --limit: must be 1 or more, got -1"),
    (["status", "--limit", "0"], "argument --limit: must be 1 or more, got 0"),
    (["status", "--limit", "ten"], "argument --limit: not a whole number: 'ten'"),
    (["demo", "--rows", "-5"], "argument --rows: must be 100 or more, got -5"),
    (["demo", "--seed", "-1"], "argument --seed: must be 0 or more, got -1"),
    (["demo", "--lookback-days", "0"], "argument --lookback-days: must be in (0, 3650], got 0"),
    (["demo", "--lookback-days", "nan"], "argument --lookback-days: must be in (0, 3650], got nan"),
    (["register", "m.joblib", "--reference-accuracy", "1.5"],
     "argument --reference-accuracy: must be in [0, 1], got 1.5"),
    (["prune", "--keep", "-1"], "the number of artifacts to keep must be 0 or more, not -1"),
])
def test_every_numeric_option_is_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_status_shows_whether_each_run_promoted(store, capsys):
    for run_id, status, metrics in [("run-won", "completed", {"promoted": True}),
                                    ("run-lost", "completed", {"promoted": False}), ("run-skipped", "skipped", {})]:
        store.start_run(run_id, "manual")
        store.update_run(run_id, status=status, metrics=metrics)
    assert main(["status", "--limit", "1"]) == 0  # the newest run only
    lines = capsys.readouterr().out.splitlines()
    header = lines.index("latest runs:") + 1
    assert lines[header].split()[:4] == ["created_at", "source", "status", "promoted"]
    assert len([line for line in lines if "run-" in line]) == 1
    assert main(["status"]) == 0
    rows = {line.split()[-1]: line.split() for line in capsys.readouterr().out.splitlines() if "run-" in line}
    assert rows["run-won"][3:5] == ["completed", "yes"] and rows["run-lost"][3:5] == ["completed", "no"]
    assert rows["run-skipped"][3:5] == ["skipped", "run-skipped"]  # never reached the gate: blank


@pytest.mark.parametrize("argv", [["status"], ["request", "--reason", "piped"], ["--help"], ["cancel", "x"]])
def test_every_command_survives_a_closed_pipe(store, database_url, tmp_path, argv):
    """`reinforcement status | head`: the reader is gone before the command writes a line."""
    script = Path(sys.executable).with_name("reinforcement")
    process = subprocess.Popen([str(script), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                               env={**os.environ, "REINFORCEMENT_DATABASE_URL": database_url})
    process.stdout.close()
    err = process.stderr.read().decode()
    process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_data_dir_without_a_database_is_refused_unless_the_command_creates_one(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("REINFORCEMENT_DATABASE_URL")
    typo = tmp_path / "reinforcment"
    for argv in (["status"], ["request", "--reason", "x"], ["cancel", str(uuid.uuid4())], ["prune"],
                 ["rollback", "--reason", "x"], ["stop"]):
        assert main(["--data-dir", str(typo), *argv]) == 2
        assert capsys.readouterr().err == (
            f"refused: no database in {typo} (no pgdata/ folder): check --data-dir or REINFORCEMENT_DATA_DIR; "
            "`reinforcement demo` or `reinforcement migrate` creates one\n")
    assert not typo.exists()  # nothing was created


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
    assert err == ("error: read model_versions failed: REINFORCEMENT_DATABASE_URL is not a valid PostgreSQL URL "
                   "(more than one '@' before the host: percent-encode '@' in the user or password as %40)\n")
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", "postgresql://app:s3cretpw@db.invalid/x?connect_timeout=1")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: read model_versions failed") and "s3cret" not in err and err.count("\n") == 1


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


HOSTILE_RUN = """
import dagster as dg
from reinforcement_assets.cli import main, run_retraining, use_data_dir
print("status exit", main(["status"]))
print("demo exit", main(["demo", "--rows", "1000"]))
use_data_dir(None)
result = run_retraining({"source": "manual"})
instance = dg.DagsterInstance.get()
for entry in instance.all_logs(result.run_id):
    print("event", entry.message, entry.dagster_event.event_specific_data if entry.dagster_event else "")
print("run config", instance.get_run_by_id(result.run_id).run_config)
print("run success", result.success)
"""


HOSTILE_URLS = [
    ("postgresql://app:hunter%zz2Secret@127.0.0.1:1/db", "a '%' in the user or password"),
    ("postgresql://app:hunter 2Secret@127.0.0.1:1/db", "a space in the user or password"),
    ("postgresql://app:hunter2Secret@[::1/db", "an IPv6 host without its closing ']'"),
    ("postgresql://app:hunter@2Secret@127.0.0.1:1/db", "more than one '@' before the host"),
    ("postgresql://app:hunter/2Secret@127.0.0.1:1/db", "a port that is not a number"),
]


@pytest.mark.parametrize("url, problem", HOSTILE_URLS)
def test_a_url_libpq_would_quote_is_refused_naming_its_bad_part_not_its_value(url, problem):
    from reinforcement_assets.backends.database_url import InvalidDatabaseUrl, connection_parameters

    with pytest.raises(InvalidDatabaseUrl) as refused:
        connection_parameters(url)
    assert problem in str(refused.value) and "hunter" not in str(refused.value)
    assert "2Secret" not in str(refused.value) and refused.value.__cause__ is None


# End to end for one malformed URL and one well formed but unreachable (each ~30 s: a subprocess
# running the CLI, the demo and a Dagster run); the test above covers every malformed shape.
@pytest.mark.parametrize("url, problem", [
    HOSTILE_URLS[0],
    ("postgresql://app:hunter2Secret@127.0.0.1:1/db?connect_timeout=1", None),  # well formed, unreachable
])
def test_no_password_anywhere_whatever_the_shape_of_the_url(url, problem, tmp_path):
    """A CLI command, the demo and a real Dagster run with the URL; then every output and every file
    under DAGSTER_HOME and the data folder is searched for the password's pieces."""
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", HOSTILE_RUN], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "REINFORCEMENT_DATABASE_URL": url,
                                             "DAGSTER_HOME": str(home), "REINFORCEMENT_DATA_DIR": str(data)})
    assert "run success False" in done.stdout, done.stderr[-3000:]
    assert "status exit 1" in done.stdout and "demo exit 1" in done.stdout
    expected = (f"REINFORCEMENT_DATABASE_URL is not a valid PostgreSQL URL ({problem}" if problem
                else "Connection refused")
    assert expected in done.stderr and expected in done.stdout  # the CLI's error and the run's step failure
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    texts.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()})
    assert any(name.startswith(str(home)) for name in texts)
    leaks = {name for name, text in texts.items() if "hunter" in text or "2Secret" in text}
    assert leaks == set()
