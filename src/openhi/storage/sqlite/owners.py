"""SQLite index, write owners: process heartbeats and which process finishes each LOCKED write."""

from __future__ import annotations

from collections.abc import Sequence

from openhi.core.records import ImageSet, ImageSetVersion
from openhi.storage.sqlite.connection import Database
from openhi.storage.sqlite.rows import image_set_from, version_from


def orphan_sql(image_set_id: str, version: str, locked_at: str, now: str, before: str) -> str:
    """The condition "no live owner finishes the lock on (``image_set_id``, ``version``)": every noted owner
    is registered and dead at ``now``, or no registered owner is noted and it was locked before ``before``
    (``locked_at`` is the lock time when no note gives one). Shared with the PostgreSQL adapter."""
    key = f"l.image_set_id = {image_set_id} AND l.version = {version}"
    notes = f"FROM write_locks l JOIN write_owners o ON o.owner = l.owner WHERE {key}"
    return (
        f"NOT EXISTS (SELECT 1 {notes} AND o.stale_at >= {now})"
        f" AND (EXISTS (SELECT 1 {notes})"
        f" OR coalesce((SELECT max(l.locked_at) FROM write_locks l WHERE {key}), {locked_at}) < {before})"
    )


def orphaned_versions_sql(now: str, before: str) -> str:
    orphan = orphan_sql("v.image_set_id", "v.version", "v.updated_at", now, before)
    return f"SELECT v.* FROM image_set_versions v WHERE v.state = 'LOCKED' AND {orphan}"


def orphaned_image_sets_sql(now: str, before: str) -> str:
    orphan = orphan_sql("s.id", "s.latest_version", "s.updated_at", now, before)
    return (
        "SELECT s.* FROM image_sets s WHERE s.state = 'LOCKED' AND NOT EXISTS (SELECT 1 FROM image_set_versions v"
        " WHERE v.image_set_id = s.id AND v.version = s.latest_version AND v.state = 'LOCKED')"
        f" AND {orphan}"
    )


def forget_sql(now: str, before: str) -> list[str]:
    return [
        f"DELETE FROM write_locks WHERE locked_at < {before} AND NOT EXISTS (SELECT 1 FROM write_owners o"
        f" WHERE o.owner = write_locks.owner AND o.stale_at >= {now})"
        " AND NOT EXISTS (SELECT 1 FROM image_set_versions v WHERE v.image_set_id = write_locks.image_set_id"
        " AND v.version = write_locks.version AND v.state = 'LOCKED')"
        " AND NOT EXISTS (SELECT 1 FROM image_sets s WHERE s.id = write_locks.image_set_id"
        " AND s.latest_version = write_locks.version AND s.state = 'LOCKED')",
        f"DELETE FROM write_owners WHERE stale_at < {now}"
        " AND NOT EXISTS (SELECT 1 FROM write_locks l WHERE l.owner = write_owners.owner)",
    ]


class WriteOwnerTables:
    db: Database

    def beat_write_owner(self, owner: str, now: float, stale_at: float) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO write_owners (owner, heartbeat, stale_at) VALUES (?, ?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET heartbeat = excluded.heartbeat, stale_at = excluded.stale_at",
                (owner, now, stale_at),
            )

    def record_write_locks(self, owner: str, keys: Sequence[tuple[str, int]], now: float) -> None:
        if not keys:
            return
        with self.db.write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO write_locks (image_set_id, version, owner, locked_at) VALUES (?, ?, ?, ?)",
                [(image_set_id, version, owner, now) for image_set_id, version in keys],
            )

    def release_write_locks(self, owner: str, keys: Sequence[tuple[str, int]]) -> None:
        if not keys:
            return
        with self.db.write() as conn:
            conn.executemany(
                "DELETE FROM write_locks WHERE image_set_id = ? AND version = ? AND owner = ?",
                [(image_set_id, version, owner) for image_set_id, version in keys],
            )

    def orphaned_versions(self, now: float, unowned_before: float) -> list[ImageSetVersion]:
        with self.db.read() as conn:
            rows = conn.execute(
                orphaned_versions_sql(":now", ":before"), {"now": now, "before": unowned_before}
            ).fetchall()
        return [version_from(r) for r in rows]

    def orphaned_image_sets(self, now: float, unowned_before: float) -> list[ImageSet]:
        with self.db.read() as conn:
            rows = conn.execute(
                orphaned_image_sets_sql(":now", ":before"), {"now": now, "before": unowned_before}
            ).fetchall()
        return [image_set_from(r) for r in rows]

    def forget_dead_write_owners(self, now: float, unowned_before: float) -> None:
        with self.db.write() as conn:
            for statement in forget_sql(":now", ":before"):
                conn.execute(statement, {"now": now, "before": unowned_before})
