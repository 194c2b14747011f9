"""The operation → handler table that the ASGI app dispatches on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openhi.services import Services

Handler = Callable[["Services", dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def handles(operation: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of the named model operation."""

    def register(fn: Handler) -> Handler:
        if operation in HANDLERS:
            raise RuntimeError(f"two handlers for {operation}")
        HANDLERS[operation] = fn
        return fn

    return register


def load_all() -> dict[str, Handler]:
    """Import every handler module (each registers its operations) and return the table."""
    from openhi.handlers import datastores, tags  # noqa: F401

    for optional in ("imports", "reads", "writes"):
        try:
            __import__(f"openhi.handlers.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"openhi.handlers.{optional}":
                raise
    return HANDLERS
