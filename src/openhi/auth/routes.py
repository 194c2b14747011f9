"""The one route table: every route names its action and resources, so none can skip authorization.

A route is registered with the action a policy grants (``medical-imaging:GetImageSet``,
``openhi:PutImportInput`` …) and a function that names the resources it acts on. The app authenticates
and authorizes every matched request before the route's handler runs. Only the paths in
:data:`OPEN_PATHS` may be registered without an action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Any

from openhi.auth.actions import canonical_action
from openhi.auth.conditions import Context, DictContext
from openhi.auth.evaluate import Target
from openhi.awsapi.router import PatternTable
from openhi.core.errors import OpenHIError

#: the routes that may be answered without authentication: liveness and readiness probes carry no data;
#: ``/metrics`` (counts, no data) is registered open only when the server runs with --metrics-public
OPEN_PATHS = frozenset({("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")})

MAX_BODY_BYTES = 1024 * 1024


class Body(Enum):
    """How a route receives its request body."""

    BUFFERED = "buffered"  # in memory, at most MAX_BODY_BYTES
    FILE = "file"  # streamed to a temporary file, at most the route's max_body


@dataclass
class Request:
    """A request as a route sees it: raw parts, uri labels, the body, and who signed it."""

    method: str
    path: str  # the raw (percent-encoded) path, decoded as latin-1
    query: bytes
    headers: list[tuple[bytes, bytes]]
    labels: dict[str, str]
    body: bytes = b""
    body_file: IO[bytes] | None = None  # Body.FILE routes: positioned at 0
    body_size: int = 0
    body_sha256: str | None = None  # hex digest of the received body, when computed
    access_key_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # what the route's parse step made of it

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


Handler = Callable[[Any, Request], Any]  # (services, request) -> WireResponse
Resources = Callable[[Any, Request], Sequence[Target]]  # (services, request) -> what it acts on
Parse = Callable[[Request], None]
NO_CONTEXT: Context = DictContext()


def any_resource(services: Any, request: Request) -> Sequence[Target]:
    """Actions that act on no particular resource: the resource is ``*``."""
    return (Target("*", NO_CONTEXT),)


def _no_parse(request: Request) -> None:
    return None


@dataclass(frozen=True)
class Route:
    """One method + uri pattern, the action a policy must allow, its resources, and its handler.

    Raises ValueError on construction when the action is missing or unknown (or when a route that is
    not one of :data:`OPEN_PATHS` is marked open).
    """

    method: str
    pattern: str
    action: str | None
    handler: Handler
    resources: Resources = any_resource
    parse: Parse = _no_parse
    body: Body = Body.BUFFERED
    max_body: int = MAX_BODY_BYTES
    inline: Callable[[Any, Request], bool] | None = None  # runs on the event loop when this says so
    open: bool = False
    name: str = ""
    #: which front door: "api" (AWS API), "openhi" (/openhi/...), "dicomweb" (browsers and viewers too)
    front: str = "api"

    def __post_init__(self) -> None:
        if self.open:
            if (self.method.upper(), self.pattern) not in OPEN_PATHS:
                raise ValueError(f"{self.method} {self.pattern} cannot be an open route")
            if self.action is not None:
                raise ValueError(f"open route {self.pattern} takes no action")
            return
        if not self.action:
            raise ValueError(f"route {self.method} {self.pattern} has no action: every route needs one")
        try:
            object.__setattr__(self, "action", canonical_action(self.action))
        except OpenHIError as exc:
            raise ValueError(f"route {self.method} {self.pattern}: {exc.message}") from None


class RouteTable:
    """All routes of the app; ``match`` finds the route and its labels or raises RouteNotFound."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        seen: set[tuple[str, str]] = set()
        for route in self.routes:
            key = (route.method.upper(), route.pattern)
            if key in seen:
                raise ValueError(f"two routes for {key[0]} {key[1]}")
            seen.add(key)
        self._table = PatternTable((r.method, r.pattern, r) for r in self.routes)

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        return self._table.match(method, raw_path)

    def __iter__(self) -> Any:
        return iter(self.routes)
