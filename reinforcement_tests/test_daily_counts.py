"""The counts by predicted_at hour (20261206000000_prediction_counts.sql) and the monitoring page's daily
series, on the embedded PostgreSQL: whatever is written to the log, the SQL functions equal a count of
the rows, both backends answer the same, the migration backfills, and rows evaluated before they were
predicted reach the evaluation_log metadata."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import dagster as dg
import numpy as np
import psycopg
import pytest

from reinforcement_assets.backends.schema import apply_migrations
from reinforcement_assets.backends.store import Window
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.core.records import DailyAccuracy, DailyCoverage
from reinforcement_assets.definitions import defs
from reinforcement_tests.supabase_transport import emulated_resources

END = datetime(2026, 11, 20, 2, 17, 43, tzinfo=timezone.utc)
MIGRATION = "20261206000000"
UTC_HOUR = "date_trunc('hour', {} at time zone 'UTC') at time zone 'UTC'"
DAYS = """generate_series(date_trunc('day', %(start)s::timestamptz at time zone 'UTC') at time zone 'UTC',
                          %(end)s::timestamptz - interval '1 microsecond', interval '24 hours') d"""
DAILY_ACCURACY_ROW_BY_ROW = f"""
select (d at time zone 'UTC')::date, count(e.id), count(e.id) filter (where e.is_correct)
  from {DAYS}
  left join prediction_evaluations e
    on e.actual_label is not null and e.reject_reason is null
   and e.evaluated_at >= greatest(%(start)s, d) and e.evaluated_at < least(%(end)s, d + interval '24 hours')
 where %(start)s < %(end)s
 group by d order by 1
"""
COVERAGE_ROW_BY_ROW = f"""
select (d at time zone 'UTC')::date, count(e.id),
       count(e.id) filter (where e.actual_label is not null and e.evaluated_at is not null)
  from {DAYS}
  left join prediction_evaluations e
    on e.predicted_at >= greatest({UTC_HOUR.format('%(start)s::timestamptz')}, d)
   and e.predicted_at < least({UTC_HOUR.format('%(end)s::timestamptz')}, d + interval '24 hours')
 where %(start)s < %(end)s
 group by d order by 1
"""
EARLY_ROW_BY_ROW = f"""
select count(*) from prediction_evaluations
 where actual_label is not null and evaluated_at < predicted_at
   and predicted_at >= {UTC_HOUR.format('%(start)s::timestamptz')}
   and predicted_at < {UTC_HOUR.format('%(end)s::timestamptz')}
"""
COUNTS_BY_HOUR = """
select hour, sum(predictions), sum(evaluated), sum(evaluated_early) from prediction_counts
 group by 1 having sum(predictions) <> 0 or sum(evaluated) <> 0 or sum(evaluated_early) <> 0 order by 1
"""
LOG_BY_HOUR = """
select evaluation_hour(predicted_at), count(*),
       count(*) filter (where actual_label is not null and evaluated_at is not null),
       count(*) filter (where actual_label is not null and evaluated_at < predicted_at)
  from prediction_evaluations where predicted_at is not null group by 1 order by 1
