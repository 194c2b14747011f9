"""The BlobStore port: one behavioural suite over the filesystem, memory and S3 (SeaweedFS) adapters."""

from __future__ import annotations

import hashlib
import http.server
import multiprocessing
import pickle
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from openhi.ports.blobs import BlobConflict, BlobNotFound, BlobStore
from openhi.storage.blobs_fs import FsBlobStore
from openhi.storage.blobs_memory import MemoryBlobStore
from openhi.storage.blobs_s3 import S3BlobStore
from openhi.storage.registry import ConfigurationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seaweed import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedServer

BUCKET = "openhi-blobs-test"
BIG = 12 * 1024 * 1024  # above S3BlobStore's 8 MiB multipart threshold: two 8 MiB-or-less parts


def _pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes (so a misplaced range read shows)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += bytes((b + counter) & 0xFF for b in block[:256]) + block[256:]
        counter += 1
    return bytes(out[:size])


@pytest.fixture(scope="module")
def s3_bucket(seaweed_s3: SeaweedServer) -> SeaweedServer:
    seaweed_s3.create_bucket(BUCKET)
    return seaweed_s3


def _s3_store(server: SeaweedServer, url: str | None = None, **kwargs: Any) -> S3BlobStore:
    assert server.endpoint_url is not None
    kwargs.setdefault("access_key_id", ACCESS_KEY_ID)
    kwargs.setdefault("secret_access_key", SECRET_ACCESS_KEY)
    return S3BlobStore(
        url or f"s3://{BUCKET}/run-{uuid.uuid4().hex}", endpoint_url=server.endpoint_url, **kwargs
    )


@pytest.fixture(params=["fs", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "fs":
        return FsBlobStore(tmp_path / "blobs")
    if request.param == "memory":
        return MemoryBlobStore()
    return _s3_store(request.getfixturevalue("s3_bucket"))


def _needs_immutability(request: pytest.FixtureRequest, store: BlobStore) -> None:
    """The port says blobs are never rewritten; every adapter enforces it."""


# -- the behavioural suite -----------------------------------------------------------------------


def test_put_get_exists_delete(store: BlobStore) -> None:
    key = "frames/ds1/abcdef0123"
    assert not store.exists(key)
    store.put(key, b"frame bytes")
    assert store.exists(key)
    assert store.get(key) == b"frame bytes"
    store.put("metadata/ds1/set1/1", b"")  # empty blobs are blobs too
    assert store.exists("metadata/ds1/set1/1")
    assert store.get("metadata/ds1/set1/1") == b""
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting what is gone is not an error (the collector may run twice)
    with pytest.raises(BlobNotFound):
        store.get(key)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 10, b"0123456789"),
        (0, 4, b"0123"),
        (3, 7, b"3456"),
        (9, 10, b"9"),
        (5, 100, b"56789"),  # cut short at the end
        (10, 20, b""),  # at the end
        (50, 60, b""),  # past the end
        (4, 4, b""),  # empty
        (7, 3, b""),  # reversed
    ],
)
def test_get_range(store: BlobStore, start: int, end: int, expected: bytes) -> None:
    store.put("frames/ds/range01", b"0123456789")
    assert store.get_range("frames/ds/range01", start, end) == expected


def test_missing_blob_is_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        store.get("frames/ds/missing01")
    with pytest.raises(BlobNotFound):
        store.get_range("frames/ds/missing01", 0, 4)
    with pytest.raises(BlobNotFound):
        store.get_range("frames/ds/missing01", 2, 2)
    assert not store.exists("frames/ds/missing01")


def test_same_bytes_again_is_accepted(store: BlobStore) -> None:
    """A retried write (same key, same bytes) succeeds: imports re-run after a crash do this."""
    store.put("frames/ds/again01", b"same")
    store.put("frames/ds/again01", b"same")
    assert store.get("frames/ds/again01") == b"same"


@pytest.mark.parametrize("second", [b"other bytes", b"diff", b""], ids=["longer", "same-size", "empty"])
def test_different_bytes_are_refused(request: pytest.FixtureRequest, store: BlobStore, second: bytes) -> None:
    _needs_immutability(request, store)
    store.put("frames/ds/once01", b"same")
    with pytest.raises(FileExistsError):
        store.put("frames/ds/once01", second)
    assert store.get("frames/ds/once01") == b"same"


