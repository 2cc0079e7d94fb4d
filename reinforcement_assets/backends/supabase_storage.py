"""Artifacts (datasets, models, training logs) in a private Supabase Storage bucket."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from pydantic import Field
from storage3.exceptions import StorageApiError

from .artifacts import ArtifactFile, ArtifactIOManager, ArtifactStorage, clean_path
from .store import StoreError, parse_timestamp
from .supabase_client import SupabaseProject

DEFAULT_BUCKET = "reinforcement-artifacts"
FREE_PLAN_FILE_LIMIT = 50 * 1024 * 1024  # bytes: the largest file a Free Supabase project accepts
WEEK_SECONDS = 7 * 24 * 3600


class SupabaseArtifactStorage(ArtifactStorage, SupabaseProject):
    """Artifacts as objects `<prefix>/<path>` in a private Supabase Storage bucket, via the service_role key.

    Uploads overwrite (`x-upsert: true`) and carry their content type; `uri` is a signed URL the
    Dagster UI can open (valid `signed_url_seconds`). Files above `max_upload_bytes` are refused
    before upload: keep it at or below the bucket's file size limit (50 MB on Free projects).
    """

    bucket: str = Field(default=DEFAULT_BUCKET, description="A private bucket (the migrations create this one).")
    prefix: str = Field(default="", description="Folder inside the bucket for every object of this project.")
    max_upload_bytes: int = Field(default=FREE_PLAN_FILE_LIMIT, description="Largest file uploaded, in bytes.")
    signed_url_seconds: int = Field(default=WEEK_SECONDS, description="Lifetime of the signed URLs in metadata.")
    timeout_seconds: float = Field(default=60.0, description="Timeout for connecting and for each read and write.")
    list_page_size: int = Field(default=1000, description="Objects asked for per listing request.")

    def object_key(self, path: str) -> str:
        """Where `path` lives in the bucket."""
        path = clean_path(path)
        return f"{clean_path(self.prefix)}/{path}" if self.prefix else path

    def _call(self, operation: str, path: str, fn: Callable[[], Any], *, idempotent: bool) -> Any:
        return self._call_project(fn, operation=operation, target=f"bucket {self.bucket}, {self.object_key(path)}",
                                  idempotent=idempotent)

    def uri(self, path: str) -> str:
        key = self.object_key(path)
        if self.signed_url_seconds <= 0:
            return f"{self.url.rstrip('/')}/storage/v1/object/authenticated/{self.bucket}/{quote(key)}"
        signed = self._call("sign URL", path, lambda: self.client.storage.from_(self.bucket)
                            .create_signed_url(key, self.signed_url_seconds), idempotent=True)
        return signed["signedURL"]

    def _put(self, path: str, data: bytes, content_type: str) -> None:
        key = self.object_key(path)
        if len(data) > self.max_upload_bytes:
            raise StoreError(too_large(key, len(data), self.max_upload_bytes))

        def upload():
            try:
                # storage3 sends "upsert" as the x-upsert header, so it must be the string "true".
                return self.client.storage.from_(self.bucket).upload(
                    key, data, file_options={"content-type": content_type, "upsert": "true"})
            except StorageApiError as exc:
                if str(exc.status) == "413":
                    raise StoreError(too_large(key, len(data), self.max_upload_bytes, by_server=True)) from None
                raise

        # An overwriting upload of the same bytes may be repeated.
        self._call("upload", path, upload, idempotent=True)

    def _get(self, path: str) -> bytes:
        key = self.object_key(path)

        def download():
            try:
                return self.client.storage.from_(self.bucket).download(key)
            except StorageApiError as exc:
                if str(exc.status) == "404" or exc.code in ("not_found", "NoSuchKey"):
                    raise FileNotFoundError(f"artifact {key} not found in Supabase Storage bucket {self.bucket}") \
                        from None
                raise

        return self._call("download", path, download, idempotent=True)

    def _delete(self, path: str) -> None:
        key = self.object_key(path)
        # Storage answers a removal of a missing object with an empty list, not an error; removing twice
        # is harmless, so it may be repeated.
        self._call("delete", path, lambda: self.client.storage.from_(self.bucket).remove([key]), idempotent=True)

    def _list(self, prefix: str) -> Iterator[ArtifactFile]:
        root = clean_path(self.prefix) if self.prefix else ""
        folder = "/".join(part for part in (root, prefix) if part)
        yield from self._walk(folder, prefix)

    def _walk(self, folder: str, relative: str) -> Iterator[ArtifactFile]:
        """The objects under `folder` (a bucket key), as paths under `relative`: Storage lists one level at a
        time, folders as entries without an id, a page (offset, limit) at a time."""
        bucket = self.client.storage.from_(self.bucket)
        offset = 0
        while True:
            page = self._call_project(
                lambda offset=offset: bucket.list(folder, {"limit": self.list_page_size, "offset": offset,
                                                           "sortBy": {"column": "name", "order": "asc"}}),
                operation="list", target=f"bucket {self.bucket}, {folder or '/'}", idempotent=True)
            if not page:  # a short page may still not be the last: stop at an empty one
                return
            for entry in page:
                key = f"{folder}/{entry['name']}" if folder else entry["name"]
                path = f"{relative}/{entry['name']}" if relative else entry["name"]
                if entry.get("id") is None:
                    yield from self._walk(key, path)
                else:
                    metadata = entry.get("metadata") or {}
                    yield ArtifactFile(path, int(metadata.get("size") or 0), parse_timestamp(entry.get("updated_at")))
            offset += len(page)


def too_large(key: str, size: int, limit: int, by_server: bool = False) -> str:
    where = ("the bucket's file size limit (the server refused it; max_upload_bytes is "
             f"{limit:,} bytes)" if by_server else f"max_upload_bytes = {limit:,} bytes ({limit / 2**20:g} MB)")
    return (f"{key} is {size:,} bytes, above {where}. Supabase Free projects cap files at 50 MB: raise the "
            "bucket's file size limit on a paid plan and max_upload_bytes with it, or make the artifact smaller")


class SupabaseIOManager(ArtifactIOManager):
    """Asset values in a Supabase Storage bucket, in the manner of `S3PickleIOManager`.

    `storage` names the project, bucket and prefix; values go to
    `<storage prefix>/<prefix>/<asset key>/<run id>.<parquet|joblib>` with path, signed URL, size
    and sha256 in the output metadata, and loading refuses bytes whose sha256 differs.
    """

    storage: SupabaseArtifactStorage
