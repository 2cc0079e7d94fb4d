-- Confusion counts: the hourly counts also count usable evaluated rows per (actual label, predicted
-- label), so the decay trigger can watch balanced accuracy or macro-F1 as it watches accuracy: by
-- adding up whole hours and reading only the log rows of the two partial hours at the ends, never
-- the window.
--
-- Size. At most hours x model versions x labels^2 rows, and in practice one per pair that occurs
-- (mostly the diagonal). So that a label per row (an id or free text logged as the outcome) cannot
-- make it as large as the log, compaction keeps at most `evaluation_confusion_pairs_per_hour()`
-- (1,000) pairs per hour and model version, the most frequent; the rarer ones are dropped from this
-- table only (they stay in prediction_evaluation_counts, so totals and accuracy stay exact). Below
-- that cap, the counts are exact: 31 labels with every label confused with every other fit.
-- Idempotent: re-running it recounts the confusion counts.

create table if not exists public.prediction_confusion_counts (
  hour            timestamptz not null,
  model_version   text,
  actual_label    text not null,
  predicted_label text not null,
  row_count       bigint not null,
  compacted       boolean not null default false
);

create index if not exists prediction_confusion_counts_hour_idx
  on public.prediction_confusion_counts (hour, model_version);

create index if not exists prediction_confusion_counts_appended_idx
  on public.prediction_confusion_counts (hour) where not compacted;

comment on table public.prediction_confusion_counts is
  'Usable evaluated rows of prediction_evaluations per UTC hour, model version, actual and predicted label; '
  'kept by the triggers of prediction_evaluation_counts (rows of a key add up; at most '
  'evaluation_confusion_pairs_per_hour() pairs per hour and version once compacted).';

create or replace function public.evaluation_confusion_pairs_per_hour() returns integer
language sql immutable parallel safe
as $$ select 1000 $$;

-- As in 20261202000000_feature_types.sql, and the statement's changes per label pair appended to
-- prediction_confusion_counts. One trigger function: the transition tables are read by one call.
create or replace function public.count_prediction_evaluations() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  changes public.prediction_evaluation_counts[] := '{}';
  pairs public.prediction_confusion_counts[] := '{}';
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
  return null;
end
$$;

create or replace function public.clear_prediction_evaluation_counts() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  truncate public.prediction_evaluation_counts, public.prediction_confusion_counts;
  return null;
end
$$;

-- As in 20261202000000_feature_types.sql, and the confusion counts folded the same way.
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
  return folded;
end
$$;

-- The confusion counts recounted from the log (see rebuild_evaluation_counts).
create or replace function public.rebuild_confusion_counts() returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  lock table public.prediction_evaluations in share mode;
  delete from public.prediction_confusion_counts;
  insert into public.prediction_confusion_counts
         (hour, model_version, actual_label, predicted_label, row_count, compacted)
  select r.hour, r.model_version, r.actual_label, r.predicted_label, r.n, true
    from (select public.evaluation_hour(evaluated_at) as hour, model_version, actual_label, predicted_label,
                 count(*) as n,
                 row_number() over (partition by public.evaluation_hour(evaluated_at), model_version
                                    order by count(*) desc, actual_label, predicted_label) as rank
            from public.prediction_evaluations
           where actual_label is not null and evaluated_at is not null and reject_reason is null
           group by 1, 2, 3, 4) r
   where r.rank <= public.evaluation_confusion_pairs_per_hour();
end
$$;

-- As in 20261202000000_feature_types.sql, and the confusion counts.
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
end
$$;

-- The backfill. Writers of the log wait while it runs (a share lock); readers do not.
select public.rebuild_confusion_counts();

