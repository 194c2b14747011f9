"""``openhi import``: upload local DICOM files through the server, run an import job, report every file."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openhi.cli_client import (
    FAILED,
    USAGE,
    CommandError,
    Connection,
    api_error,
    clean_exit,
    resolve_endpoint,
)

ROLE = "arn:aws:iam::123456789012:role/openhi-local-import"
DEFAULT_BUCKET = "openhi-staging"
_BUCKET_RE = re.compile(r"[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
UPLOAD = "/openhi/upload"


def collect(paths: list[str]) -> list[Path]:
    """The files named, and every file under the folders named (sorted); an empty result is an error."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise CommandError(f"{raw} is neither a file nor a folder")
    if not found:
        raise CommandError(f"no files to import in {', '.join(paths)}")
    return found


def check_datastore(api: Any, datastore_id: str, endpoint: str) -> None:
    """The datastore exists and is ACTIVE (else ``CommandError``: nothing is staged)."""
    try:
        props = api.get_datastore(datastoreId=datastore_id)["datastoreProperties"]
    except Exception as exc:
        raise api_error(exc, endpoint) from exc
    if props["datastoreStatus"] != "ACTIVE":
        raise CommandError(f"datastore {datastore_id} is {props['datastoreStatus']}, not ACTIVE")


@dataclass
class Stage:
    """The files uploaded for one job, under ``s3://{bucket}/{stage_id}/input/``."""

    conn: Connection
    bucket: str
    stage_id: str = field(default_factory=lambda: f"import-{uuid.uuid4().hex[:12]}")
    names: dict[str, Path] = field(default_factory=dict)  # staged file name -> local path
    started: bool = False

    @property
    def input_uri(self) -> str:
        return f"s3://{self.bucket}/{self.stage_id}/input/"

    @property
    def output_uri(self) -> str:
        return f"s3://{self.bucket}/{self.stage_id}/output/"

    def upload(self, files: list[Path]) -> None:
        bar = _Progress("uploaded", len(files))
        for i, path in enumerate(files, 1):
            name = f"{i:06d}-{_UNSAFE.sub('_', path.name)[-100:]}"
            reply = self.conn.request(
                "PUT", f"{UPLOAD}/{self.bucket}/{self.stage_id}/input/{name}", file=path
            )
            if reply.status == 404 and reply.error_message().startswith("No openhi route"):
                raise CommandError(f"{self.conn.endpoint} has no upload route (an older openhi?)")
            if reply.status != 200:
                raise CommandError(f"uploading {path} failed: {reply.error_message()}")
            self.names[name] = path
            self.started = True
            bar.show(i)
        bar.done()

    def remove(self, what: str = "") -> str | None:
        """Delete the staged objects (``what``: ``input/`` for the inputs only); a problem, or None."""
        if not self.started:
            return None
        try:
            reply = self.conn.request("DELETE", f"{UPLOAD}/{self.bucket}/{self.stage_id}/{what}")
        except CommandError as exc:
            return exc.message
        return None if reply.status == 200 else reply.error_message()

    def local(self, input_file: str) -> str:
        """The local path of a report's ``inputFile`` (a staged key)."""
        path = self.names.get(input_file.rsplit("/", 1)[-1])
        return str(path) if path is not None else input_file


class _Progress:
    """A progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.on = sys.stderr.isatty()

    def show(self, done: int, width: int = 30) -> None:
        if self.on:
            filled = width * done // max(self.total, 1)
            sys.stderr.write(
                f"\r{self.label:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
            )
            sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            sys.stderr.write("\n")


def run_import(args: argparse.Namespace) -> int:
    endpoint = resolve_endpoint(args.endpoint)
    if not _BUCKET_RE.fullmatch(args.bucket):
        raise CommandError(f"--bucket {args.bucket!r} is not a valid S3 bucket name")
    if args.data_dir is not None:
        print(
            "openhi import: --data-dir is ignored: files are uploaded through the endpoint", file=sys.stderr
        )
    files = collect(args.paths)
    conn = Connection.open(endpoint)
    api = conn.api()
    check_datastore(api, args.datastore, endpoint)
    stage = Stage(conn, args.bucket)
    try:
        stage.upload(files)
        job = api.start_dicom_import_job(
            datastoreId=args.datastore,
            jobName=stage.stage_id,
            dataAccessRoleArn=ROLE,
            inputS3Uri=stage.input_uri,
            outputS3Uri=stage.output_uri,
        )
    except BaseException as exc:
        problem = stage.remove()
        if problem is not None:
            print(f"openhi import: could not remove {stage.input_uri}: {problem}", file=sys.stderr)
        if isinstance(exc, Exception) and not isinstance(exc, CommandError):
            raise api_error(exc, endpoint) from exc
        raise
    job_id = job["jobId"]
    print(f"job {job_id} submitted: {len(files)} files uploaded to {stage.input_uri}")
    if not args.wait:
        return 0
    try:
        props = _wait(api, args.datastore, job_id)
    except KeyboardInterrupt:
        raise CommandError(f"stopped waiting; job {job_id} goes on in the server", 130) from None
    except Exception as exc:
        raise api_error(exc, endpoint) from exc
    stage.remove("input/")  # the job has read them; its reports stay under the output URI
    reports = read_reports(conn, props["outputS3Uri"])
    return report(props, reports, stage, len(files))


def _wait(api: Any, datastore_id: str, job_id: str) -> dict[str, Any]:
    spinner, tick = "|/-\\", 0
    tty = sys.stderr.isatty()
    while True:
        props: dict[str, Any] = api.get_dicom_import_job(datastoreId=datastore_id, jobId=job_id)[
            "jobProperties"
        ]
        if props["jobStatus"] in ("COMPLETED", "FAILED"):
            if tty:
                sys.stderr.write("\n")
            return props
        if tty:
            sys.stderr.write(f"\rjob {props['jobStatus']} {spinner[tick % 4]}")
            sys.stderr.flush()
        tick += 1
        time.sleep(min(0.1 * tick, 1.0))


@dataclass
class Reports:
    """A job's reports read back through the server (``manifest`` None when they cannot be read)."""

    manifest: dict[str, Any] | None
    success: list[dict[str, Any]] = field(default_factory=list)
    failure: list[dict[str, Any]] = field(default_factory=list)
    warning: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


