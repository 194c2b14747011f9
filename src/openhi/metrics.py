"""Prometheus metrics of a server: request counts batched per process, import and pixel metrics, the scrape.

Every API process, and every pixel-pool process they start, writes its values to the files of
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode; ``openhi serve`` makes the folder);
``GET /metrics`` reads them all, so one scrape sees the whole server whichever process answers it.
Per-request values are counted in plain dictionaries on the event loop and written to those files by a
background thread every :data:`FLUSH_SECONDS` (and by a scrape, for the process that answers it): a
request costs a few dictionary updates, not a dozen locked writes to a memory map.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from openhi import __version__
from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.metrics_sources import SOURCES, register_gauge_source

T = TypeVar("T")
__all__ = ["metrics_route", "register_gauge_source", "scrape"]
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
#: the Prometheus text format every Prometheus version reads
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: how often a process writes the requests it counted to the shared files
FLUSH_SECONDS = 0.5
#: how long the values a scrape asks the index for (queue depth, registered sources) are reused
CACHE_SECONDS = 2.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TRANSCODE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
QUEUED_STATUSES = ("SUBMITTED", "IN_PROGRESS")

_REGISTRY = CollectorRegistry(auto_describe=True)  # one process's own values (no multiprocess folder)

REQUESTS = Counter(
    "openhi_requests",
    "Requests answered, by operation (route name), front door and HTTP status.",
    ["operation", "front", "status"],
    registry=_REGISTRY,
)
LATENCY = Histogram(
    "openhi_request_duration_seconds",
    "Seconds from a request's arrival to the end of its response, by operation and front door.",
    ["operation", "front"],
    buckets=LATENCY_BUCKETS,
    registry=_REGISTRY,
)
SENT = Counter(
    "openhi_response_bytes",
    "Response body bytes sent, by operation and front door.",
    ["operation", "front"],
    registry=_REGISTRY,
)
FRAMES = Counter(
    "openhi_frames_served",
    "Image frames served by GetImageFrame and WADO-RS frame retrieval (successful answers).",
    ["operation"],
    registry=_REGISTRY,
)
IMPORT_JOBS = Counter(
    "openhi_import_jobs", "Import jobs ended, by final status.", ["status"], registry=_REGISTRY
)
IMPORT_INSTANCES = Counter(
    "openhi_import_instances",
    "Files of ended import jobs, by outcome (imported, duplicate, failed).",
    ["outcome"],
    registry=_REGISTRY,
)
TRANSCODE = Histogram(
    "openhi_transcode_seconds",
    "Pixel work per stored instance (import jobs, STOW-RS, C-STORE) but the verification: parsing the file, "
    "decoding its frames and the lossless encode.",
    buckets=TRANSCODE_BUCKETS,
    registry=_REGISTRY,
)
VERIFICATION = Histogram(
    "openhi_verification_seconds",
    "The bit-exact verification per transcoded instance: decoding the encoded frames and comparing them "
    "with the source pixels.",
    buckets=TRANSCODE_BUCKETS,
    registry=_REGISTRY,
)
STORE_ERRORS = Counter(
    "openhi_store_errors",
    "Errors of the metadata index or the blob store that failed a request or a job.",
    ["store"],
    registry=_REGISTRY,
)


#: the latency buckets' upper bounds, +Inf last (``bisect_left`` gives a value's bucket, as Prometheus counts)
BOUNDS = (*LATENCY_BUCKETS, float("inf"))
#: what a successful answer of these routes serves: one frame, or the frames its frame list names
FRAME_ROUTES = {"GetImageFrame": 1, "wado-frames": 2}


class Slot:
    """What one process counted for one route and status since it started (only the event loop writes)."""

    __slots__ = ("buckets", "count", "done", "frame_kind", "frames", "labels", "sent", "sum")

    def __init__(self, operation: str, front: str, status: str) -> None:
        self.labels = (operation, front, status)
        self.count = 0
        self.buckets = [0] * len(BOUNDS)
        self.sum = 0.0
        self.sent = 0
        self.frames = 0
        self.frame_kind = FRAME_ROUTES.get(operation, 0) if status == "200" else 0
        self.done: tuple[int, list[int], float, int, int] = (0, [0] * len(BOUNDS), 0.0, 0, 0)


class RequestStats:
    """One process's request counts, one :class:`Slot` per (route, status); :meth:`flush` adds what is new
    to the metrics. Slots are written on the event loop only; a flush reads them under the GIL and adds
    the differences, so a count is never lost or written twice."""

    def __init__(self) -> None:
        self.slots: dict[tuple[int, int], Slot] = {}  # (id(route), status) -> its slot
        self._lock = threading.Lock()

    def slot(self, route: Any, status: int) -> Slot:
        """The slot of ``route`` (a Route, or None when no route matched) and ``status``."""
        found = self.slots.get((id(route), status))
        if found is None:
            if route is None:
                operation, front = "unmatched", "none"
            else:
                operation, front = route.name or (route.action or "").rpartition(":")[2], route.front
            found = self.slots[(id(route), status)] = Slot(operation, front, str(status))
        return found

    def flush(self) -> None:
        """Add to the metrics what was counted since the last flush."""
        with self._lock:
            for slot in list(self.slots.values()):
                now = (slot.count, list(slot.buckets), slot.sum, slot.sent, slot.frames)
                count, buckets, total, sent, frames = slot.done
                if now[0] != count:
                    REQUESTS.labels(*slot.labels).inc(now[0] - count)
                    child = LATENCY.labels(*slot.labels[:2])
                    for i, bucket in enumerate(child._buckets):  # n observations into one bucket at once
                        if now[1][i] != buckets[i]:
                            bucket.inc(now[1][i] - buckets[i])
                    child._sum.inc(now[2] - total)
                if now[3] != sent:
                    SENT.labels(*slot.labels[:2]).inc(now[3] - sent)
                if now[4] != frames:
                    FRAMES.labels(slot.labels[0]).inc(now[4] - frames)
                slot.done = now


_stats: RequestStats | None = None
_stats_lock = threading.Lock()


def request_stats() -> RequestStats:
    """This process's request counts, flushed every :data:`FLUSH_SECONDS` by a daemon thread."""
    global _stats
    with _stats_lock:
        if _stats is None:
            _stats = RequestStats()
            stats = _stats
            threading.Thread(target=_flush_loop, args=(stats,), name="openhi-metrics", daemon=True).start()
        return _stats


