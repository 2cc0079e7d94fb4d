-- reinforcement-loop: the retraining request queue (claim, recover, finish), run write-back and
-- the accuracy count behind the decay trigger. Every state change that must be atomic lives here,
-- so the PostgreSQL backend (psycopg) and the Supabase backend (PostgREST `.rpc()`) share it.
-- Idempotent: safe to apply more than once.

alter table public.model_retraining_requests
  add column if not exists claimed_by     text,
  add column if not exists claim_count    integer not null default 0,
  add column if not exists dagster_run_id text;

comment on column public.model_retraining_requests.claimed_by is
  'Which sensor (name, host, process) last moved the request to processing.';
comment on column public.model_retraining_requests.claim_count is
  'How many times the request was claimed; a request re-queued too often is failed.';
comment on column public.model_retraining_requests.dagster_run_id is
  'The Dagster run that carries the request, set when that run starts.';
comment on column public.model_retraining_requests.processed_at is
  'When a retraining run picked the request up (or, for a request that never ran, when it ended).';

create index if not exists model_retraining_requests_claimed_idx
  on public.model_retraining_requests (claimed_at)
  where status = 'processing';

create index if not exists model_retraining_requests_created_idx
  on public.model_retraining_requests (created_at desc);

-- Moves up to p_limit pending requests to processing: highest priority first, then oldest.
-- Rows another transaction is claiming are skipped, not waited for, so concurrent sensors get
-- disjoint sets and none is handed out twice. The order of the returned rows is not defined.
create or replace function public.claim_retraining_requests(p_limit integer, p_claimed_by text)
returns setof public.model_retraining_requests
language sql
as $$
  with next_requests as (
    select id
      from public.model_retraining_requests
     where status = 'pending'
     order by case priority when 'high' then 0 when 'normal' then 1 else 2 end, created_at, id
     limit greatest(p_limit, 0)
       for update skip locked
  )
  update public.model_retraining_requests as r
     set status = 'processing',
         claimed_at = now(),
         claimed_by = p_claimed_by,
         claim_count = r.claim_count + 1
    from next_requests
   where r.id = next_requests.id
  returning r.*
$$;

-- Puts claims back in the queue: the requests in p_ids that p_claimed_by still holds and whose run
-- has not started. Used by a sensor tick that fails after claiming. Returns how many went back.
create or replace function public.release_retraining_requests(p_ids uuid[], p_claimed_by text)
returns integer
language sql
as $$
  with released as (
    update public.model_retraining_requests
       set status = 'pending', claimed_at = null, claimed_by = null
     where id = any (p_ids)
       and status = 'processing'
       and claimed_by = p_claimed_by
       and dagster_run_id is null
    returning 1
  )
  select count(*)::integer from released
$$;

-- Recovers claims whose run never started: of the requests in p_ids, those still processing,
-- claimed more than p_stale_after ago and with no run attached go back to pending, or are failed
-- once they have been claimed p_max_claims times. The caller passes only requests it found no
-- live Dagster run for; the conditions are checked again here, under the row lock.
create or replace function public.recover_stale_retraining_requests(
  p_ids uuid[], p_stale_after interval, p_max_claims integer
) returns setof public.model_retraining_requests
language sql
as $$
  update public.model_retraining_requests
     set status = case when claim_count >= p_max_claims then 'failed' else 'pending' end,
         error_message = case
           when claim_count >= p_max_claims then format(
             'claimed %s times but no retraining run ever started (last claim by %s at %s)',
             claim_count, coalesce(claimed_by, 'unknown'), claimed_at)
           else format('re-queued: no retraining run started within %s of the claim by %s at %s',
                       p_stale_after, coalesce(claimed_by, 'unknown'), claimed_at)
         end,
         processed_at = case when claim_count >= p_max_claims then now() end,
         claimed_at = case when claim_count >= p_max_claims then claimed_at end,
         claimed_by = case when claim_count >= p_max_claims then claimed_by end
   where id = any (p_ids)
     and status = 'processing'
     and claimed_at < now() - p_stale_after
     and dagster_run_id is null
  returning *
$$;

-- The request as it stands, or an error naming the unknown id.
create or replace function public.existing_retraining_request(p_request_id uuid)
returns public.model_retraining_requests
language plpgsql stable
as $$
declare
  request public.model_retraining_requests;
begin
  select * into request from public.model_retraining_requests where id = p_request_id;
  if not found then
    raise exception 'unknown retraining request %', p_request_id using errcode = 'no_data_found';
  end if;
  return request;
