"""``openhi export``: Part 10 files of an image set (version), a series, a study or a datastore, over WADO-RS."""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from openhi.cli_client import FAILED, USAGE, CommandError, api_error, resolve_endpoint
from openhi.export_api import Api
from openhi.export_http import Client, connection
from openhi.export_plan import ELE, Item, Plan, make_plan
from openhi.export_sinks import Sink, open_sink
from openhi.export_stream import MultipartError, boundary_of, parts
from openhi.export_verify import file_meta

STORED = "stored"
#: image sets (or instances) fetched at a time (each thread keeps one keep-alive connection)
THREADS = 4
#: in the stored syntax, an image set's missing instances come in one streamed answer when there are at
#: least STREAM_MIN of them and they are at least 1/STREAM_SHARE of its instances (else one request
#: each); transcoded ones always one request each (the server decodes them THREADS at a time then)
STREAM_MIN = 2
STREAM_SHARE = 8
#: files of a streamed answer waiting to be written (in memory) at most
WRITE_QUEUE = 32


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


def _failed(tally: Tally, item: Item, message: str) -> None:
    with tally.lock:
        tally.failed.append((item, message))


def _written(tally: Tally, size: int) -> None:
    with tally.lock:
        tally.exported += 1
        tally.bytes_written += size


def _one(
    client: Client, sink: Sink, datastore_id: str, item: Item, wanted: str, tally: Tally, check: bool = True
) -> list[Item]:
    """Fetch one instance (unless ``check`` and it is already in the sink); nothing is left over."""
    syntax = item.syntax(wanted)
    try:
        if check and sink.verified(item, syntax):
            with tally.lock:
                tally.skipped += 1
            return []
        data = fetch(client, datastore_id, item, "*" if wanted == STORED else wanted)
        sink.write(item, data)
    except OSError as exc:
        _failed(tally, item, str(exc))
        return []
    _written(tally, len(data))
    return []


