"""The resources for the environment: the store, artifact storage and the IO manager."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from .. import settings
from ..backends.artifacts import ArtifactIOManager, LocalArtifactStorage
from ..backends.postgres_store import PostgresStore
from ..backends.supabase_storage import SupabaseArtifactStorage, SupabaseIOManager
from ..backends.supabase_store import SupabaseStore


def backend_from_environment(environ: Mapping[str, str]) -> str:
    """`supabase` when SUPABASE_URL and SUPABASE_SERVICE_KEY are set, else `postgres` with
    REINFORCEMENT_DATABASE_URL, else `embedded`; one Supabase variable without the other is an error."""
    url, key = (bool(environ.get(name, "").strip()) for name in ("SUPABASE_URL", "SUPABASE_SERVICE_KEY"))
    if url and key:
        return "supabase"
    if url or key:
        given, missing = ("SUPABASE_URL", "SUPABASE_SERVICE_KEY") if url else ("SUPABASE_SERVICE_KEY", "SUPABASE_URL")
        raise settings.SettingsError(f"{given} is set but {missing} is not: set both to use Supabase, or neither to use "
                         "REINFORCEMENT_DATABASE_URL or the embedded PostgreSQL")
    return "postgres" if environ.get("REINFORCEMENT_DATABASE_URL", "").strip() else "embedded"


def supabase_resources() -> dict[str, Any]:
    """The Supabase backend: tables through PostgREST, artifacts in a Storage bucket; the key stays an EnvVar."""
    project = {"url": dg.EnvVar("SUPABASE_URL"), "service_key": dg.EnvVar("SUPABASE_SERVICE_KEY"),
               "timeout_seconds": settings.SUPABASE_TIMEOUT_SECONDS}
    artifacts = SupabaseArtifactStorage(**project, bucket=settings.SUPABASE_BUCKET)
    return {"store": SupabaseStore(**project), "artifacts": artifacts,
            "io_manager": SupabaseIOManager(storage=artifacts)}


def default_resources() -> dict[str, Any]:
    """Resources for the environment: Supabase, `REINFORCEMENT_DATABASE_URL` or the embedded default."""
    if backend_from_environment(os.environ) == "supabase":
        return supabase_resources()
    data_dir = str(Path(settings.DATA_DIR).resolve())
    database_url = dg.EnvVar("REINFORCEMENT_DATABASE_URL") if os.environ.get("REINFORCEMENT_DATABASE_URL") else None
    artifacts = LocalArtifactStorage(base_dir=str(Path(data_dir) / "artifacts"))
    return {
        "store": PostgresStore(database_url=database_url, data_dir=data_dir),
        "artifacts": artifacts,
        "io_manager": ArtifactIOManager(storage=artifacts),
    }
