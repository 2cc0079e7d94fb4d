"""The evidence for the default strategy's settings: the drift benchmark over a grid of settings.

    python -m benchmarks.drift_sweep --seeds 0 1 2

Same streams, seeds and pure-function cycle as `benchmarks.drift`; the ceiling (retrain from
scratch daily) is computed once per stream and seed. Results: `benchmarks/results/drift_sweep.json`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from .drift import STREAMS, Params, make_streams, simulate_batch, summarise
from .machine import begin_benchmark, save

GRID = {  # every value explicit, so the rows do not change meaning when the defaults do
    "replay 4, lr 0.001 (previous defaults)": {"replay_ratio": 4.0, "learning_rate": 0.001},
    "replay 4, lr 0.01": {"replay_ratio": 4.0, "learning_rate": 0.01},
    "replay 1, lr 0.001": {"replay_ratio": 1.0, "learning_rate": 0.001},
    "replay 2, lr 0.01": {"replay_ratio": 2.0, "learning_rate": 0.01},
    "replay 1, lr 0.01 (new defaults)": {"replay_ratio": 1.0, "learning_rate": 0.01},
    "replay 4, lr 0.001, gate +0.5 point": {"replay_ratio": 4.0, "learning_rate": 0.001,
                                            "non_inferiority_margin": -0.005},
    "replay 1, lr 0.01, gate +0.5 point": {"replay_ratio": 1.0, "learning_rate": 0.01,
                                           "non_inferiority_margin": -0.005},
    "replay 1, lr 0.01, holdout share 0.1": {"replay_ratio": 1.0, "learning_rate": 0.01, "holdout_share": 0.1},
}


def _one_stream(task: tuple[str, int, int, int, int, int, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every setting of `grid` on one stream and seed: setting -> the default strategy's summary."""
    name, seed, days, rows_per_day, pretrain_rows, drift_day, grid = task
    warnings.filterwarnings("ignore")
    (stream,) = make_streams([name], days, rows_per_day, pretrain_rows, drift_day, seed)
    scratch = simulate_batch(stream, "scratch", Params(), seed)
    figures = {}
    for setting, changes in grid.items():
        trace = simulate_batch(stream, "default", replace(Params(), **changes), seed)
        figures[setting] = summarise({"default": trace, "scratch": scratch}, stream)["default"]
    print(f"seed {seed} {name} done", flush=True)
    return figures


def sweep(streams: Sequence[str], seeds: Sequence[int], days: int, rows_per_day: int, pretrain_rows: int,
          drift_day: int, grid: dict[str, dict[str, Any]], jobs: int = 1) -> dict[str, Any]:
    """Per setting and stream: the default strategy's figures, medians (bad promotions: sums) over seeds."""
    tasks = [(stream, seed, days, rows_per_day, pretrain_rows, drift_day, grid) for seed in seeds for stream in streams]
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_one_stream, tasks))
    else:
        done = [_one_stream(task) for task in tasks]
    per: dict[str, dict[str, list[dict[str, Any]]]] = {name: {s: [] for s in streams} for name in grid}
    for task, figures in zip(tasks, done):
        for setting, summary in figures.items():
            per[setting][task[0]].append(summary)
    out: dict[str, Any] = {}
    for name, by_stream in per.items():
        out[name] = {"params": asdict(replace(Params(), **grid[name])), "streams": {}}
        for stream, figures in by_stream.items():
            recover = [f["days_to_within_5pct_of_scratch"] for f in figures]
            track = [f["days_to_within_5pct_of_scratch_same_day"] for f in figures]
            out[name]["streams"][stream] = {
                "mean_accuracy_after_drift": statistics.median(f["mean_accuracy_after_drift"] for f in figures),
                "days_to_recover": None if None in recover else statistics.median(recover),
                "days_to_track": None if None in track else statistics.median(track),
                "promotions": statistics.median(f["promotions"] for f in figures),
                "bad_promotions": sum(f["bad_promotions"] for f in figures),
                "train_seconds": statistics.median(f["train_seconds"] for f in figures),
                "accuracy": np.mean([f["accuracy"] for f in figures], axis=0).tolist(),
            }
    return out


def table(out: dict[str, Any], drift_day: int = 31) -> str:
    """Per setting: each stream's mean accuracy after the drift and bad promotions; the abrupt recovery."""
    streams = list(next(iter(out.values()))["streams"])
    lines = ["| setting | " + " | ".join(f"{s}: accuracy after drift / bad promotions" for s in streams)
             + " | abrupt: accuracy 2 cycles after the drift | abrupt: days back within 5 % of the ceiling |",
             "|---|" + "---:|" * (len(streams) + 2)]
    for name, result in out.items():
        cells = [f"{result['streams'][s]['mean_accuracy_after_drift']:.3f} / {result['streams'][s]['bad_promotions']}"
                 for s in streams]
        abrupt = result["streams"].get("abrupt")
        if abrupt:
            back = abrupt["days_to_recover"]
            cells += [f"{abrupt['accuracy'][drift_day + 1]:.3f}", "never" if back is None else f"{back:g}"]
        else:
            cells += ["", ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=STREAMS)
    parser.add_argument("--settings", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--drift-day", type=int, default=31)
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--pretrain-rows", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--output", default="drift_sweep")
    args = parser.parse_args(argv)
    begin_benchmark()
    out = sweep(args.streams, args.seeds, args.days, args.rows_per_day, args.pretrain_rows, args.drift_day,
                {name: GRID[name] for name in args.settings}, jobs=args.jobs)
    print(table(out, args.drift_day))
    print(f"results: {save(args.output, {'config': vars(args), 'settings': out})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
