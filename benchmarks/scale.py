"""Scale and cost of one daily cycle on the embedded PostgreSQL, against the floor of a bare COPY.

    python -m benchmarks.scale --rows 100000 1000000 10000000 --repeats 3

For each size: a fresh database is filled in SQL (`generate_series` + `random_normal()`, two
connections in parallel) with a week of evaluated predictions — 10 features (the last
`--categorical` of them strings of about 25 values, the others numbers), 4 classes,
10 % errors of which a third are confident (> 0.7), 1.2 % broken rows of six kinds — and a champion
is registered. Then, interleaved `--repeats` times: the floor (the cycle's own `COPY (select …) TO
STDOUT` statements for errors, replay, the window sample and holdout, drained by psycopg without parsing) and the
real `retraining_job` (every asset and check, in process, on an ephemeral Dagster instance). Step
times come from the run's event log, peak RSS per step from the kernel's high-water mark. Also
timed: the window summary query, a bare `count(*)` of the window, and the decay sensor's count of
the champion's last day from the hourly counts against the same count made row by row, and its
confusion counts (what it reads when it watches balanced accuracy or macro-F1).
Results: `benchmarks/results/scale.json`, `docs/scale_time.png`, `docs/scale_memory.png`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
from psycopg import conninfo

from reinforcement_assets import settings
from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.backends.schema import apply_migrations
from reinforcement_assets.backends.store import Window, period_query
from reinforcement_assets.core.dataset import replay_size, sample_fraction
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.defs.assets import asset_checks, assets, read_champion, run_schemas
from reinforcement_assets.defs.automation import retraining_job
from reinforcement_assets.demo import register_champion
from reinforcement_assets.model import train_from_scratch

from .machine import DOCS_DIR, PeakMemory, begin_benchmark, current_rss, embedded_server, median_time, save

N_FEATURES = 10
CLASSES = ("class_0", "class_1", "class_2", "class_3")
FEATURE_NAMES = tuple(f"x{j}" for j in range(N_FEATURES))
ERROR_SHARE = 0.10           # predictions that are wrong; a third of them with confidence > 0.7
BAD_ROW_SHARE = 0.012        # broken rows, spread evenly over six kinds
FILL_CHUNK = 1_000_000
STEPS = ("evaluation_log", "error_samples", "finetune_dataset", "retrained_model", "run_metrics")
CHAMPION = "bench-v0"  # the model_version of every logged row


def concept(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class weights, biases, and each feature's scale and offset (features need scaling, as in real logs)."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((len(CLASSES), N_FEATURES))
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    return weights, rng.normal(scale=0.1, size=len(CLASSES)), 10.0 ** rng.uniform(-1, 2, N_FEATURES), \
        rng.uniform(-5, 5, N_FEATURES)


def is_categorical(j: int, categorical: int) -> bool:
    """Whether feature x{j} is logged as a string: the last `categorical` features are."""
    return j >= N_FEATURES - categorical


def category_of(z: np.ndarray) -> np.ndarray:
    """A categorical feature's value from its standard-normal draw: 'c<bucket>' in quarters of a
    standard deviation (about 25 values), as `fill_sql` writes it."""
    return np.char.add("c", np.floor(z * 4).astype(int).astype(str))


def fill_sql(weights: np.ndarray, bias: np.ndarray, scale: np.ndarray, offset: np.ndarray,
             categorical: int = 0) -> str:
    """One INSERT … SELECT generating rows `%(lo)s..%(hi)s` of the log, evenly spaced from `%(start)s`."""
    normals = ", ".join(f"random_normal() as z{j}" for j in range(N_FEATURES))
    scores = ", ".join(
        "(" + " + ".join(f"{w:.6f} * z{j}" for j, w in enumerate(row)) + f" + {b:.6f}) as s{k}"
        for k, (row, b) in enumerate(zip(weights, bias))
    )
    argmax = "case greatest(s0, s1, s2, s3) when s0 then 0 when s1 then 1 when s2 then 2 else 3 end"
    features = ", ".join(f"'x{j}', 'c' || floor(z{j} * 4)::int" if is_categorical(j, categorical) else
                         f"'x{j}', round((z{j} * {s:.6f} + {o * s:.6f})::numeric, 6)"
                         for j, (s, o) in enumerate(zip(scale, offset)))
    kinds = 6
    return f"""
        insert into public.prediction_evaluations
            (prediction_id, model_version, features, predicted_label, actual_label, confidence,
             predicted_at, evaluated_at)
        select 'bench-' || g, 'bench-v0',
               case bad when 1 then '{{}}'::jsonb
                        when 2 then f - 'x3'
                        when 3 then jsonb_set(f, '{{x5}}', '"n/a"')
                        else f end,
               'class_' || predicted,
               case bad when 4 then '' else 'class_' || actual end,
               case bad when 5 then null when 6 then 1.7 else confidence end,
               at - interval '30 minutes', at
        from generate_series(%(lo)s::bigint, %(hi)s::bigint) as g
        cross join lateral (
            select %(start)s::timestamptz + (g - 1) * %(step)s::interval as at, {normals},
                   random() as u_error, random() as u_confidence, random() as u_bad,
                   1 + floor(random() * 3)::int as shift
            where g is not null) as r
        cross join lateral (select {scores}) as s
        cross join lateral (select {argmax} as actual) as a
        cross join lateral (
            select jsonb_build_object({features}) as f,
                   case when u_error < {ERROR_SHARE} then (actual + shift) %% 4 else actual end as predicted,
                   case when u_error < {ERROR_SHARE} then 0.3 + 0.6 * u_confidence
                        else 0.55 + 0.45 * sqrt(u_confidence) end as confidence,
                   case when u_bad < {BAD_ROW_SHARE} then 1 + floor(u_bad / {BAD_ROW_SHARE / kinds})::int
                        else 0 end as bad) as d
    """


def fill(url: str, rows: int, window: Window, categorical: int = 0) -> float:
    """Fill the log with `rows` rows over `window`, two connections in parallel; returns seconds."""
    statement = fill_sql(*concept(), categorical=categorical)
    step = (window.end - window.start) / rows
    chunks = [(lo, min(lo + FILL_CHUNK - 1, rows)) for lo in range(1, rows + 1, FILL_CHUNK)]
    errors: list[BaseException] = []

    def worker(mine: list[tuple[int, int]]) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                for lo, hi in mine:
                    conn.execute(statement, {"lo": lo, "hi": hi, "start": window.start, "step": step})
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(chunks[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum (analyze) public.prediction_evaluations")
    return time.perf_counter() - started


def champion_model(seed: int = 0, rows: int = 20_000, categorical: int = 0):
    """The deployed model (the built-in `sgd`, categorical features one-hot encoded): trained on the
    same concept the log is drawn from."""
    weights, bias, scale, offset = concept()
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((rows, N_FEATURES))
    y = np.asarray(CLASSES)[np.argmax(Z @ weights.T + bias, axis=1)]
    X = pd.DataFrame({name: (pd.Series(category_of(Z[:, j]), dtype=object) if is_categorical(j, categorical)
                             else Z[:, j] * scale[j] + offset[j] * scale[j])
                      for j, name in enumerate(FEATURE_NAMES)})
    return train_from_scratch(X, y, seed=seed)


def cycle_schema(store: PostgresStore, artifacts: LocalArtifactStorage, window: Window) -> FeatureSchema:
    """The champion's schema as `evaluation_log` completes it (and records it) on the first run."""
    champion = store.champion()
    model, _ = read_champion(champion, artifacts)
    schema, _ = run_schemas(store, window, store.feature_type_sets(window.start, window.end), champion, model, None)
    return schema


