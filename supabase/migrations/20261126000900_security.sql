-- Who may do what, for Supabase and for every other backend. Runs after the migrations before it;
-- later ones set the privileges of the tables and functions they add themselves.
-- On plain PostgreSQL the store first creates the roles and the `auth` schema Supabase provides
-- (reinforcement_assets/supabase_environment.py), so these statements apply everywhere.
--
--   service_role   everything (it bypasses row level security; the backend uses it)
--   authenticated  insert a retraining request as itself, read its own requests, read runs and
--                  model versions; nothing else
--   anon           nothing
--
-- Idempotent: policies are dropped and re-created, grants and revokes repeat harmlessly.

-- Row level security on every table of the schema, present and future ones included when this
-- file is re-run.
do $$
declare
  t regclass;
begin
  for t in select c.oid::regclass from pg_class c
            where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
  loop
    execute format('alter table %s enable row level security', t);
  end loop;
end
$$;

grant usage on schema public to anon, authenticated, service_role;

-- Table privileges: Supabase grants everything to anon and authenticated by default; take it back
-- and grant only what the policies below are for.
revoke all on all tables in schema public from anon, authenticated;
revoke all on all sequences in schema public from anon, authenticated;
grant all on all tables in schema public to service_role;
grant usage, select on all sequences in schema public to service_role;

grant select on public.model_retraining_runs, public.model_versions to authenticated;
grant select on public.model_retraining_requests to authenticated;
-- Only these columns: status, claims and results stay the backend's to set.
grant insert (requested_by, reason, priority, options) on public.model_retraining_requests to authenticated;

drop policy if exists "users insert their own requests" on public.model_retraining_requests;
create policy "users insert their own requests" on public.model_retraining_requests
  for insert to authenticated
  with check (requested_by = (select auth.uid()));

drop policy if exists "users read their own requests" on public.model_retraining_requests;
create policy "users read their own requests" on public.model_retraining_requests
  for select to authenticated
  using (requested_by = (select auth.uid()));

drop policy if exists "users read runs" on public.model_retraining_runs;
create policy "users read runs" on public.model_retraining_runs
  for select to authenticated
  using (true);

drop policy if exists "users read model versions" on public.model_versions;
create policy "users read model versions" on public.model_versions
  for select to authenticated
  using (true);

-- Functions (promotion, claims, statistics) are the backend's: only service_role may execute them,
-- including those later migrations create as the same owner.
revoke execute on all functions in schema public from public, anon, authenticated;
grant execute on all functions in schema public to service_role;
alter default privileges in schema public revoke execute on functions from public, anon, authenticated;
alter default privileges in schema public grant execute on functions to service_role;

-- The artifact bucket, private, where Supabase Storage is installed (on Supabase itself).
do $$
begin
  if to_regclass('storage.buckets') is not null then
    execute $sql$
      insert into storage.buckets (id, name, public, file_size_limit)
      values ('reinforcement-artifacts', 'reinforcement-artifacts', false, 52428800)
      on conflict (id) do nothing
    $sql$;
  end if;
end
$$;
