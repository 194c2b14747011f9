"""PostgreSQL index, write owners: process heartbeats and which process finishes each LOCKED write."""

from __future__ import annotations

from collections.abc import Sequence

from openhi.core.records import ImageSet, ImageSetVersion
from openhi.storage.postgres.connection import Database
from openhi.storage.sqlite.owners import forget_sql, orphaned_image_sets_sql, orphaned_versions_sql
from openhi.storage.sqlite.rows import image_set_from, version_from

_NOW, _BEFORE = "%(now)s::double precision", "%(before)s::double precision"


class WriteOwnerTables:
    db: Database

    def beat_write_owner(self, owner: str, now: float, stale_at: float) -> None:
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO write_owners (owner, heartbeat, stale_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (owner) DO UPDATE SET heartbeat = excluded.heartbeat, stale_at = excluded.stale_at",
                (owner, now, stale_at),
            )

    def record_write_locks(self, owner: str, keys: Sequence[tuple[str, int]], now: float) -> None:
        if not keys:
            return
        with self.db.tx() as cur:
            cur.executemany(
                "INSERT INTO write_locks (image_set_id, version, owner, locked_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (image_set_id, version, owner) DO UPDATE SET locked_at = excluded.locked_at",
                [(image_set_id, version, owner, now) for image_set_id, version in keys],
            )

    def release_write_locks(self, owner: str, keys: Sequence[tuple[str, int]]) -> None:
        if not keys:
            return
        with self.db.tx() as cur:
            cur.executemany(
                "DELETE FROM write_locks WHERE image_set_id = %s AND version = %s AND owner = %s",
                [(image_set_id, version, owner) for image_set_id, version in keys],
            )

    def orphaned_versions(self, now: float, unowned_before: float) -> list[ImageSetVersion]:
        with self.db.tx() as cur:
            rows = cur.execute(
                orphaned_versions_sql(_NOW, _BEFORE), {"now": now, "before": unowned_before}
            ).fetchall()
        return [version_from(r) for r in rows]

    def orphaned_image_sets(self, now: float, unowned_before: float) -> list[ImageSet]:
        with self.db.tx() as cur:
            rows = cur.execute(
                orphaned_image_sets_sql(_NOW, _BEFORE), {"now": now, "before": unowned_before}
            ).fetchall()
        return [image_set_from(r) for r in rows]

    def forget_dead_write_owners(self, now: float, unowned_before: float) -> None:
        with self.db.tx() as cur:
            for statement in forget_sql(_NOW, _BEFORE):
                cur.execute(statement, {"now": now, "before": unowned_before})
