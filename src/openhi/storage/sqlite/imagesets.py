"""SQLite index, data-plane half: image sets, versions, frame references, locks and blob collection."""

from __future__ import annotations

from collections.abc import Sequence

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.ports.index import LockRequest, VersionCommit
from openhi.storage import imagesets_sql as q
from openhi.storage.imagesets_sql import FRAME_FOR_READ, Dialect
from openhi.storage.sqlite.connection import Database

SQLITE = Dialect(
    "qmark",
    upsert_frame=(
        "INSERT OR REPLACE INTO image_set_frames (image_set_id, frame_id, blob_key, stored_ts) VALUES (?, ?, ?, ?)"
    ),
    collect=(
        "INSERT OR IGNORE INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT blob_key, ? FROM image_set_frames WHERE image_set_id = ?",
        "INSERT OR IGNORE INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT metadata_key, ? FROM image_set_versions"
        " WHERE image_set_id = ? AND metadata_key IS NOT NULL",
    ),
)


class ImageSetTables:
    db: Database
    #: reads are in-process and short (a local SQLite file): the app may run frame lookups on its event loop
    local_reads = True

    def create_image_set(self, head: ImageSet, version: ImageSetVersion, frames: list[FrameRef]) -> None:
        with self.db.write() as conn:
            q.create(conn, SQLITE, head, version, frames)

    def get_image_set(self, datastore_id: str, image_set_id: str) -> ImageSet | None:
        return q.get_head(self.db.conn, SQLITE, datastore_id, image_set_id)

    def get_version(self, datastore_id: str, image_set_id: str, version: int) -> ImageSetVersion | None:
        return q.get_version(self.db.conn, SQLITE, datastore_id, image_set_id, version)

    def list_versions(
        self, datastore_id: str, image_set_id: str, before: int | None, limit: int
    ) -> list[ImageSetVersion]:
        return q.list_versions(self.db.conn, SQLITE, datastore_id, image_set_id, before, limit)

    def get_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> FrameRef | None:
        return q.get_frame(self.db.conn, SQLITE, datastore_id, image_set_id, frame_id)

    def get_frame_for_read(
        self, datastore_id: str, image_set_id: str, frame_id: str
    ) -> tuple[str, FrameRef | None] | None:
        # the hot path (GetImageFrame): the shared statement as is (qmark), columns by position
        row = self.db.conn.execute(FRAME_FOR_READ, (frame_id, image_set_id, datastore_id)).fetchone()
        if row is None:
            return None
        return row[0], None if row[1] is None else FrameRef(frame_id, row[1], row[2])

    def list_frames(self, datastore_id: str, image_set_id: str) -> list[FrameRef]:
        return q.list_frames(self.db.conn, SQLITE, datastore_id, image_set_id)

    def find_primary(self, datastore_id: str, study_uid: str, series_uid: str) -> ImageSet | None:
        return q.find_primary(self.db.conn, SQLITE, datastore_id, study_uid, series_uid)

    def list_primary_in_study(self, datastore_id: str, study_uid: str) -> list[ImageSet]:
        return q.list_primary_in_study(self.db.conn, SQLITE, datastore_id, study_uid)

    def count_image_sets(self, datastore_id: str) -> int:
        return q.count_image_sets(self.db.conn, SQLITE, datastore_id)

    def lock_image_sets(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        now: float,
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> ImageSet | None:
        try:
            with self.db.write() as conn:
                for head, version in creates:
                    q.create(conn, SQLITE, head, version)
                q.take_locks(conn, SQLITE, datastore_id, locks, now)
        except q.LockLost as lost:
            return lost.head
        return None

    def commit_versions(self, datastore_id: str, commits: list[VersionCommit]) -> None:
        with self.db.write() as conn:
            for commit in commits:
                q.apply_commit(conn, SQLITE, datastore_id, commit)

    def append_version(self, datastore_id: str, commit: VersionCommit, expected_latest: int) -> bool:
        with self.db.write() as conn:
            return q.append_version(conn, SQLITE, datastore_id, commit, expected_latest)

    def locked_versions(self) -> list[ImageSetVersion]:
        return q.locked_versions(self.db.conn)

    def locked_image_sets(self) -> list[ImageSet]:
        return q.locked_image_sets(self.db.conn)

    def touch_image_sets(self, datastore_id: str, image_set_ids: Sequence[str], now: float) -> None:
        with self.db.write() as conn:
            conn.executemany(
                "UPDATE image_sets SET last_accessed_at = ?, storage_tier = 'FREQUENT_ACCESS'"
                " WHERE id = ? AND datastore_id = ?",
                [(now, i, datastore_id) for i in image_set_ids],
            )

    def archive_idle(self, cutoff: float) -> int:
        with self.db.write() as conn:
            return q.archive_idle(conn, SQLITE, cutoff)

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
