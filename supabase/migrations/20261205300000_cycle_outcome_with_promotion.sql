-- Registry and run rows agree, whatever fails when.
--
-- 1. A promotion and the outcome of the run that earned it commit together: promote_model_version
--    takes the run's row (fields and metrics, as update_retraining_run does) and the candidates'
--    registry metrics, and writes them in the transaction that swaps the champion. A database that
--    dies right after the promotion can no longer leave a champion whose run row says `failed`.
-- 2. record_retraining_run_end (the failure write-back of the run itself, its failure hook and the
--    run-failure sensor) never turns a run whose row is already `completed` or `skipped` into a
--    failure: the cycle's outcome stands, the later error becomes a note, and its request completes.

drop function if exists public.promote_model_version(text, text, double precision, text, boolean);

create or replace function public.promote_model_version(
  p_version text, p_reason text, p_reference_accuracy double precision default null,
  p_expected_champion text default null, p_check_champion boolean default false,
  p_dagster_run_id text default null, p_run_fields jsonb default null, p_run_metrics jsonb default null,
  p_model_metrics jsonb default null
) returns public.model_versions
language plpgsql
as $$
declare
  current_champion text;
  pruned_at timestamptz;
  promoted public.model_versions;
  entry record;
begin
  perform pg_advisory_xact_lock(hashtext('public.model_versions champion'));
  select v.artifact_pruned_at into pruned_at from public.model_versions v where v.version = p_version;
  if not found then
    raise exception 'unknown model version %', p_version using errcode = 'no_data_found';
  end if;
  if pruned_at is not null then
    raise exception 'model version %''s file was pruned on % UTC; it cannot be restored',
      p_version, to_char(pruned_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI')
      using errcode = 'object_not_in_prerequisite_state';
  end if;
  select version into current_champion from public.model_versions where is_champion;
  if p_check_champion and current_champion is distinct from p_expected_champion then
    -- The swap is lost: nothing of the run is written here, the caller records what happened.
    select * into promoted from public.model_versions where is_champion;
    return promoted;
  end if;
  update public.model_versions set is_champion = false where is_champion and version <> p_version;
  update public.model_versions
     set is_champion = true,
         promoted_at = now(),
         promotion_reason = p_reason,
         reference_accuracy = coalesce(p_reference_accuracy, reference_accuracy)
   where version = p_version
  returning * into promoted;
  for entry in select key, value from jsonb_each(coalesce(p_model_metrics, '{}'::jsonb)) loop
    perform public.merge_model_metrics(entry.key, entry.value);
  end loop;
  if p_dagster_run_id is not null then
    perform public.update_retraining_run(p_dagster_run_id, coalesce(p_run_fields, '{}'::jsonb), p_run_metrics);
  end if;
  return promoted;
end
$$;

create or replace function public.record_retraining_run_end(
  p_dagster_run_id text, p_run_status text, p_error_message text, p_source text,
  p_request_id uuid default null, p_triggered_by uuid default null, p_request_status text default null
) returns public.model_retraining_runs
language plpgsql
as $$
declare
  run public.model_retraining_runs;
  settled boolean;
begin
  insert into public.model_retraining_runs
      (dagster_run_id, source, status, error_message, completed_at, triggered_by, request_id)
  values (p_dagster_run_id, p_source, p_run_status, p_error_message, now(), p_triggered_by, p_request_id)
  on conflict (dagster_run_id) do update
     set status = case when model_retraining_runs.status in ('completed', 'skipped')
                       then model_retraining_runs.status else excluded.status end,
         error_message = case
           when model_retraining_runs.status in ('completed', 'skipped')
             then coalesce(model_retraining_runs.error_message,
                           'after the cycle was recorded: ' || excluded.error_message)
           when model_retraining_runs.status = excluded.status and model_retraining_runs.error_message is not null
             then model_retraining_runs.error_message
           else excluded.error_message
         end,
         completed_at = coalesce(model_retraining_runs.completed_at, excluded.completed_at)
  returning * into run;
  settled := run.status in ('completed', 'skipped') and run.status is distinct from p_run_status;
  if p_request_id is not null and p_request_status is not null then
    perform public.finish_retraining_request(
      p_request_id, case when settled then 'completed' else p_request_status end, run.error_message,
      p_dagster_run_id);
  end if;
  return run;
end
$$;

revoke execute on function public.promote_model_version(text, text, double precision, text, boolean, text, jsonb,
  jsonb, jsonb) from public, anon, authenticated;
grant execute on function public.promote_model_version(text, text, double precision, text, boolean, text, jsonb,
  jsonb, jsonb) to service_role;
