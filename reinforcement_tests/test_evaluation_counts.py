"""The hourly counts behind window statistics (20261126120000_evaluation_counts.sql), on the embedded
PostgreSQL: whatever is written to the log, and however, statistics from the counts equal the
functions they replaced, which read every row of the window."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest

from reinforcement_assets.backends.schema import MIGRATIONS_DIR, apply_migrations
from reinforcement_assets.backends.store import Window

END = datetime(2026, 11, 20, 2, 17, 43, tzinfo=timezone.utc)
NAMES = ["x0", "x1"]

FROM_COUNTS = "select * from summarize_evaluation_window(%(start)s, %(end)s, %(holdout)s, %(names)s)"
ROW_BY_ROW = "select * from legacy_summarize_evaluation_window(%(start)s, %(end)s, %(holdout)s, %(names)s)"
ACCURACY_FROM_COUNTS = "select * from evaluation_accuracy(%(start)s, %(end)s, %(version)s)"
ACCURACY_ROW_BY_ROW = "select * from legacy_evaluation_accuracy(%(start)s, %(end)s, %(version)s)"
COUNTS_BY_KEY = """
select hour, model_version, reject_reason, feature_keys_hash, sum(row_count), sum(correct_count)
  from prediction_evaluation_counts group by 1, 2, 3, 4 having sum(row_count) <> 0 order by 1, 2, 3, 4
"""
LOG_BY_KEY = """
select evaluation_hour(evaluated_at), model_version, reject_reason, feature_keys_hash, count(*),
       count(*) filter (where is_correct)
  from prediction_evaluations where actual_label is not null and evaluated_at is not null
 group by 1, 2, 3, 4 order by 1, 2, 3, 4