def _flush_loop(stats: RequestStats) -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            stats.flush()
        except Exception:  # a full disk must not end the thread; the next flush tries again
            logging.getLogger("openhi.metrics").exception("metrics flush failed")


# ----------------------------------------------------------------------------- the core's sink


class CoreSink:
    """The core's measurements (:mod:`openhi.core.telemetry`) as metrics."""

    def import_job(self, status: str, imported: int, duplicates: int, failed: int) -> None:
        IMPORT_JOBS.labels(status).inc()
        for outcome, n in (("imported", imported), ("duplicate", duplicates), ("failed", failed)):
            if n:
                IMPORT_INSTANCES.labels(outcome).inc(n)

    def transcode_seconds(self, seconds: float) -> None:
        TRANSCODE.observe(seconds)

    def verification_seconds(self, seconds: float) -> None:
        VERIFICATION.observe(seconds)


def core_sink() -> CoreSink:
    """The sink a pixel-pool process finds through ``OPENHI_TELEMETRY_SINK``."""
    return CoreSink()


# ----------------------------------------------------------------------------- store errors

_INDEX_MODULES = (
    "openhi.storage.sqlite",
    "openhi.storage.postgres",
    "openhi.storage.control_sql",
    "openhi.storage.imagesets_sql",
    "openhi.storage.dicom_index_sql",
    "openhi.storage.dicom_query_sql",
    "openhi.storage.sql_dialect",
    "sqlite3",
    "psycopg",
)
_BLOB_MODULES = ("openhi.storage.blobs", "obstore")


def store_of(exc: BaseException) -> str | None:
    """``index`` or ``blobs`` when ``exc`` was raised inside that store's adapter or driver, else None."""
    kind = _kind(type(exc).__module__)
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:  # the innermost frame of a store's code decides
        kind = _kind(str(tb.tb_frame.f_globals.get("__name__", ""))) or kind
        tb = tb.tb_next
    return kind


def _kind(module: str) -> str | None:
    if module.startswith(_INDEX_MODULES):
        return "index"
    if module.startswith(_BLOB_MODULES):
        return "blobs"
    return None


