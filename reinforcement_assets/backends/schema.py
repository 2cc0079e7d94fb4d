"""The loop's schema in a database: apply the Supabase CLI migrations, or say who must.

The migrations are `supabase/migrations/`, shipped inside the package as
`reinforcement_assets/migrations` (a link to that folder in the repository, copied into wheels).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import psycopg

from .supabase_environment import SUPABASE_ENVIRONMENT_SQL

MIGRATIONS_DIR = Path(os.environ.get("REINFORCEMENT_MIGRATIONS_DIR") or str(files("reinforcement_assets") / "migrations"))
MIGRATE_HINT = "run `reinforcement migrate` as the database owner"
_MIGRATION_LOCK = 74_120_001  # pg_advisory_xact_lock key shared by every process migrating


class SchemaError(RuntimeError):
    """The database is not ready for the loop; the message says what to do."""


class HistoryUnreadable(SchemaError):
    """The connected user may not read the migration history."""


HISTORY_PRIVILEGE = "SELECT on table supabase_migrations.schema_migrations (the migration history)"


def migration_files(migrations_dir: Path = MIGRATIONS_DIR) -> list[Path]:
    files_ = sorted(migrations_dir.glob("*.sql"))
    if not files_:
        raise SchemaError(f"no migrations found in {migrations_dir}: the package is incomplete, reinstall it")
    return files_


def version_of(path: Path) -> str:
    return path.stem.partition("_")[0]


def applied_versions(conn: psycopg.Connection) -> set[str]:
    """Versions recorded in `supabase_migrations.schema_migrations` (none if the table is missing)."""
    (readable,) = conn.execute(
        "select case when to_regnamespace('supabase_migrations') is null then true"
        " when not has_schema_privilege('supabase_migrations', 'usage') then false"
        " when to_regclass('supabase_migrations.schema_migrations') is null then true"
        " else has_table_privilege('supabase_migrations.schema_migrations', 'select') end"
    ).fetchone()
    if not readable:
        raise HistoryUnreadable(HISTORY_PRIVILEGE)
    (table,) = conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone()
    return {v for (v,) in conn.execute("select version from supabase_migrations.schema_migrations")} if table else set()


def pending_migrations(conn: psycopg.Connection, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    done = applied_versions(conn)
    return [version_of(p) for p in migration_files(migrations_dir) if version_of(p) not in done]


def can_migrate(conn: psycopg.Connection) -> bool:
    """Whether the connected user may apply migrations: a superuser or the database's owner."""
    (allowed,) = conn.execute(
        "select r.rolsuper or pg_has_role(current_user, d.datdba, 'MEMBER')"
        " from pg_roles r, pg_database d where r.rolname = current_user and d.datname = current_database()"
    ).fetchone()
    return bool(allowed)


def apply_migrations(url: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded; returns the versions applied.

    Recorded in `supabase_migrations.schema_migrations`, the table the Supabase CLI uses, so
    `supabase db push` and this function agree on what ran. Concurrent callers serialise on an
    advisory lock. What Supabase provides (roles, `auth.uid()`) is created first where missing.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        return _apply(conn, migration_files(migrations_dir))


def _apply(conn: psycopg.Connection, paths: list[Path]) -> list[str]:
    applied = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(SUPABASE_ENVIRONMENT_SQL)
        conn.execute("create schema if not exists supabase_migrations")
        conn.execute(
            "create table if not exists supabase_migrations.schema_migrations"
            " (version text primary key, statements text[], name text)"
        )
        done = applied_versions(conn)
        for path in paths:
            version, _, name = path.stem.partition("_")
            if version in done:
                continue
            script = path.read_text()
            conn.cursor().execute(script.encode(), prepare=False)
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, statements, name) values (%s, %s, %s)",
                (version, [script], name),
            )
            applied.append(version)
    return applied


def migrate_as_owner(url: str) -> list[str]:
    """`apply_migrations`, for the database's owner (or a superuser); anyone else is told who may."""
    with psycopg.connect(url, autocommit=True) as conn:
        if pending_migrations(conn) and not can_migrate(conn):
            raise SchemaError(f"{conn.info.user!r} does not own the database {conn.info.dbname!r}: {MIGRATE_HINT}")
        return _migrate(conn)


