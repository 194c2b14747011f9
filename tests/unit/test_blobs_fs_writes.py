"""FsBlobStore.put: anonymous temp file + link, and the named-temp-file fallback, keep one behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openhi.ports.blobs import BlobConflict
from openhi.storage import blobs_fs
from openhi.storage.blobs_fs import FsBlobStore


def _no_proc() -> int:
    raise OSError("no /proc")


@pytest.fixture(params=["tmpfile", "no-o-tmpfile", "no-proc"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FsBlobStore:
    if request.param == "no-o-tmpfile":
        monkeypatch.setattr(blobs_fs, "_O_TMPFILE", 0)
    elif request.param == "no-proc":
        monkeypatch.setattr(blobs_fs, "_proc_fd_dir", _no_proc)
    return FsBlobStore(tmp_path / "blobs")


@pytest.mark.parametrize("durable", [True, False])
def test_put_get_and_write_once(store: FsBlobStore, durable: bool) -> None:
    data = os.urandom(300_000)
    store.put("frames/ds/abcdef01", data, durable=durable)
    assert store.get("frames/ds/abcdef01") == data
    path = store.local_path("frames/ds/abcdef01")
    assert path is not None and path.parent.name == "ab" and path.stat().st_mode & 0o777 == 0o600
    store.put("frames/ds/abcdef01", data, durable=durable)  # same bytes again: a no-op
    with pytest.raises(BlobConflict):
        store.put("frames/ds/abcdef01", data[:-1] + b"!", durable=durable)
    assert store.get("frames/ds/abcdef01") == data
    # nothing but the blob itself is left in its directory (no temporary files)
    assert sorted(p.name for p in path.parent.iterdir()) == ["abcdef01"]


def test_empty_and_new_shards(store: FsBlobStore) -> None:
    store.put("metadata/ds/set/1.json.gz", b"")
    assert store.get("metadata/ds/set/1.json.gz") == b""
    for i in range(20):
        store.put(f"frames/ds2/{i:02x}{'0' * 30}", bytes([i]) * 10, durable=False)
    store.flush()
    assert all(store.get(f"frames/ds2/{i:02x}{'0' * 30}") == bytes([i]) * 10 for i in range(20))


def test_invalid_keys_are_rejected(store: FsBlobStore) -> None:
    for key in ("", "a//b", "../x", "a/./b", "a\\b"):
        with pytest.raises(ValueError):
            store.put(key, b"x")
