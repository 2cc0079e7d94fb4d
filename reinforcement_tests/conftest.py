"""Shared fixtures: one embedded PostgreSQL per test session, a fresh migrated database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest
import threadpoolctl
from psycopg import conninfo

from reinforcement_assets.backends.artifacts import ArtifactIOManager, LocalArtifactStorage
from reinforcement_assets.backends.embedded import database_url as embedded_database_url
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.backends.schema import apply_migrations
from reinforcement_tests.supabase_transport import SupabaseEmulator

_numbers = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def one_openmp_thread():
    """HistGradientBoosting's OpenMP threads spin-wait on a busy 2-core machine: one thread is ~5x faster here."""
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> str:
    return embedded_database_url(tmp_path_factory.mktemp("embedded"))


@pytest.fixture(scope="session")
def template_db(server_url) -> str:
    """A database with the migrations applied, copied for each test."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("create database loop_template")
    apply_migrations(conninfo.make_conninfo(server_url, dbname="loop_template"))
    return "loop_template"


@pytest.fixture
def database_url(server_url, template_db) -> str:
    name = f"loop_test_{next(_numbers)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"create database {name} template {template_db}")
    return conninfo.make_conninfo(server_url, dbname=name)


@pytest.fixture
def store(database_url) -> PostgresStore:
    return PostgresStore(database_url=database_url)


@pytest.fixture
def artifacts(tmp_path) -> LocalArtifactStorage:
    return LocalArtifactStorage(base_dir=str(tmp_path / "artifacts"))


@pytest.fixture
def resources(store, artifacts) -> dict:
    return {"store": store, "artifacts": artifacts, "io_manager": ArtifactIOManager(storage=artifacts)}


@pytest.fixture
def project(database_url) -> SupabaseEmulator:
    """An emulated Supabase project (PostgREST and Storage) over the test's database."""
    emulator = SupabaseEmulator(database_url)
    yield emulator
    emulator.close()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (its own temporary DAGSTER_HOME)."""
    with dg.instance_for_test() as instance:
        yield instance


@dg.op
def _noop() -> None:
    pass


@dg.job(name="retraining_job")
def _stand_in_retraining_job() -> None:
    _noop()


@pytest.fixture
def stand_in() -> dg.JobDefinition:
    """A job named like the retraining job, for Dagster runs whose content does not matter."""
    return _stand_in_retraining_job
