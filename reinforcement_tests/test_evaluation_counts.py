"""The hourly counts behind window statistics (20261126120000_evaluation_counts.sql, counted by feature
type set since 20261202000000_feature_types.sql), on the embedded PostgreSQL: whatever is written to
the log, and however, statistics from the counts equal functions reading every row of the window
(the legacy accuracy, and a row-by-row summary judging each row's own jsonb)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest

from reinforcement_assets.backends.schema import MIGRATIONS_DIR, apply_migrations
from psycopg.types.json import Jsonb

from reinforcement_assets.backends.store import Window
from reinforcement_assets.core.features import FeatureSchema
from reinforcement_assets.core.records import holdout_size

END = datetime(2026, 11, 20, 2, 17, 43, tzinfo=timezone.utc)
NAMES = ["x0", "x1"]
NUMERIC = Jsonb(FeatureSchema.numeric(NAMES).as_json())
# The schemas every window is judged against: (feature schema, accepts missing values).
SCHEMAS = [
    (NUMERIC, False),
    (Jsonb(FeatureSchema.of({"x0": "numeric", "c": "categorical", "b": "boolean"}).as_json()), True),
    (Jsonb(FeatureSchema.of({"c": "categorical", "b": "boolean", "x1": "numeric"}).as_json()), False),
    (Jsonb([{"name": "x1", "kind": None}, {"name": "c"}]), False),  # kinds not known yet: presence only
]

FROM_COUNTS = ("select * from summarize_evaluation_window(%(start)s, %(end)s, %(holdout)s, %(schema)s,"
               " %(accepts_missing)s)")
ROW_BY_ROW = ("select * from row_by_row_summarize_evaluation_window(%(start)s, %(end)s, %(holdout)s, %(schema)s,"
              " %(accepts_missing)s)")
TYPE_SETS_FROM_COUNTS = "select * from evaluation_feature_type_sets(%(start)s, %(end)s, 100000)"
TYPE_SETS_ROW_BY_ROW = """
select evaluation_feature_types(features), count(*) from prediction_evaluations
 where evaluated_at >= %(start)s and evaluated_at < %(end)s and actual_label is not null and reject_reason is null
 group by 1
"""
ACCEPTED_FROM_COUNTS = ("select * from evaluation_accepted_type_sets(%(start)s, %(end)s, %(schema)s,"
                        " %(accepts_missing)s)")
ACCEPTED_ROW_BY_ROW = """
select distinct e.feature_types_hash from prediction_evaluations e
 where e.evaluated_at >= %(start)s and e.evaluated_at < %(end)s and e.actual_label is not null
   and e.reject_reason is null
   and not exists (select from row_by_row_verdict(e.features, %(schema)s, %(accepts_missing)s))
"""
# The type-set dictionary holds, for every hash in the log, the pairs of every row with that hash.
DICTIONARY_MISMATCHES = """
select count(*) from prediction_evaluations e left join prediction_feature_type_sets s using (feature_types_hash)
 where e.feature_types_hash is not null and s.feature_types is distinct from evaluation_feature_types(e.features)
"""
ACCURACY_FROM_COUNTS = "select * from evaluation_accuracy(%(start)s, %(end)s, %(version)s)"
ACCURACY_ROW_BY_ROW = "select * from legacy_evaluation_accuracy(%(start)s, %(end)s, %(version)s)"
COUNTS_BY_KEY = """
select hour, model_version, reject_reason, feature_types_hash, sum(row_count), sum(correct_count)
  from prediction_evaluation_counts group by 1, 2, 3, 4 having sum(row_count) <> 0 order by 1, 2, 3, 4
"""
LOG_BY_KEY = """
select evaluation_hour(evaluated_at), model_version, reject_reason, feature_types_hash, count(*),
       count(*) filter (where is_correct)
  from prediction_evaluations where actual_label is not null and evaluated_at is not null
 group by 1, 2, 3, 4 order by 1, 2, 3, 4
"""

CONFUSION_MIGRATION = "20261203000000"
CONFUSION_BY_KEY = """
select hour, model_version, actual_label, predicted_label, sum(row_count)
  from prediction_confusion_counts group by 1, 2, 3, 4 having sum(row_count) <> 0 order by 1, 2, 3, 4
