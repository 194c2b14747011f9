"""openhi's own JSON routes under ``/openhi/`` (beyond the AWS API): the version diff."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from openhi.awsapi.serializer import WireResponse
from openhi.core.diff import diff_versions
from openhi.core.errors import OpenHIError

if TYPE_CHECKING:
    from openhi.services import Services

_DIFF = re.compile(r"^/openhi/datastore/([^/]+)/imageSet/([^/]+)/diff/?$")
_STATUS = {
    "ValidationException": 400,
    "ResourceNotFoundException": 404,
    "ConflictException": 409,
}


def _json(status: int, body: dict[str, Any]) -> WireResponse:
    return WireResponse(status, [("content-type", "application/json")], json.dumps(body).encode())


def datastore_routes(services: Services, path: str, query: str) -> WireResponse:
    """``GET /openhi/datastore/{ds}/imageSet/{id}/diff?from=N&to=M`` → the changes between two versions."""
    match = _DIFF.match(path)
    if match is None:
        return _json(404, {"message": f"No openhi route for {path}"})
    params = parse_qs(query)
    try:
        body = diff_versions(
            services.env,
            match.group(1),
            match.group(2),
            params.get("from", [None])[0],
            params.get("to", [None])[0],
        )
    except OpenHIError as exc:
        return _json(_STATUS.get(exc.code, 500), {"message": exc.message, "code": exc.code})
    return _json(200, body)


ROUTES: dict[str, Callable[[Services, str, str], WireResponse]] = {"/openhi/datastore/": datastore_routes}
