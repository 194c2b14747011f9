"""ObjectStore put_file and delete (what the upload routes use), on both adapters."""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from openhi.ports.objects import ObjectStore
from openhi.storage.buckets_fs import FsObjectStore
from seaweed import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedServer, SeaweedUnavailable


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer()
    try:
        server.start(tmp_path_factory.mktemp("seaweed"))
    except (SeaweedUnavailable, OSError) as exc:
        server.stop()
        if os.environ.get("CI") == "true":
            pytest.fail(f"SeaweedFS is required in CI: {exc}")
        pytest.skip(f"SeaweedFS unavailable: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
def store_and_bucket(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, str]:
    bucket = f"openhi-up-{uuid.uuid4().hex[:12]}"
    if request.param == "fs":
        fs = FsObjectStore(tmp_path / "buckets")
        (fs.root / bucket).mkdir(parents=True)
        return fs, bucket
    from openhi.storage.buckets_s3 import S3ObjectStore

    server: SeaweedServer = request.getfixturevalue("seaweed")
    server.create_bucket(bucket)
    assert server.endpoint_url is not None
    return S3ObjectStore(
        server.endpoint_url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY
    ), bucket


def test_put_file_streams_a_file_and_delete_removes_it(store_and_bucket: tuple[ObjectStore, str]) -> None:
    store, bucket = store_and_bucket
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one copy chunk
    with tempfile.TemporaryFile() as handle:
        handle.write(data)
        handle.seek(0)
        store.put_file(bucket, "stage/input/a.dcm", handle)
    store.put_file(bucket, "stage/input/b.dcm", io.BytesIO(b"small"))
    store.put(bucket, "stage/output/report.json", b"{}")
    assert store.get(bucket, "stage/input/a.dcm") == data
    assert [i.key for i in store.list(bucket, "stage/")] == [
        "stage/input/a.dcm",
        "stage/input/b.dcm",
        "stage/output/report.json",
    ]
    store.delete(bucket, "stage/input/a.dcm")
    store.delete(bucket, "stage/input/a.dcm")  # again: nothing there, nothing happens
    store.delete(bucket, "stage/never-existed")
    assert [i.key for i in store.list(bucket, "stage/")] == ["stage/input/b.dcm", "stage/output/report.json"]


def test_fs_put_file_creates_the_bucket_and_replaces_atomically(tmp_path: Path) -> None:
    store = FsObjectStore(tmp_path / "buckets")
    store.put_file("new-bucket", "k/x", io.BytesIO(b"one"))
    store.put_file("new-bucket", "k/x", io.BytesIO(b"two"))
    assert store.get("new-bucket", "k/x") == b"two"
    assert sorted(p.name for p in (tmp_path / "buckets" / "new-bucket" / "k").iterdir()) == ["x"]
