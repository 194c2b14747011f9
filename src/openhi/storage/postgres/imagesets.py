"""PostgreSQL index, data-plane half: image sets, versions, frame references, locks and blob collection."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import Cursor
from psycopg.rows import DictRow

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.ports.index import LockRequest, VersionCommit
from openhi.storage.postgres.connection import Database
from openhi.storage.sqlite.rows import image_set_from, search_columns, version_from

Cur = Cursor[DictRow]

_HEAD_COLUMNS = (
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
_INSERT_VERSION = (
    "INSERT INTO image_set_versions (image_set_id, version, datastore_id, state, workflow_status, created_at,"
    " updated_at, deleted_at, message, forced, is_primary, metadata_key)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _version_args(v: ImageSetVersion) -> tuple[object, ...]:
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


def _insert_version(cur: Cur, version: ImageSetVersion) -> None:
    cur.execute(_INSERT_VERSION, _version_args(version))


def _insert_frames(cur: Cur, image_set_id: str, frames: Sequence[FrameRef]) -> None:
    if not frames:
        return
    cur.executemany(
        "INSERT INTO image_set_frames (image_set_id, frame_id, blob_key, stored_ts) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (image_set_id, frame_id)"
        " DO UPDATE SET blob_key = excluded.blob_key, stored_ts = excluded.stored_ts",
        [(image_set_id, f.frame_id, f.blob_key, f.stored_ts) for f in frames],
    )


def _insert_head(cur: Cur, head: ImageSet) -> None:
    cols = search_columns(head.search)
    names = ", ".join([*_HEAD_COLUMNS, *cols])
    marks = ", ".join(["%s"] * (len(_HEAD_COLUMNS) + len(cols)))
    cur.execute(
        f"INSERT INTO image_sets ({names}) VALUES ({marks})",
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


def _collect(cur: Cur, image_set_id: str, now: float) -> None:
    """Drop a deleted set's frame references; queue its frame and metadata blobs for collection."""
    cur.execute(
        "INSERT INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT blob_key, %s::double precision FROM image_set_frames WHERE image_set_id = %s"
        " ON CONFLICT (blob_key) DO NOTHING",
        (now, image_set_id),
    )
    cur.execute(
        "INSERT INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT metadata_key, %s::double precision FROM image_set_versions"
        " WHERE image_set_id = %s AND metadata_key IS NOT NULL"
        " ON CONFLICT (blob_key) DO NOTHING",
        (now, image_set_id),
    )
    cur.execute("DELETE FROM image_set_frames WHERE image_set_id = %s", (image_set_id,))


def _head(cur: Cur, datastore_id: str, image_set_id: str) -> ImageSet | None:
    row = cur.execute(
        "SELECT * FROM image_sets WHERE id = %s AND datastore_id = %s", (image_set_id, datastore_id)
    ).fetchone()
    return None if row is None else image_set_from(row)


