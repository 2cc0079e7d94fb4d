-- Counts by when a prediction was made: per UTC hour of predicted_at, how many predictions, how
-- many of them have an outcome (actual_label and evaluated_at set) and how many of those were
-- evaluated before they were predicted (evaluated_at < predicted_at: a clock or pipeline bug; they
-- stay usable, they are only counted). Kept by the statement triggers of prediction_evaluation_counts,
-- so an outcome set later moves a row from waiting to evaluated in its predicted_at hour. Rows with
-- no predicted_at are in no hour and not counted here (they are still in the evaluated_at counts).
-- Idempotent: re-running it recounts these counts.

create table if not exists public.prediction_counts (
  hour            timestamptz not null,
  predictions     bigint not null,
  evaluated       bigint not null,
  evaluated_early bigint not null,
  compacted       boolean not null default false
);

create index if not exists prediction_counts_hour_idx on public.prediction_counts (hour);

create index if not exists prediction_counts_appended_idx on public.prediction_counts (hour) where not compacted;

comment on table public.prediction_counts is
  'Predictions of prediction_evaluations per UTC hour of predicted_at, those with an outcome, and those '
  'evaluated before they were predicted; kept by the triggers of prediction_evaluation_counts (rows of an hour add up).';

-- As in 20261203000000_confusion_counts.sql, and the statement's changes per predicted_at hour
-- appended to prediction_counts.
create or replace function public.count_prediction_evaluations() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  changes public.prediction_evaluation_counts[] := '{}';
  pairs public.prediction_confusion_counts[] := '{}';
  made public.prediction_counts[] := '{}';
begin
  if tg_op <> 'DELETE' then
    insert into public.prediction_feature_type_sets (feature_types_hash, feature_types)
    select distinct on (n.feature_types_hash) n.feature_types_hash, public.evaluation_feature_types(n.features)
      from new_rows n
     where n.feature_types_hash is not null
       and not exists (select from public.prediction_feature_type_sets k
                        where k.feature_types_hash = n.feature_types_hash)
     order by n.feature_types_hash
    on conflict do nothing;
    changes := array(
      select row(public.evaluation_hour(n.evaluated_at), n.model_version, n.reject_reason, n.feature_types_hash,
                 count(*), count(*) filter (where n.is_correct), false)::public.prediction_evaluation_counts
        from new_rows n
       where n.actual_label is not null and n.evaluated_at is not null
       group by public.evaluation_hour(n.evaluated_at), n.model_version, n.reject_reason, n.feature_types_hash);
    pairs := array(
      select row(public.evaluation_hour(n.evaluated_at), n.model_version, n.actual_label, n.predicted_label,
                 count(*), false)::public.prediction_confusion_counts
        from new_rows n
       where n.actual_label is not null and n.evaluated_at is not null and n.reject_reason is null
       group by public.evaluation_hour(n.evaluated_at), n.model_version, n.actual_label, n.predicted_label);
    made := array(
      select row(public.evaluation_hour(n.predicted_at), count(*),
                 count(*) filter (where n.actual_label is not null and n.evaluated_at is not null),
                 count(*) filter (where n.actual_label is not null and n.evaluated_at < n.predicted_at),
                 false)::public.prediction_counts
        from new_rows n
       where n.predicted_at is not null
       group by public.evaluation_hour(n.predicted_at));
  end if;
  if tg_op <> 'INSERT' then
    changes := changes || array(
      select row(public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_types_hash,
                 -count(*), -count(*) filter (where o.is_correct), false)::public.prediction_evaluation_counts
        from old_rows o
       where o.actual_label is not null and o.evaluated_at is not null
       group by public.evaluation_hour(o.evaluated_at), o.model_version, o.reject_reason, o.feature_types_hash);
    pairs := pairs || array(
      select row(public.evaluation_hour(o.evaluated_at), o.model_version, o.actual_label, o.predicted_label,
                 -count(*), false)::public.prediction_confusion_counts
        from old_rows o
       where o.actual_label is not null and o.evaluated_at is not null and o.reject_reason is null
       group by public.evaluation_hour(o.evaluated_at), o.model_version, o.actual_label, o.predicted_label);
    made := made || array(
      select row(public.evaluation_hour(o.predicted_at), -count(*),
                 -count(*) filter (where o.actual_label is not null and o.evaluated_at is not null),
                 -count(*) filter (where o.actual_label is not null and o.evaluated_at < o.predicted_at),
                 false)::public.prediction_counts
        from old_rows o
       where o.predicted_at is not null
       group by public.evaluation_hour(o.predicted_at));
  end if;
  insert into public.prediction_evaluation_counts
         (hour, model_version, reject_reason, feature_types_hash, row_count, correct_count)
  select d.hour, d.model_version, d.reject_reason, d.feature_types_hash, sum(d.row_count), sum(d.correct_count)
    from unnest(changes) d
   group by 1, 2, 3, 4
  having sum(d.row_count) <> 0 or sum(d.correct_count) <> 0;
  insert into public.prediction_confusion_counts (hour, model_version, actual_label, predicted_label, row_count)
  select d.hour, d.model_version, d.actual_label, d.predicted_label, sum(d.row_count)
    from unnest(pairs) d
   group by 1, 2, 3, 4
  having sum(d.row_count) <> 0;
  insert into public.prediction_counts (hour, predictions, evaluated, evaluated_early)
  select d.hour, sum(d.predictions), sum(d.evaluated), sum(d.evaluated_early)
    from unnest(made) d
   group by 1
  having sum(d.predictions) <> 0 or sum(d.evaluated) <> 0 or sum(d.evaluated_early) <> 0;
  return null;
