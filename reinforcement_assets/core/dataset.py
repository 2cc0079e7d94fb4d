"""Building the fine-tuning set: relabelled errors, replayed correct rows, a time-ordered holdout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .features import FeatureSchema, as_model_frame, rejection_label
from .records import Window, WindowSummary, holdout_size


def skip_reason(window: Window, summary: WindowSummary, schema: FeatureSchema, n_errors: int, min_errors: int,
                force: bool, unlogged: Sequence[str] = ()) -> str | None:
    """Why a run has nothing to retrain on, or None: an empty window; a feature of the model that no
    row logs (`unlogged`); every row set aside; no usable feature; no error (even when forced); too few errors."""
    if summary.rows == 0 and not summary.rows_rejected:
        return f"skipped: no evaluated predictions in [{window.start:%Y-%m-%d %H:%M}, {window.end:%Y-%m-%d %H:%M}) UTC"
    if unlogged and schema.features:
        names = ", ".join(repr(name) for name in unlogged)
        return (f"skipped: no row of the window logs the model's feature{'s' if len(unlogged) > 1 else ''} {names} "
                f"(absent or null in all {summary.rows + summary.rows_rejected:,} evaluated rows): a run naming a "
                "learner trains a new model on the features the log has now")
    if summary.rows == 0:
        return f"skipped: all {summary.rows_rejected:,} evaluated rows of the window set aside: {rejects(summary)}"
    if not schema.features:
        return ("skipped: no row of the window has features a model can take (numbers, strings or booleans "
                "in a JSON object)")
    if n_errors == 0:  # even when forced: an update has nothing to learn from, and a refit would repair nothing
        return (f"skipped: no high-confidence errors in the window{' (force does not apply)' if force else ''}: "
                "nothing to learn")
    if n_errors < min_errors and not force:
        aside = (f"; {summary.rows_rejected:,} of {summary.rows + summary.rows_rejected:,} evaluated rows set aside: "
                 f"{rejects(summary)}" if summary.rows_rejected else "")
        return (f"skipped: {n_errors} high-confidence errors in the window, "
                f"fewer than the {min_errors} needed to retrain{aside}")
    return None


def rejects(summary: WindowSummary) -> str:
    """The rows set aside, by reason and feature, most first: `feature_not_numeric on 'country' 3,000`;
    rows set aside for text where the model takes numbers get a hint."""
    parts: list[tuple[int, str]] = []
    for reason, count in summary.rejected.items():
        on = summary.rejected_on.get(reason, {})
        parts += [(n, f"{rejection_label(reason, feature)} {n:,}") for feature, n in on.items()]
        if count > sum(on.values()):
            parts.append((count - sum(on.values()), f"{reason} {count - sum(on.values()):,}"))
    text = ", ".join(label for _, label in sorted(parts, key=lambda p: (-p[0], p[1])))
    if summary.rejected_on.get("feature_not_numeric"):
        text += " (a model that takes text there says so with `reinforcement register --categorical`)"
    return text


def replay_size(n_errors: int, replay_ratio: float, cap: int) -> int:
    """How many correctly predicted rows to replay beside `n_errors` errors."""
    return min(cap, int(round(n_errors * replay_ratio)))


def sample_fraction(wanted: int, available: int, slack: float = 1.25) -> float:
    """The share of `available` rows to pre-select so that about `wanted` survive (capped at 1)."""
    if available <= 0:
        return 1.0
    return min(1.0, wanted * slack / available)


def labelled(rows: pd.DataFrame, origin: str, split: str) -> pd.DataFrame:
    """`rows` with the training target (the true label) and where each row came from."""
    return rows.assign(label=rows["actual_label"], origin=origin, split=split)


UPDATE_ORIGINS = ("error", "replay")  # the rows an update trains on; a refit trains on the window sample


def finetune_frame(errors: pd.DataFrame, replay: pd.DataFrame, holdout: pd.DataFrame,
                   window_sample: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of a race: an update's (errors relabelled with the truth, plus replayed correct rows), the
    refits' (a uniform sample of the window, when given) and the holdout."""
    frames = [labelled(errors, "error", "train"), labelled(replay, "replay", "train")]
    if window_sample is not None:
        frames.append(labelled(window_sample, "window", "train"))
    return _concat(*frames, labelled(holdout, "holdout", "holdout"))


def from_scratch_frame(window_sample: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """The rows of a race of refits only: a uniform sample of the window, and the holdout."""
    return _concat(labelled(window_sample, "window", "train"), labelled(holdout, "holdout", "holdout"))


def is_update_set(dataset: pd.DataFrame) -> bool:
    """Whether `dataset` holds rows for an update (errors or replay), not only for refits."""
    return bool(dataset["origin"].isin(UPDATE_ORIGINS).any())


def training_set(dataset: pd.DataFrame, schema: FeatureSchema, *, update: bool) -> tuple[pd.DataFrame, Any]:
    """(X, labels) an update (errors and replay) or a refit (the window sample) trains on, features in
    the dtypes of their kinds. A set built before refits had their own rows has no window sample: a
    refit then takes every training row."""
    train = dataset[dataset["split"] == "train"]
    if update:
        train = train[train["origin"].isin(UPDATE_ORIGINS)]
    elif (train["origin"] == "window").any():
        train = train[train["origin"] == "window"]
    return as_model_frame(train, schema), train["label"].to_numpy(dtype=object)


def split_holdout(rows: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """In-memory usable rows split as the store splits a window: the newest `holdout_size` of them in
    (evaluated_at, id) order are the holdout; (rows before it, holdout), each in time order."""
    ordered = rows.sort_values(["evaluated_at", "id"], kind="stable")
    cut = len(ordered) - holdout_size(len(ordered), share)
    return ordered.iloc[:cut], ordered.iloc[cut:]


def holdout_of(dataset: pd.DataFrame) -> pd.DataFrame:
    """The holdout rows of a dataset built here."""
    return dataset[dataset["split"] == "holdout"]


def newest_first(*frames: pd.DataFrame) -> pd.DataFrame:
    """The rows of `frames` together, newest first (the order the store returns errors in)."""
    kept = [f for f in frames if not f.empty]
    if not kept:
        return frames[0]
    together = pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
    return together.sort_values(["evaluated_at", "id"], ascending=False, ignore_index=True)


def leaked_rows(dataset: pd.DataFrame) -> int:
    """Training rows that also appear in the holdout, or are not before its oldest row in
    (evaluated_at, id) order, the holdout's own order (should be 0)."""
    train = dataset[dataset["split"] == "train"]
    holdout = dataset[dataset["split"] == "holdout"]
    if holdout.empty or train.empty:
        return 0
    first = holdout.sort_values(["evaluated_at", "id"]).iloc[0]
    overlap = train["id"].isin(holdout["id"])
    too_new = (train["evaluated_at"] > first["evaluated_at"]) | (
        (train["evaluated_at"] == first["evaluated_at"]) & (train["id"] >= first["id"]))
    return int((overlap | too_new).sum())


def _concat(*frames: pd.DataFrame) -> pd.DataFrame:
    kept = [f for f in frames if not f.empty]
    if not kept:
        return frames[0].iloc[0:0]
    return pd.concat(kept, ignore_index=True)
