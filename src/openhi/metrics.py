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
from bisect import bisect_left
from collections.abc import Callable, Iterator
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from openhi import __version__
from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse

T = TypeVar("T")
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
    "Pixel work per stored instance (import jobs and STOW-RS): decode, lossless encode and the bit-exact "
    "verification of the encoded frames.",
    buckets=TRANSCODE_BUCKETS,
    registry=_REGISTRY,
)
STORE_ERRORS = Counter(
    "openhi_store_errors",
    "Errors of the metadata index or the blob store that failed a request or a job.",
    ["store"],
    registry=_REGISTRY,
)


class RequestStats:
    """One process's request counts since it started; :meth:`flush` writes what is new to the metrics.

    :meth:`record` runs on the event loop only (one writer); :meth:`flush` copies under the GIL and adds
    the differences, so a count is never lost or written twice.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}  # bucket counts (+Inf last), then the sum
        self.sent: dict[tuple[str, str], int] = {}
        self.frames: dict[str, int] = {}
        self._bounds = [*LATENCY_BUCKETS, float("inf")]
        self._done: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def record(self, operation: str, front: str, status: str, seconds: float, sent: int, frames: int) -> None:
        key = (operation, front, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        pair = (operation, front)
        counts = self.latency.get(pair)
        if counts is None:
            counts = self.latency[pair] = [0] * (len(self._bounds) + 1)
        counts[bisect_left(self._bounds, seconds)] += 1
        counts[-1] += seconds
        if sent:
            self.sent[pair] = self.sent.get(pair, 0) + sent
        if frames:
            self.frames[operation] = self.frames.get(operation, 0) + frames

    def flush(self) -> None:
        """Add to the metrics what was counted since the last flush."""
        with self._lock:
            self._flush_counter(REQUESTS, "r", self.requests.copy())
            self._flush_counter(SENT, "s", self.sent.copy())
            self._flush_counter(FRAMES, "f", {(k,): v for k, v in self.frames.copy().items()})
            for pair, counts in self.latency.copy().items():
                now = list(counts)
                before = self._done.get(("l", pair)) or [0] * len(now)
                child = LATENCY.labels(*pair)
                for i, bucket in enumerate(child._buckets):  # adds n observations to one bucket at once
                    if now[i] != before[i]:
                        bucket.inc(now[i] - before[i])
                if now[-1] != before[-1]:
                    child._sum.inc(now[-1] - before[-1])
                self._done[("l", pair)] = now

    def _flush_counter(self, counter: Counter, tag: str, values: dict[Any, int]) -> None:
        for key, value in values.items():
            before = self._done.get((tag, key), 0)
            if value != before:
                counter.labels(*key).inc(value - before)
                self._done[(tag, key)] = value


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

GaugeSource = Callable[[Any], float]
_sources: dict[str, tuple[str, GaugeSource]] = {}
_cache: dict[str, tuple[float, Any]] = {}


def register_gauge_source(name: str, fn: GaugeSource, help: str = "") -> None:
    """A gauge computed when ``/metrics`` is scraped: ``fn(services)`` (the app's services) returns its
    value; asked at most every :data:`CACHE_SECONDS` per process. An exception leaves it out of that scrape.

    Raises:
        ValueError: ``name`` is not a valid metric name.
    """
    if not name or not all(c.isalnum() or c in "_:" for c in name) or name[0].isdigit():
        raise ValueError(f"{name!r} is not a metric name")
    _sources[name] = (help or name, fn)


def _queued_jobs(services: Any) -> dict[str, float]:
    jobs = services.env.index.jobs_in_status(QUEUED_STATUSES)
    counts = dict.fromkeys(QUEUED_STATUSES, 0.0)
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0.0) + 1
    return counts


def _cached(key: str, compute: Callable[[], T]) -> T:
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]  # type: ignore[no-any-return]
    value = compute()
    _cache[key] = (now, value)
    return value


class ServerCollector:
    """The values a scrape asks for: queue depth (from the index), registered sources, the version."""

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
        for name, (help_text, fn) in list(_sources.items()):
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
