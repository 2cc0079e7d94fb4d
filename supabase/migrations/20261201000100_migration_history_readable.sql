-- The loop checks on first use that no migration is pending, also when it connects as a
-- least-privilege worker (a member of service_role, docs/deployment.md): let service_role read
-- the migration history the Supabase CLI keeps. Safe to run twice.
grant usage on schema supabase_migrations to service_role;
grant select on supabase_migrations.schema_migrations to service_role;
