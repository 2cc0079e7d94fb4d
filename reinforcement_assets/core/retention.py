"""Which artifacts keep their files: the retention rule behind `reinforcement prune`.

Pure: it decides from registry rows and run ids. `pruning.prune_artifacts` reads them, marks the
registry and deletes the files.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath

from .records import ModelVersion

OUTPUTS_PREFIX = "assets"  # where `ArtifactIOManager` writes `<asset key>/<run id>.<parquet|joblib>`
OUTPUT_EXTENSIONS = ("parquet", "joblib")

# Why a version keeps its file, in the order the reasons are checked.
CHAMPION = "champion"
ANCESTOR = "ancestor of the champion"
FORMER_CHAMPION = "former champion"
UNFINISHED = "trained by an unfinished run"
RECENT = "recent candidate"
SHARED_FILE = "its file is a kept version's"


def check_keep_count(count: int) -> int:
    """`count` if it is a number of artifacts to keep (0 or more), else a ValueError."""
    if count < 0:
        raise ValueError(f"the number of artifacts to keep must be 0 or more, not {count}")
    return count


@dataclass(frozen=True)
class VersionRetention:
    """The registry split by what happens to each version's file."""

    kept: dict[str, str]  # version -> why its file stays
    prunable: tuple[ModelVersion, ...]  # files to delete now, newest first
    already_pruned: tuple[str, ...] = ()  # files deleted before: nothing left to do


def version_retention(versions: Sequence[ModelVersion], keep_last: int,
                      unfinished_runs: Collection[str] = ()) -> VersionRetention:
    """Which versions keep their files.

    Kept: the champion; its ancestors (following `parent_version`), the models it was built from;
    every former champion (promoted before), where `rollback` goes; versions trained by a run that
    has not finished (`unfinished_runs`: `model_retraining_runs` ids), which it is still evaluating;
    and the `keep_last` most recently created of the others, pruned or not, so the outcome depends
    only on the registry and running it again changes nothing. Every other version whose file is
    still there is prunable, unless a kept version's row names the same file.
    """
    check_keep_count(keep_last)
    kept: dict[str, str] = {}
    by_name = {v.version: v for v in versions}
    champion = next((v for v in versions if v.is_champion), None)
    if champion is not None:
        kept[champion.version] = CHAMPION
        for ancestor in ancestors(champion, by_name):
            kept.setdefault(ancestor, ANCESTOR)
    for v in versions:
        if v.promoted_at is not None:
            kept.setdefault(v.version, FORMER_CHAMPION)
        elif v.training_run_id is not None and v.training_run_id in unfinished_runs:
            kept.setdefault(v.version, UNFINISHED)
    others = sorted((v for v in versions if v.version not in kept), key=creation_order, reverse=True)
    for v in others[:keep_last]:
        kept[v.version] = RECENT

    kept_files = {by_name[name].artifact_path for name in kept}
    prunable, already_pruned = [], []
    for v in others[keep_last:]:
        if v.artifact_pruned_at is not None:
            already_pruned.append(v.version)
        elif v.artifact_path in kept_files:
            kept[v.version] = SHARED_FILE
        else:
            prunable.append(v)
    return VersionRetention(kept, tuple(prunable), tuple(already_pruned))


def ancestors(version: ModelVersion, by_name: dict[str, ModelVersion]) -> list[str]:
    """The versions `version` descends from, parent first; stops at a parent not in `by_name` (or a loop)."""
    found: list[str] = []
    parent = version.parent_version
    while parent is not None and parent in by_name and parent not in found and parent != version.version:
        found.append(parent)
        parent = by_name[parent].parent_version
    return found


def creation_order(version: ModelVersion) -> tuple[bool, datetime | int, str]:
    """Sort key: by `created_at` (unknown first), then by name, as the registry lists versions."""
    return version.created_at is not None, version.created_at or 0, version.version


def output_run_id(path: str, prefix: str = OUTPUTS_PREFIX) -> str | None:
    """The Dagster run id of an asset output `<prefix>/<asset key>/<run id>.<parquet|joblib>`; None for
    any other file (a training log, a model, a file someone else put there)."""
    parts = PurePosixPath(path).parts
    if len(parts) < 3 or parts[0] != prefix:
        return None
    stem, _, extension = parts[-1].rpartition(".")
    if extension not in OUTPUT_EXTENSIONS:
        return None
    try:
        uuid.UUID(stem)
    except ValueError:
        return None
    return stem


def prunable_outputs(paths: Iterable[str], keep_runs: Collection[str], prefix: str = OUTPUTS_PREFIX
                     ) -> dict[str, list[str]]:
    """The asset outputs under `prefix` of the runs not in `keep_runs`: run id -> its paths, in path order."""
    doomed: dict[str, list[str]] = {}
    for path in sorted(paths):
        run_id = output_run_id(path, prefix)
        if run_id is not None and run_id not in keep_runs:
            doomed.setdefault(run_id, []).append(path)
    return doomed


def pruned_message(version: str, pruned_at: datetime) -> str:
    """Why a version cannot be champion again (the same words as `promote_model_version`'s refusal)."""
    when = pruned_at.astimezone(timezone.utc) if pruned_at.tzinfo else pruned_at
    return f"model version {version}'s file was pruned on {when:%Y-%m-%d %H:%M} UTC; it cannot be restored"
