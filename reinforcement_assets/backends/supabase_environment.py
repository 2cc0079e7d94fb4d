"""What a Supabase database provides and the migrations rely on, for plain PostgreSQL.

The roles `anon`, `authenticated` and `service_role` and `auth.uid()`, as Supabase's own init
scripts define them, each created only when missing: on a Supabase database (or one set up
before) nothing changes. `apply_migrations` runs this before the migrations, so the same
policies and grants apply on the embedded server, on any Postgres URL and on Supabase.
"""

from __future__ import annotations

SUPABASE_ENVIRONMENT_SQL = """
do $$
declare
  role_name text;
  options text;
begin
  -- Roles are per server, not per database: another database may be creating them right now.
  for role_name, options in values ('anon', 'nologin noinherit'), ('authenticated', 'nologin noinherit'),
                                   ('service_role', 'nologin noinherit bypassrls') loop
    begin
      if not exists (select 1 from pg_roles where rolname = role_name) then
        execute format('create role %I %s', role_name, options);
      end if;
    exception when duplicate_object or unique_violation then null;
    end;
  end loop;

  if to_regnamespace('auth') is null then
    create schema auth;
    grant usage on schema auth to anon, authenticated, service_role;
  end if;

  if to_regprocedure('auth.uid()') is null then
    -- Supabase's definition: the `sub` claim of the request's JWT, set by PostgREST per request.
    create function auth.uid() returns uuid
    language sql stable
    as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $f$;
    grant execute on function auth.uid() to anon, authenticated, service_role;
  end if;
end
$$;
"""
