"""Import workers: threads that claim import jobs from the index under a lease and run them."""

from __future__ import annotations

import logging
import os
import socket
import threading

from openhi.core.env import Env
from openhi.core.ids import new_id

log = logging.getLogger("openhi.worker")


def default_worker_id() -> str:
    """``host-pid-random``: unique per process, readable in the import_jobs.lease_owner column."""
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[:6]}"


class ImportWorker:
    """``threads`` loops, each claiming one job at a time (oldest SUBMITTED first, or one whose lease
    expired because its worker died), renewing the lease every third of ``job_lease_seconds`` while it
    runs. ``nudge()`` wakes an idle loop at once (a job was just submitted in this process)."""

    def __init__(
        self, env: Env, worker_id: str | None = None, *, threads: int = 1, poll_seconds: float = 0.2
    ) -> None:
        self.env = env
        self.worker_id = worker_id or default_worker_id()
        self.threads = max(1, threads)
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._running: list[threading.Thread] = []
        self._abandon: dict[str, threading.Event] = {}  # lease owner -> "stop this job now"
        self._lock = threading.Lock()

    def start(self) -> ImportWorker:
        for n in range(self.threads):
            thread = threading.Thread(
                target=self._loop, args=(f"{self.worker_id}/{n}",), name=f"openhi-import-{n}", daemon=True
            )
            thread.start()
            self._running.append(thread)
        return self

    def nudge(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; a running job stops at its next file and gives its lease back at once, so
        another worker resumes it without waiting for the lease to expire."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            for event in self._abandon.values():
                event.set()
        for thread in self._running:
            thread.join(timeout)
        self._running.clear()

    def _loop(self, owner: str) -> None:
        lease = self.env.settings.job_lease_seconds
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                job = self.env.index.claim_job(owner, self.env.clock(), lease)
            except Exception:
                log.exception("worker %s: claiming an import job failed; retrying", owner)
                job = None
            if job is None:
                self._wake.wait(self.poll_seconds)
                continue
            log.info("worker %s runs import job %s", owner, job.id)
            from openhi.core.import_run import ImportRun  # the pixel stack loads with the first job

            lost = threading.Event()
            with self._lock:
                self._abandon[owner] = lost
            done = threading.Event()
            beat = threading.Thread(
                target=self._heartbeat, args=(job.id, owner, lost, done), name="openhi-lease", daemon=True
            )
            beat.start()
            try:
                ImportRun(self.env, job, owner, lost).run()
            except Exception:
                log.exception("worker %s: import job %s crashed", owner, job.id)
            finally:
                done.set()
                beat.join()
                with self._lock:
                    self._abandon.pop(owner, None)
            if self._stopping.is_set() and lost.is_set():
                self._release(job.id, owner)

    def _heartbeat(self, job_id: str, owner: str, lost: threading.Event, done: threading.Event) -> None:
        lease = self.env.settings.job_lease_seconds
        while not done.wait(lease / 3):
            try:
                if not self.env.index.renew_job_lease(job_id, owner, self.env.clock() + lease):
                    log.warning("worker %s lost the lease of import job %s", owner, job_id)
                    lost.set()
                    return
            except Exception:  # the index is unreachable for a moment: keep trying while the lease lasts
                log.exception("worker %s: renewing the lease of import job %s failed", owner, job_id)

    def _release(self, job_id: str, owner: str) -> None:
        """Shutting down mid-job: expire the lease now (only while this worker still owns it)."""
        try:
            self.env.index.renew_job_lease(job_id, owner, 0.0)
        except Exception:
            log.exception("worker %s: releasing import job %s failed", owner, job_id)
