"""The PostgreSQL MetadataIndex adapter (scale-out deployments): search and blob collection on a shared pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from openhi.core.records import ImageSet
from openhi.ports.index import SearchQuery
from openhi.storage.postgres.connection import Database
from openhi.storage.postgres.control import ControlTables
from openhi.storage.postgres.dicom_index import DicomIndexTables
from openhi.storage.postgres.imagesets import ImageSetTables
from openhi.storage.postgres.jobs import JobQueueTables
from openhi.storage.postgres.owners import WriteOwnerTables
from openhi.storage.sqlite.rows import image_set_from
from openhi.storage.sqlite.search import (
    build_bucket_sql,
    build_search_sql,
    extent_sql,
    keyset_pages,
    needs_extent,
    plan_buckets,
)


class PostgresIndex(ControlTables, JobQueueTables, ImageSetTables, WriteOwnerTables, DicomIndexTables):
    """``postgresql://user:password@host:5432/db?schema=NAME&pool_max=N`` (``postgres://`` too).

    ``schema`` (the argument wins over the URL) keeps every table in that schema, created if absent.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.db = Database(url, schema)

    def search_image_sets(
        self, datastore_id: str, query: SearchQuery, after: tuple[Any, str] | None, limit: int
    ) -> list[ImageSet]:
        """Keyset pages; sorting by study date reads the dated sets, then the undated ones (see build_search_sql).

        A range on one time column sorted by another is read bucket by bucket (see build_bucket_sql).
        """
        with self.db.tx() as cur:
            if query.sort_field == "study_datetime" or needs_extent(query):
                # two or more statements: read them from one snapshot
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            def extent(day_column: str) -> tuple[int, int] | None:
                sql, args = extent_sql(datastore_id, day_column, postgres=True)
                row = cur.execute(sql, args).fetchone()
                return None if row is None or row["low"] is None else (int(row["low"]), int(row["high"]))

            buckets = plan_buckets(query, extent)
            if buckets is not None and buckets.walk:
                buckets = None  # the range holds every set: the planner walks the sort column's index

            def page(page_after: tuple[Any, str] | None, size: int, nulls: bool) -> list[ImageSet]:
                if buckets is not None:
                    if not (buckets.days or buckets.blocks):
                        return []  # the range holds no live set
                    sql, named = build_bucket_sql(
                        datastore_id, query, buckets, page_after, size, nulls=nulls, postgres=True
                    )
                    return [image_set_from(r) for r in cur.execute(sql, named).fetchall()]
                sql, args = build_search_sql(datastore_id, query, page_after, size, mark="%s", nulls=nulls)
                return [image_set_from(r) for r in cur.execute(sql, args).fetchall()]

            return keyset_pages(query, after, limit, page)

    # -- blob collection
    def enqueue_gc(self, blob_keys: Sequence[str], now: float) -> None:
        if not blob_keys:
            return
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO blob_gc (blob_key, enqueued_at) SELECT k, %s::double precision FROM unnest(%s::text[]) AS k"
                " ON CONFLICT (blob_key) DO NOTHING",
                (now, list(blob_keys)),
            )

    def claim_gc(self, limit: int) -> list[str]:
        with self.db.tx() as cur:
            rows = cur.execute(
                "SELECT blob_key FROM blob_gc ORDER BY enqueued_at, blob_key LIMIT %s", (limit,)
            ).fetchall()
        return [str(r["blob_key"]) for r in rows]

    def blob_referenced(self, blob_key: str) -> bool:
        with self.db.tx() as cur:
            row = cur.execute(
                "SELECT EXISTS (SELECT 1 FROM image_set_frames WHERE blob_key = %s)"
                " OR EXISTS (SELECT 1 FROM image_set_versions v JOIN image_sets s ON s.id = v.image_set_id"
                " WHERE v.metadata_key = %s AND s.state <> 'DELETED') AS referenced",
                (blob_key, blob_key),
            ).fetchone()
        return row is not None and bool(row["referenced"])

    def forget_gc(self, blob_keys: Sequence[str]) -> None:
        if not blob_keys:
            return
        with self.db.tx() as cur:
            cur.execute("DELETE FROM blob_gc WHERE blob_key = ANY(%s)", (list(blob_keys),))

    def remove_frame_refs(self, image_set_id: str) -> list[str]:
        with self.db.tx() as cur:
            rows = cur.execute(
                "DELETE FROM image_set_frames WHERE image_set_id = %s RETURNING blob_key", (image_set_id,)
            ).fetchall()
        return sorted({str(r["blob_key"]) for r in rows})

    def close(self) -> None:
        self.db.close()
