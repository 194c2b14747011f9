"""openhi's own routes under ``/openhi/`` (beyond the AWS API), each with the action a policy must allow."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from openhi.auth.evaluate import Target
from openhi.auth.resources import image_set_targets
from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.core.diff import diff_versions
from openhi.dimse.send_route import ROUTES as SEND_ROUTES
from openhi.handlers.events import ROUTES as EVENT_ROUTES
from openhi.handlers.uploads import UPLOAD_ROUTES

if TYPE_CHECKING:
    from openhi.services import Services

DIFF_PATTERN = "/openhi/datastore/{datastoreId}/imageSet/{imageSetId}/diff"


def json_response(status: int, body: dict[str, Any]) -> WireResponse:
    return WireResponse(status, [("content-type", "application/json")], json.dumps(body).encode())


def _diff_targets(services: Services, request: Request) -> Sequence[Target]:
    labels = request.labels
    return image_set_targets(services.resource_info, labels["datastoreId"], [labels["imageSetId"]])


def version_diff(services: Services, request: Request) -> WireResponse:
    """``GET /openhi/datastore/{ds}/imageSet/{id}/diff?from=N&to=M`` → the changes between two versions."""
    params = parse_qs(request.query.decode("latin-1"))
    body = diff_versions(
        services.env,
        request.labels["datastoreId"],
        request.labels["imageSetId"],
        params.get("from", [None])[0],
        params.get("to", [None])[0],
    )
    return json_response(200, body)


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        DIFF_PATTERN,
        "openhi:GetImageSetDiff",
        version_diff,
        _diff_targets,
        name="diff",
        front="openhi",
    ),
    *UPLOAD_ROUTES,
    *EVENT_ROUTES,
    *SEND_ROUTES,
)
