"""The error every backend adapter raises for a URL or setup it cannot use (no imports: adapters share it)."""

from __future__ import annotations


class ConfigurationError(Exception):
    """A backend URL that cannot be used; the message says why."""
