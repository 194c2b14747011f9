"""Storage-tier touches: coalesce lastAccessedAt updates in memory, flush them periodically, archive idle sets."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import defaultdict

from openhi.core.env import Env

log = logging.getLogger("openhi.touches")

FLUSH_ENV = "OPENHI_TOUCH_FLUSH_SECONDS"
DEFAULT_FLUSH_SECONDS = 5.0
MAX_SWEEP_SECONDS = 60.0


def _flush_seconds_from_env() -> float:
    raw = os.environ.get(FLUSH_ENV)
    if raw is None:
        return DEFAULT_FLUSH_SECONDS
    try:
        value = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", FLUSH_ENV, raw)
        return DEFAULT_FLUSH_SECONDS
    return max(0.01, value)


class TouchBuffer:
    """Reads call :meth:`touch`; a background thread writes the latest time per image set in batches.

    At most one index write per image set per flush interval, however many frames are read. The same
    thread moves image sets idle for ``settings.archive_after_seconds`` to ARCHIVE_INSTANT_ACCESS.
    """

    def __init__(self, env: Env, flush_seconds: float | None = None, *, start: bool = True) -> None:
        self.env = env
        self.flush_seconds = _flush_seconds_from_env() if flush_seconds is None else flush_seconds
        archive_after = env.settings.archive_after_seconds
        self.sweep_seconds = max(self.flush_seconds, min(MAX_SWEEP_SECONDS, archive_after / 4))
        self._pending: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="openhi-touches", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def touch(self, datastore_id: str, image_set_id: str) -> float:
        """Record an access now; returns the time recorded."""
        now = self.env.clock()
        with self._lock:
            self._pending[(datastore_id, image_set_id)] = now
        return now

    def pending(self, datastore_id: str, image_set_id: str) -> float | None:
        """A touch not yet written to the index (reads show it at once)."""
        with self._lock:
            return self._pending.get((datastore_id, image_set_id))

    def flush(self) -> int:
        """Write the buffered touches; returns how many image sets were updated."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            grouped: dict[tuple[str, float], list[str]] = defaultdict(list)
            for (ds, set_id), when in batch.items():
                grouped[(ds, when)].append(set_id)
            try:
                for (ds, when), ids in grouped.items():
                    self.env.index.touch_image_sets(ds, ids, when)
            except Exception:
                with self._lock:  # keep them for the next flush; newer touches win
                    for key, when in batch.items():
                        self._pending[key] = max(when, self._pending.get(key, when))
                raise
            return len(batch)

    def sweep_tiers(self) -> int:
        """Move image sets not touched for the archive period to ARCHIVE_INSTANT_ACCESS."""
        self.flush()
        return self.env.index.archive_idle(self.env.clock() - self.env.settings.archive_after_seconds)

    def _run(self) -> None:
        next_sweep = 0.0
        while not self._stop.wait(self.flush_seconds):
            try:
                if self.env.clock() >= next_sweep:
                    self.sweep_tiers()
                    next_sweep = self.env.clock() + self.sweep_seconds
                else:
                    self.flush()
            except Exception:
                log.exception("flushing image set touches failed; retrying at the next interval")

    def close(self) -> None:
        """Stop the thread and write what is buffered."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            atexit.unregister(self.close)
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        try:
            self.flush()
        except Exception:
            log.exception("final flush of image set touches failed")
