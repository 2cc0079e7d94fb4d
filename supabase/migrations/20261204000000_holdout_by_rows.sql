-- The holdout by rows, not by clock: the newest share of a window's usable evaluated rows, in
-- (evaluated_at, id) order, so that outcomes arriving in one batch with one timestamp still split.
-- Where it starts is found from the hourly counts and one hour's rows, never by scanning the window.

-- The key (evaluated_at, id) of the first holdout row of [p_start, p_end): the newest
-- ceil(p_holdout_share × usable rows) rows are the holdout (the share clamped to [0, 1]; rows judged
-- against p_schema as `summarize_evaluation_window` judges them). With no holdout row it is
-- (p_end, 0): every row is before it. `holdout_rows`: how many rows are at or after it.
-- Mirrored by reinforcement_assets/core/records.py:holdout_size.
create or replace function public.evaluation_holdout_start(
  p_start timestamptz, p_end timestamptz, p_holdout_share double precision, p_schema jsonb, p_accepts_missing boolean
) returns table (evaluated_at timestamptz, id bigint, holdout_rows bigint)
language plpgsql stable
as $$
declare
  first_hour timestamptz := least(public.evaluation_hour(p_start - interval '1 microsecond') + interval '1 hour', p_end);
  end_hour timestamptz := greatest(public.evaluation_hour(p_end), first_hour);
  accepted bigint[];
  hours timestamptz[];  -- hours with usable rows, newest first
  counts bigint[];      -- and how many
  wanted bigint;
  i integer := 1;
  newer bigint := 0;    -- usable rows in the hours after hours[i]
begin
  if p_start is null or p_end is null then
    return;
  end if;
  accepted := array(select a.feature_types_hash
                      from public.evaluation_accepted_type_sets(p_start, p_end, p_schema, p_accepts_missing) a);
  -- Usable rows per hour: whole hours from the counts, the two partial hours from the window index.
  select coalesce(array_agg(h.hour order by h.hour desc), '{}'), coalesce(array_agg(h.n order by h.hour desc), '{}')
    into hours, counts
    from (select parts.hour, sum(parts.n)::bigint as n
            from (select c.hour, c.row_count as n
                    from public.prediction_evaluation_counts c
                   where c.hour >= first_hour and c.hour < end_hour and c.reject_reason is null
                     and c.feature_types_hash = any(accepted)
                  union all
                  select public.evaluation_hour(e.evaluated_at), 1
                    from public.prediction_evaluations e
                   where e.actual_label is not null and e.reject_reason is null
                     and e.feature_types_hash = any(accepted) and e.evaluated_at >= p_start and e.evaluated_at < first_hour
                  union all
                  select public.evaluation_hour(e.evaluated_at), 1
                    from public.prediction_evaluations e
                   where e.actual_label is not null and e.reject_reason is null
                     and e.feature_types_hash = any(accepted) and e.evaluated_at >= end_hour and e.evaluated_at < p_end) parts
           group by 1
          having sum(parts.n) > 0) h;
  wanted := (select ceil(coalesce(sum(c), 0) * greatest(0, least(1, coalesce(p_holdout_share, 0)))::numeric)::bigint
               from unnest(counts) c);
  if wanted = 0 then
    return query select p_end, 0::bigint, 0::bigint;
    return;
  end if;
  -- The hour holding the wanted-th newest row, then that row among the hour's rows.
  while newer + counts[i] < wanted loop
    newer := newer + counts[i];
    i := i + 1;
  end loop;
  return query
  select coalesce(found.evaluated_at, hours[i]), coalesce(found.id, 0::bigint), wanted
    from (select) one
    left join lateral (
      select e.evaluated_at, e.id
        from public.prediction_evaluations e
       where e.actual_label is not null and e.reject_reason is null and e.feature_types_hash = any(accepted)
         and e.evaluated_at >= greatest(p_start, hours[i]) and e.evaluated_at < least(p_end, hours[i] + interval '1 hour')
       order by e.evaluated_at desc, e.id desc
      offset wanted - newer - 1
       limit 1) found on true;
