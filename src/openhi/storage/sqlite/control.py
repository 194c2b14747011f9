"""SQLite index, control-plane half: meta, datastores, tags and import jobs."""

from __future__ import annotations

import time
from collections.abc import Sequence

from openhi.core.records import Datastore, ImportJob
from openhi.ports.index import StoredEvent, WebhookCursor
from openhi.storage import control_sql as c
from openhi.storage import events_sql as ev
from openhi.storage.sqlite.connection import Database

#: client tokens are checked before the insert: the one writer (the write lock) makes that race-free
SQLITE = c.Dialect("qmark", insert_meta_if_absent="INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)")


class ControlTables:
    db: Database

    # -- meta
    def get_meta(self, key: str) -> str | None:
        return c.get_meta(self.db.conn, SQLITE, key)

    def set_meta_if_absent(self, key: str, value: str) -> str:
        with self.db.write() as conn:
            return c.set_meta_if_absent(conn, SQLITE, key, value)

    # -- datastores
    def insert_datastore(self, ds: Datastore) -> Datastore:
        """Insert, or return the existing datastore carrying the same client token."""
        with self.db.write() as conn:
            if ds.client_token is not None:
                existing = c.datastore_by_token(conn, SQLITE, ds.client_token)
                if existing is not None:
                    return existing
            c.insert_datastore(conn, SQLITE, ds)
            ev.datastore_changed(conn, ev.SQLITE, ds.id, ds.name, ds.status, ds.created_at)
            return ds

    def get_datastore(self, datastore_id: str) -> Datastore | None:
        return c.get_datastore(self.db.conn, SQLITE, datastore_id)

    def list_datastores(
        self, status: str | None, after: tuple[float, str] | None, limit: int
    ) -> list[Datastore]:
        return c.list_datastores(self.db.conn, SQLITE, status, after, limit)

    def set_datastore_status(self, datastore_id: str, status: str, now: float) -> None:
        with self.db.write() as conn:
            name = c.set_datastore_status(conn, SQLITE, datastore_id, status, now)
            if name is not None:
                ev.datastore_changed(conn, ev.SQLITE, datastore_id, name[0], status, now)

    def count_datastores(self, statuses: Sequence[str]) -> int:
        return c.count_datastores(self.db.conn, SQLITE, statuses)

    # -- tags
    def get_tags(self, resource_arn: str) -> dict[str, str]:
        return c.get_tags(self.db.conn, SQLITE, resource_arn)

    def put_tags(self, resource_arn: str, tags: dict[str, str]) -> None:
        with self.db.write() as conn:
            c.put_tags(conn, SQLITE, resource_arn, tags)

    def remove_tags(self, resource_arn: str, keys: Sequence[str]) -> None:
        with self.db.write() as conn:
            conn.executemany(
                "DELETE FROM tags WHERE resource_arn = ? AND key = ?", [(resource_arn, k) for k in keys]
            )

    # -- import jobs
    def insert_job(self, job: ImportJob) -> ImportJob:
        """Insert, or return the existing job of this datastore carrying the same client token."""
        with self.db.write() as conn:
            if job.client_token is not None:
                existing = c.job_by_token(conn, SQLITE, job.datastore_id, job.client_token)
                if existing is not None:
                    return existing
            c.insert_job(conn, SQLITE, job)
            ev.job_changed(conn, ev.SQLITE, job, job.status, job.submitted_at)
            return job

    def get_job(self, datastore_id: str, job_id: str) -> ImportJob | None:
        return c.get_job(self.db.conn, SQLITE, datastore_id, job_id)

    def list_jobs(
        self, datastore_id: str, status: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[ImportJob]:
        return c.list_jobs(self.db.conn, SQLITE, datastore_id, status, before, limit)

    def update_job(self, job: ImportJob) -> None:
        with self.db.write() as conn:
            if c.update_job(conn, SQLITE, job):
                ev.job_changed(conn, ev.SQLITE, job, job.status, job.ended_at or time.time())

    def count_jobs(self, datastore_id: str, statuses: Sequence[str]) -> int:
        return c.count_jobs(self.db.conn, SQLITE, datastore_id, statuses)

    def jobs_in_status(self, statuses: Sequence[str]) -> list[ImportJob]:
        return c.jobs_in_status(self.db.conn, SQLITE, statuses)

    # -- events and webhook cursors
    def list_events(self, after: int, limit: int) -> list[StoredEvent]:
        return ev.list_events(self.db.conn, ev.SQLITE, after, limit)

    def last_event_seq(self) -> int:
        return ev.last_seq(self.db.conn, ev.SQLITE)

    def prune_events(self, before: float, through_seq: int, limit: int) -> int:
        with self.db.write() as conn:
            return ev.prune(conn, ev.SQLITE, before, through_seq, limit)

    def claim_webhook(
        self, name: str, owner: str, now: float, until: float, from_end: bool = False
    ) -> WebhookCursor | None:
        with self.db.write() as conn:
            ev.register(conn, ev.SQLITE, name, " ON CONFLICT (name) DO NOTHING", from_end)
            if not ev.take_lease(conn, ev.SQLITE, name, owner, now, until):
                return None
            return ev.get_cursor(conn, ev.SQLITE, name)

    def advance_webhook(self, name: str, owner: str, seq: int) -> bool:
        with self.db.write() as conn:
            return ev.advance(conn, ev.SQLITE, name, owner, seq)

    def fail_webhook(self, name: str, owner: str, attempts: int, next_attempt_at: float, error: str) -> bool:
        with self.db.write() as conn:
            return ev.fail(conn, ev.SQLITE, name, owner, attempts, next_attempt_at, error)

    def release_webhook(self, name: str, owner: str) -> None:
        with self.db.write() as conn:
            ev.release(conn, ev.SQLITE, name, owner)

    def webhook_cursors(self) -> list[WebhookCursor]:
        return ev.all_cursors(self.db.conn)
