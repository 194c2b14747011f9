"""The TaskRunner port: background work off the request path (write completions, imports, collection)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class TaskRunner(Protocol):
    def submit(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` soon, in the background; failures are logged, never raised to the caller."""
        ...

    def drain(self, timeout: float) -> bool:
        """Wait until no task is running or queued; True if drained in time."""
        ...

    def shutdown(self) -> None: ...
