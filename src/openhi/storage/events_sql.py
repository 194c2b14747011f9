"""The event outbox and webhook cursors: SQL shared by the SQLite and PostgreSQL adapters.

Every state change the index writes (an image set's head, a datastore's status, an import job's status) adds
one row to ``events`` in the same transaction, with AWS HealthImaging's EventBridge ``detail-type`` and
``detail`` derived here from what is written. The feed sequence ``seq`` is gap-free and in commit order:

* SQLite has one writer at a time (BEGIN IMMEDIATE, across processes): the insert takes ``max(seq) + 1``
  (``seq`` is the rowid, without AUTOINCREMENT; a rolled-back insert leaves no number behind).
* PostgreSQL writers never wait on each other for events: an insert leaves ``seq`` NULL (``id`` is a
  BIGSERIAL that may have gaps and commit out of order); :func:`sequence` — run by every reader of the feed
  before it reads — numbers the committed, unnumbered rows in ``id`` order after ``max(seq)``, under a
  transaction-scoped advisory lock (one sequencer at a time). A row that commits later is numbered later,
  so a reader never skips one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openhi.core.records import ImageSet, ImportJob
from openhi.ports.index import StoredEvent, WebhookCursor
from openhi.storage.sql_dialect import Executor, Paramstyle, sql

IMAGING_VERSION = "1.0"

#: workflow status written on an image set's head -> the event's detail-type
IMAGE_SET_TYPES = {
    "CREATED": "Image Set Created",
    "COPYING": "Image Set Copying",
    "COPYING_WITH_READ_ONLY_ACCESS": "Image Set Copying With Read Only Access",
    "COPIED": "Image Set Copied",
    "COPY_FAILED": "Image Set Copy Failed",
    "UPDATING": "Image Set Updating",
    "UPDATING_FOR_STUDY_CONSISTENCY": "Image Set Updating",
    "UPDATED": "Image Set Updated",
    "IMPORTED": "Image Set Updated",  # an import added a version to an existing primary set
    "UPDATE_FAILED": "Image Set Update Failed",
    "DELETING": "Image Set Deleting",
    "DELETED": "Image Set Deleted",
}
DATASTORE_TYPES = {
    "CREATING": "Data Store Creating",
    "CREATE_FAILED": "Data Store Creation Failed",
    "ACTIVE": "Data Store Created",
    "DELETING": "Data Store Deleting",
    "DELETED": "Data Store Deleted",
}
JOB_TYPES = {
    "SUBMITTED": "Import Job Submitted",
    "IN_PROGRESS": "Import Job In Progress",
    "COMPLETED": "Import Job Completed",
    "FAILED": "Import Job Failed",
}


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a dialect numbers events: ``insert`` takes (time, detail_type, datastore_id, image_set_id,
    detail); ``sequence`` is None (numbered at insert) or the statements that number pending rows."""

    paramstyle: Paramstyle
    insert: str
    sequence: tuple[str, ...] | None = None


#: ``seq`` is the rowid: SQLite gives a new row max(rowid) + 1 (rows are never deleted, so never a reuse)
SQLITE = Dialect(
    "qmark",
    "INSERT INTO events (time, detail_type, datastore_id, image_set_id, detail) VALUES (?, ?, ?, ?, ?)",
)
POSTGRES = Dialect(
    "format",
    "INSERT INTO events (time, detail_type, datastore_id, image_set_id, detail) VALUES (%s, %s, %s, %s, %s)",
    sequence=(
        "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.openhi_events'))",
        "WITH top AS (SELECT coalesce(max(seq), 0) AS n FROM events),"
        " pending AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM events"
        "   WHERE seq IS NULL ORDER BY id LIMIT 10000)"
        " UPDATE events e SET seq = top.n + pending.k FROM top, pending WHERE e.id = pending.id",
    ),
)


def emit(
    ex: Executor,
    d: Dialect,
    detail_type: str,
    time: float,
    datastore_id: str,
    image_set_id: str | None,
    detail: dict[str, Any],
) -> None:
    """Add one event to the outbox, inside the caller's transaction."""
    ex.execute(
        d.insert, (time, detail_type, datastore_id, image_set_id, json.dumps(detail, separators=(",", ":")))
    )


