"""SQLite index, import-job queue: claim with a lease, renew, finish, and the atomic import commit."""

from __future__ import annotations

import sqlite3

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion, ImportJob
from openhi.ports.index import VersionCommit
from openhi.storage.sqlite.imagesets import (
    _VERSION_COLUMNS,
    ImageSetTables,
    _insert_frames,
    _insert_head,
    _version_args,
)
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
                for head, version, frames in creations:
                    try:
                        _insert_head(conn, head)
                    except sqlite3.IntegrityError:  # another live primary set of this series
                        raise _Abort("conflict") from None
                    conn.execute(
                        f"INSERT INTO image_set_versions ({_VERSION_COLUMNS}) VALUES ({','.join('?' * 12)})",
                        _version_args(version),
                    )
                    _insert_frames(conn, head.id, frames)
                for commit, expected in sorted(appends, key=lambda a: a[0].image_set_id):
                    assert commit.version is not None
                    cur = conn.execute(
                        "UPDATE image_sets SET latest_version = ? WHERE id = ? AND datastore_id = ?"
                        " AND latest_version = ? AND state = 'ACTIVE'",
                        (commit.version.version, commit.image_set_id, datastore_id, expected),
                    )
                    if cur.rowcount != 1:
                        raise _Abort("conflict")
                    conn.execute(
                        f"INSERT INTO image_set_versions ({_VERSION_COLUMNS}) VALUES ({','.join('?' * 12)})",
                        _version_args(commit.version),
                    )
                    self._apply_commit(conn, datastore_id, commit, insert_version=False)
                _finish(conn, job, worker_id)
        except _Abort as abort:
            return abort.outcome
        return "ok"


def _finish(conn: sqlite3.Connection, job: ImportJob, worker_id: str) -> bool:
    cur = conn.execute(
        "UPDATE import_jobs SET status = ?, message = ?, ended_at = ?, lease_owner = NULL, lease_expires = NULL"
        " WHERE id = ? AND lease_owner = ? AND status = 'IN_PROGRESS'",
        (job.status, job.message, job.ended_at, job.id, worker_id),
    )
    return cur.rowcount == 1
