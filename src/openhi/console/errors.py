"""Recent error log records kept in memory (the status page shows them) and HTML error answers."""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from openhi.auth.routes import Request
from openhi.awsapi.serializer import WireResponse
from openhi.core.errors import OpenHIError

RING_SIZE = 50


class ErrorRing(logging.Handler):
    """The last :data:`RING_SIZE` records at ERROR or above, of every logger of this process."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=RING_SIZE)
        self._lock_ring = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        entry = {
            "time": record.created,
            "logger": record.name,
            "level": record.levelname,
            "message": message[:2000],
            "exception": repr(record.exc_info[1])[:500] if record.exc_info and record.exc_info[1] else "",
        }
        with self._lock_ring:
            self._records.append(entry)

    def recent(self) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock_ring:
            return list(reversed(self._records))


_RING: list[ErrorRing] = []


def error_ring() -> ErrorRing:
    """The process's ring, attached to the root logger (again, when a logging configuration replaced the
    root's handlers since: uvicorn configures logging after the app is built)."""
    if not _RING:
        _RING.append(ErrorRing())
    ring = _RING[0]
    root = logging.getLogger()
    if ring not in root.handlers:
        root.addHandler(ring)
    return ring


STARTED_AT = time.time()
_STATUS = {
    "ResourceNotFoundException": 404,
    "ConflictException": 409,
    "AccessDeniedException": 403,
    "ServiceQuotaExceededException": 402,
    "ThrottlingException": 429,
    "InternalServerException": 500,
}

Handler = Callable[[Any, Request], WireResponse]


def html_errors(handler: Handler) -> Handler:
    """A console handler whose modeled errors (404, 409, validation …) become an HTML page, not JSON."""

    @functools.wraps(handler)
    def wrapped(services: Any, request: Request) -> WireResponse:
        from openhi.console.render import page

        try:
            return handler(services, request)
        except OpenHIError as exc:
            status = int(getattr(exc, "status", None) or _STATUS.get(exc.code, 400))
            return page(services, request, "error.html", status=status, code=exc.code, message=exc.message)

    return wrapped
