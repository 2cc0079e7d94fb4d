"""The Monitoring page and its API with a year of history: 10,000 runs and 1 M predictions in the window.

    python -m benchmarks.monitor --predictions 1000000 --runs 10000 --repeats 30

A fresh database is filled in SQL with a week of evaluated predictions ending now (scale.py's fill), a
champion is registered and one real `retraining_job` cycle runs over that week; its row in
`model_retraining_runs` (the metrics jsonb a real run writes: scores, gate, candidates, window) is
copied `--runs` times over the past year by `generate_series`, with `--requests` requests beside them.
The page is served by uvicorn on a free loopback port as `reinforcement monitor` serves it, and real HTTP
GETs (one keep-alive httpx client) of each route are timed, interleaved, after a warm-up: medians and
p90. Baselines timed the same way in the same process: a static file through the same server and
middleware (the HTTP floor) and the store's `latest_runs(1)` (one indexed query on a fresh connection).

Live latency: a client does what monitor.js does (poll `/api/changes` every `poll_seconds`, fetch
`/partials/dashboard` when the fingerprint changed); the benchmark changes a request's or a run's status
in the database at a random moment and times until a fragment the client fetched shows the new status.
Results: `benchmarks/results/monitor.json`.
"""

from __future__ import annotations

import argparse
import random
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg.types.json import Jsonb

from reinforcement_assets import settings
from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.backends.store import Window
from reinforcement_assets.demo import register_champion
from reinforcement_assets.monitor import Access, MonitorSettings, create_app

from .machine import begin_benchmark, embedded_server, save, scratch_database
from .scale import CHAMPION, champion_model, fill, run_cycle

BUDGET_SECONDS = 0.200


def fill_runs(url: str, template: dict[str, Any], runs: int, end: datetime, days: float = 365) -> float:
    """`runs` copies of a real run's row, spread evenly over the `days` before `end` (a few failed or
    skipped, as in a real history); seconds."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            insert into public.model_retraining_runs
                (source, dataset_size, fine_tune_flag, status, metrics, started_at, completed_at, created_at,
                 dagster_run_id, model_version, error_message)
            select (array['auto_daily', 'manual', 'decay_triggered'])[1 + g %% 3], %(size)s, %(fine)s,
                   case when g %% 50 = 0 then 'failed' when g %% 37 = 0 then 'skipped' else 'completed' end,
                   %(metrics)s, at, at + interval '3 minutes', at,
                   'bench-run-' || g, 'bench-v' || g,
                   case when g %% 50 = 0 then 'benchmark: a failed run' end
            from generate_series(1, %(runs)s) as g
            cross join lateral (select %(end)s::timestamptz - (%(runs)s - g + 1) * %(step)s::interval as at) as t
            """,
            {"size": template["dataset_size"], "fine": template["fine_tune_flag"], "metrics": Jsonb(template["metrics"]),
             "runs": runs, "end": end, "step": timedelta(days=days) / runs})
        conn.execute("vacuum (analyze) public.model_retraining_runs")
    return time.perf_counter() - started