# -- what each kind of change emits
def image_set_changed(
    ex: Executor,
    d: Dialect,
    datastore_id: str,
    image_set_id: str,
    state: str,
    workflow_status: str,
    time: float,
    is_primary: bool | None = None,
) -> None:
    """An image set's head now has this state and workflow status (``is_primary``: a creation)."""
    detail_type = IMAGE_SET_TYPES.get(workflow_status)
    if detail_type is None:
        return
    detail: dict[str, Any] = {
        "imagingVersion": IMAGING_VERSION,
        "datastoreId": datastore_id,
        "imageSetId": image_set_id,
        "imageSetState": state,
        "imageSetWorkflowStatus": workflow_status,
    }
    if is_primary is not None:
        detail["isPrimary"] = is_primary
    emit(ex, d, detail_type, time, datastore_id, image_set_id, detail)


def image_set_created(ex: Executor, d: Dialect, head: ImageSet) -> None:
    """A new head row: created by an import or STOW (CREATED), or as a copy's destination (COPYING)."""
    primary = head.is_primary if head.workflow_status == "CREATED" else None
    image_set_changed(
        ex, d, head.datastore_id, head.id, head.state, head.workflow_status, head.updated_at, primary
    )


def datastore_changed(
    ex: Executor, d: Dialect, datastore_id: str, name: str | None, status: str, time: float
) -> None:
    detail_type = DATASTORE_TYPES.get(status)
    if detail_type is None:
        return
    detail: dict[str, Any] = {"imagingVersion": IMAGING_VERSION, "datastoreId": datastore_id}
    if name is not None:
        detail["datastoreName"] = name
    detail["datastoreStatus"] = status
    emit(ex, d, detail_type, time, datastore_id, None, detail)


def job_changed(ex: Executor, d: Dialect, job: ImportJob, status: str, time: float) -> None:
    detail_type = JOB_TYPES.get(status)
    if detail_type is None:
        return
    detail: dict[str, Any] = {"imagingVersion": IMAGING_VERSION, "datastoreId": job.datastore_id}
    if job.name:
        detail["jobName"] = job.name
    detail |= {
        "jobId": job.id,
        "jobStatus": status,
        "inputS3Uri": job.input_s3_uri,
        "outputS3Uri": job.output_s3_uri,
    }
    emit(ex, d, detail_type, time, job.datastore_id, None, detail)


# -- the feed
_LIST = (
    "SELECT seq, time, detail_type, datastore_id, image_set_id, detail FROM events"
    " WHERE seq > ? ORDER BY seq LIMIT ?"
)
_TOP = "SELECT coalesce(max(seq), 0) AS n FROM events"


def sequence(ex: Executor, d: Dialect) -> None:
    """Number the committed events that have no ``seq`` yet (PostgreSQL); nothing to do on SQLite.
    Must run in a transaction of its own: the advisory lock is held until it commits."""
    for statement in d.sequence or ():
        ex.execute(statement, ())


def list_events(ex: Executor, d: Dialect, after: int, limit: int) -> list[StoredEvent]:
    rows = ex.execute(sql(_LIST, d.paramstyle), (after, limit)).fetchall()
    return [
        StoredEvent(
            seq=int(r["seq"]),
            time=float(r["time"]),
            detail_type=str(r["detail_type"]),
            datastore_id=str(r["datastore_id"]),
            image_set_id=None if r["image_set_id"] is None else str(r["image_set_id"]),
            detail=json.loads(r["detail"]),
        )
        for r in rows
    ]


_PRUNE = (
    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq IS NOT NULL AND time < ? AND seq <= ?"
    " AND seq < (SELECT max(seq) FROM events) ORDER BY seq LIMIT ?)"
)


