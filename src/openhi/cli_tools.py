"""Client-side commands: ``openhi import`` (stage files, run a job, report) and ``openhi diff``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def _client(endpoint: str) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client(
        "medical-imaging",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "openhi-local"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "openhi-local"),
        config=Config(inject_host_prefix=False, retries={"max_attempts": 3}),
    )


def _files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise SystemExit(f"openhi import: {raw} is neither a file nor a folder")
    return found


def _bar(label: str, done: int, total: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r{label:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def _import(args: argparse.Namespace) -> int:
    files = _files(args.paths)
    bucket = args.bucket
    stage = f"import-{uuid.uuid4().hex[:12]}"
    buckets = Path(args.data_dir) / "buckets" / bucket
    for i, f in enumerate(files, 1):
        target = buckets / stage / "input" / f"{i:06d}-{f.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        _bar("staged", i, len(files))
    sys.stderr.write("\n")
    client = _client(args.endpoint)
    job = client.start_dicom_import_job(
        datastoreId=args.datastore,
        jobName=stage,
        dataAccessRoleArn="arn:aws:iam::123456789012:role/openhi-local-import",
        inputS3Uri=f"s3://{bucket}/{stage}/input/",
        outputS3Uri=f"s3://{bucket}/{stage}/output/",
    )
    print(f"job {job['jobId']} submitted ({len(files)} files scanned)")
    if not args.wait:
        return 0
    spinner = "|/-\\"
    tick = 0
    while True:
        props = client.get_dicom_import_job(datastoreId=args.datastore, jobId=job["jobId"])["jobProperties"]
        if props["jobStatus"] in ("COMPLETED", "FAILED"):
            break
        sys.stderr.write(f"\rjob {props['jobStatus']} {spinner[tick % 4]}")
        sys.stderr.flush()
        tick += 1
        time.sleep(0.2)
    sys.stderr.write("\n")
    if props["jobStatus"] == "FAILED":
        print(f"job FAILED: {props.get('message', '')}")
        return 1
    out = props["outputS3Uri"][len(f"s3://{bucket}/") :]
    manifest = json.loads((buckets / out / "job-output-manifest.json").read_text())["jobSummary"]
    rows = [
        ("files scanned", manifest["numberOfScannedFiles"]),
        ("files imported", manifest["numberOfImportedFiles"]),
        ("files failed (input)", manifest["numberOfFilesWithCustomerError"]),
        ("files failed (server)", manifest["numberOfFilesWithServerError"]),
        ("image sets", manifest["numberOfGeneratedImageSets"]),
    ]
    for label, value in rows:
        print(f"{label:<24}{value:>8}")
    for s in manifest["imageSetsSummary"]:
        kind = "primary" if s.get("isPrimary") else "non-primary"
        print(
            f"  {s['imageSetId']}  v{s.get('imageSetVersion', 1)}  {kind:<11} {s['numberOfMatchedSOPInstances']} instances"
        )
    failures = (buckets / out / "FAILURE" / "failure.ndjson").read_text().splitlines()
    for line in failures[:20]:
        entry = json.loads(line)
        print(f"  FAILED {entry['inputFile']}: {entry['exception']['message']}")
    print(f"job {props['jobStatus']}; reports in {props['outputS3Uri']}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    import urllib.request

    url = (
        f"{args.endpoint}/openhi/datastore/{args.datastore}/imageSet/{args.image_set}/diff"
        f"?from={args.from_version}&to={args.to_version}"
    )
    try:
        with urllib.request.urlopen(url) as resp:
            changes = json.loads(resp.read())
    except OSError as exc:
        print(f"openhi diff: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(changes, indent=2))
        return 0
    for change in changes["changes"]:
        old = json.dumps(change.get("from")) if "from" in change else ""
        new = json.dumps(change.get("to")) if "to" in change else ""
        print(f"{change['change']:<8} {change['level']:<9} {change['path']}  {old} -> {new}".rstrip(" ->"))
    if not changes["changes"]:
        print("no differences")
    return 0


def register(sub: Any) -> None:
    imp = sub.add_parser("import", help="stage local DICOM files and run an import job through the API")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--datastore", required=True)
    imp.add_argument("--endpoint", default="http://127.0.0.1:8080")
    imp.add_argument("--data-dir", default="./openhi-data", help="the server's data dir (embedded buckets)")
    imp.add_argument("--bucket", default="openhi-staging")
    imp.add_argument("--wait", action="store_true", help="wait for the job and print a summary")
    imp.set_defaults(func=_import)

    diff = sub.add_parser("diff", help="attributes added, removed or changed between two image set versions")
    diff.add_argument("--datastore", required=True)
    diff.add_argument("--image-set", required=True)
    diff.add_argument("--from", dest="from_version", required=True)
    diff.add_argument("--to", dest="to_version", required=True)
    diff.add_argument("--endpoint", default="http://127.0.0.1:8080")
    diff.add_argument("--json", action="store_true")
    diff.set_defaults(func=_diff)
