"""Filesystem BlobStore: sharded directories, atomic writes (temp file, fsync, rename), range reads."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from openhi.ports.blobs import BlobConflict, BlobNotFound


def _load_syncfs() -> Callable[[int], int] | None:
    """libc ``syncfs(fd)`` (Linux): flushes one filesystem, not the whole machine like ``sync``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return fn


_syncfs = _load_syncfs()


class FsBlobStore:
    """Keys like ``frames/<ds>/<id>`` map to ``<root>/frames/<ds>/<id[:2]>/<id>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key:
            raise ValueError(f"invalid blob key {key!r}")
        name = parts[-1]
        return self.root.joinpath(*parts[:-1], name[:2], name)

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Write once: temp file (+ fsync), then a hard link that fails if the key exists (no overwrite)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                if path.read_bytes() != data:
                    raise BlobConflict(f"blob {key!r} already exists with different content") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def flush(self) -> None:
        """``syncfs`` of the filesystem holding the blobs (one call for a whole import's frames)."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _syncfs is not None and _syncfs(fd) == 0:
                return
            os.sync()
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with self._path(key).open("rb") as fh:
                fh.seek(start)
                return fh.read(max(0, end - start))
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
