"""Image-set index SQL shared by the SQLite and PostgreSQL adapters (placeholders per dialect)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.ports.index import LockRequest, VersionCommit
from openhi.storage import dicom_index_sql, events_sql
from openhi.storage.sql_dialect import Executor as Executor
from openhi.storage.sql_dialect import Paramstyle as Paramstyle
from openhi.storage.sql_dialect import Result as Result
from openhi.storage.sql_dialect import sql as sql
from openhi.storage.sqlite.rows import image_set_from, search_columns, version_from


@dataclass(frozen=True, slots=True)
class Dialect:
    """A dialect's placeholders and its own spelling of the statements the adapters write differently."""

    paramstyle: Paramstyle
    #: insert one frame reference or replace the one with its (image_set_id, frame_id):
    #: (image_set_id, frame_id, blob_key, stored_ts)
    upsert_frame: str
    #: queue a set's frame blobs, then its metadata blobs, for collection unless queued: (now, image_set_id)
    collect: tuple[str, str]


def _events(d: Dialect) -> events_sql.Dialect:
    """The event outbox's dialect of ``d`` (every head write below adds its event in the same transaction)."""
    return events_sql.SQLITE if d.paramstyle == "qmark" else events_sql.POSTGRES


class LockLost(Exception):
    """A lock's conditional update matched no row; ``head`` is the set as it is now (None: not found)."""

    def __init__(self, head: ImageSet | None) -> None:
        super().__init__("lock lost")
        self.head = head


HEAD_COLUMNS = (
    "id",
    "datastore_id",
    "latest_version",
    "content_version",
    "state",
    "workflow_status",
    "is_primary",
    "created_at",
    "updated_at",
    "deleted_at",
    "last_accessed_at",
    "storage_tier",
)
VERSION_COLUMNS = (
    "image_set_id, version, datastore_id, state, workflow_status, created_at, updated_at, deleted_at,"
    " message, forced, is_primary, metadata_key"
)
INSERT_VERSION = f"INSERT INTO image_set_versions ({VERSION_COLUMNS}) VALUES ({', '.join('?' * 12)})"
#: GetImageFrame's one read: the set's state and, when it has it, the frame (frame_id, image_set_id, datastore_id)
FRAME_FOR_READ = (
    "SELECT s.state, f.blob_key, f.stored_ts FROM image_sets s"
    " LEFT JOIN image_set_frames f ON f.image_set_id = s.id AND f.frame_id = ?"
    " WHERE s.id = ? AND s.datastore_id = ?"
)
_HEAD = "SELECT * FROM image_sets WHERE id = ? AND datastore_id = ?"
_VERSION = "SELECT * FROM image_set_versions WHERE image_set_id = ? AND version = ? AND datastore_id = ?"
_FRAME = (
    "SELECT f.frame_id, f.blob_key, f.stored_ts FROM image_set_frames f"
    " JOIN image_sets s ON s.id = f.image_set_id"
    " WHERE f.image_set_id = ? AND f.frame_id = ? AND s.datastore_id = ?"
)
_FRAMES = (
    "SELECT f.frame_id, f.blob_key, f.stored_ts FROM image_set_frames f"
    " JOIN image_sets s ON s.id = f.image_set_id WHERE f.image_set_id = ? AND s.datastore_id = ?"
    " ORDER BY f.frame_id"
)
_PRIMARY = (
    "SELECT * FROM image_sets WHERE datastore_id = ? AND study_uid = ? AND series_uid = ?"
    " AND is_primary = 1 AND state <> 'DELETED' ORDER BY created_at LIMIT 1"
)
_PRIMARY_IN_STUDY = (
    "SELECT * FROM image_sets WHERE datastore_id = ? AND study_uid = ? AND is_primary = 1"
    " AND state <> 'DELETED' ORDER BY created_at, id"
)
_COUNT = "SELECT count(*) AS n FROM image_sets WHERE datastore_id = ? AND state <> 'DELETED'"
_LOCK = (
    "UPDATE image_sets SET state = 'LOCKED', workflow_status = ?, latest_version = ?,"
    " updated_at = CASE WHEN ? THEN ? ELSE updated_at END"
    " WHERE id = ? AND datastore_id = ? AND latest_version = ? AND state = 'ACTIVE'"
)
_ADVANCE = (
    "UPDATE image_sets SET latest_version = ? WHERE id = ? AND datastore_id = ?"
    " AND latest_version = ? AND state = 'ACTIVE'"
)
_FINISH_VERSION = (
    "UPDATE image_set_versions SET state = ?, workflow_status = ?, updated_at = ?, deleted_at = ?,"
    " message = ?, forced = ?, is_primary = ?, metadata_key = ?"
    " WHERE image_set_id = ? AND version = ?"
)
_DROP_FRAMES = "DELETE FROM image_set_frames WHERE image_set_id = ?"
_LOCKED_VERSIONS = "SELECT * FROM image_set_versions WHERE state = 'LOCKED'"
_LOCKED_SETS = "SELECT * FROM image_sets WHERE state = 'LOCKED'"
_ARCHIVE = (
    "UPDATE image_sets SET storage_tier = 'ARCHIVE_INSTANT_ACCESS'"
    " WHERE storage_tier = 'FREQUENT_ACCESS' AND state <> 'DELETED'"
    " AND coalesce(last_accessed_at, created_at) < ?"
)


