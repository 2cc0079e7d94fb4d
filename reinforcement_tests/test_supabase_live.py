"""The Supabase backend against a real Supabase project; skipped unless SUPABASE_URL is set.

Run it against a project with the migrations applied (`supabase db push`) and the private bucket:

    SUPABASE_URL=https://<ref>.supabase.co SUPABASE_SERVICE_KEY=<service_role key> \\
    SUPABASE_ANON_KEY=<anon key, optional> .venv/bin/python -m pytest reinforcement_tests/test_supabase_live.py -v

It writes only rows dated in 2001 with prediction ids, run ids and object paths starting with a
random `live-test-…` prefix, and deletes them afterwards; it never touches the champion.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import pandas as pd
import pytest

from reinforcement_assets.backends.store import Period, StoreError, Window, period_query
from reinforcement_assets.backends.supabase_storage import SupabaseArtifactStorage
from reinforcement_assets.backends.supabase_store import SupabaseStore

pytestmark = [
    pytest.mark.supabase_live,
    pytest.mark.skipif(not os.environ.get("SUPABASE_URL"), reason="SUPABASE_URL is not set: no Supabase project"),
]

END = datetime(2001, 1, 8, tzinfo=timezone.utc)  # far from any real traffic
NAMES = ("x0", "x1", "x2")


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"live-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def store() -> SupabaseStore:
    return SupabaseStore(url=os.environ["SUPABASE_URL"], service_key=os.environ["SUPABASE_SERVICE_KEY"])


@pytest.fixture(scope="module")
def storage(prefix) -> SupabaseArtifactStorage:
    return SupabaseArtifactStorage(url=os.environ["SUPABASE_URL"], service_key=os.environ["SUPABASE_SERVICE_KEY"],
                                   bucket=os.environ.get("SUPABASE_BUCKET", "reinforcement-artifacts"), prefix=prefix)


@pytest.fixture(scope="module")
def log(store, prefix):
    """2,500 evaluated rows (more than the 1,000-row cap) over the week before END, deleted afterwards."""
    rng = np.random.default_rng(0)
    n = 2_500
    evaluated = [END - timedelta(seconds=int(s)) for s in rng.integers(1, 7 * 86_400, n)]
    frame = pd.DataFrame({
        "prediction_id": [f"{prefix}-{i}" for i in range(n)],
        "model_version": "live-test",
        "features": [{name: float(v) for name, v in zip(NAMES, row)} for row in rng.normal(size=(n, 3))],
        "predicted_label": rng.choice(["a", "b"], n),
        "actual_label": rng.choice(["a", "b"], n),
        "confidence": rng.uniform(0.5, 1.0, n),
        "predicted_at": [t - timedelta(minutes=5) for t in evaluated],
        "evaluated_at": evaluated,
    })
    assert store.insert_evaluations(frame) == n
    yield frame
    store.client.table("prediction_evaluations").delete().like("prediction_id", f"{prefix}-%").execute()


def test_reads_past_the_row_cap_and_counts_in_sql(store, log):
    window = Window.ending_at(END, lookback_days=7, holdout_share=0.2)
    summary = store.summarize_window(window, NAMES)
    assert summary.rows == len(log) and summary.rejected == {}
    assert summary.correct == int((log["predicted_label"] == log["actual_label"]).sum())
    query = period_query(Period(window.start, window.end), NAMES, limit=10_000)
    rows = store.load_rows(query)
    assert len(rows) == store.count_rows(query) == len(log) > 1_000
    assert rows["prediction_id"].is_unique and rows["evaluated_at"].is_monotonic_decreasing
    assert store.insert_evaluations(log) == 0


def test_runs_are_written_and_read_back(store, prefix):
    run_id = f"{prefix}-run"
    try:
        store.start_run(run_id, "manual")
        store.update_run(run_id, status="completed", metrics={"accuracy": 0.5})
        run = store.get_run(run_id)
        assert run["status"] == "completed" and run["metrics"] == {"accuracy": 0.5} and run["completed_at"]
    finally:
        store.client.table("model_retraining_runs").delete().eq("dagster_run_id", run_id).execute()


def test_artifacts_round_trip_and_their_signed_url_opens(storage):
    stored = storage.write("logs/live.log", b"live test\n", "text/plain")
    try:
        assert storage.read(stored.path, stored.sha256) == b"live test\n"
        assert httpx.get(stored.uri, timeout=30).content == b"live test\n"
    finally:
        storage.client.storage.from_(storage.bucket).remove([storage.object_key(stored.path)])


def test_the_anon_key_reads_nothing():
    anon_key = os.environ.get("SUPABASE_ANON_KEY")
    if not anon_key:
        pytest.skip("SUPABASE_ANON_KEY is not set")
    anonymous = SupabaseStore(url=os.environ["SUPABASE_URL"], service_key=anon_key, max_attempts=1)
    with pytest.raises(StoreError, match="42501|permission denied"):
        anonymous.champion()
