"""Background blob collection: delete queued blobs that no image set references any more."""

from __future__ import annotations

import logging

from openhi.core.env import Env
from openhi.core.periodic import PeriodicWork
from openhi.ports.blobs import BlobNotFound

log = logging.getLogger("openhi.collector")


class BlobCollector(PeriodicWork):
    """Drains the index's collection queue every ``interval`` seconds in a daemon thread.

    A queued blob is deleted only when ``index.blob_referenced`` says nothing points at it (a copy may
    still share a frame of a deleted set); either way it leaves the queue. Never runs in a request.
    """

    thread_name = "openhi-blob-collector"
    failure = "blob collection round failed"

    def __init__(self, env: Env, interval: float = 2.0, batch: int = 500) -> None:
        super().__init__(interval, log)
        self.env = env
        self.batch = batch

    def run_once(self) -> int:
        """Collect one batch; return how many blobs were deleted."""
        index, blobs = self.env.index, self.env.blobs
        deleted = 0
        while not self.stopping:
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
