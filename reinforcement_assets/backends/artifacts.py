"""Artifact storage (datasets, models, training logs) with a sha256 for every object written."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
import joblib
import pandas as pd

from ..core.records import StoreError


class ArtifactIntegrityError(RuntimeError):
    """An artifact's bytes do not match the sha256 recorded when it was written."""


class ArtifactStorageError(StoreError):
    """Artifact storage could not store or load an asset's value (a folder not writable, a bucket refusing)."""


@dataclass(frozen=True)
class StoredArtifact:
    path: str
    uri: str
    size_bytes: int
    sha256: str

    def metadata(self) -> dict[str, Any]:
        return {"path": self.path, "uri": self.uri, "size_bytes": self.size_bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class ArtifactFile:
    """An object in artifact storage, as a listing shows it."""

    path: str  # relative to the storage root, as `write` was given it
    size_bytes: int
    modified: datetime | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clean_path(path: str) -> str:
    """A relative POSIX path that cannot climb out of the storage root."""
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts:
        raise ValueError(f"invalid artifact path {path!r}")
    return str(PurePosixPath(*parts))


def encode(value: Any) -> tuple[bytes, str, str]:
    """(bytes, file extension, content type): DataFrames as Parquet, anything else with joblib."""
    buffer = io.BytesIO()
    if isinstance(value, pd.DataFrame):
        # Dictionary pages pay off only for repetitive columns; tried on every column (ids, scores) they
        # cost more time than they save: without them the file is written 2x faster and is smaller.
        value.to_parquet(buffer, index=False, use_dictionary=False)
        return buffer.getvalue(), "parquet", "application/vnd.apache.parquet"
    joblib.dump(value, buffer)
    return buffer.getvalue(), "joblib", "application/octet-stream"


def decode(data: bytes, path: str) -> Any:
    """The value `encode` wrote to `path`. Only call on bytes whose sha256 was verified: joblib runs code."""
    if path.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(data))
    return joblib.load(io.BytesIO(data))


