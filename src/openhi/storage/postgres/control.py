"""PostgreSQL index, control-plane half: meta, datastores, tags and import jobs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from openhi.core.records import Datastore, ImportJob
from openhi.storage.postgres.connection import Database
from openhi.storage.sqlite.rows import datastore_from, job_from


class ControlTables:
    db: Database

    # -- meta
    def get_meta(self, key: str) -> str | None:
        with self.db.tx() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta_if_absent(self, key: str, value: str) -> str:
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value)
            )
            row = cur.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        assert row is not None
        return str(row["value"])

    # -- datastores
    def insert_datastore(self, ds: Datastore) -> Datastore:
        """Insert, or return the existing datastore carrying the same client token."""
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO datastores (id, name, status, lossless_storage_format, kms_key_arn,"
                " lambda_authorizer_arn, created_at, updated_at, client_token, request_hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (client_token) WHERE client_token IS NOT NULL DO NOTHING",
                (
                    ds.id,
                    ds.name,
                    ds.status,
                    ds.lossless_storage_format,
                    ds.kms_key_arn,
                    ds.lambda_authorizer_arn,
                    ds.created_at,
                    ds.updated_at,
                    ds.client_token,
                    ds.request_hash,
                ),
            )
            if cur.rowcount == 1 or ds.client_token is None:
                return ds
            row = cur.execute(
                "SELECT * FROM datastores WHERE client_token = %s", (ds.client_token,)
            ).fetchone()
        return ds if row is None else datastore_from(row)

    def get_datastore(self, datastore_id: str) -> Datastore | None:
        with self.db.tx() as cur:
            row = cur.execute("SELECT * FROM datastores WHERE id = %s", (datastore_id,)).fetchone()
        return None if row is None else datastore_from(row)

    def list_datastores(
        self, status: str | None, after: tuple[float, str] | None, limit: int
    ) -> list[Datastore]:
        sql = "SELECT * FROM datastores WHERE true"
        args: list[object] = []
        if status is not None:
            sql += " AND status = %s"
            args.append(status)
        if after is not None:
            sql += " AND (created_at, id) > (%s, %s)"
            args.extend(after)
        sql += " ORDER BY created_at, id LIMIT %s"
        args.append(limit)
        with self.db.tx() as cur:
            return [datastore_from(r) for r in cur.execute(sql, args).fetchall()]

    def set_datastore_status(self, datastore_id: str, status: str, now: float) -> None:
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE datastores SET status = %s, updated_at = %s WHERE id = %s",
                (status, now, datastore_id),
            )

    def count_datastores(self, statuses: Sequence[str]) -> int:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT count(*) AS n FROM datastores WHERE status = ANY(%s)", (list(statuses),)
            ).fetchone()
        return 0 if row is None else int(row["n"])

    # -- tags
    def get_tags(self, resource_arn: str) -> dict[str, str]:
        with self.db.tx() as cur:
            rows = cur.execute(
                "SELECT key, value FROM tags WHERE resource_arn = %s ORDER BY key", (resource_arn,)
            ).fetchall()
        return {str(r["key"]): str(r["value"]) for r in rows}

    def put_tags(self, resource_arn: str, tags: dict[str, str]) -> None:
        if not tags:
            return
        with self.db.tx() as cur:
            cur.executemany(
                "INSERT INTO tags (resource_arn, key, value) VALUES (%s, %s, %s)"
                " ON CONFLICT (resource_arn, key) DO UPDATE SET value = excluded.value",
                [(resource_arn, k, v) for k, v in tags.items()],
            )

    def remove_tags(self, resource_arn: str, keys: Sequence[str]) -> None:
        with self.db.tx() as cur:
            cur.execute(
                "DELETE FROM tags WHERE resource_arn = %s AND key = ANY(%s)", (resource_arn, list(keys))
            )

    # -- import jobs
    def insert_job(self, job: ImportJob) -> ImportJob:
        """Insert, or return the existing job of this datastore carrying the same client token."""
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO import_jobs (id, datastore_id, name, status, data_access_role_arn, input_s3_uri,"
                " output_s3_uri, input_owner_account_id, import_configuration, message, submitted_at, ended_at,"
                " client_token, request_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (datastore_id, client_token) WHERE client_token IS NOT NULL DO NOTHING",
                (
                    job.id,
                    job.datastore_id,
                    job.name,
                    job.status,
                    job.data_access_role_arn,
                    job.input_s3_uri,
                    job.output_s3_uri,
                    job.input_owner_account_id,
                    None if job.import_configuration is None else json.dumps(job.import_configuration),
                    job.message,
                    job.submitted_at,
                    job.ended_at,
                    job.client_token,
                    job.request_hash,
                ),
            )
            if cur.rowcount == 1 or job.client_token is None:
                return job
            row = cur.execute(
                "SELECT * FROM import_jobs WHERE datastore_id = %s AND client_token = %s",
                (job.datastore_id, job.client_token),
            ).fetchone()
        return job if row is None else job_from(row)

    def get_job(self, datastore_id: str, job_id: str) -> ImportJob | None:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT * FROM import_jobs WHERE datastore_id = %s AND id = %s", (datastore_id, job_id)
            ).fetchone()
        return None if row is None else job_from(row)

    def list_jobs(
        self, datastore_id: str, status: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[ImportJob]:
        sql = "SELECT * FROM import_jobs WHERE datastore_id = %s"
        args: list[object] = [datastore_id]
        if status is not None:
            sql += " AND status = %s"
            args.append(status)
        if before is not None:
            sql += " AND (submitted_at, id) < (%s, %s)"
            args.extend(before)
        sql += " ORDER BY submitted_at DESC, id DESC LIMIT %s"
        args.append(limit)
        with self.db.tx() as cur:
            return [job_from(r) for r in cur.execute(sql, args).fetchall()]

    def update_job(self, job: ImportJob) -> None:
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE import_jobs SET status = %s, message = %s, ended_at = %s WHERE id = %s",
                (job.status, job.message, job.ended_at, job.id),
            )

    def count_jobs(self, datastore_id: str, statuses: Sequence[str]) -> int:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT count(*) AS n FROM import_jobs WHERE datastore_id = %s AND status = ANY(%s)",
                (datastore_id, list(statuses)),
            ).fetchone()
        return 0 if row is None else int(row["n"])

    def jobs_in_status(self, statuses: Sequence[str]) -> list[ImportJob]:
        with self.db.tx() as cur:
            rows = cur.execute(
                "SELECT * FROM import_jobs WHERE status = ANY(%s) ORDER BY submitted_at", (list(statuses),)
            ).fetchall()
        return [job_from(r) for r in rows]
