"""Rolling back: make an earlier model version champion again, through the registry's compare-and-swap.

One rule for every way in (the CLI's `rollback`, the Monitoring page): a version whose file is pruned,
missing or not the bytes the registry recorded is refused, and one that was never champion (a
candidate the gate did not promote) needs `force`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends.artifacts import ArtifactIntegrityError, ArtifactStorage
from .backends.store import Store
from .core.records import ModelVersion, StoreError
from .core.retention import pruned_message


class RollbackRefused(StoreError):
    """A rollback that did not happen; the message says why. `not_found`: the version is unknown or
    the champion changed meanwhile (retrying may help), rather than a version that may not return."""

    def __init__(self, message: str, *, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True)
class Rollback:
    """A rollback that happened: `version` is champion, replacing `previous` (None: there was none)."""

    version: str
    previous: str | None
    never_champion_before: bool
    reason: str


def previous_champion(versions: list[ModelVersion], champion: ModelVersion | None) -> str | None:
    """The most recently promoted version other than the champion: where a rollback goes by default."""
    earlier = [v for v in versions if v.promoted_at is not None and (champion is None or v.version != champion.version)]
    return max(earlier, key=lambda v: v.promoted_at).version if earlier else None


def rollback_problem(found: ModelVersion | None, target: str, champion: ModelVersion | None,
                     artifacts: ArtifactStorage, *, force: bool) -> str | None:
    """Why `target` may not become champion again (None if it may): unknown, already champion, never
    champion without `force`, or its file pruned, missing or not the bytes the registry recorded."""
    if found is None:
        return f"unknown model version {target}"
    if champion is not None and target == champion.version:
        return f"{target} is already the champion"
    if found.artifact_pruned_at is not None:
        return pruned_message(found.version, found.artifact_pruned_at)
    try:
        artifacts.read(found.artifact_path, found.sha256)
    except ArtifactIntegrityError as exc:
        return f"{target}'s file does not match the registry: {' '.join(str(exc).split())}"
    except OSError as exc:  # FileNotFoundError included
        return f"{target}'s file {found.artifact_path} cannot be read ({type(exc).__name__}): it cannot be restored"
    # The registry keeps promoted_at when a champion is replaced: null means never champion.
    if found.promoted_at is None and not force:
        return (f"{target} was never champion (a candidate the gate did not promote); add --force to "
                "promote it anyway")
    return None


def roll_back(store: Store, artifacts: ArtifactStorage, target: str | None, reason: str, *,
              force: bool = False) -> Rollback:
    """Make `target` (default: the previous champion) the champion, recording `reason`; raises
    `RollbackRefused` when it may not, or when the champion changed while this was checking."""
    reason = reason.strip()
    if not reason:
        raise RollbackRefused("a rollback needs a reason: say why, it is recorded as the promotion reason")
    champion = store.champion()
    target = target or previous_champion(store.model_versions(limit=1000), champion)
    if target is None:
        raise RollbackRefused("no earlier champion to roll back to; name a version")
    found = store.model_version(target)
    problem = rollback_problem(found, target, champion, artifacts, force=force)
    if problem:
        raise RollbackRefused(problem, not_found=found is None)
    was = champion.version if champion else None
    promoted = store.promote(target, f"rollback from {was or 'none'}: {reason}", expected_champion=was,
                             check_champion=True)
    if promoted is None or promoted.version != target:
        raise RollbackRefused(f"the champion changed to {promoted.version if promoted else 'none'} meanwhile; "
                              "try again", not_found=True)
    return Rollback(version=target, previous=was, never_champion_before=found.promoted_at is None, reason=reason)