def cycle_queries(store: PostgresStore, window: Window, schema: FeatureSchema,
                  replay_ratio: float = settings.REPLAY_RATIO):
    """The row queries the cycle's assets run, with the same configuration defaults, in the same order
    (the champion, which logged every row, is updated: its errors, the rows earlier versions logged
    for it to re-score (none here), replay for the update, a window sample for the refits)."""
    summary = store.summarize_window(window, schema)
    train = summary.training_period(window)
    errors = period_query(train, schema, limit=settings.MAX_ERROR_ROWS, is_correct=False,
                          min_confidence=settings.ERROR_CONFIDENCE_THRESHOLD, logged_by=CHAMPION)
    earlier = summary.train_rows - store.count_correct(train.start, train.end, CHAMPION).evaluated
    rescored = period_query(train, schema, limit=settings.MAX_ERROR_ROWS, not_logged_by=CHAMPION,
                            sample_fraction=sample_fraction(settings.MAX_ERROR_ROWS, earlier))
    n_errors = min(store.count_rows(errors), settings.MAX_ERROR_ROWS)
    holdout = period_query(summary.holdout_period(window), schema, limit=settings.MAX_HOLDOUT_ROWS,
                           sample_fraction=sample_fraction(settings.MAX_HOLDOUT_ROWS, summary.holdout_rows))
    wanted = replay_size(n_errors, replay_ratio, settings.MAX_TRAINING_ROWS)
    replay = period_query(train, schema, limit=wanted, is_correct=True,
                          sample_fraction=sample_fraction(wanted, summary.train_correct))
    sample = period_query(train, schema, limit=settings.MAX_TRAINING_ROWS,
                          sample_fraction=sample_fraction(settings.MAX_TRAINING_ROWS, summary.train_rows))
    return {"errors": errors, "earlier_rows": rescored, "holdout": holdout, "replay": replay, "window_sample": sample}


