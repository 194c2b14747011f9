"""SQLite index, data-plane half: image sets, versions, frame references, locks and blob collection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.ports.index import LockRequest, VersionCommit
from openhi.storage.sqlite.connection import Database
from openhi.storage.sqlite.rows import image_set_from, search_columns, version_from

_VERSION_COLUMNS = (
    "image_set_id, version, datastore_id, state, workflow_status, created_at, updated_at, deleted_at,"
    " message, forced, is_primary, metadata_key"
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


def _insert_frames(conn: sqlite3.Connection, image_set_id: str, frames: Sequence[FrameRef]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO image_set_frames (image_set_id, frame_id, blob_key, stored_ts) VALUES (?, ?, ?, ?)",
        [(image_set_id, f.frame_id, f.blob_key, f.stored_ts) for f in frames],
    )


def _insert_head(conn: sqlite3.Connection, head: ImageSet) -> None:
    cols = search_columns(head.search)
    names = ", ".join(cols)
    marks = ", ".join("?" * len(cols))
    conn.execute(
        "INSERT INTO image_sets (id, datastore_id, latest_version, content_version, state, workflow_status,"
        " is_primary, created_at, updated_at, deleted_at, last_accessed_at, storage_tier, "
        f"{names}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {marks})",
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


def _collect(conn: sqlite3.Connection, image_set_id: str, now: float) -> None:
    """Drop a deleted set's frame references; queue its frame and metadata blobs for collection."""
    conn.execute(
        "INSERT OR IGNORE INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT blob_key, ? FROM image_set_frames WHERE image_set_id = ?",
        (now, image_set_id),
    )
    conn.execute(
        "INSERT OR IGNORE INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT metadata_key, ? FROM image_set_versions"
        " WHERE image_set_id = ? AND metadata_key IS NOT NULL",
        (now, image_set_id),
    )
    conn.execute("DELETE FROM image_set_frames WHERE image_set_id = ?", (image_set_id,))


