"""Print the Markdown tables of every saved result (benchmarks/results/*.json), for docs/benchmarks.md.

    python -m benchmarks.report
"""

from __future__ import annotations

import json
from pathlib import Path

from reinforcement_assets.core.learners import BUILT_IN_LEARNERS

from . import drift, drift_sweep, migration, monitor, scale, sensor_tick, supabase_pages, write_cost
from .machine import RESULTS_DIR, machine_line


def load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def section(title: str, record: dict, body: str) -> str:
    return f"### {title}\n\nMeasured {record['measured_at']} on {machine_line(record['machine'])}.\n\n{body}\n"


def main() -> int:
    parts = []
    if record := load("scale"):
        parts.append(section("Scale", record, scale.tables(record["results"])))
    if record := load("scale_categorical"):
        parts.append(section("Scale with 2 of the 10 features categorical", record, scale.tables(record["results"])))
    if record := load("migration"):
        parts.append(section("The feature-types migration on a filled log", record, migration.table(record["results"])))
    if record := load("write_cost"):
        parts.append(section("Write cost of the hourly counts", record, write_cost.table(record)))
    if record := load("supabase_pages"):
        body = "\n\n".join(f"{r['rows']:,} rows in the window:\n\n{supabase_pages.table(r)}" for r in record.get("results", [record]))
        parts.append(section("Supabase pagination", record, body))
    if record := load("sensor_tick"):
        parts.append(section("Request sensor tick", record, sensor_tick.table(record["results"])))
    if record := load("monitor"):
        parts.append(section("The Monitoring page", record, monitor.table(record["result"])))
    if record := load("drift"):
        parts.append(section("Drift recovery", record, drift.table(record["aggregate"], len(record["per_seed"]))))
    if record := load("drift_byom"):
        parts.append(section("Drift recovery with a user's HGB champion", record,
                             drift.table(record["aggregate"], len(record["per_seed"]))))
    learners = {name: load(f"drift_learner_{name}") for name in BUILT_IN_LEARNERS}
    if all(learners.values()):
        record = learners[BUILT_IN_LEARNERS[0]]
        parts.append(section("Choosing the learner", record,
                             drift.learner_table({n: r["aggregate"] for n, r in learners.items()})))
    if record := load("drift_sweep"):
        parts.append(section("Settings sweep", record, drift_sweep.table(record["settings"])))
    print("\n".join(parts) if parts else f"no results in {Path(RESULTS_DIR)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
