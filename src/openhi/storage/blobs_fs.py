"""Filesystem BlobStore: sharded directories, atomic write-once puts (anonymous temp file, link), range reads."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
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

_O_TMPFILE: int = getattr(os, "O_TMPFILE", 0)
#: errnos of ``open(dir, O_TMPFILE)`` on a filesystem (or kernel) without anonymous temp files.
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
_proc_fd: tuple[int, int] | None = None  # (pid, fd of /proc/self/fd) for linkat; per process


def _proc_fd_dir() -> int:
    """An fd of this process's ``/proc/self/fd`` (re-opened after a fork; raises OSError without /proc)."""
    global _proc_fd
    pid = os.getpid()
    if _proc_fd is None or _proc_fd[0] != pid:
        _proc_fd = (pid, os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    return _proc_fd[1]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FsBlobStore:
    """Keys like ``frames/<ds>/<id>`` map to ``<root>/frames/<ds>/<id[:2]>/<id>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return Path(self._fspath(key))

    def _fspath(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key:
            raise ValueError(f"invalid blob key {key!r}")
        name = parts[-1]
        return os.path.join(self.root, *parts[:-1], name[:2], name)

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Write once: the bytes go to an unnamed file (+ fsync), which is then linked under its name;
        the link fails if the key exists (no overwrite), and a reader never sees a partial blob.

        Linux's ``O_TMPFILE`` + ``linkat`` needs no temporary name to create and remove; elsewhere a named
        temporary file (``mkstemp``) and a hard link do the same.
        """
        path = self._fspath(key)
        parent = os.path.dirname(path)
        fd = self._open_anonymous(parent)
        if fd is None:
            self._put_named(key, path, parent, data, durable)
            return
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
            try:
                os.link(str(fd), path, src_dir_fd=_proc_fd_dir(), follow_symlinks=True)
            except FileExistsError:
                self._check_same(key, path, data)
        finally:
            os.close(fd)

    def _open_anonymous(self, parent: str) -> int | None:
        """An ``O_TMPFILE`` fd in ``parent`` (created if missing), or None where that is unsupported."""
        if not _O_TMPFILE:
            return None
        for attempt in range(2):
            try:
                fd = os.open(parent, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                if attempt:
                    return None
                os.makedirs(parent, exist_ok=True)
                continue
            except OSError as exc:
                if exc.errno in _NO_TMPFILE:
                    return None
                raise
            try:
                _proc_fd_dir()
            except OSError:  # no /proc: the anonymous file could not be linked
                os.close(fd)
                return None
            return fd
        return None  # pragma: no cover - the loop returns

    def _put_named(self, key: str, path: str, parent: str, data: bytes, durable: bool) -> None:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                self._check_same(key, path, data)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _check_same(self, key: str, path: str, data: bytes) -> None:
        with open(path, "rb") as fh:
            if fh.read() != data:
                raise BlobConflict(f"blob {key!r} already exists with different content") from None

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
