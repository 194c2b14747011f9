"""A daemon thread that runs one round of background work every ``interval`` seconds until stopped."""

from __future__ import annotations

import logging
import threading
from typing import Self


class PeriodicWork:
    """Calls :meth:`run_once` every ``interval`` seconds in a daemon thread (the first call one interval
    after :meth:`start`); a round that raises is logged and the next one runs as planned. Subclasses set
    ``thread_name``, ``failure`` (the log message of a failed round) and ``join_seconds``, and check
    :attr:`stopping` between the steps of a long round."""

    thread_name = "openhi-periodic"
    failure = "periodic round failed"
    join_seconds = 5.0

    def __init__(self, interval: float, log: logging.Logger) -> None:
        self.interval = interval
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.join_seconds if timeout is None else timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # the index may be closing or unreachable for a while: the next round retries
                self._log.exception(self.failure)

    def run_once(self) -> int:
        """One round; how many things it handled."""
        raise NotImplementedError
