"""FsObjectStore.get: the opened-file check and the resolve-first path answer alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openhi.core.errors import ValidationError
from openhi.ports.objects import BucketNotFound, ObjectNotFound
from openhi.storage import buckets_fs
from openhi.storage.buckets_fs import FsObjectStore


def _no_proc(fd: int) -> str | None:
    return None


@pytest.fixture(params=["proc", "no-proc"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FsObjectStore:
    if request.param == "no-proc":
        monkeypatch.setattr(buckets_fs, "_opened_path", _no_proc)
    return FsObjectStore(tmp_path / "buckets")


def test_reads_whole_files(store: FsObjectStore) -> None:
    big = os.urandom(1_000_003)
    store.put("bucket", "a/big.dcm", big)
    store.put("bucket", "empty", b"")
    assert store.get("bucket", "a/big.dcm") == big
    assert store.get("bucket", "empty") == b""


def test_errors(store: FsObjectStore, tmp_path: Path) -> None:
    with pytest.raises(BucketNotFound):
        store.get("nobucket", "x")
    store.put("bucket", "a/b.dcm", b"x")
    with pytest.raises(ObjectNotFound):
        store.get("bucket", "a")  # a directory
    with pytest.raises(ObjectNotFound):
        store.get("bucket", "a/missing")
    with pytest.raises(ValidationError):
        store.get("bucket", ".openhi-tmp-x")
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    (store.root / "bucket" / "link").symlink_to(outside)
    (store.root / "bucket" / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    (store.root / "bucket" / "inner").symlink_to(store.root / "bucket" / "a" / "b.dcm")
    with pytest.raises(ValidationError, match="outside the bucket"):
        store.get("bucket", "link")
    with pytest.raises(ValidationError, match="outside the bucket"):
        store.get("bucket", "dirlink/secret")
    with pytest.raises(ValidationError, match="outside the bucket"):
        store.get("bucket", "dirlink/missing")
    assert store.get("bucket", "inner") == b"x"


def test_bucket_that_is_a_symlink(store: FsObjectStore, tmp_path: Path) -> None:
    real = tmp_path / "mounted"
    (real / "in").mkdir(parents=True)
    (real / "in" / "a.dcm").write_bytes(b"a")
    store.root.mkdir(parents=True)
    (store.root / "mounted").symlink_to(real, target_is_directory=True)
    assert store.get("mounted", "in/a.dcm") == b"a"


def test_a_fifo_is_not_an_object_and_never_blocks(tmp_path: Path) -> None:
    """A FIFO (in the bucket, or outside behind a symlink) must neither block the reader nor be read."""
    store = FsObjectStore(tmp_path / "buckets")
    bucket = tmp_path / "buckets" / "inbox"
    bucket.mkdir(parents=True)
    os.mkfifo(bucket / "pipe")
    os.mkfifo(tmp_path / "outside-pipe")
    (bucket / "link").symlink_to(tmp_path / "outside-pipe")
    with pytest.raises(ObjectNotFound):
        store.get("inbox", "pipe")
    with pytest.raises(ValidationError):
        store.get("inbox", "link")
