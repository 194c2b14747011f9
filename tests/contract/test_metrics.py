"""/metrics of a real server: counters after a known workload, every process counted, open only on request."""

from __future__ import annotations

import sqlite3
import time
import urllib.request
from bisect import bisect_left
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from contract.helpers import active_datastore
from contract.imaging import metadata, run_import
from dicom_factory import make_ct_series, make_instance, uid
from openhi.testing import RunningServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def signed_get(server: RunningServer, path: str) -> httpx.Response:
    url = f"{server.endpoint}{path}"
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials("any", "any"), "medical-imaging", "us-east-1").add_auth(request)
    return httpx.get(url, headers=dict(request.headers.items()), timeout=30)


def parse(text: str) -> Samples:
    """Every sample of the exposition: (sample name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(fetch: Any, done: Any, timeout: float = 10.0) -> Samples:
    """Scrape until ``done(samples)`` (other processes write what they counted twice a second)."""
    deadline = time.monotonic() + timeout
    while True:
        response = fetch()
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse(response.text)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with RunningServer(tmp_path_factory.mktemp("metrics") / "data") as running:
        yield running


def test_counters_after_a_known_workload(server: RunningServer) -> None:
    client = server.client()
    ds = active_datastore(client, "metrics")
    study, series = uid("metrics-study"), uid("metrics-series")
    files = {
        f"f{i}.dcm": make_instance(
            frames=2,
            seed=i,
            study_uid=study,
            series_uid=series,
            sop_uid=uid("metrics-sop", i),
            PatientID="P1",
        )
        for i in range(3)
    }
    imported = run_import(client, server, ds, files)
    assert imported["job"]["jobStatus"] == "COMPLETED"
    image_set_id = imported["success"][0]["importResponse"]["imageSetId"]
    doc = metadata(client, ds, image_set_id)
    frame_bytes = 0
    wado_bytes = 0
    refs = [
        (series_uid, sop_uid, instance["ImageFrames"][0]["ID"])
        for series_uid, node in doc["Study"]["Series"].items()
        for sop_uid, instance in node["Instances"].items()
    ]
    assert len(refs) == 3
    for series_uid, sop_uid, frame_id in refs:
        frame = client.get_image_frame(
            datastoreId=ds, imageSetId=image_set_id, imageFrameInformation={"imageFrameId": frame_id}
        )
        frame_bytes += len(frame["imageFrameBlob"].read())
        wado = httpx.get(
            f"{server.endpoint}/datastore/{ds}/studies/{study}/series/{series_uid}/instances/{sop_uid}"
            "/frames/1,2",
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            timeout=30,
        )
        assert wado.status_code == 200, wado.text
        wado_bytes += len(wado.content)
    missing = httpx.get(f"{server.endpoint}/datastore/{ds}/studies/1.2.3.4/metadata", timeout=30)
    assert missing.status_code == 404

    assert httpx.get(f"{server.endpoint}/metrics", timeout=30).status_code == 403  # not without a signature
    samples = scrape_until(
        lambda: signed_get(server, "/metrics"),
        lambda s: value(s, "openhi_frames_served_total", operation="wado-frames") >= 6,
    )
    assert value(samples, "openhi_requests_total", operation="GetImageFrame", front="api", status="200") == 3
    assert (
        value(samples, "openhi_requests_total", operation="CreateDatastore", front="api", status="200") == 1
    )
    assert (
        value(samples, "openhi_requests_total", operation="wado-frames", front="dicomweb", status="200") == 3
    )
    study_404 = {"operation": "wado-study-metadata", "front": "dicomweb", "status": "404"}
    assert value(samples, "openhi_requests_total", **study_404) == 1
    assert value(samples, "openhi_requests_total", operation="metrics", front="openhi", status="403") == 1
    assert value(samples, "openhi_frames_served_total", operation="GetImageFrame") == 3
    assert (
        value(samples, "openhi_frames_served_total", operation="wado-frames") == 6
    )  # "1,2": two frames each
    assert (
        value(samples, "openhi_response_bytes_total", operation="GetImageFrame", front="api") == frame_bytes
    )
    assert (
        value(samples, "openhi_response_bytes_total", operation="wado-frames", front="dicomweb") == wado_bytes
    )
    latency = {"operation": "GetImageFrame", "front": "api"}
    assert value(samples, "openhi_request_duration_seconds_count", **latency) == 3
    assert value(samples, "openhi_request_duration_seconds_bucket", le="+Inf", **latency) == 3
    assert 0 < value(samples, "openhi_request_duration_seconds_sum", **latency) < 30
    assert value(samples, "openhi_import_jobs_total", status="COMPLETED") == 1
    assert value(samples, "openhi_import_jobs_total", status="FAILED") == 0
    assert value(samples, "openhi_import_instances_total", outcome="imported") == 3
    assert value(samples, "openhi_import_instances_total", outcome="failed") == 0
    # the pixel work ran in the pixel-pool processes: their values reach the scrape too
    assert value(samples, "openhi_transcode_seconds_count") == 3
    assert value(samples, "openhi_transcode_seconds_bucket", le="+Inf") == 3
    assert value(samples, "openhi_transcode_seconds_sum") > 0
    # the verification (the second decode and the comparison) apart, once per transcoded instance
    assert value(samples, "openhi_verification_seconds_count") == 3
    assert value(samples, "openhi_verification_seconds_bucket", le="+Inf") == 3
    assert value(samples, "openhi_verification_seconds_sum") > 0
    assert value(samples, "openhi_import_queue_jobs", status="SUBMITTED") == 0
    assert value(samples, "openhi_import_queue_jobs", status="IN_PROGRESS") == 0
    assert value(samples, "openhi_store_errors_total", store="index") == 0


def test_a_failed_import_and_its_files(server: RunningServer) -> None:
    client = server.client()
    ds = active_datastore(client, "metrics-failures")
    before = parse(signed_get(server, "/metrics").text)
    files = {"good.dcm": make_ct_series(1, rows=16, cols=16, seed=11)[0], "junk.dcm": b"not dicom" * 50}
    imported = run_import(client, server, ds, files)
    assert imported["job"]["jobStatus"] == "COMPLETED" and len(imported["failure"]) == 1

    def grew(s: Samples) -> bool:
        return value(s, "openhi_import_jobs_total", status="COMPLETED") > value(
            before, "openhi_import_jobs_total", status="COMPLETED"
        )

    after = scrape_until(lambda: signed_get(server, "/metrics"), grew)
    for outcome, n in (("imported", 1), ("failed", 1), ("duplicate", 0)):
        name = "openhi_import_instances_total"
        assert value(after, name, outcome=outcome) - value(before, name, outcome=outcome) == n
    assert (
        value(after, "openhi_transcode_seconds_count") - value(before, "openhi_transcode_seconds_count") == 1
    )


def test_every_process_is_counted_and_public_metrics_need_no_signature(tmp_path: Path) -> None:
    from openhi import metrics

    with RunningServer(tmp_path / "data", extra_args=["--workers", "2", "--metrics-public"]) as server:
        deadline = time.monotonic() + 60
        while len(_readyz_answers(server, 10)) < 2:  # until the second API process listens too
            assert time.monotonic() < deadline, "the second API process never answered"
        readyz = {"operation": "readyz", "front": "api", "status": "200"}
        time.sleep(3 * metrics.FLUSH_SECONDS)  # every process has written what it counted so far
        before = parse(httpx.get(f"{server.endpoint}/metrics", timeout=30).text)
        answered_by = _readyz_answers(server, 40)
        assert len(answered_by) == 2  # each process has its own request id prefix

        def delta(s: Samples, name: str, **labels: str) -> float:
            return value(s, name, **labels) - value(before, name, **labels)

        samples = scrape_until(
            lambda: httpx.get(f"{server.endpoint}/metrics", timeout=30),
            lambda s: delta(s, "openhi_requests_total", **readyz) >= 40,
        )
        assert delta(samples, "openhi_requests_total", **readyz) == 40
        assert delta(samples, "openhi_request_duration_seconds_count", operation="readyz", front="api") == 40
        assert value(samples, "openhi_build_info", version=_version()) == 1


def _readyz_answers(server: RunningServer, n: int) -> set[str]:
    """Ask /readyz ``n`` times, each on a new connection (the kernel spreads them over the processes);
    the request id prefixes (one per process) that answered."""
    answered_by = set()
    for _ in range(n):
        with urllib.request.urlopen(f"{server.endpoint}/readyz", timeout=10) as response:
            assert response.status == 200
            answered_by.add(response.headers["x-amzn-RequestId"].rsplit("-", 3)[0])
    return answered_by


def _version() -> str:
    from openhi import __version__

    return __version__


def test_batched_request_counts_equal_prometheus_observations() -> None:
    """The per-process batching gives the histogram prometheus_client's own ``observe`` gives."""
    from prometheus_client import CollectorRegistry, Histogram

    from openhi import metrics

    stats = metrics.RequestStats()
    reference = Histogram("reference", "", buckets=metrics.LATENCY_BUCKETS, registry=CollectorRegistry())
    route = metrics.metrics_route(False)
    seconds = [0.0, 0.0005, 0.0007, 0.001, 0.3, 2.5, 31.0, 0.02]
    for n, value in enumerate(seconds):
        slot = stats.slot(route, 200)
        slot.count += 1
        slot.buckets[bisect_left(metrics.BOUNDS, value)] += 1
        slot.sum += value
        reference.observe(value)
        if n in (2, 5):
            stats.flush()  # flushing in between adds differences only
    stats.flush()
    stats.flush()
    ours = {s.labels.get("le"): s.value for s in _samples(metrics.LATENCY, "metrics")}
    theirs = {s.labels.get("le"): s.value for s in _samples(reference, None)}
    assert ours == theirs
    counted = [s.value for s in _samples(metrics.REQUESTS, "metrics") if s.labels["status"] == "200"]
    assert counted == [len(seconds)]


