"""The `reinforcement` command: run the demo, and (later) queue requests, show status, roll back."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence

import pandas as pd

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn
    return register


def _definitions():
    """The code location's Definitions (imported late: --data-dir must reach the environment first)."""
    from .definitions import defs
    return defs


def _instance():
    import dagster as dg
    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()


def run_retraining(tags: dict[str, str], window_end: pd.Timestamp | None = None, **asset_config):
    """Execute the retraining job in this process with the environment's resources."""
    import dagster as dg

    config = {"evaluation_log": {"config": {"window_end": window_end.isoformat()}}} if window_end is not None else {}
    for asset, values in asset_config.items():
        config.setdefault(asset, {"config": {}})["config"].update(values)
    from . import settings

    job = _definitions().resolve_job_def("retraining_job")
    return job.execute_in_process(
        instance=_instance(), tags=tags, raise_on_error=False,
        run_config=dg.RunConfig(config, loggers={"console": {"config": {"log_level": settings.LOG_LEVEL}}}),
    )


def _resource(key: str):
    return _definitions().resources[key]


@command("demo")
def demo(args: argparse.Namespace) -> int:
    """Fill the store with a drifting week of predictions, run the loop once, report."""
    from .demo import accuracy, deploy_initial_model, drift_scenario, log_traffic

    store, artifacts = _resource("store"), _resource("artifacts")
    scenario = drift_scenario(args.rows, seed=args.seed)
    end = pd.Timestamp.now(tz="UTC").floor("min")
    print(f"store: {store.describe()}")

    champion = store.champion()
    if champion is None:
        deployed = deploy_initial_model(store, artifacts, scenario, version=f"demo-v0-{end:%Y%m%d%H%M}")
        version = store.champion().version
        print(f"deployed the initial model {version} (trained before the drift)")
    else:
        deployed = artifacts.read_value(champion.artifact_path, champion.sha256)
        version = champion.version
        print(f"the champion is {version}")

    log, broken = log_traffic(deployed, *scenario.window, end - pd.Timedelta(days=args.lookback_days), end,
                              model_version=version, bad_row_share=0.02, seed=args.seed,
                              prefix=f"demo-{end:%Y%m%d%H%M}")
    inserted = store.insert_evaluations(log)
    print(f"logged {inserted:,} predictions over {args.lookback_days:g} days, concept drift at 40% of the window, "
          f"{int(broken.notna().sum())} broken rows")

    result = run_retraining({"source": "manual"}, window_end=end,
                            evaluation_log={"lookback_days": args.lookback_days})
    run = store.get_run(result.run_id) or {}
    print()
    print(report(result, run))
    champion = store.champion()
    model = artifacts.read_value(champion.artifact_path, champion.sha256)
    print()
    print(f"accuracy on the day after the window: deployed model {accuracy(deployed, *scenario.after):.3f}, "
          f"champion now ({champion.version}) {accuracy(model, *scenario.after):.3f}")
    return 0 if result.success and run.get("status") in ("completed", "skipped") else 1


def report(result, run: dict) -> str:
    """What a retraining run did, from its materialisations and its row in model_retraining_runs."""
    meta = {
        event.materialization.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    metrics = run.get("metrics") or {}
    lines = [f"run {result.run_id}: {run.get('status', 'not recorded')}"]
    if "evaluation_log" in meta:
        m = meta["evaluation_log"]
        lines.append(f"  rows loaded        {m['rows']:,} (accuracy {m['accuracy']:.3f}), set aside {m['rows_rejected']:,}"
                     f" {m['rejected_by_reason']}")
    if "error_samples" in meta:
        m = meta["error_samples"]
        lines.append(f"  errors found       {m['count']:,} with confidence > {m['confidence_threshold']:g}"
                     f" {m['per_class']}")
    if "finetune_dataset" in meta:
        m = meta["finetune_dataset"]
        lines.append(f"  dataset            {m['train_rows']:,} training rows ({m['error_rows']:,} errors, "
                     f"{m['replay_rows']:,} replayed, {m['window_sample_rows']:,} sampled), "
                     f"{m['holdout_rows']:,} holdout rows; mode {m['mode']}")
    if "run_metrics" in meta:
        m = meta["run_metrics"]
        for who in ("challenger", "champion"):
            lines.append(f"  {who:<18} accuracy {m[f'{who}_accuracy']:.3f}  precision {m[f'{who}_precision']:.3f}"
                         f"  recall {m[f'{who}_recall']:.3f}  F1 {m[f'{who}_f1']:.3f}")
        lines.append(f"  promoted           {'yes' if m['promoted'] else 'no'}: {m['decision']}")
    if run.get("error_message"):
        lines.append(f"  note               {run['error_message']}")
    if run.get("log_url"):
        lines.append(f"  training log       {run['log_url']}")
    if metrics.get("challenger_version"):
        lines.append(f"  challenger version {metrics['challenger_version']}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="reinforcement", description=__doc__)
    root.add_argument("--data-dir", help="folder of the embedded database and artifacts (default .reinforcement)")
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the loop once on a generated week of drifting predictions")
    p.add_argument("--rows", type=int, default=20_000, help="predictions in the window (default 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lookback-days", type=float, default=7.0)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = parser().parse_args(argv)
    if args.data_dir:
        os.environ["REINFORCEMENT_DATA_DIR"] = args.data_dir
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
