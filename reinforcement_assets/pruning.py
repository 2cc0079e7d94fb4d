"""Storage stays bounded: delete the files nothing will load again; keep every registry row.

`prune_artifacts` runs at the end of each retraining run and as `reinforcement prune`. It deletes:

- **model files** of the versions `core.retention.version_retention` lets go: all but the
  champion, its ancestors, former champions (rollback targets), versions of unfinished runs and
  the `keep_last` newest other candidates. Their rows stay, with `artifact_pruned_at` set; such a
  version can never be champion again.
- **asset outputs** (`assets/<asset key>/<run id>.parquet|joblib`, what the steps of a run hand each
  other: ~12 MB a run at scale) of every run but the `keep_last` newest, the unfinished ones and
  `protect_runs`.

Training logs (`logs/<run id>.log`: small, and `model_retraining_runs.log_url` links to them) stay.

One number bounds both, on purpose: it answers "how far back can I look" once. The newest N runs
can be inspected and re-executed from any step (their inputs are still there) and the newest N
candidates can be loaded and compared. A run registers one candidate per racer (two by default), so
N candidates reach back about half as many runs as N outputs; storage stays at N runs of outputs
plus N candidates besides the champion's line.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

from .backends.artifacts import ArtifactStorage
from .backends.store import Store, StoreError
from .core.retention import OUTPUTS_PREFIX, check_keep_count, output_run_id, prunable_outputs, version_retention


@dataclass(frozen=True)
class PrunedVersion:
    """A model version whose file was (or would be) deleted."""

    version: str
    artifact_path: str
    size_bytes: int | None  # None: the file was already gone
    pruned_at: datetime | None = None  # when the registry marked it; None in a dry run


@dataclass(frozen=True)
class PrunedRun:
    """A run whose asset outputs were (or would be) deleted."""

    dagster_run_id: str
    paths: tuple[str, ...]
    size_bytes: int


@dataclass(frozen=True)
class PruneReport:
    """What `prune_artifacts` removed (or, in a dry run, would remove) and what it kept."""

    keep_last: int
    dry_run: bool = False
    versions: tuple[PrunedVersion, ...] = ()
    runs: tuple[PrunedRun, ...] = ()
    versions_kept: int = 0  # versions whose files stay
    runs_kept: int = 0  # runs whose asset outputs stay
    failures: tuple[str, ...] = ()  # files that could not be deleted, and why

    @property
    def model_bytes(self) -> int:
        return sum(v.size_bytes or 0 for v in self.versions)

    @property
    def output_files(self) -> int:
        return sum(len(r.paths) for r in self.runs)

    @property
    def output_bytes(self) -> int:
        return sum(r.size_bytes for r in self.runs)

    @property
    def bytes_removed(self) -> int:
        return self.model_bytes + self.output_bytes

    def summary(self) -> str:
        """One line of totals."""
        verb = "would prune" if self.dry_run else "pruned"
        text = (f"{verb} {len(self.versions)} model file(s) ({human_bytes(self.model_bytes)}) and "
                f"{self.output_files} asset output(s) of {len(self.runs)} run(s) ({human_bytes(self.output_bytes)}): "
                f"{human_bytes(self.bytes_removed)} in all; kept the files of {self.versions_kept} model version(s) "
                f"and the outputs of {self.runs_kept} run(s) (keep {self.keep_last})")
        if self.failures:
            text += f"; {len(self.failures)} file(s) could not be deleted"
        return text


def prune_artifacts(store: Store, artifacts: ArtifactStorage, keep_last: int, *, dry_run: bool = False,
                    protect_runs: Collection[str] = (), outputs_prefix: str = OUTPUTS_PREFIX) -> PruneReport:
    """Delete the model files and asset outputs the retention rule lets go (see the module's docstring).

    `protect_runs`: Dagster run ids whose outputs stay whatever their rows say (the calling run, whose
    checks may still read them). A pruned version is marked in the registry before its file is
    deleted, so no rollback can race the deletion; a file that cannot be deleted is reported in
    `failures`, not raised. With `dry_run` nothing is changed. Running it again deletes nothing more.
    """
    check_keep_count(keep_last)
    unfinished = store.unfinished_runs()
    retention = version_retention(store.versions_for_retention(), keep_last, {str(r["id"]) for r in unfinished})
    sizes = file_sizes(artifacts, [v.artifact_path for v in retention.prunable])

    keep_runs = {*protect_runs, *(r["dagster_run_id"] for r in [*unfinished, *store.latest_runs(keep_last)])}
    outputs = {f.path: f.size_bytes for f in artifacts.list_files(outputs_prefix)}
    doomed = prunable_outputs(outputs, keep_runs, outputs_prefix)
    runs_kept = len({output_run_id(p, outputs_prefix) for p in outputs} - {None} - set(doomed))

    if dry_run:
        return PruneReport(
            keep_last, dry_run=True, versions_kept=len(retention.kept), runs_kept=runs_kept,
            versions=tuple(PrunedVersion(v.version, v.artifact_path, sizes.get(v.artifact_path))
                           for v in retention.prunable),
            runs=tuple(PrunedRun(run_id, tuple(paths), sum(outputs[p] for p in paths))
                       for run_id, paths in doomed.items()))

    failures: list[str] = []
    marked = store.mark_artifacts_pruned([v.version for v in retention.prunable])
    versions = []
    for v in retention.prunable:
        if v.version not in marked:  # it became champion since it was read: its file stays
            continue
        if delete(artifacts, v.artifact_path, failures, f"model version {v.version} (marked pruned)"):
            versions.append(PrunedVersion(v.version, v.artifact_path, sizes.get(v.artifact_path), marked[v.version]))
    runs = []
    for run_id, paths in doomed.items():
        deleted = tuple(p for p in paths if delete(artifacts, p, failures, f"run {run_id}"))
        if deleted:
            runs.append(PrunedRun(run_id, deleted, sum(outputs[p] for p in deleted)))
    return PruneReport(keep_last, versions=tuple(versions), runs=tuple(runs),
                       versions_kept=len(retention.kept) + len(retention.prunable) - len(marked),
                       runs_kept=runs_kept, failures=tuple(failures))


def file_sizes(artifacts: ArtifactStorage, paths: Iterable[str]) -> dict[str, int]:
    """The size of each of `paths` that exists, from one listing of each folder holding them."""
    folders = {str(PurePosixPath(p).parent) for p in paths}
    return {f.path: f.size_bytes for folder in sorted(folders)
            for f in artifacts.list_files("" if folder == "." else folder)}


def delete(artifacts: ArtifactStorage, path: str, failures: list[str], owner: str) -> bool:
    """Delete `path`; a failure is added to `failures` (naming `owner`) instead of raised."""
    try:
        artifacts.delete(path)
    except (StoreError, OSError, ValueError) as exc:
        failures.append(f"{owner}: could not delete {path}: {exc}")
        return False
    return True


def human_bytes(size: int) -> str:
    """`size` as people read it: 512 bytes, 3.4 KB, 12.0 MB, 1.2 GB (powers of 1,024)."""
    units = ("bytes", "KB", "MB", "GB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} bytes" if unit == 0 else f"{value:.1f} {units[unit]}"
