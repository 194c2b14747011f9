"""In-process TaskRunner: a thread pool that logs failures and can be drained."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("openhi.tasks")


class ThreadTaskRunner:
    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openhi-task")
        self._pending = 0
        self._cond = threading.Condition()

    def submit(self, name: str, fn: Callable[[], None]) -> None:
        with self._cond:
            self._pending += 1

        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("background task %s failed", name)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

        self._pool.submit(run)

    def drain(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
