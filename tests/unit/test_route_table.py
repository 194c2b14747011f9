"""The route table (every route names an action), the app's one auth step, and its unfailing error path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from openhi.asgi import OpenHIApp, build_routes, probe_routes
from openhi.auth.routes import OPEN_PATHS, Request, Route, RouteTable
from openhi.awsapi.serializer import WireResponse
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.core.errors import ValidationError
from openhi.metrics import metrics_route
from openhi.services import ServerConfig, Services, build_services


def _ok(services: Any, request: Request) -> WireResponse:
    return WireResponse(200, [], b"{}")


def test_a_route_cannot_be_registered_without_an_action() -> None:
    with pytest.raises(ValueError, match="no action"):
        Route("GET", "/openhi/things", None, _ok)
    with pytest.raises(ValueError, match="no action"):
        Route("GET", "/openhi/things", "", _ok)
    with pytest.raises(ValueError, match="unknown action"):
        Route("GET", "/openhi/things", "openhi:DoAnything", _ok)


def test_only_the_probes_and_public_metrics_may_be_open() -> None:
    with pytest.raises(ValueError, match="cannot be an open route"):
        Route("GET", "/openhi/things", None, _ok, open=True)
    with pytest.raises(ValueError, match="takes no action"):
        Route("GET", "/healthz", "openhi:GetImageSetDiff", _ok, open=True)
    assert {(r.method, r.pattern) for r in probe_routes()} == OPEN_PATHS - {("GET", "/metrics")}
    assert metrics_route(public=True).open and not metrics_route(public=False).open


def test_future_front_doors_register_routes_with_their_actions() -> None:
    route = Route("GET", "/datastore/{ds}/studies", "medical-imaging:searchdicomstudies", _ok)
    assert route.action == "medical-imaging:SearchDICOMStudies"  # canonical spelling


def test_every_route_of_the_app_has_an_action_except_the_probes() -> None:
    table = build_routes()
    open_routes = {(r.method, r.pattern) for r in table if r.open}
    assert open_routes <= OPEN_PATHS  # /metrics is open only with --metrics-public
    assert all(r.action for r in table if not r.open)
    api = [r for r in table if r.front == "api" and not r.open]
    assert len(api) == 18 and all((r.action or "").startswith("medical-imaging:") for r in api)
    dicomweb = [r for r in table if r.front == "dicomweb"]
    assert dicomweb and all((r.action or "").startswith("medical-imaging:") for r in dicomweb)


def test_duplicate_routes_are_refused() -> None:
    with pytest.raises(ValueError, match="two routes"):
        RouteTable([Route("GET", "/a", "openhi:GetImageSetDiff", _ok)] * 2)


# -- the app, driven as uvicorn drives it -------------------------------------------------------------


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("app"), pixel_workers=0, import_threads=0)
    built = build_services(config)
    yield built
    built.close()


def call(app: OpenHIApp, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


class _LocalAnySignature(SigV4Verifier):
    """Accepts every request (the tests here are about what happens after authentication)."""

    def verify(self, *args: Any, **kwargs: Any) -> str:
        return "ANY"


def _app(services: Services, handler: Any) -> OpenHIApp:
    routes = RouteTable([*probe_routes(), Route("POST", "/openhi/boom", "openhi:PutImportInput", handler)])
    return OpenHIApp(services, _LocalAnySignature(None), routes=routes)


@pytest.mark.parametrize(
    ("raised", "status", "code"),
    [
        (ValidationError("bad \ud800 value"), 400, "ValidationException"),
        (RuntimeError("a bug \udcff"), 500, "InternalServerException"),
        (RecursionError("deep"), 500, "InternalServerException"),
    ],
)
def test_errors_are_modeled_even_when_the_message_cannot_be_encoded(
    services: Services, raised: Exception, status: int, code: str
) -> None:
    def handler(services: Any, request: Request) -> WireResponse:
        raise raised

    got_status, headers, body = call(_app(services, handler), "POST", "/openhi/boom")
    assert got_status == status
    assert headers["x-amzn-errortype"] == code
    assert headers["x-amzn-requestid"]
    assert "message" in json.loads(body)


def test_a_response_that_cannot_be_sent_becomes_a_fixed_internal_error(services: Services) -> None:
    def handler(services: Any, request: Request) -> WireResponse:
        return WireResponse(200, [("x-bad", "\u20ac not latin-1")], b"{}")

    status, headers, body = call(_app(services, handler), "POST", "/openhi/boom")
    assert status == 500 and headers["x-amzn-errortype"] == "InternalServerException"
    assert headers["x-amzn-requestid"] and json.loads(body)["message"]


def test_readyz_reports_the_codecs(services: Services) -> None:
    status, _, body = call(_app(services, _ok), "GET", "/readyz")
    doc = json.loads(body)
    assert status == 200 and doc["status"] == "ready"
    assert "1.2.840.10008.1.2.4.80" in doc["codecs"]  # JPEG-LS lossless


def test_startup_refuses_without_a_decoder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import openhi.codec.decoders
    from openhi.cli import main

    monkeypatch.setattr(
        openhi.codec.decoders,
        "missing_decoders",
        lambda: {"1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg"},
    )
    for command in (["serve", "--port", "1"], ["worker"]):
        data = tmp_path / command[0]
        assert main([*command, "--data-dir", str(data)]) == 2
        assert not data.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("openhi: ") and "pylibjpeg-libjpeg" in err[0]


def test_startup_refusal_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import openhi.codec.decoders
    from openhi.server import StartupError, check_codecs

    monkeypatch.setattr(
        openhi.codec.decoders, "missing_decoders", lambda: {"1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg"}
    )
    with pytest.raises(StartupError) as info:
        check_codecs()
    assert "pylibjpeg-openjpeg" in str(info.value) and "\n" not in str(info.value)


def test_a_streamed_body_over_its_limit_is_a_413_validation_error(services: Services) -> None:
    from openhi.auth.routes import Body

    def handler(services: Any, request: Request) -> WireResponse:
        raise AssertionError("the handler must not run")

    route = Route("PUT", "/openhi/up", "openhi:PutImportInput", handler, body=Body.FILE, max_body=8)
    app = OpenHIApp(services, _LocalAnySignature(None), routes=RouteTable([route]))
    sent: list[dict[str, Any]] = []
    chunks = [b"12345", b"67890", b"never read"]
    scope = {
        "type": "http",
        "method": "PUT",
        "path": "/openhi/up",
        "raw_path": b"/openhi/up",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"x-amz-content-sha256", b"0" * 64)],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert dict(sent[0]["headers"])[b"x-amzn-errortype"] == b"ValidationException"
    assert chunks == [b"never read"]  # reading stopped at the limit