end
$$;

-- Outcomes written without an evaluated_at (a bug in a user's pipeline) are counted, not lost: few
-- rows, so a small index. Building it reads the log once, writers waiting (a SHARE lock).
create index if not exists prediction_evaluations_unevaluated_idx
  on public.prediction_evaluations (predicted_at)
  where actual_label is not null and evaluated_at is null;

drop function if exists public.summarize_evaluation_window(timestamptz, timestamptz, timestamptz, jsonb, boolean);

-- Counts over the evaluated rows of [p_start, p_end) by why a row is set aside (null: usable) and
-- on which feature, judged against p_schema; the rows before the holdout (`evaluation_holdout_start`)
-- apart, and the holdout's first key in every row. Rows with an outcome but no evaluated_at, predicted
-- in the window, are counted as `evaluated_at_missing`.
create or replace function public.summarize_evaluation_window(
  p_start timestamptz, p_end timestamptz, p_holdout_share double precision, p_schema jsonb, p_accepts_missing boolean
) returns table (reason text, feature text, row_count bigint, correct bigint, train_rows bigint,
                 train_correct bigint, holdout_evaluated_at timestamptz, holdout_id bigint)
language plpgsql volatile
as $$
declare
  split_at timestamptz;
  split_id bigint;
begin
  if p_start is null or p_end is null then
    return;
  end if;
  perform public.compact_evaluation_counts();
  select s.evaluated_at, s.id into split_at, split_id
    from public.evaluation_holdout_start(p_start, p_end, p_holdout_share, p_schema, p_accepts_missing) s;
  return query
  with counts as (
    select w.*, true as train from public.evaluation_window_counts(p_start, split_at) w
    union all
    select w.*, false from public.evaluation_window_counts(split_at, p_end) w
    union all  -- rows at the split's instant with a smaller id are before the holdout, not in it
    select e.model_version, e.reject_reason, e.feature_types_hash, side.n, side.n * e.is_correct::int, side.train
      from public.prediction_evaluations e
     cross join (values (1::bigint, true), (-1::bigint, false)) side(n, train)
     where e.actual_label is not null and e.evaluated_at = split_at and e.id < split_id
    union all  -- outcomes with no evaluated_at are in no window by it: counted by when they were predicted
    select null::text, 'evaluated_at_missing'::text, null::bigint, count(*)::bigint, 0::bigint, true
      from public.prediction_evaluations e
     where e.actual_label is not null and e.evaluated_at is null
       and e.predicted_at >= p_start and e.predicted_at < p_end
  ), type_sets as (
    select c.reject_reason, c.feature_types_hash, sum(c.row_count) as n, sum(c.correct_count) as right_n,
           coalesce(sum(c.row_count) filter (where c.train), 0) as train_n,
           coalesce(sum(c.correct_count) filter (where c.train), 0) as train_right_n
      from counts c
     group by 1, 2
  )
  select coalesce(t.reject_reason, j.reason), case when t.reject_reason is null then j.feature end,
         sum(t.n)::bigint, sum(t.right_n)::bigint, sum(t.train_n)::bigint, sum(t.train_right_n)::bigint,
         split_at, split_id
    from type_sets t
    left join public.prediction_feature_type_sets s on s.feature_types_hash = t.feature_types_hash
    left join lateral public.judge_feature_types(coalesce(s.feature_types, '{}'::jsonb), p_schema,
                                                 p_accepts_missing) j on t.reject_reason is null
   group by 1, 2
  having sum(t.n) > 0;
end
$$;

revoke execute on function
  public.evaluation_holdout_start(timestamptz, timestamptz, double precision, jsonb, boolean),
  public.summarize_evaluation_window(timestamptz, timestamptz, double precision, jsonb, boolean)
  from public, anon, authenticated;
grant execute on function
  public.evaluation_holdout_start(timestamptz, timestamptz, double precision, jsonb, boolean),
  public.summarize_evaluation_window(timestamptz, timestamptz, double precision, jsonb, boolean)
  to service_role;
