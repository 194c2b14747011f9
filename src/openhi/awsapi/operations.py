"""The API operations as routes of the one route table: parse + validate, the handler, the serialized reply."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from botocore.model import OperationModel, ServiceModel

from openhi.auth.actions import api_action
from openhi.auth.resources import request_targets
from openhi.auth.routes import Request, Route
from openhi.awsapi.parser import parse_request
from openhi.awsapi.serializer import WireResponse, serialize_not_implemented, serialize_output
from openhi.awsapi.validate import validate_params

OperationHandler = Callable[[Any, dict[str, Any]], dict[str, Any]]
#: no model member carries Accept for GetImageFrame; core.reads negotiates on it
ACCEPT_PARAM = "__accept__"


def _parser(op: OperationModel) -> Callable[[Request], None]:
    def parse(request: Request) -> None:
        header_map = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
        params = parse_request(op, request.labels, request.query, header_map, request.body)
        validate_params(op.input_shape, params)
        if op.name == "GetImageFrame":
            params[ACCEPT_PARAM] = header_map.get("accept")
        request.params = params

    return parse


def _handler(op: OperationModel, handler: OperationHandler | None) -> Callable[[Any, Request], WireResponse]:
    def handle(services: Any, request: Request) -> WireResponse:
        if handler is None:
            return serialize_not_implemented(op.name)
        return serialize_output(op, handler(services, request.params))

    return handle


def _frames_inline(services: Any, request: Request) -> bool:
    """GetImageFrame on local storage (SQLite index, file blobs) runs on the event loop: its ~50 µs of work
    costs less than the hop to a worker thread and back (and the GIL hand-offs that come with it)."""
    return bool(services.reads.frames_inline)


def api_routes(model: ServiceModel, handlers: Mapping[str, OperationHandler]) -> list[Route]:
    """One route per model operation, action ``medical-imaging:<Operation>``."""
    routes = []
    for name in model.operation_names:
        op = model.operation_model(name)
        routes.append(
            Route(
                op.http.get("method", "POST").upper(),
                op.http["requestUri"].split("?", 1)[0],
                api_action(name),
                _handler(op, handlers.get(name)),
                request_targets(name),
                parse=_parser(op),
                inline=_frames_inline if name == "GetImageFrame" else None,
                name=name,
            )
        )
    return routes
