"""The hourly counts behind window statistics (20261126120000_evaluation_counts.sql), on the embedded
PostgreSQL: whatever is written to the log, statistics from the counts equal ones counted row by row."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import pytest

from reinforcement_assets.postgres_store import apply_migrations
from reinforcement_assets.store import Window

END = datetime(2026, 11, 20, 2, 17, 43, tzinfo=timezone.utc)
NAMES = ["x0", "x1"]

# The summary as it was before the counts: every row of the window read.
ROW_BY_ROW = """
select coalesce(reject_reason, case when features ?& %(names)s then null else 'feature_missing' end),
       count(*), count(*) filter (where is_correct),
       count(*) filter (where evaluated_at < %(holdout)s),
       count(*) filter (where evaluated_at < %(holdout)s and is_correct)
  from prediction_evaluations
 where actual_label is not null and evaluated_at >= %(start)s and evaluated_at < %(end)s
 group by 1
"""
FROM_COUNTS = "select * from summarize_evaluation_window(%(start)s, %(end)s, %(holdout)s, %(names)s)"
ACCURACY_ROW_BY_ROW = """
select count(*), count(*) filter (where is_correct) from prediction_evaluations
 where actual_label is not null and reject_reason is null and evaluated_at >= %(start)s and evaluated_at < %(end)s
   and (%(version)s::text is null or model_version = %(version)s)
