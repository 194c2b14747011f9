"""The BlobStore port: immutable frame and metadata blobs addressed by key."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class BlobNotFound(Exception):
    """No blob under that key."""


class BlobConflict(FileExistsError):
    """A put found a different blob already stored under the key (blobs are never rewritten)."""


class BlobStore(Protocol):
    """Blobs are written once and never rewritten; deletion happens only in background collection."""

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Store ``data`` once. Putting identical bytes again is a no-op; different bytes raise BlobConflict.

        ``durable=False`` may defer making the blob crash-safe until the next :meth:`flush` (bulk writers
        put many blobs, then flush once before any index row points at them).
        """
        ...

    def flush(self) -> None:
        """Make every blob put so far (also with ``durable=False``, from any process) crash-safe."""
        ...

    def get(self, key: str) -> bytes: ...
    def get_range(self, key: str, start: int, end: int) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def local_path(self, key: str) -> Path | None:
        """A filesystem path serving the blob's bytes, when the adapter has one (zero-copy sends)."""
        ...
