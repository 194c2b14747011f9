"""The DICOM port beside the HTTP server (placeholder until built)."""

from __future__ import annotations

from typing import Any

from openhi.dimse.settings import DimseSettings


def start_listener(settings: DimseSettings, services: Any, host: str) -> Any | None:
    """Start listening when ``settings.port`` is set; return something with ``close()`` (or None)."""
    return None
