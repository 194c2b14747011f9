"""SearchImageSets at scale: 100,000 image sets in a SQLite index, p50/p99 through the core and over HTTP.

Usage: .venv/bin/python bench/search_scale.py [--sets 100000] [--repeat 200]
Rows are inserted with raw SQL into a fresh index (same schema as the server's). Every query's plan is
checked for a full scan of image_sets. Prints a table and writes bench/results/search-scale-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import table, write_result
from loadgen import percentile, run_each
from serve import signed_post

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.pagination import Paginator
from openhi.core.reads import ImageSetReader
from openhi.core.records import Datastore
from openhi.core.search import parse_criteria
from openhi.core.settings import Settings
from openhi.storage.blobs_memory import MemoryBlobStore
from openhi.storage.sqlite.index import SqliteIndex
from openhi.storage.sqlite.search import (
    build_bucket_sql,
    build_search_sql,
    choose_unindexed,
    plan_buckets,
    read_extent,
)
from openhi.storage.tasks_threads import ThreadTaskRunner
from openhi.testing import RunningServer

DS = "b" * 32
# The generated sets were last read in 2024: a server's tier sweep would archive every one of them (an
# UPDATE of the whole table) while the searches are measured. The benchmarks search; they do not sweep.
ARCHIVE_AFTER_SECONDS = 100 * 365 * 86400.0
NO_ARCHIVE = Settings(archive_after_seconds=ARCHIVE_AFTER_SECONDS)
NO_ARCHIVE_ENV = {"OPENHI_ARCHIVE_AFTER_SECONDS": str(ARCHIVE_AFTER_SECONDS)}
T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
YEAR = 365 * 86400.0


COLUMNS = (
    "id, datastore_id, latest_version, content_version, state, workflow_status, is_primary, created_at,"
    " updated_at, last_accessed_at, storage_tier, patient_id, patient_name, accession_number, study_id,"
    " study_uid, series_uid, study_date, study_time, study_datetime, num_series, num_instances"
)


def generate_rows(n: int) -> Iterator[tuple[Any, ...]]:
    """``n`` deterministic image-set rows (values for COLUMNS), the same at every size and backend."""
    rng = random.Random(7)
    for i in range(n):
        created = T0 + rng.random() * YEAR
        updated = created + rng.random() * 86400 * 30
        dated = rng.random() > 0.1
        date = (
            f"{2004 + rng.randrange(20)}{1 + rng.randrange(12):02d}{1 + rng.randrange(28):02d}"
            if dated
            else None
        )
        time_ = f"{rng.randrange(24):02d}{rng.randrange(60):02d}00" if dated else None
        key = f"{date}{time_}.000000" if dated else None
        yield (
            f"{i:032x}", DS, 1, 1, "ACTIVE", "CREATED", int(rng.random() < 0.9), created, updated,
            created, "FREQUENT_ACCESS", f"PAT{i // 10:06d}", "DOE^J", f"ACC{i // 3:07d}", f"S{i // 3}",
            f"1.2.826.{i // 3}", f"1.2.826.{i // 3}.{i % 3}", date, time_, key, 1, 1,
        )  # fmt: skip


def populate(index: SqliteIndex, n: int) -> None:
    index.insert_datastore(Datastore(DS, "scale", "ACTIVE", "HTJ2K", T0, T0))
    marks = ", ".join("?" * len(COLUMNS.split(",")))
    with index.db.write() as conn:
        conn.executemany(f"INSERT INTO image_sets ({COLUMNS}) VALUES ({marks})", generate_rows(n))
        conn.execute("ANALYZE")


def _iso(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def _dt(date: str) -> dict[str, Any]:
    return {"DICOMStudyDateAndTime": {"DICOMStudyDate": date}}


def queries(n: int) -> dict[str, dict[str, Any] | None]:
    """Representative queries; the EQUAL values name rows that exist (row n/2)."""
    i = n // 2
    patient, accession, study, series = (
        f"PAT{i // 10:06d}",
        f"ACC{i // 3:07d}",
        f"1.2.826.{i // 3}",
        f"1.2.826.{i // 3}.{i % 3}",
    )
    eq = lambda v: {"values": [v], "operator": "EQUAL"}  # noqa: E731
    between = lambda a, b: {"values": [a, b], "operator": "BETWEEN"}  # noqa: E731
    month = between({"createdAt": _iso(T0 + 0.5 * YEAR)}, {"createdAt": _iso(T0 + 0.5 * YEAR + 30 * 86400)})
    updated_month = between(
        {"updatedAt": _iso(T0 + 0.5 * YEAR)}, {"updatedAt": _iso(T0 + 0.5 * YEAR + 30 * 86400)}
    )
    return {
        "all, updatedAt DESC": None,
        "patient EQUAL": {"filters": [eq({"DICOMPatientId": patient})]},
        "accession EQUAL": {"filters": [eq({"DICOMAccessionNumber": accession})]},
        "study UID EQUAL": {"filters": [eq({"DICOMStudyInstanceUID": study})]},
        "series UID EQUAL": {"filters": [eq({"DICOMSeriesInstanceUID": series})]},
        "isPrimary, studyDate DESC": {
            "filters": [eq({"isPrimary": True})],
            "sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": "DESC"},
        },
        "createdAt 1 month": {"filters": [month]},
        "studyDate 1 year, ASC": {
            "filters": [between(_dt("20150101"), _dt("20151231"))],
            "sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": "ASC"},
        },
        "patient AND studyDate": {
            "filters": [eq({"DICOMPatientId": patient}), between(_dt("20040101"), _dt("20231231"))]
        },
        "not primary AND createdAt month, createdAt ASC": {
            "filters": [eq({"isPrimary": False}), month],
            "sort": {"sortField": "createdAt", "sortOrder": "ASC"},
        },
        "updatedAt whole range, createdAt DESC": {
            "filters": [between({"updatedAt": _iso(T0 - YEAR)}, {"updatedAt": _iso(T0 + 2 * YEAR)})],
            "sort": {"sortField": "createdAt", "sortOrder": "DESC"},
        },
        # a range on one time field sorted by another (issue #6): read bucket by bucket
        "updatedAt 1 month, createdAt DESC": {
            "filters": [updated_month],
            "sort": {"sortField": "createdAt", "sortOrder": "DESC"},
        },
        "createdAt 1 month, studyDate DESC": {
            "filters": [month],
            "sort": {"sortField": "DICOMStudyDateAndTime", "sortOrder": "DESC"},
        },
        "studyDate 1 month, updatedAt DESC": {"filters": [between(_dt("20150601"), _dt("20150630"))]},
        "primary, createdAt 5 months, updatedAt ASC": {
            "filters": [
                eq({"isPrimary": True}),
                between({"createdAt": _iso(T0 + 0.2 * YEAR)}, {"createdAt": _iso(T0 + 0.6 * YEAR)}),
            ],
            "sort": {"sortField": "updatedAt", "sortOrder": "ASC"},
        },
    }


def timed(fn: Any, repeat: int) -> tuple[float, float]:
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return percentile(samples, 50) * 1000, percentile(samples, 99) * 1000


def http_search(url: str, body: bytes, repeat: int) -> tuple[float, float]:
    """p50/p99 of one SearchImageSets request replayed over one keep-alive connection (shared loadgen)."""
    result = asyncio.run(run_each([signed_post(url, body)] * (repeat + 1), 1, timeout=600))
    assert result.errors == 0, result.statuses
    return result.p50_ms, result.p99_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    import json

    with tempfile.TemporaryDirectory(prefix="openhi-bench-search-") as tmp:
        data_dir = Path(tmp) / "data"
        index = SqliteIndex(str(data_dir / "index.sqlite3"))
        t0 = time.perf_counter()
        populate(index, args.sets)
        print(f"inserted {args.sets} image sets in {time.perf_counter() - t0:.1f} s", flush=True)
        env = Env(NO_ARCHIVE, index, MemoryBlobStore(), None, ThreadTaskRunner())  # type: ignore[arg-type]
        paginator = Paginator(b"bench")
        reader = ImageSetReader(env, paginator, DatastoreService(env, paginator))
        rows: list[dict[str, Any]] = []
        plans: dict[str, str] = {}
        for name, criteria in queries(args.sets).items():
            query = parse_criteria(criteria)
            conn = index.db.conn
            buckets = plan_buckets(query, lambda column, c=conn: read_extent(c, DS, column))
            if buckets is not None and not buckets.walk:
                sql, named = build_bucket_sql(DS, query, buckets, None, 51)
                lines = [r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", named)]
                reads = sorted({line for line in lines if "image_sets" in line})
                plans[name] = f"{len(buckets.days)} days + {len(buckets.blocks)} blocks: " + " | ".join(reads)
            else:
                unindexed = (
                    choose_unindexed(conn, DS, query) if buckets is None else frozenset({buckets.column})
                )
                sql, sql_args = build_search_sql(DS, query, None, 51, unindexed=unindexed)
                plans[name] = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", sql_args))
            page = reader.search(DS, criteria, max_results=50, next_token=None)
            p50, p99 = timed(
                lambda c=criteria: reader.search(DS, c, max_results=50, next_token=None), args.repeat
            )
            rows.append({"query": name, "hits": len(page.image_sets), "core_p50_ms": p50, "core_p99_ms": p99})
            print(table([rows[-1]]).splitlines()[-1], flush=True)
        # deep pagination: follow 20 tokens of the default query
        token = None
        deep = []
        for _ in range(20):
            t1 = time.perf_counter()
            token = reader.search(DS, None, max_results=50, next_token=token).next_token
            deep.append(time.perf_counter() - t1)
        reader.close()
        index.close()

        server = RunningServer(data_dir, env=NO_ARCHIVE_ENV).start()
        try:
            path = f"/datastore/{DS}/searchImageSets?maxResults=50"
            http_search(
                server.endpoint + path, b"{}", 20
            )  # warm-up: the server's first requests open its pool
            for row, criteria in zip(rows, queries(args.sets).values(), strict=True):
                body = json.dumps(
                    criteria if criteria is not None else {}, default=lambda d: d.timestamp()
                ).encode()
                row["http_p50_ms"], row["http_p99_ms"] = http_search(
                    server.endpoint + path, body, args.repeat
                )
        finally:
            server.stop()

    print()
    print(table(rows))
    print(f"\n20 consecutive pages of 50 (default sort): p50 {percentile(deep, 50) * 1000:.2f} ms per page")
    scans = {k: v for k, v in plans.items() if "SCAN image_sets" in v}
    print("full scans:", scans or "none")
    for name, plan in plans.items():
        print(f"  {name}: {plan}")
    out = write_result(
        "search-scale",
        {"image_sets": args.sets, "repeat": args.repeat, "queries": rows, "plans": plans,
         "deep_page_p50_ms": percentile(deep, 50) * 1000},
    )  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
