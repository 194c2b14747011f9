"""Metrics and request logs of a server (placeholder until built)."""

from __future__ import annotations

from typing import Any


def request_observer(log_format: str, metrics_public: bool) -> Any | None:
    """What the app tells of every answered request (``observe(scope, status, seconds, request_id)``)."""
    return None
