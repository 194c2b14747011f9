"""Metrics and request logs of a server: what the app tells of each answered request, and the start-up.

``serve`` calls :func:`prepare_serve` before any API process exists (the metrics folder every process
writes to, the logging configuration); ``build_app`` calls :func:`request_observer` in each API process,
and the app calls ``observer.observe(scope, status, seconds, request_id)`` after every answered request.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from bisect import bisect_left
from typing import Any

from openhi.core import telemetry
from openhi.logs import AccessLog, configure

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is first imported


def prepare_serve(log_format: str, log_level: str) -> dict[str, Any]:
    """Before the API processes start: a fresh folder for every process's metric values (unless
    ``PROMETHEUS_MULTIPROC_DIR`` is set already; removed when this process exits), the core's sink for the
    processes they start, and logging for ``log_format``. Returns the uvicorn settings to add
    (``log_config``)."""
    _multiprocess_folder(remove_on_sigterm=True)
    return {"log_config": configure(log_format, log_level)}


def prepare_worker() -> None:
    """Before ``openhi worker`` starts its pixel pool (with ``--metrics-port``): the folder its processes
    write their values to (removed when it exits) and the core's sink for them and for itself."""
    _multiprocess_folder(remove_on_sigterm=False)  # the worker ends its own loop on SIGTERM: atexit runs
    from openhi import metrics

    telemetry.install(metrics.CoreSink())
    metrics.count_store_errors(logging.getLogger("openhi"))


def _multiprocess_folder(*, remove_on_sigterm: bool) -> None:
    """``PROMETHEUS_MULTIPROC_DIR``: a fresh folder removed at exit, unless one is set already; and the
    sink the processes started from here find."""
    if not os.environ.get(MULTIPROC_ENV):
        folder = tempfile.mkdtemp(prefix="openhi-metrics-")
        os.environ[MULTIPROC_ENV] = folder
        atexit.register(_remove_folder, folder)
        if remove_on_sigterm:
            _remove_on_sigterm(folder)
    values: Any = sys.modules.get("prometheus_client.values")
    if values is not None:  # loaded before the folder was set: the metrics created from now on use it
        values.ValueClass = values.get_value_class()
    os.environ.setdefault(telemetry.SINK_ENV, "openhi.metrics:core_sink")


def _remove_on_sigterm(folder: str) -> None:
    """uvicorn ends a single-process server by raising SIGTERM again once it has drained (no atexit then):
    the folder goes first, then the signal does what it did before."""
    previous = signal.getsignal(signal.SIGTERM)

    def terminated(signum: int, frame: Any) -> None:
        _remove_folder(folder)
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        signal.raise_signal(signum)

    with contextlib.suppress(ValueError):  # not the main thread: atexit only
        signal.signal(signal.SIGTERM, terminated)


def _remove_folder(folder: str) -> None:
    if os.getpid() == _PARENT_PID:  # not a child that inherited the registration
        shutil.rmtree(folder, ignore_errors=True)


_PARENT_PID = os.getpid()


class Observer:
    """Counts every answered request (metrics) and writes its access line (logs)."""

    def __init__(self, log_format: str, metrics_public: bool) -> None:
        from openhi import metrics

        self.metrics_public = metrics_public
        self.stats = metrics.request_stats()
        self.access = AccessLog(log_format)
        self._slots = self.stats.slots
        self._bounds = metrics.BOUNDS
        self._access_on = self.access.logger.isEnabledFor
        self._access_level = self.access.level
        telemetry.install(metrics.CoreSink())
        metrics.count_store_errors(logging.getLogger("openhi"))

    def routes(self) -> list[Any]:
        """The routes this observer serves: ``GET /metrics`` (open with --metrics-public)."""
        from openhi.metrics import metrics_route

        return [metrics_route(self.metrics_public)]

    def observe(self, scope: Any, status: int, seconds: float, request_id: str) -> None:
        """Count one answered request and write its access line (when that logger is on). Runs on the
        event loop after the response is sent: a few increments, no lock, no I/O."""
        route = scope.get("openhi.route")
        slot = self._slots.get((id(route), status)) or self.stats.slot(route, status)
        slot.count += 1
        slot.buckets[bisect_left(self._bounds, seconds)] += 1
        slot.sum += seconds
        sent = scope.get("openhi.response_bytes")
        if sent:
            slot.sent += sent
        if slot.frame_kind:  # 1: one frame (GetImageFrame); 2: the frame list of WADO-RS frames
            slot.frames += 1 if slot.frame_kind == 1 else scope["path"].rpartition("/")[2].count(",") + 1
        if self._access_on(self._access_level):
            self.access.write(scope, route, slot.labels[0], slot.labels[1], status, seconds, request_id)


def request_observer(log_format: str, metrics_public: bool) -> Observer:
    """What the app tells of every answered request (``observe(scope, status, seconds, request_id)``)."""
    return Observer(log_format, metrics_public)
