"""QIDO-RS index queries at scale: N synthetic studies in the DICOM index, p50/p99 per query kind through the port.

Usage: .venv/bin/python bench/qido_index.py [--backend sqlite|postgres] [--studies 100000] [--repeat 300]
       [--through-port 1000] [--url postgresql://...]

Filling: the first ``--through-port`` studies are written through the real write path (create_image_set with
DicomRows of a built document: image_sets row, series, instances, the study recomputed in one transaction).
The rest go in bulk straight into the three DICOM tables (SQLite: executemany in 50,000-row transactions;
PostgreSQL: COPY, then ANALYZE as autovacuum would): the same rows the write path makes (one series of two
instances per bulk study), without an image_sets row (the DICOM reads never join it). Every query runs
through the port (dicom_studies / dicom_series / dicom_instances / dicom_instance), row conversion
included. Prints a table and writes bench/results/qido-index-<backend>-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import table, write_result
from loadgen import percentile

from openhi.core.dicom_query import BY_KEYWORD, DicomQuery, Kind, Level, Match
from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.dicom.document import build_document, search_tags
from openhi.dicom.index_rows import index_rows
from openhi.storage import dicom_index_sql as dq

DS = "q" * 32
T0 = 1.7e9
MODALITIES = ("CT", "MR", "US", "CR", "DX")
TS = "1.2.840.10008.1.2.1"
STUDY_COLS = (*dq.STUDY_COLUMNS, "modalities", "num_series", "num_instances", "updated_at")
SERIES_COLS = ("image_set_id", "datastore_id", "live", "updated_at", "num_instances")
SERIES_COLS += (*dq.STUDY_COLUMNS, *dq.SERIES_COLUMNS)
INSTANCE_COLS = ("image_set_id", "sop_uid", "datastore_id", "study_uid", "series_uid", "sop_class_uid")
INSTANCE_COLS += ("instance_number", "number_of_frames", "frame_ids", "stored_ts")


def study_values(i: int, n: int) -> dict[str, Any]:
    day = i * 3650 // max(n, 1)  # ten years of studies, n / 3650 a day
    year, rest = divmod(day, 365)
    return {
        "study_uid": f"1.2.826.0.1.{i}",
        "patient_id": f"P{i // 2}",
        "patient_name": f"Name{i % 5000}^Given{i % 13}",
        "accession_number": f"A{i}",
        "study_id": f"S{i % 10000}",
        "study_date": f"{2010 + year}{1 + rest // 31 % 12:02d}{1 + rest % 28:02d}",
        "study_time": f"{i % 24:02d}3000",
        "study_description": "Synthetic",
        "modality": MODALITIES[i % len(MODALITIES)],
    }


def _document(i: int, n: int, set_id: str) -> dict[str, Any]:
    v = study_values(i, n)
    patient = {"PatientID": v["patient_id"], "PatientName": v["patient_name"]}
    study = {
        "StudyInstanceUID": v["study_uid"], "AccessionNumber": v["accession_number"], "StudyID": v["study_id"],
        "StudyDate": v["study_date"], "StudyTime": v["study_time"], "StudyDescription": v["study_description"],
    }  # fmt: skip
    series_uid = f"{v['study_uid']}.1"
    instances = {
        f"{series_uid}.{k}": {
            "DICOM": {
                "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                "InstanceNumber": str(k),
                "NumberOfFrames": "1",
            },
            "ImageFrames": [{"ID": f"{set_id[:24]}{k:08x}"}],
            "StoredTransferSyntaxUID": TS,
        }
        for k in (1, 2)
    }
    series = {"Modality": v["modality"], "SeriesNumber": "1"}
    return build_document(DS, set_id, patient, study, series_uid, series, instances)


def fill_through_port(index: Any, count: int, n: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        set_id = f"{i:032x}"
        doc = _document(i, n, set_id)
        now = T0 + i
        head = ImageSet(
            DS,
            set_id,
            1,
            "ACTIVE",
            "CREATED",
            True,
            now,
            now,
            1,
            search=search_tags(doc),
            dicom=index_rows(doc),
        )
        version = ImageSetVersion(DS, set_id, 1, "ACTIVE", "CREATED", now, now, True, f"meta/{set_id}")
        frames = [FrameRef(f"{set_id[:24]}{k:08x}", f"frames/{set_id}/{k}", TS) for k in (1, 2)]
        index.create_image_set(head, version, frames)
    return time.perf_counter() - start


def bulk_rows(first: int, n: int) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...], list[tuple[Any, ...]]]]:
    for i in range(first, n):
        v = study_values(i, n)
        set_id = f"{i:032x}"
        study = [v.get(c) for c in dq.STUDY_COLUMNS]
        series_uid = f"{v['study_uid']}.1"
        series_cols = {"modality": v["modality"], "series_uid": series_uid, "series_number": 1}
        yield (
            (DS, *study, f"\\{v['modality']}\\", 1, 2, T0 + i),
            (set_id, DS, 1, T0 + i, 2, *study, *(series_cols.get(c) for c in dq.SERIES_COLUMNS)),
            [
                (
                    set_id,
                    f"{series_uid}.{k}",
                    DS,
                    v["study_uid"],
                    series_uid,
                    "1.2.840.10008.5.1.4.1.1.2",
                    k,
                    1,
                    json.dumps([f"{set_id[:24]}{k:08x}"]),
                    TS,
                )
                for k in (1, 2)
            ],
        )


def _insert(table_name: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def fill_bulk_sqlite(index: Any, first: int, n: int) -> None:
    rows = bulk_rows(first, n)
    while True:
        batch = [r for _, r in zip(range(50_000), rows, strict=False)]
        if not batch:
            return
        with index.db.write() as conn:
            conn.executemany(_insert("dicom_studies", ("datastore_id", *STUDY_COLS)), [b[0] for b in batch])
            conn.executemany(_insert("dicom_series", SERIES_COLS), [b[1] for b in batch])
            conn.executemany(_insert("dicom_instances", INSTANCE_COLS), [r for b in batch for r in b[2]])


def fill_bulk_postgres(index: Any, first: int, n: int) -> None:
    with index.db.tx() as cur:
        # three COPY streams cannot interleave on one connection: the rows are generated once per table
        for k, (name, cols) in enumerate(
            (("dicom_studies", ("datastore_id", *STUDY_COLS)), ("dicom_series", SERIES_COLS),
             ("dicom_instances", INSTANCE_COLS))
        ):  # fmt: skip
            with cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in bulk_rows(first, n):
                    if k < 2:
                        copy.write_row(row[k])
                    else:
                        for inst in row[2]:
                            copy.write_row(inst)
        cur.execute("ANALYZE dicom_studies")
        cur.execute("ANALYZE dicom_series")
        cur.execute("ANALYZE dicom_instances")


def _m(keyword: str, kind: Kind, *values: str) -> Match:
    attr = next(BY_KEYWORD[(lv, keyword)] for lv in Level if (lv, keyword) in BY_KEYWORD)
    return Match(attr, kind, values)


def query_kinds(index: Any, n: int) -> dict[str, Callable[[random.Random], int]]:
    def s(build: Callable[[random.Random], list[Match]], limit: int = 100) -> Callable[[random.Random], int]:
        return lambda r: len(index.dicom_studies(DicomQuery(Level.STUDY, DS, matches=build(r), limit=limit)))

    def uid(r: random.Random) -> str:
        return f"1.2.826.0.1.{r.randrange(n)}"

    def week(r: random.Random) -> list[Match]:
        low = study_values(r.randrange(n), n)["study_date"]
        high = f"{low[:6]}{min(28, int(low[6:]) + 6):02d}"
        return [_m("StudyDate", Kind.RANGE, low, high)]

    return {
        "studies PatientID=": s(lambda r: [_m("PatientID", Kind.SINGLE, f"P{r.randrange(n // 2)}")]),
        "studies AccessionNumber=": s(lambda r: [_m("AccessionNumber", Kind.SINGLE, f"A{r.randrange(n)}")]),
        "studies StudyInstanceUID=": s(lambda r: [_m("StudyInstanceUID", Kind.SINGLE, uid(r))]),
        "studies StudyID=": s(lambda r: [_m("StudyID", Kind.SINGLE, f"S{r.randrange(10000)}")]),
        "studies StudyDate=week (100)": s(week),
        "studies PatientName=Name123*^ (100)": s(
            lambda r: [_m("PatientName", Kind.WILDCARD, f"Name{r.randrange(5000)}^*")]
        ),
        "studies newest (100)": s(lambda r: []),
        "studies ModalitiesInStudy=MR (100)": s(lambda r: [_m("ModalitiesInStudy", Kind.CONTAINS, "MR")]),
        "studies fuzzy PatientName=given1 (100)": s(lambda r: [_m("PatientName", Kind.FUZZY, "given1")]),
        "series of a study": lambda r: len(
            index.dicom_series(DicomQuery(Level.SERIES, DS, study_uid=uid(r)))
        ),
        "series PatientID=": lambda r: len(
            index.dicom_series(
                DicomQuery(
                    Level.SERIES, DS, matches=[_m("PatientID", Kind.SINGLE, f"P{r.randrange(n // 2)}")]
                )
            )
        ),
        "instances of a series": lambda r: len(
            index.dicom_instances(
                DicomQuery(Level.INSTANCE, DS, study_uid=(u := uid(r)), series_uid=f"{u}.1")
            )
        ),
        "instance lookup (WADO-RS)": lambda r: int(
            index.dicom_instance(DS, (u := uid(r)), f"{u}.1", f"{u}.1.2") is not None
        ),
    }


def measure(index: Any, n: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for name, run in query_kinds(index, n).items():
        rng = random.Random(7)
        for _ in range(min(20, repeat)):  # warm caches and prepared statements
            run(rng)
        times, found = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            found.append(run(rng))
            times.append((time.perf_counter() - start) * 1000)
        rows.append(
            {
                "query": name,
                "rows (mean)": round(statistics.fmean(found), 1),
                "p50 ms": percentile(times, 50),
                "p99 ms": percentile(times, 99),
                "max ms": max(times),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--through-port", type=int, default=1000)
    parser.add_argument(
        "--url", default=None, help="PostgreSQL URL (default: the tests' server, a fresh schema)"
    )
    args = parser.parse_args()
    n, through = args.studies, min(args.through_port, args.studies)
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if args.backend == "sqlite":
        from openhi.storage.sqlite.index import SqliteIndex

        tmp = tempfile.TemporaryDirectory(prefix="qido-index-")
        index: Any = SqliteIndex(str(Path(tmp.name) / "index.sqlite3"))
        cleanup = tmp.cleanup
        bulk: Callable[[Any, int, int], None] = fill_bulk_sqlite
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import pg
        from openhi.storage.postgres.index import PostgresIndex

        schemas = pg.Schemas()
        index = PostgresIndex(args.url or schemas.url, schema=schemas.new())
        cleanup = schemas.drop_all
        bulk = fill_bulk_postgres
    try:
        port_s = fill_through_port(index, through, n)
        start = time.perf_counter()
        bulk(index, through, n)
        bulk_s = time.perf_counter() - start
        print(f"{args.backend}: {n} studies; {through} through the port in {port_s:.1f} s "
              f"({port_s / max(through, 1) * 1000:.2f} ms each), {n - through} in bulk in {bulk_s:.1f} s")  # fmt: skip
        rows = measure(index, n, args.repeat)
        print(table(rows))
        path = write_result(
            f"qido-index-{args.backend}",
            {
                "studies": n,
                "through_port": through,
                "port_ms_per_study": port_s / max(through, 1) * 1000,
                "bulk_seconds": bulk_s,
                "repeat": args.repeat,
                "queries": rows,
            },
        )
        print(f"wrote {path}")
    finally:
        index.close()
        cleanup()


if __name__ == "__main__":
    main()
