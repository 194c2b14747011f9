"""What events cost: import and update throughput with and without the outbox, and with and without a webhook.

Usage: .venv/bin/python bench/events.py [--rounds 3] [--ops 400] [--instances 20] [--jobs 3] [--updates 40]
                                        [--deliveries 300] [--no-postgres]

Three measurements, in one run, alternating the variants round by round (medians reported):

1. Index level (the outbox's own cost), SQLite file and PostgreSQL (when OPENHI_TEST_POSTGRES_URL answers):
   an import commit (``commit_store`` of a new image set with 8 frame references) and an update (lock, then
   commit of the new version) per operation, with the event rows written (as shipped) and with
   ``events_sql.emit`` replaced by a no-op (the same code without events).
2. End to end, a real embedded server: ``--jobs`` import jobs of ``--instances`` CT instances (64×64) and
   UpdateImageSetMetadata round trips (the call, then waiting for the version to finish), by a server
   without webhooks and by one with a webhook (a loopback receiver answering 200) delivering every event.

3. Delivery, a ``WebhookDeliverer`` over a SQLite index file POSTing signed events to a keep-alive
   receiver in another process: the delivery thread's CPU per event, in rounds of 1, 10 and 50 events.

Goal: events cost <= 5 % of import and update throughput, judged on the operations as a client meets them:
the outbox's share of each (its extra time per index operation, from 1., over the operation's time end to
end, from 2.) and a webhook's (the delivery CPU of the operation's events, from 3., at the round size the
measured throughput gives: the delivery thread takes what the feed holds and polls every 0.5 s once it has
caught up; over the operation's server CPU without a webhook, from 2.). The end-to-end medians with and without
a webhook are printed too; on a shared machine their noise is larger than the effect. The index-level cost
as a share of a bare index commit is the upper bound for an index that did nothing else.
Prints tables and writes bench/results/events-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import ROOT, table, tree_cpu_seconds, write_result

sys.path.insert(0, str(ROOT / "tests"))

from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.ports.index import LockRequest, MetadataIndex, VersionCommit
from openhi.storage import events_sql

GOAL = 0.05
#: events of a one-series import job (Submitted, In Progress, Completed, Image Set Created), each counted at
#: the cost of one index-level operation's events (conservative: two of them share a commit)
EVENTS_PER_JOB = 4
#: how long the delivery thread waits once it has caught up with the feed (WebhookDeliverer's default)
POLL_SECONDS = 0.5
DS = "b" * 32


# -- 1. index level
@contextmanager
def events_off() -> Iterator[None]:
    original = events_sql.emit
    events_sql.emit = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        events_sql.emit = original  # type: ignore[assignment]


def _new_set(n: int) -> tuple[ImageSet, ImageSetVersion, list[FrameRef]]:
    set_id = f"{n:032x}"
    search = {
        "DICOMStudyInstanceUID": f"1.2.3.{n}",
        "DICOMSeriesInstanceUID": f"1.2.3.{n}.1",
        "DICOMPatientId": "P",
    }
    head = ImageSet(DS, set_id, 1, "ACTIVE", "CREATED", False, 1000.0, 1000.0, 1, search=search)
    version = ImageSetVersion(DS, set_id, 1, "ACTIVE", "CREATED", 1000.0, 1000.0, False, f"meta/{set_id}/1")
    frames = [FrameRef(f"{set_id}-{k}", f"frames/{set_id}/{k}", "1.2.840.10008.1.2.4.202") for k in range(8)]
    return head, version, frames


def _imports(index: MetadataIndex, start: int, ops: int) -> float:
    """Seconds ``ops`` import commits take (wall)."""
    t0 = time.perf_counter()
    for n in range(start, start + ops):
        assert index.commit_store(DS, [_new_set(n)], []) == "ok"
    return time.perf_counter() - t0


def _updates(index: MetadataIndex, set_id: str, ops: int) -> float:
    """Seconds ``ops`` updates (lock, then commit) take (wall)."""
    head = index.get_image_set(DS, set_id)
    assert head is not None
    latest = head.latest_version
    t0 = time.perf_counter()
    for _ in range(ops):
        now = time.time()
        row = ImageSetVersion(DS, set_id, latest + 1, "LOCKED", "UPDATING", 1000.0, now, False, None)
        assert index.lock_image_sets(DS, [LockRequest(set_id, latest, "UPDATING", row)], now) is None
        done = replace(
            row, state="ACTIVE", workflow_status="UPDATED", metadata_key=f"meta/{set_id}/{latest + 1}"
        )
        commit = VersionCommit(set_id, done, "ACTIVE", "UPDATED", now, content_version=latest + 1)
        index.commit_versions(DS, [commit])
        latest += 1
    return time.perf_counter() - t0


def index_level(
    name: str, index: MetadataIndex, rounds: int, ops: int, batch: int = 20
) -> list[dict[str, Any]]:
    """Batches of ``batch`` operations, the variant alternating batch by batch (slow drifts of a shared
    machine hit both alike); ``rounds × ops`` operations per variant in all."""
    index.create_image_set(*_new_set(0))
    seconds = {"import/events": 0.0, "import/no events": 0.0, "update/events": 0.0, "update/no events": 0.0}
    start, total = 1, rounds * ops
    for k in range(2 * (total // batch)):
        variant = ("events", "no events")[(k + k // 2) % 2]  # events, no events, no events, events, ...
        with events_off() if variant == "no events" else _nothing():
            seconds[f"import/{variant}"] += _imports(index, start, batch)
            start += batch
            seconds[f"update/{variant}"] += _updates(index, f"{0:032x}", batch)
    rows = []
    count = (total // batch) * batch
    for op in ("import", "update"):
        on = count / seconds[f"{op}/events"]
        off = count / seconds[f"{op}/no events"]
        extra_us = (seconds[f"{op}/events"] - seconds[f"{op}/no events"]) / count * 1e6
        rows.append({
            "index": name, "operation": op, "no events /s": off, "events /s": on, "cost": 1 - on / off,
            "µs per op": extra_us,
        })  # fmt: skip
    return rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- 2. end to end
class Receiver:
    def __init__(self) -> None:
        self.count = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a web framework's receiver would answer

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def _wait(fn: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 300, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out; last {value!r}")
        time.sleep(step)


def end_to_end(
    hooked: bool, work: Path, instances: int, updates: int, seed: int, jobs: int = 1
) -> dict[str, float]:
    from dicom_factory import make_ct_series
    from openhi.testing import RunningServer

    env: dict[str, str] = {}
    receiver = None
    if hooked:
        receiver = Receiver()
        hooks = work / "webhooks.json"
        hooks.write_text(json.dumps([{"url": receiver.url}]))
        env["OPENHI_WEBHOOKS"] = str(hooks)
    server = RunningServer(work / "data", env=env).start()
    try:
        client = server.client()
        ds = client.create_datastore(datastoreName="bench")["datastoreId"]
        _wait(
            lambda: client.get_datastore(datastoreId=ds)["datastoreProperties"]["datastoreStatus"],
            "ACTIVE".__eq__,
        )
        series = [
            make_ct_series(instances, rows=64, cols=64, seed=seed * 100 + j, patient_id=f"EV{seed}-{j}")
            for j in range(jobs)
        ]
        for j, files in enumerate(series):
            for i, data in enumerate(files):
                server.stage_object("bench-in", f"s{seed}-{j}/{i}.dcm", data)
        c0, t0 = tree_cpu_seconds(server.proc.pid), time.perf_counter()
        for j in range(jobs):  # one after the other, as a pipeline's jobs would come
            job = client.start_dicom_import_job(
                datastoreId=ds, dataAccessRoleArn="arn:aws:iam::123456789012:role/R",
                inputS3Uri=f"s3://bench-in/s{seed}-{j}/", outputS3Uri="s3://bench-out/o/",
            )  # fmt: skip
            _wait(
                lambda job=job: client.get_dicom_import_job(datastoreId=ds, jobId=job["jobId"])[
                    "jobProperties"
                ]["jobStatus"],
                lambda s: s in ("COMPLETED", "FAILED"),
                step=0.005,
            )
        import_rate = jobs * instances / (time.perf_counter() - t0)
        import_cpu = (tree_cpu_seconds(server.proc.pid) - c0) / (jobs * instances)
        set_id = client.search_image_sets(datastoreId=ds)["imageSetsMetadataSummaries"][0]["imageSetId"]
        c0, t0 = tree_cpu_seconds(server.proc.pid), time.perf_counter()
        for k in range(updates):
            doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": f"bench {k}"}}}
            client.update_image_set_metadata(
                datastoreId=ds, imageSetId=set_id, latestVersionId=str(k + 1),
                updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}},
            )  # fmt: skip
            _wait(  # polled often: an update takes a few ms, a coarse poll would measure the poll
                lambda: client.get_image_set(datastoreId=ds, imageSetId=set_id)["imageSetState"],
                "ACTIVE".__eq__,
                step=0.002,
            )
        update_rate = updates / (time.perf_counter() - t0)
        update_cpu = (tree_cpu_seconds(server.proc.pid) - c0) / updates
        delivered = 0
        if receiver is not None:  # 2 datastore + 4 per import job + 2 per update events
            expected = 2 + 4 * jobs + 2 * updates
            delivered = _wait(lambda: receiver.count, lambda n: n >= expected, timeout=60)
        return {
            "import": import_rate,
            "update": update_rate,
            "import_cpu": import_cpu,
            "update_cpu": update_cpu,
            "delivered": float(delivered),
        }
    finally:
        server.stop()
        if receiver is not None:
            receiver.server.shutdown()


RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def delivery_cost(events: int, per_round: tuple[int, ...] = (1, 10, 50)) -> list[dict[str, Any]]:
    """CPU ms per delivered event of the delivery thread's work (a ``WebhookDeliverer`` over a SQLite
    index file, signed POSTs to a keep-alive receiver in another process), by events per round: a round
    takes what the feed holds, so events that come faster than the 0.5 s poll are delivered together."""
    import subprocess

    from openhi.core.env import Env
    from openhi.core.settings import Settings
    from openhi.core.webhooks import WebhookDeliverer, parse_webhooks
    from openhi.storage.sqlite.index import SqliteIndex

    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            index = SqliteIndex(str(Path(tmp) / "index.sqlite3"))
            env = Env(Settings(), index, None, None, None)  # type: ignore[arg-type]
            hooks = parse_webhooks([{"url": f"http://127.0.0.1:{port}/hook", "secret": "bench"}])
            deliverer = WebhookDeliverer(env, hooks)
            n = 0
            for size in (per_round[0], *per_round):  # the first size twice: the first rounds warm up
                cpu = 0.0
                for _ in range(max(1, events // size)):
                    for _ in range(size):
                        n += 1
                        assert index.commit_store(DS, [_new_set(n)], []) == "ok"
                    t0 = time.thread_time()
                    deliverer.deliver(hooks[0])
                    cpu += time.thread_time() - t0
                rows.append(
                    {
                        "events per round": size,
                        "CPU ms per event": cpu / (max(1, events // size) * size) * 1e3,
                    }
                )
            deliverer.stop()
            index.close()
    finally:
        receiver.kill()
        receiver.wait()
    return rows[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=400, help="index-level operations per round and variant")
    parser.add_argument("--instances", type=int, default=20, help="instances per end-to-end import job")
    parser.add_argument("--jobs", type=int, default=3, help="end-to-end import jobs per round and variant")
    parser.add_argument("--updates", type=int, default=40, help="end-to-end updates per round and variant")
    parser.add_argument("--deliveries", type=int, default=300, help="webhook deliveries timed per round size")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    from openhi.storage.sqlite.index import SqliteIndex

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteIndex(str(Path(tmp) / "index.sqlite3"))
        rows += index_level("sqlite", sqlite, args.rounds, args.ops)
        sqlite.close()
    if not args.no_postgres:
        import pg

        reason = pg.unavailable()
        if reason is None:
            from openhi.storage.postgres.index import PostgresIndex

            schemas = pg.Schemas()
            try:
                postgres = PostgresIndex(schemas.url, schema=schemas.new())
                rows += index_level("postgres", postgres, args.rounds, args.ops)
                postgres.close()
            finally:
                schemas.drop_all()
        else:
            print(f"PostgreSQL skipped: {reason}", file=sys.stderr)
    print(table(rows))

    runs: dict[str, list[dict[str, float]]] = {"no webhook": [], "webhook": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for variant in ("no webhook", "webhook") if r % 2 == 0 else ("webhook", "no webhook"):
                work = Path(tmp) / f"{variant.replace(' ', '-')}-{r}"
                work.mkdir()
                seed = 100 + r * 2 + (variant == "webhook")
                runs[variant].append(
                    end_to_end(variant == "webhook", work, args.instances, args.updates, seed, args.jobs)
                )
    e2e = []
    for op, unit in (("import", "instances/s"), ("update", "updates/s")):
        off = statistics.median(x[op] for x in runs["no webhook"])
        on = statistics.median(x[op] for x in runs["webhook"])
        cpu_off = statistics.median(x[f"{op}_cpu"] for x in runs["no webhook"])
        cpu_on = statistics.median(x[f"{op}_cpu"] for x in runs["webhook"])
        e2e.append({
            "operation": op, "unit": unit, "no webhook": off, "webhook": on, "cost": 1 - on / off,
            "CPU ms/op no webhook": 1000 * cpu_off, "CPU ms/op webhook": 1000 * cpu_on,
            "CPU cost": cpu_on / cpu_off - 1,
        })  # fmt: skip
    print()
    print(table(e2e))
    # The outbox's share of an operation: its extra time per index operation over the operation's time
    # end to end (an import job of N instances writes EVENTS_PER_JOB events; an update writes two, as the
    # index-level update does).
    share = []
    seconds_per = {e["operation"]: 1 / e["no webhook"] for e in e2e}  # per instance / per update
    for r in rows:
        per_op = r["µs per op"] / 1e6
        if r["operation"] == "import":
            per_op *= EVENTS_PER_JOB / args.instances
        share.append({
            "index": r["index"], "operation": r["operation"], "outbox µs per op": r["µs per op"],
            "end-to-end ms per op": 1000 * seconds_per[r["operation"]],
            "share": max(0.0, per_op / seconds_per[r["operation"]]),
        })  # fmt: skip
    print()
    print(table(share))
    # A webhook's share: the delivery thread's CPU per event times the events of an operation, over the
    # operation's server CPU without a webhook. The delivery thread takes what the feed holds in one round and
    # waits POLL_SECONDS when it has caught up, so at the throughput measured a round holds about
    # rate x events per op x POLL_SECONDS events: the cost of the largest measured round size not above that.
    delivery = delivery_cost(args.deliveries)
    print()
    print(table(delivery))
    events_per = {"import": EVENTS_PER_JOB / args.instances, "update": 2.0}
    hooked = []
    for e in e2e:
        per_op = events_per[e["operation"]]
        batch = max(1.0, e["no webhook"] * per_op * POLL_SECONDS)
        row = max(
            (r for r in delivery if r["events per round"] <= batch), key=lambda r: r["events per round"]
        )
        ms = row["CPU ms per event"] * per_op
        hooked.append({
            "operation": e["operation"], "events per op": per_op, "events per round": batch,
            "CPU ms per event": row["CPU ms per event"], "delivery CPU ms per op": ms,
            "server CPU ms per op": e["CPU ms/op no webhook"], "share": ms / e["CPU ms/op no webhook"],
        })  # fmt: skip
    print()
    print(table(hooked))
    worst = max([r["share"] for r in share] + [r["share"] for r in hooked])
    verdict = "met" if worst <= GOAL else "NOT met"
    print(
        f"\ngoal: events cost <= {GOAL:.0%} of import and update throughput (the outbox's share of each"
        f" operation, and a webhook's: its delivery CPU per operation, at the round size of that throughput,"
        f" over the operation's server CPU);"
        f" worst {worst:.1%}: {verdict}. End to end with and without a webhook (above) the medians moved"
        f" {min(min(e['cost'], e['CPU cost']) for e in e2e):+.1%} to {max(max(e['cost'], e['CPU cost']) for e in e2e):+.1%}:"
        " on a shared machine, run-to-run noise of that size hides a cost of a few per cent."
    )
    path = write_result(
        "events",
        {
            "args": vars(args),
            "index_level": rows,
            "end_to_end": e2e,
            "outbox_share": share,
            "delivery_cost": delivery,
            "webhook_share": hooked,
            "runs": runs,
            "goal": GOAL,
            "worst": worst,
        },
    )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