"""
LOG_BY_PAIR = """
select evaluation_hour(evaluated_at), model_version, actual_label, predicted_label, count(*)
  from prediction_evaluations where actual_label is not null and evaluated_at is not null and reject_reason is null
 group by 1, 2, 3, 4 order by 1, 2, 3, 4
"""
CONFUSION_FROM_COUNTS = "select * from evaluation_confusion_counts(%(start)s, %(end)s, %(version)s, %(max_labels)s)"
CONFUSION_ROW_BY_ROW = """
select actual_label, predicted_label, count(*) from prediction_evaluations
 where evaluated_at >= %(start)s and evaluated_at < %(end)s and actual_label is not null and reject_reason is null
   and (%(version)s::text is null or model_version = %(version)s)
 group by 1, 2
"""


# Why a row cannot be fed to a model of p_schema, judged on the row's own jsonb (not on its type set):
# the first failing feature in schema order; as 20261202000000_feature_types.sql describes it.
ROW_BY_ROW_VERDICT = """
create or replace function public.row_by_row_verdict(p_features jsonb, p_schema jsonb, p_accepts_missing boolean)
returns table (reason text, feature text)
language sql immutable
as $$
  select v.reason, v.name
    from (select f.position, f.spec ->> 'name' as name, f.spec ->> 'kind' as kind,
                 case when jsonb_typeof(p_features) = 'object' then p_features -> (f.spec ->> 'name') end as value
            from jsonb_array_elements(coalesce(p_schema, '[]')) with ordinality as f(spec, position)) s
    cross join lateral (select s.name, case
        when coalesce(s.value, 'null'::jsonb) = 'null'::jsonb and not coalesce(p_accepts_missing, false)
          then 'feature_missing'
        when coalesce(s.value, 'null'::jsonb) = 'null'::jsonb then null
        when s.kind = 'numeric' and not (case when jsonb_typeof(s.value) = 'number'
                                              then abs(s.value::numeric) < 1e300
                                                   and (s.value::numeric = 0 or abs(s.value::numeric) >= 1e-300)
                                              else false end)
          then 'feature_not_numeric'
        when s.kind = 'categorical' and jsonb_typeof(s.value) <> 'string' then 'feature_not_categorical'
        when s.kind = 'boolean' and jsonb_typeof(s.value) <> 'boolean' then 'feature_not_boolean'
      end as reason) v
   where v.reason is not null
   order by s.position
   limit 1
$$;

create or replace function public.row_by_row_summarize_evaluation_window(
  p_start timestamptz, p_end timestamptz, p_holdout_share double precision, p_schema jsonb, p_accepts_missing boolean
) returns table (reason text, feature text, row_count bigint, correct bigint, train_rows bigint,
                 train_correct bigint, holdout_evaluated_at timestamptz, holdout_id bigint)
language sql stable
as $$
  with judged as (
    select e.id, e.evaluated_at, e.is_correct, coalesce(e.reject_reason, v.reason) as reason, v.feature
      from public.prediction_evaluations e
      left join lateral public.row_by_row_verdict(e.features, p_schema, p_accepts_missing) v
        on e.reject_reason is null
     where e.evaluated_at >= p_start and e.evaluated_at < p_end and e.actual_label is not null
  ), usable as (
    select j.evaluated_at, j.id, row_number() over (order by j.evaluated_at desc, j.id desc) as newest
      from judged j where j.reason is null
  ), sized as (
    select ceil(count(*) * greatest(0, least(1, coalesce(p_holdout_share, 0)))::numeric)::bigint as wanted from usable
  ), split as (  -- the oldest of the newest `wanted` usable rows; (p_end, 0) when there is none
    select coalesce(u.evaluated_at, p_end) as at, coalesce(u.id, 0) as id
      from sized s left join usable u on u.newest = s.wanted
  )
  select j.reason, j.feature, count(*), count(*) filter (where j.is_correct),
         count(*) filter (where (j.evaluated_at, j.id) < (s.at, s.id)),
         count(*) filter (where (j.evaluated_at, j.id) < (s.at, s.id) and j.is_correct), s.at, s.id
    from judged j cross join split s
   group by 1, 2, s.at, s.id
  union all
  select 'evaluated_at_missing', null, count(*), 0, count(*), 0, s.at, s.id
    from public.prediction_evaluations e cross join split s
   where e.actual_label is not null and e.evaluated_at is null and e.predicted_at >= p_start and e.predicted_at < p_end
   group by s.at, s.id