class ArtifactStorage(dg.ConfigurableResource):
    """Where artifact bytes live; subclasses provide `_put`, `_get`, `_delete`, `_list` and `uri`."""

    def write(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> StoredArtifact:
        path = clean_path(path)
        self._put(path, data, content_type)
        return StoredArtifact(path, self.uri(path), len(data), sha256_hex(data))

    def read(self, path: str, sha256: str) -> bytes:
        """The bytes at `path`, refused unless their sha256 is `sha256`."""
        data = self._get(clean_path(path))
        actual = sha256_hex(data)
        if actual != sha256:
            raise ArtifactIntegrityError(
                f"refusing to load {path}: its sha256 is {actual}, but {sha256} was recorded when it was written"
            )
        return data

    def read_text(self, path: str, limit: int = 1_000_000) -> str:
        """A text file no registry row holds a hash for (a run's training log), up to its last `limit`
        bytes, undecodable bytes replaced."""
        data = self._get(clean_path(path))
        return data[-limit:].decode("utf-8", errors="replace")

    def write_value(self, path_without_extension: str, value: Any) -> StoredArtifact:
        data, extension, content_type = encode(value)
        return self.write(f"{path_without_extension}.{extension}", data, content_type)

    def read_value(self, path: str, sha256: str) -> Any:
        return decode(self.read(path, sha256), path)

    def delete(self, path: str) -> None:
        """Remove the object at `path`; one that is not there is not an error."""
        self._delete(clean_path(path))

    def list_files(self, prefix: str = "") -> list[ArtifactFile]:
        """Every object under the folder `prefix` (everything for ""), at any depth, in path order."""
        return sorted(self._list(clean_path(prefix) if prefix else ""), key=lambda f: f.path)

    def uri(self, path: str) -> str:
        raise NotImplementedError

    def _put(self, path: str, data: bytes, content_type: str) -> None:
        raise NotImplementedError

    def _get(self, path: str) -> bytes:
        raise NotImplementedError

    def _delete(self, path: str) -> None:
        raise NotImplementedError

    def _list(self, prefix: str) -> Iterable[ArtifactFile]:
        raise NotImplementedError


class LocalArtifactStorage(ArtifactStorage):
    """Artifacts as files under `base_dir` (the embedded default)."""

    base_dir: str

    def uri(self, path: str) -> str:
        return (Path(self.base_dir).resolve() / path).as_uri()

    def _put(self, path: str, data: bytes, content_type: str) -> None:
        target = Path(self.base_dir) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        partial.replace(target)  # readers never see half a file

    def _get(self, path: str) -> bytes:
        try:
            return (Path(self.base_dir) / path).read_bytes()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"artifact {path} not found under {self.base_dir}") from exc

    def _delete(self, path: str) -> None:
        (Path(self.base_dir) / path).unlink(missing_ok=True)

    def _list(self, prefix: str) -> Iterator[ArtifactFile]:
        root = Path(self.base_dir)
        for file in (root / prefix).rglob("*"):
            if file.name.endswith(".partial"):  # a write under way (or one that died): not an artifact yet
                continue
            try:
                if not file.is_file():
                    continue
                stat = file.stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            yield ArtifactFile(file.relative_to(root).as_posix(), stat.st_size,
                               datetime.fromtimestamp(stat.st_mtime, timezone.utc))


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Asset values in artifact storage, in the manner of `S3PickleIOManager`.

    Each materialisation is written once, to `<prefix>/<asset key>/<run id>.<parquet|joblib>`, and
    records path, uri, size and sha256 as output metadata. Loading reads the path recorded by the
    run that produced the input and refuses bytes whose sha256 differs from the one recorded.
    """

    storage: ArtifactStorage
    prefix: str = "assets"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        key = "/".join(context.asset_key.path)
        data, extension, content_type = encode(obj)
        path = f"{self.prefix}/{key}/{context.run_id}.{extension}"
        try:
            stored = self.storage.write(path, data, content_type)
        except Exception as exc:  # a folder not writable, a full disk, a bucket refusing: say where
            raise ArtifactStorageError(f"could not store its output in artifact storage at {path}: "
                                       f"{storage_problem(exc)}") from exc
        context.add_output_metadata(
            {**stored.metadata(), "path": dg.MetadataValue.path(stored.path), "uri": dg.MetadataValue.url(stored.uri)}
        )

    def load_input(self, context: dg.InputContext) -> Any:
        metadata = recorded_output(context.instance, context.asset_key, context.upstream_output.run_id)
        if "path" not in metadata or "sha256" not in metadata:
            raise ArtifactIntegrityError(
                f"no recorded artifact for {context.asset_key.to_user_string()}: materialise it first"
            )
        path = metadata["path"].value
        try:
            data = self.storage.read(path, metadata["sha256"].value)
        except (OSError, StoreError) as exc:  # a mismatching sha256 stays an ArtifactIntegrityError
            raise ArtifactStorageError(f"could not load its input {context.asset_key.to_user_string()} from "
                                       f"artifact storage at {path}: {storage_problem(exc)}") from exc
        return decode(data, path)


def storage_problem(error: BaseException) -> str:
    """What went wrong in artifact storage, in words (a file system error without its errno prefix)."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return f"{type(error).__name__}: {error}" if not isinstance(error, StoreError) else str(error)


def recorded_output(instance: dg.DagsterInstance, asset_key: dg.AssetKey, run_id: str) -> dict[str, Any]:
    """The metadata of `asset_key`'s materialisation in `run_id`, else of its latest one.

    Runs overlap (the schedule, requests and the decay trigger), so an input is read from the run
    that produced it; only an asset materialised outside the current run falls back to the latest.
    """
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in reversed(records):
        materialization = record.event_log_entry.asset_materialization
        if materialization and materialization.asset_key == asset_key:
            return dict(materialization.metadata)
    event = instance.get_latest_materialization_event(asset_key)
    return dict(event.asset_materialization.metadata) if event and event.asset_materialization else {}
