-- Requesters cancel their own pending requests, and one user holds at most a capped number of
-- pending requests. Both are enforced in the database, so a web client (supabase-js, as
-- `authenticated`) gets the same answers as the backend. Idempotent: safe to apply more than once.

-- The project's settings that the database itself enforces: one row.
create table if not exists public.reinforcement_settings (
  singleton                     boolean primary key default true check (singleton),
  max_pending_requests_per_user integer not null default 5
                                  check (max_pending_requests_per_user >= 1)
);

comment on table public.reinforcement_settings is
  'Settings the database enforces (one row). Change with e.g. '
  '`update public.reinforcement_settings set max_pending_requests_per_user = 10;`';
comment on column public.reinforcement_settings.max_pending_requests_per_user is
  'How many pending retraining requests one requester (requested_by) may hold; an insert beyond it is refused.';

insert into public.reinforcement_settings default values on conflict do nothing;

alter table public.reinforcement_settings enable row level security;
revoke all on public.reinforcement_settings from public, anon, authenticated;
grant all on public.reinforcement_settings to service_role;

-- Refuses a new pending request of a requester who already holds the cap. Requests without a
-- requester (the backend's, the CLI's) are not capped. A second insert of an existing id (a retried
-- upsert that will do nothing) is let through. Concurrent inserts of one requester are serialised
-- by a transaction lock on the requester, so two at once cannot both pass.
create or replace function public.enforce_pending_request_cap()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  cap integer;
  held integer;
begin
  if new.requested_by is null or new.status is distinct from 'pending' then
    return new;
  end if;
  if exists (select 1 from public.model_retraining_requests where id = new.id) then
    return new;
  end if;
  perform pg_advisory_xact_lock(hashtext('public.model_retraining_requests pending ' || new.requested_by::text));
  select s.max_pending_requests_per_user into cap from public.reinforcement_settings s where s.singleton;
  cap := coalesce(cap, 5);
  select count(*) into held
    from public.model_retraining_requests
   where requested_by = new.requested_by and status = 'pending';
  if held >= cap then
    raise exception 'user % already has % pending retraining requests, the most one user may hold (max_pending_requests_per_user = %)',
      new.requested_by, held, cap
      using errcode = 'check_violation',
            hint = 'cancel one (reinforcement cancel ID, or the rpc cancel_my_retraining_request) or wait until one has run';
  end if;
  return new;
end
$$;

drop trigger if exists model_retraining_requests_pending_cap on public.model_retraining_requests;
create trigger model_retraining_requests_pending_cap
  before insert on public.model_retraining_requests
  for each row execute function public.enforce_pending_request_cap();

-- Cancels a pending request, so that no claim ever takes it: the backend's (service_role) call.
-- A request already cancelled is returned as it is; one that is processing, completed or failed
-- is refused by name (a processing request's run may have started: cancel that run in Dagster).
create or replace function public.cancel_retraining_request(
  p_request_id uuid, p_message text default 'cancelled by its requester'
) returns public.model_retraining_requests
language plpgsql
as $$
declare
  request public.model_retraining_requests;
begin
  update public.model_retraining_requests as r
     set status = 'cancelled', error_message = p_message, processed_at = now()
   where r.id = p_request_id and r.status = 'pending'
  returning * into request;
  if found then
    return request;
  end if;
  select * into request from public.model_retraining_requests where id = p_request_id;
  if not found then
    raise exception 'unknown retraining request %', p_request_id;
  end if;
  if request.status <> 'cancelled' then
    raise exception 'retraining request % is %, not pending: only a pending request can be cancelled',
      p_request_id, request.status
      using hint = case when request.status = 'processing'
                        then 'its run may have started; cancel that run in Dagster' end;
  end if;
  return request;
end
$$;

-- The same for a signed-in user (`authenticated`), on their own requests only: another user's
-- request is answered as unknown, so ids cannot be probed.
create or replace function public.cancel_my_retraining_request(p_request_id uuid)
returns public.model_retraining_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
begin
  if caller is null then
    raise exception 'sign in to cancel a retraining request' using errcode = 'insufficient_privilege';
  end if;
  if not exists (select 1 from public.model_retraining_requests
                  where id = p_request_id and requested_by = caller) then
    raise exception 'unknown retraining request %', p_request_id;
  end if;
  return public.cancel_retraining_request(p_request_id, 'cancelled by its requester');
end
$$;

revoke execute on function public.enforce_pending_request_cap() from public, anon, authenticated;
revoke execute on function public.cancel_retraining_request(uuid, text) from public, anon, authenticated;
revoke execute on function public.cancel_my_retraining_request(uuid) from public, anon;
grant execute on function public.enforce_pending_request_cap(), public.cancel_retraining_request(uuid, text)
  to service_role;
grant execute on function public.cancel_my_retraining_request(uuid) to authenticated, service_role;