$$;
"""


def install_legacy_functions(conn: psycopg.Connection) -> None:
    """What the counts are held equal to: the accuracy they replaced, from the migration that first
    defined it, as `legacy_…`, and a window summary reading every row (`ROW_BY_ROW_VERDICT`)."""
    for migration, name in (("20261126000200_retraining_triggers.sql", "evaluation_accuracy"),):
        text = (MIGRATIONS_DIR / migration).read_text()
        definition = re.search(rf"create or replace function public\.{name}\(.*?\n\$\$;", text, re.S).group(0)
        conn.execute(definition.replace(f"public.{name}(", f"public.legacy_{name}("))
    conn.execute(ROW_BY_ROW_VERDICT)


def summaries(conn: psycopg.Connection, start, end, holdout, schema=NUMERIC,
              accepts_missing: bool | None = False) -> tuple[list, list]:
    params = {"start": start, "end": end, "holdout": holdout, "schema": schema, "accepts_missing": accepts_missing}
    return (sorted(conn.execute(FROM_COUNTS, params).fetchall(), key=str),
            sorted(conn.execute(ROW_BY_ROW, params).fetchall(), key=str))


def type_sets(conn: psycopg.Connection, start, end, schema=NUMERIC, accepts_missing=False) -> tuple[tuple, tuple]:
    """(type sets, accepted type sets) from the counts, and from every row."""
    params = {"start": start, "end": end, "schema": schema, "accepts_missing": accepts_missing}
    return ((sorted(conn.execute(TYPE_SETS_FROM_COUNTS, params).fetchall(), key=str),
             sorted(conn.execute(ACCEPTED_FROM_COUNTS, params).fetchall())),
            (sorted(conn.execute(TYPE_SETS_ROW_BY_ROW, params).fetchall(), key=str),
             sorted(conn.execute(ACCEPTED_ROW_BY_ROW, params).fetchall())))


def write_random_traffic(conn: psycopg.Connection, rng: np.random.Generator, statements: int = 12,
                         prefix: str = "s") -> None:
    """Every way rows reach the log: inserts (some not yet evaluated, some broken, some exactly on an
    hour; features of every JSON type, nulls, extra keys, absent keys, huge numbers, JSON text, no
    object at all), upserts, MERGE, outcomes arriving and withdrawn, relabels, moves, deletes."""
    conn.execute("select setseed(%s)", (float(rng.uniform(-1, 1)),))
    for s in range(statements):
        conn.execute(
            """
            insert into prediction_evaluations
                (prediction_id, model_version, features, predicted_label, actual_label, confidence, evaluated_at)
            select %(s)s || '-' || i, case when i %% 5 = 0 then 'v2' when i %% 17 = 0 then null else 'v1' end,
                   case when i %% 37 = 0 then '[1, 2]'::jsonb
                        when i %% 41 = 0 then to_jsonb('{"x0": 1, "x1": 2}'::text)
                        when i %% 43 = 0 then '"x0=1"'::jsonb
                        when i %% 47 = 0 then '{}'::jsonb
                        else jsonb_build_object(
                               'x0', case when i %% 29 = 0 then '"n/a"'::jsonb when i %% 13 = 0 then '1e300'::jsonb
                                          when i %% 53 = 0 then '[1]'::jsonb when i %% 59 = 0 then '{"v": 1}'::jsonb
                                          when i %% 19 = 0 then 'null'::jsonb when i %% 61 = 0 then 'true'::jsonb
                                          when i %% 67 = 0 then '-1e301'::jsonb when i %% 71 = 0 then '9.99e299'::jsonb
                                          else to_jsonb(i) end,
                               'x1', case when i %% 17 = 0 then 'null'::jsonb when i %% 89 = 0 then '1e305'::jsonb
                                          else to_jsonb(-i) end,
                               'c', case i %% 11 when 0 then '3'::jsonb when 1 then '""'::jsonb
                                                 when 2 then 'null'::jsonb when 3 then '["US"]'::jsonb
                                                 when 4 then '"FR"'::jsonb else '"US"'::jsonb end,
                               'b', case i %% 9 when 0 then '"yes"'::jsonb when 1 then 'null'::jsonb
                                                when 2 then '1'::jsonb when 3 then 'false'::jsonb
                                                else 'true'::jsonb end)
                             || case when i %% 4 = 0 then '{"extra": {"k": [1, "a"]}, "n": null}'::jsonb
                                     else '{}'::jsonb end
                             - case when i %% 23 = 0 then 'x1' when i %% 27 = 0 then 'c' when i %% 33 = 0 then 'b'
                                    else 'none' end
                   end,
                   case when i %% 79 = 0 then ' ' else 'a' end,
                   case when i %% 7 = 0 then null when i %% 83 = 0 then '' when i %% 3 = 0 then 'b' else 'a' end,
                   case when i %% 31 = 0 then 1.5 when i %% 73 = 0 then null else 0.8 end,
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
        # Outcomes written without their time: counted by when they were predicted.
        "update prediction_evaluations set evaluated_at = null, predicted_at = %(end)s - make_interval(secs =>"
        " 8 * 86400 * random()) where actual_label is not null and random() < 0.03",
        "update prediction_evaluations set features = '{\"x1\": 3}' where random() < 0.02",
        "update prediction_evaluations set features = features || '{\"c\": true, \"x0\": \"1\"}'"
        " where jsonb_typeof(features) = 'object' and random() < 0.02",
        "update prediction_evaluations set features = to_jsonb(features::text) where random() < 0.01",
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
            windows.append(Window(start, end, float(rng.uniform(-0.2, 1.2))))  # shares outside [0, 1] clamped
        sizes, verdicts = [], set()
        for window in windows:
            for schema, accepts_missing in SCHEMAS:
                from_counts, row_by_row = summaries(conn, window.start, window.end, window.holdout_share, schema,
                                                    accepts_missing)
                assert from_counts == row_by_row, (window, schema.obj, accepts_missing)
                verdicts.update((reason, feature) for reason, feature, *_ in row_by_row)
                from_counts, row_by_row = type_sets(conn, window.start, window.end, schema, accepts_missing)
                assert from_counts == row_by_row, (window, schema.obj, accepts_missing)
            sizes.append(sum(n for _, _, n, *_ in row_by_row_summary(conn, window)))
            for version in (None, "v1", "v2", "v3", "unknown"):
                params = {"start": window.start, "end": window.end, "version": version}
                assert conn.execute(ACCURACY_FROM_COUNTS, params).fetchone() == \
                    conn.execute(ACCURACY_ROW_BY_ROW, params).fetchone(), (window, version)
        week = windows[0]
        nulls = [(None, week.end, week.holdout_share, NUMERIC, False),
                 (week.start, None, week.holdout_share, NUMERIC, False),
                 (None, None, None, NUMERIC, False), (week.start, week.end, None, NUMERIC, False),
                 (week.start, week.end, week.holdout_share, None, False),  # no schema: only the row's own reasons
                 (week.start, week.end, week.holdout_share, Jsonb([]), False),
                 (week.start, week.end, week.holdout_share, SCHEMAS[1][0], None)]  # as not accepting missing values
        for start, end, holdout, schema, accepts_missing in nulls:
            case = (start, end, holdout, schema and schema.obj, accepts_missing)
            from_counts, row_by_row = summaries(conn, start, end, holdout, schema, accepts_missing)
            assert from_counts == row_by_row, case
            assert type_sets(conn, start, end, schema, accepts_missing)[0] == \
                type_sets(conn, start, end, schema, accepts_missing)[1], case
            params = {"start": start, "end": end, "version": "v1"}
            assert conn.execute(ACCURACY_FROM_COUNTS, params).fetchone() == \
                conn.execute(ACCURACY_ROW_BY_ROW, params).fetchone()
        assert summaries(conn, week.start, week.end, week.holdout_share, SCHEMAS[1][0], None)[0] == \
            summaries(conn, week.start, week.end, week.holdout_share, SCHEMAS[1][0], False)[0]
        assert conn.execute(COUNTS_BY_KEY).fetchall() == conn.execute(LOG_BY_KEY).fetchall()
        assert conn.execute(DICTIONARY_MISMATCHES).fetchone() == (0,)
    assert sizes[0] > 1_000
    assert {reason for reason, _ in verdicts} == {
        None, "label_missing", "confidence_missing", "confidence_out_of_range", "features_empty",
        "features_json_text", "features_not_object", "feature_missing", "feature_not_numeric",
        "feature_not_categorical", "feature_not_boolean", "evaluated_at_missing"}
    assert {("feature_missing", "x0"), ("feature_missing", "x1"), ("feature_missing", "c"), ("feature_missing", "b"),
            ("feature_not_numeric", "x0"), ("feature_not_numeric", "x1"), ("feature_not_categorical", "c"),
            ("feature_not_boolean", "b")} <= verdicts
    assert sum(size == 0 for size in sizes) >= 5 and sum(size > 100 for size in sizes) >= 10