class _Writes:
    """The files of a streamed answer, written by a thread of their own while the answer is read (the
    socket and the disk busy at once); at most ``WRITE_QUEUE`` files wait in memory."""

    def __init__(self, sink: Sink, tally: Tally) -> None:
        self.sink, self.tally = sink, tally
        self.queue: queue.Queue[tuple[Item, bytes] | None] = queue.Queue(WRITE_QUEUE)
        self.error: BaseException | None = None  # what ended the writes (re-raised by close)
        self.thread = threading.Thread(target=self._run, name="export-write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drained, not written: close() raises the error
            item, data = job
            try:
                self.sink.write(item, data)
            except OSError as exc:
                _failed(self.tally, item, str(exc))
                continue
            except BaseException as exc:  # CommandError: the endpoint of an s3:// sink stopped answering
                self.error = exc
                continue
            _written(self.tally, len(data))

    def put(self, item: Item, data: bytes) -> None:
        self.queue.put((item, data))

    def close(self) -> None:
        """Wait for the files queued; raises what ended the writes."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _group_target(datastore_id: str, items: list[Item]) -> tuple[str, str]:
    """The WADO-RS series (one series) or study route of the image set (version) of ``items``."""
    first = items[0]
    path = f"/datastore/{datastore_id}/studies/{first.study_uid}"
    if all(item.series_uid == first.series_uid for item in items):
        path += f"/series/{first.series_uid}"
    query = f"imageSetId={quote(first.image_set_id, safe='')}"
    if first.version is not None:
        query += f"&version={first.version}"
    return path, query


def _streamed(
    client: Client, sink: Sink, datastore_id: str, items: list[Item], wanted: str, tally: Tally
) -> list[Item]:
    """Fetch ``items`` (of one image set version) as one multipart/related answer, writing each file as
    its part arrives; the items it did not bring (left out by the server, or the answer broke off).

    Raises CommandError when the endpoint cannot be reached.
    """
    missing = {item.sop_uid: item for item in items}
    path, query = _group_target(datastore_id, items)
    syntax = "*" if wanted == STORED else wanted
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    writes = _Writes(sink, tally)
    try:
        with client.stream(path, query=query, headers={"Accept": accept}) as resp:
            boundary = boundary_of(resp.getheader("content-type") or "")
            if resp.status not in (200, 206) or boundary is None:
                resp.read()  # an error answer: each instance is asked for alone (and its error told)
                return items
            for headers, content in parts(resp.readinto, boundary):
                meta = file_meta(content)
                item = missing.get(meta[0]) if meta is not None else None
                if item is None or meta is None:
                    continue  # an instance not asked for (another image set exports it), or not Part 10
                want = item.syntax(wanted)
                if meta[1] != want or f"transfer-syntax={want}" not in headers.get("content-type", ""):
                    continue  # fetched alone, where the mismatch is reported
                del missing[item.sop_uid]
                writes.put(item, bytes(content))
    except (MultipartError, OSError):
        pass  # the answer broke off: what arrived is written, the rest is fetched one by one
    finally:
        writes.close()
    return [item for item in items if item.sop_uid in missing]


def _group(
    client: Client, sink: Sink, datastore_id: str, items: list[Item], wanted: str, tally: Tally
) -> list[Item]:
    """The instances of one image set (version) not already in the sink: as one streamed answer when
    they are asked for in their stored syntax and enough of them are missing; those left to fetch one
    by one."""
    todo: list[Item] = []
    for item in items:
        try:
            done = sink.verified(item, item.syntax(wanted))
        except OSError as exc:
            _failed(tally, item, str(exc))
            continue
        if done:
            with tally.lock:
                tally.skipped += 1
        else:
            todo.append(item)
    if wanted == STORED and len(todo) >= STREAM_MIN and len(todo) * STREAM_SHARE >= len(items):
        return _streamed(client, sink, datastore_id, todo, wanted, tally)
    return todo


def _groups(plan: Plan) -> list[list[Item]]:
    """The plan's items by image set version, in plan order."""
    groups: dict[tuple[str, int | None], list[Item]] = {}
    for item in plan.items:
        groups.setdefault((item.image_set_id, item.version), []).append(item)
    return list(groups.values())


_Job = tuple[Callable[..., list[Item]], tuple[Any, ...]]


class _Pool:
    """``size`` threads running jobs in the order given; each job's result (or what it raised) comes
    back on a queue. (concurrent.futures would do, and load the logging package with it.)"""

    def __init__(self, size: int) -> None:
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.results: queue.Queue[tuple[list[Item], BaseException | None]] = queue.Queue()
        self.pending = 0  # jobs given whose result was not taken yet
        self.threads = [
            threading.Thread(target=self._run, name=f"export-{n}", daemon=True) for n in range(size)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            run, args = job
            try:
                self.results.put((run(*args), None))
            except BaseException as exc:
                self.results.put(([], exc))

    def submit(self, run: Callable[..., list[Item]], *args: Any) -> None:
        self.pending += 1
        self.jobs.put((run, args))

    def result(self, timeout: float) -> list[Item] | None:
        """The next job's result (None when none came within ``timeout``); raises what the job raised."""
        try:
            items, error = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        self.pending -= 1
        if error is not None:
            raise error
        return items

    def close(self) -> None:
        """Drop the jobs not started, let the running ones end."""
        while True:
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()


def export(client: Client, sink: Sink, datastore_id: str, plan: Plan, wanted: str) -> Tally:
    """Every item of the plan not already in the sink, ``THREADS`` image sets (or instances) at a time:
    an image set's instances as one streamed WADO-RS answer, one by one what it did not bring.

    Raises CommandError when the endpoint stops answering (what was written stays: run again to resume).
    """
    tally = Tally()
    progress = Progress(len(plan.items))
    pool = _Pool(THREADS)
    try:
        for items in _groups(plan):
            pool.submit(_group, client, sink, datastore_id, items, wanted, tally)
        while pool.pending:
            left = pool.result(timeout=0.2)  # a CommandError (unreachable) ends the export
            for item in left or ():
                pool.submit(_one, client, sink, datastore_id, item, wanted, tally, False)
            progress.show(tally.done, len(tally.failed))
    finally:
        pool.close()
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


def check_datastore(api: Api, datastore_id: str) -> None:
    """The datastore exists and is ACTIVE (else CommandError)."""
    props = api.get_datastore(datastoreId=datastore_id)["datastoreProperties"]
    if props["datastoreStatus"] != "ACTIVE":
        raise CommandError(f"datastore {datastore_id} is {props['datastoreStatus']}, not ACTIVE")


def run_export(args: argparse.Namespace) -> int:
    if args.version is not None and args.image_set is None:
        raise CommandError("--version needs --image-set")
    if args.version is not None and args.version < 1:
        raise CommandError("--version must be a positive integer")
    endpoint = resolve_endpoint(args.endpoint)
    client = Client(connection(endpoint))
    sink = open_sink(args.out, client)
    api = Api(client)
    check_datastore(api, args.datastore)
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
    exp.set_defaults(func=_clean_exit)


def _clean_exit(args: argparse.Namespace) -> int:
    """``run_export`` ending any error as one ``openhi export: …`` line (botocore is only loaded when
    one of its errors is to be told: the credentials chain)."""
    try:
        return run_export(args)
    except CommandError as exc:
        print(f"openhi export: {exc.message}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("openhi export: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__module__.startswith("botocore"):
            error = api_error(exc, "the endpoint")
            print(f"openhi export: {error.message}", file=sys.stderr)
            return error.status
        if isinstance(exc, OSError):  # a file that cannot be written, a closed pipe
            print(f"openhi export: {exc}", file=sys.stderr)
            return USAGE
        raise