def _samples(metric: Any, operation: str | None) -> list[Any]:
    return [
        s
        for family in metric.collect()
        for s in family.samples
        if operation is None or s.labels.get("operation") == operation
        if not s.name.endswith("_created")
    ]


def test_store_errors_are_told_apart_by_where_they_were_raised(tmp_path: Path) -> None:
    from openhi.metrics import store_of
    from openhi.storage.blobs_fs import FsBlobStore
    from openhi.storage.registry import open_index

    with pytest.raises(Exception) as blob_error:
        FsBlobStore(tmp_path / "blobs").get("frames/none")
    assert store_of(blob_error.value) == "blobs"
    index = open_index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    with sqlite3.connect(tmp_path / "index.sqlite3") as other:  # a table gone under the adapter's feet
        other.execute("ALTER TABLE datastores RENAME TO gone")
    with pytest.raises(Exception) as index_error:
        index.get_datastore("x" * 32)
    index.close()
    assert store_of(index_error.value) == "index"
    assert store_of(ValueError("elsewhere")) is None


def test_registered_gauge_sources_are_asked_at_scrape_time(tmp_path: Path) -> None:
    from openhi import metrics
    from openhi.metrics_sources import SOURCES, register_gauge_source
    from openhi.services import ServerConfig, build_services

    services = build_services(ServerConfig(data_dir=tmp_path / "data", pixel_workers=0, import_threads=0))
    try:
        register_gauge_source(
            "openhi_test_backlog", lambda s: s.env.index.count_datastores(["ACTIVE"]) + 7, "test"
        )
        register_gauge_source("openhi_test_broken", lambda s: 1 / 0)
        with pytest.raises(ValueError, match="not a metric name"):
            register_gauge_source("webhook backlog", lambda s: 0)
        samples = parse(metrics.scrape(services).decode())
    finally:
        SOURCES.pop("openhi_test_backlog", None)
        SOURCES.pop("openhi_test_broken", None)
        services.close()
    assert value(samples, "openhi_test_backlog") == 7
    assert ("openhi_test_broken", frozenset()) not in samples
    assert value(samples, "openhi_import_queue_jobs", status="SUBMITTED") == 0


