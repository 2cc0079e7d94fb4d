"""Artifacts in Supabase Storage and the Supabase IO manager, through a real `supabase` client.

Supabase's Storage server cannot run here, so `SupabaseEmulator` (supabase_transport.py) replaces
it: an `httpx.MockTransport` answering Storage's documented endpoints (multipart upload with
`x-upsert`, download, signed URLs, the bucket's file size limit, error bodies
`{"statusCode","error","message"}`). The requests the client sends are asserted as sent.
"""

from __future__ import annotations

import json

import dagster as dg
import httpx
import pandas as pd
import pytest

from reinforcement_assets.backends.artifacts import ArtifactIntegrityError, sha256_hex
from reinforcement_assets.backends.store import StoreError
from reinforcement_tests.supabase_transport import (
    SERVICE_KEY,
    URL,
    Bucket,
    SupabaseEmulator,
    emulated_resources,
    multipart_parts,
)

BUCKET = "reinforcement-artifacts"


@pytest.fixture
def storage(project):
    return emulated_resources(project, artifacts={"prefix": "tenant-a"})["artifacts"]


def test_an_upload_carries_its_content_type_and_overwrites(storage, project):
    stored = storage.write("logs/run-1.log", b"epoch 1\n", "text/plain")
    (upload,) = project.sent("POST", f"/storage/v1/object/{BUCKET}/")
    assert upload.url.path == f"/storage/v1/object/{BUCKET}/tenant-a/logs/run-1.log"
    assert upload.headers["x-upsert"] == "true"
    assert upload.headers["apikey"] == SERVICE_KEY and upload.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    data, content_type = multipart_parts(upload)["file"]
    assert (data, content_type) == (b"epoch 1\n", "text/plain")
    assert (stored.path, stored.size_bytes, stored.sha256) == ("logs/run-1.log", 8, sha256_hex(b"epoch 1\n"))

    storage.write("logs/run-1.log", b"epoch 2\n", "text/plain")  # x-upsert: the second write replaces the first
    assert storage.read("logs/run-1.log", sha256_hex(b"epoch 2\n")) == b"epoch 2\n"
    assert project.buckets[BUCKET].objects["tenant-a/logs/run-1.log"].content_type == "text/plain"


def test_the_uri_is_a_signed_url_that_opens_without_credentials(storage, project):
    stored = storage.write("models/v1.joblib", b"\x80model bytes\x00", "application/octet-stream")
    assert stored.uri.startswith(f"{URL}/storage/v1/object/sign/{BUCKET}/tenant-a/models/v1.joblib?token=")
    (sign,) = project.sent("POST", "/storage/v1/object/sign/")
    assert json.loads(sign.content) == {"expiresIn": "604800"}  # a week, as a string
    with project.http_client() as anonymous:
        assert anonymous.get(stored.uri).content == b"\x80model bytes\x00"
        forged = stored.uri.replace("v1.joblib", "v2.joblib")
        assert anonymous.get(forged).json()["error"] == "InvalidSignature"

    unsigned = emulated_resources(project, artifacts={"signed_url_seconds": 0})["artifacts"]
    project.requests.clear()
    assert unsigned.uri("a/b.parquet") == f"{URL}/storage/v1/object/authenticated/{BUCKET}/a/b.parquet"
    assert project.requests == []


def test_files_above_the_limit_are_refused_with_the_limit_named(storage, project, database_url):
    small = emulated_resources(project, artifacts={"max_upload_bytes": 1_000})["artifacts"]
    with pytest.raises(StoreError, match=r"big.bin is 2,000 bytes, above max_upload_bytes = 1,000 bytes .*50 MB"):
        small.write("big.bin", b"x" * 2_000)
    assert project.sent("POST") == []  # refused before uploading

    tight = SupabaseEmulator(database_url, buckets={BUCKET: Bucket(file_size_limit=500)})
    try:
        server_side = emulated_resources(tight)["artifacts"]
        with pytest.raises(StoreError, match=r"big.bin is 2,000 bytes, above the bucket's file size limit \(the "
                                             r"server refused it; max_upload_bytes is 52,428,800 bytes\)"):
            server_side.write("big.bin", b"x" * 2_000)
        assert len(tight.sent("POST")) == 1  # a refusal is not retried
    finally:
        tight.close()


def test_missing_and_tampered_objects_are_refused(storage, project):
    with pytest.raises(FileNotFoundError, match=f"artifact tenant-a/nothing.parquet not found in Supabase Storage "
                                                f"bucket {BUCKET}"):
        storage.read("nothing.parquet", "0" * 64)
    assert len(project.sent("GET")) == 1

    stored = storage.write_value("datasets/d", pd.DataFrame({"a": [1, 2]}))
    project.buckets[BUCKET].objects["tenant-a/datasets/d.parquet"].data += b"tampered"
    with pytest.raises(ArtifactIntegrityError, match="refusing to load datasets/d.parquet"):
        storage.read_value(stored.path, stored.sha256)


