"""Small-size runs of every benchmark in `benchmarks/`: they run end to end and report sane figures.

No timing is asserted (the machine is shared); the real runs and their figures are in
docs/benchmarks.md. The Supabase benchmark talks to the test emulator of Supabase's HTTP APIs
(`supabase_transport.py`, an `httpx.MockTransport` over the embedded PostgreSQL), since Supabase's
servers cannot run here.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import drift, migration, monitor, race, scale, sensor_tick, supabase_pages, write_cost
from benchmarks.machine import PeakMemory, machine, save


def needs_bench_extra():
    """river and matplotlib come with the `bench` extra: `pip install -e ".[test,bench]"`."""
    pytest.importorskip("river")
    pytest.importorskip("matplotlib")


def test_machine_is_recorded_with_every_result(tmp_path, monkeypatch):
    info = machine()
    assert info["cores"] >= 1 and info["memory_gib"] > 0 and info["cpu_model"]
    monkeypatch.setattr("benchmarks.machine.RESULTS_DIR", tmp_path)
    path = save("probe", {"value": 1})
    assert path.parent == tmp_path and '"cores"' in path.read_text() and '"value": 1' in path.read_text()


def test_peak_memory_sees_a_short_spike():
    with PeakMemory() as memory:
        before = memory.peak()
        spike = np.ones(40_000_000)  # 320 MB, freed at once
        spike[::4096] = 2.0
        del spike
    assert memory.peak() - before > 250 * 2**20


def test_scale_cycle_and_floor(server_url, tmp_path):
    result = scale.bench_size(server_url, 4_000, repeats=1, work_dir=tmp_path)
    assert result["mode"] == "update"
    assert 0.95 * 4_000 < result["steps"]["evaluation_log"]["rows"] < 4_000  # ~1.2 % broken rows set aside
    assert result["steps"]["error_samples"]["rows"] > 0
    assert result["floor_seconds"] > 0 and result["to_dataset_seconds"] > 0
    assert all(step["peak_rss"] > 0 for step in result["steps"].values())
    assert result["decay_count_seconds"] > 0 and result["decay_count_row_by_row_seconds"] > 0
    assert result["decay_confusion_seconds"] > 0 and "its confusion counts" in scale.tables([result])
    assert "| 4,000 |" in scale.tables([result]) and "decay sensor's count" in scale.tables([result])
    pytest.importorskip("matplotlib")
    assert all(png.stat().st_size > 0 for png in scale.plot([result], out_dir=tmp_path))


def test_scale_with_categorical_features(server_url, tmp_path):
    result = scale.bench_size(server_url, 4_000, repeats=1, work_dir=tmp_path, categorical=2)
    kinds = {f["name"]: f["kind"] for f in result["feature_schema"]}
    assert kinds["x8"] == kinds["x9"] == "categorical" and kinds["x0"] == "numeric"
    assert result["mode"] == "update" and 0.95 * 4_000 < result["steps"]["evaluation_log"]["rows"] < 4_000


def test_the_feature_types_migration_on_a_filled_log(server_url):
    result = migration.bench_size(server_url, 5_000)
    assert result["applied"] == [migration.MIGRATION] and result["migration_seconds"] > 0
    assert result["longest_writer_wait"] > 0 and result["feature_type_sets"] >= 3
    assert set(result["reject_reasons"]) <= {"usable", "label_missing", "confidence_missing",
                                             "confidence_out_of_range", "features_empty"}
    assert "| 5,000 |" in migration.table([result])


def test_drift_strategies_on_every_stream(tmp_path):
    needs_bench_extra()
    # The HGB ones and river's forest (slow, row by row): next test, one stream.
    quick = [s for s in drift.STRATEGIES if not s.startswith("hgb_") and s not in ("race_hgb", "river_arf")]
    results = drift.run(drift.STREAMS, days=5, rows_per_day=300, pretrain_rows=1_500, drift_day=3, seeds=[0],
                        strategies=quick)
    agg = drift.aggregate(results)
    assert set(agg) == set(drift.STREAMS)
    for stream, strategies in agg.items():
        assert set(strategies) == set(quick)
        for name, figures in strategies.items():
            assert len(figures["accuracy"]) == 5 and all(0 <= a <= 1 for a in figures["accuracy"])
        assert strategies["never"]["promotions"] == 0
        assert strategies["scratch"]["promotions"] == 5  # deployed every day (one seed)
    # The abrupt drift on day 3 hurts the model that never retrains.
    never = agg["abrupt"]["never"]["accuracy"]
    assert never[3] < never[0] - 0.1
    drift.plot(agg, tmp_path / "drift.png")
    assert (tmp_path / "drift.png").stat().st_size > 0
    assert "| abrupt | default |" in drift.table(agg, 1)


def test_the_race_benchmark_reports_every_target(tmp_path, monkeypatch):
    needs_bench_extra()
    monkeypatch.setattr("benchmarks.machine.RESULTS_DIR", tmp_path)
    monkeypatch.setattr(race, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(race, "DOCS_DIR", tmp_path)
    monkeypatch.setattr(race, "COMMON", {"days": 6, "rows_per_day": 300, "pretrain_rows": 1_500, "drift_day": 2,
                                         "seeds": (0,)})
    monkeypatch.setattr(race, "RUNS", {
        "race_delay0": {"streams": ("abrupt", "fraud"), "strategies": ("default", "scratch", "race_hgb", "hgb_daily",
                                                                       "river_arf")},
        "race_fraud_macro_f1": {"streams": ("fraud",), "strategies": ("default", "hgb_daily"),
                                "params": {"gate_metric": "macro_f1", "label_delay_days": 1}}})
    race.run_all(["race_delay0", "race_fraud_macro_f1"])
    assert (tmp_path / "race_accuracy.png").stat().st_size > 0
    table = race.targets()
    assert len(table.splitlines()) == 2 + 3 * 2 + 2 and "| fraud (macro_f1) | minority recall" in table
    saved = race.load("race_fraud_macro_f1")[0]["fraud"]["default"]
    assert 0 <= saved["mean_minority_recall_after_drift"] <= 1 and len(saved["accuracy"]) == 6


def test_a_users_hgb_champion_against_a_daily_hgb_refit():
    results = drift.run(["abrupt"], days=4, rows_per_day=300, pretrain_rows=1_500, drift_day=2, seeds=[0],
                        strategies=["never", "scratch", "hgb_loop", "hgb_daily"])
    strategies = results["0"]["abrupt"]["strategies"]
    assert strategies["hgb_daily"]["promotions"] == 4 and strategies["hgb_loop"]["retrains"] >= 1
    never = strategies["never"]["accuracy"]
    assert never[2] < never[0] - 0.1
    hgb = strategies["hgb_loop"]
    assert hgb["accuracy"][0] != never[0]  # a different champion: the user's HGB, not the default SGD
    assert hgb["mean_accuracy_after_drift"] > strategies["never"]["mean_accuracy_after_drift"]


def test_drift_default_through_the_real_job(server_url, tmp_path):
    results = drift.run(["abrupt"], days=3, rows_per_day=300, pretrain_rows=1_500, drift_day=2, seeds=[0],
                        strategies=["never", "default"], server_url=server_url, work_dir=tmp_path)
    default = results["0"]["abrupt"]["strategies"]["default"]
    assert len(default["accuracy"]) == 3 and default["retrains"] >= 1
    assert default["cycle_seconds"] > default["train_seconds"] > 0


def test_days_to_recover_counts_until_back_for_good():
    assert drift.days_to_recover([0.9, 0.5, 0.7, 0.88, 0.9], level=0.9, drift_day=2) == 2
    assert drift.days_to_recover([0.9, 0.5, 0.9, 0.5, 0.9], level=0.9, drift_day=2) == 3  # back, out, back
    assert drift.days_to_recover([0.9, 0.5, 0.6], level=0.9, drift_day=2) is None
    assert drift.days_to_recover([0.9, 0.89], level=0.9, drift_day=2) == 0
    assert drift.days_to_track([0.9, 0.5, 0.8], [0.9, 0.6, 0.8], drift_day=2) == 1


def test_supabase_pagination(server_url):
    result = supabase_pages.bench(server_url, 3_000, repeats=1, page_size=1000)
    reads = {r["read"]: r for r in result["reads"]}
    assert all(r["same_rows"] for r in result["reads"])
    holdout = reads["holdout"]
    assert holdout["rows"] > 0 and holdout["requests"] >= holdout["rows"] // 1000 + 1
    assert "| holdout |" in supabase_pages.table(result)


def test_sensor_tick_against_history(server_url):
    results = sensor_tick.bench(server_url, [0, 500], repeats=2)
    assert [r["history"] for r in results] == [0, 500]
    assert all(r["tick_with_pending_seconds"] > 0 and r["idle_tick_seconds"] > 0 for r in results)
    assert "| 500 |" in sensor_tick.table(results)


def test_write_cost_with_and_without_the_counts(server_url):
    result = write_cost.bench(server_url, bulk_rows=2_000, single_rows=40, repeats=1)
    assert [w["write"] for w in result["writes"]] == list(write_cost.WRITES)
    assert all(w["with_counts_seconds"] > 0 and w["without_counts_seconds"] > 0 for w in result["writes"])
    assert "| bulk insert | 2,000 | 1 |" in write_cost.table(result)


def test_the_monitoring_page_with_a_history_and_its_live_latency(server_url, tmp_path):
    result = monitor.bench(server_url, tmp_path, predictions=4_000, runs=50, requests=10, repeats=2,
                           live_repeats=1, poll_seconds=0.2)
    assert (result["predictions"], result["runs"], result["requests"]) == (4_000, 50, 11)  # + 1 live request
    assert result["metrics_bytes"] > 0 and result["real_cycle_seconds"] > 0
    assert {"/", "/partials/dashboard", "/api/status", "/api/changes", "/api/runs?limit=20"} <= set(result["routes"])
    assert all(r["n"] == 2 and 0 < r["median_ms"] <= r["max_ms"] for r in result["routes"].values())
    live = result["live"]
    assert all(len(v) == 1 and 0 < v[0] < 10 for v in live["samples"].values())
    assert "| `/api/changes` |" in monitor.table(result) and "Live latency (poll every 0.2 s" in monitor.table(result)