def test_webhook_backlog_and_failures_are_gauges(tmp_path: Path) -> None:
    import json
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    with socket.socket() as probe:  # a port nobody listens on: every attempt there is refused
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    hooks = tmp_path / "webhooks.json"
    hooks.write_text(
        json.dumps(
            [
                {"name": "up", "url": f"http://127.0.0.1:{receiver.server_address[1]}/hook"},
                {"name": "down", "url": f"http://127.0.0.1:{dead_port}/hook", "retry_base_seconds": 0.2},
            ]
        )
    )
    try:
        with RunningServer(tmp_path / "data", env={"OPENHI_WEBHOOKS": str(hooks)}) as server:
            client = server.client()
            active_datastore(client, "webhook-gauges")  # Data Store Creating, Data Store Created

            def delivered(s: Samples) -> bool:
                return (
                    value(s, "openhi_webhook_backlog_events", webhook="up") == 0
                    and value(s, "openhi_webhook_failed_attempts", webhook="down") >= 1
                    and value(s, "openhi_events_last_seq") >= 2
                )

            samples = scrape_until(lambda: signed_get(server, "/metrics"), delivered, timeout=30)
    finally:
        receiver.shutdown()
        receiver.server_close()
    last = value(samples, "openhi_events_last_seq")
    assert last == 2
    assert value(samples, "openhi_webhook_backlog_events", webhook="up") == 0
    assert len(received) >= 2
    assert value(samples, "openhi_webhook_backlog_events", webhook="down") == last  # nothing got through
    assert value(samples, "openhi_webhook_failed_attempts", webhook="down") >= 1
    assert value(samples, "openhi_webhook_failed_attempts", webhook="up") == 0


