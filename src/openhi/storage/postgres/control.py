"""PostgreSQL index, control-plane half: meta, datastores, tags and import jobs."""

from __future__ import annotations

import time
from collections.abc import Sequence

from openhi.core.records import Datastore, ImportJob
from openhi.ports.index import StoredEvent, WebhookCursor
from openhi.storage import control_sql as c
from openhi.storage import events_sql as ev
from openhi.storage.postgres.connection import Database

#: concurrent writers: a repeated client token is caught by its unique index (skip, then read the winner)
POSTGRES = c.Dialect(
    "format",
    insert_meta_if_absent="INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
    datastore_conflict=" ON CONFLICT (client_token) WHERE client_token IS NOT NULL DO NOTHING",
    job_conflict=" ON CONFLICT (datastore_id, client_token) WHERE client_token IS NOT NULL DO NOTHING",
)


class ControlTables:
    db: Database

    # -- meta
    def get_meta(self, key: str) -> str | None:
        with self.db.tx() as cur:
            return c.get_meta(cur, POSTGRES, key)

    def set_meta_if_absent(self, key: str, value: str) -> str:
        with self.db.tx() as cur:
            return c.set_meta_if_absent(cur, POSTGRES, key, value)

    # -- datastores
    def insert_datastore(self, ds: Datastore) -> Datastore:
        """Insert, or return the existing datastore carrying the same client token."""
        with self.db.tx() as cur:
            if c.insert_datastore(cur, POSTGRES, ds):
                ev.datastore_changed(cur, ev.POSTGRES, ds.id, ds.name, ds.status, ds.created_at)
                return ds
            if ds.client_token is None:
                return ds
            existing = c.datastore_by_token(cur, POSTGRES, ds.client_token)
        return ds if existing is None else existing

    def get_datastore(self, datastore_id: str) -> Datastore | None:
        with self.db.tx() as cur:
            return c.get_datastore(cur, POSTGRES, datastore_id)

    def list_datastores(
        self, status: str | None, after: tuple[float, str] | None, limit: int
    ) -> list[Datastore]:
        with self.db.tx() as cur:
            return c.list_datastores(cur, POSTGRES, status, after, limit)

    def set_datastore_status(self, datastore_id: str, status: str, now: float) -> None:
        with self.db.tx() as cur:
            name = c.set_datastore_status(cur, POSTGRES, datastore_id, status, now)
            if name is not None:
                ev.datastore_changed(cur, ev.POSTGRES, datastore_id, name[0], status, now)

    def count_datastores(self, statuses: Sequence[str]) -> int:
        with self.db.tx() as cur:
            return c.count_datastores(cur, POSTGRES, statuses)

    # -- tags
    def get_tags(self, resource_arn: str) -> dict[str, str]:
        with self.db.tx() as cur:
            return c.get_tags(cur, POSTGRES, resource_arn)

    def put_tags(self, resource_arn: str, tags: dict[str, str]) -> None:
        if not tags:
            return
        with self.db.tx() as cur:
            c.put_tags(cur, POSTGRES, resource_arn, tags)

    def remove_tags(self, resource_arn: str, keys: Sequence[str]) -> None:
        with self.db.tx() as cur:
            cur.execute(
                "DELETE FROM tags WHERE resource_arn = %s AND key = ANY(%s)", (resource_arn, list(keys))
            )

    # -- import jobs
    def insert_job(self, job: ImportJob) -> ImportJob:
        """Insert, or return the existing job of this datastore carrying the same client token."""
        with self.db.tx() as cur:
            if c.insert_job(cur, POSTGRES, job):
                ev.job_changed(cur, ev.POSTGRES, job, job.status, job.submitted_at)
                return job
            if job.client_token is None:
                return job
            existing = c.job_by_token(cur, POSTGRES, job.datastore_id, job.client_token)
        return job if existing is None else existing

    def get_job(self, datastore_id: str, job_id: str) -> ImportJob | None:
        with self.db.tx() as cur:
            return c.get_job(cur, POSTGRES, datastore_id, job_id)

    def list_jobs(
        self, datastore_id: str, status: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[ImportJob]:
        with self.db.tx() as cur:
            return c.list_jobs(cur, POSTGRES, datastore_id, status, before, limit)

    def update_job(self, job: ImportJob) -> None:
        with self.db.tx() as cur:
            if c.update_job(cur, POSTGRES, job):
                ev.job_changed(cur, ev.POSTGRES, job, job.status, job.ended_at or time.time())

    def count_jobs(self, datastore_id: str, statuses: Sequence[str]) -> int:
        with self.db.tx() as cur:
            return c.count_jobs(cur, POSTGRES, datastore_id, statuses)

    def jobs_in_status(self, statuses: Sequence[str]) -> list[ImportJob]:
        with self.db.tx() as cur:
            return c.jobs_in_status(cur, POSTGRES, statuses)

    # -- events and webhook cursors
    def _sequence(self) -> None:
        """Number the committed events that have no ``seq`` yet (one sequencer at a time)."""
        with self.db.tx() as cur:
            ev.sequence(cur, ev.POSTGRES)

    def list_events(self, after: int, limit: int) -> list[StoredEvent]:
        self._sequence()
        with self.db.tx() as cur:
            return ev.list_events(cur, ev.POSTGRES, after, limit)

    def last_event_seq(self) -> int:
        self._sequence()
        with self.db.tx() as cur:
            return ev.last_seq(cur, ev.POSTGRES)

    def prune_events(self, before: float, through_seq: int, limit: int) -> int:
        self._sequence()  # what is numbered can go; a row committed later is numbered after the last one kept
        with self.db.tx() as cur:
            return ev.prune(cur, ev.POSTGRES, before, through_seq, limit)

    def claim_webhook(
        self, name: str, owner: str, now: float, until: float, from_end: bool = False
    ) -> WebhookCursor | None:
        self._sequence()  # a new cursor starts after every event committed before it
        with self.db.tx() as cur:
            ev.register(cur, ev.POSTGRES, name, " ON CONFLICT (name) DO NOTHING", from_end)
            if not ev.take_lease(cur, ev.POSTGRES, name, owner, now, until):
                return None
            return ev.get_cursor(cur, ev.POSTGRES, name)

    def advance_webhook(self, name: str, owner: str, seq: int) -> bool:
        with self.db.tx() as cur:
            return ev.advance(cur, ev.POSTGRES, name, owner, seq)

    def fail_webhook(self, name: str, owner: str, attempts: int, next_attempt_at: float, error: str) -> bool:
        with self.db.tx() as cur:
            return ev.fail(cur, ev.POSTGRES, name, owner, attempts, next_attempt_at, error)

    def release_webhook(self, name: str, owner: str) -> None:
        with self.db.tx() as cur:
            ev.release(cur, ev.POSTGRES, name, owner)

    def webhook_cursors(self) -> list[WebhookCursor]:
        with self.db.tx() as cur:
            return ev.all_cursors(cur)