def test_large_blob_roundtrip(store: BlobStore) -> None:
    data = _pattern(BIG)
    store.put("frames/ds/big0001", data)
    assert store.get("frames/ds/big0001") == data
    assert store.get_range("frames/ds/big0001", 5_000_000, 9_000_001) == data[5_000_000:9_000_001]
    assert store.get_range("frames/ds/big0001", BIG - 3, BIG + 10) == data[-3:]
    store.put("frames/ds/big0001", data)  # a retry of the same large write


def test_large_blob_is_immutable(request: pytest.FixtureRequest, store: BlobStore) -> None:
    _needs_immutability(request, store)
    data = _pattern(BIG)
    store.put("frames/ds/big0002", data)
    changed = bytearray(data)
    changed[BIG // 2] ^= 0xFF
    with pytest.raises(FileExistsError):
        store.put("frames/ds/big0002", bytes(changed))  # same size, one byte different
    with pytest.raises(FileExistsError):
        store.put("frames/ds/big0002", b"small now")  # a small put onto a large blob
    assert store.get("frames/ds/big0002") == data


def test_pickled_store_reaches_the_same_blobs(store: BlobStore) -> None:
    if isinstance(store, MemoryBlobStore):
        pytest.skip("the in-memory fake lives in one process and is never sent to the pixel pool")
    store.put("frames/ds/pickle01", b"before")
    clone: BlobStore = pickle.loads(pickle.dumps(store))
    assert clone.get("frames/ds/pickle01") == b"before"
    clone.put("frames/ds/pickle02", b"from the clone")
    assert store.get("frames/ds/pickle02") == b"from the clone"
    assert store.local_path("frames/ds/pickle01") == clone.local_path("frames/ds/pickle01")


def _put_in_worker(store: BlobStore, key: str, data: bytes) -> bytes:
    store.put(key, data)
    return store.get(key)


def test_store_works_in_a_process_pool(store: BlobStore) -> None:
    """As import_one uses it: shipped to a pool process after the parent has used it.

    The pool uses 'forkserver': obstore's runtime does not survive fork() (see the next test).
    """
    if isinstance(store, MemoryBlobStore):
        pytest.skip("the in-memory fake lives in one process and is never sent to the pixel pool")
    store.put("frames/ds/parent01", b"parent")
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        assert pool.submit(_put_in_worker, store, "frames/ds/child01", b"child").result(60) == b"child"
    assert store.get("frames/ds/child01") == b"child"


def test_s3_store_in_a_child_forked_after_use_fails_loudly(s3_bucket: SeaweedServer) -> None:
    """Forked after the parent's first S3 call, obstore would hang the child; we raise instead."""
    store = _s3_store(s3_bucket)
    store.put("frames/ds/parent02", b"parent")
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        future = pool.submit(_put_in_worker, store, "frames/ds/child02", b"child")
        with pytest.raises(RuntimeError, match="forkserver"):
            future.result(60)


# -- S3 specifics ----------------------------------------------------------------------------------


def test_s3_keys_live_under_the_prefix_and_large_ones_go_multipart(s3_bucket: SeaweedServer) -> None:
    prefix = f"deep/run-{uuid.uuid4().hex}"
    store = _s3_store(s3_bucket, f"s3://{BUCKET}/{prefix}/")
    store.put("frames/ds/small01", b"x")
    store.put("frames/ds/big0003", _pattern(BIG, seed=3))
    client = s3_bucket.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")["Contents"]
    assert sorted(o["Key"] for o in listed) == [f"{prefix}/frames/ds/big0003", f"{prefix}/frames/ds/small01"]
    big = client.head_object(Bucket=BUCKET, Key=f"{prefix}/frames/ds/big0003")
    assert big["ETag"].strip('"').endswith("-2")  # 12 MiB in 8 MiB parts
    small = client.head_object(Bucket=BUCKET, Key=f"{prefix}/frames/ds/small01")
    assert "-" not in small["ETag"]
    assert store.local_path("frames/ds/small01") is None


def test_s3_bucket_root_without_prefix(s3_bucket: SeaweedServer) -> None:
    store = _s3_store(s3_bucket, f"s3://{BUCKET}")
    key = f"root-{uuid.uuid4().hex}/blob"
    store.put(key, b"at the root")
    assert s3_bucket.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"at the root"


def test_s3_refuses_a_conflicting_put_with_a_clear_error(s3_bucket: SeaweedServer) -> None:
    store = _s3_store(s3_bucket)
    store.put("metadata/ds/set/1", b"v1")
    with pytest.raises(BlobConflict) as caught:
        store.put("metadata/ds/set/1", b"v1 again")
    assert "metadata/ds/set/1" in str(caught.value)
    assert s3_bucket.endpoint_url is not None and s3_bucket.endpoint_url in str(caught.value)


def test_s3_check_passes_on_a_good_configuration(s3_bucket: SeaweedServer) -> None:
    _s3_store(s3_bucket).check()


@pytest.mark.parametrize(
    ("kwargs", "url", "problem"),
    [
        ({}, "s3://no-such-bucket-here/x", "bucket 'no-such-bucket-here' does not exist"),
        ({"secret_access_key": "wrong-secret"}, None, "secret access key is wrong"),
        ({"access_key_id": "nobody"}, None, "access key id 'nobody' is not known"),
    ],
    ids=["missing-bucket", "wrong-secret", "unknown-key-id"],
)
def test_s3_check_names_the_problem(
    s3_bucket: SeaweedServer, kwargs: dict[str, str], url: str | None, problem: str
) -> None:
    store = _s3_store(s3_bucket, url, **kwargs)
    with pytest.raises(ConfigurationError) as caught:
        store.check()
    message = str(caught.value)
    assert problem in message
    assert s3_bucket.endpoint_url is not None and s3_bucket.endpoint_url in message
    assert (url or f"s3://{BUCKET}/").split("/")[2] in message


def test_s3_check_reports_an_unreachable_endpoint() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3BlobStore(
        "s3://some-bucket/p",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id="a",
        secret_access_key="b",
    )
    with pytest.raises(ConfigurationError, match=r"cannot be reached.*|some-bucket"):
        store.check()


@pytest.mark.parametrize(
    "url", ["https://bucket/x", "s3://Bad_Bucket/x", "s3://bucket/../x", "s3://bucket//x"]
)
def test_s3_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="Invalid --blobs URL"):
        S3BlobStore(url, endpoint_url="http://127.0.0.1:1")


