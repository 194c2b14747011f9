"""Scale-out benchmark: SearchImageSets on PostgreSQL at 10k and 1M image sets, import throughput with
1 vs 2 workers, GetImageFrame frames/s from S3 (SeaweedFS) vs the file system.

Usage: .venv/bin/python bench/scale.py [--sizes 10000,1000000] [--repeat 200] [--skip-import] [--skip-frames]
       [--search-only] (SearchImageSets alone: no SeaweedFS, no import, no frames)
Needs PostgreSQL (OPENHI_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test) and the
``weed`` binary. Rows are generated directly with COPY into a fresh schema (dropped at the end). Prints a
table and writes bench/results/scale-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from _common import table, write_result
from loadgen import run_each
from search_scale import (  # the same data shape and queries at every size
    COLUMNS,
    DS,
    NO_ARCHIVE,
    NO_ARCHIVE_ENV,
    T0,
    generate_rows,
    queries,
    timed,
)
from serve import measure, signed_post
from wrk import available as wrk_available

from openhi.core.datastores import DatastoreService
from openhi.core.env import Env
from openhi.core.pagination import Paginator
from openhi.core.reads import ImageSetReader
from openhi.core.records import Datastore
from openhi.core.search import parse_criteria
from openhi.storage.blobs_memory import MemoryBlobStore
from openhi.storage.postgres.index import PostgresIndex
from openhi.storage.sqlite.search import extent_sql, plan_buckets
from openhi.storage.tasks_threads import ThreadTaskRunner
from openhi.testing import RunningServer
from openhi.testing.distributed import DistributedDeployment, postgres_url
from openhi.testing.weed import WeedServer

# -- query helpers (HTTP goes through the shared load generator, bench/loadgen.py)


def http_search(url: str, body: bytes, repeat: int) -> tuple[float, float]:
    """p50/p99 of one SearchImageSets request replayed over one keep-alive connection."""
    result = asyncio.run(run_each([signed_post(url, body)] * (repeat + 1), 1, timeout=600))
    assert result.errors == 0, result.statuses
    return result.p50_ms, result.p99_ms


def populate(url: str, schema: str, n: int) -> float:
    """``n`` image sets shaped like bench/search_scale.py's, with COPY; the seconds the COPY took.

    Then VACUUM (ANALYZE): the state autovacuum leaves an insert-only table in shortly after (visibility
    map set, statistics); without it autovacuum would run in the middle of the measurements.
    """
    index = PostgresIndex(url, schema=schema)  # creates the tables
    index.insert_datastore(Datastore(DS, "scale", "ACTIVE", "HTJ2K", T0, T0))
    index.close()
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(f"SET search_path TO {schema}")
        with conn.cursor().copy(f"COPY image_sets ({COLUMNS}) FROM STDIN") as copy:
            for row in generate_rows(n):
                copy.write_row(row)
    seconds = time.perf_counter() - t0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM (ANALYZE) {schema}.image_sets")
    return seconds


def search_plan(index: PostgresIndex, criteria: dict[str, Any] | None) -> str:
    """How the adapter reads a query: bucket by bucket (how many), or one index (build_search_sql)."""
    query = parse_criteria(criteria)
    with index.db.tx() as cur:

        def extent(column: str) -> tuple[int, int] | None:
            sql, args = extent_sql(DS, column, postgres=True)
            row = cur.execute(sql, args).fetchone()
            return None if row is None or row["low"] is None else (int(row["low"]), int(row["high"]))

        buckets = plan_buckets(query, extent)
    if buckets is None or buckets.walk:
        return "one index"
    return f"{len(buckets.days)} days + {len(buckets.blocks)} blocks"


def search_bench(url: str, n: int, repeat: int, tmp: Path) -> list[dict[str, Any]]:
    schema = f"openhi_bench_{secrets.token_hex(4)}"
    try:
        seconds = populate(url, schema, n)
        print(f"{n} image sets generated with COPY in {seconds:.1f} s", flush=True)
        index_url = f"{url}{'&' if '?' in url else '?'}schema={schema}"
        index = PostgresIndex(index_url)
        env = Env(NO_ARCHIVE, index, MemoryBlobStore(), None, ThreadTaskRunner())  # type: ignore[arg-type]
        paginator = Paginator(b"bench")
        reader = ImageSetReader(env, paginator, DatastoreService(env, paginator))
        rows: list[dict[str, Any]] = []
        for name, criteria in queries(n).items():
            page = reader.search(DS, criteria, max_results=50, next_token=None)
            p50, p99 = timed(lambda c=criteria: reader.search(DS, c, max_results=50, next_token=None), repeat)
            rows.append(
                {
                    "sets": n,
                    "query": name,
                    "hits": len(page.image_sets),
                    "core_p50_ms": p50,
                    "core_p99_ms": p99,
                    "plan": search_plan(index, criteria),
                    "copy_s": seconds,
                }
            )
        reader.close()
        index.close()
        server = RunningServer(
            tmp / f"search-{n}",
            extra_args=["--index", index_url, "--no-workers", "--blobs", "memory://"],
            env=NO_ARCHIVE_ENV,
        ).start()
        try:
            path = f"/datastore/{DS}/searchImageSets?maxResults=50"
            http_search(
                server.endpoint + path, b"{}", 20
            )  # warm-up: the server's first requests open its pool
            for row, criteria in zip(rows, queries(n).values(), strict=True):
                body = json.dumps(criteria or {}, default=lambda d: d.timestamp()).encode()
                row["http_p50_ms"], row["http_p99_ms"] = http_search(server.endpoint + path, body, repeat)
                print(table([row]).splitlines()[-1], flush=True)
        finally:
            server.stop()
        return rows
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def import_bench(tmp: Path, weed: WeedServer, jobs: int, files: int) -> list[dict[str, Any]]:
    from contract.helpers import active_datastore, wait_for
    from contract.imaging import ROLE, stage
    from dicom_factory import make_ct_series

    rows = []
    for workers in (1, 2):
        with DistributedDeployment(
            tmp / f"import-{workers}", weed=weed, workers=workers, api_processes=1
        ) as dep:
            dep.wait_workers()
            client = dep.client()
            ds_id = active_datastore(client, "bench")
            uris = [
                stage(
                    dep, {f"{i}.dcm": d for i, d in enumerate(make_ct_series(files, 256, 256, seed=100 + j))}
                )
                for j in range(jobs)
            ]
            t0 = time.perf_counter()
            ids = [
                client.start_dicom_import_job(
                    datastoreId=ds_id,
                    dataAccessRoleArn=ROLE,
                    inputS3Uri=u,
                    outputS3Uri="s3://output-bucket/b/",
                )["jobId"]
                for u in uris
            ]
            for job_id in ids:
                wait_for(
                    lambda j=job_id, c=client, d=ds_id: c.get_dicom_import_job(datastoreId=d, jobId=j)[
                        "jobProperties"
                    ]["jobStatus"],
                    lambda s: s in ("COMPLETED", "FAILED"),
                    timeout=900,
                    step=0.1,
                )
            seconds = time.perf_counter() - t0
        rows.append(
            {
                "workers": workers,
                "jobs": jobs,
                "files": jobs * files,
                "seconds": seconds,
                "files_per_s": jobs * files / seconds,
            }
        )
        print(table([rows[-1]]).splitlines()[-1], flush=True)
    return rows


def frames_bench(tmp: Path, weed: WeedServer, url: str, seconds: float) -> list[dict[str, Any]]:
    from contract.helpers import active_datastore
    from contract.imaging import run_import
    from dicom_factory import make_ct_series

    rows = []
    for label in ("file", "s3"):
        schema = f"openhi_bench_{secrets.token_hex(4)}"
        bucket = f"bench-blobs-{secrets.token_hex(3)}"
        weed.create_bucket(bucket)
        blobs = f"file://{tmp / ('frames-' + schema)}" if label == "file" else f"s3://{bucket}/b"
        args = ["--index", f"{url}{'&' if '?' in url else '?'}schema={schema}", "--blobs", blobs]
        args += ["--s3-endpoint-url", weed.endpoint_url]
        server = RunningServer(tmp / f"frames-{label}", extra_args=args, env=weed.environment()).start()
        try:
            client = server.client()
            ds_id = active_datastore(client, "frames")
            result = run_import(
                client,
                _S3Staging(server, weed),
                ds_id,
                {f"{i}.dcm": d for i, d in enumerate(make_ct_series(20, 512, 512, seed=9))},
            )
            set_id = result["success"][0]["importResponse"]["imageSetId"]
            doc = __import__("contract.imaging", fromlist=["metadata"]).metadata(client, ds_id, set_id)
            frame_ids = [
                f["ID"]
                for s in doc["Study"]["Series"].values()
                for i in s["Instances"].values()
                for f in i["ImageFrames"]
            ]
            path = f"/datastore/{ds_id}/imageSet/{set_id}/getImageFrame"
            requests = [
                signed_post(server.endpoint + path, json.dumps({"imageFrameId": f}).encode())
                for f in frame_ids
            ]
            assert server.proc is not None
            loadgen = "wrk" if wrk_available() else "python"
            stats = measure(requests, 8, seconds, loadgen, server.proc.pid)
            rows.append(
                {
                    "blobs": label,
                    "frames": len(frame_ids),
                    "frames_per_s": stats.get("frames_per_s"),
                    "p50_ms": stats.get("p50_ms"),
                    "p99_ms": stats.get("p99_ms"),
                    "server_cpu_us_per_frame": stats.get("server_cpu_us_per_frame"),
                    "load_generator": loadgen,
                }
            )
            print(table([rows[-1]]).splitlines()[-1], flush=True)
        finally:
            server.stop()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return rows


class _S3Staging:
    """A RunningServer whose import buckets are in SeaweedFS (stage/read through S3)."""

    def __init__(self, server: RunningServer, weed: WeedServer) -> None:
        self.server, self.weed = server, weed

    def stage_object(self, bucket: str, key: str, data: bytes) -> None:
        self.weed.client().put_object(Bucket=bucket, Key=key, Body=data)

    def read_object(self, bucket: str, key: str) -> bytes | None:
        try:
            body: bytes = self.weed.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception:
            return None
        return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-import", action="store_true")
    parser.add_argument("--skip-frames", action="store_true")
    parser.add_argument(
        "--search-only", action="store_true", help="only SearchImageSets (no weed binary needed)"
    )
    args = parser.parse_args()
    url = postgres_url()
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {"postgres": url.split("@")[-1], "sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="openhi-bench-scale-") as raw:
        tmp = Path(raw)
        search: list[dict[str, Any]] = []
        if not args.skip_search:
            for n in sizes:
                search += search_bench(url, n, args.repeat, tmp)
        imports: list[dict[str, Any]] = []
        frames: list[dict[str, Any]] = []
        if not args.search_only:
            weed = WeedServer()
            weed.start(tmp / "weed")
            try:
                imports = [] if args.skip_import else import_bench(tmp, weed, args.jobs, args.files)
                frames = [] if args.skip_frames else frames_bench(tmp, weed, url, args.seconds)
            finally:
                weed.stop()
    if search:
        small, big = min(sizes), max(sizes)
        by = {(r["sets"], r["query"]): r for r in search}
        growth = [
            {"query": q, f"p99_{small}": by[(small, q)]["http_p99_ms"], f"p99_{big}": by[(big, q)]["http_p99_ms"],
             "growth": by[(big, q)]["http_p99_ms"] / by[(small, q)]["http_p99_ms"]}
            for (n, q) in by if n == small
        ]  # fmt: skip
        print("\nSearchImageSets (PostgreSQL)\n" + table(search))
        print("\np99 growth over HTTP\n" + table(growth))
        worst = max(r[f"p99_{big}"] for r in growth)
        print(
            f"worst p99 at {big}: {worst:.2f} ms (goal <= 20 ms); worst growth {max(g['growth'] for g in growth):.2f}x (goal <= 2x)"
        )
        result |= {"search": search, "growth": growth}
    if imports:
        ratio = imports[1]["files_per_s"] / imports[0]["files_per_s"]
        print("\nImport throughput\n" + table(imports) + f"\n2 workers / 1 worker: {ratio:.2f}x")
        result |= {"imports": imports, "import_ratio": ratio}
    if frames:
        print("\nGetImageFrame\n" + table(frames))
        result["frames"] = frames
    print(f"wrote {write_result('scale', result)}")


if __name__ == "__main__":
    main()
