"""``openhi export``: Part 10 files of an image set (version), a series, a study or a datastore, over WADO-RS."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from openhi.cli_client import FAILED, USAGE, CommandError, Connection, clean_exit, resolve_endpoint
from openhi.cli_import import check_datastore
from openhi.export_http import Client
from openhi.export_plan import ELE, Item, Plan, make_plan
from openhi.export_sinks import Sink, open_sink

STORED = "stored"
#: instances fetched at a time (each thread keeps one keep-alive connection)
THREADS = 4


class Progress:
    """Progress on stderr: a bar redrawn in place on a terminal, else a plain line every tenth."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self._next = 0.1
        self._drawn = 0.0

    def show(self, done: int, failed: int) -> None:
        fraction = done / max(self.total, 1)
        extra = f", {failed} failed" if failed else ""
        if self.tty:
            now = time.monotonic()
            if now - self._drawn < 0.1 and done < self.total:
                return
            self._drawn = now
            width = 30
            filled = int(width * fraction)
            bar = "#" * filled + "." * (width - filled)
            sys.stderr.write(f"\rexporting [{bar}] {done}/{self.total}{extra}")
            sys.stderr.flush()
        elif fraction >= self._next or done == self.total:
            while self._next <= fraction:
                self._next += 0.1
            print(f"exported {done}/{self.total}{extra}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and self.total:
            sys.stderr.write("\n")


@dataclass
class Tally:
    """What happened to each instance (updated from the worker threads)."""

    exported: int = 0
    skipped: int = 0
    failed: list[tuple[Item, str]] = field(default_factory=list)
    bytes_written: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> int:
        return self.exported + self.skipped + len(self.failed)


def _instance_path(datastore_id: str, item: Item) -> tuple[str, str]:
    path = (
        f"/datastore/{datastore_id}/studies/{item.study_uid}/series/{item.series_uid}"
        f"/instances/{item.sop_uid}"
    )
    query = f"imageSetId={quote(item.image_set_id, safe='')}"
    if item.version is not None:
        query += f"&version={item.version}"
    return path, query


def fetch(client: Client, datastore_id: str, item: Item, syntax: str) -> bytes:
    """The instance as a Part 10 file in ``syntax`` (``*`` = stored), from WADO-RS.

    Raises OSError (the server refused or answered something else) and CommandError (unreachable).
    """
    path, query = _instance_path(datastore_id, item)
    accept = f"application/dicom; transfer-syntax={syntax}"
    answer = client.send("GET", path, query=query, headers={"Accept": accept})
    if answer.status != 200:
        raise OSError(f"HTTP {answer.status}: {answer.error_message()}")
    want = item.syntax(STORED if syntax == "*" else syntax)
    if not answer.content_type.startswith("application/dicom") or f"transfer-syntax={want}" not in (
        answer.content_type
    ):
        raise OSError(f"the server answered {answer.content_type!r}, not application/dicom in {want}")
    if answer.body[128:132] != b"DICM":
        raise OSError("the server's answer is not a Part 10 file")
    return answer.body


def _one(client: Client, sink: Sink, datastore_id: str, item: Item, wanted: str, tally: Tally) -> None:
    syntax = item.syntax(wanted)
    try:
        if sink.verified(item, syntax):
            with tally.lock:
                tally.skipped += 1
            return
        data = fetch(client, datastore_id, item, "*" if wanted == STORED else wanted)
        sink.write(item, data)
    except OSError as exc:
        with tally.lock:
            tally.failed.append((item, str(exc)))
        return
    with tally.lock:
        tally.exported += 1
        tally.bytes_written += len(data)


def export(client: Client, sink: Sink, datastore_id: str, plan: Plan, wanted: str) -> Tally:
    """Every item of the plan not already in the sink, ``THREADS`` at a time; the tally.

    Raises CommandError when the endpoint stops answering (what was written stays: run again to resume).
    """
    tally = Tally()
    progress = Progress(len(plan.items))
    with ThreadPoolExecutor(THREADS, thread_name_prefix="export") as pool:
        pending: set[Future[None]] = {
            pool.submit(_one, client, sink, datastore_id, item, wanted, tally) for item in plan.items
        }
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()  # a CommandError (unreachable) ends the export
                progress.show(tally.done, len(tally.failed))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            progress.done()
    sink.finish()
    return tally


def report(tally: Tally, plan: Plan, sink: Sink) -> int:
    """Failures, then the counts; the exit status (0 when every instance is exported)."""
    for item, message in tally.failed:
        print(f"FAILED  {item.sop_uid} (image set {item.image_set_id}): {message}")
    rows = [
        ("image sets", len(plan.image_sets)),
        ("instances listed", len(plan.items)),
        ("instances exported", tally.exported),
        ("already exported", tally.skipped),
        ("instances failed", len(tally.failed)),
        ("bytes written", tally.bytes_written),
    ]
    if plan.duplicates:
        rows.append(("listed twice (once kept)", plan.duplicates))
    for label, value in rows:
        print(f"{label:<26}{value:>12}")
    state = "complete" if not tally.failed else f"{len(tally.failed)} failed"
    print(f"export to {sink.where}: {state}")
    return 0 if not tally.failed else FAILED


def run_export(args: argparse.Namespace) -> int:
    if args.version is not None and args.image_set is None:
        raise CommandError("--version needs --image-set")
    if args.version is not None and args.version < 1:
        raise CommandError("--version must be a positive integer")
    endpoint = resolve_endpoint(args.endpoint)
    conn = Connection.open(endpoint)
    client = Client(conn)
    sink = open_sink(args.out, client)
    api = conn.api()
    check_datastore(api, args.datastore, endpoint)
    plan = make_plan(
        api,
        endpoint,
        args.datastore,
        image_set=args.image_set,
        version=args.version,
        study=args.study,
        series=args.series,
    )
    if not plan.items:
        print(f"nothing to export: datastore {args.datastore} holds no instance")
        return 0
    try:
        tally = export(client, sink, args.datastore, plan, args.transfer_syntax)
    except KeyboardInterrupt:
        raise CommandError("interrupted; run the same command again to resume", 130) from None
    return report(tally, plan, sink)


def add_parser(sub: Any) -> None:
    """Add ``export`` to the ``openhi`` subcommands."""
    exp = sub.add_parser(
        "export",
        help="write an image set, series, study or datastore as DICOM Part 10 files",
        description="Fetch every instance selected over WADO-RS and write one <SOPInstanceUID>.dcm per "
        "instance to a folder, a .zip file or s3://bucket/prefix (the server's object store). Files already "
        "there and verified are skipped: run the same command again to resume. Exit status: 0 when every "
        f"instance is exported, {FAILED} when any failed, {USAGE} for usage or connection errors.",
    )
    exp.add_argument("--datastore", metavar="ID", required=True, help="the datastore to export from")
    which = exp.add_mutually_exclusive_group(required=True)
    which.add_argument("--image-set", metavar="ID", default=None, help="one image set (primary or not)")
    which.add_argument("--study", metavar="UID", default=None, help="the primary image sets of a study")
    which.add_argument("--series", metavar="UID", default=None, help="the primary image set(s) of a series")
    which.add_argument("--all", action="store_true", help="every primary image set of the datastore")
    exp.add_argument(
        "--version", metavar="N", type=int, default=None, help="with --image-set: that version's content"
    )
    exp.add_argument(
        "--out", metavar="DIR|FILE.zip|s3://BUCKET/PREFIX", required=True, help="where the files go"
    )
    exp.add_argument(
        "--transfer-syntax",
        choices=(STORED, ELE),
        default=STORED,
        help=f"{STORED} (default: frames as stored, no transcoding) or {ELE} (Explicit VR Little Endian)",
    )
    exp.add_argument(
        "--endpoint",
        metavar="URL",
        default=None,
        help="server URL (default $AWS_ENDPOINT_URL_MEDICAL_IMAGING, else http://127.0.0.1:8080)",
    )
    exp.set_defaults(func=clean_exit("export", run_export))
