"""Filesystem ObjectStore: ``s3://BUCKET/KEY`` is the file ``<root>/BUCKET/KEY`` (root is ``<data-dir>/buckets``)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from openhi.core.errors import ValidationError
from openhi.ports.objects import (
    BucketNotFound,
    ObjectInfo,
    ObjectNotFound,
    validate_bucket,
    validate_key,
    validate_prefix,
)

log = logging.getLogger(__name__)

TEMP_PREFIX = ".openhi-tmp-"
"""Name prefix of the temporary files :meth:`FsObjectStore.put` writes before renaming; never listed."""


class FsObjectStore:
    """Buckets as directories under ``root``; keys map to relative paths with '/' separators.

    Every key is validated and its resolved path must stay inside ``<root>/BUCKET`` (symlinks
    included), otherwise :class:`~openhi.core.errors.ValidationError` is raised and nothing is
    read or written. Writes are atomic (temporary file, fsync, rename).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        return self.root / validate_bucket(bucket)

    def _inside(self, bucket: str, bucket_dir: Path, key: str, path: Path) -> Path:
        """``path`` resolved; ValidationError when it lands outside the (resolved) bucket directory."""
        resolved = path.resolve()
        if not resolved.is_relative_to(bucket_dir.resolve()):
            raise ValidationError(
                f"Invalid object key {key!r} in bucket {bucket!r}: it resolves outside the bucket"
            )
        return resolved

    def _object_path(self, bucket: str, key: str) -> tuple[Path, Path]:
        """(bucket directory, resolved object path) for a validated key."""
        validate_key(key)
        if any(part.startswith(TEMP_PREFIX) for part in key.split("/")):
            raise ValidationError(f"Invalid object key {key!r}: segments may not start with {TEMP_PREFIX!r}")
        bucket_dir = self._bucket_dir(bucket)
        return bucket_dir, self._inside(bucket, bucket_dir, key, bucket_dir / key)

    # -- ObjectStore -----------------------------------------------------------------------------

    def exists_bucket(self, bucket: str) -> bool:
        return self._bucket_dir(bucket).is_dir()

    def expecting_owner(self, account_id: str) -> FsObjectStore:
        """Embedded buckets have no account owner: the check does not apply."""
        return self

    def get(self, bucket: str, key: str) -> bytes:
        data = self._get_opened(bucket, key)
        if data is not None:
            return data
        bucket_dir, path = self._object_path(bucket, key)
        if not bucket_dir.is_dir():
            raise BucketNotFound(f"bucket {bucket!r} does not exist")
        if not path.is_file():  # missing, a directory, or a FIFO/device that a read would block on
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist")
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist") from None

    def _get_opened(self, bucket: str, key: str) -> bytes | None:
        """The common case cheaply: open the file, then check where the opened file really is.

        The kernel's name of the open file (``/proc/self/fd``) is its resolved path, so one ``open`` and
        one ``readlink`` replace resolving every path component, and the check covers exactly the file
        that is read. None (the caller decides, as before) when the file can't be opened, isn't a
        regular file, or ``/proc`` is unavailable.
        """
        validate_key(key)
        if TEMP_PREFIX in key and any(part.startswith(TEMP_PREFIX) for part in key.split("/")):
            return None
        bucket_dir = os.path.join(self.root, validate_bucket(bucket))
        try:
            # O_NONBLOCK: a FIFO or device behind a hostile key must not block the open (regular files ignore it)
            fd = os.open(
                os.path.join(bucket_dir, key), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
            )
        except OSError:
            return None
        try:
            real = _opened_path(fd)
            if real is None:
                return None
            bucket_real = os.path.realpath(bucket_dir)
            inside = bucket_real if bucket_real.endswith("/") else bucket_real + "/"
            if not real.startswith(inside):
                raise ValidationError(
                    f"Invalid object key {key!r} in bucket {bucket!r}: it resolves outside the bucket"
                )
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return None
            chunks = []
            remaining = info.st_size + 1  # one byte more: a file that grew is read to its end
            while True:
                chunk = os.read(fd, max(remaining, 65536))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self._write(bucket, key, lambda handle: handle.write(data))

    def put_file(self, bucket: str, key: str, file: IO[bytes]) -> None:
        self._write(bucket, key, lambda handle: shutil.copyfileobj(file, handle, 1 << 20))

    def delete(self, bucket: str, key: str) -> None:
        bucket_dir, path = self._object_path(bucket, key)
        if not bucket_dir.is_dir() or path.is_dir():
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            _fsync_dir(path.parent)

    def _write(self, bucket: str, key: str, write: Callable[[IO[bytes]], object]) -> None:
        bucket_dir, path = self._object_path(bucket, key)
        bucket_dir.mkdir(parents=True, exist_ok=True)
        parent = path.parent
        parent.mkdir(parents=True, exist_ok=True)
        # mkdir may have followed a symlinked directory created meanwhile: check again.
        self._inside(bucket, bucket_dir, key, parent / path.name)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".part", dir=parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fchmod(handle.fileno(), 0o644)
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(parent)

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        bucket_dir = self._bucket_dir(bucket)
        if not bucket_dir.is_dir():
            raise BucketNotFound(f"bucket {bucket!r} does not exist")
        bucket_real = bucket_dir.resolve()
        # Walk only the deepest directory the prefix names; filter the rest by string prefix.
        start_rel = prefix.rpartition("/")[0]
        start = bucket_dir / start_rel if start_rel else bucket_dir
        if not start.resolve().is_relative_to(bucket_real) or not start.is_dir():
            return iter(())
        found: list[ObjectInfo] = []
        for dirpath, entries in _walk(str(start)):
            rel_dir = Path(dirpath).relative_to(bucket_dir).as_posix()
            for entry in entries:
                name = entry.name
                if name.startswith(TEMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not key.startswith(prefix):
                    continue
                if entry.is_symlink() and not Path(entry.path).resolve().is_relative_to(bucket_real):
                    log.warning(
                        "skipping s3://%s/%s: a symlink that resolves outside the bucket", bucket, key
                    )
                    continue
                try:
                    info = entry.stat()  # follows a symlink; cached from the directory scan otherwise
                except OSError:  # vanished, or a dangling symlink
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                found.append(ObjectInfo(key=key, size=info.st_size))
        found.sort(key=lambda info: info.key)
        return iter(found)


def _opened_path(fd: int) -> str | None:
    """The resolved path of an open file, as the kernel names it (None without ``/proc``)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _walk(top: str) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """``os.walk(top, followlinks=False)`` without temporary-named directories, yielding each directory's
    non-directory entries as ``DirEntry`` objects (their file type and ``stat`` come from the scan)."""
    stack = [top]
    while stack:
        dirpath = stack.pop()
        try:
            with os.scandir(dirpath) as scan:
                entries = list(scan)
        except OSError:
            continue
        files: list[os.DirEntry[str]] = []
        subdirs: list[str] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                files.append(entry)
            elif not entry.name.startswith(TEMP_PREFIX) and not entry.is_symlink():
                subdirs.append(entry.path)
        yield dirpath, files
        stack.extend(reversed(subdirs))


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory`` (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
