"""Time and locks of the feature-types migration (20261202000000_feature_types.sql) on a filled log.

    python -m benchmarks.migration --rows 1000000 10000000 [--migration 20261203000000]

For each size a fresh database gets every migration before that one, is filled as `benchmarks.scale`
fills it (a week of rows, 10 numeric features, 1.2 % broken rows), and the migration (alone; or
`--migration`, e.g. the confusion counts' backfill) is applied as `reinforcement migrate` applies
it: one transaction. Meanwhile a second connection measures how long
a window summary (a reader) and a one-row insert (a writer) wait for it. Then the re-judged log is
checked: the hourly counts rebuilt by the migration equal a count of the rows.
Results: `benchmarks/results/migration.json`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

from reinforcement_assets import settings
from reinforcement_assets.backends.schema import MIGRATIONS_DIR, apply_migrations, migration_files
from reinforcement_assets.backends.store import Window

from .machine import begin_benchmark, embedded_server, save, scratch_database
from .scale import fill

MIGRATION = "20261202000000"


def migrations_before(version: str, folder: Path) -> Path:
    """A folder holding the migrations older than `version` (links to the package's files)."""
    for path in migration_files(MIGRATIONS_DIR):
        if path.stem.split("_", 1)[0] < version:
            (folder / path.name).symlink_to(path.resolve())
    return folder


def migrations_through(version: str, folder: Path) -> Path:
    """A folder holding the migrations up to `version`, that one included (links to the package's files)."""
    for path in migration_files(MIGRATIONS_DIR):
        if path.stem.split("_", 1)[0] <= version:
            (folder / path.name).symlink_to(path.resolve())
    return folder


def waits_during(url: str, window: Window, stop: threading.Event) -> tuple[dict[str, list[float]], list[threading.Thread]]:
    """Seconds a reader and a writer of the log wait, sampled (by the threads returned) until `stop` is set."""
    waits: dict[str, list[float]] = {"reader": [], "writer": []}

    def probe(kind: str, statement: str, params: tuple) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    conn.execute(statement, params)
                except psycopg.Error:  # the old function is gone once the migration commits
                    pass
                waits[kind].append(time.perf_counter() - started)
                time.sleep(0.2)

    threads = [
        threading.Thread(target=probe, args=("reader", "select max(evaluated_at) from public.prediction_evaluations"
                                             " where evaluated_at >= %s", (window.end,))),
        threading.Thread(target=probe, args=("writer", "insert into public.prediction_evaluations (prediction_id,"
                                             " features, predicted_label, actual_label, confidence, evaluated_at)"
                                             " values (gen_random_uuid()::text, '{\"x0\": 1}', 'a', 'a', 0.9, %s)",
                                             (window.end,))),
    ]
    for thread in threads:
        thread.start()
    return waits, threads


def bench_size(server_url: str, rows: int, migration: str = MIGRATION) -> dict[str, Any]:
    end = datetime(2026, 12, 1, 2, tzinfo=timezone.utc)
    window = Window.ending_at(end, settings.DEFAULT_LOOKBACK_DAYS, settings.HOLDOUT_SHARE)
    with scratch_database(server_url, f"bench_migration_{rows}", migrate=False) as url:
        older, through = Path(tempfile.mkdtemp(prefix="migrations-")), Path(tempfile.mkdtemp(prefix="migrations-"))
        try:
            apply_migrations(url, migrations_before(migration, older))
        finally:
            shutil.rmtree(older)
        fill_seconds = fill(url, rows, window)
        with psycopg.connect(url) as conn:
            (table_bytes,) = conn.execute("select pg_total_relation_size('public.prediction_evaluations')").fetchone()
        stop = threading.Event()
        time.sleep(0.5)
        waits, threads = waits_during(url, window, stop)
        time.sleep(0.5)
        started = time.perf_counter()
        try:
            applied = apply_migrations(url, migrations_through(migration, through))
        finally:
            shutil.rmtree(through)
        seconds = time.perf_counter() - started
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
        with psycopg.connect(url) as conn:
            counted = conn.execute("select coalesce(sum(row_count), 0) from public.prediction_evaluation_counts").fetchone()[0]
            logged = conn.execute("select count(*) from public.prediction_evaluations"
                                  " where actual_label is not null and evaluated_at is not null").fetchone()[0]
            reasons = dict(conn.execute("select coalesce(reject_reason, 'usable'), count(*)"
                                        " from public.prediction_evaluations group by 1").fetchall())
            (type_sets,) = conn.execute("select count(*) from public.prediction_feature_type_sets").fetchone()
            confusion = None
            if conn.execute("select to_regclass('public.prediction_confusion_counts')").fetchone()[0]:
                confusion = conn.execute("select coalesce(sum(row_count), 0) from public.prediction_confusion_counts"
                                         ).fetchone()[0]
                usable = conn.execute("select count(*) from public.prediction_evaluations where actual_label is not"
                                      " null and evaluated_at is not null and reject_reason is null").fetchone()[0]
                if confusion != usable:
                    raise RuntimeError(f"the confusion counts hold {confusion} rows, the log {usable} usable ones")
        if counted != logged:
            raise RuntimeError(f"the rebuilt counts hold {counted} rows, the log {logged}")
        return {"rows": rows, "applied": applied, "fill_seconds": fill_seconds, "table_bytes": table_bytes,
                "migration_seconds": seconds, "longest_reader_wait": max(waits["reader"]),
                "longest_writer_wait": max(waits["writer"]), "median_reader_wait": statistics.median(waits["reader"]),
                "reject_reasons": reasons, "feature_type_sets": type_sets, "confusion_rows": confusion}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| rows | table and indexes | migration (s) | longest wait of a reader (s) | longest wait of a writer (s) |"
             " feature type sets |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['rows']:,} | {r['table_bytes'] / 2**30:.2f} GiB | {r['migration_seconds']:.1f} | "
              f"{r['longest_reader_wait']:.1f} | {r['longest_writer_wait']:.1f} | {r['feature_type_sets']} |"
              for r in results]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.migration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--migration", default=MIGRATION, help=f"the version to time (default {MIGRATION})")
    parser.add_argument("--data-dir", help="embedded PostgreSQL folder (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    begin_benchmark()
    results = []
    with embedded_server(args.data_dir) as (server_url, _):
        for rows in args.rows:
            result = bench_size(server_url, rows, args.migration)
            results.append(result)
            print(f"{rows:>11,} rows: migration {result['migration_seconds']:.1f} s, readers waited up to "
                  f"{result['longest_reader_wait']:.1f} s, writers {result['longest_writer_wait']:.1f} s "
                  f"(fill {result['fill_seconds']:.0f} s)", flush=True)
    print()
    print(table(results))
    name = "migration" if args.migration == MIGRATION else f"migration_{args.migration}"
    print(f"\nresults: {save(name, {'migration': args.migration, 'results': results})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
