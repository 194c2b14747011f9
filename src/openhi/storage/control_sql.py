"""Control-plane index SQL (meta, datastores, tags, import jobs) shared by the SQLite and PostgreSQL adapters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from openhi.core.records import Datastore, ImportJob
from openhi.storage.sql_dialect import Executor, Paramstyle, sql
from openhi.storage.sqlite.rows import datastore_from, job_from


@dataclass(frozen=True, slots=True)
class Dialect:
    """A dialect's placeholders and its own spelling of the statements the adapters write differently."""

    paramstyle: Paramstyle
    #: insert a meta entry unless its key is present: (key, value)
    insert_meta_if_absent: str
    #: what follows INSERT_DATASTORE: nothing, or skip the row on a client-token conflict
    datastore_conflict: str = ""
    #: what follows INSERT_JOB: nothing, or skip the row on a (datastore, client-token) conflict
    job_conflict: str = ""


INSERT_DATASTORE = (
    "INSERT INTO datastores (id, name, status, lossless_storage_format, kms_key_arn,"
    " lambda_authorizer_arn, created_at, updated_at, client_token, request_hash)"
    f" VALUES ({', '.join('?' * 10)})"
)
INSERT_JOB = (
    "INSERT INTO import_jobs (id, datastore_id, name, status, data_access_role_arn, input_s3_uri,"
    " output_s3_uri, input_owner_account_id, import_configuration, message, submitted_at, ended_at,"
    f" client_token, request_hash) VALUES ({', '.join('?' * 14)})"
)
_META = "SELECT value FROM meta WHERE key = ?"
_DATASTORE = "SELECT * FROM datastores WHERE id = ?"
_DATASTORE_BY_TOKEN = "SELECT * FROM datastores WHERE client_token = ?"
_DATASTORE_STATUS = (
    "UPDATE datastores SET status = ?, updated_at = ? WHERE id = ? AND status <> ? RETURNING name"
)
_TAGS = "SELECT key, value FROM tags WHERE resource_arn = ? ORDER BY key"
_PUT_TAG = (
    "INSERT INTO tags (resource_arn, key, value) VALUES (?, ?, ?)"
    " ON CONFLICT (resource_arn, key) DO UPDATE SET value = excluded.value"
)
_JOB = "SELECT * FROM import_jobs WHERE datastore_id = ? AND id = ?"
_JOB_BY_TOKEN = "SELECT * FROM import_jobs WHERE datastore_id = ? AND client_token = ?"
_JOB_STATUS = "SELECT status FROM import_jobs WHERE id = ?"
_UPDATE_JOB = "UPDATE import_jobs SET status = ?, message = ?, ended_at = ? WHERE id = ?"


def _any_of(d: Dialect, column: str, values: Sequence[str]) -> tuple[str, list[object]]:
    """``column`` is one of ``values``: an IN list (sqlite3), or one array parameter (psycopg)."""
    if d.paramstyle == "format":
        return f"{column} = ANY(?)", [list(values)]
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


def _page(
    d: Dialect,
    text: str,
    args: list[object],
    status: str | None,
    keyset: tuple[str, tuple[float, str]] | None,
    order: str,
    limit: int,
) -> tuple[str, list[object]]:
    """``text`` (a SELECT and its WHERE) narrowed to ``status`` and to the rows past ``keyset``
    (a condition on two ``?`` and their values), ordered and limited; in the dialect's placeholders."""
    if status is not None:
        text += " AND status = ?"
        args.append(status)
    if keyset is not None:
        text += f" AND {keyset[0]}"
        args.extend(keyset[1])
    text += f" ORDER BY {order} LIMIT ?"
    args.append(limit)
    return sql(text, d.paramstyle), args


# -- meta
def get_meta(ex: Executor, d: Dialect, key: str) -> str | None:
    row = ex.execute(sql(_META, d.paramstyle), (key,)).fetchone()
    return None if row is None else str(row["value"])


def set_meta_if_absent(ex: Executor, d: Dialect, key: str, value: str) -> str:
    """Insert ``key`` unless present (inside the caller's transaction); its value now."""
    ex.execute(d.insert_meta_if_absent, (key, value))
    value_now = get_meta(ex, d, key)
    assert value_now is not None
    return value_now


