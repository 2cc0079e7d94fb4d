"""The request sensor's tick against a growing history of retraining requests.

    python -m benchmarks.sensor_tick --history 0 10000 100000 1000000 --repeats 15

The history (completed, failed and cancelled requests over the past year, generated in SQL) grows
to each size; at each size the real `retraining_requests` sensor is evaluated (`evaluate_tick` on
`dg.build_sensor_context`, a real `DagsterInstance`, the real `PostgresStore` on embedded
PostgreSQL): `--repeats` ticks that each find 3 new pending requests, and as many that find none.
Claimed requests are marked completed after each tick so the next starts from the same state.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import dagster as dg
import psycopg

from reinforcement_assets.backends.postgres_store import PostgresStore

from .machine import begin_benchmark, embedded_server, save, scratch_database

PENDING_PER_TICK = 3

HISTORY_SQL = """
    insert into public.model_retraining_requests (reason, priority, status, created_at, processed_at, claimed_at)
    select 'history ' || g,
           (array['low', 'normal', 'high'])[1 + g %% 3],
           (array['completed', 'completed', 'completed', 'failed', 'cancelled'])[1 + g %% 5],
           now() - interval '365 days' + g * %(step)s::interval,
           now() - interval '365 days' + g * %(step)s::interval + interval '10 minutes',
           now() - interval '365 days' + g * %(step)s::interval + interval '1 minute'
    from generate_series(%(lo)s::bigint, %(hi)s::bigint) as g
"""


def grow_history(url: str, current: int, target: int) -> None:
    """Add requests until the history has `target` rows."""
    if target <= current:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(HISTORY_SQL, {"lo": current + 1, "hi": target, "step": "30 seconds"})
        conn.execute("vacuum (analyze) public.model_retraining_requests")


def one_tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, store: PostgresStore, url: str,
             pending: int) -> tuple[float, int]:
    """Seconds of one tick that finds `pending` new requests, and how many runs it asked for."""
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(pending):
            conn.execute("insert into public.model_retraining_requests (reason) values (%s)", (f"bench {i}",))
    context = dg.build_sensor_context(instance=instance, resources={"store": store})
    started = time.perf_counter()
    result = sensor.evaluate_tick(context)
    seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update public.model_retraining_requests set status = 'completed', processed_at = now()"
                     " where status in ('pending', 'processing')")
    return seconds, len(result.run_requests or [])


def bench(server_url: str, sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    from reinforcement_assets.defs.sensors import retraining_requests

    results = []
    with scratch_database(server_url, "bench_sensor") as url:
        store = PostgresStore(database_url=url)
        current = 0
        with dg.instance_for_test() as instance:
            one_tick(retraining_requests, instance, store, url, PENDING_PER_TICK)  # warm-up: imports, connections
            for size in sizes:
                grow_history(url, current, size)
                current = max(current, size)
                busy = [one_tick(retraining_requests, instance, store, url, PENDING_PER_TICK) for _ in range(repeats)]
                idle = [one_tick(retraining_requests, instance, store, url, 0) for _ in range(repeats)]
                if any(runs != PENDING_PER_TICK for _, runs in busy):
                    raise RuntimeError("a tick did not ask for one run per pending request")
                results.append({
                    "history": size, "repeats": repeats,
                    "tick_with_pending_seconds": statistics.median(s for s, _ in busy),
                    "tick_with_pending_max_seconds": max(s for s, _ in busy),
                    "idle_tick_seconds": statistics.median(s for s, _ in idle),
                    "idle_tick_max_seconds": max(s for s, _ in idle),
                })
                print(f"history {size:>9,}: tick with {PENDING_PER_TICK} pending "
                      f"{1000 * results[-1]['tick_with_pending_seconds']:.1f} ms, idle tick "
                      f"{1000 * results[-1]['idle_tick_seconds']:.1f} ms (medians of {repeats})", flush=True)
    return results


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]["tick_with_pending_seconds"]
    lines = [f"| requests in history | tick claiming {PENDING_PER_TICK} (ms, median) | max (ms) | "
             f"ratio to smallest history | idle tick (ms, median) | max (ms) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['history']:,} | {1000 * r['tick_with_pending_seconds']:.1f} | "
                     f"{1000 * r['tick_with_pending_max_seconds']:.1f} | {r['tick_with_pending_seconds'] / base:.2f}x | "
                     f"{1000 * r['idle_tick_seconds']:.1f} | {1000 * r['idle_tick_max_seconds']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sensor_tick", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, nargs="+", default=[0, 10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", default="sensor_tick")
    args = parser.parse_args(argv)
    begin_benchmark()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    with embedded_server() as (server_url, _):
        results = bench(server_url, sorted(args.history), args.repeats)
    print(table(results))
    print(f"results: {save(args.output, {'pending_per_tick': PENDING_PER_TICK, 'results': results})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
