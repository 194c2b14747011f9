"""CORS: origins allowed by --cors-origin, preflight answers (before authentication), response headers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from openhi.asgi import OpenHIApp
from openhi.auth.cors import CorsPolicy, allowed_request_headers, parse_origin
from openhi.auth.routes import Request, Route, RouteTable
from openhi.awsapi.serializer import WireResponse
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.dicomweb.targets import dicomweb_targets
from openhi.services import ServerConfig, Services, build_services

VIEWER = "https://viewer.example:3000"


def test_origins_are_parsed_and_normalised() -> None:
    assert parse_origin("*") == "*"
    assert parse_origin("https://Viewer.Example:3000/") == VIEWER
    assert parse_origin(" http://localhost:3000 ") == "http://localhost:3000"
    for bad in ("viewer.example", "ftp://x", "https://x/path", "https://u:p@x", "https://x?q=1", ""):
        with pytest.raises(ValueError, match="--cors-origin"):
            parse_origin(bad)
    with pytest.raises(ValueError, match="no origin"):
        CorsPolicy([])


def test_listed_origins_only() -> None:
    cors = CorsPolicy([VIEWER, "http://localhost:3000"])
    assert cors.allowed(VIEWER) and cors.allowed("https://VIEWER.example:3000")
    assert not cors.allowed("https://viewer.example") and not cors.allowed("null")
    assert dict(cors.response_headers(VIEWER))["Access-Control-Allow-Origin"] == VIEWER
    assert dict(cors.response_headers(VIEWER))["Vary"] == "Origin"
    assert "x-amzn-RequestId" in dict(cors.response_headers(VIEWER))["Access-Control-Expose-Headers"]
    assert cors.response_headers("https://evil.example") == [("Vary", "Origin")]
    assert cors.response_headers(None) == [("Vary", "Origin")]


def test_any_origin() -> None:
    cors = CorsPolicy(["*"])
    assert cors.allowed("https://anything.example")
    assert dict(cors.response_headers("https://a.example"))["Access-Control-Allow-Origin"] == "*"
    assert cors.response_headers(None) == []
    status, headers = cors.preflight("https://a.example", "authorization")
    assert status == 200 and dict(headers)["Access-Control-Allow-Origin"] == "*"


def test_preflight_grants_the_headers_a_client_signs_or_authenticates_with() -> None:
    cors = CorsPolicy([VIEWER])
    status, headers = cors.preflight(
        VIEWER,
        "Authorization, content-type, X-Amz-Date, x-amz-content-sha256, amz-sdk-request, Cookie, X-Evil",
    )
    got = dict(headers)
    assert status == 200
    assert got["Access-Control-Allow-Headers"] == (
        "authorization, content-type, x-amz-date, x-amz-content-sha256, amz-sdk-request"
    )
    assert set(got["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "POST", "PUT", "DELETE"}
    assert got["Access-Control-Max-Age"] == "600" and got["Access-Control-Allow-Origin"] == VIEWER
    assert cors.preflight("https://evil.example", "authorization")[0] == 403
    assert allowed_request_headers(None) == []


# -- in the app ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    built = build_services(
        ServerConfig(data_dir=tmp_path_factory.mktemp("cors"), pixel_workers=0, import_threads=0)
    )
    yield built
    built.close()


def _ok(services: Any, request: Request) -> WireResponse:
    return WireResponse(200, [("content-type", "application/dicom+json")], b"[]")


def call(app: OpenHIApp, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    path = "/datastore/0123456789abcdef0123456789abcdef/studies"
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "localhost", **headers}.items()],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], head, b"".join(m.get("body", b"") for m in sent[1:])


def app(services: Services, cors: CorsPolicy | None) -> OpenHIApp:
    route = Route(
        "GET", "/datastore/{datastoreId}/studies", "medical-imaging:SearchDICOMStudies", _ok, dicomweb_targets,
        front="dicomweb",
    )  # fmt: skip
    return OpenHIApp(services, SigV4Verifier({"AKID": "secret"}), routes=RouteTable([route]), cors=cors)


def test_a_preflight_needs_no_credentials_and_a_request_still_does(services: Services) -> None:
    cors_app = app(services, CorsPolicy([VIEWER]))
    preflight = {
        "Origin": VIEWER,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    status, headers, body = call(cors_app, "OPTIONS", preflight)
    assert status == 200 and body == b""
    assert headers["access-control-allow-origin"] == VIEWER
    assert headers["access-control-allow-headers"] == "authorization"
    assert headers["x-amzn-requestid"]
    status, headers, _ = call(cors_app, "OPTIONS", {**preflight, "Origin": "https://evil.example"})
    assert status == 403 and "access-control-allow-origin" not in headers
    # the actual request is authenticated as ever; its refusal is readable by the allowed page
    status, headers, _ = call(cors_app, "GET", {"Origin": VIEWER})
    assert status == 403 and headers["access-control-allow-origin"] == VIEWER
    assert "x-amzn-ErrorType" in headers["access-control-expose-headers"]
    status, headers, _ = call(cors_app, "GET", {"Origin": "https://evil.example"})
    assert status == 403 and "access-control-allow-origin" not in headers


def test_without_cors_nothing_changes(services: Services) -> None:
    plain = app(services, None)
    preflight = {"Origin": VIEWER, "Access-Control-Request-Method": "GET"}
    status, headers, _ = call(plain, "OPTIONS", preflight)  # an unsigned request for no route
    assert status == 403 and not any(k.startswith("access-control") for k in headers)
    status, headers, _ = call(plain, "GET", {"Origin": VIEWER})
    assert status == 403 and not any(k.startswith("access-control") or k == "vary" for k in headers)
