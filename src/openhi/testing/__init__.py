"""Test helpers for users and for openhi itself: a real openhi server on a free port, plus boto3 clients."""

from __future__ import annotations

from openhi.testing.server import RunningServer, free_port

__all__ = ["RunningServer", "free_port"]