# -- datastores
def insert_datastore(ex: Executor, d: Dialect, ds: Datastore) -> bool:
    """Insert ``ds``; whether a row was inserted (False: the dialect's conflict clause skipped it)."""
    cur = ex.execute(
        sql(INSERT_DATASTORE + d.datastore_conflict, d.paramstyle),
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
    return cur.rowcount == 1


def datastore_by_token(ex: Executor, d: Dialect, client_token: str) -> Datastore | None:
    row = ex.execute(sql(_DATASTORE_BY_TOKEN, d.paramstyle), (client_token,)).fetchone()
    return None if row is None else datastore_from(row)


def get_datastore(ex: Executor, d: Dialect, datastore_id: str) -> Datastore | None:
    row = ex.execute(sql(_DATASTORE, d.paramstyle), (datastore_id,)).fetchone()
    return None if row is None else datastore_from(row)


def list_datastores(
    ex: Executor, d: Dialect, status: str | None, after: tuple[float, str] | None, limit: int
) -> list[Datastore]:
    keyset = None if after is None else ("(created_at, id) > (?, ?)", after)
    text, args = _page(d, "SELECT * FROM datastores WHERE 1 = 1", [], status, keyset, "created_at, id", limit)
    return [datastore_from(r) for r in ex.execute(text, args).fetchall()]


def set_datastore_status(
    ex: Executor, d: Dialect, datastore_id: str, status: str, now: float
) -> tuple[str | None] | None:
    """Set the status; the datastore's ``(name,)`` when the status changed (the caller emits its event),
    None when it was already ``status`` or there is no such datastore."""
    row = ex.execute(sql(_DATASTORE_STATUS, d.paramstyle), (status, now, datastore_id, status)).fetchone()
    return None if row is None else (None if row["name"] is None else str(row["name"]),)


def count_datastores(ex: Executor, d: Dialect, statuses: Sequence[str]) -> int:
    where, args = _any_of(d, "status", statuses)
    row = ex.execute(
        sql(f"SELECT count(*) AS n FROM datastores WHERE {where}", d.paramstyle), args
    ).fetchone()
    return 0 if row is None else int(row["n"])


# -- tags
def get_tags(ex: Executor, d: Dialect, resource_arn: str) -> dict[str, str]:
    rows = ex.execute(sql(_TAGS, d.paramstyle), (resource_arn,)).fetchall()
    return {str(r["key"]): str(r["value"]) for r in rows}


def put_tags(ex: Executor, d: Dialect, resource_arn: str, tags: dict[str, str]) -> None:
    """Add ``tags`` to the resource, replacing the values of keys it has."""
    ex.executemany(sql(_PUT_TAG, d.paramstyle), [(resource_arn, k, v) for k, v in tags.items()])


# -- import jobs
def insert_job(ex: Executor, d: Dialect, job: ImportJob) -> bool:
    """Insert ``job``; whether a row was inserted (False: the dialect's conflict clause skipped it)."""
    cur = ex.execute(
        sql(INSERT_JOB + d.job_conflict, d.paramstyle),
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
    return cur.rowcount == 1


def job_by_token(ex: Executor, d: Dialect, datastore_id: str, client_token: str) -> ImportJob | None:
    row = ex.execute(sql(_JOB_BY_TOKEN, d.paramstyle), (datastore_id, client_token)).fetchone()
    return None if row is None else job_from(row)


def get_job(ex: Executor, d: Dialect, datastore_id: str, job_id: str) -> ImportJob | None:
    row = ex.execute(sql(_JOB, d.paramstyle), (datastore_id, job_id)).fetchone()
    return None if row is None else job_from(row)


def list_jobs(
    ex: Executor,
    d: Dialect,
    datastore_id: str,
    status: str | None,
    before: tuple[float, str] | None,
    limit: int,
) -> list[ImportJob]:
    keyset = None if before is None else ("(submitted_at, id) < (?, ?)", before)
    text, args = _page(
        d,
        "SELECT * FROM import_jobs WHERE datastore_id = ?",
        [datastore_id],
        status,
        keyset,
        "submitted_at DESC, id DESC",
        limit,
    )
    return [job_from(r) for r in ex.execute(text, args).fetchall()]


def update_job(ex: Executor, d: Dialect, job: ImportJob) -> bool:
    """Write the job's status, message and end time; whether its status changed (the caller emits)."""
    row = ex.execute(sql(_JOB_STATUS, d.paramstyle), (job.id,)).fetchone()
    ex.execute(sql(_UPDATE_JOB, d.paramstyle), (job.status, job.message, job.ended_at, job.id))
    return row is not None and row["status"] != job.status


def count_jobs(ex: Executor, d: Dialect, datastore_id: str, statuses: Sequence[str]) -> int:
    where, args = _any_of(d, "status", statuses)
    row = ex.execute(
        sql(f"SELECT count(*) AS n FROM import_jobs WHERE datastore_id = ? AND {where}", d.paramstyle),
        [datastore_id, *args],
    ).fetchone()
    return 0 if row is None else int(row["n"])


def jobs_in_status(ex: Executor, d: Dialect, statuses: Sequence[str]) -> list[ImportJob]:
    where, args = _any_of(d, "status", statuses)
    rows = ex.execute(
        sql(f"SELECT * FROM import_jobs WHERE {where} ORDER BY submitted_at", d.paramstyle), args
    )
    return [job_from(r) for r in rows.fetchall()]
