-- Functions the Supabase backend calls with `.rpc()`: work PostgREST cannot express as a single
-- table request (aggregates, upserts that keep a column, jsonb merges), done in one statement
-- where the rows are. Idempotent: `create or replace` only.

-- Counts over the evaluated rows of [p_start, p_end), grouped by why a row is set aside (null:
-- usable). Rows lacking one of p_feature_names count as 'feature_missing'. Counted per (reason,
-- feature-key set) first, then one row per key set decides which sets lack a feature, so no jsonb
-- is read per row. Redefined in 20261126120000_evaluation_counts.sql to read hourly counts instead.
create or replace function public.summarize_evaluation_window(
  p_start timestamptz, p_end timestamptz, p_holdout_start timestamptz, p_feature_names text[]
) returns table (reason text, row_count bigint, correct bigint, train_rows bigint, train_correct bigint)
language sql stable
as $$
  with key_sets as (
    select e.reject_reason, e.feature_keys_hash, min(e.id) as example,
           count(*) as n,
           count(*) filter (where e.is_correct) as correct,
           count(*) filter (where e.evaluated_at < p_holdout_start) as train,
           count(*) filter (where e.evaluated_at < p_holdout_start and e.is_correct) as train_correct
      from public.prediction_evaluations e
     where e.evaluated_at >= p_start and e.evaluated_at < p_end and e.actual_label is not null
     group by 1, 2
  )
  select coalesce(k.reject_reason, case when not e.features ?& p_feature_names then 'feature_missing' end),
         sum(k.n)::bigint, sum(k.correct)::bigint, sum(k.train)::bigint, sum(k.train_correct)::bigint
    from key_sets k join public.prediction_evaluations e on e.id = k.example
   group by 1
$$;

-- The feature-key sets of the newest p_limit usable rows of [p_start, p_end), with how many rows
-- have each: a handful of rows whatever the window's size.
create or replace function public.evaluation_feature_key_sets(
  p_start timestamptz, p_end timestamptz, p_limit integer default 1000
) returns table (feature_names text[], row_count bigint)
language sql stable
as $$
  select recent.keys, count(*)
    from (select array(select jsonb_object_keys(e.features) order by 1) as keys
            from public.prediction_evaluations e
           where e.evaluated_at >= p_start and e.evaluated_at < p_end
             and e.actual_label is not null and e.reject_reason is null
           order by e.evaluated_at desc
           limit p_limit) recent
   group by recent.keys
$$;

-- Creates the run's row as 'running', or resumes it (keeping when it first started); returns its id.
create or replace function public.start_retraining_run(
  p_dagster_run_id text, p_source text, p_triggered_by uuid default null, p_request_id uuid default null
) returns uuid
language sql volatile
as $$
  insert into public.model_retraining_runs (dagster_run_id, source, status, started_at, triggered_by, request_id)
  values (p_dagster_run_id, p_source, 'running', now(), p_triggered_by, p_request_id)
  on conflict (dagster_run_id) do update
    set status = 'running', error_message = null, completed_at = null,
        started_at = coalesce(model_retraining_runs.started_at, excluded.started_at)
  returning id
$$;

-- Sets the columns named in p_fields, merges p_metrics into metrics and stamps completed_at when
-- the status becomes terminal, in one statement. Returns the number of rows updated (0 or 1).
create or replace function public.update_retraining_run(
  p_dagster_run_id text, p_fields jsonb default '{}'::jsonb, p_metrics jsonb default null
) returns integer
language plpgsql volatile
as $$
declare
  unknown text[];
  updated integer;
begin
  select array_agg(k order by k) into unknown
    from jsonb_object_keys(coalesce(p_fields, '{}'::jsonb)) as k
   where k not in ('source', 'dataset_size', 'fine_tune_flag', 'status', 'started_at', 'completed_at',
                   'log_url', 'error_message', 'triggered_by', 'model_version', 'request_id');
  if unknown is not null then
    raise exception 'cannot set % of model_retraining_runs', array_to_string(unknown, ', ')
      using errcode = 'undefined_column';
  end if;
  update public.model_retraining_runs r
     set (source, dataset_size, fine_tune_flag, status, started_at, completed_at, log_url, error_message,
          triggered_by, model_version, request_id, metrics)
       = (select p.source, p.dataset_size, p.fine_tune_flag, p.status, p.started_at,
                 case when p_fields ->> 'status' in ('completed', 'failed', 'skipped') then now()
                      else p.completed_at end,
                 p.log_url, p.error_message, p.triggered_by, p.model_version, p.request_id,
                 r.metrics || coalesce(p_metrics, '{}'::jsonb)
            from jsonb_populate_record(r, coalesce(p_fields, '{}'::jsonb)) as p)
   where r.dagster_run_id = p_dagster_run_id;
  get diagnostics updated = row_count;
  return updated;
end
$$;

-- Merges p_metrics into the version's metrics; returns the number of rows updated (0 or 1).
create or replace function public.merge_model_metrics(p_version text, p_metrics jsonb)
returns integer
language sql volatile
as $$
  with updated as (
    update public.model_versions set metrics = metrics || coalesce(p_metrics, '{}'::jsonb)
     where version = p_version
    returning 1
  )
  select count(*)::integer from updated
$$;