def _migrate(conn: psycopg.Connection) -> list[str]:
    """Apply what is pending, for a user allowed to (the roles Supabase provides made first)."""
    if not pending_migrations(conn):
        return []
    check_roles_can_be_made(conn)
    return _apply(conn, migration_files())


def check_roles_can_be_made(conn: psycopg.Connection) -> None:
    """Supabase's roles exist, or the connected user may create them (the first migration does)."""
    missing = [role for (role,) in conn.execute(
        "select r from unnest(array['anon', 'authenticated', 'service_role']) with ordinality as u(r, n)"
        " where not exists (select from pg_roles where rolname = r) order by n")]
    # service_role has BYPASSRLS, and only a role with BYPASSRLS may create one.
    (allowed,) = conn.execute(
        "select rolsuper or (rolcreaterole and (rolbypassrls or not %s)) from pg_roles where rolname = current_user",
        ("service_role" in missing,)).fetchone()
    if missing and not allowed:
        user = conn.info.user
        raise SchemaError(
            f"the roles {', '.join(missing)} (which Supabase provides) do not exist and {user!r} may not create "
            f"them: as a superuser, create them (`create role anon nologin noinherit; create role authenticated "
            f"nologin noinherit; create role service_role nologin noinherit bypassrls;`) or `alter role {user} "
            "createrole bypassrls`, then run `reinforcement migrate` again")


# What service_role may do on the loop's tables and functions, and the connected user may not.
_MISSING_PRIVILEGES_SQL = """
select format('%s on table %I', a.privilege_type, c.relname)
from pg_class c join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) a
where n.nspname = 'public' and c.relkind in ('r', 'p', 'v') and a.grantee = 'service_role'::regrole
  and not has_table_privilege(c.oid, a.privilege_type)
union all
select format('EXECUTE on function %s', p.oid::regprocedure)
from pg_proc p join pg_namespace n on n.oid = p.pronamespace, aclexplode(p.proacl) a
where n.nspname = 'public' and a.grantee = 'service_role'::regrole and a.privilege_type = 'EXECUTE'
  and not has_function_privilege(p.oid, 'EXECUTE')
union all
select format('TEMP on database %I (inserts stage their rows in a temporary table)', current_database())
where not has_database_privilege(current_database(), 'TEMP')
union all
select format('to bypass row level security on %I (BYPASSRLS, as service_role has)', c.relname)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relrowsecurity and c.relkind in ('r', 'p')
  and not pg_has_role(current_user, c.relowner, 'USAGE')
  and not (select rolbypassrls or rolsuper from pg_roles where rolname = current_user)
order by 1
"""


def missing_privileges(conn: psycopg.Connection) -> list[str]:
    """What the loop needs (what service_role holds) and the connected user lacks."""
    return [line for (line,) in conn.execute(_MISSING_PRIVILEGES_SQL)]


def prepare_database(url: str, *, migrate: bool) -> list[str]:
    """Make the database at `url` ready for the loop, or stop with what to do; returns migrations applied.

    One connection. With `migrate` (the embedded server, as its superuser) or as the database's
    owner, pending migrations are applied. Anyone else applies nothing: pending migrations get
    `MIGRATE_HINT`, and a missing privilege the loop uses is named now, not halfway through a run.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        if migrate or can_migrate(conn):
            return _migrate(conn)
        user = conn.info.user
        try:
            pending, missing = pending_migrations(conn), []
        except HistoryUnreadable:
            pending, missing = [], [HISTORY_PRIVILEGE]
        if pending:
            raise SchemaError(f"the database has {len(pending)} migration(s) not applied ({', '.join(pending)}), "
                              f"and {user!r} may not apply them: {MIGRATE_HINT}")
        missing += missing_privileges(conn)
    if missing:
        shown = "; ".join(missing[:8]) + (f"; and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise SchemaError(f"the database user {user!r} lacks privileges the loop needs: {shown}. Connect as the "
                          f"owner, or grant them: `grant service_role to {user}; alter role {user} bypassrls;`")
    return []
