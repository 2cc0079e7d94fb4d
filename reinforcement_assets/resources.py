"""The resources for the environment: the store, artifact storage and the IO manager."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from . import settings
from .artifacts import ArtifactIOManager, LocalArtifactStorage
from .postgres_store import PostgresStore


def default_resources() -> dict[str, Any]:
    """Resources for the environment: `REINFORCEMENT_DATABASE_URL` if set, else the embedded default."""
    data_dir = str(Path(settings.DATA_DIR).resolve())
    database_url = dg.EnvVar("REINFORCEMENT_DATABASE_URL") if os.environ.get("REINFORCEMENT_DATABASE_URL") else None
    artifacts = LocalArtifactStorage(base_dir=str(Path(data_dir) / "artifacts"))
    return {
        "store": PostgresStore(database_url=database_url, data_dir=data_dir),
        "artifacts": artifacts,
        "io_manager": ArtifactIOManager(storage=artifacts),
    }