def test_openhi_worker_serves_its_own_metrics(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from openhi.testing.server import free_port

    data = tmp_path / "data"
    port = free_port()
    with RunningServer(data, extra_args=["--no-workers"]) as server:
        log = (tmp_path / "worker.log").open("wb")
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        worker = subprocess.Popen(
            [sys.executable, "-m", "openhi", "worker", "--data-dir", str(data), "--threads", "1",
             "--metrics-port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"

            def worker_scrape() -> httpx.Response:
                return httpx.get(url, timeout=10)

            deadline = time.monotonic() + 30
            while True:  # the worker is up once its metrics answer
                try:
                    if worker_scrape().status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, "openhi worker did not serve its metrics"
                time.sleep(0.2)
            client = server.client()
            ds = active_datastore(client, "worker-metrics")
            files = {f"w{i}.dcm": make_ct_series(1, rows=16, cols=16, seed=40 + i)[0] for i in range(2)}
            imported = run_import(client, server, ds, files)
            assert imported["job"]["jobStatus"] == "COMPLETED"
            samples = scrape_until(
                worker_scrape, lambda s: value(s, "openhi_import_jobs_total", status="COMPLETED") >= 1
            )
            # the API server ran no job: its own scrape has none of them
            api = parse(signed_get(server, "/metrics").text)
        finally:
            worker.terminate()
            assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()
            log.close()
    assert value(samples, "openhi_import_jobs_total", status="COMPLETED") == 1
    assert value(samples, "openhi_import_instances_total", outcome="imported") == 2
    assert value(samples, "openhi_transcode_seconds_count") == 2  # from the worker's pixel-pool processes
    assert value(samples, "openhi_verification_seconds_count") == 2
    assert value(samples, "openhi_import_queue_jobs", status="SUBMITTED") == 0
    assert value(samples, "openhi_build_info", version=__import__("openhi").__version__) == 1
    assert value(api, "openhi_import_jobs_total", status="COMPLETED") == 0
