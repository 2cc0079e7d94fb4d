"""Migrations from the installed package, and who may apply them, on the real embedded PostgreSQL.

The embedded server trusts local connections, so each test connects as roles it creates: the
database owner, a least-privilege worker (a member of `service_role` with BYPASSRLS, as
docs/deployment.md sets one up) and a user with no grants at all.
"""

from __future__ import annotations

import filecmp
import uuid
from importlib.resources import files
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from psycopg import conninfo, sql

from reinforcement_assets.backends.embedded import database_url as embedded_database_url
from reinforcement_assets.backends.embedded import stop
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.backends.schema import MIGRATE_HINT, MIGRATIONS_DIR, migration_files
from reinforcement_assets.backends.store import StoreError
from reinforcement_assets.cli import main
from reinforcement_tests.test_evaluation_counts import CONFUSION_BY_KEY, CONFUSION_MIGRATION, LOG_BY_PAIR

REPOSITORY_MIGRATIONS = Path(__file__).resolve().parents[1] / "supabase" / "migrations"


def execute(url: str, *statements: sql.Composable | str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def empty_database(server_url) -> str:
    """A database with nothing in it, owned by a role of its own (not a superuser)."""
    suffix = uuid.uuid4().hex[:8]
    owner, name = f"loop_owner_{suffix}", f"loop_empty_{suffix}"
    execute(server_url, sql.SQL("create role {} login createrole").format(sql.Identifier(owner)),
            sql.SQL("create database {} owner {}").format(sql.Identifier(name), sql.Identifier(owner)))
    url = conninfo.make_conninfo(server_url, dbname=name)
    # The migrations create Supabase's roles on first use; create them now so the owner needn't be superuser.
    execute(url, "create schema if not exists auth",
            sql.SQL("alter schema public owner to {}").format(sql.Identifier(owner)),
            sql.SQL("alter schema auth owner to {}").format(sql.Identifier(owner)))
    for role, options in (("anon", "nologin noinherit"), ("authenticated", "nologin noinherit"),
                          ("service_role", "nologin noinherit bypassrls")):
        with psycopg.connect(server_url, autocommit=True) as conn:
            if not conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL(f"create role {{}} {options}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("grant {} to {} with admin option").format(sql.Identifier(role),
                                                                            sql.Identifier(owner)))
    return conninfo.make_conninfo(url, user=owner)


def login_role(server_url: str, database_url: str, *grants: str) -> str:
    """A new login role with `grants` ("service_role", "bypassrls"), and its URL for `database_url`."""
    name = f"loop_user_{uuid.uuid4().hex[:8]}"
    bypass = "bypassrls" if "bypassrls" in grants else ""
    execute(server_url, sql.SQL(f"create role {{}} login {bypass}").format(sql.Identifier(name)))
    if "service_role" in grants:
        execute(server_url, sql.SQL("grant service_role to {}").format(sql.Identifier(name)))
    return conninfo.make_conninfo(database_url, user=name)


def test_the_package_reads_its_migrations_from_the_folder_the_supabase_cli_reads():
    # In this (editable) install the package's migrations are the link itself: this checks the link and
    # the loader. That a built wheel carries them is checked by .ci/run, which migrates from one.
    shipped = files("reinforcement_assets") / "migrations"
    names = sorted(p.name for p in shipped.iterdir() if p.name.endswith(".sql"))
    assert names == sorted(p.name for p in REPOSITORY_MIGRATIONS.glob("*.sql")) and names
    assert all(filecmp.cmp(Path(str(shipped / n)), REPOSITORY_MIGRATIONS / n, shallow=False) for n in names)
    assert [p.name for p in migration_files()] == names and MIGRATIONS_DIR.is_dir()


def test_the_owner_migrates_on_first_use(empty_database):
    store = PostgresStore(database_url=empty_database)
    assert store.latest_runs() == []
    with psycopg.connect(empty_database) as conn:
        (count,) = conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()
    assert count == len(migration_files())