"""


def install_legacy_functions(conn: psycopg.Connection) -> None:
    """The functions the counts replaced, from the migrations that first defined them, as `legacy_…`."""
    for migration, name in (("20261126000100_supabase_rpc.sql", "summarize_evaluation_window"),
                            ("20261126000200_retraining_triggers.sql", "evaluation_accuracy")):
        text = (MIGRATIONS_DIR / migration).read_text()
        definition = re.search(rf"create or replace function public\.{name}\(.*?\n\$\$;", text, re.S).group(0)
        conn.execute(definition.replace(f"public.{name}(", f"public.legacy_{name}("))


def summaries(conn: psycopg.Connection, start, end, holdout, names=NAMES) -> tuple[list, list]:
    params = {"start": start, "end": end, "holdout": holdout, "names": names}
    return (sorted(conn.execute(FROM_COUNTS, params).fetchall(), key=str),
            sorted(conn.execute(ROW_BY_ROW, params).fetchall(), key=str))


def write_random_traffic(conn: psycopg.Connection, rng: np.random.Generator, statements: int = 12,
                         prefix: str = "s") -> None:
    """Every way rows reach the log: inserts (some not yet evaluated, some broken, some exactly on an
    hour), upserts, MERGE, outcomes arriving and withdrawn, relabels, moves, deletes."""
    conn.execute("select setseed(%s)", (float(rng.uniform(-1, 1)),))
    for s in range(statements):
        conn.execute(
            """
            insert into prediction_evaluations
                (prediction_id, model_version, features, predicted_label, actual_label, confidence, evaluated_at)
            select %(s)s || '-' || i, case when i %% 5 = 0 then 'v2' when i %% 17 = 0 then null else 'v1' end,
                   case when i %% 23 = 0 then '{"x0": 1}'::jsonb
                        when i %% 29 = 0 then '{"x0": "n/a", "x1": 2}'::jsonb
                        when i %% 37 = 0 then '[1, 2]'::jsonb
                        else jsonb_build_object('x0', i, 'x1', -i) end,
                   'a', case when i %% 7 = 0 then null when i %% 3 = 0 then 'b' else 'a' end,
                   case when i %% 31 = 0 then 1.5 else 0.8 end,
                   case when i %% 7 = 0 then null
                        when i %% 11 = 0 then evaluation_hour(%(end)s - make_interval(secs => %(spread)s * random()))
                        else %(end)s - make_interval(secs => %(spread)s * random()) end
              from generate_series(1, %(n)s) i
            """,
            {"s": f"{prefix}{s}", "n": int(rng.integers(50, 400)), "end": END + timedelta(hours=1),
             "spread": 9 * 86400},
        )
    statements = [
        "update prediction_evaluations set actual_label = 'a', evaluated_at = %(end)s - make_interval(secs =>"
        " 86400 * random()) where actual_label is null and random() < 0.5",
        "update prediction_evaluations set actual_label = case actual_label when 'a' then 'b' else 'a' end"
        " where random() < 0.1",
        "update prediction_evaluations set evaluated_at = evaluated_at - interval '37 minutes' where random() < 0.1",
        "update prediction_evaluations set features = '{\"x1\": 3}' where random() < 0.02",
        "update prediction_evaluations set model_version = 'v3' where random() < 0.05",
        "update prediction_evaluations set actual_label = null where random() < 0.02",
        "update prediction_evaluations set evaluated_at = null where random() < 0.02",
        "insert into prediction_evaluations (prediction_id, model_version, features, predicted_label, actual_label,"
        " confidence, evaluated_at) select prediction_id, 'v2', features, predicted_label, 'b', confidence,"
        " %(end)s - interval '2 days' from prediction_evaluations where random() < 0.05"
        " on conflict (prediction_id) do update set model_version = excluded.model_version,"
        " actual_label = excluded.actual_label, evaluated_at = excluded.evaluated_at",
        "merge into prediction_evaluations p using (select prediction_id from prediction_evaluations"
        " where random() < 0.05) s on p.prediction_id = s.prediction_id and p.actual_label is not null"
        " when matched then update set actual_label = 'c'",
        "delete from prediction_evaluations where random() < 0.1",
    ]
    for statement in statements:
        conn.execute(statement, {"end": END})


@pytest.mark.parametrize("time_zone", ["UTC", "America/St_Johns"])  # a half-hour offset with summer time
def test_statistics_from_counts_equal_the_row_by_row_functions_they_replaced(database_url, time_zone):
    rng = np.random.default_rng(3)
    with psycopg.connect(database_url, autocommit=True) as conn:
        install_legacy_functions(conn)
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
        week = windows[0]
        nulls = [(None, week.end, week.holdout_start, NAMES), (week.start, None, week.holdout_start, NAMES),
                 (None, None, None, NAMES), (week.start, week.end, None, NAMES),
                 (week.start, week.end, week.holdout_start, None), (week.start, week.end, week.holdout_start, ["x0", None])]
        for start, end, holdout, names in nulls:
            from_counts, row_by_row = summaries(conn, start, end, holdout, names)
            assert from_counts == row_by_row, (start, end, holdout, names)
            params = {"start": start, "end": end, "version": "v1"}
            assert conn.execute(ACCURACY_FROM_COUNTS, params).fetchone() == \
                conn.execute(ACCURACY_ROW_BY_ROW, params).fetchone()
        assert conn.execute(COUNTS_BY_KEY).fetchall() == conn.execute(LOG_BY_KEY).fetchall()
    assert sizes[0] > 1_000
    assert reasons == {None, "feature_missing", "feature_not_numeric", "confidence_out_of_range"}
    assert sum(size == 0 for size in sizes) >= 5 and sum(size > 100 for size in sizes) >= 10


def test_rows_loaded_through_the_store_are_counted(store):
    log = pd.DataFrame({
        "prediction_id": [f"p{i}" for i in range(500)], "model_version": "v1",
        "features": [{"x0": float(i), "x1": 1.0} for i in range(500)], "predicted_label": "a",
        "actual_label": ["a" if i % 4 else "b" for i in range(500)], "confidence": 0.9,
        "predicted_at": END - timedelta(days=3), "evaluated_at": [END - timedelta(minutes=17 * i + 1) for i in range(500)],
    })
    assert store.insert_evaluations(log) == 500
    with psycopg.connect(store.url, autocommit=True) as conn:
        assert conn.execute(COUNTS_BY_KEY).fetchall() == conn.execute(LOG_BY_KEY).fetchall()
    summary = store.summarize_window(Window.ending_at(END, 7, 0.25), tuple(NAMES))
    assert (summary.rows, summary.correct) == (500, 375)


def test_writers_of_the_same_hours_never_wait_for_each_other(database_url):
    """Two open transactions write outcomes of the same hours in opposite orders: neither blocks."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("insert into prediction_evaluations (prediction_id, model_version, features, predicted_label,"
                     " confidence) select 'p' || i, 'v1', '{\"x0\": 1, \"x1\": 2}', 'a', 0.9"
                     " from generate_series(1, 4) i")
    outcome = "update prediction_evaluations set actual_label = 'a', evaluated_at = %s where prediction_id = %s"
    first, second = (psycopg.connect(database_url, options="-c lock_timeout=2s") for _ in range(2))
    with first, second:
        first.execute(outcome, (END - timedelta(hours=1), "p1"))
        second.execute(outcome, (END - timedelta(hours=2), "p2"))
        first.execute(outcome, (END - timedelta(hours=2), "p3"))
        second.execute(outcome, (END - timedelta(hours=1), "p4"))
        first.commit()
        second.commit()
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(ACCURACY_FROM_COUNTS, {"start": END - timedelta(days=1), "end": END,
                                                   "version": None}).fetchone() == (4, 4)
        assert conn.execute(COUNTS_BY_KEY).fetchall() == conn.execute(LOG_BY_KEY).fetchall()
        # Reading folded the appended rows: one per key.
        assert conn.execute("select count(*), bool_and(compacted) from prediction_evaluation_counts").fetchone() \
            == (len(conn.execute(LOG_BY_KEY).fetchall()), True)


