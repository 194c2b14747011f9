"""The ASGI application: AWS wire layer → handler (in a worker thread) → serialized response."""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio.to_thread

from openhi.awsapi.parser import parse_request
from openhi.awsapi.router import RouteNotFound, Router
from openhi.awsapi.serializer import (
    WireResponse,
    serialize_error,
    serialize_not_implemented,
    serialize_output,
    serialize_route_not_found,
)
from openhi.awsapi.service import load_service_model
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.awsapi.validate import validate_params
from openhi.core.errors import OpenHIError, ValidationError
from openhi.core.file_body import FileBody
from openhi.handlers.registry import load_all, load_extra_routes
from openhi.services import Services

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("openhi.asgi")
MAX_BODY_BYTES = 1024 * 1024
#: the ASGI zero-copy send extension (offered by openhi.zerocopy's uvicorn protocol)
ZEROCOPY = "http.response.zerocopysend"


class OpenHIApp:
    """One app for the AWS API plus a few openhi routes (``/healthz``, ``/openhi/...``)."""

    def __init__(self, services: Services, verifier: SigV4Verifier) -> None:
        self.services = services
        self.verifier = verifier
        self.model = load_service_model()
        self.router = Router(self.model)
        self.handlers = load_all()
        self.extra_routes = load_extra_routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = _next_request_id()
        try:
            response = await self._handle(scope, receive)
        except OpenHIError as exc:
            response = serialize_error(exc.code, exc.message)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            response = serialize_error(
                "InternalServerException", "An unexpected error occurred; see the server log."
            )
        await self._send(send, response, request_id, scope.get("extensions"))

    async def _handle(self, scope: Scope, receive: Receive) -> WireResponse:
        method: str = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        body = await _read_body(receive)
        if path in ("/healthz", "/readyz") or path.startswith("/openhi/"):
            return await self._extra(path, scope, body)
        try:
            op, uri_params = self.router.match(method, path)
        except RouteNotFound as exc:
            return serialize_route_not_found(exc)
        headers = [(k.lower(), v) for k, v in scope["headers"]]
        self.verifier.verify(method, path, scope.get("query_string", b""), headers, body)
        header_map = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        params = parse_request(op, uri_params, scope.get("query_string", b""), header_map, body)
        validate_params(op.input_shape, params)
        if op.name == "GetImageFrame":  # no model member carries Accept; core.reads negotiates on it
            params["__accept__"] = header_map.get("accept")
        handler = self.handlers.get(op.name)
        if handler is None:
            return serialize_not_implemented(op.name)
        if _runs_inline(op.name, self.services):
            output = handler(self.services, params)
        else:
            output = await anyio.to_thread.run_sync(handler, self.services, params)
        return serialize_output(op, output)

    async def _extra(self, path: str, scope: Scope, body: bytes) -> WireResponse:
        if path == "/healthz":  # the process answers
            return WireResponse(200, [("content-type", "application/json")], b'{"status":"ok"}')
        if path == "/readyz":  # ... and its index answers: route traffic here
            if await anyio.to_thread.run_sync(self.services.ready):
                return WireResponse(200, [("content-type", "application/json")], b'{"status":"ready"}')
            msg = b'{"status":"unavailable","message":"the metadata index does not answer"}'
            return WireResponse(503, [("content-type", "application/json")], msg)
        for prefix, route in self.extra_routes.items():
            if path.startswith(prefix):
                query = scope.get("query_string", b"").decode("latin-1")
                return await anyio.to_thread.run_sync(route, self.services, path, query)
        msg = json.dumps({"message": f"No openhi route for {path}"}).encode()
        return WireResponse(404, [("content-type", "application/json")], msg)

    async def _send(
        self, send: Send, response: WireResponse, request_id: str, scope_extensions: Any = None
    ) -> None:
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        headers.append((b"x-amzn-requestid", request_id.encode()))
        body = response.body
        if isinstance(body, FileBody):
            await _send_file_body(send, scope_extensions, response.status, headers, body)
            return
        if isinstance(body, bytes | bytearray):
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": bytes(body)})
            return
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        for chunk in _iterate(body):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.services.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app() -> OpenHIApp:
    """App factory for uvicorn's import string (``openhi serve --workers N``): configuration from the
    environment the parent process prepared."""
    from openhi.server import app_from_environment

    return app_from_environment()


_REQUEST_PREFIX = os.urandom(6).hex()
_request_counter = itertools.count(1)


def _next_request_id() -> str:
    """Unique per request and per process, cheap: a random process prefix plus a counter."""
    n = next(_request_counter)
    return f"{_REQUEST_PREFIX[:8]}-{_REQUEST_PREFIX[8:]}-{n >> 48 & 0xFFFF:04x}-{n >> 32 & 0xFFFF:04x}-{n & 0xFFFFFFFF:012x}"


async def _send_file_body(
    send: Send, extensions: Any, status: int, headers: list[tuple[bytes, bytes]], body: FileBody
) -> None:
    """A local file after its prefix, with a Content-Length: by ``http.response.zerocopysend`` (sendfile)
    where the server offers it, else as body chunks. The file is closed in every case."""
    try:
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if extensions and ZEROCOPY in extensions:
            if body.prefix:
                await send({"type": "http.response.body", "body": body.prefix, "more_body": True})
            await send({"type": ZEROCOPY, "file": body, "offset": 0, "count": body.size})
            return
        for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        body.close()


def _iterate(body: Iterable[bytes]) -> Iterable[bytes]:
    yield from body


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ValidationError(f"Request body exceeds the limit of {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _runs_inline(op_name: str, services: Services) -> bool:
    """GetImageFrame on local storage (SQLite index, file blobs) runs on the event loop: its ~50 µs of work
    costs less than the hop to a worker thread and back (and the GIL hand-offs that come with it)."""
    return op_name == "GetImageFrame" and services.reads.frames_inline
