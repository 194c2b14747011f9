"""SQLite index: SearchImageSets as keyset queries over the image_sets search columns."""

from __future__ import annotations

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


def build_search_sql(
    datastore_id: str, query: SearchQuery, after: tuple[Any, str] | None, limit: int, mark: str = "?"
) -> tuple[str, list[Any]]:
    """The keyset query for one page; shared by the SQL adapters (``mark`` is the placeholder)."""
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
        else:
            where.append(f"{f.attribute} BETWEEN {mark} AND {mark}")
            args.extend(f.values[:2])
    sort = query.sort_field
    desc = query.sort_order == "DESC"
    if sort == "study_datetime":
        where.append("study_datetime IS NOT NULL")
    if after is not None:
        op = "<" if desc else ">"
        where.append(f"({sort}, id) {op} ({mark}, {mark})")
        args.extend(after)
    order = "DESC" if desc else "ASC"
    sql = f"SELECT * FROM image_sets WHERE {' AND '.join(where)} ORDER BY {sort} {order}, id {order} LIMIT {mark}"
    args.append(limit)
    return sql, args


class SearchTables:
    db: Database

    def search_image_sets(
        self, datastore_id: str, query: SearchQuery, after: tuple[Any, str] | None, limit: int
    ) -> list[ImageSet]:
        sql, args = build_search_sql(datastore_id, query, after, limit)
        return [image_set_from(r) for r in self.db.conn.execute(sql, args)]