def test_s3_half_given_credentials_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="together"):
        S3BlobStore("s3://bucket/x", endpoint_url="http://127.0.0.1:1", access_key_id="only-the-id")


@pytest.mark.parametrize("key", ["", "a//b", "a/../b", "./a", "a\\b", "a/"])
def test_s3_invalid_keys_are_refused(key: str) -> None:
    store = S3BlobStore(
        "s3://bucket/x", endpoint_url="http://127.0.0.1:1", access_key_id="a", secret_access_key="b"
    )
    with pytest.raises(ValueError, match="invalid blob key"):
        store.exists(key)


# -- retries (a scripted server on 127.0.0.1: SeaweedFS does not throttle on demand) ---------------


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[str], Callable[[list[int]], None]]]:
    """An HTTP server answering GETs with the scripted statuses, then 200 ``payload``."""
    seen: list[str] = []
    script: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.command)
            status = script.pop(0) if script else 200
            body = b"payload" if status == 200 else b"<Error><Code>SlowDown</Code></Error>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen, script.extend
    finally:
        server.shutdown()
        server.server_close()


def test_s3_retries_throttling_and_server_errors(
    flaky_server: tuple[str, list[str], Callable[[list[int]], None]],
) -> None:
    endpoint, seen, respond = flaky_server
    store = S3BlobStore("s3://bucket/p", endpoint_url=endpoint, access_key_id="a", secret_access_key="b")
    respond([503, 500, 429])
    assert store.get("frames/ds/flaky01") == b"payload"
    assert seen == ["GET"] * 4