def row_by_row_summary(conn: psycopg.Connection, window: Window) -> list:
    return conn.execute(ROW_BY_ROW, {"start": window.start, "end": window.end, "holdout": window.holdout_share,
                                     "schema": NUMERIC, "accepts_missing": False}).fetchall()


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
    summary = store.summarize_window(Window.ending_at(END, 7, 0.25), FeatureSchema.numeric(NAMES))
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
        from_counts, row_by_row = summaries(conn, window.start, window.end, window.holdout_share)
        assert from_counts != row_by_row
        assert conn.execute(DICTIONARY_MISMATCHES).fetchone()[0] > 0  # type sets it never saw
        assert conn.execute(CONFUSION_BY_KEY).fetchall() != conn.execute(LOG_BY_PAIR).fetchall()
        conn.execute("select rebuild_evaluation_counts()")
        assert summaries(conn, window.start, window.end, window.holdout_share) == (row_by_row, row_by_row)
        assert conn.execute(CONFUSION_BY_KEY).fetchall() == conn.execute(LOG_BY_PAIR).fetchall()
        assert conn.execute(DICTIONARY_MISMATCHES).fetchone() == (0,)
        expected = [summaries(conn, window.start, window.end, window.holdout_share, *schema)[1] for schema in SCHEMAS]
        assert [summaries(conn, window.start, window.end, window.holdout_share, *schema)[0]
                for schema in SCHEMAS] == expected
        conn.execute("update prediction_evaluation_counts set row_count = row_count + 5")  # damaged again
        conn.execute("update prediction_confusion_counts set row_count = row_count + 5")
        conn.execute("delete from prediction_feature_type_sets")
        # The counts and the type sets are defined, and rebuilt, by the feature types migration now, and
        # the confusion counts (with the functions keeping all of them) by the confusion counts migration.
        conn.execute("delete from supabase_migrations.schema_migrations where version in ('20261202000000', %s)",
                     (CONFUSION_MIGRATION,))
    # Re-running the migrations rebuilds too.
    assert apply_migrations(database_url) == ["20261202000000", CONFUSION_MIGRATION]
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert summaries(conn, window.start, window.end, window.holdout_share) == (row_by_row, row_by_row)
        assert conn.execute(CONFUSION_BY_KEY).fetchall() == conn.execute(LOG_BY_PAIR).fetchall()
        assert [summaries(conn, window.start, window.end, window.holdout_share, *schema)[0]
                for schema in SCHEMAS] == expected
        assert conn.execute(DICTIONARY_MISMATCHES).fetchone() == (0,)
        conn.execute("truncate prediction_evaluations")
        assert conn.execute("select count(*) from prediction_evaluation_counts").fetchone() == (0,)
        assert conn.execute("select count(*) from prediction_confusion_counts").fetchone() == (0,)