class ImageSetTables:
    db: Database
    #: every read is a network round trip: the app keeps frame lookups off its event loop
    local_reads = False

    def create_image_set(self, head: ImageSet, version: ImageSetVersion, frames: list[FrameRef]) -> None:
        with self.db.tx() as cur:
            _insert_head(cur, head)
            _insert_version(cur, version)
            _insert_frames(cur, head.id, frames)

    def get_image_set(self, datastore_id: str, image_set_id: str) -> ImageSet | None:
        with self.db.tx() as cur:
            return _head(cur, datastore_id, image_set_id)

    def get_version(self, datastore_id: str, image_set_id: str, version: int) -> ImageSetVersion | None:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT * FROM image_set_versions WHERE image_set_id = %s AND version = %s AND datastore_id = %s",
                (image_set_id, version, datastore_id),
            ).fetchone()
        return None if row is None else version_from(row)

    def list_versions(
        self, datastore_id: str, image_set_id: str, before: int | None, limit: int
    ) -> list[ImageSetVersion]:
        sql = "SELECT * FROM image_set_versions WHERE image_set_id = %s AND datastore_id = %s"
        args: list[object] = [image_set_id, datastore_id]
        if before is not None:
            sql += " AND version < %s"
            args.append(before)
        sql += " ORDER BY version DESC LIMIT %s"
        args.append(limit)
        with self.db.tx() as cur:
            return [version_from(r) for r in cur.execute(sql, args).fetchall()]

    def get_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> FrameRef | None:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT f.frame_id, f.blob_key, f.stored_ts FROM image_set_frames f"
                " JOIN image_sets s ON s.id = f.image_set_id"
                " WHERE f.image_set_id = %s AND f.frame_id = %s AND s.datastore_id = %s",
                (image_set_id, frame_id, datastore_id),
            ).fetchone()
        return None if row is None else FrameRef(row["frame_id"], row["blob_key"], row["stored_ts"])

    def get_frame_for_read(
        self, datastore_id: str, image_set_id: str, frame_id: str
    ) -> tuple[str, FrameRef | None] | None:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT s.state, f.blob_key, f.stored_ts FROM image_sets s"
                " LEFT JOIN image_set_frames f ON f.image_set_id = s.id AND f.frame_id = %s"
                " WHERE s.id = %s AND s.datastore_id = %s",
                (frame_id, image_set_id, datastore_id),
            ).fetchone()
        if row is None:
            return None
        blob_key = row["blob_key"]
        return row["state"], None if blob_key is None else FrameRef(frame_id, blob_key, row["stored_ts"])

    def list_frames(self, datastore_id: str, image_set_id: str) -> list[FrameRef]:
        with self.db.tx() as cur:
            rows = cur.execute(
                "SELECT f.frame_id, f.blob_key, f.stored_ts FROM image_set_frames f"
                " JOIN image_sets s ON s.id = f.image_set_id WHERE f.image_set_id = %s AND s.datastore_id = %s"
                " ORDER BY f.frame_id",
                (image_set_id, datastore_id),
            ).fetchall()
        return [FrameRef(r["frame_id"], r["blob_key"], r["stored_ts"]) for r in rows]

    def find_primary(self, datastore_id: str, study_uid: str, series_uid: str) -> ImageSet | None:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT * FROM image_sets WHERE datastore_id = %s AND study_uid = %s AND series_uid = %s"
                " AND is_primary = 1 AND state <> 'DELETED' ORDER BY created_at LIMIT 1",
                (datastore_id, study_uid, series_uid),
            ).fetchone()
        return None if row is None else image_set_from(row)

    def list_primary_in_study(self, datastore_id: str, study_uid: str) -> list[ImageSet]:
        with self.db.tx() as cur:
            rows = cur.execute(
                "SELECT * FROM image_sets WHERE datastore_id = %s AND study_uid = %s AND is_primary = 1"
                " AND state <> 'DELETED' ORDER BY created_at, id",
                (datastore_id, study_uid),
            ).fetchall()
        return [image_set_from(r) for r in rows]

    def count_image_sets(self, datastore_id: str) -> int:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT count(*) AS n FROM image_sets WHERE datastore_id = %s AND state <> 'DELETED'",
                (datastore_id,),
            ).fetchone()
        return 0 if row is None else int(row["n"])

    def lock_image_sets(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        now: float,
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> ImageSet | None:
        try:
            with self.db.tx() as cur:
                self._lock(cur, datastore_id, locks, now, creates)
        except _LockLost as lost:
            return lost.head
        return None

    def _lock(
        self,
        cur: Cur,
        datastore_id: str,
        locks: list[LockRequest],
        now: float,
        creates: Sequence[tuple[ImageSet, ImageSetVersion]],
    ) -> None:
        for head, version in creates:
            _insert_head(cur, head)
            _insert_version(cur, version)
        if locks:
            # take the row locks in one order (by id) so that concurrent multi-set writers cannot deadlock
            cur.execute(
                "SELECT id FROM image_sets WHERE id = ANY(%s) AND datastore_id = %s ORDER BY id FOR UPDATE",
                (sorted({lock.image_set_id for lock in locks}), datastore_id),
            )
        for lock in locks:
            new_latest = lock.new_version.version if lock.new_version else lock.expected_latest
            cur.execute(
                "UPDATE image_sets SET state = 'LOCKED', workflow_status = %s, latest_version = %s,"
                " updated_at = CASE WHEN %s THEN %s ELSE updated_at END"
                " WHERE id = %s AND datastore_id = %s AND latest_version = %s AND state = 'ACTIVE'",
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
                raise _LockLost(_head(cur, datastore_id, lock.image_set_id))
            if lock.new_version is not None:
                _insert_version(cur, lock.new_version)

    def commit_versions(self, datastore_id: str, commits: list[VersionCommit]) -> None:
        with self.db.tx() as cur:
            for commit in commits:
                self._apply_commit(cur, datastore_id, commit)

    def append_version(self, datastore_id: str, commit: VersionCommit, expected_latest: int) -> bool:
        assert commit.version is not None
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE image_sets SET latest_version = %s WHERE id = %s AND datastore_id = %s"
                " AND latest_version = %s AND state = 'ACTIVE'",
                (commit.version.version, commit.image_set_id, datastore_id, expected_latest),
            )
            if cur.rowcount != 1:
                return False
            _insert_version(cur, commit.version)
            self._apply_commit(cur, datastore_id, commit, insert_version=False)
        return True

    def _apply_commit(
        self, cur: Cur, datastore_id: str, commit: VersionCommit, insert_version: bool = True
    ) -> None:
        v = commit.version
        if v is not None and insert_version:
            cur.execute(
                "UPDATE image_set_versions SET state = %s, workflow_status = %s, updated_at = %s,"
                " deleted_at = %s, message = %s, forced = %s, is_primary = %s, metadata_key = %s"
                " WHERE image_set_id = %s AND version = %s",
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
        sets = ["state = %s", "workflow_status = %s", "updated_at = %s"]
        args: list[object] = [commit.head_state, commit.head_status, commit.updated_at]
        if commit.content_version is not None:
            sets.append("content_version = %s")
            args.append(commit.content_version)
        if commit.is_primary is not None:
            sets.append("is_primary = %s")
            args.append(int(commit.is_primary))
        if commit.deleted_at is not None:
            sets.append("deleted_at = %s")
            args.append(commit.deleted_at)
        if commit.touch:
            sets.extend(["last_accessed_at = %s", "storage_tier = 'FREQUENT_ACCESS'"])
            args.append(commit.updated_at)
        if commit.search is not None:
            for column, value in search_columns(commit.search).items():
                sets.append(f"{column} = %s")
                args.append(value)
        cur.execute(
            f"UPDATE image_sets SET {', '.join(sets)} WHERE id = %s AND datastore_id = %s",
            [*args, commit.image_set_id, datastore_id],
        )
        _insert_frames(cur, commit.image_set_id, commit.frames)
        if commit.collect:
            _collect(cur, commit.image_set_id, commit.updated_at)

    def locked_versions(self) -> list[ImageSetVersion]:
        with self.db.tx() as cur:
            rows = cur.execute("SELECT * FROM image_set_versions WHERE state = 'LOCKED'").fetchall()
        return [version_from(r) for r in rows]

    def locked_image_sets(self) -> list[ImageSet]:
        with self.db.tx() as cur:
            rows = cur.execute("SELECT * FROM image_sets WHERE state = 'LOCKED'").fetchall()
        return [image_set_from(r) for r in rows]

    def touch_image_sets(self, datastore_id: str, image_set_ids: Sequence[str], now: float) -> None:
        if not image_set_ids:
            return
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE image_sets SET last_accessed_at = %s, storage_tier = 'FREQUENT_ACCESS'"
                " WHERE id = ANY(%s) AND datastore_id = %s",
                (now, sorted(set(image_set_ids)), datastore_id),
            )

    def archive_idle(self, cutoff: float) -> int:
        with self.db.tx() as cur:
            cur.execute(
                "UPDATE image_sets SET storage_tier = 'ARCHIVE_INSTANT_ACCESS'"
                " WHERE storage_tier = 'FREQUENT_ACCESS' AND state <> 'DELETED'"
                " AND coalesce(last_accessed_at, created_at) < %s",
                (cutoff,),
            )
            return int(cur.rowcount)


class _LockLost(Exception):
    def __init__(self, head: ImageSet | None) -> None:
        super().__init__("lock lost")
        self.head = head
