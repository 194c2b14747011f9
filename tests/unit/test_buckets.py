"""The ObjectStore port: S3 URI parsing, the filesystem adapter, and both adapters against one behavioural test."""

from __future__ import annotations

import io
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openhi.core.errors import ValidationError
from openhi.ports.objects import (
    BucketNotFound,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    parse_s3_uri,
)
from openhi.storage.buckets_fs import TEMP_PREFIX, FsObjectStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seaweed import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedServer, SeaweedUnavailable

# -- parse_s3_uri --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/in/", ("bucket", "in/")),
        ("s3://bucket/in", ("bucket", "in/")),
        ("s3://my.bucket-1/a/b/c/", ("my.bucket-1", "a/b/c/")),
        ("s3://abc/dicom input/study 1/", ("abc", "dicom input/study 1/")),
        ("s3://abc/a..b/", ("abc", "a..b/")),
        ("s3://abc/.hidden/", ("abc", ".hidden/")),
        ("s3://" + "a" * 63 + "/x/", ("a" * 63, "x/")),
    ],
)
def test_parse_s3_uri_accepts(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://bucket/../etc/", "'..'"),
        ("s3://bucket/a/../../b/", "'..'"),
        ("s3://bucket/a/..", "'..'"),
        ("s3://bucket/./a/", "'.'"),
        ("s3://bucket//etc/passwd", "starts with '/'"),
        ("s3://bucket/a//b/", "empty path segment"),
        ("s3://bucket/a\\b/", "backslash"),
        ("s3://bucket/a\x00b/", "NUL"),
        ("s3://bucket/a\nb/", "control character"),
        ("s3://Bucket/x/", "bucket name"),
        ("s3://ab/x/", "bucket name"),
        ("s3://-bucket/x/", "bucket name"),
        ("s3://bucket-/x/", "bucket name"),
        ("s3://bu_cket/x/", "bucket name"),
        ("s3://" + "a" * 64 + "/x/", "bucket name"),
        ("s3://", "bucket name"),
        ("https://bucket/x/", "scheme"),
        ("S3://bucket/x/", "scheme"),
        ("file:///etc/", "scheme"),
        ("/data/bucket/x/", "scheme"),
        ("", "non-empty"),
        ("s3://bucket/" + "x" * 1100, "longer than"),
    ],
)
def test_parse_s3_uri_rejects(uri: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_s3_uri(uri)
    assert problem in caught.value.message
    if uri and len(uri) < 100:
        assert repr(uri) in caught.value.message  # names the URI


# -- FsObjectStore -------------------------------------------------------------------------------


@pytest.fixture
def fs_store(tmp_path: Path) -> FsObjectStore:
    return FsObjectStore(tmp_path / "buckets")


def test_fs_layout_is_root_bucket_key(fs_store: FsObjectStore) -> None:
    fs_store.put("bucket", "a/b/c.dcm", b"DICM")
    assert (fs_store.root / "bucket" / "a" / "b" / "c.dcm").read_bytes() == b"DICM"
    (fs_store.root / "bucket" / "dropped.dcm").write_bytes(b"by hand")
    assert fs_store.get("bucket", "dropped.dcm") == b"by hand"
    assert fs_store.exists_bucket("bucket")
    assert not fs_store.exists_bucket("other")


def test_fs_put_get_list_roundtrip(fs_store: FsObjectStore) -> None:
    fs_store.put("bucket", "in/x.dcm", b"1")
    fs_store.put("bucket", "in/sub/deeper/y.dcm", b"22")
    fs_store.put("bucket", "in-other/z.dcm", b"333")
    fs_store.put("bucket", "top.dcm", b"4444")
    fs_store.put("bucket", "in/x.dcm", b"11")  # overwrite
    assert fs_store.get("bucket", "in/x.dcm") == b"11"
    assert list(fs_store.list("bucket", "in/")) == [
        ObjectInfo("in/sub/deeper/y.dcm", 2),
        ObjectInfo("in/x.dcm", 2),
    ]
    # a plain string prefix, like S3: "in" also matches "in-other/"; sorted by key overall
    assert [i.key for i in fs_store.list("bucket", "in")] == [
        "in-other/z.dcm",
        "in/sub/deeper/y.dcm",
        "in/x.dcm",
    ]
    assert [i.key for i in fs_store.list("bucket", "in/sub/de")] == ["in/sub/deeper/y.dcm"]
    assert [i.key for i in fs_store.list("bucket", "")] == [
        "in-other/z.dcm",
        "in/sub/deeper/y.dcm",
        "in/x.dcm",
        "top.dcm",
    ]
    assert list(fs_store.list("bucket", "nothing/")) == []


def test_fs_put_is_atomic_and_leaves_no_temp_files(
    fs_store: FsObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs_store.put("bucket", "k/obj", b"old")

    def boom(src: Any, dst: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        fs_store.put("bucket", "k/obj", b"new")
    monkeypatch.undo()
    assert fs_store.get("bucket", "k/obj") == b"old"
    assert sorted(p.name for p in (fs_store.root / "bucket" / "k").iterdir()) == ["obj"]


def test_fs_list_skips_temp_files(fs_store: FsObjectStore) -> None:
    fs_store.put("bucket", "in/a", b"a")
    (fs_store.root / "bucket" / "in" / f"{TEMP_PREFIX}abc.part").write_bytes(b"partial")
    assert [i.key for i in fs_store.list("bucket", "")] == ["in/a"]


def test_fs_missing_object_and_bucket(fs_store: FsObjectStore) -> None:
    with pytest.raises(BucketNotFound):
        fs_store.get("nobucket", "x")
    with pytest.raises(BucketNotFound):
        list(fs_store.list("nobucket", ""))
    fs_store.put("bucket", "dir/x", b"x")
    with pytest.raises(ObjectNotFound):
        fs_store.get("bucket", "missing")
    with pytest.raises(ObjectNotFound):
        fs_store.get("bucket", "dir")  # a directory is not an object


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "../../etc/passwd",
        "a/../../x",
        "a/../b",
        "/etc/passwd",
        "a\\..\\x",
        "a\x00b",
        "./a",
        "a//b",
        "a/",
        "",
    ],
)
def test_fs_rejects_traversal_keys(fs_store: FsObjectStore, key: str) -> None:
    secret = fs_store.root / "secret"
    fs_store.root.mkdir(parents=True)
    secret.write_bytes(b"top secret")
    (fs_store.root / "bucket").mkdir()
    with pytest.raises(ValidationError):
        fs_store.get("bucket", key)
    with pytest.raises(ValidationError):
        fs_store.put("bucket", key, b"overwrite")
    assert secret.read_bytes() == b"top secret"


@pytest.mark.parametrize("bucket", ["..", ".", "../buckets", "a/b", "", "UPPER"])
def test_fs_rejects_bad_bucket_names(fs_store: FsObjectStore, bucket: str) -> None:
    for call in (
        lambda: fs_store.get(bucket, "x"),
        lambda: fs_store.put(bucket, "x", b"x"),
        lambda: list(fs_store.list(bucket, "")),
        lambda: fs_store.exists_bucket(bucket),
    ):
        with pytest.raises(ValidationError):
            call()


@pytest.mark.parametrize("prefix", ["../", "/abs", "a/../", "a\\b"])
def test_fs_rejects_traversal_prefixes(fs_store: FsObjectStore, prefix: str) -> None:
    fs_store.put("bucket", "a/b", b"x")
    with pytest.raises(ValidationError):
        list(fs_store.list("bucket", prefix))


def test_fs_symlink_escape_rejected_nothing_read(fs_store: FsObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"top secret")
    bucket_dir = fs_store.root / "bucket"
    bucket_dir.mkdir(parents=True)
    (bucket_dir / "ok.dcm").write_bytes(b"ok")
    (bucket_dir / "file-link").symlink_to(outside / "secret.txt")
    (bucket_dir / "dir-link").symlink_to(outside, target_is_directory=True)
    (bucket_dir / "inner-link").symlink_to(bucket_dir / "ok.dcm")  # stays inside: fine

    with pytest.raises(ValidationError, match="outside the bucket"):
        fs_store.get("bucket", "file-link")
    with pytest.raises(ValidationError, match="outside the bucket"):
        fs_store.get("bucket", "dir-link/secret.txt")
    with pytest.raises(ValidationError, match="outside the bucket"):
        fs_store.put("bucket", "dir-link/new.txt", b"x")
    with pytest.raises(ValidationError, match="outside the bucket"):
        fs_store.put("bucket", "file-link", b"overwrite")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"top secret"
    # listing neither follows the directory link nor reports the escaping file link
    assert [i.key for i in fs_store.list("bucket", "")] == ["inner-link", "ok.dcm"]
    assert list(fs_store.list("bucket", "dir-link/")) == []
    assert fs_store.get("bucket", "inner-link") == b"ok"


def test_fs_bucket_symlinked_out_of_root_is_contained(fs_store: FsObjectStore, tmp_path: Path) -> None:
    """A key can't climb out of a bucket that is itself a symlink (e.g. to mounted data)."""
    real = tmp_path / "mounted"
    (real / "in").mkdir(parents=True)
    (real / "in" / "a.dcm").write_bytes(b"a")
    (tmp_path / "secret").write_bytes(b"top secret")
    fs_store.root.mkdir(parents=True)
    (fs_store.root / "mounted").symlink_to(real, target_is_directory=True)
    assert fs_store.get("mounted", "in/a.dcm") == b"a"
    assert [i.key for i in fs_store.list("mounted", "in/")] == ["in/a.dcm"]
    (real / "up").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValidationError):
        fs_store.get("mounted", "up/secret")