-- The usable evaluated rows of [p_start, p_end) (of p_model_version only, if given): how many and
-- how many right (as evaluation_accuracy), and the counts per (actual, predicted) pair among the
-- p_max_labels most frequent labels (by rows as actual or predicted label, ties by label), as
-- arrays in one row (a PostgREST answer is capped in rows, not in array elements). Rows with a
-- label outside them, or beyond the per-hour cap, are in `evaluated` but in no pair. Whole hours
-- come from the counts, the two partial hours from the log.
create or replace function public.evaluation_confusion_counts(
  p_start timestamptz, p_end timestamptz, p_model_version text default null, p_max_labels integer default 100
) returns table (evaluated bigint, correct bigint, actual_labels text[], predicted_labels text[],
                 row_counts bigint[])
language plpgsql volatile
as $$
declare
  first_hour timestamptz := least(public.evaluation_hour(p_start - interval '1 microsecond') + interval '1 hour', p_end);
  end_hour timestamptz := greatest(public.evaluation_hour(p_end), first_hour);
begin
  evaluated := 0;
  correct := 0;
  actual_labels := '{}';
  predicted_labels := '{}';
  row_counts := '{}';
  if p_start is null or p_end is null then
    return next;  -- as `evaluated_at >= null` selected nothing
    return;
  end if;
  perform public.compact_evaluation_counts();
  select coalesce(sum(w.row_count), 0)::bigint, coalesce(sum(w.correct_count), 0)::bigint
    into evaluated, correct
    from public.evaluation_window_counts(p_start, p_end) w
   where w.reject_reason is null and (p_model_version is null or w.model_version = p_model_version);
  with pairs as (
    select p.actual_label, p.predicted_label, sum(p.row_count)::bigint as n
      from (select c.actual_label, c.predicted_label, c.row_count
              from public.prediction_confusion_counts c
             where c.hour >= first_hour and c.hour < end_hour
               and (p_model_version is null or c.model_version = p_model_version)
            union all
            select e.actual_label, e.predicted_label, 1
              from public.prediction_evaluations e
             where e.actual_label is not null and e.reject_reason is null
               and e.evaluated_at >= p_start and e.evaluated_at < first_hour
               and (p_model_version is null or e.model_version = p_model_version)
            union all
            select e.actual_label, e.predicted_label, 1
              from public.prediction_evaluations e
             where e.actual_label is not null and e.reject_reason is null
               and e.evaluated_at >= end_hour and e.evaluated_at < p_end
               and (p_model_version is null or e.model_version = p_model_version)) p
     group by 1, 2
    having sum(p.row_count) > 0
  ), labels as (
    select l.label
      from (select actual_label as label, n from pairs union all select predicted_label, n from pairs) l
     group by l.label
     order by sum(l.n) desc, l.label
     limit greatest(coalesce(p_max_labels, 100), 0)
  )
  select coalesce(array_agg(p.actual_label order by p.actual_label, p.predicted_label), '{}'),
         coalesce(array_agg(p.predicted_label order by p.actual_label, p.predicted_label), '{}'),
         coalesce(array_agg(p.n order by p.actual_label, p.predicted_label), '{}')
    into actual_labels, predicted_labels, row_counts
    from pairs p
   where p.actual_label in (select label from labels) and p.predicted_label in (select label from labels);
  return next;
end
$$;

-- Only the triggers and the functions above write the counts; service_role (the backend) may read
-- them and call the statistic, nobody else.
alter table public.prediction_confusion_counts enable row level security;
revoke all on public.prediction_confusion_counts from public, anon, authenticated, service_role;
grant select on public.prediction_confusion_counts to service_role;
revoke execute on function public.evaluation_confusion_pairs_per_hour(), public.count_prediction_evaluations(),
  public.clear_prediction_evaluation_counts(), public.compact_evaluation_counts(),
  public.rebuild_confusion_counts(), public.rebuild_evaluation_counts(),
  public.evaluation_confusion_counts(timestamptz, timestamptz, text, integer)
  from public, anon, authenticated;
revoke execute on function public.rebuild_confusion_counts(), public.rebuild_evaluation_counts() from service_role;
grant execute on function public.compact_evaluation_counts(),
  public.evaluation_confusion_counts(timestamptz, timestamptz, text, integer)
  to service_role;
