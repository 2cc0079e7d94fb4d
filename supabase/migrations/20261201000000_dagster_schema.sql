-- The schema for Dagster's own storage (runs, event logs, schedules and sensor state, written by
-- dagster-postgres) when it shares the loop's database: docs/deployment.md and deploy/dagster.yaml.
--
-- Dagster's tables must not be in `public`: on Supabase the default privileges of `public` grant
-- anon and authenticated everything on every new table, PostgREST serves `public` to anyone with
-- the anon key, and Dagster's tables have no row level security. Its event log holds run config,
-- tags, asset metadata and error messages. In `dagster` the gate is the schema itself: without
-- USAGE on it no role can reach any object in it, whatever is granted on the objects.
--
-- The schema belongs to the role applying this migration (on Supabase `postgres`, which Dagster
-- then connects as). Dagster creates its tables in it on first start, through `search_path`.
-- Idempotent: re-running it also takes back anything granted on Dagster's tables since.

create schema if not exists dagster authorization current_user;

revoke all on schema dagster from public, anon, authenticated;

revoke all on all tables in schema dagster from public, anon, authenticated;
revoke all on all sequences in schema dagster from public, anon, authenticated;
revoke all on all functions in schema dagster from public, anon, authenticated;

-- Per-schema default privileges only add to the global ones (`alter default privileges` without
-- `in schema`, which Supabase does not use); these remove any that were added for `dagster`.
alter default privileges in schema dagster revoke all on tables from public, anon, authenticated;
alter default privileges in schema dagster revoke all on sequences from public, anon, authenticated;
alter default privileges in schema dagster revoke all on functions from public, anon, authenticated;