"""
ACCURACY_FROM_COUNTS = "select * from evaluation_accuracy(%(start)s, %(end)s, %(version)s)"


def summaries(conn: psycopg.Connection, start: datetime, end: datetime, holdout: datetime) -> tuple[list, list]:
    params = {"start": start, "end": end, "holdout": holdout, "names": NAMES}
    return (sorted(conn.execute(FROM_COUNTS, params).fetchall(), key=str),
            sorted(conn.execute(ROW_BY_ROW, params).fetchall(), key=str))


def write_random_traffic(conn: psycopg.Connection, rng: np.random.Generator, statements: int = 12) -> None:
    """Inserts (some rows not yet evaluated, some broken), outcomes arriving later, relabels, deletes."""
    conn.execute("select setseed(%s)", (float(rng.uniform(-1, 1)),))
    for s in range(statements):
        conn.execute(
            """
            insert into prediction_evaluations
                (prediction_id, model_version, features, predicted_label, actual_label, confidence, evaluated_at)
            select %(s)s || '-' || i, case when i %% 5 = 0 then 'v2' when i %% 17 = 0 then null else 'v1' end,
                   case when i %% 23 = 0 then '{"x0": 1}'::jsonb
                        when i %% 29 = 0 then '{"x0": "n/a", "x1": 2}'::jsonb
                        else jsonb_build_object('x0', i, 'x1', -i) end,
                   'a', case when i %% 7 = 0 then null when i %% 3 = 0 then 'b' else 'a' end,
                   case when i %% 31 = 0 then 1.5 else 0.8 end,
                   case when i %% 7 = 0 then null
                        else %(end)s - make_interval(secs => %(spread)s * random()) end
              from generate_series(1, %(n)s) i
            """,
            {"s": f"s{s}", "n": int(rng.integers(50, 400)), "end": END + timedelta(hours=1),
             "spread": 9 * 86400},
        )
    conn.execute("update prediction_evaluations set actual_label = 'a',"
                 " evaluated_at = %s - make_interval(secs => 86400 * random())"
                 " where actual_label is null and random() < 0.5", (END,))
    conn.execute("update prediction_evaluations set actual_label = case actual_label when 'a' then 'b' else 'a' end"
                 " where random() < 0.1")
    conn.execute("update prediction_evaluations set evaluated_at = evaluated_at - interval '37 minutes'"
                 " where random() < 0.1")
    conn.execute("update prediction_evaluations set features = '{\"x1\": 3}' where random() < 0.02")
    conn.execute("update prediction_evaluations set model_version = 'v3' where random() < 0.05")
    conn.execute("delete from prediction_evaluations where random() < 0.1")


@pytest.mark.parametrize("time_zone", ["UTC", "Asia/Kolkata"])
def test_summaries_from_counts_equal_row_by_row_ones(database_url, time_zone):
    rng = np.random.default_rng(3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"set time zone '{time_zone}'")
        write_random_traffic(conn, rng)
        windows = [Window.ending_at(END, 7, 0.25), Window.ending_at(END.replace(minute=0, second=0), 7, 0.25)]
        for _ in range(40):  # ragged bounds, within one hour, empty, holdout outside the range
            start = END - timedelta(seconds=float(rng.uniform(0, 10 * 86400)))
            end = start + timedelta(seconds=float(rng.choice([0, rng.uniform(0, 3600), rng.uniform(0, 9 * 86400)])))
            holdout = start + (end - start) * float(rng.uniform(-0.2, 1.2))
            windows.append(Window(start, end, holdout))
        sizes, reasons = [], set()
        for window in windows:
            from_counts, row_by_row = summaries(conn, window.start, window.end, window.holdout_start)
            assert from_counts == row_by_row, window
            sizes.append(sum(n for _, n, *_ in row_by_row))
            reasons.update(reason for reason, *_ in row_by_row)
            for version in (None, "v1", "v2", "v3", "unknown"):
                params = {"start": window.start, "end": window.end, "version": version}
                assert conn.execute(ACCURACY_FROM_COUNTS, params).fetchone() == \
                    conn.execute(ACCURACY_ROW_BY_ROW, params).fetchone(), (window, version)
    assert sizes[0] > 1_000 and reasons == {None, "feature_missing", "feature_not_numeric", "confidence_out_of_range"}
    assert sum(size == 0 for size in sizes) >= 5 and sum(size > 100 for size in sizes) >= 10


def test_counts_follow_truncate_and_are_rebuilt_when_the_migration_runs_again(database_url):
    window = Window.ending_at(END, 7, 0.25)
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_random_traffic(conn, np.random.default_rng(4), statements=3)
        expected, _ = summaries(conn, window.start, window.end, window.holdout_start)
        conn.execute("update prediction_evaluation_counts set row_count = row_count + 5")  # damaged
        conn.execute("delete from supabase_migrations.schema_migrations where version = '20261126120000'")
    assert apply_migrations(database_url) == ["20261126120000"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert summaries(conn, window.start, window.end, window.holdout_start) == (expected, expected)
        conn.execute("truncate prediction_evaluations")
        assert conn.execute("select count(*) from prediction_evaluation_counts").fetchone() == (0,)


@pytest.mark.parametrize("statistic", ["summary", "accuracy"])
def test_statistics_read_whole_hours_from_the_counts_not_the_log(database_url, statistic):
    """A week of rows every 30 s: a statistic reads only the log rows of its two partial hours,
    from the window index alone (no heap, no sequential scan)."""
    start, end = END - timedelta(days=6, minutes=50), END
    rows = 2 * (6 * 24 * 60 + 50)  # two a minute
    query, params, expected = {
        "summary": (FROM_COUNTS, {"start": start, "end": end, "holdout": end, "names": NAMES},
                    [(None, rows, rows, rows, rows)]),
        "accuracy": (ACCURACY_FROM_COUNTS, {"start": start, "end": end, "version": "v1"}, [(rows, rows)]),
    }[statistic]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into prediction_evaluations (prediction_id, model_version, features, predicted_label,"
            " actual_label, confidence, evaluated_at) select 'p' || i, 'v1', jsonb_build_object('x0', i, 'x1', 1),"
            " 'a', 'a', 0.9, %s - make_interval(secs => 30 * i) from generate_series(1, 20000) i", (END,))
        conn.execute("vacuum analyze prediction_evaluations")
        with conn.transaction():
            result = conn.execute(query, params).fetchall()
            heap_fetched, seq_read, index_read = conn.execute(
                "select pg_stat_get_xact_tuples_fetched('prediction_evaluations'::regclass),"
                " pg_stat_get_xact_tuples_returned('prediction_evaluations'::regclass),"
                " (select sum(pg_stat_get_xact_tuples_returned(indexrelid)) from pg_index"
                "   where indrelid = 'prediction_evaluations'::regclass)").fetchone()
    assert result == expected
    assert seq_read == 0 and heap_fetched == 0 and 0 < index_read <= 2 * 120
