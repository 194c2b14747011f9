"""Gauges other parts of the server add to ``/metrics``, computed at scrape time (no metrics library here).

Importing this module never loads prometheus_client, so it is safe at any module's import time (the
library must load only after ``openhi serve`` has set its multiprocess folder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GaugeSource = Callable[[Any], float]
#: name -> (help text, function of the app's services returning the value)
SOURCES: dict[str, tuple[str, GaugeSource]] = {}


def register_gauge_source(name: str, fn: GaugeSource, help: str = "") -> None:
    """A gauge computed when ``/metrics`` is scraped: ``fn(services)`` (the app's services) returns its
    value; asked at most every couple of seconds per process. An exception leaves it out of that scrape.
    Registering a name again replaces its source.

    Raises:
        ValueError: ``name`` is not a valid metric name.
    """
    if not name or name[0].isdigit() or not all(c.isascii() and (c.isalnum() or c in "_:") for c in name):
        raise ValueError(f"{name!r} is not a metric name")
    SOURCES[name] = (help or name, fn)