# -- writes (each inside the caller's transaction)
def version_args(v: ImageSetVersion) -> tuple[object, ...]:
    return (
        v.image_set_id,
        v.version,
        v.datastore_id,
        v.state,
        v.workflow_status,
        v.created_at,
        v.updated_at,
        v.deleted_at,
        v.message,
        int(v.forced),
        int(v.is_primary),
        v.metadata_key,
    )


def insert_version(ex: Executor, d: Dialect, version: ImageSetVersion) -> None:
    ex.execute(sql(INSERT_VERSION, d.paramstyle), version_args(version))


def insert_frames(ex: Executor, d: Dialect, image_set_id: str, frames: Sequence[FrameRef]) -> None:
    if not frames:
        return
    ex.executemany(d.upsert_frame, [(image_set_id, f.frame_id, f.blob_key, f.stored_ts) for f in frames])


def insert_head(ex: Executor, d: Dialect, head: ImageSet) -> None:
    cols = search_columns(head.search)
    names = ", ".join([*HEAD_COLUMNS, *cols])
    marks = ", ".join("?" * (len(HEAD_COLUMNS) + len(cols)))
    ex.execute(
        sql(f"INSERT INTO image_sets ({names}) VALUES ({marks})", d.paramstyle),
        (
            head.id,
            head.datastore_id,
            head.latest_version,
            head.content_version,
            head.state,
            head.workflow_status,
            int(head.is_primary),
            head.created_at,
            head.updated_at,
            head.deleted_at,
            head.last_accessed_at,
            head.storage_tier,
            *cols.values(),
        ),
    )
    if head.dicom is not None:  # the DICOM index of the new set's content, in the same transaction
        dicom_index_sql.sync(
            ex, d.paramstyle, head.datastore_id, head.id, head.dicom, head.updated_at,
            new_head=(head.is_primary, head.state),
        )  # fmt: skip
    events_sql.image_set_created(ex, _events(d), head)


def create(
    ex: Executor, d: Dialect, head: ImageSet, version: ImageSetVersion, frames: Sequence[FrameRef] = ()
) -> None:
    """A new set: its head, its first version and its frame references."""
    insert_head(ex, d, head)
    insert_version(ex, d, version)
    insert_frames(ex, d, head.id, frames)


def collect(ex: Executor, d: Dialect, image_set_id: str, now: float) -> None:
    """Drop a deleted set's frame references; queue its frame and metadata blobs for collection."""
    for statement in d.collect:
        ex.execute(statement, (now, image_set_id))
    ex.execute(sql(_DROP_FRAMES, d.paramstyle), (image_set_id,))


def take_locks(ex: Executor, d: Dialect, datastore_id: str, locks: Sequence[LockRequest], now: float) -> None:
    """Lock each set on its expected latest version (and insert its new version); else raise LockLost."""
    for lock in locks:
        new_latest = lock.new_version.version if lock.new_version else lock.expected_latest
        cur = ex.execute(
            sql(_LOCK, d.paramstyle),
            (
                lock.head_status,
                new_latest,
                lock.new_version is not None,
                now,
                lock.image_set_id,
                datastore_id,
                lock.expected_latest,
            ),
        )
        if cur.rowcount != 1:
            raise LockLost(get_head(ex, d, datastore_id, lock.image_set_id))
        if lock.new_version is not None:
            insert_version(ex, d, lock.new_version)
        events_sql.image_set_changed(
            ex, _events(d), datastore_id, lock.image_set_id, "LOCKED", lock.head_status, now
        )


def append_version(
    ex: Executor, d: Dialect, datastore_id: str, commit: VersionCommit, expected_latest: int
) -> bool:
    """Advance an active set from ``expected_latest`` to ``commit.version`` and apply the commit; else False."""
    assert commit.version is not None
    cur = ex.execute(
        sql(_ADVANCE, d.paramstyle),
        (commit.version.version, commit.image_set_id, datastore_id, expected_latest),
    )
    if cur.rowcount != 1:
        return False
    insert_version(ex, d, commit.version)
    apply_commit(ex, d, datastore_id, commit, finish_version=False)
    return True