def read_reports(conn: Connection, output_uri: str) -> Reports:
    """The manifest and SUCCESS/FAILURE/WARNING ndjson under ``output_uri`` (``GET /openhi/upload/…``)."""
    bucket, _, prefix = output_uri.removeprefix("s3://").partition("/")

    def get(name: str) -> bytes | None:
        reply = conn.request("GET", f"{UPLOAD}/{bucket}/{prefix}{name}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise CommandError(f"reading {output_uri}{name} failed: {reply.error_message()}")
        return reply.body

    manifest = get("job-output-manifest.json")
    if manifest is None:
        return Reports(
            None, problem=f"the job's reports in {output_uri} cannot be read through this endpoint"
        )

    def lines(name: str) -> list[dict[str, Any]]:
        data = get(name) or b""
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    return Reports(
        json.loads(manifest)["jobSummary"],
        lines("SUCCESS/success.ndjson"),
        lines("FAILURE/failure.ndjson"),
        lines("WARNING/warning.ndjson"),
    )


def _warnings(entry: dict[str, Any]) -> list[str]:
    """``TYPE: message`` for each warning of one WARNING report line."""
    found = entry.get("importResponse", {}).get("warnings") or entry.get("warnings") or []
    if not found and "exception" in entry:
        found = [entry["exception"]]
    out = []
    for w in found:
        kind = w.get("type") or w.get("exceptionType") or w.get("warning_reason_code") or "WARNING"
        out.append(f"{kind}: {w.get('message', '')}")
    return out or [json.dumps(entry)]


def report(props: dict[str, Any], reports: Reports, stage: Stage, uploaded: int) -> int:
    """Print the job's per-file failures and warnings and true counts; the exit status."""
    if props["jobStatus"] == "FAILED":
        print(f"job {props['jobId']} FAILED: {props.get('message', '')}")
        return FAILED
    if reports.manifest is None:
        print(f"job {props['jobId']} {props['jobStatus']}; reports in {props['outputS3Uri']}")
        raise CommandError(f"{reports.problem}: per-file results unknown", FAILED)
    for entry in reports.failure:
        exc = entry.get("exception", {})
        where = stage.local(entry.get("inputFile", "?"))
        print(f"FAILED  {where}: {exc.get('exceptionType', 'Error')}: {exc.get('message', '')}")
    for entry in reports.warning:
        for line in _warnings(entry):
            print(f"WARNING {stage.local(entry.get('inputFile', '?'))}: {line}")
    reported = {stage.local(e.get("inputFile", "")) for e in reports.success + reports.failure}
    missing = [str(p) for p in stage.names.values() if str(p) not in reported]
    for where in missing:
        print(f"MISSING {where}: the job reported no result for this file")
    manifest = reports.manifest
    summaries = manifest.get("imageSetsSummary", [])
    instances = sum(int(s.get("numberOfMatchedSOPInstances", 0)) for s in summaries)
    rows = [
        ("files uploaded", uploaded),
        ("files scanned", manifest.get("numberOfScannedFiles", 0)),
        ("files imported", len(reports.success)),
        ("files failed", len(reports.failure)),
        ("files with warnings", len({e.get("inputFile") for e in reports.warning})),
        ("instances imported", instances),
        ("image sets", len(summaries)),
    ]
    for label, value in rows:
        print(f"{label:<22}{value:>8}")
    for s in summaries:
        kind = "primary" if s.get("isPrimary") else "non-primary"
        n = int(s.get("numberOfMatchedSOPInstances", 0))
        version = s.get("imageSetVersion", 1)
        print(f"  {s['imageSetId']}  v{version}  {kind:<11} {n} instance{'' if n == 1 else 's'}")
    ok = not reports.failure and not missing and len(reports.success) == uploaded
    print(f"job {props['jobId']} {props['jobStatus']}; reports in {props['outputS3Uri']}")
    return 0 if ok else FAILED


def add_parser(sub: Any) -> None:
    imp = sub.add_parser(
        "import",
        help="upload local DICOM files through the endpoint and run an import job",
        description="Upload DICOM P10 files (folders are searched recursively) through the server's upload "
        "route, start a DICOM import job, and with --wait report every file. Exit status: 0 when every "
        f"file imported, {FAILED} when any failed, {USAGE} for usage or connection errors.",
    )
    imp.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders")
    imp.add_argument("--datastore", metavar="ID", required=True, help="the ACTIVE datastore to import into")
    imp.add_argument(
        "--endpoint",
        metavar="URL",
        default=None,
        help="server URL (default $AWS_ENDPOINT_URL_MEDICAL_IMAGING, else http://127.0.0.1:8080)",
    )
    imp.add_argument(
        "--bucket", default=DEFAULT_BUCKET, help=f"bucket the files are staged in (default {DEFAULT_BUCKET})"
    )
    imp.add_argument(
        "--wait", action="store_true", help="wait for the job; print failures, warnings and counts"
    )
    imp.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="deprecated and ignored: files are uploaded through the endpoint",
    )
    imp.set_defaults(func=clean_exit("import", run_import))
