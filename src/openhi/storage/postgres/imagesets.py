"""PostgreSQL index, data-plane half: image sets, versions, frame references, locks and blob collection."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import Cursor
from psycopg.rows import DictRow

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.ports.index import LockRequest, VersionCommit
from openhi.storage import imagesets_sql as q
from openhi.storage.imagesets_sql import FRAME_FOR_READ, Dialect
from openhi.storage.postgres.connection import Database

Cur = Cursor[DictRow]

POSTGRES = Dialect(
    "format",
    upsert_frame=(
        "INSERT INTO image_set_frames (image_set_id, frame_id, blob_key, stored_ts) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (image_set_id, frame_id)"
        " DO UPDATE SET blob_key = excluded.blob_key, stored_ts = excluded.stored_ts"
    ),
    collect=(
        "INSERT INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT blob_key, %s::double precision FROM image_set_frames WHERE image_set_id = %s"
        " ON CONFLICT (blob_key) DO NOTHING",
        "INSERT INTO blob_gc (blob_key, enqueued_at)"
        " SELECT DISTINCT metadata_key, %s::double precision FROM image_set_versions"
        " WHERE image_set_id = %s AND metadata_key IS NOT NULL"
        " ON CONFLICT (blob_key) DO NOTHING",
    ),
)
#: GetImageFrame's lookup, translated once
_FRAME_FOR_READ = q.sql(FRAME_FOR_READ, POSTGRES.paramstyle)


class ImageSetTables:
    db: Database
    #: every read is a network round trip: the app keeps frame lookups off its event loop
    local_reads = False

    def create_image_set(self, head: ImageSet, version: ImageSetVersion, frames: list[FrameRef]) -> None:
        with self.db.tx() as cur:
            q.create(cur, POSTGRES, head, version, frames)

    def get_image_set(self, datastore_id: str, image_set_id: str) -> ImageSet | None:
        with self.db.tx() as cur:
            return q.get_head(cur, POSTGRES, datastore_id, image_set_id)

    def get_version(self, datastore_id: str, image_set_id: str, version: int) -> ImageSetVersion | None:
        with self.db.tx() as cur:
            return q.get_version(cur, POSTGRES, datastore_id, image_set_id, version)

    def list_versions(
        self, datastore_id: str, image_set_id: str, before: int | None, limit: int
    ) -> list[ImageSetVersion]:
        with self.db.tx() as cur:
            return q.list_versions(cur, POSTGRES, datastore_id, image_set_id, before, limit)

    def get_frame(self, datastore_id: str, image_set_id: str, frame_id: str) -> FrameRef | None:
        with self.db.tx() as cur:
            return q.get_frame(cur, POSTGRES, datastore_id, image_set_id, frame_id)

    def get_frame_for_read(
        self, datastore_id: str, image_set_id: str, frame_id: str
    ) -> tuple[str, FrameRef | None] | None:
        with self.db.tx() as cur:
            row = cur.execute(_FRAME_FOR_READ, (frame_id, image_set_id, datastore_id)).fetchone()
        if row is None:
            return None
        blob_key = row["blob_key"]
        return row["state"], None if blob_key is None else FrameRef(frame_id, blob_key, row["stored_ts"])

    def list_frames(self, datastore_id: str, image_set_id: str) -> list[FrameRef]:
        with self.db.tx() as cur:
            return q.list_frames(cur, POSTGRES, datastore_id, image_set_id)

    def find_primary(self, datastore_id: str, study_uid: str, series_uid: str) -> ImageSet | None:
        with self.db.tx() as cur:
            return q.find_primary(cur, POSTGRES, datastore_id, study_uid, series_uid)

    def list_primary_in_study(self, datastore_id: str, study_uid: str) -> list[ImageSet]:
        with self.db.tx() as cur:
            return q.list_primary_in_study(cur, POSTGRES, datastore_id, study_uid)

    def count_image_sets(self, datastore_id: str) -> int:
        with self.db.tx() as cur:
            return q.count_image_sets(cur, POSTGRES, datastore_id)

    def lock_image_sets(
        self,
        datastore_id: str,
        locks: list[LockRequest],
        now: float,
        creates: Sequence[tuple[ImageSet, ImageSetVersion]] = (),
    ) -> ImageSet | None:
        try:
            with self.db.tx() as cur:
                for head, version in creates:
                    q.create(cur, POSTGRES, head, version)
                if locks:
                    # take the row locks in one order (by id) so that concurrent multi-set writers cannot deadlock
                    cur.execute(
                        "SELECT id FROM image_sets WHERE id = ANY(%s) AND datastore_id = %s ORDER BY id FOR UPDATE",
                        (sorted({lock.image_set_id for lock in locks}), datastore_id),
                    )
                q.take_locks(cur, POSTGRES, datastore_id, locks, now)
        except q.LockLost as lost:
            return lost.head
        return None

    def commit_versions(self, datastore_id: str, commits: list[VersionCommit]) -> None:
        with self.db.tx() as cur:
            for commit in commits:
                q.apply_commit(cur, POSTGRES, datastore_id, commit)

    def append_version(self, datastore_id: str, commit: VersionCommit, expected_latest: int) -> bool:
        with self.db.tx() as cur:
            return q.append_version(cur, POSTGRES, datastore_id, commit, expected_latest)

    def locked_versions(self) -> list[ImageSetVersion]:
        with self.db.tx() as cur:
            return q.locked_versions(cur)

    def locked_image_sets(self) -> list[ImageSet]:
        with self.db.tx() as cur:
            return q.locked_image_sets(cur)

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
            return q.archive_idle(cur, POSTGRES, cutoff)
