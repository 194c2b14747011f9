"""SQLite index, control-plane half: meta, datastores, tags and import jobs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from openhi.core.records import Datastore, ImportJob
from openhi.storage.sqlite.connection import Database
from openhi.storage.sqlite.rows import datastore_from, job_from


class ControlTables:
    db: Database

    # -- meta
    def get_meta(self, key: str) -> str | None:
        row = self.db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_if_absent(self, key: str, value: str) -> str:
        with self.db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return str(conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # -- datastores
    def insert_datastore(self, ds: Datastore) -> Datastore:
        """Insert, or return the existing datastore carrying the same client token."""
        with self.db.write() as conn:
            if ds.client_token is not None:
                row = conn.execute(
                    "SELECT * FROM datastores WHERE client_token = ?", (ds.client_token,)
                ).fetchone()
                if row is not None:
                    return datastore_from(row)
            conn.execute(
                "INSERT INTO datastores (id, name, status, lossless_storage_format, kms_key_arn,"
                " lambda_authorizer_arn, created_at, updated_at, client_token, request_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            return ds

    def get_datastore(self, datastore_id: str) -> Datastore | None:
        row = self.db.conn.execute("SELECT * FROM datastores WHERE id = ?", (datastore_id,)).fetchone()
        return None if row is None else datastore_from(row)

    def list_datastores(
        self, status: str | None, after: tuple[float, str] | None, limit: int
    ) -> list[Datastore]:
        sql = "SELECT * FROM datastores WHERE 1 = 1"
        args: list[object] = []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if after is not None:
            sql += " AND (created_at, id) > (?, ?)"
            args.extend(after)
        sql += " ORDER BY created_at, id LIMIT ?"
        args.append(limit)
        return [datastore_from(r) for r in self.db.conn.execute(sql, args)]

    def set_datastore_status(self, datastore_id: str, status: str, now: float) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE datastores SET status = ?, updated_at = ? WHERE id = ?", (status, now, datastore_id)
            )

    def count_datastores(self, statuses: Sequence[str]) -> int:
        marks = ",".join("?" * len(statuses))
        row = self.db.conn.execute(
            f"SELECT count(*) FROM datastores WHERE status IN ({marks})", list(statuses)
        )
        return int(row.fetchone()[0])

    # -- tags
    def get_tags(self, resource_arn: str) -> dict[str, str]:
        rows = self.db.conn.execute(
            "SELECT key, value FROM tags WHERE resource_arn = ? ORDER BY key", (resource_arn,)
        )
        return {str(r[0]): str(r[1]) for r in rows}

    def put_tags(self, resource_arn: str, tags: dict[str, str]) -> None:
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO tags (resource_arn, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (resource_arn, key) DO UPDATE SET value = excluded.value",
                [(resource_arn, k, v) for k, v in tags.items()],
            )

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
                row = conn.execute(
                    "SELECT * FROM import_jobs WHERE datastore_id = ? AND client_token = ?",
                    (job.datastore_id, job.client_token),
                ).fetchone()
                if row is not None:
                    return job_from(row)
            conn.execute(
                "INSERT INTO import_jobs (id, datastore_id, name, status, data_access_role_arn, input_s3_uri,"
                " output_s3_uri, input_owner_account_id, import_configuration, message, submitted_at, ended_at,"
                " client_token, request_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            return job

    def get_job(self, datastore_id: str, job_id: str) -> ImportJob | None:
        row = self.db.conn.execute(
            "SELECT * FROM import_jobs WHERE datastore_id = ? AND id = ?", (datastore_id, job_id)
        ).fetchone()
        return None if row is None else job_from(row)

    def list_jobs(
        self, datastore_id: str, status: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[ImportJob]:
        sql = "SELECT * FROM import_jobs WHERE datastore_id = ?"
        args: list[object] = [datastore_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if before is not None:
            sql += " AND (submitted_at, id) < (?, ?)"
            args.extend(before)
        sql += " ORDER BY submitted_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return [job_from(r) for r in self.db.conn.execute(sql, args)]

    def update_job(self, job: ImportJob) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE import_jobs SET status = ?, message = ?, ended_at = ? WHERE id = ?",
                (job.status, job.message, job.ended_at, job.id),
            )

    def count_jobs(self, datastore_id: str, statuses: Sequence[str]) -> int:
        marks = ",".join("?" * len(statuses))
        cur = self.db.conn.execute(
            f"SELECT count(*) FROM import_jobs WHERE datastore_id = ? AND status IN ({marks})",
            [datastore_id, *statuses],
        )
        return int(cur.fetchone()[0])

    def jobs_in_status(self, statuses: Sequence[str]) -> list[ImportJob]:
        marks = ",".join("?" * len(statuses))
        rows: list[sqlite3.Row] = self.db.conn.execute(
            f"SELECT * FROM import_jobs WHERE status IN ({marks}) ORDER BY submitted_at", list(statuses)
        ).fetchall()
        return [job_from(r) for r in rows]