class StoreErrorCounter(logging.Handler):
    """Counts the logged exceptions (``log.exception``) that come from the index or the blob store."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        store = store_of(exc) if exc is not None else None
        if store is not None:
            STORE_ERRORS.labels(store).inc()


def count_store_errors(logger: logging.Logger) -> None:
    """Attach one :class:`StoreErrorCounter` to ``logger`` (again: nothing)."""
    if not any(isinstance(h, StoreErrorCounter) for h in logger.handlers):
        logger.addHandler(StoreErrorCounter())


# ----------------------------------------------------------------------------- the scrape

_cache: dict[str, tuple[float, Any]] = {}


def _queued_jobs(services: Any) -> dict[str, float]:
    jobs = services.env.index.jobs_in_status(QUEUED_STATUSES)
    counts = dict.fromkeys(QUEUED_STATUSES, 0.0)
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0.0) + 1
    return counts


def _webhook_state(services: Any) -> tuple[int, list[Any]]:
    """The feed's last sequence number and every webhook's cursor (the index holds them for all processes)."""
    index = services.env.index
    return index.last_event_seq(), index.webhook_cursors()


def _cached(key: str, compute: Callable[[], T]) -> T:
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]  # type: ignore[no-any-return]
    value = compute()
    _cache[key] = (now, value)
    return value


class ServerCollector:
    """The values a scrape asks for: queue depth and webhook backlog (from the index), registered sources,
    the version."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("openhi_build_info", "The running openhi version.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        queue = GaugeMetricFamily(
            "openhi_import_queue_jobs", "Import jobs waiting or running, by status.", labels=["status"]
        )
        try:
            counts = _cached("queue", lambda: _queued_jobs(self.services))
        except Exception:  # the index does not answer: the scrape still answers, without the queue
            STORE_ERRORS.labels("index").inc()
        else:
            for status in QUEUED_STATUSES:
                queue.add_metric([status], counts[status])
            yield queue
        try:
            last, cursors = _cached("webhooks", lambda: _webhook_state(self.services))
        except Exception:  # the index does not answer: the scrape still answers, without the backlog
            STORE_ERRORS.labels("index").inc()
        else:
            yield GaugeMetricFamily(
                "openhi_events_last_seq", "The sequence number of the event feed's last event.", value=last
            )
            backlog = GaugeMetricFamily(
                "openhi_webhook_backlog_events",
                "Events of the feed not yet delivered to (or filtered out for) a webhook, by webhook name.",
                labels=["webhook"],
            )
            failing = GaugeMetricFamily(
                "openhi_webhook_failed_attempts",
                "Failed delivery attempts in a row at a webhook's next event (0: delivering normally).",
                labels=["webhook"],
            )
            for cursor in cursors:
                backlog.add_metric([cursor.name], max(0, last - cursor.delivered_seq))
                failing.add_metric([cursor.name], cursor.attempts)
            yield backlog
            yield failing
        for name, (help_text, fn) in list(SOURCES.items()):
            try:
                value = float(_cached(name, partial(fn, self.services)))
            except Exception:
                continue
            yield GaugeMetricFamily(name, help_text, value=value)


def scrape(services: Any) -> bytes:
    """The Prometheus text exposition of the whole server (every process, when in multiprocess mode)."""
    request_stats().flush()
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Own())
    registry.register(ServerCollector(services))
    return generate_latest(registry)


def serve_worker_metrics(services: Any, host: str, port: int) -> Any:
    """``GET /metrics`` of an ``openhi worker`` on ``host:port`` (its own small HTTP server, no
    authentication, like ``--metrics-public``): its processes' values, the queue and the webhook backlog.
    Returns the server (``shutdown()`` stops it).

    Raises:
        OSError: the address cannot be bound.
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(ServerCollector(services))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


class _Own:
    """This process's metrics (no multiprocess folder: a server embedded in another program)."""

    def collect(self) -> Iterator[Metric]:
        yield from _REGISTRY.collect()


def _handle(services: Any, request: Request) -> WireResponse:
    return WireResponse(200, [("content-type", CONTENT_TYPE)], scrape(services))


def metrics_route(public: bool) -> Route:
    """``GET /metrics``: authenticated and authorized as ``openhi:GetMetrics``, or open when ``public``."""
    if public:
        return Route("GET", METRICS_PATH, None, _handle, open=True, name="metrics")
    return Route("GET", METRICS_PATH, "openhi:GetMetrics", _handle, name="metrics", front="openhi")
