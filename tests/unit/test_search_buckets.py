"""Ranges on one time column sorted by another, read bucket by bucket (storage/sqlite/search.py).

Every search is compared with a brute-force filter and sort in Python over a few thousand generated image
sets, on SQLite and on PostgreSQL, page by page: both orders, each pair of time columns, ranges over no,
one and many buckets, bounds on bucket edges, sets without or with odd study dates, deleted sets.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from search_pages import page_rows

import pg
from openhi.core.search import study_datetime_key
from openhi.ports.index import SearchFilter, SearchQuery
from openhi.storage.sqlite import search
from openhi.storage.sqlite.index import SqliteIndex

DS = "c" * 32
OTHER = "f" * 32
DAY = 86400.0
BASE = 19680 * DAY  # day 19680 = 16 * 1230: a day edge and a block edge
SPAN_DAYS = 200
TIMES = ("created_at", "updated_at", "study_datetime")
COLUMNS = (
    "id", "datastore_id", "latest_version", "content_version", "state", "workflow_status", "is_primary",
    "created_at", "updated_at", "storage_tier", "study_date", "study_time", "study_datetime",
)  # fmt: skip
# study dates that are no calendar dates (stored as the files had them): every search must still find them
ODD_DATES = ["2015.01.01", "20151345", "2015", "abc", "20160230", "2016123", "201612311", "20161300"]


def make_rows(n: int = 2000) -> list[dict[str, Any]]:
    """Image sets over SPAN_DAYS days from BASE: updatedAt follows createdAt (correlated), ties, sets on
    day edges, sets without a study date or with odd ones, deleted and locked sets, another datastore."""
    rng = random.Random(2024)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        r = rng.random()
        if r < 0.05:
            created = BASE + DAY * rng.randrange(SPAN_DAYS)  # exactly on a day (sometimes block) edge
        elif r < 0.1 and rows:
            created = rng.choice(rows)["created_at"]  # a tie, broken by id
        else:
            created = BASE + rng.random() * SPAN_DAYS * DAY
        u = rng.random()
        if u < 0.2:
            updated = created
        elif u < 0.3:
            updated = created + DAY * rng.randrange(1, 20)
        else:
            updated = created + rng.random() * 30 * DAY
        s = rng.random()
        date: str | None
        time: str | None = None
        if s < 0.15:
            date = None
        elif s < 0.2:
            date = rng.choice(ODD_DATES)
        else:
            date = f"{dt.date(2019, 1, 1) + dt.timedelta(days=rng.randrange(3 * 365)):%Y%m%d}"
            if rng.random() < 0.75:
                time = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        st = rng.random()
        rows.append(
            {
                "id": f"{rng.getrandbits(128):032x}",
                "datastore_id": OTHER if i % 10 == 9 else DS,
                "latest_version": 1,
                "content_version": 1,
                "state": "DELETED" if st < 0.05 else "LOCKED" if st < 0.07 else "ACTIVE",
                "workflow_status": "CREATED",
                "is_primary": int(rng.random() < 0.7),
                "created_at": created,
                "updated_at": updated,
                "storage_tier": "FREQUENT_ACCESS",
                "study_date": date,
                "study_time": time,
                "study_datetime": study_datetime_key(date, time),
            }
        )
    return rows


ROWS = make_rows()


def expected(query: SearchQuery) -> list[str]:
    """The answer by brute force: live sets of DS matching every filter, sorted by (value, id); sets
    without a value of the sort column last, by id, in both orders."""

    def match(row: dict[str, Any], f: SearchFilter) -> bool:
        value = row[f.attribute]
        if f.operator == "EQUAL":
            return bool(value == f.values[0])
        return value is not None and f.values[0] <= value <= f.values[1]

    keep = [
        r
        for r in ROWS
        if r["datastore_id"] == DS and r["state"] != "DELETED" and all(match(r, f) for f in query.filters)
    ]
    sort, desc = query.sort_field, query.sort_order == "DESC"
    valued = sorted((r for r in keep if r[sort] is not None), key=lambda r: (r[sort], r["id"]), reverse=desc)
    empty = sorted((r for r in keep if r[sort] is None), key=lambda r: r["id"], reverse=desc)
    return [r["id"] for r in valued + empty]


def page_all(index: Any, query: SearchQuery, limit: int, pages: int | None = None) -> list[str]:
    """Every page of ``query`` through the adapter, each cursor made from the last set of the page before."""
    return [r.id for r in page_rows(index, DS, query, limit, pages)]


# -- ranges: (name, bounds, whether the bucket plan serves them)


def _days(a: float, b: float) -> list[float]:
    return [BASE + a * DAY, BASE + b * DAY]


EPOCH_RANGES: list[tuple[str, list[Any], bool]] = [
    ("a day without sets", _days(-10.7, -10.2), True),
    ("within one day", _days(10.2, 10.9), True),
    ("day edges", _days(5, 6), True),
    ("block edges", _days(16, 48), True),
    ("block edges less 1 ms", [BASE + 16 * DAY - 0.001, BASE + 48 * DAY - 0.001], True),
    ("a month", _days(33.5, 63.5), True),
    ("130 days, clamped to the sets", _days(20.5, 150.25), True),
    ("past the last set", _days(150.5, 600), True),
    ("before the first set", _days(-300, -200), True),
    ("every set: the sort order", _days(-100, 400), False),
    ("1970 to 2106: the sort order", [0.0, 4.2e9], False),
    ("one minute: the range index", [BASE + 10.2 * DAY, BASE + 10.2 * DAY + 60], False),
]
STUDY_RANGES: list[tuple[str, list[Any], bool]] = [
    ("one study day", ["20200115000000.000000", "20200115235959.999999"], True),
    ("two days and a bit", ["20200115120000.000000", "20200117080000.000000"], True),
    ("a month", ["20200101000000.000000", "20200131235959.999999"], True),
    ("block edges", ["20200116000000.000000", "20200216000000.000000"], True),
    ("a year", ["20200101000000.000000", "20201231235959.999999"], True),
    ("odd dates inside", ["20140101000000.000000", "20160101000000.000000"], True),
    ("odd and real dates", ["20151201000000.000000", "20190301000000.000000"], False),
    ("no study in it", ["20300101000000.000000", "20300301000000.000000"], True),
    ("every date: the sort order", ["00010101000000.000000", "99991231235959.999999"], False),
]


def _queries() -> list[tuple[str, SearchQuery, bool | None]]:
    cases: list[tuple[str, SearchQuery, bool | None]] = []
    for column in TIMES:
        ranges = STUDY_RANGES if column == "study_datetime" else EPOCH_RANGES
        for (name, bounds, bucketed), sort, order in itertools.product(ranges, TIMES, ("ASC", "DESC")):
            if sort == column:
                continue
            f = SearchFilter(column, "BETWEEN", bounds)
            cases.append((f"{column} {name} by {sort} {order}", SearchQuery([f], sort, order), bucketed))
            primary = SearchFilter("is_primary", "EQUAL", [0])
            cases.append(
                (
                    f"not primary, {column} {name} by {sort} {order}",
                    SearchQuery([primary, f], sort, order),
                    None,
                )
            )
    created = SearchFilter("created_at", "BETWEEN", _days(30.5, 90.5))
    for order in ("ASC", "DESC"):
        on_sort = SearchFilter("updated_at", "BETWEEN", _days(40.5, 70.5))
        study = SearchFilter("study_datetime", "BETWEEN", ["20190601000000.000000", "20201231000000.000000"])
        cases.append(
            (
                "created and updated ranges by updated",
                SearchQuery([created, on_sort], "updated_at", order),
                True,
            )
        )
        cases.append(
            ("created and study ranges by updated", SearchQuery([created, study], "updated_at", order), True)
        )
        cases.append(
            ("study and created ranges by updated", SearchQuery([study, created], "updated_at", order), None)
        )
    return cases


QUERIES = _queries()


# -- the two adapters, filled once per module


def _fill_sqlite() -> SqliteIndex:
    index = SqliteIndex(":memory:")
    marks = ", ".join("?" * len(COLUMNS))
    with index.db.write() as conn:
        conn.executemany(
            f"INSERT INTO image_sets ({', '.join(COLUMNS)}) VALUES ({marks})",
            [tuple(r[c] for c in COLUMNS) for r in ROWS],
        )
        conn.execute("ANALYZE")
    return index


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def index(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "sqlite":
        idx: Any = _fill_sqlite()
        yield idx
        idx.close()
        return
    schemas: pg.Schemas = request.getfixturevalue("pg_schemas")
    from openhi.storage.postgres.index import PostgresIndex

    schema = schemas.new()
    idx = PostgresIndex(schemas.url, schema=schema)
    with pg.connection(schema) as conn, conn.cursor() as cur:
        marks = ", ".join(["%s"] * len(COLUMNS))
        cur.executemany(
            f"INSERT INTO image_sets ({', '.join(COLUMNS)}) VALUES ({marks})",
            [tuple(r[c] for c in COLUMNS) for r in ROWS],
        )
        cur.execute("ANALYZE image_sets")
    try:
        yield idx
    finally:
        idx.close()


def _plan(index: Any, query: SearchQuery) -> search.Buckets | None:
    """The bucket plan the adapter chooses for ``query`` (None: the plans of build_search_sql)."""
    if isinstance(index, SqliteIndex):
        with index.db.read() as conn:
            return search.plan_buckets(query, lambda column: search.read_extent(conn, DS, column))
    with index.db.tx() as cur:

        def extent(column: str) -> tuple[int, int] | None:
            sql, args = search.extent_sql(DS, column, postgres=True)
            row = cur.execute(sql, args).fetchone()
            return None if row is None or row["low"] is None else (int(row["low"]), int(row["high"]))

        return search.plan_buckets(query, extent)


# -- the answers


def test_the_rows_cover_the_cases() -> None:
    live = [r for r in ROWS if r["datastore_id"] == DS and r["state"] != "DELETED"]
    assert len(live) > 1500
    assert any(r["state"] == "LOCKED" for r in live)
    assert any(r["study_datetime"] is None for r in live)
    assert {r["study_date"] for r in live} >= set(ODD_DATES)
    assert any(r["created_at"] % DAY == 0 for r in live)
    assert len({r["created_at"] for r in live}) < len(live)  # ties


@pytest.mark.parametrize(("name", "query", "bucketed"), QUERIES, ids=[q[0] for q in QUERIES])
def test_every_page_matches_brute_force(
    index: Any, name: str, query: SearchQuery, bucketed: bool | None
) -> None:
    plan = _plan(index, query)
    if bucketed is not None:
        assert (plan is not None and not plan.walk) == bucketed, plan
    if "the sort order" in name:
        assert plan is not None and plan.walk
    want = expected(query)
    got = page_all(index, query, 50)
    assert got == want
    assert page_all(index, query, 7, pages=4) == want[:28]
    assert page_all(index, query, 1, pages=3) == want[:3]


def test_ranges_split_into_days_at_the_ends_and_blocks_inside(index: Any) -> None:
    plan = _plan(
        index, SearchQuery([SearchFilter("created_at", "BETWEEN", _days(16, 48))], "updated_at", "DESC")
    )
    assert plan is not None
    assert plan.days == (*range(19696, 19712), 19728)
    assert plan.blocks == (1232,)
    # a range over more than PROBE_DAYS days is clamped to the days that hold live sets
    plan = _plan(
        index, SearchQuery([SearchFilter("created_at", "BETWEEN", _days(150.5, 600))], "updated_at", "ASC")
    )
    last = max(r["created_at"] for r in ROWS if r["datastore_id"] == DS and r["state"] != "DELETED")
    assert plan is not None and max(plan.days) == int(last / DAY)
    # study dates: the odd ones have a day of their own, read with the exact bounds
    f = SearchFilter("study_datetime", "BETWEEN", ["20200101000000.000000", "20200131235959.999999"])
    plan = _plan(index, SearchQuery([f], "created_at", "DESC"))
    assert plan is not None and plan.days[-1] == search.ODD_STUDY_DAY
    assert len(plan.days) + len(plan.blocks) <= search.MAX_BRANCHES


def test_too_many_buckets_fall_back_to_the_other_plans(index: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    query = SearchQuery([SearchFilter("created_at", "BETWEEN", _days(20.5, 150.25))], "updated_at", "DESC")
    assert _plan(index, query) is not None
    monkeypatch.setattr(search, "MAX_BRANCHES", 10)
    assert _plan(index, query) is None
    assert page_all(index, query, 50) == expected(query)
    # without the extent probe the answer is the same
    monkeypatch.setattr(search, "MAX_BRANCHES", 1000)
    monkeypatch.setattr(search, "PROBE_DAYS", 1000)
    assert _plan(index, query) is not None
    assert page_all(index, query, 50) == expected(query)


def test_selective_filters_keep_their_own_index() -> None:
    month = SearchFilter("created_at", "BETWEEN", _days(33.5, 63.5))
    for other in ("patient_id", "accession_number", "study_id", "study_uid", "series_uid"):
        assert (
            search.bucket_range(
                SearchQuery([SearchFilter(other, "EQUAL", ["x"]), month], "updated_at", "DESC")
            )
            is None
        )
    assert (
        search.bucket_range(SearchQuery([month], "created_at", "DESC")) is None
    )  # the sort column's own range
    study_equal = SearchFilter("study_datetime", "EQUAL", ["20200101000000.000000"])
    assert search.bucket_range(SearchQuery([study_equal, month], "updated_at", "DESC")) is None
    assert (
        search.bucket_range(
            SearchQuery([SearchFilter("is_primary", "EQUAL", [1]), month], "updated_at", "DESC")
        )
        == 1
    )
    nan = SearchFilter("created_at", "BETWEEN", [float("nan"), 1.0])
    assert search.bucket_range(SearchQuery([nan], "updated_at", "DESC")) is None


# -- the generated columns and the plans


def test_bucket_columns_match_the_python_ones(index: Any) -> None:
    """PostgreSQL's generated columns and SQLite's index expressions compute bucket_day (and // 16)."""
    buckets = ["created_day", "created_block", "updated_day", "updated_block", "study_day", "study_block"]
    if isinstance(index, SqliteIndex):
        names = ", ".join(search.SQLITE_BUCKETS[b] for b in buckets)
        sql = f"SELECT id, created_at, updated_at, study_datetime, {names} FROM image_sets"
        rows = [tuple(r) for r in index.db.conn.execute(sql)]
    else:
        sql = f"SELECT id, created_at, updated_at, study_datetime, {', '.join(buckets)} FROM image_sets"
        with index.db.tx() as cur:
            rows = [tuple(r.values()) for r in cur.execute(sql).fetchall()]
    assert len(rows) == len(ROWS)
    for set_id, created, updated, key, *got in rows:
        days = [search.bucket_day("created_at", created), search.bucket_day("updated_at", updated)]
        study = None if key is None else search.bucket_day("study_datetime", key)
        want = [days[0], days[0] // 16, days[1], days[1] // 16, study]
        want.append(None if study is None else -1 if study < 0 else study // 16)
        assert got == want, (set_id, key)


def test_study_days_are_monotonic_and_compact() -> None:
    keys = sorted({r["study_datetime"] for r in ROWS if r["study_datetime"] is not None})
    days = [search.study_day(k) for k in keys if search.study_day(k) >= 0]
    assert days == sorted(days)
    assert search.study_day("20200101000000.000000") == 2020 * 448 + 32 + 1
    assert search.study_day("20201399") == 2020 * 448 + 13 * 32 + 31  # clamped, still monotonic
    assert search.study_day("2020.01.0") == search.ODD_STUDY_DAY


def _shapes() -> list[tuple[SearchQuery, Any, bool]]:
    out = []
    for column, sort, order, primary in itertools.product(TIMES, TIMES, ("ASC", "DESC"), (False, True)):
        if column == sort:
            continue
        bounds = STUDY_RANGES[3][1] if column == "study_datetime" else _days(33.5, 70.5)
        filters = [SearchFilter(column, "BETWEEN", bounds)]
        if primary:
            filters.append(SearchFilter("is_primary", "EQUAL", [1]))
        query = SearchQuery(filters, sort, order)
        middle = "20200601000000.000000" if sort == "study_datetime" else BASE + 40 * DAY
        out += [(query, None, False), (query, (middle, "8" * 32), False)]
        if sort == "study_datetime":
            out += [(query, None, True), (query, (None, "8" * 32), True)]
    return out


def test_sqlite_bucket_plans_read_covering_indexes_only() -> None:
    index = _fill_sqlite()
    try:
        bad = []
        for query, after, nulls in _shapes():
            plan = search.plan_buckets(query, lambda column: search.read_extent(index.db.conn, DS, column))
            assert plan is not None and plan.blocks, query
            sql, args = search.build_bucket_sql(DS, query, plan, after, 51, nulls=nulls)
            lines = [str(r[3]) for r in index.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]
            reads = [line for line in lines if "image_sets" in line]
            if sum("TEMP B-TREE" in line for line in lines) != 2:  # only the page and its rows are sorted
                bad.append(f"{query} {after} {nulls}: {lines}")
            if any("SCAN image_sets" in line for line in reads) or not all(
                "USING COVERING INDEX image_sets_" in line or "sqlite_autoindex_image_sets" in line
                for line in reads
            ):
                bad.append(f"{query} {after} {nulls}: {lines}")
        assert bad == []
    finally:
        index.close()


@pytest.mark.parametrize("rows", ["spread", "bulk"])
def test_pg_bucket_plans_use_the_bucket_indexes(pg_schemas: pg.Schemas, rows: str) -> None:
    """With sets spread over 200 days, and after a bulk import of sets all created in the same second
    (whose statistics make any bucket look like every set)."""
    from openhi.storage.postgres.index import PostgresIndex

    schema = pg_schemas.new()
    index = PostgresIndex(pg_schemas.url, schema=schema)
    if rows == "spread":
        with pg.connection(schema) as conn, conn.cursor() as cur:
            marks = ", ".join(["%s"] * len(COLUMNS))
            cur.executemany(
                f"INSERT INTO image_sets ({', '.join(COLUMNS)}) VALUES ({marks})",
                [tuple(r[c] for c in COLUMNS) for r in make_rows(20_000)],
            )
            cur.execute("ANALYZE image_sets")
    else:
        pg.seed_search_rows(schema, 20_000, DS)
    bad = []
    try:
        with index.db.tx() as cur:
            for query, after, nulls in _shapes():
                plan = search.plan_buckets(query, lambda column: None)
                assert plan is not None
                sql, args = search.build_bucket_sql(DS, query, plan, after, 51, nulls=nulls, postgres=True)
                text = "\n".join(r["QUERY PLAN"] for r in cur.execute(f"EXPLAIN {sql}", args).fetchall())
                column = query.filters[plan.position].attribute
                wanted = [search.bucket_index(column, "day", query.sort_field)]
                if plan.blocks:
                    wanted.append(search.bucket_index(column, "block", query.sort_field))
                if "Seq Scan" in text or not all(name in text for name in wanted):
                    bad.append(f"{query} {after} {nulls}:\n{text}")
    finally:
        index.close()
    assert bad == []


# -- migrations: new and existing databases end with the columns and indexes


def _bucket_indexes() -> set[str]:
    return {
        search.bucket_index(column, level, sort)
        for column, sort in itertools.permutations(TIMES, 2)
        for level in ("day", "block")
    }


def test_sqlite_existing_database_gains_the_buckets(tmp_path: Path) -> None:
    from openhi.storage.sqlite.connection import _statements
    from openhi.storage.sqlite.schema import MIGRATIONS

    path = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(path)
    before = 5  # the schema before the buckets
    for script in MIGRATIONS[:before]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {before}")
    marks = ", ".join("?" * len(COLUMNS))
    conn.executemany(
        f"INSERT INTO image_sets ({', '.join(COLUMNS)}) VALUES ({marks})",
        [tuple(r[c] for c in COLUMNS) for r in ROWS],
    )
    conn.commit()
    conn.close()
    index = SqliteIndex(str(path))
    try:
        names = {r[0] for r in index.db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert _bucket_indexes() <= names
        assert index.db.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        query = SearchQuery([SearchFilter("created_at", "BETWEEN", _days(33.5, 63.5))], "updated_at", "DESC")
        assert page_all(index, query, 50) == expected(query)
    finally:
        index.close()
    fresh = SqliteIndex(":memory:")
    try:
        names = {r[0] for r in fresh.db.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert _bucket_indexes() <= names
    finally:
        fresh.close()


def test_pg_existing_database_gains_the_buckets(pg_schemas: pg.Schemas) -> None:
    from openhi.storage.postgres.index import PostgresIndex
    from openhi.storage.postgres.schema import MIGRATIONS

    schema = pg_schemas.new()
    before = 4  # the schema before the buckets
    with pg.connection("public") as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    with pg.connection(schema) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        for number, script in enumerate(MIGRATIONS[:before], start=1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (number,))
        with conn.cursor() as cur:
            marks = ", ".join(["%s"] * len(COLUMNS))
            cur.executemany(
                f"INSERT INTO image_sets ({', '.join(COLUMNS)}) VALUES ({marks})",
                [tuple(r[c] for c in COLUMNS) for r in ROWS],
            )
    index = PostgresIndex(pg_schemas.url, schema=schema)
    try:
        names = {
            r
            for (r,) in pg.execute(schema, "SELECT indexname FROM pg_indexes WHERE schemaname = %s", [schema])
        }
        assert _bucket_indexes() <= names
        applied = pg.execute(schema, "SELECT max(version) FROM schema_migrations")
        assert applied == [(len(MIGRATIONS),)]
        query = SearchQuery([SearchFilter("created_at", "BETWEEN", _days(33.5, 63.5))], "updated_at", "DESC")
        assert page_all(index, query, 50) == expected(query)
    finally:
        index.close()
