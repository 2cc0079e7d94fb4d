"""The race of challengers against daily refits, river and never retraining, on drifting streams.

    OMP_NUM_THREADS=1 python -m benchmarks.race            # every run below (~35 min on 2 cores), then the targets
    python -m benchmarks.race --report                     # the targets, from the saved results

Each run is `benchmarks.drift` (the same core functions as the assets, on the log held in memory):
60 days of 1,000 rows, the drift on day 31, 3 seeds. The runs:

- `race_delay0`: streams abrupt, gradual, hyperplane, rbf, fraud (2 % positives); strategies never,
  default (the race: update + refit of the family), scratch (daily refit of the family, always
  deployed), race_hgb (the race with `hist_gradient_boosting` in CHALLENGERS), hgb_daily, river;
- `race_fraud_macro_f1`: the fraud stream with GATE_METRIC=macro_f1;
- `race_delay3`, `race_delay7`: outcomes 3 and 7 days late (abrupt, gradual; default and scratch);
- `race_margin_<m>`: the default on abrupt, gradual and stable with margins 0, 0.005 and 0.01;
- `race_hgb_champion`: a user's HGB champion through the race against a daily HGB refit;
- `race_arf`: river's adaptive random forest (one seed: it learns row by row, slowly).

Results: `benchmarks/results/race_*.json`, `docs/race_accuracy.png`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from . import drift
from .machine import DOCS_DIR, RESULTS_DIR, begin_benchmark, save

COMMON = {"days": 60, "rows_per_day": 1000, "pretrain_rows": 5000, "drift_day": 31, "seeds": (0, 1, 2)}
RUNS: dict[str, dict[str, Any]] = {
    "race_delay0": {"streams": ("abrupt", "gradual", "hyperplane", "rbf", "fraud"),
                    "strategies": ("never", "default", "scratch", "race_hgb", "hgb_daily", "river")},
    "race_fraud_macro_f1": {"streams": ("fraud",), "strategies": ("default", "scratch", "hgb_daily", "race_hgb"),
                            "params": {"gate_metric": "macro_f1"}},
    "race_delay3": {"streams": ("abrupt", "gradual"), "strategies": ("default", "scratch"),
                    "params": {"label_delay_days": 3}},
    "race_delay7": {"streams": ("abrupt", "gradual"), "strategies": ("default", "scratch"),
                    "params": {"label_delay_days": 7}},
    **{f"race_margin_{m:g}": {"streams": ("abrupt", "gradual", "stable"), "strategies": ("default",),
                             "params": {"non_inferiority_margin": m}} for m in (0.0, 0.005, 0.01)},
    "race_hgb_champion": {"streams": ("abrupt", "fraud"), "strategies": ("hgb_loop", "hgb_daily")},
    "race_arf": {"streams": ("abrupt",), "strategies": ("river_arf",), "seeds": (0,)},
}
TOLERANCE = 0.01  # of the targets on mean accuracy after the drift


def run_all(names: Sequence[str]) -> None:
    """Run and save each named run of `RUNS`."""
    for name in names:
        spec = {**COMMON, **RUNS[name]}
        params = drift.Params(**spec.get("params", {}))
        results = drift.run(spec["streams"], spec["days"], spec["rows_per_day"], spec["pretrain_rows"],
                            spec["drift_day"], spec["seeds"], spec["strategies"], params)
        agg = drift.aggregate(results)
        save(name, {"config": {**{k: v for k, v in spec.items() if k != "params"}, "params": vars(params)},
                    "aggregate": agg, "per_seed": results})
        if name == "race_delay0":
            drift.plot(agg, DOCS_DIR / "race_accuracy.png")
        print(f"{name}:\n{drift.table(agg, len(spec['seeds']))}\n", flush=True)


def load(name: str) -> tuple[dict[str, Any], int]:
    """A saved run's aggregate (stream -> strategy -> figures) and its number of seeds."""
    saved = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    return saved["aggregate"], len(saved["config"]["seeds"])


def targets() -> str:
    """The issue's targets against the saved results, as a Markdown table."""
    (main, seeds), lines = load("race_delay0"), ["| stream | target | race | baseline | met |", "|---|---|---:|---:|---|"]

    def row(stream: str, target: str, ours: float, theirs: float, met: bool) -> None:
        lines.append(f"| {stream} | {target} | {ours:.3f} | {theirs:.3f} | {'yes' if met else '**no**'} |")

    for stream, s in main.items():
        race, scratch = s["default"]["mean_accuracy_after_drift"], s["scratch"]["mean_accuracy_after_drift"]
        row(stream, "accuracy after drift ≥ daily refit of the family − 0.01", race, scratch,
            race >= scratch - TOLERANCE)
        with_hgb, hgb = s["race_hgb"]["mean_accuracy_after_drift"], s["hgb_daily"]["mean_accuracy_after_drift"]
        row(stream, "with HGB in CHALLENGERS ≥ daily HGB refit − 0.01", with_hgb, hgb, with_hgb >= hgb - TOLERANCE)
        bad = max(s[k]["bad_promotions"] for k in ("default", "race_hgb")) / seeds
        row(stream, "bad promotions per 60 days (mean over seeds) ≤ 1", bad, s["scratch"]["bad_promotions"] / seeds,
            bad <= 1)
    fraud = load("race_fraud_macro_f1")[0]["fraud"]
    ours, hgb = fraud["default"]["mean_minority_recall_after_drift"], fraud["hgb_daily"]["mean_minority_recall_after_drift"]
    row("fraud (macro_f1)", "minority recall ≥ daily HGB refit − 0.05", ours, hgb, ours >= hgb - 0.05)
    abrupt = main["abrupt"]
    settled = max(sum(s["accuracy"][-10:]) / len(s["accuracy"][-10:]) for s in abrupt.values())
    third = abrupt["default"]["accuracy"][abrupt["default"]["drift_day"] - 1 + 3]  # after 3 cycles on drifted days
    row("abrupt", "3 cycles after the drift within 5 % of the best strategy's settled level", third, settled,
        third >= 0.95 * settled)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.race", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--report", action="store_true", help="only print the targets from the saved results")
    args = parser.parse_args(argv)
    if not args.report:
        begin_benchmark()
        run_all(args.runs)
    print(targets())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
