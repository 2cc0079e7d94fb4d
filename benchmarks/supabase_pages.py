"""What pagination costs on the Supabase path: the cycle's reads at 1,000 rows per page.

    python -m benchmarks.supabase_pages --rows 100000 1000000 --repeats 3

Supabase's servers cannot run here, so the `SupabaseStore` talks to the test emulator
(`reinforcement_tests/supabase_transport.py`: an `httpx.MockTransport` that answers PostgREST's
documented requests by running SQL on the same embedded PostgreSQL, with hosted Supabase's cap of
1,000 rows per response). The same reads go through `PostgresStore` (one COPY each) as the
baseline, in the same process, on the same database. What the emulator cannot show is the network:
the table extrapolates with the page count times a round-trip time.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from reinforcement_assets import settings
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.backends.store import Window

from .machine import begin_benchmark, embedded_server, median_time, save, scratch_database
from reinforcement_assets.core.features import FeatureSchema

from .scale import FEATURE_NAMES, cycle_queries, fill

ROUND_TRIPS_MS = (20, 50, 100)


def bench(server_url: str, rows: int, repeats: int, page_size: int) -> dict[str, Any]:
    from reinforcement_tests.supabase_transport import SupabaseEmulator, emulated_resources

    with scratch_database(server_url, f"bench_supabase_{rows}") as url:
        end = datetime(2026, 12, 1, 2, tzinfo=timezone.utc)
        window = Window.ending_at(end, settings.DEFAULT_LOOKBACK_DAYS, settings.HOLDOUT_SHARE)
        fill(url, rows, window)
        postgres = PostgresStore(database_url=url)
        emulator = SupabaseEmulator(url, max_rows=page_size)
        try:
            supabase = emulated_resources(emulator, store={"page_size": page_size})["store"]
            schema = FeatureSchema.numeric(FEATURE_NAMES)
            queries = cycle_queries(postgres, window, schema)
            reads = []
            for label, query in queries.items():
                pg_seconds, pg_rows = median_time(lambda q=query: postgres.load_rows(q), repeats)
                emulator.requests.clear()
                sb_seconds, sb_rows = median_time(lambda q=query: supabase.load_rows(q), repeats)
                requests = len(emulator.requests) // repeats
                same = sorted(pg_rows["id"].tolist()) == sorted(sb_rows["id"].tolist())
                reads.append({"read": label, "rows": len(sb_rows), "requests": requests, "same_rows": same,
                              "postgres_seconds": pg_seconds, "supabase_seconds": sb_seconds,
                              "ms_per_request": 1000 * sb_seconds / max(requests, 1)})
            pg_summary, _ = median_time(lambda: postgres.summarize_window(window, schema), repeats)
            emulator.requests.clear()
            sb_summary, _ = median_time(lambda: supabase.summarize_window(window, schema), repeats)
            reads.append({"read": "summary (rpc)", "rows": 0, "requests": len(emulator.requests) // repeats,
                          "same_rows": True, "postgres_seconds": pg_summary, "supabase_seconds": sb_summary,
                          "ms_per_request": 1000 * sb_summary})
            return {"rows": rows, "page_size": page_size, "repeats": repeats, "reads": reads}
        finally:
            emulator.close()


def table(result: dict[str, Any]) -> str:
    head = " | ".join(f"+ network at {rtt} ms/request (s)" for rtt in ROUND_TRIPS_MS)
    lines = [f"| read | rows | requests | PostgresStore, one COPY (s) | SupabaseStore via emulator (s) | ratio | "
             f"ms per request | {head} |",
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(ROUND_TRIPS_MS)]
    for r in result["reads"]:
        extra = " | ".join(f"{r['supabase_seconds'] + r['requests'] * rtt / 1000:.1f}" for rtt in ROUND_TRIPS_MS)
        lines.append(f"| {r['read']} | {r['rows']:,} | {r['requests']} | {r['postgres_seconds']:.3f} | "
                     f"{r['supabase_seconds']:.3f} | {r['supabase_seconds'] / r['postgres_seconds']:.1f}x | "
                     f"{r['ms_per_request']:.1f} | {extra} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.supabase_pages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="rows in the window")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="supabase_pages")
    args = parser.parse_args(argv)
    begin_benchmark()
    with embedded_server() as (server_url, _):
        results = [bench(server_url, rows, args.repeats, args.page_size) for rows in args.rows]
    for result in results:
        print(f"\n{result['rows']:,} rows in the window, {result['page_size']:,} rows per page\n")
        print(table(result))
    print(f"results: {save(args.output, {'results': results})}")
    return 0 if all(r["same_rows"] for result in results for r in result["reads"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
