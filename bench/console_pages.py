"""Console pages at scale: 100,000 image sets in a SQLite index plus one 300-instance CT set with two
versions; p50/p95/p99 of the search page, the image set page and the diff page through the app.

Usage: .venv/bin/python bench/console_pages.py [--sets 100000] [--instances 300] [--repeat 200]
The 100,000 rows are inserted as bench/search_scale.py does; the 300-instance set is stored with STOW-RS
and updated once (StudyDescription), so its page shows the diff of two 300-instance documents. Requests
go through the ASGI app (routing, rendering, headers), not over a socket. Writes
bench/results/console-pages-<stamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _common import table, write_result
from loadgen import percentile
from search_scale import DS, NO_ARCHIVE, populate

from openhi.asgi import OpenHIApp, build_routes
from openhi.auth.routes import RouteTable
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.console.routes import ROUTES
from openhi.core.stow import StowPart
from openhi.services import ServerConfig, build_services

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_factory import make_ct_series


def get(app: OpenHIApp, path: str) -> tuple[int, bytes]:
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1")],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def timed(app: OpenHIApp, path: str, repeat: int) -> dict[str, float]:
    status, body = get(app, path)  # warm
    assert status == 200, (path, status, body[:300])
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        get(app, path)
        seconds.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": percentile(seconds, 50),
        "p95_ms": percentile(seconds, 95),
        "p99_ms": percentile(seconds, 99),
        "bytes": len(body),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        data = Path(work)
        config = ServerConfig(data_dir=data, settings=NO_ARCHIVE, pixel_workers=2, import_threads=0)
        services = build_services(config)
        try:
            populate(services.env.index, args.sets)  # type: ignore[arg-type]
            parts = []
            for i, blob in enumerate(make_ct_series(args.instances, rows=64, cols=64, seed=5)):
                path = data / f"part{i}.dcm"
                path.write_bytes(blob)
                parts.append(StowPart(path, len(blob)))
            stored = services.stow.store(DS, parts)
            set_id = stored.stored[0].image_set_id
            head = services.env.index.get_image_set(DS, set_id)
            assert head is not None
            update = b'{"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "Bench"}}}'
            services.writes.update(DS, set_id, latest_version=head.latest_version, updatable=update)
            for _ in range(600):
                head = services.env.index.get_image_set(DS, set_id)
                if head is not None and head.state == "ACTIVE":
                    break
                time.sleep(0.05)
            assert head is not None
            latest = head.latest_version
            app = OpenHIApp(
                services, SigV4Verifier(None), routes=RouteTable([*build_routes().routes, *ROUTES])
            )
            base = f"/console/datastores/{DS}"
            pages = {
                "datastores": "/",
                "search (no criteria)": f"{base}/imagesets",
                "search (PatientID)": f"{base}/imagesets?patient_id=PAT005000",
                "search (date range, sorted by study date)": f"{base}/imagesets?date_from=2010-01-01"
                "&date_to=2015-12-31&sort=DICOMStudyDateAndTime&order=ASC",
                "search (3 criteria)": f"{base}/imagesets?patient_id=PAT005000&accession=ACC0016667&primary=yes",
                f"image set ({args.instances} instances, diff {latest - 1}->{latest})": f"{base}/imagesets/{set_id}",
                f"diff 1->{latest} ({args.instances} instances)": f"{base}/imagesets/{set_id}?from=1&to={latest}",
            }
            rows = [{"page": name, **timed(app, path, args.repeat)} for name, path in pages.items()]
        finally:
            services.close()
    print(table(rows))
    write_result("console-pages", {"image_sets": args.sets, "instances": args.instances, "pages": rows})


if __name__ == "__main__":
    main()
