"""Roles, row level security and function privileges, on the real embedded PostgreSQL.

The database is made to look like Supabase's: `apply_migrations` first creates the roles `anon`,
`authenticated` and `service_role` and `auth.uid()` where missing, and one test adds Supabase's
`storage.buckets`/`storage.objects` tables. A request is imitated as PostgREST makes it: in a
transaction, `set local role <role>` plus the JWT claims in `request.jwt.claims`.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from postgrest import APIError
from psycopg import conninfo, errors, sql

from reinforcement_assets.backends.schema import MIGRATIONS_DIR, apply_migrations
from reinforcement_assets.backends.supabase_environment import SUPABASE_ENVIRONMENT_SQL
from reinforcement_tests.supabase_transport import ANON_KEY, URL, SupabaseEmulator
from supabase import ClientOptions, create_client

TABLES = ("prediction_evaluations", "model_retraining_requests", "model_retraining_runs", "model_versions",
          "prediction_evaluation_counts", "prediction_feature_type_sets")
# The functions the backends call (with arguments any caller could send), for the roles that may not.
RPC_CALLS = (
    "select * from summarize_evaluation_window(now() - interval '1 day', now(), 0.2, '[]', false)",
    "select * from evaluation_feature_type_sets(now() - interval '1 day', now(), 10)",
    "select * from evaluation_accepted_type_sets(now() - interval '1 day', now(), '[]', false)",
    "select * from judge_feature_types('{}', '[{\"name\": \"x\", \"kind\": \"numeric\"}]', false)",
    "select record_feature_schema('v1', '[]', false)",
    "select * from evaluation_confusion_counts(now() - interval '1 day', now(), null, 10)",
    "select * from evaluation_holdout_start(now() - interval '1 day', now(), 0.2, '[]', false)",
    "select * from evaluation_daily_accuracy(now() - interval '1 day', now())",
    "select * from evaluation_outcome_coverage(now() - interval '1 day', now())",
    "select * from evaluation_early_count(now() - interval '1 day', now())",
)
SHA = "0" * 64
_numbers = itertools.count()

# Supabase's storage schema, as its storage-api migrations create it (the columns used here).
STORAGE_SCHEMA = """
create schema storage;
create table storage.buckets (
  id text primary key, name text not null unique, owner uuid, owner_id text,
  created_at timestamptz default now(), updated_at timestamptz default now(),
  public boolean default false, avif_autodetection boolean default false,
  file_size_limit bigint, allowed_mime_types text[]
);
create table storage.objects (
  id uuid primary key default gen_random_uuid(), bucket_id text references storage.buckets (id),
  name text, owner uuid, owner_id text, created_at timestamptz default now(),
  updated_at timestamptz default now(), last_accessed_at timestamptz default now(),
  metadata jsonb, version text, user_metadata jsonb,
  path_tokens text[] generated always as (string_to_array(name, '/')) stored
);
alter table storage.objects enable row level security;
"""


@contextmanager
def acting_as(url: str, role: str, user: uuid.UUID | None = None):
    """A connection inside one transaction acting as `role` (and as user `user`), as PostgREST does."""
    claims = {"role": role, **({"sub": str(user)} if user else {})}
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield conn


def fresh_database(server_url: str, setup: str | None = None) -> str:
    name = f"security_{next(_numbers)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    url = conninfo.make_conninfo(server_url, dbname=name)
    if setup:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(setup)
    return url


@pytest.fixture
def seeded(database_url):
    """Two users, a request of each, a run, a version and a logged prediction, written as service_role."""
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with acting_as(database_url, "service_role") as conn:
        requests = {user: conn.execute("insert into model_retraining_requests (requested_by, reason)"
                                       " values (%s, 'drift') returning id", (user,)).fetchone()[0]
                    for user in (alice, bob)}
        conn.execute("insert into model_retraining_runs (source, dagster_run_id) values ('manual', 'run-1')")
        conn.execute("insert into model_versions (version, artifact_path, sha256) values ('v1', 'models/v1', %s)",
                     (SHA,))
        conn.execute("insert into prediction_evaluations (prediction_id, features, predicted_label, actual_label,"
                     " evaluated_at) values ('p1', '{\"x\": 1}', 'a', 'a', now())")
    return alice, bob, requests


def test_migrations_apply_cleanly_twice(server_url, tmp_path):
    url = fresh_database(server_url)
    paths = sorted(MIGRATIONS_DIR.glob("*.sql"))
    versions = [p.stem.split("_")[0] for p in paths]
    assert apply_migrations(url) == versions
    assert apply_migrations(url) == []
    # Each file is safe to run again right after it ran (pasted into Supabase's SQL editor twice). An
    # older file run after a newer one changed its tables is not: the history (`migrate`) prevents that.
    for k, path in enumerate(paths):
        folder = tmp_path / f"upto_{k}"
        folder.mkdir()
        for earlier in paths[:k + 1]:
            (folder / earlier.name).symlink_to(earlier.resolve())
        url = fresh_database(server_url)
        assert apply_migrations(url, folder) == versions[:k + 1]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.cursor().execute(Path(path).read_text().encode(), prepare=False)
            recorded = [v for (v,) in conn.execute("select version from supabase_migrations.schema_migrations"
                                                   " order by 1")]
        assert recorded == versions[:k + 1]


def test_the_supabase_environment_is_created_where_missing_and_left_alone_where_present(server_url, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        roles = {name: flags for name, *flags in conn.execute(
            "select rolname, rolcanlogin, rolinherit, rolbypassrls from pg_roles"
            " where rolname in ('anon', 'authenticated', 'service_role')")}
        assert roles == {"anon": [False, False, False], "authenticated": [False, False, False],
                         "service_role": [False, False, True]}
    user = uuid.uuid4()
    with acting_as(database_url, "authenticated", user) as conn:
        assert conn.execute("select auth.uid()").fetchone()[0] == user

    # A database that already has auth.uid() (Supabase's own) keeps its definition.
    url = fresh_database(server_url, "create schema auth; create function auth.uid() returns uuid"
                                     " language sql as $$ select '00000000-0000-0000-0000-000000000001'::uuid $$")
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SUPABASE_ENVIRONMENT_SQL)
        assert str(conn.execute("select auth.uid()").fetchone()[0]) == "00000000-0000-0000-0000-000000000001"


def test_every_table_has_row_level_security(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = dict(conn.execute("select relname, relrowsecurity from pg_class"
                                   " where relnamespace = 'public'::regnamespace and relkind in ('r', 'p')"))
    assert set(TABLES) <= set(tables)
    assert all(tables.values()), tables


def test_service_role_does_everything(database_url, seeded):
    alice, _, requests = seeded
    with acting_as(database_url, "service_role") as conn:
        for table in TABLES:
            assert conn.execute(f"select count(*) from {table}").fetchone()[0] >= 1
        for call in RPC_CALLS:  # the backend's functions, as it calls them
            conn.execute(call).fetchall()
        assert conn.execute("select feature_types from prediction_feature_type_sets").fetchall() == [({"x": "number"},)]
        assert conn.execute(RPC_CALLS[1]).fetchall() == []  # its one row has no confidence: not usable
        assert conn.execute(RPC_CALLS[3]).fetchall() == [("feature_missing", "x")]
        conn.execute("insert into model_versions (version, artifact_path, sha256) values ('v2', 'm/v2', %s)", (SHA,))
        assert conn.execute("select is_champion from promote_model_version('v2', 'test')").fetchone()[0] is True
        conn.execute("update model_retraining_requests set status = 'cancelled' where id = %s", (requests[alice],))
        conn.execute("delete from prediction_evaluations where prediction_id = 'p1'")
        # The log's triggers keep its counts, though service_role may only read them.
        assert conn.execute("select sum(row_count) from prediction_evaluation_counts").fetchone()[0] == 0


def test_authenticated_users_queue_and_read_only_their_own_requests(database_url, seeded):
    alice, bob, requests = seeded
    with acting_as(database_url, "authenticated", alice) as conn:
        (new_id, status) = conn.execute(
            "insert into model_retraining_requests (requested_by, reason, priority, options)"
            " values (%s, 'please', 'high', '{\"force\": true}') returning id, status", (alice,)).fetchone()
        assert status == "pending"
        visible = {r for (r,) in conn.execute("select id from model_retraining_requests")}
    assert visible == {requests[alice], new_id}

    denied = [
        ("insert into model_retraining_requests (requested_by, reason) values (%s, 'as bob')", (bob,)),
        ("insert into model_retraining_requests (requested_by, reason) values (null, 'anonymous')", ()),
        ("insert into model_retraining_requests (requested_by, reason, status) values (%s, 'done', 'completed')",
         (alice,)),
        ("update model_retraining_requests set priority = 'high' where id = %s", (requests[alice],)),
        ("delete from model_retraining_requests where id = %s", (requests[alice],)),
    ]
    for statement, params in denied:
        with pytest.raises(errors.InsufficientPrivilege), acting_as(database_url, "authenticated", alice) as conn:
            conn.execute(statement, params)
    with acting_as(database_url, "service_role") as conn:
        assert conn.execute("select count(*) from model_retraining_requests").fetchone()[0] == 3


def test_authenticated_users_read_runs_and_versions_and_nothing_else(database_url, seeded):
    alice, _, _ = seeded
    with acting_as(database_url, "authenticated", alice) as conn:
        assert conn.execute("select dagster_run_id from model_retraining_runs").fetchall() == [("run-1",)]
        assert conn.execute("select version from model_versions").fetchall() == [("v1",)]
    denied = [
        "select * from prediction_evaluations",
        "select * from prediction_evaluation_counts",
        "select * from prediction_feature_type_sets",
        "select * from prediction_confusion_counts",
        "insert into prediction_evaluations (features, predicted_label) values ('{}', 'a')",
        "insert into model_retraining_runs (source) values ('manual')",
        "update model_retraining_runs set status = 'failed'",
        "update model_versions set is_champion = true",
        "delete from model_versions",
        *RPC_CALLS,
    ]
    for statement in denied:
        with pytest.raises(errors.InsufficientPrivilege), acting_as(database_url, "authenticated", alice) as conn:
            conn.execute(statement)


@pytest.mark.parametrize("statement", [
    *(f"select * from {table}" for table in (*TABLES, "prediction_confusion_counts")),
    "insert into model_retraining_requests (reason) values ('anonymous')",
    "insert into prediction_evaluations (features, predicted_label) values ('{}', 'a')",
    "select * from promote_model_version('v1', 'anon')",
    *RPC_CALLS,
])
def test_anon_gets_nothing(database_url, seeded, statement):
    with pytest.raises(errors.InsufficientPrivilege), acting_as(database_url, "anon") as conn:
        conn.execute(statement)


def test_only_service_role_may_execute_the_functions(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        privileges = conn.execute(
            "select p.oid::regprocedure::text, has_function_privilege('anon', p.oid, 'execute'),"
            " has_function_privilege('authenticated', p.oid, 'execute'),"
            " has_function_privilege('service_role', p.oid, 'execute')"
            " from pg_proc p where p.pronamespace = 'public'::regnamespace").fetchall()
    names = {name.split("(")[0] for name, *_ in privileges}
    assert {"promote_model_version", "claim_retraining_requests", "summarize_evaluation_window",
            "evaluation_holdout_start",
            "update_retraining_run", "evaluation_feature_type_sets", "evaluation_accepted_type_sets",
            "judge_feature_types", "record_feature_schema", "evaluation_row_reject_reason",
            "evaluation_feature_types_hash"} <= names
    # What the feature types replaced is gone: no old signature is left to call.
    assert not names & {"evaluation_feature_key_sets", "evaluation_reject_reason", "evaluation_feature_keys_hash"}
    assert [name for name, *_ in privileges if name.startswith("summarize_evaluation_window(")] == [
        "summarize_evaluation_window(timestamp with time zone,timestamp with time zone,double precision,"
        "jsonb,boolean)"]
    # A signed-in user may cancel their own pending requests; nothing else.
    assert [(name, anon, user) for name, anon, user, _ in privileges if anon or user] == [
        ("cancel_my_retraining_request(uuid)", False, True)]
    # Everything but the owner's maintenance functions, which lock the log for a full recount.
    assert sorted(name for name, *_, service in privileges if not service) == [
        "rebuild_confusion_counts()", "rebuild_evaluation_counts()", "rebuild_prediction_counts()"]
    for call in ("select * from claim_retraining_requests(1, 'me')", "select * from promote_model_version('v', 'r')",
                 *RPC_CALLS):
        with pytest.raises(errors.InsufficientPrivilege), acting_as(database_url, "authenticated", uuid.uuid4()) \
                as conn:
            conn.execute(call)


def test_a_claim_hands_each_pending_request_to_exactly_one_of_many_callers(database_url):
    with acting_as(database_url, "service_role") as conn:
        with conn.cursor() as cur:
            cur.executemany("insert into model_retraining_requests (reason, priority) values (%s, %s)",
                            [(f"r{i}", ("high", "normal", "low")[i % 3]) for i in range(300)])
    claimed: dict[str, list[uuid.UUID]] = {}
    start = threading.Barrier(8)

    def worker(name: str) -> None:
        mine = claimed.setdefault(name, [])
        start.wait()
        while True:
            with acting_as(database_url, "service_role") as conn:
                rows = conn.execute("select id from claim_retraining_requests(3, %s)", (name,)).fetchall()
            if not rows:
                return
            mine.extend(r for (r,) in rows)

    threads = [threading.Thread(target=worker, args=(f"sensor-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [r for ids in claimed.values() for r in ids]
    assert len(every) == len(set(every)) == 300
    assert sum(1 for ids in claimed.values() if ids) > 1  # the callers really competed
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute("select id, status, claimed_by, claim_count from model_retraining_requests").fetchall()
    owner = {r: name for name, ids in claimed.items() for r in ids}
    assert all(status == "processing" and claimed_by == owner[r] and count == 1
               for r, status, claimed_by, count in rows)


def test_the_private_bucket_is_created_where_supabase_storage_exists(server_url):
    with_storage = fresh_database(server_url, STORAGE_SCHEMA)
    apply_migrations(with_storage)
    with psycopg.connect(with_storage, autocommit=True) as conn:
        conn.cursor().execute((MIGRATIONS_DIR / "20261126000900_security.sql").read_text().encode(), prepare=False)
        buckets = conn.execute("select id, public, file_size_limit from storage.buckets").fetchall()
    assert buckets == [("reinforcement-artifacts", False, 50 * 1024 * 1024)]

    without_storage = fresh_database(server_url)
    apply_migrations(without_storage)
    with psycopg.connect(without_storage, autocommit=True) as conn:
        assert conn.execute("select to_regnamespace('storage')").fetchone()[0] is None


def test_over_http_a_signed_in_user_queues_a_request_and_reads_no_predictions(database_url):
    """The same rules through supabase-py with a user's JWT, against the PostgREST stand-in of
    supabase_transport.py (Supabase's servers cannot run here), which runs each request as the
    JWT's role with its claims."""
    user = uuid.uuid4()
    claims = base64.urlsafe_b64encode(json.dumps({"sub": str(user), "role": "authenticated"}).encode()).decode()
    project = SupabaseEmulator(database_url)
    try:
        client = create_client(URL, ANON_KEY, ClientOptions(
            httpx_client=project.http_client(), headers={"Authorization": f"Bearer header.{claims}.signature"}))
        requests = client.table("model_retraining_requests")
        (queued,) = requests.insert({"requested_by": str(user), "reason": "drift"}).execute().data
        assert queued["status"] == "pending" and queued["requested_by"] == str(user)
        for refused in (lambda: requests.insert({"requested_by": str(uuid.uuid4()), "reason": "as someone else"}),
                        lambda: client.table("prediction_evaluations").select("*"),
                        lambda: client.table("prediction_feature_type_sets").select("*"),
                        lambda: client.rpc("promote_model_version", {"p_version": "v1", "p_reason": "mine"}),
                        lambda: client.rpc("evaluation_feature_type_sets", {"p_start": "2026-11-19T00:00:00+00:00",
                                                                            "p_end": "2026-11-20T00:00:00+00:00"}),
                        lambda: client.rpc("record_feature_schema", {"p_version": "v1", "p_feature_schema": [],
                                                                     "p_accepts_missing": False})):
            with pytest.raises(APIError) as raised:
                refused().execute()
            assert raised.value.code == "42501"
        assert [r["id"] for r in requests.select("id").execute().data] == [queued["id"]]
    finally:
        project.close()


def user_client(project: SupabaseEmulator, user: uuid.UUID):
    """supabase-py signed in as `user` (a JWT the emulator reads the claims of), as supabase-js would be."""
    claims = base64.urlsafe_b64encode(json.dumps({"sub": str(user), "role": "authenticated"}).encode()).decode()
    return create_client(URL, ANON_KEY, ClientOptions(
        httpx_client=project.http_client(), headers={"Authorization": f"Bearer header.{claims}.signature"}))


def test_over_http_a_user_cancels_only_their_own_pending_requests(database_url, project):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    as_alice = user_client(project, alice)
    mine, claimed = (as_alice.table("model_retraining_requests").insert(
        {"requested_by": str(alice), "reason": reason}).execute().data[0]["id"] for reason in ("drift", "claimed"))
    (theirs,) = user_client(project, bob).table("model_retraining_requests").insert(
        {"requested_by": str(bob), "reason": "bob's"}).execute().data
    with acting_as(database_url, "service_role") as conn:
        conn.execute("update model_retraining_requests set status = 'processing' where id = %s", (claimed,))

    cancelled = as_alice.rpc("cancel_my_retraining_request", {"p_request_id": mine}).execute().data
    assert (cancelled["status"], cancelled["error_message"]) == ("cancelled", "cancelled by its requester")
    refusals = [
        (theirs["id"], f"unknown retraining request {theirs['id']}"),  # another user's: not even its existence
        (claimed, f"retraining request {claimed} is processing, not pending: only a pending request can be cancelled"),
    ]
    for request_id, message in refusals:
        with pytest.raises(APIError) as raised:
            as_alice.rpc("cancel_my_retraining_request", {"p_request_id": request_id}).execute()
        assert raised.value.message == message
    anonymous = create_client(URL, ANON_KEY, ClientOptions(httpx_client=project.http_client()))
    with pytest.raises(APIError) as raised:
        anonymous.rpc("cancel_my_retraining_request", {"p_request_id": theirs["id"]}).execute()
    assert raised.value.code == "42501"
    with pytest.raises(APIError) as raised:  # the backend's function stays the backend's
        as_alice.rpc("cancel_retraining_request", {"p_request_id": theirs["id"]}).execute()
    assert raised.value.code == "42501"
    with acting_as(database_url, "service_role") as conn:
        statuses = dict(conn.execute("select id::text, status from model_retraining_requests"))
    assert statuses == {mine: "cancelled", claimed: "processing", theirs["id"]: "pending"}


def test_the_database_caps_the_pending_requests_of_one_user(database_url, project):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with acting_as(database_url, "service_role") as conn:
        conn.execute("update reinforcement_settings set max_pending_requests_per_user = 2")
    requests = user_client(project, alice).table("model_retraining_requests")
    first, _ = (requests.insert({"requested_by": str(alice), "reason": f"r{i}"}).execute().data[0] for i in range(2))
    with pytest.raises(APIError) as raised:
        requests.insert({"requested_by": str(alice), "reason": "one too many"}).execute()
    assert raised.value.code == "23514"
    assert raised.value.message == (f"user {alice} already has 2 pending retraining requests, the most one user may "
                                    "hold (max_pending_requests_per_user = 2)")
    assert "cancel one" in raised.value.hint
    # Bob has his own cap; the backend's requests (no requester) are not capped.
    user_client(project, bob).table("model_retraining_requests").insert(
        {"requested_by": str(bob), "reason": "mine"}).execute()
    with acting_as(database_url, "service_role") as conn:
        for _ in range(3):
            conn.execute("insert into model_retraining_requests (reason) values ('from the CLI')")
    # A request that ends (or is cancelled) frees a place.
    user_client(project, alice).rpc("cancel_my_retraining_request", {"p_request_id": first["id"]}).execute()
    requests.insert({"requested_by": str(alice), "reason": "now it fits"}).execute()
    with acting_as(database_url, "service_role") as conn:
        assert conn.execute("select count(*) from model_retraining_requests where requested_by = %s"
                            " and status = 'pending'", (alice,)).fetchone()[0] == 2
        with pytest.raises(errors.CheckViolation):
            conn.execute("update reinforcement_settings set max_pending_requests_per_user = 0")
    with pytest.raises(errors.InsufficientPrivilege), acting_as(database_url, "authenticated", alice) as conn:
        conn.execute("update reinforcement_settings set max_pending_requests_per_user = 100")


def test_the_cap_and_cancel_through_both_stores(store, project):
    from reinforcement_assets.backends.store import StoreError
    from reinforcement_tests.supabase_transport import emulated_resources

    user = str(uuid.uuid4())
    supabase = emulated_resources(project)["store"]
    with psycopg.connect(store.database_url, autocommit=True) as conn:
        conn.execute("update reinforcement_settings set max_pending_requests_per_user = 1")
    for backend in (store, supabase):
        queued = backend.create_request("drift", requested_by=user)
        with pytest.raises(StoreError, match="already has 1 pending retraining requests") as raised:
            backend.create_request("again", requested_by=user)
        assert "\n" not in str(raised.value)
        assert backend.cancel_request(queued.id).status == "cancelled"
        assert backend.cancel_request(queued.id).status == "cancelled"  # repeating it is harmless