end
$$;

create or replace function public.clear_prediction_evaluation_counts() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  truncate public.prediction_evaluation_counts, public.prediction_confusion_counts, public.prediction_counts;
  return null;
end
$$;

-- As in 20261203000000_confusion_counts.sql, and the counts by predicted_at folded the same way.
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
           (hour, model_version, reject_reason, feature_types_hash, row_count, correct_count, compacted)
    select hour, model_version, reject_reason, feature_types_hash, sum(row_count), sum(correct_count), true
      from taken
     group by 1, 2, 3, 4
    having sum(row_count) <> 0 or sum(correct_count) <> 0
  )
  select count(*) into folded from hours;
  -- Folded with the cap: per hour and version the most frequent pairs, ties by label. A pair adding
  -- up to nothing or less is dropped (less happens only when its earlier rows were beyond the cap),
  -- so a kept count never exceeds the true one.
  with hours as (
    select distinct hour from public.prediction_confusion_counts where not compacted
  ), taken as (
    delete from public.prediction_confusion_counts c using hours h where c.hour = h.hour returning c.*
  ), summed as (
    select hour, model_version, actual_label, predicted_label, sum(row_count) as n,
           row_number() over (partition by hour, model_version
                              order by sum(row_count) desc, actual_label, predicted_label) as rank
      from taken
     group by 1, 2, 3, 4
    having sum(row_count) > 0
  )
  insert into public.prediction_confusion_counts
         (hour, model_version, actual_label, predicted_label, row_count, compacted)
  select hour, model_version, actual_label, predicted_label, n, true
    from summed
   where rank <= public.evaluation_confusion_pairs_per_hour();
  with hours as (
    select distinct hour from public.prediction_counts where not compacted
  ), taken as (
    delete from public.prediction_counts c using hours h where c.hour = h.hour returning c.*
  )
  insert into public.prediction_counts (hour, predictions, evaluated, evaluated_early, compacted)
  select hour, sum(predictions), sum(evaluated), sum(evaluated_early), true
    from taken
   group by 1
  having sum(predictions) <> 0 or sum(evaluated) <> 0 or sum(evaluated_early) <> 0;
  return folded;
end
$$;

-- The counts by predicted_at recounted from the log (see rebuild_evaluation_counts).
create or replace function public.rebuild_prediction_counts() returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  lock table public.prediction_evaluations in share mode;
  delete from public.prediction_counts;
  insert into public.prediction_counts (hour, predictions, evaluated, evaluated_early, compacted)
  select public.evaluation_hour(predicted_at), count(*),
         count(*) filter (where actual_label is not null and evaluated_at is not null),
         count(*) filter (where actual_label is not null and evaluated_at < predicted_at), true
    from public.prediction_evaluations
   where predicted_at is not null
   group by 1;
end
$$;

