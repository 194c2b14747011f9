"""SearchImageSets criteria → SearchQuery, the SQLite keyset queries, and their query plans (no full scans)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from search_pages import page_rows

from openhi.core.errors import ValidationError
from openhi.core.records import ImageSet, ImageSetVersion
from openhi.core.search import HALF_MS, parse_criteria, query_fingerprint, sort_echo, study_datetime_key
from openhi.ports.index import SearchFilter, SearchQuery
from openhi.storage.sqlite.index import SqliteIndex
from openhi.storage.sqlite.search import build_search_sql

DS = "d" * 32


def _eq(value: dict[str, Any]) -> dict[str, Any]:
    return {"filters": [{"values": [value], "operator": "EQUAL"}]}


def _between(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"filters": [{"values": [a, b], "operator": "BETWEEN"}]}


@pytest.mark.parametrize(
    ("member", "value", "column", "expected"),
    [
        ("DICOMPatientId", "PAT-1", "patient_id", "PAT-1"),
        ("DICOMAccessionNumber", "ACC9", "accession_number", "ACC9"),
        ("DICOMStudyId", "S1", "study_id", "S1"),
        ("DICOMStudyInstanceUID", "1.2.3", "study_uid", "1.2.3"),
        ("DICOMSeriesInstanceUID", "1.2.3.4", "series_uid", "1.2.3.4"),
        ("isPrimary", True, "is_primary", 1),
        ("isPrimary", False, "is_primary", 0),
        ("DICOMStudyDateAndTime", {"DICOMStudyDate": "20240131"}, "study_datetime", "20240131000000.000000"),
        (
            "DICOMStudyDateAndTime",
            {"DICOMStudyDate": "20240131", "DICOMStudyTime": "1230"},
            "study_datetime",
            "20240131123000.000000",
        ),
    ],
)
def test_equal_maps_to_index_columns(member: str, value: Any, column: str, expected: Any) -> None:
    query = parse_criteria(_eq({member: value}))
    assert query.filters == [SearchFilter(column, "EQUAL", [expected])]
    assert (query.sort_field, query.sort_order) == ("updated_at", "DESC")


def test_defaults_and_sort_echo() -> None:
    for criteria in (None, {}, {"filters": []}):
        query = parse_criteria(criteria)
        assert query.filters == [] and sort_echo(query) == {"sortField": "updatedAt", "sortOrder": "DESC"}
    for field, column in (
        ("createdAt", "created_at"),
        ("updatedAt", "updated_at"),
        ("DICOMStudyDateAndTime", "study_datetime"),
    ):
        for order in ("ASC", "DESC"):
            query = parse_criteria({"sort": {"sortField": field, "sortOrder": order}})
            assert (query.sort_field, query.sort_order) == (column, order)
            assert sort_echo(query) == {"sortField": field, "sortOrder": order}


def test_timestamps_compare_at_wire_millisecond_resolution() -> None:
    a = datetime(2024, 1, 1, tzinfo=UTC)
    b = datetime(2024, 1, 2, tzinfo=UTC)
    query = parse_criteria(_between({"createdAt": a}, {"createdAt": b}))
    assert query.filters == [
        SearchFilter("created_at", "BETWEEN", [a.timestamp() - HALF_MS, b.timestamp() + HALF_MS])
    ]
    naive = parse_criteria(_eq({"updatedAt": datetime(2024, 1, 1)}))
    assert naive.filters == [
        SearchFilter("updated_at", "BETWEEN", [a.timestamp() - HALF_MS, a.timestamp() + HALF_MS])
    ]


def test_study_datetime_between_and_two_filters_are_anded() -> None:
    query = parse_criteria(
        {
            "filters": [
                _between(
                    {"DICOMStudyDateAndTime": {"DICOMStudyDate": "19990101"}},
                    {"DICOMStudyDateAndTime": {"DICOMStudyDate": "20231231", "DICOMStudyTime": "235959.5"}},
                )["filters"][0],
                {"values": [{"DICOMPatientId": "P"}], "operator": "EQUAL"},
            ],
            "sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": "ASC"},
        }
    )
    assert query.filters == [
        SearchFilter("study_datetime", "BETWEEN", ["19990101000000.000000", "20231231235959.500000"]),
        SearchFilter("patient_id", "EQUAL", ["P"]),
    ]


@pytest.mark.parametrize(
    ("date", "time", "key"),
    [
        ("20240131", None, "20240131000000.000000"),
        ("20240131", "", "20240131000000.000000"),
        ("20240131", "07", "20240131070000.000000"),
        ("20240131", "0715", "20240131071500.000000"),
        ("20240131", "071559.123", "20240131071559.123000"),
    ],
)
def test_study_datetime_key_missing_time_is_start_of_day(date: str, time: str | None, key: str) -> None:
    assert study_datetime_key(date, time) == key


@pytest.mark.parametrize(
    ("criteria", "fragment"),
    [
        (
            {"filters": [{"values": [{"DICOMPatientId": "a"}, {"DICOMStudyId": "b"}], "operator": "EQUAL"}]},
            "mixes",
        ),
        (
            {
                "filters": [
                    {"values": [{"DICOMPatientId": "a"}, {"DICOMPatientId": "b"}], "operator": "EQUAL"}
                ]
            },
            "EQUAL",
        ),
        (
            {"filters": [{"values": [{"createdAt": datetime(2024, 1, 1)}], "operator": "BETWEEN"}]},
            "exactly 2",
        ),
        (_between({"DICOMPatientId": "a"}, {"DICOMPatientId": "b"}), "only supported"),
        (_between({"isPrimary": True}, {"isPrimary": False}), "only supported"),
        (_between({"createdAt": datetime(2024, 1, 2)}, {"createdAt": datetime(2024, 1, 1)}), "lowerBound"),
        (_eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": "2024011"}}), "DICOMStudyDate"),
        (_eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": "20240230"}}), "calendar"),
        (_eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": "2024-01-01"}}), "DICOMStudyDate"),
        (_eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": ""}}), "DICOMStudyDate"),
        (
            _eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": "20240101", "DICOMStudyTime": "25"}}),
            "DICOMStudyTime",
        ),
        (
            _eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": "20240101", "DICOMStudyTime": "12:00"}}),
            "DICOMStudyTime",
        ),
        (
            _eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": "20240101", "DICOMStudyTime": "1261"}}),
            "DICOMStudyTime",
        ),
        (
            _eq({"DICOMStudyDateAndTime": {"DICOMStudyDate": "20240101", "DICOMStudyTime": "12.5"}}),
            "DICOMStudyTime",
        ),
        (_eq({"DICOMStudyInstanceUID": "1..2"}), "DICOM UID"),
        (_eq({"DICOMStudyInstanceUID": ".1.2"}), "DICOM UID"),
        (_eq({"DICOMSeriesInstanceUID": "1.2."}), "DICOM UID"),
        (_eq({"DICOMSeriesInstanceUID": ""}), "DICOM UID"),
        (_eq({"DICOMPatientId": "a", "DICOMStudyId": "b"}), "exactly one"),
        (_eq({}), "exactly one"),
        (
            {
                "filters": [
                    {"values": [{"DICOMPatientId": "a"}], "operator": "EQUAL"},
                    {"values": [{"DICOMPatientId": "b"}], "operator": "EQUAL"},
                ]
            },
            "both filter on DICOMPatientId",
        ),
        ({"filters": [_eq({"DICOMPatientId": "a"})["filters"][0]] * 3}, "at most 2"),
        ({"sort": {"sortField": "DICOMPatientId", "sortOrder": "ASC"}}, "sortField"),
        ({"sort": {"sortField": "updatedAt", "sortOrder": "UP"}}, "sortOrder"),
        ({"filters": [{"values": [{"DICOMPatientId": "a"}], "operator": "LIKE"}]}, "operator"),
    ],
)
def test_invalid_criteria_name_the_problem(criteria: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_criteria(criteria)
    assert fragment in exc.value.message


def test_fingerprint_binds_tokens_to_the_query() -> None:
    a = parse_criteria(_eq({"DICOMPatientId": "a"}))
    b = parse_criteria(_eq({"DICOMPatientId": "b"}))
    assert query_fingerprint(DS, a) != query_fingerprint(DS, b)
    assert query_fingerprint(DS, a) == query_fingerprint(DS, parse_criteria(_eq({"DICOMPatientId": "a"})))


# -- the SQLite adapter


def _head(i: int, *, date: str | None, deleted: bool = False) -> tuple[ImageSet, ImageSetVersion]:
    set_id = f"{i:032x}"
    search: dict[str, Any] = {
        "DICOMPatientId": f"P{i % 7}",
        "DICOMAccessionNumber": f"A{i % 5}",
        "DICOMStudyId": f"S{i % 3}",
        "DICOMStudyInstanceUID": f"1.2.{i % 4}",
        "DICOMSeriesInstanceUID": f"1.2.{i % 4}.{i}",
    }
    if date:
        search["DICOMStudyDate"] = date
        search["DICOMStudyTime"] = f"{i % 24:02d}0000"
    state = "DELETED" if deleted else "ACTIVE"
    head = ImageSet(DS, set_id, 1, state, "CREATED", i % 2 == 0, 1000.0 + i, 2000.0 - i, 1, search=search)
    version = ImageSetVersion(DS, set_id, 1, state, "CREATED", head.created_at, head.updated_at, True, None)
    return head, version


@pytest.fixture(scope="module")
def index() -> Any:
    idx = SqliteIndex(":memory:")
    for i in range(60):
        date = None if i % 6 == 0 else f"2020{1 + i % 12:02d}{1 + i % 28:02d}"
        head, version = _head(i, date=date, deleted=i == 59)
        idx.create_image_set(head, version, [])
    idx.db.conn.execute("ANALYZE")
    yield idx
    idx.close()


_FILTERS: dict[str, tuple[str, list[Any]]] = {
    "patient_id": ("EQUAL", ["P1"]),
    "accession_number": ("EQUAL", ["A1"]),
    "study_id": ("EQUAL", ["S1"]),
    "study_uid": ("EQUAL", ["1.2.1"]),
    "series_uid": ("EQUAL", ["1.2.1.5"]),
    "is_primary": ("EQUAL", [1]),
    "created_at": ("BETWEEN", [1000.0, 1030.0]),
    "updated_at": ("BETWEEN", [1970.0, 2000.0]),
    "study_datetime": ("BETWEEN", ["20200101000000.000000", "20200630000000.000000"]),
}


def _plans() -> list[tuple[str, SearchQuery, Any, bool]]:
    cases = []
    combos: list[tuple[str, ...]] = [(), *((a,) for a in _FILTERS), *itertools.combinations(_FILTERS, 2)]
    for combo in combos:
        for sort in ("updated_at", "created_at", "study_datetime"):
            for order in ("ASC", "DESC"):
                query = SearchQuery([SearchFilter(a, *_FILTERS[a]) for a in combo], sort, order)
                afters: list[Any] = [None, (1500.0 if sort != "study_datetime" else "2020", "0" * 32)]
                for after in afters:
                    cases.append((f"{combo}-{sort}-{order}-{after is not None}", query, after, False))
                if sort == "study_datetime":
                    cases.append((f"{combo}-{order}-nulls", query, (None, "0" * 32), True))
    return cases


def test_every_search_query_is_served_by_an_index(index: SqliteIndex) -> None:
    bad = []
    for name, query, after, nulls in _plans():
        ranges = frozenset(f.attribute for f in query.filters if f.operator == "BETWEEN")
        for unindexed in (frozenset(), ranges - {query.sort_field}):
            sql, args = build_search_sql(DS, query, after, 51, nulls=nulls, unindexed=unindexed)
            plan = " | ".join(str(r[3]) for r in index.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            if "SCAN image_sets" in plan or "SEARCH image_sets USING" not in plan:
                bad.append(f"{name} {sorted(unindexed)}: {plan}")
    # the probe that decides between the two is an index range read too
    for column in ("created_at", "updated_at", "study_datetime"):
        sql = (
            "SELECT count(*) FROM (SELECT 1 FROM image_sets WHERE datastore_id = ? AND state != 'DELETED'"
            f" AND {column} BETWEEN ? AND ? LIMIT ?)"
        )
        plan = " | ".join(
            str(r[3]) for r in index.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", (DS, 0, 1, 5))
        )
        assert "SCAN image_sets" not in plan and "SEARCH image_sets USING" in plan, plan
    assert bad == []


def _page_all(index: SqliteIndex, query: SearchQuery, limit: int) -> list[ImageSet]:
    return page_rows(index, DS, query, limit)


@pytest.mark.parametrize("order", ["ASC", "DESC"])
@pytest.mark.parametrize("sort", ["updated_at", "created_at", "study_datetime"])
@pytest.mark.parametrize("limit", [1, 7, 100])
def test_keyset_pages_cover_every_live_set_once_in_order(
    index: SqliteIndex, sort: str, order: str, limit: int
) -> None:
    rows = _page_all(index, SearchQuery([], sort, order), limit)
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)) == 59  # the deleted set is excluded
    if sort == "study_datetime":
        keys = [
            study_datetime_key(r.search.get("DICOMStudyDate"), r.search.get("DICOMStudyTime")) for r in rows
        ]
        dated = [k for k in keys if k is not None]
        assert keys[: len(dated)] == dated  # sets without a study date come last in both orders
        assert dated == sorted(dated, reverse=order == "DESC")
    else:
        values = [getattr(r, sort) for r in rows]
        assert values == sorted(values, reverse=order == "DESC")


def test_filters_and_between_are_inclusive(index: SqliteIndex) -> None:
    rows = index.search_image_sets(
        DS,
        SearchQuery(
            [
                SearchFilter("created_at", "BETWEEN", [1010.0, 1020.0]),
                SearchFilter("is_primary", "EQUAL", [1]),
            ],
            "created_at",
            "ASC",
        ),
        None,
        50,
    )
    assert [r.created_at for r in rows] == [1010.0 + 2 * k for k in range(6)]
    rows = index.search_image_sets(
        DS, SearchQuery([SearchFilter("patient_id", "EQUAL", ["P3"])], "updated_at", "DESC"), None, 50
    )
    assert {r.search["DICOMPatientId"] for r in rows} == {"P3"} and len(rows) == len(
        [i for i in range(59) if i % 7 == 3]
    )


def test_wide_ranges_are_read_in_sort_order(index: SqliteIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    from openhi.storage.sqlite import search

    query = SearchQuery([SearchFilter("updated_at", "BETWEEN", [0.0, 5000.0])], "created_at", "DESC")
    assert search.choose_unindexed(index.db.conn, DS, query) == frozenset()  # 59 rows < WIDE_RANGE
    narrow = index.search_image_sets(DS, query, None, 10)
    monkeypatch.setattr(search, "WIDE_RANGE", 5)
    assert search.choose_unindexed(index.db.conn, DS, query) == {"updated_at"}
    assert index.search_image_sets(DS, query, None, 10) == narrow  # same answer, other plan
    selective = SearchQuery(
        [*query.filters, SearchFilter("patient_id", "EQUAL", ["P1"])], "created_at", "DESC"
    )
    assert search.choose_unindexed(index.db.conn, DS, selective) == frozenset()