def test_a_user_who_may_not_migrate_is_told_who_may(server_url, empty_database, capsys, monkeypatch, tmp_path):
    worker = login_role(server_url, empty_database, "service_role", "bypassrls")
    with pytest.raises(StoreError, match=f"migration\\(s\\) not applied .*{MIGRATE_HINT}"):
        PostgresStore(database_url=worker).latest_runs()

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("REINFORCEMENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", worker)
    assert main(["migrate"]) == 1
    assert "does not own the database" in capsys.readouterr().err
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", empty_database)
    assert main(["migrate"]) == 0
    assert f"applied {len(migration_files())} migration(s)" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "the schema is up to date" in capsys.readouterr().out

    # Migrated by the owner, the least-privilege worker runs the loop's reads and writes.
    store = PostgresStore(database_url=worker)
    request = store.create_request("from a least-privilege worker")
    assert [r.id for r in store.latest_requests()] == [request.id]
    inserted = store.insert_evaluations(pd.DataFrame([{
        "prediction_id": "p1", "model_version": "v0", "features": {"x0": 1.0}, "predicted_label": "a",
        "actual_label": "a", "confidence": 0.9, "predicted_at": pd.Timestamp("2026-11-19T01:00Z"),
        "evaluated_at": pd.Timestamp("2026-11-19T02:00Z")}]))
    assert inserted == 1
    count = store.count_correct(pd.Timestamp("2026-11-19T00:00Z"), pd.Timestamp("2026-11-20T00:00Z"))
    assert (count.evaluated, count.correct) == (1, 1)


def test_missing_privileges_are_named_at_first_use(server_url, empty_database):
    PostgresStore(database_url=empty_database).latest_runs()  # migrated by the owner
    nobody = login_role(server_url, empty_database)
    with pytest.raises(StoreError) as raised:
        PostgresStore(database_url=nobody).latest_runs()
    message = str(raised.value)
    assert "lacks privileges the loop needs" in message and "grant service_role to" in message
    assert "on table model_retraining_runs" in message and "EXECUTE on function" in message

    no_bypass = login_role(server_url, empty_database, "service_role")
    with pytest.raises(StoreError, match="to bypass row level security on"):
        PostgresStore(database_url=no_bypass).latest_runs()


def test_an_owner_who_cannot_create_supabases_roles_is_told_how(monkeypatch, capsys, tmp_path):
    # A server of its own: roles are per server, and the shared one has Supabase's already.
    server = embedded_database_url(tmp_path / "cluster")
    owner = "plain_owner"
    execute(server, "create role plain_owner login", "create database loop_plain owner plain_owner")
    url = conninfo.make_conninfo(server, dbname="loop_plain", user=owner)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", url)
    try:
        assert main(["migrate"]) == 1
        err = capsys.readouterr().err
        assert "the roles anon, authenticated, service_role (which Supabase provides) do not exist" in err
        assert f"alter role {owner} createrole bypassrls" in err
        execute(server, f"alter role {owner} createrole bypassrls")
        assert main(["migrate"]) == 0
        assert f"applied {len(migration_files())} migration(s)" in capsys.readouterr().out
    finally:
        stop(tmp_path / "cluster")


def test_a_worker_without_temp_is_told_before_its_first_insert(server_url, empty_database):
    PostgresStore(database_url=empty_database).latest_runs()
    worker = login_role(server_url, empty_database, "service_role", "bypassrls")
    database = conninfo.conninfo_to_dict(empty_database)["dbname"]
    execute(server_url, sql.SQL("revoke temp on database {} from public").format(sql.Identifier(database)))
    with pytest.raises(StoreError, match="TEMP on database .* temporary table"):
        PostgresStore(database_url=worker).latest_runs()


def test_migrate_by_a_worker_on_an_up_to_date_schema_says_so(server_url, empty_database, monkeypatch, capsys,
                                                             tmp_path):
    PostgresStore(database_url=empty_database).latest_runs()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL",
                       login_role(server_url, empty_database, "service_role", "bypassrls"))
    assert main(["migrate"]) == 0
    assert "the schema is up to date" in capsys.readouterr().out


