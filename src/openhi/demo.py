"""``python -m openhi.demo`` (``make demo``): PostgreSQL-backed openhi with 2 API processes, 2 workers and SeaweedFS."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openhi.demo", description=__doc__)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("OPENHI_DEMO_POSTGRES_URL", DEFAULT_POSTGRES),
        help=f"PostgreSQL server to use (a fresh schema is created and dropped at exit; default {DEFAULT_POSTGRES})",
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--dir", default="./openhi-demo", help="logs and SeaweedFS data (default ./openhi-demo)"
    )
    args = parser.parse_args(argv)

    from openhi.testing.distributed import DistributedDeployment, unavailable

    reason = unavailable(args.postgres)
    if reason is not None:
        print(f"openhi demo: {reason}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    workdir = Path(args.dir).resolve()
    deployment = DistributedDeployment(workdir, pg_url=args.postgres, port=args.port)
    try:
        deployment.start()
        deployment.wait_workers()
        weed = deployment.weed
        print(
            f"""
openhi demo is running (Ctrl-C stops everything)

  endpoint      {deployment.endpoint}   (2 API processes: serve --workers 2 --no-workers)
  workers       2 x openhi worker        (logs: {workdir}/worker0.log, worker1.log)
  index         {args.postgres}  schema {deployment.schema}
  blobs         {deployment.blobs_url} on SeaweedFS S3 {weed.endpoint_url}
  S3 login      AWS_ACCESS_KEY_ID={weed.environment()["AWS_ACCESS_KEY_ID"]} AWS_SECRET_ACCESS_KEY={weed.environment()["AWS_SECRET_ACCESS_KEY"]}

  aws medical-imaging list-datastores --endpoint-url {deployment.endpoint}
  aws s3 cp ./dicom s3://input-bucket/study1/ --recursive --endpoint-url {weed.endpoint_url}
  (import buckets live in the same SeaweedFS; buckets are created on first upload)
""",
            flush=True,
        )
        while not stop.wait(1.0):
            pass
    finally:
        print("openhi demo: stopping", file=sys.stderr)
        deployment.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