def test_transient_storage_failures_are_retried_and_final_ones_are_not(storage, project):
    project.fail(method="POST", path="/object/reinforcement-artifacts/", status=503,
                 body={"statusCode": "503", "error": "Service Unavailable", "message": "try again"})
    project.fail(method="GET", exception=httpx.ReadTimeout)
    project.fail(method="GET", exception=httpx.RemoteProtocolError)
    stored = storage.write("a.bin", b"abc")
    assert storage.read("a.bin", stored.sha256) == b"abc"
    assert len(project.sent("POST", "/object/reinforcement-artifacts/")) == 2
    assert len(project.sent("GET")) == 3

    project.requests.clear()
    project.fail(method="GET", times=10, status=500,
                 body={"statusCode": "500", "error": "internal", "message": "database timeout"})
    with pytest.raises(StoreError, match=r"download \(bucket reinforcement-artifacts, tenant-a/a.bin\) failed: "
                                         r"Storage error 500 internal: database timeout \(after 4 attempts\)"):
        storage.read("a.bin", stored.sha256)

    wrong = emulated_resources(project, artifacts={"service_key": "not-this-project-key-42"})["artifacts"]
    project.requests.clear()
    with pytest.raises(StoreError, match=r"upload \(bucket reinforcement-artifacts, b.bin\) failed: Storage error "
                                         r"401") as raised:
        wrong.write("b.bin", b"b")
    assert "not-this-project-key-42" not in str(raised.value) and len(project.requests) == 1


def test_the_io_manager_round_trips_frames_and_objects_with_their_sha256(project):
    resources = emulated_resources(project)

    @dg.asset
    def table() -> pd.DataFrame:
        return pd.DataFrame({"x": [1.0, 2.0], "label": ["a", "b"]})

    @dg.asset
    def summary(table: pd.DataFrame) -> dict:
        return {"rows": len(table), "labels": list(table["label"])}

    @dg.asset
    def echo(summary: dict) -> None:
        assert summary == {"rows": 2, "labels": ["a", "b"]}

    result = dg.materialize([table, summary, echo], resources={"io_manager": resources["io_manager"]})
    assert result.success
    metadata = {e.materialization.asset_key.to_user_string():
                {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
    objects = project.buckets[BUCKET].objects
    for key, extension, content_type in (("table", "parquet", "application/vnd.apache.parquet"),
                                         ("summary", "joblib", "application/octet-stream")):
        path = f"assets/{key}/{result.run_id}.{extension}"
        assert metadata[key]["path"] == path
        assert metadata[key]["sha256"] == sha256_hex(objects[path].data)
        assert metadata[key]["size_bytes"] == len(objects[path].data)
        assert metadata[key]["uri"].startswith(f"{URL}/storage/v1/object/sign/{BUCKET}/{path}?token=")
        assert objects[path].content_type == content_type

    # A joblib file is code: changed bytes are refused, not loaded.
    with dg.instance_for_test() as instance:
        first = dg.materialize([table, summary, echo], resources={"io_manager": resources["io_manager"]},
                               instance=instance)
        objects[f"assets/summary/{first.run_id}.joblib"].data += b"!"
        again = dg.materialize([table, summary, echo], selection=[echo], instance=instance,
                               resources={"io_manager": resources["io_manager"]}, raise_on_error=False)
    assert not again.success
    assert "refusing to load assets/summary/" in str(again.get_step_failure_events()[0].event_specific_data.error)


def test_delete_removes_the_object_and_one_already_gone_is_not_an_error(storage, project):
    storage.write("models/v1.joblib", b"model")
    project.requests.clear()
    storage.delete("models/v1.joblib")
    (removal,) = project.sent("DELETE")
    assert removal.url.path == f"/storage/v1/object/{BUCKET}"
    assert json.loads(removal.content) == {"prefixes": ["tenant-a/models/v1.joblib"]}
    assert "tenant-a/models/v1.joblib" not in project.buckets[BUCKET].objects
    storage.delete("models/v1.joblib")  # Storage answers a removal of nothing with an empty list
    # Removing is idempotent: a transient failure is repeated.
    project.fail(method="DELETE", status=503, body={"statusCode": "503", "error": "Service Unavailable",
                                                    "message": "try again"})
    storage.delete("models/v2.joblib")
    assert len(project.sent("DELETE")) == 4
    # A missing bucket is a configuration error, not a missing file.
    elsewhere = emulated_resources(project, artifacts={"bucket": "no-such-bucket"})["artifacts"]
    with pytest.raises(StoreError, match=r"delete \(bucket no-such-bucket, models/x\) failed: Storage error 404"):
        elsewhere.delete("models/x")


def test_a_listing_walks_folder_by_folder_a_page_at_a_time_under_the_prefix(project):
    storage = emulated_resources(project, artifacts={"prefix": "tenant-a", "list_page_size": 2})["artifacts"]
    paths = ["assets/a/1.parquet", "assets/a/2.parquet", "assets/a/3.parquet", "assets/b/4.parquet", "logs/x.log"]
    for path in paths:
        storage.write(path, path.encode())
    other = emulated_resources(project, artifacts={"prefix": "tenant-b"})["artifacts"]
    other.write("assets/a/9.parquet", b"another tenant's")
    project.requests.clear()

    files = storage.list_files("assets")
    assert [(f.path, f.size_bytes) for f in files] == [(p, len(p)) for p in paths[:4]]
    assert all(f.modified is not None and f.modified.tzinfo is not None for f in files)
    bodies = [json.loads(r.content) for r in project.sent("POST", f"/storage/v1/object/list/{BUCKET}")]
    assert [(b["prefix"], b["offset"]) for b in bodies] == [
        ("tenant-a/assets", 0), ("tenant-a/assets/a", 0), ("tenant-a/assets/a", 2), ("tenant-a/assets/a", 3),
        ("tenant-a/assets/b", 0), ("tenant-a/assets/b", 1), ("tenant-a/assets", 2)]
    assert all(b["limit"] == 2 for b in bodies)
    assert [f.path for f in storage.list_files()] == paths
    assert storage.list_files("nothing/here") == []
