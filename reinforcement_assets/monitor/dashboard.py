"""What one look at the Monitoring page reads from the store: a handful of indexed queries and the
hourly counts, never the prediction log itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..backends.store import Store
from .charts import Chart, run_chart, time_chart
from .views import RequestView, RunView, VersionView, fingerprint, request_view, run_view, version_view

RUNS_SHOWN = 15
RUNS_CHARTED = 60
REQUESTS_SHOWN = 15
VERSIONS_SHOWN = 15


@dataclass(frozen=True)
class Live:
    """What changes while a page is open: the latest runs and requests, and the champion."""

    runs: list[RunView]
    requests: list[RequestView]
    champion: VersionView | None
    fingerprint: str


@dataclass(frozen=True)
class Dashboard:
    live: Live
    versions: list[VersionView]
    charts: list[Chart]
    backend: dict[str, str]
    refreshed_at: datetime


def live(store: Store, runs: int = RUNS_SHOWN) -> Live:
    with store.session():
        found = store.latest_runs(runs)
        requests = [request_view(r) for r in store.latest_requests(REQUESTS_SHOWN)]
        champion = store.champion()
    rows = [run_view(r) for r in found]
    return Live(runs=rows, requests=requests, champion=version_view(champion) if champion else None,
                fingerprint=fingerprint(rows[:RUNS_SHOWN], requests, champion.version if champion else None))


def dashboard(store: Store, lookback_days: float, now: datetime | None = None) -> Dashboard:
    now = now or datetime.now(timezone.utc)
    with store.session():  # one connection for the whole look
        current = live(store, RUNS_CHARTED)
        charted = current.runs
        shown = Live(runs=charted[:RUNS_SHOWN], requests=current.requests, champion=current.champion,
                     fingerprint=current.fingerprint)
        versions = [version_view(v) for v in store.model_versions(VERSIONS_SHOWN)]
        drawn = charts(store, charted, versions, now, lookback_days)
    return Dashboard(live=shown, versions=versions, charts=drawn, backend=store.describe(), refreshed_at=now)


def charts(store: Store, runs: list[RunView], versions: list[VersionView], now: datetime,
           lookback_days: float) -> list[Chart]:
    """Accuracy and the share of outcomes known per day of the window, with runs, promotions and decay
    triggers marked; the challenger's and champion's accuracy over the latest runs."""
    end = now
    start = (now - timedelta(days=lookback_days)).replace(hour=0, minute=0, second=0, microsecond=0)
    accuracy = [(datetime.combine(d.day, datetime.min.time(), timezone.utc) + timedelta(hours=12), d.accuracy)
                for d in store.daily_accuracy(start, end)]
    coverage = [(datetime.combine(d.day, datetime.min.time(), timezone.utc) + timedelta(hours=12), d.share)
                for d in store.outcome_coverage(start, end)]
    markers = [(r.created_at, "decay" if r.source == "decay_triggered" else "run", f"{r.source_label} run: {r.status}")
               for r in runs if r.created_at is not None]
    markers += [(v.promoted_at, "promotion", f"promoted {v.version}") for v in versions if v.promoted_at is not None]
    history = [r for r in reversed(runs) if r.challenger.get("accuracy") is not None]
    return [
        time_chart("Accuracy per day", {"accuracy": ("accuracy", accuracy)}, start, end, markers),
        time_chart("Outcomes known, by day of prediction", {"known": ("coverage", coverage)}, start, end, markers),
        run_chart("Accuracy over runs", {"challenger": ("challenger", [r.challenger["accuracy"] for r in history]),
                                         "champion": ("champion", [r.champion["accuracy"] for r in history])},
                  [f"{r.created_at:%b %d %H:%M}" if r.created_at else "?" for r in history],
                  [bool(r.promoted) for r in history]),
    ]