def fill_requests(url: str, requests: int, end: datetime, days: float = 365) -> None:
    """`requests` finished requests over the `days` before `end`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            insert into public.model_retraining_requests (reason, priority, status, created_at)
            select 'benchmark request ' || g, (array['low', 'normal', 'high'])[1 + g %% 3],
                   case when g %% 10 = 0 then 'cancelled' else 'completed' end,
                   %(end)s::timestamptz - (%(n)s - g + 1) * %(step)s::interval
            from generate_series(1, %(n)s) as g
            """, {"n": requests, "end": end, "step": timedelta(days=days) / requests})
        conn.execute("vacuum (analyze) public.model_retraining_requests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(store: PostgresStore, artifacts: LocalArtifactStorage, poll_seconds: float) -> Iterator[str]:
    """The page served by uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    app = create_app(store, artifacts, Access.for_bind("127.0.0.1", port, None),
                     MonitorSettings(poll_seconds=poll_seconds))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the monitor did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def time_routes(client: httpx.Client, targets: dict[str, Any], repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds of each target (a path to GET, or a callable), interleaved so that load hits all alike."""
    def once(target) -> float:
        started = time.perf_counter()
        if callable(target):
            target()
        else:
            response = client.get(target)
            response.raise_for_status()
        return time.perf_counter() - started

    for _ in range(warmup):
        for target in targets.values():
            once(target)
    times: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(repeats):
        for name, target in targets.items():
            times[name].append(once(target))
    return times


def summarize(times: dict[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    floor = statistics.median(times[baseline])
    return {name: {"median_ms": 1e3 * statistics.median(t), "p90_ms": 1e3 * p90(t), "max_ms": 1e3 * max(t),
                   "over_baseline": statistics.median(t) / floor, "n": len(t)} for name, t in times.items()}


class PageClient:
    """What monitor.js does, in a thread: poll /api/changes, fetch the fragment when the fingerprint moved."""

    def __init__(self, base: str, poll_seconds: float):
        self.client = httpx.Client(base_url=base, timeout=30)
        self.poll_seconds = poll_seconds
        self.fragment, self.fetched_at = self.client.get("/partials/dashboard").text, time.perf_counter()
        self.fingerprint = re.search(r'data-fingerprint="([^"]+)"', self.fragment).group(1)
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            if self.client.get("/api/changes").json()["fingerprint"] == self.fingerprint:
                continue
            fragment = self.client.get("/partials/dashboard").text
            with self.changed:
                self.fragment, self.fetched_at = fragment, time.perf_counter()
                self.fingerprint = re.search(r'data-fingerprint="([^"]+)"', fragment).group(1)
                self.changed.notify_all()

    def wait_for(self, pattern: str, since: float, timeout: float = 30) -> float:
        """Seconds from `since` until a fragment fetched after it matches `pattern`."""
        deadline = time.perf_counter() + timeout
        with self.changed:
            while not (self.fetched_at > since and re.search(pattern, self.fragment)):
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise RuntimeError(f"the page did not show {pattern!r} within {timeout} s")
                self.changed.wait(left)
            return self.fetched_at - since

    def __enter__(self) -> PageClient:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()


def shows(row: str, key: str, status: str) -> str:
    """A pattern for the dashboard's table row `key` (a request id or a run id) with its status badge."""
    return rf'data-{row}-id="{re.escape(key)}">\s*<td><span class="badge badge-{status}"'


def live_latency(store: PostgresStore, base: str, poll_seconds: float, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Seconds from a status change committed in the database to the page's fragment showing it: a new
    request (pending), its claim (processing), and the latest run going running -> completed."""
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {"request_queued": [], "request_claimed": [], "run_finished": []}
    (latest,) = store.latest_runs(1)
    run_id = latest["dagster_run_id"]
    with PageClient(base, poll_seconds) as page, psycopg.connect(store.url, autocommit=True) as conn:
        for i in range(repeats):
            time.sleep(rng.uniform(0, poll_seconds))  # a random phase against the client's polling
            changed = time.perf_counter()
            queued = store.create_request(f"benchmark live {i}")
            samples["request_queued"].append(page.wait_for(shows("request", queued.id, "pending"), changed))
            time.sleep(rng.uniform(0, poll_seconds))
            changed = time.perf_counter()
            (claimed,) = store.claim_requests(1, "benchmark")
            samples["request_claimed"].append(page.wait_for(shows("request", claimed.id, "processing"), changed))
            conn.execute("update public.model_retraining_requests set status = 'completed' where id = %s",
                         (claimed.id,))
            conn.execute("update public.model_retraining_runs set status = 'running' where dagster_run_id = %s",
                         (run_id,))
            page.wait_for(shows("run", run_id, "running"), changed)
            time.sleep(rng.uniform(0, poll_seconds))
            changed = time.perf_counter()
            conn.execute("update public.model_retraining_runs set status = 'completed' where dagster_run_id = %s",
                         (run_id,))
            samples["run_finished"].append(page.wait_for(shows("run", run_id, "completed"), changed))
    every = [s for values in samples.values() for s in values]
    return {"poll_seconds": poll_seconds, "repeats": repeats, "samples": samples,
            "median_seconds": statistics.median(every), "p90_seconds": p90(every), "max_seconds": max(every),
            **{f"{k}_median_seconds": statistics.median(v) for k, v in samples.items()}}


def prepare(url: str, work_dir: Path, predictions: int, runs: int, requests: int) -> tuple[PostgresStore, LocalArtifactStorage, dict]:
    """Fill the log, register a champion, run one real cycle, and copy its run row into a year of history."""
    end = datetime.now(timezone.utc)
    window = Window.ending_at(end, settings.DEFAULT_LOOKBACK_DAYS, settings.HOLDOUT_SHARE)
    timings = {"fill_predictions_seconds": fill(url, predictions, window)}
    store = PostgresStore(database_url=url)
    artifacts = LocalArtifactStorage(base_dir=str(work_dir / "monitor_artifacts"))
    register_champion(store, artifacts, champion_model(), CHAMPION, "benchmark champion")
    resources = {"store": store, "artifacts": artifacts, "io_manager": ArtifactIOManager(storage=artifacts)}
    started = time.perf_counter()
    cycle = run_cycle(resources, window)
    timings["real_cycle_seconds"] = time.perf_counter() - started
    real = store.get_run(cycle["run_id"])
    if real is None or real["status"] != "completed":
        raise RuntimeError(f"the real cycle did not complete: {real and real['status']}")
    timings["fill_runs_seconds"] = fill_runs(url, real, runs - 1, end - timedelta(hours=1))
    fill_requests(url, requests, end - timedelta(hours=1))
    with psycopg.connect(url) as conn:
        (timings["metrics_bytes"],) = conn.execute(
            "select pg_column_size(metrics) from public.model_retraining_runs where dagster_run_id = %s",
            (cycle["run_id"],)).fetchone()
    return store, artifacts, {**timings, "real_run_id": cycle["run_id"]}


def bench(server_url: str, work_dir: Path, predictions: int, runs: int, requests: int, repeats: int,
          live_repeats: int, poll_seconds: float) -> dict[str, Any]:
    with scratch_database(server_url, "bench_monitor") as url:
        store, artifacts, prepared = prepare(url, work_dir, predictions, runs, requests)
        run_id = prepared["real_run_id"]
        with served(store, artifacts, poll_seconds) as base, httpx.Client(base_url=base, timeout=30) as client:
            routes = {"baseline: GET /static/monitor.css": "/static/monitor.css",
                      "baseline: store.latest_runs(1)": lambda: store.latest_runs(1),
                      "/": "/", "/partials/dashboard": "/partials/dashboard", "/api/status": "/api/status",
                      "/api/changes": "/api/changes", "/api/runs?limit=20": "/api/runs?limit=20",
                      f"/runs/{run_id}": f"/runs/{run_id}"}
            times = time_routes(client, routes, repeats)
            live = live_latency(store, base, poll_seconds, live_repeats) if live_repeats else None
        with psycopg.connect(url) as conn:
            counts = conn.execute("select (select count(*) from public.prediction_evaluations),"
                                  " (select count(*) from public.model_retraining_runs),"
                                  " (select count(*) from public.model_retraining_requests)").fetchone()
    measured = summarize(times, "baseline: GET /static/monitor.css")
    pages = {k: v for k, v in measured.items() if not k.startswith("baseline")}
    return {"predictions": counts[0], "runs": counts[1], "requests": counts[2], "repeats": repeats,
            **prepared, "routes": measured, "times": times, "live": live,
            "slowest_median_ms": max(v["median_ms"] for v in pages.values()),
            "slowest_p90_ms": max(v["p90_ms"] for v in pages.values()),
            "under_budget": all(v["p90_ms"] < 1e3 * BUDGET_SECONDS for v in pages.values())}


def table(result: dict[str, Any]) -> str:
    lines = ["| route | median (ms) | p90 (ms) | max (ms) | median / static-file baseline |", "|---|---:|---:|---:|---:|"]
    lines += [f"| `{name}` | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['max_ms']:.1f} | {r['over_baseline']:.1f}x |"
              for name, r in result["routes"].items()]
    live = result["live"]
    if live:
        lines += ["", f"Live latency (poll every {live['poll_seconds']:g} s, {live['repeats']} of each change): "
                      f"median {live['median_seconds']:.2f} s, p90 {live['p90_seconds']:.2f} s, max {live['max_seconds']:.2f} s "
                      f"(request queued {live['request_queued_median_seconds']:.2f} s, claimed "
                      f"{live['request_claimed_median_seconds']:.2f} s, run finished {live['run_finished_median_seconds']:.2f} s)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.monitor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--live-repeats", type=int, default=10, help="changes of each kind timed live (0: none)")
    parser.add_argument("--poll-seconds", type=float, default=MonitorSettings.poll_seconds)
    parser.add_argument("--data-dir", help="embedded PostgreSQL folder (default: a temporary one, removed after)")
    parser.add_argument("--output", default="monitor", help="results name (benchmarks/results/<name>.json)")
    args = parser.parse_args(argv)
    begin_benchmark()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with embedded_server(args.data_dir) as (server_url, work_dir):
        result = bench(server_url, work_dir, args.predictions, args.runs, args.requests, args.repeats,
                       args.live_repeats, args.poll_seconds)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{result['predictions']:,} predictions, {result['runs']:,} runs, {result['requests']:,} requests "
          f"(fill {result['fill_predictions_seconds']:.0f} s + {result['fill_runs_seconds']:.1f} s); "
          f"load average {' '.join(load_before)} -> {' '.join(load_after)}\n")
    print(table(result))
    path = save(args.output, {"load_average_before": load_before, "load_average_after": load_after,
                              "budget_ms": 1e3 * BUDGET_SECONDS, "result": result})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
