"""``openhi send`` (placeholder until built)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    """Add ``send`` to the ``openhi`` subcommands."""
