"""SQLite index: SearchImageSets as keyset queries over the image_sets search columns."""

from __future__ import annotations

import sqlite3
from typing import Any

from openhi.core.records import ImageSet
from openhi.ports.index import SearchQuery
from openhi.storage.sqlite.connection import Database
from openhi.storage.sqlite.rows import image_set_from

_COLUMNS = {
    "patient_id",
    "accession_number",
    "study_id",
    "study_uid",
    "series_uid",
    "is_primary",
    "created_at",
    "updated_at",
    "study_datetime",
}
_SORTS = {"updated_at", "created_at", "study_datetime"}
_SELECTIVE = {"patient_id", "accession_number", "study_id", "study_uid", "series_uid"}
#: a range on another column than the sort with at least this many rows is read in sort order instead
WIDE_RANGE = 20_000


def build_search_sql(
    datastore_id: str,
    query: SearchQuery,
    after: tuple[Any, str] | None,
    limit: int,
    mark: str = "?",
    *,
    nulls: bool = False,
    unindexed: frozenset[str] = frozenset(),
) -> tuple[str, list[Any]]:
    """The keyset query for one page; shared by the SQL adapters (``mark`` is the placeholder).

    Sorting by ``study_datetime`` reads two ranges, each served by the same index: sets with a study
    date (``nulls=False``), then sets without one (``nulls=True``, ordered by id). The sets without a
    study date come last in both orders, so a sort never drops a set. Columns in ``unindexed`` are
    compared as ``+column`` so that the planner walks the sort index instead of their own.
    """
    if query.sort_field not in _SORTS:
        raise ValueError(f"unsupported sort field {query.sort_field}")
    where = [f"datastore_id = {mark}", "state != 'DELETED'"]
    args: list[Any] = [datastore_id]
    for f in query.filters:
        if f.attribute not in _COLUMNS:
            raise ValueError(f"unsupported filter attribute {f.attribute}")
        if f.operator == "EQUAL":
            where.append(f"{f.attribute} = {mark}")
            args.append(f.values[0])
        elif f.operator == "BETWEEN":
            column = f"+{f.attribute}" if f.attribute in unindexed else f.attribute
            where.append(f"{column} BETWEEN {mark} AND {mark}")
            args.extend(f.values[:2])
        else:
            raise ValueError(f"unsupported operator {f.operator}")
    sort = query.sort_field
    order = "DESC" if query.sort_order == "DESC" else "ASC"
    op = "<" if order == "DESC" else ">"
    if nulls:
        where.append(f"{sort} IS NULL")
        if after is not None and after[0] is None:
            where.append(f"id {op} {mark}")
            args.append(after[1])
        order_by = f"id {order}"
    else:
        if sort == "study_datetime":
            where.append("study_datetime IS NOT NULL")
        if after is not None:
            where.append(f"({sort}, id) {op} ({mark}, {mark})")
            args.extend(after)
        order_by = f"{sort} {order}, id {order}"
    sql = f"SELECT * FROM image_sets WHERE {' AND '.join(where)} ORDER BY {order_by} LIMIT {mark}"
    args.append(limit)
    return sql, args


def wide_ranges(query: SearchQuery) -> list[int]:
    """Indexes of the range filters worth probing: on another column than the sort, with no selective
    EQUAL filter beside them (those are served best by their own index)."""
    if any(f.attribute in _SELECTIVE for f in query.filters):
        return []
    return [
        i
        for i, f in enumerate(query.filters)
        if f.operator == "BETWEEN" and f.attribute != query.sort_field and f.attribute in _COLUMNS
    ]


def choose_unindexed(conn: sqlite3.Connection, datastore_id: str, query: SearchQuery) -> frozenset[str]:
    """The range columns to read in sort order rather than by their own index (see ``WIDE_RANGE``)."""
    return frozenset(
        query.filters[i].attribute
        for i in wide_ranges(query)
        if _range_rows(conn, datastore_id, query.filters[i].attribute, query.filters[i].values) >= WIDE_RANGE
    )


class SearchTables:
    db: Database

    def search_image_sets(
        self, datastore_id: str, query: SearchQuery, after: tuple[Any, str] | None, limit: int
    ) -> list[ImageSet]:
        rows: list[ImageSet] = []
        with self.db.read() as conn:
            unindexed = choose_unindexed(conn, datastore_id, query)
            if after is None or after[0] is not None:
                sql, args = build_search_sql(datastore_id, query, after, limit, unindexed=unindexed)
                rows = [image_set_from(r) for r in conn.execute(sql, args)]
            if query.sort_field == "study_datetime" and len(rows) < limit:
                null_after = after if after is not None and after[0] is None else None
                sql, args = build_search_sql(
                    datastore_id, query, null_after, limit - len(rows), nulls=True, unindexed=unindexed
                )
                rows += [image_set_from(r) for r in conn.execute(sql, args)]
        return rows


def _range_rows(conn: sqlite3.Connection, datastore_id: str, column: str, bounds: list[Any]) -> int:
    """How many live sets fall in a range, counted up to WIDE_RANGE (an index range read)."""
    row = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM image_sets WHERE datastore_id = ? AND state != 'DELETED'"
        f" AND {column} BETWEEN ? AND ? LIMIT ?)",
        (datastore_id, bounds[0], bounds[1], WIDE_RANGE),
    ).fetchone()
    return int(row[0])
