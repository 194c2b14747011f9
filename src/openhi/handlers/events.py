"""``GET /openhi/events?after=SEQ&limit=N``: the event feed (AWS's EventBridge events, in commit order)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.core.errors import ValidationError
from openhi.core.events import feed_item

if TYPE_CHECKING:
    from openhi.services import Services

EVENTS_PATH = "/openhi/events"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _integer(params: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    """Raises ValidationError: the parameter is not an integer in [low, high]."""
    values = params.get(name)
    if not values:
        return default
    text = values[-1]
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise ValidationError(f"{name} must be an integer from {low} to {high}; got {text!r}.")
    return int(text)


def list_events(services: Services, request: Request) -> WireResponse:
    """The events after ``after`` (default 0), at most ``limit`` (default 100, at most 1000); ``next`` is
    the ``after`` of the next page (the last seq listed, or ``after`` itself when there is nothing new).

    Raises:
        ValidationError: ``after`` or ``limit`` is not a non-negative integer in range.
    """
    params = parse_qs(request.query.decode("latin-1"))
    after = _integer(params, "after", 0, 0, 2**62)
    limit = _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    events = services.env.index.list_events(after, limit)
    body = {
        "events": [feed_item(services.env, e) for e in events],
        "next": events[-1].seq if events else after,
    }
    return WireResponse(200, [("content-type", "application/json")], json.dumps(body).encode())


ROUTES: tuple[Route, ...] = (
    Route("GET", EVENTS_PATH, "openhi:GetEvents", list_events, name="events", front="openhi"),
)
