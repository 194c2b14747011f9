"""``openhi export`` (placeholder until built)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    """Add ``export`` to the ``openhi`` subcommands."""