end
$$;

-- Links a request to the Dagster run carrying it, when that run starts (a request re-queued while
-- its run was waiting to launch becomes processing again). A request that has ended (cancelled,
-- failed, completed) or belongs to another run is returned unchanged.
create or replace function public.attach_retraining_run(p_request_id uuid, p_dagster_run_id text)
returns public.model_retraining_requests
language plpgsql
as $$
declare
  request public.model_retraining_requests;
begin
  update public.model_retraining_requests as r
     set status = 'processing',
         claimed_at = coalesce(r.claimed_at, now()),
         dagster_run_id = p_dagster_run_id,
         retraining_run_id = coalesce(
           (select id from public.model_retraining_runs where dagster_run_id = p_dagster_run_id),
           r.retraining_run_id),
         processed_at = coalesce(r.processed_at, now())
   where r.id = p_request_id
     and r.status in ('pending', 'processing')
     and (r.dagster_run_id is null or r.dagster_run_id = p_dagster_run_id)
  returning * into request;
  if not found then
    request := public.existing_retraining_request(p_request_id);
  end if;
  return request;
end
$$;

-- Ends a request: completed, failed or cancelled, with a message. Terminal requests never change
-- again, so a repeated or late call is harmless. Links the run row when the run is known.
create or replace function public.finish_retraining_request(
  p_request_id uuid, p_status text, p_error_message text default null, p_dagster_run_id text default null
) returns public.model_retraining_requests
language plpgsql
as $$
declare
  request public.model_retraining_requests;
begin
  if p_status is null or p_status not in ('completed', 'failed', 'cancelled') then
    raise exception 'a retraining request cannot end as %', coalesce(p_status, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  update public.model_retraining_requests as r
     set status = p_status,
         error_message = p_error_message,
         processed_at = coalesce(r.processed_at, now()),
         dagster_run_id = coalesce(p_dagster_run_id, r.dagster_run_id),
         retraining_run_id = coalesce(
           (select id from public.model_retraining_runs
             where dagster_run_id = coalesce(p_dagster_run_id, r.dagster_run_id)),
           r.retraining_run_id)
   where r.id = p_request_id
     and r.status in ('pending', 'processing')
  returning * into request;
  if not found then
    request := public.existing_retraining_request(p_request_id);
  end if;
  return request;
end
$$;

-- Records that a Dagster run ended badly, in one transaction: the run's row (created if the run
-- died before writing one) becomes p_run_status with the error, keeping a message the run already
-- wrote itself, and its request (if any) ends as p_request_status.
create or replace function public.record_retraining_run_end(
  p_dagster_run_id text, p_run_status text, p_error_message text, p_source text,
  p_request_id uuid default null, p_triggered_by uuid default null, p_request_status text default null
) returns public.model_retraining_runs
language plpgsql
as $$
declare
  run public.model_retraining_runs;
begin
  insert into public.model_retraining_runs
      (dagster_run_id, source, status, error_message, completed_at, triggered_by, request_id)
  values (p_dagster_run_id, p_source, p_run_status, p_error_message, now(), p_triggered_by, p_request_id)
  on conflict (dagster_run_id) do update
     set status = excluded.status,
         error_message = case
           when model_retraining_runs.status = excluded.status and model_retraining_runs.error_message is not null
             then model_retraining_runs.error_message
           else excluded.error_message
         end,
         completed_at = coalesce(model_retraining_runs.completed_at, excluded.completed_at)
  returning * into run;
  if p_request_id is not null and p_request_status is not null then
    perform public.finish_retraining_request(p_request_id, p_request_status, run.error_message, p_dagster_run_id);
  end if;
  return run;
end
$$;

-- How many usable evaluated predictions [p_start, p_end) holds and how many were right,
-- optionally only those of one model version: the decay trigger's input, counted in place.
-- Redefined in 20261126120000_evaluation_counts.sql to read hourly counts.
create or replace function public.evaluation_accuracy(
  p_start timestamptz, p_end timestamptz, p_model_version text default null
) returns table (evaluated bigint, correct bigint)
language sql stable
as $$
  select count(*), count(*) filter (where is_correct)
    from public.prediction_evaluations
   where evaluated_at >= p_start and evaluated_at < p_end
     and actual_label is not null and reject_reason is null
     and (p_model_version is null or model_version = p_model_version)
$$;