def copy_floor(store: PostgresStore, queries: dict) -> dict[str, Any]:
    """Seconds and bytes of the bare COPY of each query's rows, drained without parsing."""
    result = {}
    with psycopg.connect(store.url, autocommit=True, options="-c TimeZone=UTC") as conn, conn.cursor() as cur:
        for name, query in queries.items():
            statement, params = store.copy_rows_statement(conn, query)
            started, size = time.perf_counter(), 0
            with cur.copy(statement, params) as copy:
                for chunk in copy:
                    size += len(chunk)
            result[name] = {"seconds": time.perf_counter() - started, "bytes": size}
    result["total_seconds"] = sum(v["seconds"] for v in result.values())
    return result


def window_count(store: PostgresStore, window: Window) -> float:
    """Seconds of a bare count of the window's evaluated rows: what reading the window costs at least."""
    with psycopg.connect(store.url, autocommit=True) as conn:
        seconds, _ = median_time(lambda: conn.execute(
            "select count(*) from public.prediction_evaluations where evaluated_at >= %s"
            " and evaluated_at < %s and actual_label is not null", (window.start, window.end)).fetchone(), 1)
    return seconds


def decay_counts(store: PostgresStore, end: datetime) -> tuple[float, float, float]:
    """Seconds of the decay sensor's count (the champion's last day, from the hourly counts), of the
    same count made row by row, as before the counts existed, and of the confusion counts the sensor
    reads when it watches balanced accuracy or macro-F1."""
    start = end - timedelta(hours=settings.DECAY_WINDOW_HOURS)
    counted, from_counts = median_time(lambda: store.count_correct(start, end, CHAMPION), 1)
    with psycopg.connect(store.url, autocommit=True) as conn:
        scanned, row_by_row = median_time(lambda: conn.execute(
            "select count(*), count(*) filter (where is_correct) from public.prediction_evaluations"
            " where evaluated_at >= %s and evaluated_at < %s and actual_label is not null and reject_reason is null"
            " and model_version = %s", (start, end, CHAMPION)).fetchone(), 1)
    if (from_counts.evaluated, from_counts.correct) != row_by_row:
        raise RuntimeError(f"the decay count from the hourly counts {from_counts} differs from {row_by_row}")
    confused, confusion = median_time(lambda: store.confusion_counts(start, end, CHAMPION), 1)
    if (confusion.evaluated, confusion.correct, confusion.in_matrix) != (*row_by_row, row_by_row[0]):
        raise RuntimeError(f"the confusion counts {confusion} differ from the count row by row {row_by_row}")
    return counted, scanned, confused