# -- both adapters, one behaviour ----------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"SeaweedFS is required in CI: {reason}")
    pytest.skip(f"SeaweedFS unavailable: {reason}")


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS server for this module (skipped locally when it can't start; fails in CI)."""
    server = SeaweedServer()
    try:
        server.start(tmp_path_factory.mktemp("seaweed"))
    except (SeaweedUnavailable, OSError) as exc:
        server.stop()
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
def store_and_bucket(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, str]:
    """(an adapter, an existing empty bucket)."""
    bucket = f"openhi-test-{uuid.uuid4().hex[:12]}"
    if request.param == "fs":
        fs = FsObjectStore(tmp_path / "buckets")
        (fs.root / bucket).mkdir(parents=True)
        return fs, bucket
    from openhi.storage.buckets_s3 import S3ObjectStore

    server: SeaweedServer = request.getfixturevalue("seaweed")
    server.create_bucket(bucket)
    assert server.endpoint_url is not None
    s3 = S3ObjectStore(server.endpoint_url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)
    return s3, bucket


def test_object_store_behaviour(store_and_bucket: tuple[ObjectStore, str]) -> None:
    store, bucket = store_and_bucket
    assert store.exists_bucket(bucket)
    assert list(store.list(bucket, "")) == []

    objects = {
        "in/study-1/series-a/0001.dcm": b"DICM" * 10,
        "in/study-1/0002.dcm": b"\x00\x01\x02",
        "in/study 2/deep/er/0003.dcm": b"x" * 1000,
    }
    for key, data in reversed(objects.items()):
        store.put(bucket, key, data)
    store.put(bucket, "out/report.json", b"{}")
    store.put(bucket, "input-decoy/0004.dcm", b"no")

    listed = list(store.list(bucket, "in/"))
    assert listed == sorted((ObjectInfo(k, len(v)) for k, v in objects.items()), key=lambda i: i.key)
    assert [i.key for i in store.list(bucket, "in/study-1/")] == [
        "in/study-1/0002.dcm",
        "in/study-1/series-a/0001.dcm",
    ]
    assert [i.key for i in store.list(bucket, "in/study-1/series")] == ["in/study-1/series-a/0001.dcm"]
    assert [i.key for i in store.list(bucket, "in")] == [  # a string prefix, as on S3
        "in/study 2/deep/er/0003.dcm",
        "in/study-1/0002.dcm",
        "in/study-1/series-a/0001.dcm",
        "input-decoy/0004.dcm",
    ]
    assert list(store.list(bucket, "nothing/")) == []
    assert len(list(store.list(bucket, ""))) == 5

    for key, data in objects.items():
        assert store.get(bucket, key) == data
    store.put(bucket, "out/report.json", b'{"done": true}')  # overwrite
    assert store.get(bucket, "out/report.json") == b'{"done": true}'

    with pytest.raises(ObjectNotFound):
        store.get(bucket, "in/missing.dcm")
    with pytest.raises(ValidationError):
        store.get(bucket, "../escape")
    with pytest.raises(ValidationError):
        store.put(bucket, "in/../../escape", b"x")

    missing = f"openhi-missing-{uuid.uuid4().hex[:12]}"
    assert not store.exists_bucket(missing)
    with pytest.raises(BucketNotFound):
        store.get(missing, "in/x.dcm")
    with pytest.raises(BucketNotFound):
        list(store.list(missing, "in/"))


# -- adapter specifics ---------------------------------------------------------------------------


def test_fs_put_creates_the_bucket(fs_store: FsObjectStore) -> None:
    assert not fs_store.exists_bucket("fresh")
    fs_store.put("fresh", "a/b", b"x")
    assert fs_store.exists_bucket("fresh")


@pytest.mark.s3
def test_s3_put_to_missing_bucket_is_bucket_not_found(seaweed: SeaweedServer) -> None:
    from openhi.storage.buckets_s3 import S3ObjectStore

    assert seaweed.endpoint_url is not None
    store = S3ObjectStore(
        seaweed.endpoint_url, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY
    )
    missing = f"openhi-missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(BucketNotFound):
        store.put(missing, "x", b"x")
    assert not store.exists_bucket(missing)


@pytest.mark.s3
def test_s3_credentials_default_from_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from openhi.storage.buckets_s3 import S3ObjectStore

    assert seaweed.endpoint_url is not None
    bucket = f"openhi-test-{uuid.uuid4().hex[:12]}"
    seaweed.create_bucket(bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENHI_S3_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("OPENHI_S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    S3ObjectStore(seaweed.endpoint_url).put(bucket, "via-openhi-env", b"1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("OPENHI_S3_SECRET_ACCESS_KEY", "wrong")  # AWS_* wins
    assert S3ObjectStore(seaweed.endpoint_url).get(bucket, "via-openhi-env") == b"1"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(Exception, match=r"(?i)signature|denied|forbidden|403"):
        S3ObjectStore(seaweed.endpoint_url).get(bucket, "via-openhi-env")


# ---- put_file and delete (what the upload routes of `openhi import` use)


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