class ImageSetTables:
    db: Database
    #: reads are in-process and short (a local SQLite file): the app may run frame lookups on its event loop
    local_reads = True

    def create_image_set(self, head: ImageSet, version: ImageSetVersion, frames: list[FrameRef]) -> None:
        with self.db.write() as conn:
            _insert_head(conn, head)
            conn.execute(
                f"INSERT INTO image_set_versions ({_VERSION_COLUMNS}) VALUES ({','.join('?' * 12)})",
                _version_args(version),
            )
            _insert_frames(conn, head.id, frames)

    def get_image_set(self, datastore_id: str, image_set_id: str) -> ImageSet | None:
        row = self.db.conn.execute(
            "SELECT * FROM image_sets WHERE id = ? AND datastore_id = ?", (image_set_id, datastore_id)
        ).fetchone()
        return None if row is None else image_set_from(row)

    def get_version(self, datastore_id: str, image_set_id: str, version: int) -> ImageSetVersion | None:
        row = self.db.conn.execute(
            "SELECT * FROM image_set_versions WHERE image_set_id = ? AND version = ? AND datastore_id = ?",
            (image_set_id, version, datastore_id),
        ).fetchone()
        return None if row is None else version_from(row)

    def list_versions(
        self, datastore_id: str, image_set_id: str, before: int | None, limit: int
    ) -> list[ImageSetVersion]:
        sql = "SELECT * FROM image_set_versions WHERE image_set_id = ? AND datastore_id = ?"
        args: list[object] = [image_set_id, datastore_id]
        if before is not None:
            sql += " AND version < ?"
            args.append(before)
        sql += " ORDER BY version DESC LIMIT ?"
        args.append(limit)
        return [version_from(r) for r in self.db.conn.execute(sql, args)]

    def get_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> FrameRef | None:
        row = self.db.conn.execute(
            "SELECT f.frame_id, f.blob_key, f.stored_ts FROM image_set_frames f"
            " JOIN image_sets s ON s.id = f.image_set_id"
            " WHERE f.image_set_id = ? AND f.frame_id = ? AND s.datastore_id = ?",
            (image_set_id, frame_id, datastore_id),
        ).fetchone()
        return None if row is None else FrameRef(row[0], row[1], row[2])

    def get_frame_for_read(
        self, datastore_id: str, image_set_id: str, frame_id: str
    ) -> tuple[str, FrameRef | None] | None:
        row = self.db.conn.execute(
            "SELECT s.state, f.blob_key, f.stored_ts FROM image_sets s"
            " LEFT JOIN image_set_frames f ON f.image_set_id = s.id AND f.frame_id = ?"
            " WHERE s.id = ? AND s.datastore_id = ?",
            (frame_id, image_set_id, datastore_id),
        ).fetchone()
        if row is None:
            return None
        return row[0], None if row[1] is None else FrameRef(frame_id, row[1], row[2])

    def list_frames(self, datastore_id: str, image_set_id: str) -> list[FrameRef]:
        rows = self.db.conn.execute(
            "SELECT f.frame_id, f.blob_key, f.stored_ts FROM image_set_frames f"
            " JOIN image_sets s ON s.id = f.image_set_id WHERE f.image_set_id = ? AND s.datastore_id = ?"
            " ORDER BY f.frame_id",
            (image_set_id, datastore_id),
        )
        return [FrameRef(r[0], r[1], r[2]) for r in rows]

    def find_primary(self, datastore_id: str, study_uid: str, series_uid: str) -> ImageSet | None:
        row = self.db.conn.execute(
            "SELECT * FROM image_sets WHERE datastore_id = ? AND study_uid = ? AND series_uid = ?"
            " AND is_primary = 1 AND state != 'DELETED' ORDER BY created_at LIMIT 1",
            (datastore_id, study_uid, series_uid),
        ).fetchone()
        return None if row is None else image_set_from(row)

    def list_primary_in_study(self, datastore_id: str, study_uid: str) -> list[ImageSet]:
        rows = self.db.conn.execute(
            "SELECT * FROM image_sets WHERE datastore_id = ? AND study_uid = ? AND is_primary = 1"
            " AND state != 'DELETED' ORDER BY created_at, id",
            (datastore_id, study_uid),
        )
        return [image_set_from(r) for r in rows]

    def count_image_sets(self, datastore_id: str) -> int:
        row = self.db.conn.execute(
            "SELECT count(*) FROM image_sets WHERE datastore_id = ? AND state != 'DELETED'", (datastore_id,)
        ).fetchone()
        return int(row[0])

    def lock_image_sets(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        now: float,
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> ImageSet | None:
        try:
            self._lock(datastore_id, locks, now, creates)
        except _LockLost as lost:
            return lost.head
        return None

    def _lock(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        now: float,
        creates: Sequence[tuple[ImageSet, ImageSetVersion]],
    ) -> None:
        with self.db.write() as conn:
            for head, version in creates:
                _insert_head(conn, head)
                conn.execute(
                    f"INSERT INTO image_set_versions ({_VERSION_COLUMNS}) VALUES ({','.join('?' * 12)})",
                    _version_args(version),
                )
            for lock in locks:
                new_latest = lock.new_version.version if lock.new_version else lock.expected_latest
                cur = conn.execute(
                    "UPDATE image_sets SET state = 'LOCKED', workflow_status = ?, latest_version = ?,"
                    " updated_at = CASE WHEN ? THEN ? ELSE updated_at END"
                    " WHERE id = ? AND datastore_id = ? AND latest_version = ? AND state = 'ACTIVE'",
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
                    row = conn.execute(
                        "SELECT * FROM image_sets WHERE id = ? AND datastore_id = ?",
                        (lock.image_set_id, datastore_id),
                    ).fetchone()
                    raise _LockLost(None if row is None else image_set_from(row))
                if lock.new_version is not None:
                    conn.execute(
                        f"INSERT INTO image_set_versions ({_VERSION_COLUMNS}) VALUES ({','.join('?' * 12)})",
                        _version_args(lock.new_version),
                    )

    def commit_versions(self, datastore_id: str, commits: list[VersionCommit]) -> None:
        with self.db.write() as conn:
            for commit in commits:
                self._apply_commit(conn, datastore_id, commit)

    def append_version(self, datastore_id: str, commit: VersionCommit, expected_latest: int) -> bool:
        assert commit.version is not None
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE image_sets SET latest_version = ? WHERE id = ? AND datastore_id = ?"
                " AND latest_version = ? AND state = 'ACTIVE'",
                (commit.version.version, commit.image_set_id, datastore_id, expected_latest),
            )
            if cur.rowcount != 1:
                return False
            conn.execute(
                f"INSERT INTO image_set_versions ({_VERSION_COLUMNS}) VALUES ({','.join('?' * 12)})",
                _version_args(commit.version),
            )
            self._apply_commit(conn, datastore_id, commit, insert_version=False)
        return True

    def _apply_commit(
        self, conn: sqlite3.Connection, datastore_id: str, commit: VersionCommit, insert_version: bool = True
    ) -> None:
        v = commit.version
        if v is not None and insert_version:
            conn.execute(
                "UPDATE image_set_versions SET state = ?, workflow_status = ?, updated_at = ?, deleted_at = ?,"
                " message = ?, forced = ?, is_primary = ?, metadata_key = ?"
                " WHERE image_set_id = ? AND version = ?",
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
        conn.execute(
            f"UPDATE image_sets SET {', '.join(sets)} WHERE id = ? AND datastore_id = ?",
            [*args, commit.image_set_id, datastore_id],
        )
        _insert_frames(conn, commit.image_set_id, commit.frames)
        if commit.collect:
            _collect(conn, commit.image_set_id, commit.updated_at)

    def locked_versions(self) -> list[ImageSetVersion]:
        rows = self.db.conn.execute("SELECT * FROM image_set_versions WHERE state = 'LOCKED'")
        return [version_from(r) for r in rows]

    def locked_image_sets(self) -> list[ImageSet]:
        rows = self.db.conn.execute("SELECT * FROM image_sets WHERE state = 'LOCKED'")
        return [image_set_from(r) for r in rows]

    def touch_image_sets(self, datastore_id: str, image_set_ids: Sequence[str], now: float) -> None:
        with self.db.write() as conn:
            conn.executemany(
                "UPDATE image_sets SET last_accessed_at = ?, storage_tier = 'FREQUENT_ACCESS'"
                " WHERE id = ? AND datastore_id = ?",
                [(now, i, datastore_id) for i in image_set_ids],
            )

    def archive_idle(self, cutoff: float) -> int:
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE image_sets SET storage_tier = 'ARCHIVE_INSTANT_ACCESS'"
                " WHERE storage_tier = 'FREQUENT_ACCESS' AND state != 'DELETED'"
                " AND coalesce(last_accessed_at, created_at) < ?",
                (cutoff,),
            )
            return int(cur.rowcount)

    # -- blob collection
    def enqueue_gc(self, blob_keys: Sequence[str], now: float) -> None:
        with self.db.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO blob_gc (blob_key, enqueued_at) VALUES (?, ?)",
                [(k, now) for k in blob_keys],
            )

    def claim_gc(self, limit: int) -> list[str]:
        rows = self.db.conn.execute("SELECT blob_key FROM blob_gc ORDER BY enqueued_at LIMIT ?", (limit,))
        return [str(r[0]) for r in rows]

    def blob_referenced(self, blob_key: str) -> bool:
        row = self.db.conn.execute(
            "SELECT 1 FROM image_set_frames WHERE blob_key = ?"
            " UNION ALL SELECT 1 FROM image_set_versions v JOIN image_sets s ON s.id = v.image_set_id"
            " WHERE v.metadata_key = ? AND s.state != 'DELETED' LIMIT 1",
            (blob_key, blob_key),
        ).fetchone()
        return row is not None

    def forget_gc(self, blob_keys: Sequence[str]) -> None:
        with self.db.write() as conn:
            conn.executemany("DELETE FROM blob_gc WHERE blob_key = ?", [(k,) for k in blob_keys])

    def remove_frame_refs(self, image_set_id: str) -> list[str]:
        with self.db.write() as conn:
            rows = conn.execute(
                "SELECT DISTINCT blob_key FROM image_set_frames WHERE image_set_id = ?", (image_set_id,)
            ).fetchall()
            conn.execute("DELETE FROM image_set_frames WHERE image_set_id = ?", (image_set_id,))
            return [str(r[0]) for r in rows]


class _LockLost(Exception):
    def __init__(self, head: ImageSet | None) -> None:
        super().__init__("lock lost")
        self.head = head
