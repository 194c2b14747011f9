"""SQLite index, import-job queue: claim with a lease, renew, finish, and the atomic import commit."""

from __future__ import annotations

import sqlite3
import time

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion, ImportJob
from openhi.ports.index import VersionCommit
from openhi.storage import events_sql
from openhi.storage import imagesets_sql as q
from openhi.storage.sqlite.imagesets import SQLITE, ImageSetTables
from openhi.storage.sqlite.rows import job_from

_CLAIMABLE = (
    "status = 'SUBMITTED' OR (status = 'IN_PROGRESS' AND (lease_expires IS NULL OR lease_expires < ?))"
)


class _Abort(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class JobQueueTables(ImageSetTables):
    """Leases on import jobs. SQLite has one writer at a time, so each call is trivially atomic."""

    def claim_job(self, worker_id: str, now: float, lease_seconds: float) -> ImportJob | None:
        with self.db.write() as conn:
            row = conn.execute(
                f"SELECT * FROM import_jobs WHERE {_CLAIMABLE} ORDER BY submitted_at, id LIMIT 1", (now,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE import_jobs SET status = 'IN_PROGRESS', lease_owner = ?, lease_expires = ? WHERE id = ?",
                (worker_id, now + lease_seconds, row["id"]),
            )
            job = job_from(row)
            if row["status"] != "IN_PROGRESS":  # a job taken over from a dead worker changes no status
                events_sql.job_changed(conn, events_sql.SQLITE, job, "IN_PROGRESS", now)
        job.status = "IN_PROGRESS"
        return job

    def renew_job_lease(self, job_id: str, worker_id: str, until: float) -> bool:
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE import_jobs SET lease_expires = ?"
                " WHERE id = ? AND lease_owner = ? AND status = 'IN_PROGRESS'",
                (until, job_id, worker_id),
            )
            return cur.rowcount == 1

    def finish_job(self, job: ImportJob, worker_id: str) -> bool:
        with self.db.write() as conn:
            return _finish(conn, job, worker_id)

    def commit_import(
        self,
        datastore_id: str,
        job: ImportJob,
        worker_id: str,
        creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
        appends: list[tuple[VersionCommit, int]],
    ) -> str:
        try:
            with self.db.write() as conn:
                owner = conn.execute(
                    "SELECT 1 FROM import_jobs WHERE id = ? AND lease_owner = ? AND status = 'IN_PROGRESS'",
                    (job.id, worker_id),
                ).fetchone()
                if owner is None:
                    raise _Abort("lease_lost")
                _write_sets(conn, datastore_id, creations, appends)
                _finish(conn, job, worker_id)
        except _Abort as abort:
            return abort.outcome
        return "ok"

    def commit_store(
        self,
        datastore_id: str,
        creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
        appends: list[tuple[VersionCommit, int]],
    ) -> str:
        """commit_import without a job: every creation and append in one transaction, or nothing."""
        try:
            with self.db.write() as conn:
                _write_sets(conn, datastore_id, creations, appends)
        except _Abort as abort:
            return abort.outcome
        return "ok"


def _write_sets(
    conn: sqlite3.Connection,
    datastore_id: str,
    creations: list[tuple[ImageSet, ImageSetVersion, list[FrameRef]]],
    appends: list[tuple[VersionCommit, int]],
) -> None:
    """Create every new image set and append every version (import and store commits); raises _Abort
    ("conflict") when another live primary set of a series exists or an appended set moved on."""
    for head, version, frames in creations:
        try:
            q.insert_head(conn, SQLITE, head)
        except sqlite3.IntegrityError:  # another live primary set of this series
            raise _Abort("conflict") from None
        q.insert_version(conn, SQLITE, version)
        q.insert_frames(conn, SQLITE, head.id, frames)
    for commit, expected in sorted(appends, key=lambda a: a[0].image_set_id):
        if not q.append_version(conn, SQLITE, datastore_id, commit, expected):
            raise _Abort("conflict")


def _finish(conn: sqlite3.Connection, job: ImportJob, worker_id: str) -> bool:
    cur = conn.execute(
        "UPDATE import_jobs SET status = ?, message = ?, ended_at = ?, lease_owner = NULL, lease_expires = NULL"
        " WHERE id = ? AND lease_owner = ? AND status = 'IN_PROGRESS'",
        (job.status, job.message, job.ended_at, job.id, worker_id),
    )
    if cur.rowcount != 1:
        return False
    events_sql.job_changed(conn, events_sql.SQLITE, job, job.status, _ended(job))
    return True


def _ended(job: ImportJob) -> float:
    return job.ended_at if job.ended_at is not None else time.time()
