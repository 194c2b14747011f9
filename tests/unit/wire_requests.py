"""Raw requests through the wire layer as the app runs it (route, parse, validate), for the wire tests."""

from __future__ import annotations

from typing import Any

import pytest

from openhi.awsapi.parser import parse_request
from openhi.awsapi.router import Router
from openhi.awsapi.validate import validate_params
from openhi.core.errors import ValidationError

ROUTER = Router()


def wire_request(method: str, path: str, query: bytes = b"", body: bytes = b"") -> dict[str, Any]:
    """Route, parse and validate one raw request, as the app will; the validated parameters."""
    op, uri_params = ROUTER.match(method, path)
    params = parse_request(op, uri_params, query, {"content-type": "application/json"}, body)
    validate_params(op.input_shape, params)
    return params


def rejected(method: str, path: str, query: bytes = b"", body: bytes = b"") -> str:
    """The message of the ValidationException the request gets (the test fails when it gets none)."""
    with pytest.raises(ValidationError) as info:
        wire_request(method, path, query, body)
    assert info.value.code == "ValidationException"
    message = info.value.message
    message.encode("utf-8")  # the message itself is valid text: it serializes
    return message
