"""SQLite index: SearchImageSets as keyset queries over the image_sets search columns."""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
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


def page_conditions(
    datastore_id: str,
    query: SearchQuery,
    after: tuple[Any, str] | None,
    param: Callable[[str, Any], str],
    *,
    nulls: bool = False,
    unindexed: frozenset[str] = frozenset(),
    skip: int | None = None,
) -> tuple[list[str], str]:
    """The WHERE conditions (datastore, live sets, filters, keyset cursor) and ORDER BY of one page.

    ``param(name, value)`` records a parameter and returns its placeholder, so positional and named
    styles share this; ``skip`` is the index of a filter the caller applies itself.
    """
    if query.sort_field not in _SORTS:
        raise ValueError(f"unsupported sort field {query.sort_field}")
    where = [f"datastore_id = {param('ds', datastore_id)}", "state != 'DELETED'"]
    for n, f in enumerate(query.filters):
        if f.attribute not in _COLUMNS:
            raise ValueError(f"unsupported filter attribute {f.attribute}")
        if n == skip:
            continue
        if f.operator == "EQUAL":
            where.append(f"{f.attribute} = {param(f'f{n}', f.values[0])}")
        elif f.operator == "BETWEEN":
            column = f"+{f.attribute}" if f.attribute in unindexed else f.attribute
            low, high = param(f"f{n}lo", f.values[0]), param(f"f{n}hi", f.values[1])
            where.append(f"{column} BETWEEN {low} AND {high}")
        else:
            raise ValueError(f"unsupported operator {f.operator}")
    sort = query.sort_field
    order = "DESC" if query.sort_order == "DESC" else "ASC"
    op = "<" if order == "DESC" else ">"
    if nulls:
        where.append(f"{sort} IS NULL")
        if after is not None and after[0] is None:
            where.append(f"id {op} {param('after_id', after[1])}")
        return where, f"id {order}"
    if sort == "study_datetime":
        where.append("study_datetime IS NOT NULL")
    if after is not None:
        value, ident = param("after_value", after[0]), param("after_id", after[1])
        where.append(f"({sort}, id) {op} ({value}, {ident})")
    return where, f"{sort} {order}, id {order}"


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
    args: list[Any] = []

    def param(_name: str, value: Any) -> str:
        args.append(value)
        return mark

    where, order_by = page_conditions(datastore_id, query, after, param, nulls=nulls, unindexed=unindexed)
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


# -- ranges on one time column sorted by another: day and block buckets
#
# A range on createdAt sorted by updatedAt (or any such pair of createdAt, updatedAt and the study date)
# is neither read well by its own index (every set in the range is read and sorted) nor by the sort
# index (when the two columns are correlated, the walk passes every newer set first). Each time column
# therefore has two buckets, a day and a block of BLOCK days (generated columns in PostgreSQL, index
# expressions in SQLite), and every (bucket, sort column) pair an index
# ``(datastore_id, bucket, sort column, id, …)`` on live sets. A range is split
# into days at its ends and whole blocks inside; each bucket gives its first ``limit`` sets in sort
# order (one index range read), and the page is the first ``limit`` of those. The work depends on the
# number of buckets (at most MAX_BRANCHES) and the page size, not on the number of image sets.

