-- Window statistics without reading the window: hourly counts of the evaluated rows, kept by
-- statement-level triggers, and a dictionary of feature-key sets. A window summary or the decay
-- sensor's accuracy count adds up whole hours and reads only the log rows of the partial hours at
-- either end, so its cost no longer grows with the window. Needs PostgreSQL 15 or later (`nulls
-- not distinct`; Supabase runs 15 or 17). Idempotent: re-running it rebuilds the counts.

-- The hour an evaluation is counted in (UTC hours, whatever the session's time zone).
create or replace function public.evaluation_hour(evaluated_at timestamptz) returns timestamptz
language sql immutable parallel safe
as $$ select date_bin('1 hour', evaluated_at, timestamptz '2000-01-01 00:00:00+00') $$;

create table if not exists public.prediction_evaluation_counts (
  hour              timestamptz not null,
  model_version     text,
  reject_reason     text,
  feature_keys_hash bigint,
  row_count         bigint not null,
  correct_count     bigint not null,
  constraint prediction_evaluation_counts_key unique nulls not distinct (hour, model_version, reject_reason, feature_keys_hash)
);

comment on table public.prediction_evaluation_counts is
  'Evaluated rows of prediction_evaluations per UTC hour, model version, reject reason and feature-key set; kept by triggers.';

create table if not exists public.prediction_feature_key_sets (
  feature_keys_hash bigint primary key,
  feature_names     text[] not null
);

comment on table public.prediction_feature_key_sets is
  'The sorted feature keys behind each feature_keys_hash of prediction_evaluations; kept by triggers.';

-- Adds the statement's changes to the counts: +1 per new evaluated row, -1 per old one (an UPDATE
-- is both), netted per key and upserted in key order, so concurrent writers lock count rows in the
-- same order and cannot deadlock on them. Static SQL (plans cached per session): a single-row
-- insert pays about 0.06 ms for it. Security definer: whoever may write the log may keep its
-- counts, without privileges on the counts themselves.
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
                 count(*), count(*) filter (where n.is_correct))::public.prediction_evaluation_counts
        from new_rows n
       where n.actual_label is not null and n.evaluated_at is not null
       group by public.evaluation_hour(n.evaluated_at), n.model_version, n.reject_reason, n.feature_keys_hash);
  end if;
  if tg_op <> 'INSERT' then
    changes := changes || array(
      select row(public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_keys_hash,
                 -count(*), -count(*) filter (where o.is_correct))::public.prediction_evaluation_counts
        from old_rows o
       where o.actual_label is not null and o.evaluated_at is not null
       group by public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_keys_hash);
  end if;
  insert into public.prediction_evaluation_counts as c
         (hour, model_version, reject_reason, feature_keys_hash, row_count, correct_count)
  select d.hour, d.model_version, d.reject_reason, d.feature_keys_hash, sum(d.row_count), sum(d.correct_count)
    from unnest(changes) d
   group by 1, 2, 3, 4
  having sum(d.row_count) <> 0 or sum(d.correct_count) <> 0
   order by 1, 2, 3, 4
  on conflict on constraint prediction_evaluation_counts_key do update
     set row_count = c.row_count + excluded.row_count,
         correct_count = c.correct_count + excluded.correct_count;
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

-- Rebuild from the log, with writers held off so no row is counted twice or missed.
lock table public.prediction_evaluations in share mode;
truncate public.prediction_evaluation_counts;
insert into public.prediction_evaluation_counts
       (hour, model_version, reject_reason, feature_keys_hash, row_count, correct_count)
select public.evaluation_hour(evaluated_at), model_version, reject_reason, feature_keys_hash,
       count(*), count(*) filter (where is_correct)
  from public.prediction_evaluations
 where actual_label is not null and evaluated_at is not null
 group by 1, 2, 3, 4;
insert into public.prediction_feature_key_sets (feature_keys_hash, feature_names)
select distinct on (feature_keys_hash) feature_keys_hash, array(select jsonb_object_keys(features) order by 1)
  from public.prediction_evaluations
 where feature_keys_hash is not null
 order by feature_keys_hash
on conflict do nothing;

-- The partial hours are read from the window index: with model_version included, index-only.
drop index if exists public.prediction_evaluations_window_idx;
create index prediction_evaluations_window_idx
  on public.prediction_evaluations (evaluated_at)
  include (is_correct, reject_reason, feature_keys_hash, model_version, id)
  where actual_label is not null;

-- Counts over the evaluated rows of [p_start, p_end) per model version, reject reason and
-- feature-key set: whole hours from the counts table, the partial hours at either end from the log.
create or replace function public.evaluation_window_counts(p_start timestamptz, p_end timestamptz)
returns table (model_version text, reject_reason text, feature_keys_hash bigint, row_count bigint,
               correct_count bigint)
language plpgsql stable
as $$
declare
  -- Whole hours cover [first_hour, end_hour): none when the range lies within one or two hours.
  first_hour timestamptz := least(public.evaluation_hour(p_start - interval '1 microsecond') + interval '1 hour', p_end);
  end_hour timestamptz := greatest(public.evaluation_hour(p_end), first_hour);
begin
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
language sql stable
as $$
  select coalesce(sum(w.row_count), 0)::bigint, coalesce(sum(w.correct_count), 0)::bigint
    from public.evaluation_window_counts(p_start, p_end) w
   where w.reject_reason is null and (p_model_version is null or w.model_version = p_model_version)
$$;

-- Same signature and result as in 20261126000100_supabase_rpc.sql, from the counts: the
-- train part [p_start, p_holdout_start) and the holdout part [p_holdout_start, p_end).
create or replace function public.summarize_evaluation_window(
  p_start timestamptz, p_end timestamptz, p_holdout_start timestamptz, p_feature_names text[]
) returns table (reason text, row_count bigint, correct bigint, train_rows bigint, train_correct bigint)
language sql stable
as $$
  with split as (
    select greatest(p_start, least(p_holdout_start, p_end)) as at
  ), counts as (
    select w.*, true as train from split, public.evaluation_window_counts(p_start, split.at) w
    union all
    select w.*, false from split, public.evaluation_window_counts(split.at, p_end) w
  )
  select coalesce(c.reject_reason,
                  case when k.feature_names @> p_feature_names then null else 'feature_missing' end),
         sum(c.row_count)::bigint, sum(c.correct_count)::bigint,
         coalesce(sum(c.row_count) filter (where c.train), 0)::bigint,
         coalesce(sum(c.correct_count) filter (where c.train), 0)::bigint
    from counts c left join public.prediction_feature_key_sets k using (feature_keys_hash)
   group by 1
  having sum(c.row_count) > 0
$$;

-- Only the triggers write these; service_role (the backend) may read them, nobody else.
alter table public.prediction_evaluation_counts enable row level security;
alter table public.prediction_feature_key_sets enable row level security;
revoke all on public.prediction_evaluation_counts, public.prediction_feature_key_sets from public, anon, authenticated;
grant select on public.prediction_evaluation_counts, public.prediction_feature_key_sets to service_role;
revoke execute on function public.evaluation_hour(timestamptz), public.count_prediction_evaluations(),
  public.clear_prediction_evaluation_counts(), public.evaluation_window_counts(timestamptz, timestamptz)
  from public, anon, authenticated;
grant execute on function public.evaluation_hour(timestamptz), public.evaluation_window_counts(timestamptz, timestamptz)
  to service_role;