def test_counts_written_with_triggers_off_are_repaired_by_a_rebuild(database_url):
    window = Window.ending_at(END, 7, 0.25)
    with psycopg.connect(database_url, autocommit=True) as conn:
        install_legacy_functions(conn)
        write_random_traffic(conn, np.random.default_rng(4), statements=3)
        conn.execute("set session_replication_role = replica")  # as a restore with --disable-triggers
        write_random_traffic(conn, np.random.default_rng(5), statements=2, prefix="unseen")
        conn.execute("reset session_replication_role")
        from_counts, row_by_row = summaries(conn, window.start, window.end, window.holdout_start)
        assert from_counts != row_by_row
        conn.execute("select rebuild_evaluation_counts()")
        assert summaries(conn, window.start, window.end, window.holdout_start) == (row_by_row, row_by_row)
        conn.execute("update prediction_evaluation_counts set row_count = row_count + 5")  # damaged again
        conn.execute("delete from supabase_migrations.schema_migrations where version = '20261126120000'")
    assert apply_migrations(database_url) == ["20261126120000"]  # re-running the migration rebuilds too
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert summaries(conn, window.start, window.end, window.holdout_start) == (row_by_row, row_by_row)
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


def test_reads_above_read_committed_count_right_and_leave_folding_to_others(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("insert into prediction_evaluations (prediction_id, model_version, features, predicted_label,"
                     " actual_label, confidence, evaluated_at) values ('p1', 'v1', '{\"x0\": 1, \"x1\": 2}', 'a', 'a',"
                     " 0.9, %s)", (END - timedelta(hours=3),))
    params = {"start": END - timedelta(days=1), "end": END, "version": "v1"}
    with psycopg.connect(database_url) as conn:
        conn.execute("set transaction isolation level repeatable read")
        assert conn.execute(ACCURACY_FROM_COUNTS, params).fetchone() == (1, 1)
        assert conn.execute("select bool_or(not compacted) from prediction_evaluation_counts").fetchone() == (True,)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(ACCURACY_FROM_COUNTS, params).fetchone() == (1, 1)
        assert conn.execute("select bool_or(not compacted) from prediction_evaluation_counts").fetchone() == (False,)
