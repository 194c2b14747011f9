"""The request guard of a server's configuration (placeholder until built)."""

from __future__ import annotations

from typing import Any


def request_guard(throttle: str, faults: str | None) -> Any | None:
    """The guard the app consults for every request, or None when nothing is configured."""
    return None
