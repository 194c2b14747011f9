"""Log lines of a server: plain text or one JSON object per line, and the access line of each request.

The access line names the request (its ``x-amzn-RequestId``), the operation, the datastore, the status and
the latency; never a query string (QIDO-RS queries carry patient names) or a body.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
import time
from typing import Any

#: the access lines (one per answered request): INFO in JSON mode, DEBUG in text mode
ACCESS_LOGGER = "openhi.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the record attribute holding an access line's fields (``logger.info(..., extra={FIELDS: {...}})``)
FIELDS = "openhi_fields"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the access fields of an
    access line, and the exception's type and traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    seconds = int(created)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"
    )


def log_config(log_format: str, log_level: str) -> dict[str, Any]:
    """uvicorn's logging configuration (``uvicorn.Config(log_config=...)``) for ``log_format``: its own
    loggers and every other logger (openhi's through the root) on stderr, as text or JSON."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    level = log_level.upper()
    if log_format == "json":
        config["formatters"] = {
            "default": {"()": "openhi.logs.JsonFormatter"},
            "access": {"()": "openhi.logs.JsonFormatter"},
        }
        config["handlers"]["access"]["stream"] = "ext://sys.stderr"
        root_formatter = "default"
    else:
        config["formatters"]["openhi"] = {"format": TEXT_FORMAT}
        root_formatter = "openhi"
    config["handlers"]["root"] = {
        "formatter": root_formatter,
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["root"], "level": level if level != "TRACE" else "DEBUG"}
    return config


def configure(log_format: str, log_level: str) -> dict[str, Any]:
    """Apply :func:`log_config` to this process now (start-up lines are formatted too) and return it."""
    config = log_config(log_format, log_level)
    logging.config.dictConfig(copy.deepcopy(config))
    return config


class AccessLog:
    """Writes the access line of a request when its logger is enabled (cheap to ask when it is not)."""

    def __init__(self, log_format: str) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.json = log_format == "json"
        self.level = logging.INFO if self.json else logging.DEBUG
        self._datastore_at: dict[int, int | None] = {}  # id(route) -> path segment of {datastoreId}

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(self.level)

    def write(
        self,
        scope: Any,
        route: Any,
        operation: str,
        front: str,
        status: int,
        seconds: float,
        request_id: str,
    ) -> None:
        path: str = scope.get("path", "")  # the decoded path: no query string, ever
        method: str = scope.get("method", "")
        fields = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "operation": operation,
            "front": front,
            "datastore": self._datastore(route, path),
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
        }
        if self.json:
            message = f"{method} {operation} {status}"
        else:
            message = (
                f"{method} {path} {status} {fields['latency_ms']}ms operation={operation} "
                f"datastore={fields['datastore'] or '-'} request_id={request_id}"
            )
        self.logger.log(self.level, message, extra={FIELDS: fields})

    def _datastore(self, route: Any, path: str) -> str | None:
        if route is None:
            return None
        key = id(route)
        at = self._datastore_at.get(key, -1)
        if at == -1:
            segments = str(route.pattern).split("/")
            at = segments.index("{datastoreId}") if "{datastoreId}" in segments else None
            self._datastore_at[key] = at
        if at is None:
            return None
        parts = path.split("/")
        return parts[at] if at < len(parts) else None
