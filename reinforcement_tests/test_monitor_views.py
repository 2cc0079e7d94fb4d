"""The Monitoring page's pure parts: run rows as views, the gate's card, the fingerprint, the charts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from reinforcement_assets.monitor.charts import run_chart, time_chart
from reinforcement_assets.monitor.security import Access
from reinforcement_assets.monitor.views import as_json, fingerprint, run_view

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


def row(**overrides):
    base = {"dagster_run_id": "r1", "status": "completed", "source": "decay_triggered", "dataset_size": 120,
            "started_at": T0.isoformat(), "completed_at": (T0 + timedelta(seconds=42)).isoformat(),
            "metrics": {"accuracy": 0.9, "precision": 0.8, "recall": 0.7, "f1": 0.75, "promoted": False,
                        "champion": {"accuracy": 0.6, "precision": 0.5, "recall": 0.4, "f1": 0.45},
                        "gate": {"promote": False, "metric": "balanced_accuracy", "margin": 0.01,
                                 "significance_level": 0.05, "reason": "no candidate passed",
                                 "candidates": [{"name": "refit", "test": "paired_bootstrap", "p_value": 0.2,
                                                 "adjusted_p_value": 0.4, "delta": -0.01, "ci_low": -0.03,
                                                 "ci_high": 0.02, "holdout_rows": 300, "passed": False}]}}}
    return {**base, **overrides}


def test_a_run_row_from_postgrest_json_becomes_the_view_the_page_shows():
    view = run_view(row())
    assert (view.source_label, view.duration_seconds, view.dataset_size) == ("decay", 42.0, 120)
    assert view.challenger == {"accuracy": 0.9, "precision": 0.8, "recall": 0.7, "f1": 0.75}
    assert view.champion["f1"] == 0.45 and view.promoted is False
    card = view.gate
    assert not card.promoted and card.headline.startswith("Champion kept")
    assert (card.metric, card.margin, card.holdout_rows) == ("balanced_accuracy", 0.01, 300)
    (candidate,) = card.candidates
    assert (candidate.test, candidate.ci_low, candidate.adjusted_p_value) == ("paired_bootstrap", -0.03, 0.4)
    assert as_json(view)["started_at"] == T0.isoformat()


def test_a_run_that_never_reached_the_gate_or_wrote_odd_metrics_still_shows():
    view = run_view({"status": "running", "source": "auto_daily", "metrics": {"accuracy": "high", "champion": 3}})
    assert view.gate is None and view.challenger["accuracy"] is None and view.champion["accuracy"] is None
    assert view.source_label == "schedule" and view.duration_seconds is None and view.promoted is None


def test_the_fingerprint_changes_with_a_status_and_only_then():
    a = [run_view(row())]
    assert fingerprint(a, [], "v1") == fingerprint([run_view(row())], [], "v1")
    assert fingerprint(a, [], "v1") != fingerprint([run_view(row(status="failed"))], [], "v1")
    assert fingerprint(a, [], "v1") != fingerprint(a, [], "v2")


def test_charts_place_days_and_markers_inside_the_period_and_break_at_gaps():
    start, end = T0 - timedelta(days=7), T0
    values = [(start + timedelta(days=i, hours=12), None if i == 3 else 0.5 + i / 20) for i in range(7)]
    chart = time_chart("accuracy", {"accuracy": ("accuracy", values)}, start, end,
                       [(T0 - timedelta(days=1), "decay", "decay run"), (T0 + timedelta(days=1), "run", "later")])
    (series,) = chart.series
    assert len(series.points) == 6 and len(series.segments) == 2  # the missing day breaks the line
    assert all(chart.plot_left <= p.x <= chart.plot_right for p in series.points)
    higher, lower = series.points[-1], series.points[0]
    assert higher.y < lower.y  # SVG's y grows downwards
    assert [m.kind for m in chart.markers] == ["decay"]  # the marker after `end` is left out
    assert [label for _, label in chart.x_labels][:2] == ["Nov 25", "Nov 26"]


def test_run_chart_marks_promotions():
    chart = run_chart("runs", {"challenger": ("challenger", [0.5, 0.9])}, ["a", "b"], [False, True])
    assert [m.label for m in chart.markers] == ["promoted b"] and not chart.empty


def test_access_names_and_tokens():
    loopback = Access.for_bind("127.0.0.1", 8765, None)
    assert loopback.host_allowed("localhost:8765") and loopback.host_allowed("[::1]:8765")
    assert not loopback.host_allowed("attacker.example:8765") and not loopback.host_allowed(None)
    token = Access.for_bind("10.0.0.5", 80, "t" * 20)
    assert token.host_allowed("10.0.0.5") and not token.host_allowed("localhost")
    assert token.session_value() != token.token and len(token.session_value()) == 64
