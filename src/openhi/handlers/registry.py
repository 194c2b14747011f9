"""The operation → handler table that the ASGI app dispatches on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openhi.services import Services

Handler = Callable[["Services", dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}
# openhi's own JSON routes outside the AWS namespace: path prefix -> fn(services, path, query) -> WireResponse
ExtraRoute = Callable[["Services", str, str], Any]


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


def load_extra_routes() -> dict[str, ExtraRoute]:
    """Routes under ``/openhi/`` (beyond the real service), from ``openhi.handlers.extra`` when present."""
    try:
        from openhi.handlers import extra  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return {}
    routes: dict[str, ExtraRoute] = extra.ROUTES
    return routes