def step_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, float]]:
    """Start and end (`time.time()` stamps) of each step of a run, from its event log."""
    steps: dict[str, dict[str, float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            steps.setdefault(event.step_key, {})["start"] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            steps.setdefault(event.step_key, {})["end"] = entry.timestamp
    return steps


def run_cycle_in_child(url: str, artifacts_dir: str, window: Window, replay_ratio: float) -> dict[str, Any]:
    """`run_cycle` in a fresh process, so its peak RSS is the cycle's alone (not what earlier runs left)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_cycle_child, url, artifacts_dir, window, replay_ratio).result()


def _cycle_child(url: str, artifacts_dir: str, window: Window,
                 replay_ratio: float = settings.REPLAY_RATIO) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    artifacts = LocalArtifactStorage(base_dir=artifacts_dir)
    resources = {"store": PostgresStore(database_url=url), "artifacts": artifacts,
                 "io_manager": ArtifactIOManager(storage=artifacts)}
    return run_cycle(resources, window, replay_ratio)


def run_cycle(resources: dict, window: Window, replay_ratio: float = settings.REPLAY_RATIO) -> dict[str, Any]:
    """One `retraining_job` run in process; per-step seconds and peak RSS, and what each step handled."""
    rss_before = current_rss()
    defs = dg.Definitions(assets=assets, asset_checks=asset_checks, jobs=[retraining_job], resources=resources)
    job = defs.resolve_job_def("retraining_job")
    instance = dg.DagsterInstance.ephemeral()
    config = dg.RunConfig({"evaluation_log": {"config": {"window_end": window.end.isoformat()}},
                           "finetune_dataset": {"config": {"replay_ratio": replay_ratio}}},
                          loggers={"console": {"config": {"log_level": "WARNING"}}})
    with PeakMemory() as memory:
        started, wall_start = time.perf_counter(), time.time()
        result = job.execute_in_process(instance=instance, tags={"source": "manual"}, run_config=config)
        seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError("the retraining job failed")
    spans = step_times(instance, result.run_id)
    meta = {e.materialization.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}
    handled = {
        "evaluation_log": meta["evaluation_log"]["rows"],
        "error_samples": meta["error_samples"]["count"],
        "finetune_dataset": meta["finetune_dataset"]["train_rows"] + meta["finetune_dataset"]["holdout_rows"],
        "retrained_model": meta["retrained_model"]["train_rows"],
        "run_metrics": meta["finetune_dataset"]["holdout_rows"],
    }
    steps = {}
    for step in STEPS:
        span = spans[step]
        steps[step] = {"seconds": span["end"] - span["start"], "peak_rss": memory.peak(span["start"], span["end"]),
                       "rows": handled[step]}
    first = min(s["start"] for s in spans.values())
    return {
        "run_id": result.run_id,
        "seconds": seconds,
        "to_dataset_seconds": spans["finetune_dataset"]["end"] - first,
        "steps_seconds": sum(s["end"] - s["start"] for s in spans.values()),
        "run_overhead_seconds": seconds - sum(s["end"] - s["start"] for s in spans.values()),
        "launch_seconds": first - wall_start,
        "peak_rss": memory.peak(),
        "rss_before": rss_before,
        "steps": steps,
        "mode": meta["finetune_dataset"]["mode"],
        "promoted": meta["run_metrics"]["promoted"],
    }


def median_of(runs: list[dict], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def prepare_database(server_url: str, name: str, rows: int, window: Window, reuse: bool,
                     categorical: int = 0) -> tuple[str, float]:
    """A migrated database filled with `rows` rows (kept from an earlier `--keep` run if `reuse`)."""
    url = conninfo.make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if exists and reuse:
            apply_migrations(url)
            with psycopg.connect(url) as db:
                db.execute("update public.model_versions set parent_version = null")
                db.execute("delete from public.model_versions")
                db.execute("delete from public.model_retraining_runs")
            return url, 0.0
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    apply_migrations(url)
    return url, fill(url, rows, window, categorical)


def bench_size(server_url: str, rows: int, repeats: int, work_dir: Path, keep: bool = False,
               replay_ratio: float = settings.REPLAY_RATIO, categorical: int = 0) -> dict[str, Any]:
    """Fill a fresh database with `rows` rows and time the floor and the cycle, interleaved."""
    name = f"bench_scale_{rows}" + (f"_c{categorical}" if categorical else "")
    end = datetime(2026, 12, 1, 2, tzinfo=timezone.utc)
    window = Window.ending_at(end, settings.DEFAULT_LOOKBACK_DAYS, settings.HOLDOUT_SHARE)
    url, fill_seconds = prepare_database(server_url, name, rows, window, reuse=keep, categorical=categorical)
    try:
        store = PostgresStore(database_url=url)
        artifacts = LocalArtifactStorage(base_dir=str(work_dir / f"artifacts_{rows}"))
        register_champion(store, artifacts, champion_model(categorical=categorical), CHAMPION, "benchmark champion")
        with psycopg.connect(url) as conn:
            (db_bytes,) = conn.execute("select pg_database_size(current_database())").fetchone()
        schema = cycle_schema(store, artifacts, window)
        queries = cycle_queries(store, window, schema, replay_ratio)
        summary_seconds, count_seconds, decay_seconds = [], [], []
        floors, cycles = [], []
        for _ in range(repeats):
            count_seconds.append(window_count(store, window))
            summary_seconds.append(median_time(lambda: store.summarize_window(window, schema), 1)[0])
            decay_seconds.append(decay_counts(store, window.end))
            floors.append(copy_floor(store, queries))
            # Every repeat races against the champion that logged the rows, not the last repeat's winner.
            store.promote(CHAMPION, "benchmark: the same champion for every repeat")
            cycles.append(run_cycle_in_child(url, artifacts.base_dir, window, replay_ratio))
        floor = median_of(floors, "total_seconds")
        to_dataset = median_of(cycles, "to_dataset_seconds")
        return {
            "rows": rows,
            "categorical_features": categorical,
            "feature_schema": schema.as_json(),
            "replay_ratio": replay_ratio,
            "fill_seconds": fill_seconds,
            "database_bytes": db_bytes,
            "repeats": repeats,
            "floor_seconds": floor,
            "floor_rows": {k: q.limit for k, q in queries.items()},
            "floor_bytes": sum(floors[-1][k]["bytes"] for k in queries),
            "floor_parts": {k: median_of(floors, k, "seconds") for k in queries},
            "summary_query_seconds": statistics.median(summary_seconds),
            "window_count_seconds": statistics.median(count_seconds),
            "decay_count_seconds": statistics.median(s for s, _, _ in decay_seconds),
            "decay_count_row_by_row_seconds": statistics.median(s for _, s, _ in decay_seconds),
            "decay_confusion_seconds": statistics.median(s for _, _, s in decay_seconds),
            "cycle_seconds": median_of(cycles, "seconds"),
            "to_dataset_seconds": to_dataset,
            "to_dataset_over_floor": to_dataset / floor,
            "launch_seconds": median_of(cycles, "launch_seconds"),
            "run_overhead_seconds": median_of(cycles, "run_overhead_seconds"),
            "peak_rss": median_of(cycles, "peak_rss"),
            "rss_before": median_of(cycles, "rss_before"),
            "steps": {step: {k: median_of(cycles, "steps", step, k) for k in ("seconds", "peak_rss", "rows")}
                      for step in STEPS},
            "mode": cycles[-1]["mode"],
            "runs": cycles,
            "floors": floors,
        }
    finally:
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f"drop database if exists {name} with (force)")


def tables(results: list[dict[str, Any]]) -> str:
    """Markdown tables of the results."""
    mib = 2**20
    lines = ["| rows in window | database | floor: bare COPY (s) | cycle to finetune_dataset (s) | "
             "ratio to floor | window summary (s) | bare count(*) of the window (s) | whole cycle (s) | "
             "window rows/s | peak RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['database_bytes'] / 2**30:.2f} GiB | "
                     f"{r['floor_seconds']:.2f} | {r['to_dataset_seconds']:.2f} | {r['to_dataset_over_floor']:.2f}x | "
                     f"{r['summary_query_seconds']:.3f} | {r['window_count_seconds']:.3f} | "
                     f"{r['cycle_seconds']:.2f} | {r['rows'] / r['cycle_seconds']:,.0f} | {r['peak_rss'] / mib:.0f} |")
    lines += ["", "| rows in window | asset | seconds | rows handled | rows/s | peak RSS (MiB) |",
              "|---:|---|---:|---:|---:|---:|"]
    for r in results:
        for step, s in r["steps"].items():
            lines.append(f"| {r['rows']:,} | {step} | {s['seconds']:.2f} | {s['rows']:,.0f} | "
                         f"{s['rows'] / s['seconds']:,.0f} | {s['peak_rss'] / mib:.0f} |")
    if all("decay_count_seconds" in r for r in results):
        confusion = all("decay_confusion_seconds" in r for r in results)
        lines += ["", "| rows in window | decay sensor's count of the last day (ms) | the same count row by row (ms) |"
                  + (" its confusion counts (ms) |" if confusion else ""),
                  "|---:|---:|---:|" + ("---:|" if confusion else "")]
        lines += [f"| {r['rows']:,} | {1e3 * r['decay_count_seconds']:.1f} | "
                  f"{1e3 * r['decay_count_row_by_row_seconds']:.1f} |"
                  + (f" {1e3 * r['decay_confusion_seconds']:.1f} |" if confusion else "") for r in results]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], out_dir: Path = DOCS_DIR) -> list[Path]:
    """Time per asset and peak RSS against the window size, on log axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["rows"] for r in results]

    def per_step_plot(value, extra_lines, yscale: str, ylabel: str, title: str, name: str) -> Path:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for step in STEPS:
            ax.plot(sizes, [value(r["steps"][step]) for r in results], marker="o", label=step)
        for values, style in extra_lines:
            ax.plot(sizes, values, **style)
        ax.set(xscale="log", yscale=yscale, xlabel="rows in the window", ylabel=ylabel, title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    totals = [([r["cycle_seconds"] for r in results], dict(marker="s", color="black", label="whole cycle")),
              ([r["floor_seconds"] for r in results],
               dict(marker="^", linestyle="--", color="grey", label="floor: bare COPY"))]
    return [
        per_step_plot(lambda s: s["seconds"], totals, "log", "seconds (median)",
                      "One daily cycle on embedded PostgreSQL", "scale_time.png"),
        per_step_plot(lambda s: s["peak_rss"] / 2**20, [], "linear", "peak RSS of the process (MiB)",
                      "Peak memory per asset", "scale_memory.png"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", help="embedded PostgreSQL folder (default: a temporary one, removed after)")
    parser.add_argument("--replay-ratio", type=float, default=settings.REPLAY_RATIO,
                        help=f"correct rows replayed per error (default {settings.REPLAY_RATIO:g})")
    parser.add_argument("--categorical", type=int, default=0, choices=range(N_FEATURES + 1), metavar="K",
                        help="log the last K of the 10 features as strings (default 0: all numeric)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each filled database in --data-dir, and reuse it on the next run")
    parser.add_argument("--output", default="scale", help="results name (benchmarks/results/<name>.json)")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    begin_benchmark()
    with embedded_server(args.data_dir) as (server_url, work_dir):
        results = []
        for rows in args.rows:
            result = bench_size(server_url, rows, args.repeats, work_dir, keep=args.keep,
                                replay_ratio=args.replay_ratio, categorical=args.categorical)
            results.append(result)
            print(f"{rows:>11,} rows: floor {result['floor_seconds']:.2f} s, to finetune_dataset "
                  f"{result['to_dataset_seconds']:.2f} s ({result['to_dataset_over_floor']:.2f}x), cycle "
                  f"{result['cycle_seconds']:.2f} s, peak RSS {result['peak_rss'] / 2**20:.0f} MiB "
                  f"(fill {result['fill_seconds']:.0f} s)", flush=True)
    print()
    print(tables(results))
    path = save(args.output, {"settings": {"max_error_rows": settings.MAX_ERROR_ROWS,
                                           "max_training_rows": settings.MAX_TRAINING_ROWS,
                                           "max_holdout_rows": settings.MAX_HOLDOUT_ROWS,
                                           "replay_ratio": args.replay_ratio,
                                           "categorical_features": args.categorical},
                              "results": results})
    print(f"\nresults: {path}")
    if not args.no_plots:
        for png in plot(results):
            print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
