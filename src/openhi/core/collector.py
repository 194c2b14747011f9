"""Background blob collection: delete queued blobs that no image set references any more."""

from __future__ import annotations

import logging
import threading

from openhi.core.env import Env
from openhi.ports.blobs import BlobNotFound

log = logging.getLogger("openhi.collector")


class BlobCollector:
    """Drains the index's collection queue every ``interval`` seconds in a daemon thread.

    A queued blob is deleted only when ``index.blob_referenced`` says nothing points at it (a copy may
    still share a frame of a deleted set); either way it leaves the queue. Never runs in a request.
    """

    def __init__(self, env: Env, interval: float = 2.0, batch: int = 500) -> None:
        self.env = env
        self.interval = interval
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="openhi-blob-collector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # the index may be closing; try again next round
                log.exception("blob collection round failed")

    def run_once(self) -> int:
        """Collect one batch; return how many blobs were deleted."""
        index, blobs = self.env.index, self.env.blobs
        deleted = 0
        while not self._stop.is_set():
            keys = index.claim_gc(self.batch)
            if not keys:
                break
            for key in keys:
                if not index.blob_referenced(key):
                    try:
                        blobs.delete(key)
                        deleted += 1
                    except BlobNotFound:
                        pass
            index.forget_gc(keys)
            if len(keys) < self.batch:
                break
        return deleted
