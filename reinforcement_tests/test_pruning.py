"""Storage stays bounded: `prune_artifacts` on real files and a real registry, on both backends.

Each test builds a history through the backend under test — model files written and registered,
promotions, run rows and the asset outputs and training logs runs leave — prunes it, and checks
what is left: files on disk (or in the emulated bucket), rows read back with psycopg.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import httpx
import pandas as pd
import pytest

from reinforcement_assets.backends.artifacts import LocalArtifactStorage
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.backends.store import ModelVersion, StoreError
from reinforcement_assets.pruning import PruneReport, human_bytes, prune_artifacts
from reinforcement_tests.supabase_transport import emulated_resources

BUCKET = "reinforcement-artifacts"
OUTPUT_ASSETS = ("evaluation_log", "error_samples", "finetune_dataset")


@dataclass
class Backend:
    """The store and artifact storage under test, and a way to see the stored files without them."""

    store: object
    artifacts: object
    stored: object  # () -> {path: size in bytes}, read without the artifact storage under test

    def files(self) -> set[str]:
        return set(self.stored())

    def sizes(self, paths) -> int:
        stored = self.stored()
        return sum(stored[p] for p in paths)


@pytest.fixture(params=["postgres", "supabase"])
def backend(request, store, artifacts, tmp_path) -> Backend:
    if request.param == "postgres":
        root = tmp_path / "artifacts"
        return Backend(store, artifacts, lambda: {p.relative_to(root).as_posix(): p.stat().st_size
                                                  for p in root.rglob("*") if p.is_file()})
    project = request.getfixturevalue("project")
    resources = emulated_resources(project)
    objects = project.buckets[BUCKET].objects
    return Backend(resources["store"], resources["artifacts"], lambda: {k: len(o.data) for k, o in objects.items()})


def register(backend: Backend, name: str, parent: str | None = None, *, promote: bool = False,
             run_row: str | None = None) -> ModelVersion:
    """A model file of its own size written and registered, as `retrained_model` does."""
    stored = backend.artifacts.write_value(f"models/{name}", {"weights": [len(name)] * (100 * len(name))})
    version = ModelVersion(version=name, artifact_path=stored.path, sha256=stored.sha256, feature_names=("x0",),
                           classes=("a", "b"), parent_version=parent, training_run_id=run_row)
    backend.store.register_model_version(version)
    if promote:
        backend.store.promote(name, "better")
    return version


def run(backend: Backend, *, finished: bool = True) -> tuple[str, str]:
    """A run's row and what it leaves in storage: asset outputs and a training log. (Dagster run id, row id.)"""
    run_id = str(uuid.uuid4())
    row_id = backend.store.start_run(run_id, "auto_daily")
    for asset in OUTPUT_ASSETS:
        backend.artifacts.write_value(f"assets/{asset}/{run_id}", pd.DataFrame({"x": range(50)}))
    backend.artifacts.write(f"logs/{run_id}.log", b"epoch 1\n", "text/plain")
    if finished:
        backend.store.update_run(run_id, status="completed")
    return run_id, row_id


def outputs(run_id: str) -> set[str]:
    return {f"assets/{asset}/{run_id}.parquet" for asset in OUTPUT_ASSETS}


@pytest.fixture
def history(backend):
    """Champion v1 (from v0, a former champion); candidates v2..v5 lost; v6 is being evaluated by a run
    that is still running, the oldest run; four finished runs after it."""
    live, live_row = run(backend, finished=False)
    done = [run(backend)[0] for _ in range(4)]
    register(backend, "v0", promote=True)
    register(backend, "v1", "v0", promote=True)
    for name in ("v2", "v3", "v4", "v5"):
        register(backend, name, "v1")
    register(backend, "v6", "v1", run_row=live_row)
    return {"live": live, "done": done}


