"""The ASGI application: route → body → authentication → authorization → handler → serialized response.

Every request that matches a route of the table (:mod:`openhi.auth.routes`) other than the open probes
is authenticated (SigV4) and authorized (the key's policy, when it has one) before its handler runs; a
request that matches no route is authenticated before it gets its 404. Whatever goes wrong on the way,
the client gets a modeled JSON error with ``x-amzn-ErrorType`` and every response has its
``x-amzn-RequestId``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio.to_thread

from openhi.auth.bearer import BearerPrincipal, BearerVerifier, InvalidTokenError, bearer_token
from openhi.auth.cors import CorsPolicy
from openhi.auth.principals import Authorizer
from openhi.auth.routes import Body, Request, Route, RouteTable
from openhi.awsapi.operations import api_routes
from openhi.awsapi.router import RouteNotFound
from openhi.awsapi.serializer import WireResponse, serialize_error, serialize_route_not_found
from openhi.awsapi.service import load_service_model
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.console.errors import error_ring
from openhi.console.routes import ROUTES as CONSOLE_ROUTES
from openhi.console.session import SessionSecrets, browser_session
from openhi.core.errors import AccessDeniedError, OpenHIError, ValidationError
from openhi.core.file_body import FileBody
from openhi.dicomweb.routes import dicomweb_routes
from openhi.dicomweb.targets import DATASTORE as DATASTORE_LABEL
from openhi.handlers.extra import ROUTES as OPENHI_ROUTES
from openhi.handlers.loader import load_all
from openhi.services import Services
from openhi.throttle.guard import DropConnection, Guard, injected
from openhi.throttle.routes import FaultControl, detached_control, fault_routes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("openhi.asgi")
#: the ASGI zero-copy send extension (offered by openhi.zerocopy's uvicorn protocol)
ZEROCOPY = "http.response.zerocopysend"
_JSON = [("content-type", "application/json")]
#: sent when even a modeled error cannot be serialized: fixed, pre-encoded, cannot fail
_LAST_RESORT_HEADERS = [
    (b"x-amzn-errortype", b"InternalServerException"),
    (b"content-type", b"application/json"),
]
_LAST_RESORT_BODY = b'{"message":"An unexpected error occurred; see the server log."}'
#: the principal of an unsigned DICOMweb request in local mode (no credentials, no OIDC; loopback only)
ANONYMOUS_LOCAL = "anonymous-local"
#: the front doors browsers and viewers use: bearer tokens, and no credentials at all in local mode
BROWSER_FRONTS = frozenset({"dicomweb", "console"})


class PayloadTooLarge(ValidationError):
    """A request body over its route's limit (413, modeled as ValidationException)."""

    status = 413


def probe_routes() -> list[Route]:
    """The open routes: ``/healthz`` (the process answers) and ``/readyz`` (… and its index and codecs)."""
    return [
        Route("GET", "/healthz", None, _healthz, open=True, name="healthz"),
        Route("GET", "/readyz", None, _readyz, open=True, name="readyz"),
    ]


def build_routes(faults: FaultControl | None = None, extra: Iterable[Route] = ()) -> RouteTable:
    """Every route of the app: the probes, the API operations, and openhi's own routes (``/openhi/faults``
    acting through ``faults``, the app's control of its guard)."""
    api = api_routes(load_service_model(), load_all())
    control = faults or detached_control()
    return RouteTable(
        [
            *probe_routes(),
            *api,
            *OPENHI_ROUTES,
            *fault_routes(control),
            *dicomweb_routes(),
            *CONSOLE_ROUTES,
            *extra,
        ]
    )


def _healthz(services: Services, request: Request) -> WireResponse:
    return WireResponse(200, list(_JSON), b'{"status":"ok"}')


def _readyz(services: Services, request: Request) -> WireResponse:
    from openhi.codec.decoders import decoder_status

    codecs = decoder_status()
    if services.ready():
        return WireResponse(200, list(_JSON), json.dumps({"status": "ready", "codecs": codecs}).encode())
    body = {"status": "unavailable", "message": "the metadata index does not answer", "codecs": codecs}
    return WireResponse(503, list(_JSON), json.dumps(body).encode())