def prune(ex: Executor, d: Dialect, before: float, through_seq: int, limit: int) -> int:
    """Delete the oldest numbered events before ``before`` up to ``through_seq`` (``limit`` at most), never
    the last one: SQLite numbers a new event max(seq) + 1, PostgreSQL's sequencer after max(seq)."""
    cur = ex.execute(sql(_PRUNE, d.paramstyle), (before, through_seq, limit))
    return max(0, int(getattr(cur, "rowcount", 0) or 0))


def last_seq(ex: Executor, d: Dialect) -> int:
    row = ex.execute(_TOP, ()).fetchone()
    return 0 if row is None else int(row["n"])


# -- webhook cursors (one row per configured webhook; the lease makes one delivery attempt at a time)
_CURSOR_COLUMNS = "name, delivered_seq, attempts, next_attempt_at, last_error, lease_owner, lease_expires"
_REGISTER = "INSERT INTO webhook_cursors (name, delivered_seq, attempts, next_attempt_at) VALUES (?, ?, 0, 0)"
_CURSOR = f"SELECT {_CURSOR_COLUMNS} FROM webhook_cursors WHERE name = ?"
_TAKE = (
    "UPDATE webhook_cursors SET lease_owner = ?, lease_expires = ?"
    " WHERE name = ? AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires < ?)"
)
_ADVANCE = (
    "UPDATE webhook_cursors SET delivered_seq = ?, attempts = 0, next_attempt_at = 0, last_error = NULL"
    " WHERE name = ? AND lease_owner = ? AND delivered_seq < ?"
)
_FAIL = (
    "UPDATE webhook_cursors SET attempts = ?, next_attempt_at = ?, last_error = ?"
    " WHERE name = ? AND lease_owner = ?"
)
_RELEASE = (
    "UPDATE webhook_cursors SET lease_owner = NULL, lease_expires = NULL WHERE name = ? AND lease_owner = ?"
)
_ALL = f"SELECT {_CURSOR_COLUMNS} FROM webhook_cursors ORDER BY name"


def _cursor(row: Any) -> WebhookCursor:
    return WebhookCursor(
        name=str(row["name"]),
        delivered_seq=int(row["delivered_seq"]),
        attempts=int(row["attempts"]),
        next_attempt_at=float(row["next_attempt_at"]),
        last_error=None if row["last_error"] is None else str(row["last_error"]),
        lease_owner=None if row["lease_owner"] is None else str(row["lease_owner"]),
    )


def get_cursor(ex: Executor, d: Dialect, name: str) -> WebhookCursor | None:
    row = ex.execute(sql(_CURSOR, d.paramstyle), (name,)).fetchone()
    return None if row is None else _cursor(row)


def register(ex: Executor, d: Dialect, name: str, conflict: str, from_end: bool) -> None:
    """Add the webhook's cursor unless it has one (``conflict``: the dialect's do-nothing clause): before
    the first event, or at the feed's current end."""
    ex.execute(sql(_REGISTER + conflict, d.paramstyle), (name, last_seq(ex, d) if from_end else 0))


def take_lease(ex: Executor, d: Dialect, name: str, owner: str, now: float, until: float) -> bool:
    cur = ex.execute(sql(_TAKE, d.paramstyle), (owner, until, name, owner, now))
    return int(cur.rowcount) == 1


def advance(ex: Executor, d: Dialect, name: str, owner: str, seq: int) -> bool:
    cur = ex.execute(sql(_ADVANCE, d.paramstyle), (seq, name, owner, seq))
    return int(cur.rowcount) == 1


def fail(
    ex: Executor, d: Dialect, name: str, owner: str, attempts: int, next_attempt_at: float, error: str
) -> bool:
    cur = ex.execute(sql(_FAIL, d.paramstyle), (attempts, next_attempt_at, error[:2000], name, owner))
    return int(cur.rowcount) == 1


def release(ex: Executor, d: Dialect, name: str, owner: str) -> None:
    ex.execute(sql(_RELEASE, d.paramstyle), (name, owner))


def all_cursors(ex: Executor) -> list[WebhookCursor]:
    return [_cursor(r) for r in ex.execute(_ALL, ()).fetchall()]