def test_the_champions_line_and_the_newest_stay_the_rest_is_deleted_and_rows_are_kept(backend, history, store):
    before = backend.files()
    doomed_models = {"models/v2.joblib", "models/v3.joblib"}
    doomed_outputs = outputs(history["done"][0]) | outputs(history["done"][1])
    expected_bytes = backend.sizes(doomed_models), backend.sizes(doomed_outputs)

    report = prune_artifacts(backend.store, backend.artifacts, keep_last=2)

    assert [v.version for v in report.versions] == ["v3", "v2"]
    assert {r.dagster_run_id for r in report.runs} == set(history["done"][:2])
    assert (report.model_bytes, report.output_bytes) == expected_bytes and report.failures == ()
    assert report.output_files == 6 and report.versions_kept == 5 and report.runs_kept == 3
    assert report.bytes_removed == sum(expected_bytes) > 0
    # Kept: champion v1, its parent v0, v6 (its run is unfinished) and the two newest others, v5 and v4;
    # the outputs of the two newest runs and of the unfinished one; every training log.
    assert backend.files() == before - doomed_models - doomed_outputs
    assert all(f"logs/{r}.log" in backend.files() for r in [history["live"], *history["done"]])

    rows = {v.version: v for v in store.versions_for_retention()}  # read back with psycopg
    assert sorted(rows) == ["v0", "v1", "v2", "v3", "v4", "v5", "v6"]
    assert {name for name, v in rows.items() if v.artifact_pruned_at is not None} == {"v2", "v3"}
    assert rows["v2"].artifact_pruned_at == report.versions[1].pruned_at
    assert store.champion().version == "v1"

    # Running it again is a no-op: nothing more to delete, nothing re-marked.
    again = prune_artifacts(backend.store, backend.artifacts, keep_last=2)
    assert (again.versions, again.runs, again.failures) == ((), (), ())
    assert backend.files() == before - doomed_models - doomed_outputs
    assert {v.version: v.artifact_pruned_at for v in store.versions_for_retention()} == {
        name: v.artifact_pruned_at for name, v in rows.items()}


def test_a_dry_run_says_what_would_go_and_changes_nothing(backend, history, store):
    before = backend.files()
    report = prune_artifacts(backend.store, backend.artifacts, keep_last=2, dry_run=True)
    assert report.dry_run and [v.version for v in report.versions] == ["v3", "v2"]
    assert all(v.pruned_at is None and v.size_bytes > 0 for v in report.versions)
    assert report.output_files == 6 and report.summary().startswith("would prune 2 model file(s)")
    assert backend.files() == before
    assert all(v.artifact_pruned_at is None for v in store.versions_for_retention())
    real = prune_artifacts(backend.store, backend.artifacts, keep_last=2)
    assert [v.version for v in real.versions] == [v.version for v in report.versions]
    assert (real.model_bytes, real.output_bytes) == (report.model_bytes, report.output_bytes)


def test_keep_zero_keeps_only_the_champions_line_the_unfinished_and_the_protected(backend, history, store):
    protected = history["done"][-1]
    report = prune_artifacts(backend.store, backend.artifacts, keep_last=0, protect_runs=[protected])
    assert [v.version for v in report.versions] == ["v5", "v4", "v3", "v2"]
    left = {p for p in backend.files() if p.startswith(("models/", "assets/"))}
    assert left == {"models/v0.joblib", "models/v1.joblib", "models/v6.joblib",
                    *outputs(history["live"]), *outputs(protected)}


def test_a_pruned_version_cannot_be_promoted_and_the_champion_is_never_marked(backend, history, store):
    prune_artifacts(backend.store, backend.artifacts, keep_last=2)
    with pytest.raises(StoreError, match=r"model version v2's file was pruned on \d{4}-\d\d-\d\d \d\d:\d\d UTC; "
                                         r"it cannot be restored"):
        backend.store.promote("v2", "rollback")
    assert store.champion().version == "v1"
    # The registry refuses to mark the champion; marking again answers the same (a lost answer may be re-asked).
    first = backend.store.mark_artifacts_pruned(["v1", "v2"])
    assert list(first) == ["v2"] and store.model_version("v1").artifact_pruned_at is None
    assert backend.store.mark_artifacts_pruned(["v2"]) == first
    assert backend.store.mark_artifacts_pruned([]) == {}


def test_a_version_promoted_after_the_registry_was_read_keeps_its_file(store, artifacts, tmp_path, monkeypatch):
    backend = Backend(store, artifacts, dict)
    register(backend, "v0", promote=True)
    register(backend, "v1", "v0")
    register(backend, "v2", "v0")
    stale = store.versions_for_retention()  # v1 and v2 prunable with keep 0 ...
    store.promote("v1", "rolled forward by hand")  # ... but v1 is champion by the time they are marked
    monkeypatch.setattr(PostgresStore, "versions_for_retention", lambda self: stale)
    report = prune_artifacts(store, artifacts, keep_last=0)
    assert [v.version for v in report.versions] == ["v2"] and report.versions_kept == 2
    assert (tmp_path / "artifacts" / "models" / "v1.joblib").exists()
    assert store.model_version("v1").artifact_pruned_at is None and store.champion().version == "v1"


class FailingDeletes(LocalArtifactStorage):
    """Local storage whose deletes of one path fail, as a read-only volume would."""

    refuse: str

    def _delete(self, path: str) -> None:
        if path == self.refuse:
            raise PermissionError(f"[Errno 13] Permission denied: '{path}'")
        super()._delete(path)