def test_the_feature_types_migration_rejudges_a_filled_log(empty_database, tmp_path):
    """An install from before feature kinds, with rows and a model, upgraded: every stored verdict is
    recomputed, the counts rebuilt, and the window judged against the old model's numeric schema."""
    from datetime import datetime, timezone

    from benchmarks.migration import MIGRATION, migrations_before, migrations_through
    from benchmarks.scale import fill

    from reinforcement_assets.backends.schema import apply_migrations
    from reinforcement_assets.backends.store import Window
    from reinforcement_assets.core.features import FeatureSchema
    from reinforcement_assets.core.rows import reject_reason

    url = empty_database
    (tmp_path / "before").mkdir()
    (tmp_path / "through").mkdir()
    apply_migrations(url, migrations_before(MIGRATION, tmp_path / "before"))
    window = Window.ending_at(datetime(2026, 12, 1, 2, tzinfo=timezone.utc), 7, 0.2)
    fill(url, 20_000, window)
    odd = {"json-text": '"{\\"x0\\": 1}"', "array": "[1, 2]", "flag": '{"x0": true}', "text": '{"x0": "US"}'}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, features in odd.items():
            conn.execute("insert into public.prediction_evaluations (prediction_id, features, predicted_label,"
                         " actual_label, confidence, evaluated_at) values (%s, %s::jsonb, 'a', 'b', 0.9, %s)",
                         (name, features, window.end - (window.end - window.start) / 2))
        conn.execute("insert into public.model_versions (version, artifact_path, sha256, feature_names)"
                     " values ('old', 'models/old', repeat('0', 64), %s::jsonb)",
                     ('["x0", "x1"]',))
        before = dict(conn.execute("select reject_reason, count(*) from public.prediction_evaluations"
                                   " group by 1").fetchall())
    assert before["feature_not_numeric"] > 0

    assert apply_migrations(url, migrations_through(MIGRATION, tmp_path / "through")) == [MIGRATION]
    with psycopg.connect(url) as conn:
        reasons = dict(conn.execute("select prediction_id, reject_reason from public.prediction_evaluations"
                                    " where prediction_id = any(%s)", (list(odd),)).fetchall())
        after = dict(conn.execute("select reject_reason, count(*) from public.prediction_evaluations"
                                  " group by 1").fetchall())
        counted = dict(conn.execute("select reject_reason, sum(row_count) from public.prediction_evaluation_counts"
                                    " group by 1").fetchall())
        rows = conn.execute("select features, predicted_label, actual_label, confidence"
                            " from public.prediction_evaluations").fetchall()
        old = conn.execute("select feature_schema, accepts_missing from public.model_versions").fetchone()
    assert reasons == {"json-text": "features_json_text", "array": "features_not_object", "flag": None, "text": None}
    assert "feature_not_numeric" not in after and counted == after
    assert old == ([{"name": "x0", "kind": "numeric"}, {"name": "x1", "kind": "numeric"}], None)

    # The window, judged against ten numeric features, agrees with the Python mirror row by row.
    schema = FeatureSchema.numeric([f"x{i}" for i in range(10)])
    summary = PostgresStore(database_url=url).summarize_window(window, schema)
    expected: dict = {}
    for features, predicted, actual, confidence in rows:
        verdict = reject_reason({"features": features, "predicted_label": predicted, "actual_label": actual,
                                 "confidence": confidence}, schema)
        if verdict:
            expected.setdefault(verdict[0], {}).setdefault(verdict[1], 0)
            expected[verdict[0]][verdict[1]] += 1
    assert summary.rejected == {reason: sum(on.values()) for reason, on in expected.items()}
    assert summary.rejected_on == {reason: {f: n for f, n in on.items() if f}
                                   for reason, on in expected.items() if any(on)}
    assert set(summary.rejected_on["feature_not_numeric"]) == {"x0", "x5"}

    # The store (connected as the owner) applied the confusion counts' migration on first use: it
    # backfilled them from the filled log's rows.
    assert apply_migrations(url) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations where version = %s",
                            (CONFUSION_MIGRATION,)).fetchone() == (1,)
        assert conn.execute(CONFUSION_BY_KEY).fetchall() == conn.execute(LOG_BY_PAIR).fetchall()
        assert conn.execute("select count(*) from public.prediction_confusion_counts").fetchone()[0] > 0