def apply_commit(
    ex: Executor, d: Dialect, datastore_id: str, commit: VersionCommit, finish_version: bool = True
) -> None:
    """Write a finished operation: its version row's final state (unless ``finish_version`` is False: the
    caller has just inserted it whole), the set's head, its frame references, its blobs to collect."""
    v = commit.version
    if v is not None and finish_version:
        ex.execute(
            sql(_FINISH_VERSION, d.paramstyle),
            (
                v.state,
                v.workflow_status,
                v.updated_at,
                v.deleted_at,
                v.message,
                int(v.forced),
                int(v.is_primary),
                v.metadata_key,
                v.image_set_id,
                v.version,
            ),
        )
    sets = ["state = ?", "workflow_status = ?", "updated_at = ?"]
    args: list[object] = [commit.head_state, commit.head_status, commit.updated_at]
    if commit.content_version is not None:
        sets.append("content_version = ?")
        args.append(commit.content_version)
    if commit.is_primary is not None:
        sets.append("is_primary = ?")
        args.append(int(commit.is_primary))
    if commit.deleted_at is not None:
        sets.append("deleted_at = ?")
        args.append(commit.deleted_at)
    if commit.touch:
        sets.extend(["last_accessed_at = ?", "storage_tier = 'FREQUENT_ACCESS'"])
        args.append(commit.updated_at)
    if commit.search is not None:
        for column, value in search_columns(commit.search).items():
            sets.append(f"{column} = ?")
            args.append(value)
    ex.execute(
        sql(f"UPDATE image_sets SET {', '.join(sets)} WHERE id = ? AND datastore_id = ?", d.paramstyle),
        [*args, commit.image_set_id, datastore_id],
    )
    if commit.dicom is not None or commit.is_primary is not None or commit.head_state == "DELETED":
        # new content, or a change of what is live (primary and not DELETED): the DICOM index follows
        dicom_index_sql.sync(
            ex, d.paramstyle, datastore_id, commit.image_set_id, commit.dicom, commit.updated_at
        )
    insert_frames(ex, d, commit.image_set_id, commit.frames)
    if commit.collect:
        collect(ex, d, commit.image_set_id, commit.updated_at)
    if v is not None:  # a finished operation; a copy source's unlock (no version) restores its old status
        events_sql.image_set_changed(
            ex, _events(d), datastore_id, commit.image_set_id, commit.head_state, commit.head_status,
            commit.updated_at,
        )  # fmt: skip


def archive_idle(ex: Executor, d: Dialect, cutoff: float) -> int:
    return int(ex.execute(sql(_ARCHIVE, d.paramstyle), (cutoff,)).rowcount)


# -- reads
def get_head(ex: Executor, d: Dialect, datastore_id: str, image_set_id: str) -> ImageSet | None:
    row = ex.execute(sql(_HEAD, d.paramstyle), (image_set_id, datastore_id)).fetchone()
    return None if row is None else image_set_from(row)


def get_version(
    ex: Executor, d: Dialect, datastore_id: str, image_set_id: str, version: int
) -> ImageSetVersion | None:
    row = ex.execute(sql(_VERSION, d.paramstyle), (image_set_id, version, datastore_id)).fetchone()
    return None if row is None else version_from(row)


def list_versions(
    ex: Executor, d: Dialect, datastore_id: str, image_set_id: str, before: int | None, limit: int
) -> list[ImageSetVersion]:
    text = "SELECT * FROM image_set_versions WHERE image_set_id = ? AND datastore_id = ?"
    args: list[object] = [image_set_id, datastore_id]
    if before is not None:
        text += " AND version < ?"
        args.append(before)
    text += " ORDER BY version DESC LIMIT ?"
    args.append(limit)
    return [version_from(r) for r in ex.execute(sql(text, d.paramstyle), args).fetchall()]


def get_frame(
    ex: Executor, d: Dialect, datastore_id: str, image_set_id: str, frame_id: str
) -> FrameRef | None:
    row = ex.execute(sql(_FRAME, d.paramstyle), (image_set_id, frame_id, datastore_id)).fetchone()
    return None if row is None else FrameRef(row["frame_id"], row["blob_key"], row["stored_ts"])


def list_frames(ex: Executor, d: Dialect, datastore_id: str, image_set_id: str) -> list[FrameRef]:
    rows = ex.execute(sql(_FRAMES, d.paramstyle), (image_set_id, datastore_id)).fetchall()
    return [FrameRef(r["frame_id"], r["blob_key"], r["stored_ts"]) for r in rows]


def find_primary(
    ex: Executor, d: Dialect, datastore_id: str, study_uid: str, series_uid: str
) -> ImageSet | None:
    row = ex.execute(sql(_PRIMARY, d.paramstyle), (datastore_id, study_uid, series_uid)).fetchone()
    return None if row is None else image_set_from(row)


def list_primary_in_study(ex: Executor, d: Dialect, datastore_id: str, study_uid: str) -> list[ImageSet]:
    rows = ex.execute(sql(_PRIMARY_IN_STUDY, d.paramstyle), (datastore_id, study_uid)).fetchall()
    return [image_set_from(r) for r in rows]


def count_image_sets(ex: Executor, d: Dialect, datastore_id: str) -> int:
    row = ex.execute(sql(_COUNT, d.paramstyle), (datastore_id,)).fetchone()
    return 0 if row is None else int(row["n"])


def locked_versions(ex: Executor) -> list[ImageSetVersion]:
    return [version_from(r) for r in ex.execute(_LOCKED_VERSIONS, ()).fetchall()]


def locked_image_sets(ex: Executor) -> list[ImageSet]:
    return [image_set_from(r) for r in ex.execute(_LOCKED_SETS, ()).fetchall()]
