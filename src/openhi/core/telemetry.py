"""What the core tells the metrics (import outcomes, pixel seconds): no-ops until a sink is installed.

The server installs its sink (:mod:`openhi.metrics`) at start-up; a process the server starts (a pixel-pool
process) finds it by name in :data:`SINK_ENV` the first time it reports something. The core never imports
the metrics library itself.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from openhi.core.import_reports import Outcome

#: ``module:function`` returning the sink of a process that has none installed (set by the server)
SINK_ENV = "OPENHI_TELEMETRY_SINK"

T = TypeVar("T")


class Sink(Protocol):
    """Where the core's measurements go."""

    def import_job(self, status: str, imported: int, duplicates: int, failed: int) -> None: ...

    def transcode_seconds(self, seconds: float) -> None: ...

    def verification_seconds(self, seconds: float) -> None: ...


_sink: Sink | None = None
_resolved = False


def install(sink: Sink | None) -> None:
    """Send this process's measurements to ``sink`` (None: drop them)."""
    global _sink, _resolved
    _sink, _resolved = sink, True


def _current() -> Sink | None:
    global _sink, _resolved
    if not _resolved:
        _resolved = True
        target = os.environ.get(SINK_ENV, "")
        module, _, name = target.partition(":")
        if module and name:
            try:
                _sink = getattr(importlib.import_module(module), name)()
            except Exception:  # measurements are never worth a failed import
                _sink = None
    return _sink


def warm() -> None:
    """Load this process's sink now (a pixel-pool process at start, not during its first file)."""
    _current()


def import_job(status: str, outcome: Outcome) -> None:
    """An import job ended with ``status`` (COMPLETED or FAILED); its files' outcome."""
    sink = _current()
    if sink is not None:
        sink.import_job(status, len(outcome.success), len(outcome.duplicates), len(outcome.failures))


def transcoded(work: Callable[..., T], *args: object) -> T:
    """``work(*args)``, its seconds reported as one stored instance's pixel work: the verification (the
    result's ``verification_seconds``: decoding the encoded frames again and comparing them) apart from the
    rest (reading the file, decoding it, the lossless encode). Exceptions (a rejected file) pass through
    unreported."""
    sink = _current()
    if sink is None:
        return work(*args)
    started = time.perf_counter()
    result = work(*args)
    elapsed = time.perf_counter() - started
    verifying = float(getattr(result, "verification_seconds", 0.0))
    sink.transcode_seconds(max(0.0, elapsed - verifying))
    if verifying:
        sink.verification_seconds(verifying)
    return result
