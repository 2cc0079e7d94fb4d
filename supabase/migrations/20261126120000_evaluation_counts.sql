-- Window statistics without reading the window: hourly counts of the evaluated rows, kept by
-- statement-level triggers, and a dictionary of feature-key sets. A window summary or the decay
-- sensor's accuracy count adds up whole hours and reads only the log rows of the partial hours at
-- either end, so its cost no longer grows with the window. Needs PostgreSQL 15 or later (`date_bin`,
-- `create or replace trigger`; Supabase runs 15 or 17). Idempotent: re-running it rebuilds the counts.

-- The hour an evaluation is counted in (UTC hours, whatever the session's time zone).
create or replace function public.evaluation_hour(evaluated_at timestamptz) returns timestamptz
language sql immutable parallel safe
as $$ select date_bin('1 hour', evaluated_at, timestamptz '2000-01-01 00:00:00+00') $$;

-- Append-only: each writing statement adds one row per key it changed (`compacted` false), so
-- writers never lock a shared count row nor wait for each other on it. Reading adds up all rows of
-- a key; `compact_evaluation_counts` folds the appended rows into one per key. (A statement that
-- brings in a new feature-key set does wait for another bringing in the same one, until it commits.)
create table if not exists public.prediction_evaluation_counts (
  hour              timestamptz not null,
  model_version     text,
  reject_reason     text,
  feature_keys_hash bigint,
  row_count         bigint not null,
  correct_count     bigint not null,
  compacted         boolean not null default false
);

create index if not exists prediction_evaluation_counts_hour_idx
  on public.prediction_evaluation_counts (hour);

create index if not exists prediction_evaluation_counts_appended_idx
  on public.prediction_evaluation_counts (hour) where not compacted;

comment on table public.prediction_evaluation_counts is
  'Evaluated rows of prediction_evaluations per UTC hour, model version, reject reason and feature-key set; '
  'kept by triggers (rows of a key add up).';

create table if not exists public.prediction_feature_key_sets (
  feature_keys_hash bigint primary key,
  feature_names     text[] not null
);

comment on table public.prediction_feature_key_sets is
  'The sorted feature keys behind each feature_keys_hash of prediction_evaluations; kept by triggers.';

-- Appends the statement's changes: +1 per new evaluated row, -1 per old one (an UPDATE is both),
-- netted per key. Security definer: whoever may write the log may keep its counts, without
-- privileges on them. Static SQL, so plans are cached per session (benchmarks/write_cost.py
-- measures what it costs writers).
create or replace function public.count_prediction_evaluations() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  changes public.prediction_evaluation_counts[] := '{}';
begin
  if tg_op <> 'DELETE' then
    insert into public.prediction_feature_key_sets (feature_keys_hash, feature_names)
    select distinct on (n.feature_keys_hash) n.feature_keys_hash,
           array(select jsonb_object_keys(n.features) order by 1)
      from new_rows n
     where n.feature_keys_hash is not null
       and not exists (select from public.prediction_feature_key_sets k
                        where k.feature_keys_hash = n.feature_keys_hash)
     order by n.feature_keys_hash
    on conflict do nothing;
    changes := array(
      select row(public.evaluation_hour(n.evaluated_at), n.model_version, n.reject_reason, n.feature_keys_hash,
                 count(*), count(*) filter (where n.is_correct), false)::public.prediction_evaluation_counts
        from new_rows n
       where n.actual_label is not null and n.evaluated_at is not null
       group by public.evaluation_hour(n.evaluated_at), n.model_version, n.reject_reason, n.feature_keys_hash);
  end if;
  if tg_op <> 'INSERT' then
    changes := changes || array(
      select row(public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_keys_hash,
                 -count(*), -count(*) filter (where o.is_correct), false)::public.prediction_evaluation_counts
        from old_rows o
       where o.actual_label is not null and o.evaluated_at is not null
       group by public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_keys_hash);
  end if;
  insert into public.prediction_evaluation_counts
         (hour, model_version, reject_reason, feature_keys_hash, row_count, correct_count)
  select d.hour, d.model_version, d.reject_reason, d.feature_keys_hash, sum(d.row_count), sum(d.correct_count)
    from unnest(changes) d
   group by 1, 2, 3, 4
  having sum(d.row_count) <> 0 or sum(d.correct_count) <> 0;
  return null;
end
$$;

create or replace function public.clear_prediction_evaluation_counts() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  truncate public.prediction_evaluation_counts;
  return null;
end
$$;

create or replace trigger prediction_evaluations_count_inserts
  after insert on public.prediction_evaluations
  referencing new table as new_rows
  for each statement execute function public.count_prediction_evaluations();

create or replace trigger prediction_evaluations_count_updates
  after update on public.prediction_evaluations
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.count_prediction_evaluations();

create or replace trigger prediction_evaluations_count_deletes
  after delete on public.prediction_evaluations
  referencing old table as old_rows
  for each statement execute function public.count_prediction_evaluations();

create or replace trigger prediction_evaluations_clear_counts
  after truncate on public.prediction_evaluations
  for each statement execute function public.clear_prediction_evaluation_counts();

-- Folds the rows appended since the last call into one row per key; returns how many hours it
-- folded. Readers call it first (the window statistics below), so appended rows never pile up
-- for long. One caller at a time; others skip, as do read-only transactions and those above READ
-- COMMITTED (where a concurrent fold would be a serialization failure). A writer that appends
-- while it runs is not lost: its row is not in this statement's snapshot and waits for the next
-- call.
create or replace function public.compact_evaluation_counts() returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  folded integer;
begin
  if current_setting('transaction_read_only')::boolean
     or current_setting('transaction_isolation') <> 'read committed'
     or not pg_try_advisory_xact_lock(hashtext('public.prediction_evaluation_counts compaction')) then
    return 0;
  end if;
  with hours as (
    select distinct hour from public.prediction_evaluation_counts where not compacted
  ), taken as (
    delete from public.prediction_evaluation_counts c using hours h where c.hour = h.hour returning c.*
  ), kept as (
    insert into public.prediction_evaluation_counts
           (hour, model_version, reject_reason, feature_keys_hash, row_count, correct_count, compacted)
    select hour, model_version, reject_reason, feature_keys_hash, sum(row_count), sum(correct_count), true
      from taken
     group by 1, 2, 3, 4
    having sum(row_count) <> 0 or sum(correct_count) <> 0
  )
  select count(*) into folded from hours;
  return folded;
end
$$;

-- Recounts everything from the log: for after rows were written with triggers off (a restore with
-- `--disable-triggers`, `session_replication_role = replica`). Writers wait while it runs; readers
-- do not (DELETE, not TRUNCATE, so a reader's older snapshot still sees the old counts). For the
-- database owner: it locks the log, so it is not callable over the API.
create or replace function public.rebuild_evaluation_counts() returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  lock table public.prediction_evaluations in share mode;
  delete from public.prediction_evaluation_counts;
  insert into public.prediction_evaluation_counts
         (hour, model_version, reject_reason, feature_keys_hash, row_count, correct_count, compacted)
  select public.evaluation_hour(evaluated_at), model_version, reject_reason, feature_keys_hash,
         count(*), count(*) filter (where is_correct), true
    from public.prediction_evaluations
   where actual_label is not null and evaluated_at is not null
   group by 1, 2, 3, 4;
  -- The keys of one row per key set, not of every row.
  insert into public.prediction_feature_key_sets (feature_keys_hash, feature_names)
  select example.feature_keys_hash, array(select jsonb_object_keys(e.features) order by 1)
    from (select feature_keys_hash, min(id) as id from public.prediction_evaluations
           where feature_keys_hash is not null group by 1) example
    join public.prediction_evaluations e on e.id = example.id
  on conflict do nothing;
end
$$;

select public.rebuild_evaluation_counts();

-- Partial hours are read from the window index: with model_version included, index-only. Rebuilt
-- only where it lacks model_version. On a large live log, build it first without blocking writers:
-- `create index concurrently prediction_evaluations_window_new_idx … ; drop index concurrently
-- prediction_evaluations_window_idx; alter index prediction_evaluations_window_new_idx rename to
-- prediction_evaluations_window_idx;` (same definition as below).
do $$
begin
  if coalesce(pg_get_indexdef(to_regclass('public.prediction_evaluations_window_idx')), '') !~ 'model_version' then
    drop index if exists public.prediction_evaluations_window_idx;
    create index prediction_evaluations_window_idx
      on public.prediction_evaluations (evaluated_at)
      include (is_correct, reject_reason, feature_keys_hash, model_version, id)
      where actual_label is not null;
  end if;
end
$$;

-- Counts over the evaluated rows of [p_start, p_end) per model version, reject reason and
-- feature-key set: the whole hours inside the range from the counts, the rest from the log.
create or replace function public.evaluation_window_counts(p_start timestamptz, p_end timestamptz)
returns table (model_version text, reject_reason text, feature_keys_hash bigint, row_count bigint,
               correct_count bigint)
language plpgsql stable
as $$
declare
  -- The whole hours are [first_hour, end_hour); the log covers [p_start, first_hour) and
  -- [end_hour, p_end). Clamped so that a range inside one hour (or empty) is read from the log
  -- once and the counts add nothing.
  first_hour timestamptz := least(public.evaluation_hour(p_start - interval '1 microsecond') + interval '1 hour', p_end);
  end_hour timestamptz := greatest(public.evaluation_hour(p_end), first_hour);
begin
  if p_start is null or p_end is null then
    return;  -- as `evaluated_at >= null` selected nothing
  end if;
  return query
  select parts.model_version, parts.reject_reason, parts.feature_keys_hash, sum(parts.row_count)::bigint,
         sum(parts.correct_count)::bigint
    from (select c.model_version, c.reject_reason, c.feature_keys_hash, c.row_count, c.correct_count
            from public.prediction_evaluation_counts c
           where c.hour >= first_hour and c.hour < end_hour
          union all
          select e.model_version, e.reject_reason, e.feature_keys_hash, 1, e.is_correct::int
            from public.prediction_evaluations e
           where e.actual_label is not null and e.evaluated_at >= p_start and e.evaluated_at < first_hour
          union all
          select e.model_version, e.reject_reason, e.feature_keys_hash, 1, e.is_correct::int
            from public.prediction_evaluations e
           where e.actual_label is not null and e.evaluated_at >= end_hour and e.evaluated_at < p_end) parts
   group by 1, 2, 3;
end
$$;

-- Same signature and result as in 20261126000200_retraining_triggers.sql, from the counts.
create or replace function public.evaluation_accuracy(
  p_start timestamptz, p_end timestamptz, p_model_version text default null
) returns table (evaluated bigint, correct bigint)
language plpgsql volatile
as $$
begin
  perform public.compact_evaluation_counts();
  return query
  select coalesce(sum(w.row_count), 0)::bigint, coalesce(sum(w.correct_count), 0)::bigint
    from public.evaluation_window_counts(p_start, p_end) w
   where w.reject_reason is null and (p_model_version is null or w.model_version = p_model_version);
end
$$;

-- Same signature and result as in 20261126000100_supabase_rpc.sql, from the counts: the train
-- part [p_start, p_holdout_start) and the holdout part [p_holdout_start, p_end).
create or replace function public.summarize_evaluation_window(
  p_start timestamptz, p_end timestamptz, p_holdout_start timestamptz, p_feature_names text[]
) returns table (reason text, row_count bigint, correct bigint, train_rows bigint, train_correct bigint)
language plpgsql volatile
as $$
declare
  -- A null holdout start counts nothing as training, as `evaluated_at < null` did.
  split_at timestamptz := greatest(p_start, least(coalesce(p_holdout_start, p_start), p_end));
begin
  if p_start is null or p_end is null then
    return;
  end if;
  perform public.compact_evaluation_counts();
  return query
  with counts as (
    select w.*, true as train from public.evaluation_window_counts(p_start, split_at) w
    union all
    select w.*, false from public.evaluation_window_counts(split_at, p_end) w
  )
  -- As `features ?& p_feature_names` did: null elements are ignored, a null array checks nothing.
  select coalesce(c.reject_reason,
                  case when not (k.feature_names @> array_remove(p_feature_names, null)) then 'feature_missing' end),
         sum(c.row_count)::bigint, sum(c.correct_count)::bigint,
         coalesce(sum(c.row_count) filter (where c.train), 0)::bigint,
         coalesce(sum(c.correct_count) filter (where c.train), 0)::bigint
    from counts c left join public.prediction_feature_key_sets k using (feature_keys_hash)
   group by 1
  having sum(c.row_count) > 0;
end
$$;

-- Only the triggers and the functions above write these; service_role (the backend) may read
-- them, nobody else. Supabase's default privileges grant more: take it back first.
alter table public.prediction_evaluation_counts enable row level security;
alter table public.prediction_feature_key_sets enable row level security;
revoke all on public.prediction_evaluation_counts, public.prediction_feature_key_sets
  from public, anon, authenticated, service_role;
grant select on public.prediction_evaluation_counts, public.prediction_feature_key_sets to service_role;
revoke execute on function public.evaluation_hour(timestamptz), public.count_prediction_evaluations(),
  public.clear_prediction_evaluation_counts(), public.compact_evaluation_counts(),
  public.rebuild_evaluation_counts(), public.evaluation_window_counts(timestamptz, timestamptz)
  from public, anon, authenticated;
revoke execute on function public.rebuild_evaluation_counts() from service_role;
grant execute on function public.evaluation_hour(timestamptz), public.compact_evaluation_counts(),
  public.evaluation_window_counts(timestamptz, timestamptz)
  to service_role;