#: the day and block of each time column (PostgreSQL column names; SQLite: SQLITE_BUCKETS)
BUCKETS: dict[str, tuple[str, str]] = {
    "created_at": ("created_day", "created_block"),
    "updated_at": ("updated_day", "updated_block"),
    "study_datetime": ("study_day", "study_block"),
}
#: days per block; blocks are numbered day // BLOCK (days >= 0 only)
BLOCK = 16
#: at most this many buckets per query; longer ranges use the plans above
MAX_BRANCHES = 100
#: a range over more days is first clamped to the days that hold live sets (two index reads)
PROBE_DAYS = 48
#: a timestamp range shorter than this is read through its own index (few rows) as before
NARROW_SECONDS = 3600.0
#: the study day of a study date that does not start with 8 digits (always read, exact bounds)
ODD_STUDY_DAY = -1
_DAY_SECONDS = 86400.0
_DAY_MIN, _DAY_MAX = -(2**31), 2**31 - 1
_STUDY_DATE = re.compile(r"[0-9]{8}")
_INDEX_NAMES = {"created_at": "created", "updated_at": "updated", "study_datetime": "studydt"}
_STUDY_DATE_SQL = (
    "CASE WHEN study_datetime IS NULL THEN NULL"
    " WHEN study_datetime GLOB '[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*' THEN {}"
    " ELSE -1 END"
)
_STUDY_DAY_SQL = (
    "CAST(substr(study_datetime, 1, 4) AS INTEGER) * 448"
    " + min(CAST(substr(study_datetime, 5, 2) AS INTEGER), 13) * 32"
    " + min(CAST(substr(study_datetime, 7, 2) AS INTEGER), 31)"
)
#: SQLite: the buckets are index expressions (schema migration 6, spelled alike); PostgreSQL stores
#: them as generated columns of these names (migration 5)
SQLITE_BUCKETS: dict[str, str] = {
    "created_day": "CAST(created_at / 86400.0 AS INTEGER)",
    "created_block": "CAST(created_at / 86400.0 AS INTEGER) / 16",
    "updated_day": "CAST(updated_at / 86400.0 AS INTEGER)",
    "updated_block": "CAST(updated_at / 86400.0 AS INTEGER) / 16",
    "study_day": f"({_STUDY_DATE_SQL.format(_STUDY_DAY_SQL)})",
    "study_block": f"({_STUDY_DATE_SQL.format(f'({_STUDY_DAY_SQL}) / 16')})",
}


def study_day(key: str) -> int:
    """The bucket day of a study date key; ``study_day`` in SQL computes the same.

    ``YYYYMMDD…`` maps to ``YYYY * 448 + min(MM, 13) * 32 + min(DD, 31)``: monotonic in the key, so a
    key range maps to a day range, and compact (448 numbers a year) even for dates no calendar has.
    """
    if not _STUDY_DATE.match(key):
        return ODD_STUDY_DAY
    return int(key[:4]) * 448 + min(int(key[4:6]), 13) * 32 + min(int(key[6:8]), 31)


def bucket_day(column: str, value: Any) -> int:
    """The bucket day of a value of a time column (epoch seconds: whole days since 1970, truncated)."""
    if column == "study_datetime":
        return study_day(str(value))
    return int(float(value) / _DAY_SECONDS)


def bucket_index(column: str, level: str, sort: str) -> str:
    """The index that reads ``column``'s ``level`` ("day" or "block") buckets in ``sort`` order."""
    return f"image_sets_{_INDEX_NAMES[column]}_{level}_{_INDEX_NAMES[sort]}"


@dataclass(frozen=True)
class Buckets:
    """How one search is read through buckets: the range filter ``query.filters[position]`` on
    ``column``, its ``days`` (read with the exact bounds) and ``blocks`` (wholly inside the range).

    ``walk``: the range holds every live set, so no bucket: the sort column's index is read in order.
    """

    position: int
    column: str
    days: tuple[int, ...]
    blocks: tuple[int, ...]
    walk: bool = False


def bucket_range(query: SearchQuery) -> int | None:
    """The position of the range filter to read through buckets, or None when the other plans serve
    the query well: EQUAL filters other than isPrimary (selective, their own index), a range on the
    sort column only, or a timestamp range narrower than NARROW_SECONDS."""
    if query.sort_field not in _SORTS:
        return None
    if any(f.operator == "EQUAL" and f.attribute != "is_primary" for f in query.filters):
        return None
    for i, f in enumerate(query.filters):
        if f.operator != "BETWEEN" or f.attribute == query.sort_field or f.attribute not in BUCKETS:
            continue
        if f.attribute == "study_datetime":
            return i
        low, high = float(f.values[0]), float(f.values[1])
        if not (math.isfinite(low) and math.isfinite(high)) or high - low < NARROW_SECONDS:
            return None
        return i
    return None


def _bounds(query: SearchQuery) -> tuple[int, int, int] | None:
    position = bucket_range(query)
    if position is None:
        return None
    f = query.filters[position]
    return position, bucket_day(f.attribute, f.values[0]), bucket_day(f.attribute, f.values[1])


def needs_extent(query: SearchQuery) -> bool:
    """Whether ``plan_buckets`` will ask for the extent (a second statement: read both from one snapshot)."""
    bounds = _bounds(query)
    return bounds is not None and bounds[2] - bounds[1] + 1 > PROBE_DAYS