def test_a_file_that_cannot_be_deleted_is_reported_and_the_rest_still_goes(store, tmp_path):
    storage = FailingDeletes(base_dir=str(tmp_path / "artifacts"), refuse="models/v2.joblib")
    backend = Backend(store, storage, dict)
    register(backend, "v0", promote=True)
    register(backend, "v2", "v0")
    register(backend, "v3", "v0")
    report = prune_artifacts(store, storage, keep_last=0)
    assert [v.version for v in report.versions] == ["v3"]
    (failure,) = report.failures
    assert failure.startswith("model version v2 (marked pruned): could not delete models/v2.joblib: ")
    assert "Permission denied" in failure and "1 file(s) could not be deleted" in report.summary()
    assert not (tmp_path / "artifacts" / "models/v3.joblib").exists()
    # The row says pruned (no rollback may pick a file being deleted); the file is left for a person to remove.
    assert store.model_version("v2").artifact_pruned_at is not None
    assert (tmp_path / "artifacts" / "models/v2.joblib").exists()


def test_an_empty_install_has_nothing_to_prune(store, artifacts):
    report = prune_artifacts(store, artifacts, keep_last=20)
    assert report == PruneReport(keep_last=20)
    assert report.summary() == ("pruned 0 model file(s) (0 bytes) and 0 asset output(s) of 0 run(s) (0 bytes): "
                                "0 bytes in all; kept the files of 0 model version(s) and the outputs of 0 run(s) "
                                "(keep 20)")
    with pytest.raises(ValueError, match="0 or more"):
        prune_artifacts(store, artifacts, keep_last=-1)


def test_sizes_read_as_people_read_them():
    assert [human_bytes(n) for n in (0, 1023, 1024, 12 * 2**20 + 2**19, 3 * 2**40)] == [
        "0 bytes", "1023 bytes", "1.0 KB", "12.5 MB", "3072.0 GB"]


def test_on_supabase_the_registry_is_marked_by_rpc_before_storage_removes_the_objects(project, store):
    resources = emulated_resources(project, store={"page_size": 2}, artifacts={"prefix": "tenant-a"})
    objects = project.buckets[BUCKET].objects
    backend = Backend(resources["store"], resources["artifacts"], lambda: {k: len(o.data) for k, o in objects.items()})
    register(backend, "v0", promote=True)
    for name in ("v1", "v2", "v3", "v4", "v5"):
        register(backend, name, "v0")
    old, new = run(backend)[0], run(backend)[0]
    project.requests.clear()
    # The first answer of the marking is lost after it ran: it is asked again and answers the same.
    project.fail(method="POST", path="/rest/v1/rpc/mark_model_artifacts_pruned", exception=httpx.ReadTimeout,
                 after_executing=True)

    report = prune_artifacts(backend.store, backend.artifacts, keep_last=1)

    assert [v.version for v in report.versions] == ["v4", "v3", "v2", "v1"]
    assert {r.dagster_run_id for r in report.runs} == {old}
    assert {k for k in objects if k.startswith("tenant-a/models/")} == {"tenant-a/models/v0.joblib",
                                                                       "tenant-a/models/v5.joblib"}
    assert {k for k in objects if k.startswith("tenant-a/assets/")} == {f"tenant-a/{p}" for p in outputs(new)}
    assert f"tenant-a/logs/{old}.log" in objects
    assert {v.version for v in store.versions_for_retention() if v.artifact_pruned_at} == {"v1", "v2", "v3", "v4"}

    marks = project.sent("POST", "/rest/v1/rpc/mark_model_artifacts_pruned")
    assert [json.loads(m.content)["p_versions"] for m in marks] == [["v4", "v3"], ["v4", "v3"], ["v2", "v1"]]
    removals = project.sent("DELETE", f"/storage/v1/object/{BUCKET}")
    assert [json.loads(r.content)["prefixes"] for r in removals][:4] == [
        [f"tenant-a/models/{v}.joblib"] for v in ("v4", "v3", "v2", "v1")]
    assert project.requests.index(marks[-1]) < project.requests.index(removals[0])
    # The bucket was listed one folder level and one page at a time, under the storage's prefix.
    listed = [json.loads(r.content)["prefix"] for r in project.sent("POST", "/storage/v1/object/list/")]
    assert {"tenant-a/models", "tenant-a/assets", "tenant-a/assets/finetune_dataset"} <= set(listed)
    # The registry was read a page at a time (page_size 2): every row, under the cap.
    reads = project.sent("GET", "/rest/v1/model_versions")
    assert len(reads) == 4 and all(r.url.params["limit"] == "2" for r in reads)