@pytest.mark.parametrize("statistic", ["summary", "accuracy"])
def test_statistics_read_whole_hours_from_the_counts_not_the_log(database_url, statistic):
    """A week of rows every 30 s: a statistic reads only the log rows of its two partial hours (and
    the summary those of the hour its holdout starts in), from the window index alone (no heap, no
    sequential scan)."""
    start, end = END - timedelta(days=6, minutes=50), END
    rows = 2 * (6 * 24 * 60 + 50)  # two a minute
    query, params, expected = {
        "summary": (FROM_COUNTS, {"start": start, "end": end, "holdout": 0.25, "schema": NUMERIC,
                                  "accepts_missing": False},
                    [(None, None, rows, rows, rows - holdout_size(rows, 0.25), rows - holdout_size(rows, 0.25))]),
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
    assert [r[:6] for r in result] == expected
    # At most: the summary reads the two partial hours three times (accepted type sets, usable rows
    # per hour, counts) and the hour its holdout starts in twice (to find its first row, to count the
    # rows on either side of it); whatever the window's length.
    hours_read = {"summary": 8, "accuracy": 2}[statistic]
    assert seq_read == 0 and heap_fetched == 0 and 0 < index_read <= hours_read * 120, index_read


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


def confusion(conn: psycopg.Connection, start, end, version, max_labels: int | None = 100) -> tuple:
    """(evaluated, correct, sorted (actual, predicted, rows) pairs) from `evaluation_confusion_counts`."""
    evaluated, correct, actual, predicted, counts = conn.execute(
        CONFUSION_FROM_COUNTS, {"start": start, "end": end, "version": version, "max_labels": max_labels}).fetchone()
    return evaluated, correct, sorted(zip(actual, predicted, counts, strict=True))


@pytest.mark.parametrize("time_zone", ["UTC", "America/St_Johns"])
def test_confusion_counts_equal_a_count_of_the_rows(database_url, time_zone):
    """Whatever is written to the log, and however, the confusion counts of any range equal a count of
    its rows per (actual, predicted) label, and their totals the accuracy count."""
    rng = np.random.default_rng(7)
    with psycopg.connect(database_url, autocommit=True) as conn:
        install_legacy_functions(conn)
        conn.execute(f"set time zone '{time_zone}'")
        write_random_traffic(conn, rng)
        assert conn.execute(CONFUSION_BY_KEY).fetchall() == conn.execute(LOG_BY_PAIR).fetchall()
        ranges = [(END - timedelta(days=7), END), (END.replace(minute=0, second=0) - timedelta(days=1),
                                                   END.replace(minute=0, second=0))]
        for _ in range(30):  # ragged bounds, within one hour, empty
            start = END - timedelta(seconds=float(rng.uniform(0, 10 * 86400)))
            ranges.append((start, start + timedelta(seconds=float(rng.choice(
                [0, rng.uniform(0, 3600), rng.uniform(0, 9 * 86400)])))))
        sizes, labels = [], set()
        for start, end in ranges + [(None, END), (END - timedelta(days=1), None)]:
            for version in (None, "v1", "v2", "v3", "unknown"):
                params = {"start": start, "end": end, "version": version}
                evaluated, correct, pairs = confusion(conn, start, end, version)
                assert (evaluated, correct) == conn.execute(ACCURACY_ROW_BY_ROW, params).fetchone(), params
                assert pairs == sorted(conn.execute(CONFUSION_ROW_BY_ROW, params).fetchall()), params
                assert sum(n for *_, n in pairs) == evaluated
                sizes.append(evaluated)
                labels.update(a for a, _, _ in pairs)
        # Only the most frequent labels: a pair with another is left out, the totals still count it.
        start, end = ranges[0]
        evaluated, correct, pairs = confusion(conn, start, end, None, max_labels=1)
        assert (evaluated, correct) == conn.execute(ACCURACY_ROW_BY_ROW, {"start": start, "end": end,
                                                                          "version": None}).fetchone()
        assert [(a, p) for a, p, _ in pairs] == [("a", "a")] and pairs[0][2] < evaluated
        assert confusion(conn, start, end, None, max_labels=0)[2] == []
    assert labels == {"a", "b", "c"}
    assert sum(size == 0 for size in sizes) >= 10 and sum(size > 100 for size in sizes) >= 20


def test_a_label_per_row_is_capped_per_hour_and_totals_stay_exact(database_url):
    """An id logged as the outcome: the confusion counts keep at most the cap of pairs per hour and
    version (the most frequent), never more than the rows hold, while totals and accuracy stay exact."""
    from reinforcement_assets.backends.postgres_store import PostgresStore

    hour = END.replace(minute=0, second=0) - timedelta(hours=5)
    start, end = hour - timedelta(minutes=30), hour + timedelta(hours=1, minutes=40)
    insert = """
        insert into prediction_evaluations (prediction_id, model_version, features, predicted_label, actual_label,
                                            confidence, evaluated_at)
        select %(prefix)s || i, 'v1', '{"x0": 1}', case when i %% 10 = 1 then 'b' else 'a' end,
               case when i %% 2 = 0 then %(prefix)s || 'id-' || i else 'a' end, 0.9,
               %(hour)s + make_interval(secs => i * 3600.0 / 3001)
          from generate_series(1, 3000) i
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        install_legacy_functions(conn)
        (cap,) = conn.execute("select evaluation_confusion_pairs_per_hour()").fetchone()
        conn.execute(insert, {"prefix": "p", "hour": hour})
        conn.execute(insert, {"prefix": "q", "hour": hour + timedelta(hours=1)})  # the window's partial hour

        def check() -> list[tuple]:
            conn.execute("select compact_evaluation_counts()")
            per_hour = conn.execute("select hour, count(*) from prediction_confusion_counts group by 1").fetchall()
            assert per_hour and all(n <= cap for _, n in per_hour)
            kept = {(h, v, a, p): n for h, v, a, p, n in conn.execute(CONFUSION_BY_KEY).fetchall()}
            true = {(h, v, a, p): n for h, v, a, p, n in conn.execute(LOG_BY_PAIR).fetchall()}
            assert all(0 < n <= true[key] for key, n in kept.items())
            params = {"start": start, "end": end, "version": "v1"}
            evaluated, correct, pairs = confusion(conn, start, end, "v1")
            assert (evaluated, correct) == conn.execute(ACCURACY_ROW_BY_ROW, params).fetchone()
            assert len({a for a, _, _ in pairs} | {p for _, p, _ in pairs}) <= 100
            return pairs

        pairs = dict(((a, p), n) for a, p, n in check())
        # The frequent pairs are exact: those of the whole hour from the counts, the partial hour from the log.
        assert pairs[("a", "a")] == 1200 + 800 and pairs[("a", "b")] == 300 + 200
        assert conn.execute("select count(*) from prediction_confusion_counts where hour = %s",
                            (hour,)).fetchone() == (cap,)
        conn.execute("delete from prediction_evaluations where prediction_id like 'p%' and actual_label like '%id-%'"
                     " and random() < 0.5")
        conn.execute("update prediction_evaluations set actual_label = 'b' where random() < 0.1")
        check()
        conn.execute("select rebuild_evaluation_counts()")
        check()

    count = PostgresStore(database_url=database_url).confusion_counts(start, end, "v1")
    assert count.evaluated > count.in_matrix > 0 and count.left_out == count.evaluated - count.in_matrix
    assert len(count.labels) <= 100 and {"a", "b"} <= set(count.labels)


def test_confusion_counts_read_whole_hours_from_the_counts_not_the_log(database_url):
    """As the other statistics: only the log rows of the two partial hours are read (here from the
    heap too, for their labels), never a sequential scan."""
    start, end = END - timedelta(days=6, minutes=50), END
    rows = 2 * (6 * 24 * 60 + 50)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "insert into prediction_evaluations (prediction_id, model_version, features, predicted_label,"
            " actual_label, confidence, evaluated_at) select 'p' || i, 'v1', jsonb_build_object('x0', i, 'x1', 1),"
            " 'a', case when i %% 4 = 0 then 'b' else 'a' end, 0.9, %s - make_interval(secs => 30 * i)"
            " from generate_series(1, 20000) i", (END,))
        conn.execute("vacuum analyze prediction_evaluations")
        with conn.transaction():
            evaluated, correct, pairs = confusion(conn, start, end, "v1")
            heap_fetched, seq_read = conn.execute(
                "select pg_stat_get_xact_tuples_fetched('prediction_evaluations'::regclass),"
                " pg_stat_get_xact_tuples_returned('prediction_evaluations'::regclass)").fetchone()
    assert (evaluated, correct) == (rows, rows - rows // 4)
    assert sum(n for *_, n in pairs) == rows and {(a, p) for a, p, _ in pairs} == {("a", "a"), ("b", "a")}
    assert seq_read == 0 and heap_fetched <= 2 * 120