def plan_buckets(query: SearchQuery, extent: Callable[[str], tuple[int, int] | None]) -> Buckets | None:
    """The buckets that serve ``query``, or None for the plans of ``build_search_sql``.

    ``extent(day_column)`` answers the first and last day holding live sets (None: no set); it is asked
    only for ranges over more than PROBE_DAYS days. A range holding every live set is read in sort order
    (``walk``).
    """
    bounds = _bounds(query)
    if bounds is None:
        return None
    position, low, high = bounds
    column = query.filters[position].attribute
    if high - low + 1 > PROBE_DAYS:
        span = extent(BUCKETS[column][0])
        if span is None:
            low, high = 0, -1
        elif low < span[0] and high > span[1]:
            return Buckets(position, column, (), (), walk=True)
        else:
            low, high = max(low, span[0]), min(high, span[1])
    low, high = max(low, _DAY_MIN), min(high, _DAY_MAX)  # no set has a day outside (integer columns)
    days: list[int] = []
    blocks: list[int] = []
    day = low
    while day <= high:
        # a block is read whole: only blocks strictly inside the two edge days (their bounds are exact)
        if day > low and day > 0 and day % BLOCK == 0 and day + BLOCK - 1 < high:
            blocks.append(day // BLOCK)
            day += BLOCK
        else:
            days.append(day)
            day += 1
        if len(days) + len(blocks) > MAX_BRANCHES:
            return None
    if column == "study_datetime":
        days.append(ODD_STUDY_DAY)
    return Buckets(position, column, tuple(days), tuple(blocks))


def extent_sql(datastore_id: str, day_column: str, *, postgres: bool = False) -> tuple[str, list[Any]]:
    """First and last day of ``day_column`` holding live sets (two index reads)."""
    mark = "%s" if postgres else "?"
    day = day_column if postgres else SQLITE_BUCKETS[day_column]
    live = f"FROM image_sets WHERE datastore_id = {mark} AND state != 'DELETED' AND {day} >= {mark}"
    floor = 0 if day_column == BUCKETS["study_datetime"][0] else _DAY_MIN
    sql = (
        f"SELECT (SELECT {day} {live} ORDER BY {day} LIMIT 1) AS low,"
        f" (SELECT {day} {live} ORDER BY {day} DESC LIMIT 1) AS high"
    )
    return sql, [datastore_id, floor, datastore_id, floor]


def build_bucket_sql(
    datastore_id: str,
    query: SearchQuery,
    buckets: Buckets,
    after: tuple[Any, str] | None,
    limit: int,
    *,
    nulls: bool = False,
    postgres: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The page of ``query`` read bucket by bucket (``build_search_sql``'s rows, in the same order).

    SQLite (``:name`` parameters): one UNION ALL branch per bucket, each through its index (INDEXED BY).
    PostgreSQL (``postgres=True``, ``%(name)s``): one LATERAL subquery per level over an array of
    buckets, so the statement and its plan do not grow with the number of buckets.
    """

    def p(name: str) -> str:
        return f"%({name})s" if postgres else f":{name}"

    args: dict[str, Any] = {"limit": limit}

    def param(name: str, value: Any) -> str:
        args[name] = value
        return p(name)

    where, _ = page_conditions(datastore_id, query, after, param, nulls=nulls, skip=buckets.position)
    sort = query.sort_field
    order = "DESC" if query.sort_order == "DESC" else "ASC"
    # with nulls, every row of a branch has sort value NULL: the order is the id's, read from the index
    order_by = f"{sort} {order}, id {order}"
    range_filter = query.filters[buckets.position]
    args["low"], args["high"] = range_filter.values[:2]
    # PostgreSQL must not read the exact bounds through the column's own index (once per bucket): they
    # are written so that no index matches them and are checked on the bucket index's trailing column
    bounded = buckets.column
    if postgres:
        bounded = f"({bounded} || '')" if bounded == "study_datetime" else f"+{bounded}"
    exact = f"{bounded} BETWEEN {p('low')} AND {p('high')}"
    day_column, block_column = BUCKETS[buckets.column]
    levels = [
        ("day", day_column, buckets.days, [*where, exact]),
        ("block", block_column, buckets.blocks, where),
    ]
    branches: list[str] = []
    for level, column, values, conditions in levels:
        if not values:
            continue
        if postgres:
            # The bucket is a parameter here, estimated as 1 / (distinct buckets) of the sets: after a bulk
            # import into few days, so many that walking the sort index looks as good. The redundant range
            # (estimated at 0.5 %) keeps the estimate per bucket small, so its index stays the plan.
            args[level] = list(values)
            branches.append(
                f"SELECT b.id, b.{sort} FROM unnest({p(level)}::integer[]) AS k(v) CROSS JOIN LATERAL"
                f" (SELECT id, {sort} FROM image_sets WHERE {' AND '.join(conditions)}"
                f" AND {column} = k.v AND {column} BETWEEN k.v AND k.v"
                f" ORDER BY {order_by} LIMIT {p('limit')}) AS b"
            )
            continue
        index = bucket_index(buckets.column, level, sort)
        column = SQLITE_BUCKETS[column]
        for i, value in enumerate(values):
            args[f"{level}{i}"] = value
            branches.append(
                f"SELECT * FROM (SELECT id, {sort} FROM image_sets INDEXED BY {index}"
                f" WHERE {' AND '.join(conditions)} AND {column} = {p(f'{level}{i}')}"
                f" ORDER BY {order_by} LIMIT {p('limit')})"
            )
    if not branches:  # no bucket: no set (the adapters do not ask)
        return "SELECT * FROM image_sets WHERE 1 = 0", {}
    sql = (
        f"SELECT * FROM image_sets WHERE id IN (SELECT id FROM ({' UNION ALL '.join(branches)}) AS u"
        f" ORDER BY {order_by} LIMIT {p('limit')}) ORDER BY {order_by}"
    )
    return sql, args


def keyset_pages(
    query: SearchQuery,
    after: tuple[Any, str] | None,
    limit: int,
    page: Callable[[tuple[Any, str] | None, int, bool], list[ImageSet]],
) -> list[ImageSet]:
    """One result page from ``page(after, size, nulls)`` reads: sorting by study date reads the dated
    sets, then (when the page is not full) the undated ones; a cursor with no sort value is already
    among the undated."""
    rows: list[ImageSet] = []
    if after is None or after[0] is not None:
        rows = page(after, limit, False)
    if query.sort_field == "study_datetime" and len(rows) < limit:
        null_after = after if after is not None and after[0] is None else None
        rows += page(null_after, limit - len(rows), True)
    return rows


class SearchTables:
    db: Database

    def search_image_sets(
        self, datastore_id: str, query: SearchQuery, after: tuple[Any, str] | None, limit: int
    ) -> list[ImageSet]:
        with self.db.read() as conn:
            buckets = plan_buckets(query, lambda column: read_extent(conn, datastore_id, column))
            if buckets is None:
                unindexed = choose_unindexed(conn, datastore_id, query)
            elif buckets.walk:
                unindexed, buckets = frozenset({buckets.column}), None
            else:
                unindexed = frozenset()

            def page(page_after: tuple[Any, str] | None, size: int, nulls: bool) -> list[ImageSet]:
                if buckets is not None:
                    if not (buckets.days or buckets.blocks):
                        return []  # the range holds no live set
                    sql, named = build_bucket_sql(datastore_id, query, buckets, page_after, size, nulls=nulls)
                    return [image_set_from(r) for r in conn.execute(sql, named)]
                sql, args = build_search_sql(
                    datastore_id, query, page_after, size, nulls=nulls, unindexed=unindexed
                )
                return [image_set_from(r) for r in conn.execute(sql, args)]

            return keyset_pages(query, after, limit, page)


def read_extent(conn: sqlite3.Connection, datastore_id: str, day_column: str) -> tuple[int, int] | None:
    """``extent_sql`` on SQLite: the first and last day of ``day_column`` holding live sets, or None."""
    sql, args = extent_sql(datastore_id, day_column)
    row = conn.execute(sql, args).fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))


def _range_rows(conn: sqlite3.Connection, datastore_id: str, column: str, bounds: list[Any]) -> int:
    """How many live sets fall in a range, counted up to WIDE_RANGE (an index range read)."""
    row = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM image_sets WHERE datastore_id = ? AND state != 'DELETED'"
        f" AND {column} BETWEEN ? AND ? LIMIT ?)",
        (datastore_id, bounds[0], bounds[1], WIDE_RANGE),
    ).fetchone()
    return int(row[0])
