"""The retention rule: which model versions keep their files, which runs keep their asset outputs."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from reinforcement_assets.core.records import ModelVersion
from reinforcement_assets.core.retention import (
    ANCESTOR,
    CHAMPION,
    FORMER_CHAMPION,
    RECENT,
    SHARED_FILE,
    UNFINISHED,
    check_keep_count,
    output_run_id,
    prunable_outputs,
    pruned_message,
    version_retention,
)

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
SHA = "0" * 64


def version(name: str, day: int, parent: str | None = None, *, champion: bool = False, promoted: bool = False,
            pruned: bool = False, run: str | None = None, path: str | None = None) -> ModelVersion:
    created = T0 + timedelta(days=day)
    return ModelVersion(version=name, artifact_path=path or f"models/{name}.joblib", sha256=SHA, feature_names=("x",),
                        classes=("a", "b"), parent_version=parent, created_at=created, is_champion=champion,
                        promoted_at=created if champion or promoted else None, training_run_id=run,
                        artifact_pruned_at=created + timedelta(hours=1) if pruned else None)


def names(versions) -> list[str]:
    return [v.version for v in versions]


def test_the_champion_its_ancestors_former_champions_and_the_newest_candidates_keep_their_files():
    registry = [
        version("base", 0),                               # the champion's root: never promoted (registered)
        version("c1", 1, "base", promoted=True),          # a former champion
        version("x1", 2, "c1"),                           # a candidate that lost
        version("c2", 3, "c1"),                           # the champion's parent, never promoted itself
        version("x2", 4, "c1"),
        version("champ", 5, "c2", champion=True),
        version("x3", 6, "champ"),
        version("x4", 7, "champ"),
    ]
    retention = version_retention(registry, keep_last=2)
    assert retention.kept == {"champ": CHAMPION, "c2": ANCESTOR, "c1": ANCESTOR, "base": ANCESTOR,
                              "x4": RECENT, "x3": RECENT}
    assert names(retention.prunable) == ["x2", "x1"]  # newest first
    assert retention.already_pruned == ()

    everything = version_retention(registry, keep_last=20)
    assert everything.prunable == () and set(everything.kept) == set(names(registry))
    nothing_extra = version_retention(registry, keep_last=0)
    assert names(nothing_extra.prunable) == ["x4", "x3", "x2", "x1"]


def test_former_champions_stay_even_off_the_champions_line():
    registry = [version("old", 0, promoted=True), version("champ", 1, champion=True), version("x", 2, "champ")]
    retention = version_retention(registry, keep_last=0)
    assert retention.kept == {"champ": CHAMPION, "old": FORMER_CHAMPION}
    assert names(retention.prunable) == ["x"]


def test_versions_of_unfinished_runs_stay_whatever_n():
    running = str(uuid.uuid4())
    registry = [version("champ", 0, champion=True), version("mine", 2, "champ", run=running),
                version("done", 1, "champ", run=str(uuid.uuid4()))]
    retention = version_retention(registry, keep_last=0, unfinished_runs={running})
    assert retention.kept == {"champ": CHAMPION, "mine": UNFINISHED}
    assert names(retention.prunable) == ["done"]


def test_already_pruned_versions_count_among_the_newest_and_are_not_pruned_again():
    registry = [version("champ", 0, champion=True), version("x1", 1), version("x2", 2, pruned=True),
                version("x3", 3), version("x4", 4, pruned=True)]
    retention = version_retention(registry, keep_last=2)
    # The two newest candidates are x4 and x3 (x4's file is gone already); the outcome depends on the
    # registry alone, so with N unchanged a second prune finds nothing to do.
    assert retention.kept == {"champ": CHAMPION, "x4": RECENT, "x3": RECENT}
    assert names(retention.prunable) == ["x1"] and retention.already_pruned == ("x2",)
    after = [v if v.version != "x1" else version("x1", 1, pruned=True) for v in registry]
    assert version_retention(after, keep_last=2).prunable == ()


def test_a_file_a_kept_version_names_is_never_pruned():
    registry = [version("champ", 0, champion=True, path="models/shared.joblib"),
                version("twin", 1, path="models/shared.joblib"), version("x", 2)]
    retention = version_retention(registry, keep_last=0)
    assert retention.kept == {"champ": CHAMPION, "twin": SHARED_FILE} and names(retention.prunable) == ["x"]


def test_ties_on_creation_time_are_broken_by_name_and_odd_lineages_end():
    registry = [version("b", 1), version("a", 1), version("c", 1),
                version("loop", 2, "loop", champion=True),  # its own parent: the walk stops
                version("orphan", 0, "deleted-parent")]
    retention = version_retention(registry, keep_last=2)
    assert retention.kept == {"loop": CHAMPION, "c": RECENT, "b": RECENT}
    assert names(retention.prunable) == ["a", "orphan"]
    assert version_retention([], keep_last=3).prunable == ()  # a new install


def test_no_champion_keeps_only_the_newest():
    registry = [version(f"v{i}", i) for i in range(5)]
    retention = version_retention(registry, keep_last=2)
    assert retention.kept == {"v4": RECENT, "v3": RECENT} and names(retention.prunable) == ["v2", "v1", "v0"]


def test_the_keep_count_is_validated():
    assert check_keep_count(0) == 0 and check_keep_count(20) == 20
    with pytest.raises(ValueError, match="must be 0 or more, not -1"):
        check_keep_count(-1)
    with pytest.raises(ValueError, match="0 or more"):
        version_retention([], keep_last=-3)


def test_asset_outputs_are_recognised_by_their_path():
    run = str(uuid.uuid4())
    assert output_run_id(f"assets/finetune_dataset/{run}.parquet") == run
    assert output_run_id(f"assets/a/b/{run}.joblib") == run  # an asset key of several parts
    assert output_run_id(f"logs/{run}.log") is None  # training logs stay
    assert output_run_id(f"models/{run}.joblib") is None
    assert output_run_id(f"assets/x/{run}.csv") is None and output_run_id("assets/x/notes.parquet") is None
    assert output_run_id(f"assets/{run}.parquet") is None and output_run_id(f"other/x/{run}.parquet", "other") == run


def test_outputs_of_runs_not_kept_are_prunable_grouped_by_run():
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    paths = [f"assets/finetune_dataset/{old}.parquet", f"assets/error_samples/{old}.parquet",
             f"assets/finetune_dataset/{new}.parquet", "assets/finetune_dataset/README.md", f"logs/{old}.log"]
    assert prunable_outputs(paths, keep_runs={new}) == {
        old: [f"assets/error_samples/{old}.parquet", f"assets/finetune_dataset/{old}.parquet"]}
    assert prunable_outputs(paths, keep_runs={old, new}) == {}


def test_the_refusal_names_the_version_and_the_utc_time():
    when = datetime(2026, 12, 2, 3, 4, tzinfo=timezone(timedelta(hours=2)))
    assert pruned_message("v7", when) == ("model version v7's file was pruned on 2026-12-02 01:04 UTC; "
                                          "it cannot be restored")


def test_the_rule_imports_neither_dagster_nor_a_backend():
    code = ("import sys, reinforcement_assets.core.retention;"
            "print([m for m in sys.modules if m.split('.')[0] in ('dagster', 'psycopg', 'supabase', 'httpx')"
            " or m.startswith(('reinforcement_assets.backends', 'reinforcement_assets.defs'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
