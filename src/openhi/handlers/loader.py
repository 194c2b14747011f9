"""Imports every handler module (each registers its operations in the registry) and returns the table."""

from __future__ import annotations

from openhi.handlers import datastores, imports, reads, tags, writes
from openhi.handlers.registry import HANDLERS, Handler

_MODULES = (datastores, imports, reads, tags, writes)  # imported for their @handles registrations


def load_all() -> dict[str, Handler]:
    """The operation → handler table with every handler module loaded."""
    return HANDLERS
