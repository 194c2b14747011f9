"""PostgreSQL index, import-job queue: claim (FOR UPDATE SKIP LOCKED) with a lease, renew, finish, commit."""

from __future__ import annotations

import time

import psycopg

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion, ImportJob
from openhi.ports.index import VersionCommit
from openhi.storage import events_sql
from openhi.storage import imagesets_sql as q
from openhi.storage.postgres.imagesets import POSTGRES, Cur, ImageSetTables
from openhi.storage.sqlite.rows import job_from

# races between workers end as "conflict" (the worker re-reads the primaries and retries)
_RACES = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)


class _Abort(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class JobQueueTables(ImageSetTables):
    """Leases on import jobs shared by every worker process of the deployment."""

    def claim_job(self, worker_id: str, now: float, lease_seconds: float) -> ImportJob | None:
        with self.db.tx() as cur:
            row = cur.execute(
                "UPDATE import_jobs j SET status = 'IN_PROGRESS', lease_owner = %s, lease_expires = %s"
                " FROM (SELECT id, status AS was FROM import_jobs WHERE status IN ('SUBMITTED', 'IN_PROGRESS')"
                "   AND (status = 'SUBMITTED' OR lease_expires IS NULL OR lease_expires < %s)"
                "   ORDER BY submitted_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) c"
                " WHERE j.id = c.id RETURNING j.*, c.was",
                (worker_id, now + lease_seconds, now),
            ).fetchone()
            if row is None:
                return None
            job = job_from(row)
            if row["was"] != "IN_PROGRESS":  # a job taken over from a dead worker changes no status
                events_sql.job_changed(cur, events_sql.POSTGRES, job, "IN_PROGRESS", now)
        return job

    def renew_job_lease(self, job_id: str, worker_id: str, until: float) -> bool:
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE import_jobs SET lease_expires = %s"
                " WHERE id = %s AND lease_owner = %s AND status = 'IN_PROGRESS'",
                (until, job_id, worker_id),
            )
            return cur.rowcount == 1

    def finish_job(self, job: ImportJob, worker_id: str) -> bool:
        with self.db.tx() as cur:
            return _finish(cur, job, worker_id)

    def commit_import(
        self,
        datastore_id: str,
        job: ImportJob,
        worker_id: str,
        creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
        appends: list[tuple[VersionCommit, int]],
    ) -> str:
        try:
            with self.db.tx() as cur:
                # the job row stays locked until commit: a worker taking the job over waits for us
                owner = cur.execute(
                    "SELECT 1 FROM import_jobs WHERE id = %s AND lease_owner = %s AND status = 'IN_PROGRESS'"
                    " FOR UPDATE",
                    (job.id, worker_id),
                ).fetchone()
                if owner is None:
                    raise _Abort("lease_lost")
                _write_sets(cur, datastore_id, creations, appends)
                _finish(cur, job, worker_id)
        except _Abort as abort:
            return abort.outcome
        except _RACES:
            return "conflict"
        return "ok"

    def commit_store(
        self,
        datastore_id: str,
        creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
        appends: list[tuple[VersionCommit, int]],
    ) -> str:
        """commit_import without a job: every creation and append in one transaction, or nothing."""
        try:
            with self.db.tx() as cur:
                _write_sets(cur, datastore_id, creations, appends)
        except _Abort as abort:
            return abort.outcome
        except _RACES:
            return "conflict"
        return "ok"


def _write_sets(
    cur: Cur,
    datastore_id: str,
    creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
    appends: list[tuple[VersionCommit, int]],
) -> None:
    """Create every new image set and append every version (import and store commits); raises _Abort
    ("conflict") when an appended set moved on (a second live primary raises one of _RACES)."""
    for head, version, frames in creations:
        q.create(cur, POSTGRES, head, version, frames)
    for commit, expected in sorted(appends, key=lambda a: a[0].image_set_id):
        if not q.append_version(cur, POSTGRES, datastore_id, commit, expected):
            raise _Abort("conflict")


def _finish(cur: Cur, job: ImportJob, worker_id: str) -> bool:
    cur.execute(
        "UPDATE import_jobs SET status = %s, message = %s, ended_at = %s, lease_owner = NULL,"
        " lease_expires = NULL WHERE id = %s AND lease_owner = %s AND status = 'IN_PROGRESS'",
        (job.status, job.message, job.ended_at, job.id, worker_id),
    )
    if cur.rowcount != 1:
        return False
    ended = job.ended_at if job.ended_at is not None else time.time()
    events_sql.job_changed(cur, events_sql.POSTGRES, job, job.status, ended)
    return True
