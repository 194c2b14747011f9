"""The DICOM index's queries are served by indexes: EXPLAIN QUERY PLAN (SQLite) and EXPLAIN (PostgreSQL) of
every indexed study-level match, the hierarchical series / instance reads and the WADO-RS instance lookup."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from openhi.core.dicom_query import BY_KEYWORD, DicomQuery, Kind, Level, Match
from openhi.storage import dicom_index_sql as dq
from openhi.storage.dicom_query_sql import query_sql
from openhi.storage.sql_dialect import sql

DS = "d" * 32
STUDIES = 3000


def _rows(ds: str, n: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """``n`` studies of two series of three instances each (rows of dicom_studies, _series, _instances)."""
    studies, series, instances = [], [], []
    for i in range(n):
        study = f"1.2.{i}"
        values = {
            "study_date": f"20{10 + i % 10}{1 + i % 12:02d}{1 + i % 28:02d}", "study_time": "101500",
            "accession_number": f"A{i}", "referring_physician_name": None, "study_description": "Chest",
            "patient_name": f"Name{i % 997}^Given{i % 13}", "patient_id": f"P{i // 2}", "patient_birth_date": None,
            "patient_sex": "F", "study_uid": study, "study_id": f"S{i % 500}",
        }  # fmt: skip
        studies.append(
            (ds, *(values[c] for c in dq.STUDY_COLUMNS), "\\CT\\MR\\", 2, 6, 1000.0 + i)  # type: ignore[misc]
        )
        for s in range(2):
            set_id = f"{i:030x}{s:02x}"
            uid = f"{study}.{s}"
            cols = {"modality": ("CT", "MR")[s], "series_uid": uid, "series_number": s + 1}
            series.append(
                (
                    set_id,
                    ds,
                    1,
                    1000.0 + i,
                    3,
                    *(values[c] for c in dq.STUDY_COLUMNS),
                    *(cols.get(c) for c in dq.SERIES_COLUMNS),
                )
            )
            for k in range(3):
                instances.append(
                    (set_id, f"{uid}.{k}", ds, study, uid, k + 1, json.dumps([f"{uid}.{k}.f"]), "1.2")
                )
    return studies, series, instances


def fill(ex: Any, style: Any, ds: str, n: int) -> None:
    """Write the rows directly (executemany): the plans depend on the indexes, not on how rows arrived."""
    studies, series, instances = _rows(ds, n)
    study_cols = (*dq.STUDY_COLUMNS, "modalities", "num_series", "num_instances", "updated_at")
    series_cols = ("image_set_id", "datastore_id", "live", "updated_at", "num_instances")
    series_cols += (*dq.STUDY_COLUMNS, *dq.SERIES_COLUMNS)
    inst_cols = ("image_set_id", "sop_uid", "datastore_id", "study_uid", "series_uid", "instance_number")
    inst_cols += ("frame_ids", "stored_ts")
    for table, cols, rows in (
        ("dicom_studies", ("datastore_id", *study_cols), studies),
        ("dicom_series", series_cols, series),
        ("dicom_instances", inst_cols, instances),
    ):
        text = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        ex.executemany(sql(text, style), rows)


def _m(keyword: str, kind: Kind, *values: str) -> Match:
    attr = next(BY_KEYWORD[(lv, keyword)] for lv in Level if (lv, keyword) in BY_KEYWORD)
    return Match(attr, kind, values)


#: (name, query, the index that must serve it)
QUERIES: list[tuple[str, DicomQuery, str]] = [
    ("patient_id", DicomQuery(Level.STUDY, DS, matches=[_m("PatientID", Kind.SINGLE, "P7")]), "patient_id"),
    ("patient_ids", DicomQuery(Level.STUDY, DS, matches=[_m("PatientID", Kind.LIST, "P7", "P9")]), "patient_id"),
    ("patient_id_prefix", DicomQuery(Level.STUDY, DS, matches=[_m("PatientID", Kind.WILDCARD, "P12*")]), "patient_id"),
    ("study_uid", DicomQuery(Level.STUDY, DS, matches=[_m("StudyInstanceUID", Kind.SINGLE, "1.2.5")]), "pkey"),
    ("study_uids", DicomQuery(Level.STUDY, DS, matches=[_m("StudyInstanceUID", Kind.LIST, "1.2.5", "1.2.6")]), "pkey"),
    ("study_of_path", DicomQuery(Level.STUDY, DS, study_uid="1.2.5"), "pkey"),
    ("accession", DicomQuery(Level.STUDY, DS, matches=[_m("AccessionNumber", Kind.SINGLE, "A5")]), "accession"),
    ("accession_prefix", DicomQuery(Level.STUDY, DS, matches=[_m("AccessionNumber", Kind.WILDCARD, "A12?")]), "accession"),
    ("study_date", DicomQuery(Level.STUDY, DS, matches=[_m("StudyDate", Kind.SINGLE, "20150606")]), "date"),
    ("study_dates", DicomQuery(Level.STUDY, DS, matches=[_m("StudyDate", Kind.RANGE, "20150601", "20150607")]), "date"),
    ("study_date_from", DicomQuery(Level.STUDY, DS, matches=[_m("StudyDate", Kind.RANGE, "20190601", "")]), "date"),
    ("study_id", DicomQuery(Level.STUDY, DS, matches=[_m("StudyID", Kind.SINGLE, "S7")]), "study_id"),
    ("patient_name_prefix", DicomQuery(Level.STUDY, DS, matches=[_m("PatientName", Kind.WILDCARD, "Name12^*")]), "patient_name"),
    ("newest", DicomQuery(Level.STUDY, DS, limit=100), "updated"),
    ("series_of_study", DicomQuery(Level.SERIES, DS, study_uid="1.2.5"), "series_study"),
    ("series_of_patient", DicomQuery(Level.SERIES, DS, matches=[_m("PatientID", Kind.SINGLE, "P7")]), "patient_id"),
    ("series_uid", DicomQuery(Level.SERIES, DS, matches=[_m("SeriesInstanceUID", Kind.SINGLE, "1.2.5.1")]), "series_uid"),
    ("instances_of_series", DicomQuery(Level.INSTANCE, DS, study_uid="1.2.5", series_uid="1.2.5.1"), "series_study"),
    ("instances_of_study", DicomQuery(Level.INSTANCE, DS, study_uid="1.2.5"), "series_study"),
    ("instance_uid", DicomQuery(Level.INSTANCE, DS, matches=[_m("SOPInstanceUID", Kind.SINGLE, "1.2.5.1.2")]), "sop"),
    ("instances_of_patient", DicomQuery(Level.INSTANCE, DS, matches=[_m("PatientID", Kind.SINGLE, "P7")]), "patient_id"),
]  # fmt: skip
_INDEX = {
    "pkey": ("sqlite_autoindex_dicom_studies_1", "dicom_studies_pkey"),
    # PostgreSQL may find the series by its UID alone (as selective): either index serves it
    "series_study": ("dicom_series_study", "(?:dicom_series_study|dicom_series_uid)"),
    "series_uid": ("dicom_series_uid", "dicom_series_uid"),
    "sop": ("dicom_instances_sop", "dicom_instances_sop"),
}


def _index_name(key: str, pg: bool) -> str:
    return _INDEX[key][pg] if key in _INDEX else f"dicom_studies_{key}"


@pytest.fixture(scope="module")
def sqlite_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from openhi.storage.sqlite.index import SqliteIndex

    idx = SqliteIndex(str(tmp_path_factory.mktemp("plans") / "index.sqlite3"))
    with idx.db.write() as conn:
        fill(conn, "qmark", DS, STUDIES)
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def pg_index(pg_schemas: Any) -> Iterator[Any]:
    import pg
    from openhi.storage.postgres.index import PostgresIndex

    schema = pg_schemas.new()
    idx = PostgresIndex(pg_schemas.url, schema=schema)
    with idx.db.tx() as cur:
        fill(cur, "format", DS, STUDIES)
    pg.execute(schema, "ANALYZE")
    yield idx
    idx.close()


@pytest.mark.parametrize(("name", "query", "index"), QUERIES, ids=[q[0] for q in QUERIES])
def test_sqlite_searches_an_index(sqlite_index: Any, name: str, query: DicomQuery, index: str) -> None:
    text, args = query_sql(query, pg=False)
    plan = [r[3] for r in sqlite_index.db.conn.execute("EXPLAIN QUERY PLAN " + text, args).fetchall()]
    scans = [p for p in plan if p.startswith("SCAN") and index != "updated"]
    assert scans == [], plan
    assert any(_index_name(index, False) in p for p in plan), plan
    if index == "updated":  # the first page walks the sort's index: no sort of every study
        assert not any("TEMP B-TREE" in p for p in plan), plan
    assert sqlite_index.db.conn.execute(text, args).fetchall(), name  # the query finds rows


def test_sqlite_instance_lookup_searches_indexes(sqlite_index: Any) -> None:
    args = ("1.2.5.1.2", DS, "1.2.5", "1.2.5.1")
    plan = [r[3] for r in sqlite_index.db.conn.execute("EXPLAIN QUERY PLAN " + dq.INSTANCE_LOOKUP, args)]
    assert not [p for p in plan if p.startswith("SCAN")], plan
    assert any("dicom_series_study" in p for p in plan), plan
    assert sqlite_index.dicom_instance(DS, "1.2.5", "1.2.5.1", "1.2.5.1.2")["frame_ids"] == ["1.2.5.1.2.f"]


def _pg_plan(idx: Any, text: str, args: Any) -> list[str]:
    with idx.db.tx() as cur:
        return [next(iter(r.values())) for r in cur.execute("EXPLAIN " + text, args).fetchall()]


@pytest.mark.parametrize(("name", "query", "index"), QUERIES, ids=[q[0] for q in QUERIES])
def test_pg_uses_an_index(pg_index: Any, name: str, query: DicomQuery, index: str) -> None:
    text, args = query_sql(query, pg=True)
    plan = _pg_plan(pg_index, text, args)
    assert not [p for p in plan if "Seq Scan" in p], plan
    name = _index_name(index, True)
    assert any(
        re.search(rf"(Index (Only )?Scan using {name} |Bitmap Index Scan on {name} )", p) for p in plan
    ), plan
    with pg_index.db.tx() as cur:
        assert cur.execute(text, args).fetchall(), name


def test_pg_instance_lookup_uses_indexes(pg_index: Any) -> None:
    args = ("1.2.5.1.2", DS, "1.2.5", "1.2.5.1")
    plan = _pg_plan(pg_index, sql(dq.INSTANCE_LOOKUP, "format"), args)
    assert not [p for p in plan if "Seq Scan" in p], plan
    assert pg_index.dicom_instance(DS, "1.2.5", "1.2.5.1", "1.2.5.1.2")["frame_ids"] == ["1.2.5.1.2.f"]