-- As in 20261203000000_confusion_counts.sql, and the counts by predicted_at.
create or replace function public.rebuild_evaluation_counts() returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  lock table public.prediction_evaluations in share mode;
  delete from public.prediction_evaluation_counts;
  insert into public.prediction_evaluation_counts
         (hour, model_version, reject_reason, feature_types_hash, row_count, correct_count, compacted)
  select public.evaluation_hour(evaluated_at), model_version, reject_reason, feature_types_hash,
         count(*), count(*) filter (where is_correct), true
    from public.prediction_evaluations
   where actual_label is not null and evaluated_at is not null
   group by 1, 2, 3, 4;
  insert into public.prediction_feature_type_sets (feature_types_hash, feature_types)
  select example.feature_types_hash, public.evaluation_feature_types(e.features)
    from (select feature_types_hash, min(id) as id from public.prediction_evaluations
           where feature_types_hash is not null group by 1) example
    join public.prediction_evaluations e on e.id = example.id
  on conflict do nothing;
  perform public.rebuild_confusion_counts();
  perform public.rebuild_prediction_counts();
end
$$;

-- The backfill. Writers of the log wait while it runs (a share lock); readers do not.
select public.rebuild_prediction_counts();

-- Usable evaluated rows (as evaluation_accuracy) per UTC day overlapping [p_start, p_end), every day
-- included (zeros where none); the first and last day count only rows inside [p_start, p_end).
create or replace function public.evaluation_daily_accuracy(p_start timestamptz, p_end timestamptz)
returns table (day date, evaluated bigint, correct bigint)
language sql volatile
as $$
  select (d at time zone 'UTC')::date, a.evaluated, a.correct
    from generate_series(date_trunc('day', p_start at time zone 'UTC') at time zone 'UTC',
                         p_end - interval '1 microsecond', interval '24 hours') d
   cross join lateral public.evaluation_accuracy(greatest(p_start, d), least(p_end, d + interval '24 hours')) a
   where p_start < p_end
   order by 1
$$;

-- Predictions per UTC day of predicted_at overlapping [p_start, p_end), every day included, and how
-- many of them have an outcome by now. Whole hours: p_start and p_end are rounded down to the hour,
-- and an hour counts if it starts in the rounded range.
create or replace function public.evaluation_outcome_coverage(p_start timestamptz, p_end timestamptz)
returns table (day date, predictions bigint, evaluated bigint)
language plpgsql volatile
as $$
begin
  perform public.compact_evaluation_counts();
  return query
  select (d at time zone 'UTC')::date, coalesce(sum(c.predictions), 0)::bigint, coalesce(sum(c.evaluated), 0)::bigint
    from generate_series(date_trunc('day', p_start at time zone 'UTC') at time zone 'UTC',
                         p_end - interval '1 microsecond', interval '24 hours') d
    left join public.prediction_counts c
      on c.hour >= greatest(public.evaluation_hour(p_start), d)
     and c.hour < least(public.evaluation_hour(p_end), d + interval '24 hours')
   where p_start < p_end
   group by d
   order by 1;
end
$$;

-- Rows predicted in [p_start, p_end) (whole hours, rounded down as above) that were evaluated before
-- they were predicted.
create or replace function public.evaluation_early_count(p_start timestamptz, p_end timestamptz)
returns table (evaluated_early bigint)
language sql stable
as $$
  select coalesce(sum(c.evaluated_early), 0)::bigint
    from public.prediction_counts c
   where c.hour >= public.evaluation_hour(p_start) and c.hour < public.evaluation_hour(p_end)
$$;

-- Only the triggers and the functions above write the counts; service_role (the backend) may read
-- them and call the statistics, nobody else.
alter table public.prediction_counts enable row level security;
revoke all on public.prediction_counts from public, anon, authenticated, service_role;
grant select on public.prediction_counts to service_role;
revoke execute on function public.count_prediction_evaluations(), public.clear_prediction_evaluation_counts(),
  public.compact_evaluation_counts(), public.rebuild_prediction_counts(), public.rebuild_evaluation_counts(),
  public.evaluation_daily_accuracy(timestamptz, timestamptz),
  public.evaluation_outcome_coverage(timestamptz, timestamptz),
  public.evaluation_early_count(timestamptz, timestamptz)
  from public, anon, authenticated;
revoke execute on function public.rebuild_prediction_counts(), public.rebuild_evaluation_counts() from service_role;
grant execute on function public.compact_evaluation_counts(),
  public.evaluation_daily_accuracy(timestamptz, timestamptz),
  public.evaluation_outcome_coverage(timestamptz, timestamptz),
  public.evaluation_early_count(timestamptz, timestamptz)
  to service_role;
