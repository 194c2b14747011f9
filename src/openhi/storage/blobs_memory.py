"""In-memory BlobStore: the fake used by unit tests (``memory://``)."""

from __future__ import annotations

import threading
from pathlib import Path

from openhi.ports.blobs import BlobConflict, BlobNotFound


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, *, durable: bool = True) -> None:
        with self._lock:
            current = self._blobs.get(key)
            if current is not None and current != data:
                raise BlobConflict(f"blob {key!r} already exists with different content")
            self._blobs[key] = bytes(data)

    def flush(self) -> None:
        """Nothing to do: in memory: nothing to make durable."""

    def get(self, key: str) -> bytes:
        try:
            return self._blobs[key]
        except KeyError:
            raise BlobNotFound(key) from None

    def get_range(self, key: str, start: int, end: int) -> bytes:
        return self.get(key)[start:end]

    def delete(self, key: str) -> None:
        with self._lock:
            self._blobs.pop(key, None)

    def exists(self, key: str) -> bool:
        return key in self._blobs

    def local_path(self, key: str) -> Path | None:
        return None
