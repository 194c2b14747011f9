"""The operation → handler table: handler modules register into it with ``@handles`` (see loader.py)."""

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