"""


def write_traffic(conn: psycopg.Connection, rng: np.random.Generator, statements: int = 6,
                  prefix: str = "p") -> None:
    """Predictions over nine days, a third evaluated at once (some before they were predicted, some
    broken), outcomes arriving later, withdrawn, moved across hours and days, relabels, deletes."""
    conn.execute("select setseed(%s)", (float(rng.uniform(-1, 1)),))
    for s in range(statements):
        conn.execute(
            """
            insert into prediction_evaluations (prediction_id, model_version, features, predicted_label,
                                                actual_label, confidence, predicted_at, evaluated_at)
            select %(s)s || '-' || i, 'v1', '{"x0": 1, "x1": 2}', 'a',
                   case when i %% 3 = 0 then case when i %% 2 = 0 then 'a' else 'b' end end,
                   case when i %% 29 = 0 then 1.5 else 0.8 end, t.at,
                   case when i %% 3 = 0 then t.at + make_interval(secs => case when i %% 13 = 0 then -5000
                                                                              else 7200 * random() end) end
              from generate_series(1, %(n)s) i
             cross join lateral (select %(end)s - make_interval(secs => %(spread)s * random()) + i * interval '0'
                                        as at) t
            """,
            {"s": f"{prefix}{s}", "n": int(rng.integers(100, 400)), "end": END, "spread": 9 * 86400},
        )
    for statement in [
        "update prediction_evaluations set actual_label = 'a', evaluated_at = predicted_at"
        " + make_interval(secs => 3 * 86400 * random() - 3600) where actual_label is null and random() < 0.4",
        "update prediction_evaluations set actual_label = null where random() < 0.03",
        "update prediction_evaluations set evaluated_at = null where random() < 0.02",
        "update prediction_evaluations set predicted_at = predicted_at - interval '23 hours' where random() < 0.05",
        "update prediction_evaluations set actual_label = 'b' where actual_label = 'a' and random() < 0.1",
        "delete from prediction_evaluations where random() < 0.1",
    ]:
        conn.execute(statement)


def windows(rng: np.random.Generator) -> list[tuple[datetime, datetime]]:
    """A week ending at END and on an hour, ragged bounds, within one hour, empty and reversed."""
    found = [(END - timedelta(days=7), END), (END.replace(minute=0, second=0) - timedelta(days=7),
                                              END.replace(minute=0, second=0)), (END, END), (END, END - timedelta(1))]
    for _ in range(12):
        start = END - timedelta(seconds=float(rng.uniform(0, 10 * 86400)))
        found.append((start, start + timedelta(seconds=float(rng.choice([rng.uniform(0, 3600),
                                                                          rng.uniform(0, 9 * 86400)])))))
    return found


def check_against_the_rows(conn: psycopg.Connection, rng: np.random.Generator, accuracy: bool = True) -> None:
    """Every function equals its row-by-row reference (`accuracy`: the daily accuracy too, from the
    evaluated_at counts), and the counts equal a count of the log."""
    for start, end in windows(rng):
        params = {"start": start, "end": end}
        assert not accuracy or conn.execute("select * from evaluation_daily_accuracy(%(start)s, %(end)s)",
                                            params).fetchall() == \
            conn.execute(DAILY_ACCURACY_ROW_BY_ROW, params).fetchall(), (start, end)
        assert conn.execute("select * from evaluation_outcome_coverage(%(start)s, %(end)s)", params).fetchall() == \
            conn.execute(COVERAGE_ROW_BY_ROW, params).fetchall(), (start, end)
        assert conn.execute("select * from evaluation_early_count(%(start)s, %(end)s)", params).fetchone() == \
            conn.execute(EARLY_ROW_BY_ROW, params).fetchone(), (start, end)
    assert conn.execute(COUNTS_BY_HOUR).fetchall() == conn.execute(LOG_BY_HOUR).fetchall()


@pytest.mark.parametrize("time_zone", ["UTC", "America/St_Johns"])  # a half-hour offset with summer time
def test_daily_series_equal_a_count_of_the_rows(database_url, time_zone):
    rng = np.random.default_rng(7)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"set time zone '{time_zone}'")
        write_traffic(conn, rng)
        assert conn.execute("select count(*) from prediction_counts where not compacted").fetchone()[0] > 0
        check_against_the_rows(conn, rng)  # reading compacts
        assert conn.execute("select count(*) from prediction_counts where not compacted").fetchone() == (0,)
        write_traffic(conn, rng, statements=2, prefix="later")  # appended on top of compacted hours
        check_against_the_rows(conn, rng)
        week = conn.execute(DAILY_ACCURACY_ROW_BY_ROW, {"start": END - timedelta(7), "end": END}).fetchall()
        assert len(week) == 8 and all(n > 0 for _, n, _ in week) and sum(n for _, n, _ in week) > 500
        assert conn.execute(EARLY_ROW_BY_ROW, {"start": END - timedelta(7), "end": END}).fetchone()[0] > 10
        conn.execute("select rebuild_evaluation_counts()")
        check_against_the_rows(conn, rng)
        conn.execute("truncate prediction_evaluations")
        assert conn.execute("select count(*) from prediction_counts").fetchone() == (0,)


def test_rows_with_no_predicted_at_are_not_counted_by_predicted_at(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter table prediction_evaluations alter column predicted_at drop not null")
        conn.execute("insert into prediction_evaluations (prediction_id, model_version, features, predicted_label,"
                     " actual_label, confidence, predicted_at, evaluated_at) values"
                     " ('n1', 'v1', '{}', 'a', 'a', 0.9, null, %(end)s), ('n2', 'v1', '{}', 'a', 'a', 0.9, %(end)s,"
                     " %(end)s)", {"end": END})
        assert conn.execute(COUNTS_BY_HOUR).fetchall() == conn.execute(LOG_BY_HOUR).fetchall()
        assert conn.execute("select sum(predictions) from prediction_counts").fetchone() == (1,)


def test_the_migration_backfills_the_rows_already_logged(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")  # rows the counts never saw
        write_traffic(conn, np.random.default_rng(8), statements=2)
        conn.execute("reset session_replication_role")
        assert conn.execute(COUNTS_BY_HOUR).fetchall() != conn.execute(LOG_BY_HOUR).fetchall()
        conn.execute("delete from supabase_migrations.schema_migrations where version = %s", (MIGRATION,))
    assert apply_migrations(database_url) == [MIGRATION]
    assert apply_migrations(database_url) == []
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(COUNTS_BY_HOUR).fetchall() == conn.execute(LOG_BY_HOUR).fetchall()
        check_against_the_rows(conn, np.random.default_rng(9), accuracy=False)  # this migration's counts only


def test_both_backends_answer_the_same(store, project, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_traffic(conn, np.random.default_rng(10), statements=3)
    supabase = emulated_resources(project)["store"]
    start, end = END - timedelta(days=7), END
    accuracy, coverage = store.daily_accuracy(start, end), store.outcome_coverage(start, end)
    assert [type(a) for a in accuracy] == [DailyAccuracy] * 8 and [type(c) for c in coverage] == [DailyCoverage] * 8
    assert accuracy[0].day == date(2026, 11, 13) and accuracy[-1].day == date(2026, 11, 20)
    assert sum(0 < a.accuracy < 1 and 0 < c.share < 1 for a, c in zip(accuracy[:-1], coverage[:-1])) == 7
    assert supabase.daily_accuracy(start, end) == accuracy
    assert supabase.outcome_coverage(start, end) == coverage
    assert supabase.evaluated_early(start, end) == store.evaluated_early(start, end) > 0
    assert project.sent("POST", "/rest/v1/rpc/evaluation_daily_accuracy")
    assert project.sent("POST", "/rest/v1/rpc/evaluation_outcome_coverage")
    schema = FeatureSchema.numeric(["x0", "x1"])
    window = Window.ending_at(end, 7, 0.25)
    assert supabase.summarize_window(window, schema) == store.summarize_window(window, schema)
    assert store.summarize_window(window, schema).evaluated_early == store.evaluated_early(start, end)
    assert store.daily_accuracy(end, start) == [] and DailyAccuracy(day=date(2026, 1, 1)).accuracy is None
    assert DailyCoverage(date(2026, 1, 1)).share is None


def test_rows_evaluated_before_they_were_predicted_are_in_the_evaluation_log_metadata(resources, database_url):
    tick = datetime(2026, 11, 27, 2, tzinfo=timezone.utc)
    with psycopg.connect(database_url, autocommit=True) as conn:  # written by SQL, not the Python insert path
        conn.execute("insert into prediction_evaluations (prediction_id, model_version, features, predicted_label,"
                     " actual_label, confidence, predicted_at, evaluated_at)"
                     " select 'e' || i, 'v0', '{\"x0\": 1, \"x1\": 2}', 'a', 'a', 0.9, %(at)s,"
                     "        %(at)s + case when i <= 3 then interval '-10 minutes' else interval '10 minutes' end"
                     "   from generate_series(1, 8) i", {"at": tick - timedelta(hours=5)})
    result = dg.materialize([next(a for a in defs.assets if dg.AssetKey("evaluation_log") in a.keys)],
                            resources=resources,
                            tags={"source": "auto_daily", "dagster/scheduled_execution_time": tick.isoformat()})
    (materialization,) = result.asset_materializations_for_node("evaluation_log")
    assert materialization.metadata["rows"].value == 8  # still usable
    assert materialization.metadata["evaluated_before_predicted"].value == 3
