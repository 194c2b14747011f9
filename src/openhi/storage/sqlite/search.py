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
    datastore_id: str,
    query: SearchQuery,
    after: tuple[Any, str] | None,
    limit: int,
    mark: str = "?",
    *,
    nulls: bool = False,
) -> tuple[str, list[Any]]:
    """The keyset query for one page; shared by the SQL adapters (``mark`` is the placeholder).

    Sorting by ``study_datetime`` reads two ranges, each served by the same index: sets with a study
    date (``nulls=False``), then sets without one (``nulls=True``, ordered by id). The sets without a
    study date come last in both orders, so a sort never drops a set.
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
            where.append(f"{f.attribute} BETWEEN {mark} AND {mark}")
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


class SearchTables:
    db: Database

    def search_image_sets(
        self, datastore_id: str, query: SearchQuery, after: tuple[Any, str] | None, limit: int
    ) -> list[ImageSet]:
        rows: list[ImageSet] = []
        with self.db.read() as conn:
            if after is None or after[0] is not None:
                sql, args = build_search_sql(datastore_id, query, after, limit)
                rows = [image_set_from(r) for r in conn.execute(sql, args)]
            if query.sort_field == "study_datetime" and len(rows) < limit:
                null_after = after if after is not None and after[0] is None else None
                sql, args = build_search_sql(datastore_id, query, null_after, limit - len(rows), nulls=True)
                rows += [image_set_from(r) for r in conn.execute(sql, args)]
        return rows