class OpenHIApp:
    """One app for every route: the AWS API, ``/openhi/...`` and the probes."""

    def __init__(
        self,
        services: Services,
        verifier: SigV4Verifier,
        authorizer: Authorizer | None = None,
        routes: RouteTable | None = None,
        *,
        oidc: BearerVerifier | None = None,
        cors: CorsPolicy | None = None,
        guard: Guard | None = None,
        observer: Any = None,
        sessions: SessionSecrets | None = None,
    ) -> None:
        self.services = services
        self.verifier = verifier
        self.authorizer = authorizer or Authorizer()
        self.oidc = oidc  # bearer tokens on the DICOMweb routes, when configured
        self.cors = cors  # browser origins, when configured
        #: rate limits and injected faults (openhi.throttle), when configured; None costs nothing
        self.guard = guard
        #: told of every answered request: ``observer.observe(scope, status, seconds, request_id)``
        self.observer = observer
        #: the console's session cookies (outside local mode): openhi.console.session.configure(...)
        self.sessions = sessions
        extra = observer.routes() if observer is not None else ()  # GET /metrics
        self.routes = routes or build_routes(FaultControl(self._get_guard, self._set_guard), extra)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request_id = _next_request_id()
        started = time.perf_counter() if self.observer is not None else 0.0
        origin = _header(scope, b"origin") if self.cors is not None else None
        preflight = origin is not None and scope["method"] == "OPTIONS" and _is_preflight(scope)
        try:
            if preflight:
                assert origin is not None
                response = self._preflight(scope, origin)
            else:
                response = await self._handle(scope, receive)
        except DropConnection:  # an injected fault: the client sees its connection closed, no answer
            await _drop_connection(send, receive)
            return
        except OpenHIError as exc:
            response = error_response(exc.code, exc.message, getattr(exc, "status", None))
            if scope.get("path", "").startswith("/openhi/"):  # openhi's own clients read the code here
                response = _with_code(response, exc.code)
            response.headers.extend(getattr(exc, "headers", ()))  # a bearer challenge (WWW-Authenticate)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(
                "InternalServerException", "An unexpected error occurred; see the server log."
            )
        if self.cors is not None and not preflight:
            response.headers = [*response.headers, *self.cors.response_headers(origin)]
        sent = await self._send(send, response, request_id, scope.get("extensions"))
        if self.observer is not None:
            scope["openhi.response_bytes"] = sent
            self.observer.observe(scope, response.status, time.perf_counter() - started, request_id)

    def _preflight(self, scope: Scope, origin: str) -> WireResponse:
        """A CORS preflight: answered without credentials (a browser sends none with it)."""
        assert self.cors is not None
        status, headers = self.cors.preflight(origin, _header(scope, b"access-control-request-headers"))
        if status != 200:
            response = error_response(
                "AccessDeniedException",
                f"Origin {origin[:100]} is not allowed (openhi serve --cors-origin)",
                403,
            )
            response.headers.extend(headers)
        else:
            response = WireResponse(200, headers, b"")
        return response

    async def _handle(self, scope: Scope, receive: Receive) -> WireResponse:
        method: str = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        path = raw_path.decode("latin-1").split("?", 1)[0]
        query: bytes = scope.get("query_string", b"")
        headers = [(k.lower(), v) for k, v in scope["headers"]]
        try:
            route, labels = self.routes.match(method, path)
            scope["openhi.route"] = route  # for the observer (metrics, logs): operation and front door
        except RouteNotFound as exc:  # authenticated first: an unsigned caller learns nothing of the routes
            body = await _read_body(receive, Body.BUFFERED, None, _MAX_BUFFERED)
            self.verifier.verify(method, path, query, headers, body.data)
            return serialize_route_not_found(exc)
        request = Request(method, path, query, headers, labels)
        if route.open:
            return await anyio.to_thread.run_sync(route.handler, self.services, request)
        # who is calling, settled before a byte of the body is accepted (the body's hash may come later)
        bearer: BearerPrincipal | None = None
        deferred = False  # a streamed body whose hash the signature covers without declaring it
        kind = self._credential_kind(route, request)
        if kind == "bearer":
            bearer = await self._bearer(request)
            request.access_key_id = bearer.name
        elif kind == "anonymous":
            request.access_key_id = ANONYMOUS_LOCAL
        elif kind == "session":
            pass  # the session's access key id, set by _credential_kind
        elif route.body is Body.FILE:
            declared = request.header("x-amz-content-sha256")
            if declared is None and route.front == "dicomweb":  # STOW-RS, as botocore and curl sign it
                deferred = True
                request.access_key_id = self._precheck_signature(request)
            else:
                declared = _declared_sha256(request)
                request.access_key_id = self.verifier.verify(
                    method, path, query, headers, payload_sha256=declared
                )
        body = await _read_body(receive, route.body, self.services.scratch_dir, route.max_body)
        try:
            request.body, request.body_file, request.body_size = body.data, body.file, body.size
            request.body_sha256 = body.sha256
            if kind != "sigv4":
                pass
            elif route.body is not Body.FILE:
                request.access_key_id = self.verifier.verify(method, path, query, headers, body.data)
            elif deferred:  # the HMAC over the hash of what arrived; the temporary file goes if it fails
                request.access_key_id = self.verifier.verify(
                    method, path, query, headers, payload_sha256=body.sha256
                )
            elif body.sha256 != declared:
                raise AccessDeniedError(
                    "The provided 'x-amz-content-sha256' header does not match what was computed."
                )
            route.parse(request)
            if bearer is not None:
                assert route.action is not None  # not an open route
                bearer.authorize(route.action, request.labels.get(DATASTORE_LABEL))
            elif kind in ("sigv4", "session") and self.authorizer.restricted(request.access_key_id or ""):
                await anyio.to_thread.run_sync(self._authorize, route, request)
            if self.guard is not None:  # rate limits and injected faults: in place of the handler
                await self._guarded(self.guard, route, request)
            if route.inline is not None and route.inline(self.services, request):
                response: WireResponse = route.handler(self.services, request)
            else:
                response = await anyio.to_thread.run_sync(route.handler, self.services, request)
        finally:
            body.close()
        return response

    async def _guarded(self, guard: Guard, route: Route, request: Request) -> None:
        """Raises Throttled (over the limit), the injected error of a fault rule, or DropConnection; sleeps
        for a rule's delay."""
        assert route.action is not None  # not an open route
        rule = guard.check(route.action, request.access_key_id or ANONYMOUS_LOCAL, route.front)
        if rule is None:
            return
        if rule.delay:
            await anyio.sleep(rule.delay)
        if rule.drop:
            raise DropConnection
        if rule.error is not None:
            raise injected(rule, route.action, route.front)

    def _get_guard(self) -> Guard | None:
        return self.guard

    def _set_guard(self, guard: Guard | None) -> None:
        self.guard = guard

    def _credential_kind(self, route: Route, request: Request) -> str:
        """``sigv4``, or on a DICOMweb route ``bearer`` (an ``Authorization: Bearer`` token) or
        ``anonymous`` (local mode without OIDC, and nothing that looks like a credential)."""
        if route.front not in BROWSER_FRONTS:
            return "sigv4"
        authorization = request.header("authorization")
        if bearer_token(authorization) is not None:
            return "bearer"
        if authorization is not None or b"X-Amz-Signature=" in request.query:
            return "sigv4"
        if not self.verifier.local_mode:  # a browser's session cookie (LoginRequired: 302 to /login)
            principal = browser_session(route, request, self.sessions)
            if principal is not None:
                request.access_key_id = principal
                return "session"
        if self.oidc is not None:  # a DICOMweb client without credentials is asked for a token
            raise InvalidTokenError("This request needs a bearer token or a SigV4 signature", error=None)
        if self.verifier.local_mode:
            return "anonymous"
        return "sigv4"

    async def _bearer(self, request: Request) -> BearerPrincipal:
        """The principal of the request's bearer token; InvalidTokenError (401) when it is not valid."""
        token = bearer_token(request.header("authorization"))
        assert token is not None
        if self.oidc is None:
            raise InvalidTokenError(
                "Bearer tokens are not accepted: this server has no OIDC issuer (--oidc-issuer, "
                "--oidc-audience, --oidc-jwks)"
            )
        cached = self.oidc.cached(token)
        if cached is not None:
            return cached
        return await anyio.to_thread.run_sync(self.oidc.verify, token)

    def _precheck_signature(self, request: Request) -> str:
        """Everything about a SigV4 signature that does not need the body (format, known key, scope,
        time); the HMAC itself is checked once the body has arrived and been hashed. Raises
        AccessDeniedError."""
        return self.verifier.precheck(request.method, request.path, request.query, request.headers)

    def _authorize(self, route: Route, request: Request) -> None:
        assert route.action is not None and request.access_key_id is not None  # not an open route
        targets = route.resources(self.services, request)
        self.authorizer.authorize(request.access_key_id, route.action, targets)

    async def _send(
        self, send: Send, response: WireResponse, request_id: str, scope_extensions: Any = None
    ) -> int:
        """Send ``response``; the number of body bytes sent."""
        try:
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        except Exception:  # a header value outside latin-1: a bug, and still a modeled answer
            log.exception("response headers cannot be encoded")
            response = WireResponse(500, [], _LAST_RESORT_BODY)
            headers = list(_LAST_RESORT_HEADERS)
        headers.append((b"x-amzn-requestid", request_id.encode()))
        body = response.body
        if isinstance(body, FileBody):
            size = len(body)
            await _send_file_body(send, scope_extensions, response.status, headers, body)
            return size
        if isinstance(body, bytes | bytearray):
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": bytes(body)})
            return len(body)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        sent = 0
        for chunk in _iterate(body):
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return sent

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                error_ring()  # the console's recent errors: after the server configured logging
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.services.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope: Scope, name: bytes) -> str | None:
    """One request header of an ASGI scope (``name`` in lower case), or None."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _is_preflight(scope: Scope) -> bool:
    return _header(scope, b"access-control-request-method") is not None


def _declared_sha256(request: Request) -> str:
    """The body hash a streamed upload declares (and signs): required, and a SHA-256 in hex."""
    value = (request.header("x-amz-content-sha256") or "").strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise AccessDeniedError(
            "This route needs the SHA-256 of the body in a signed x-amz-content-sha256 header "
            "(UNSIGNED-PAYLOAD is not accepted)."
        )
    return value


def error_response(code: str, message: str, status: int | None = None) -> WireResponse:
    """A modeled JSON error; cannot fail (an unencodable message is escaped, then a fixed body is sent)."""
    for text in (message, _escaped(message)):
        try:
            response = serialize_error(code, text)
            if status is not None:
                response.status = status
            for _, value in response.headers:
                value.encode("latin-1")
            return response
        except Exception:
            continue
    log.error("a %s error could not be serialized", code[:100].encode("ascii", "replace"))
    return WireResponse(500, [(k.decode(), v.decode()) for k, v in _LAST_RESORT_HEADERS], _LAST_RESORT_BODY)


def _with_code(response: WireResponse, code: str) -> WireResponse:
    """The error body with a ``code`` member besides ``message`` (for routes outside the AWS API)."""
    try:
        doc = json.loads(bytes(response.body))  # type: ignore[arg-type]
        doc["code"] = code
        response.body = json.dumps(doc).encode()
    except Exception:
        pass
    return response


def _escaped(message: str) -> str:
    try:
        return message.encode("utf-8", "backslashreplace").decode("utf-8")
    except Exception:
        return "An error occurred; its message could not be encoded."


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
            more = bool(body.suffix)
            await send({"type": ZEROCOPY, "file": body, "offset": 0, "count": body.size, "more_body": more})
            if more:
                await send({"type": "http.response.body", "body": body.suffix})
            return
        for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        body.close()


async def _drop_connection(send: Send, receive: Receive) -> None:
    """Close the client's connection without a byte of response: the transport of uvicorn's request
    cycle (``send`` is its bound method, or openhi.zerocopy's closure over it) is closed, then the app
    waits for the disconnect so that uvicorn does not answer in its place. Raises RuntimeError when the
    server offers no transport (uvicorn then answers 500)."""
    owner = getattr(send, "__self__", None)
    if owner is None or not hasattr(owner, "transport"):
        cells = getattr(send, "__closure__", None) or ()
        owner = next((c.cell_contents for c in cells if hasattr(c.cell_contents, "response_started")), None)
    transport = getattr(owner, "transport", None)
    if transport is None:
        raise RuntimeError("a dropped connection was injected, but this server offers no transport")
    transport.close()
    with anyio.move_on_after(5):
        while (await receive())["type"] != "http.disconnect":
            pass


def _iterate(body: Iterable[bytes]) -> Iterable[bytes]:
    yield from body


_MAX_BUFFERED = 1024 * 1024


class _ReceivedBody:
    """A request body in memory (``data``) or in an anonymous temporary file (``file``), with its hash."""

    def __init__(self, data: bytes, file: Any, size: int, sha256: str | None) -> None:
        self.data, self.file, self.size, self.sha256 = data, file, size, sha256

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


async def _read_body(receive: Receive, mode: Body, scratch: Any, limit: int) -> _ReceivedBody:
    """The whole body, buffered (at most ``limit`` bytes) or streamed to a temporary file and hashed."""
    if mode is Body.FILE:
        return await _read_to_file(receive, scratch, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ValidationError(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    data = b"".join(chunks)
    return _ReceivedBody(data, None, len(data), None)


async def _read_to_file(receive: Receive, scratch: Any, limit: int) -> _ReceivedBody:
    handle = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 (closed by _ReceivedBody.close)
    digest = hashlib.sha256()
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes per object.")
            digest.update(chunk)
            handle.write(chunk)
            if not message.get("more_body", False):
                break
        handle.flush()
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return _ReceivedBody(b"", handle, size, digest.hexdigest())
