-- As in 20261206000000_prediction_counts.sql, with the counts compacted once for all the days, not
-- once per day: the Monitoring page's chart of accuracy per day (8 days: 24 ms before, 19 ms after,
-- timed in turn on one connection; docs/benchmarks.md, the Monitoring page).
create or replace function public.evaluation_daily_accuracy(p_start timestamptz, p_end timestamptz)
returns table (day date, evaluated bigint, correct bigint)
language plpgsql volatile
as $$
begin
  if not p_start < p_end then
    return;
  end if;
  perform public.compact_evaluation_counts();
  return query
  select (d at time zone 'UTC')::date,
         coalesce(sum(w.row_count) filter (where w.reject_reason is null), 0)::bigint,
         coalesce(sum(w.correct_count) filter (where w.reject_reason is null), 0)::bigint
    from generate_series(date_trunc('day', p_start at time zone 'UTC') at time zone 'UTC',
                         p_end - interval '1 microsecond', interval '24 hours') d
    left join lateral public.evaluation_window_counts(greatest(p_start, d), least(p_end, d + interval '24 hours')) w
      on true
   group by d
   order by 1;
end
$$;
