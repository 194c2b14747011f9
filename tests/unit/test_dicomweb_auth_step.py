"""The app's auth step for DICOMweb routes, driven as uvicorn drives it: unsigned local mode, bearer
tokens, SigV4 over a streamed body without a declared hash; API routes keep needing a signature."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.asymmetric import rsa

from openhi.asgi import ANONYMOUS_LOCAL, OpenHIApp
from openhi.auth.bearer import BearerVerifier, OidcConfig
from openhi.auth.routes import Body, Request, Route, RouteTable
from openhi.awsapi.serializer import WireResponse
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.dicomweb.targets import dicomweb_targets
from openhi.services import ServerConfig, Services, build_services

KEY, SECRET = "AKIDFRONT", "front-secret"
ISSUER, AUDIENCE = "https://idp.example", "openhi"
IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DS = "0123456789abcdef0123456789abcdef"
SEARCH = f"/datastore/{DS}/studies"
INSTANCE = f"/datastore/{DS}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("front"), pixel_workers=0, import_threads=0)
    built = build_services(config)
    yield built
    built.close()


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> BearerVerifier:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(IDP_KEY.public_key(), as_dict=True)
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    return BearerVerifier(OidcConfig(ISSUER, AUDIENCE, str(path)))


def _echo(services: Any, request: Request) -> WireResponse:
    """What the handler saw: who, and the body (read from the temporary file of a streamed route)."""
    body = request.body_file.read() if request.body_file is not None else request.body
    doc = {"who": request.access_key_id, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    return WireResponse(200, [("content-type", "application/json")], json.dumps(doc).encode())


ROUTES = RouteTable(
    [
        Route("GET", "/datastore/{datastoreId}/studies", "medical-imaging:SearchDICOMStudies", _echo,
              dicomweb_targets, front="dicomweb"),
        Route("GET", "/datastore/{datastoreId}/studies/{StudyInstanceUID}/series/{SeriesInstanceUID}"
              "/instances/{SOPInstanceUID}", "medical-imaging:GetDICOMInstance", _echo, dicomweb_targets,
              front="dicomweb"),
        Route("POST", "/datastore/{datastoreId}/studies", "medical-imaging:StoreDICOM", _echo,
              dicomweb_targets, body=Body.FILE, max_body=1 << 20, front="dicomweb"),
        Route("GET", "/datastore/{datastoreId}", "medical-imaging:GetDatastore", _echo),
        Route("PUT", "/openhi/upload/{bucket}/{key+}", "openhi:PutImportInput", _echo, body=Body.FILE,
              max_body=1 << 20, front="openhi"),
    ]
)  # fmt: skip


def app(
    services: Services, credentials: dict[str, str] | None, oidc: BearerVerifier | None = None
) -> OpenHIApp:
    return OpenHIApp(services, SigV4Verifier(credentials), routes=ROUTES, oidc=oidc)


class Result:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, chunks_left: int) -> None:
        self.status, self.headers, self.body, self.chunks_left = status, headers, body, chunks_left

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    the_app: OpenHIApp,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    query: bytes = b"",
) -> Result:
    """One request; ``chunks_left`` says how much of the body (sent in 3 chunks) was never read."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [
            (k.lower().encode(), v.encode()) for k, v in {"host": "localhost", **(headers or {})}.items()
        ],
    }
    step = max(1, -(-len(body) // 3))
    chunks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(the_app, scope, receive, send)
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return Result(sent[0]["status"], head, b"".join(m.get("body", b"") for m in sent[1:]), len(chunks))


def sigv4(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    key: str = KEY,
    secret: str = SECRET,
    content_sha: bool = False,
) -> dict[str, str]:
    """botocore's SigV4 headers; without ``content_sha`` the payload hash is signed but not sent."""
    headers = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()} if content_sha else {}
    request = AWSRequest(method=method, url=f"http://localhost{path}", data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), "medical-imaging", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def bearer(scope: str = "dicomweb.read", **claims: Any) -> dict[str, str]:
    now = int(time.time())
    doc = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "viewer",
        "iat": now,
        "exp": now + 300,
        "scope": scope,
        **claims,
    }
    return {"Authorization": "Bearer " + jwt.encode(doc, IDP_KEY, algorithm="RS256", headers={"kid": "k1"})}


# -- local mode ----------------------------------------------------------------------------------------


def test_local_mode_accepts_unsigned_dicomweb_requests_as_anonymous(services: Services) -> None:
    local = app(services, None)
    for path in (SEARCH, INSTANCE):
        got = call(local, "GET", path)
        assert got.status == 200 and got.json()["who"] == ANONYMOUS_LOCAL
    stored = call(local, "POST", SEARCH, {"Content-Type": "application/dicom"}, b"DICM" * 1000)
    assert stored.status == 200 and stored.json()["size"] == 4000
    assert stored.json()["sha256"] == hashlib.sha256(b"DICM" * 1000).hexdigest()


def test_local_mode_still_needs_a_signature_on_api_and_openhi_routes(services: Services) -> None:
    local = app(services, None)
    for method, path in (("GET", f"/datastore/{DS}"), ("PUT", "/openhi/upload/b/k")):
        got = call(local, method, path, body=b"x" if method == "PUT" else b"")
        assert got.status == 403 and got.headers["x-amzn-errortype"] == "AccessDeniedException"
    signed = call(local, "GET", f"/datastore/{DS}", sigv4("GET", f"/datastore/{DS}", key="any", secret="any"))
    assert signed.status == 200 and signed.json()["who"] == "any"


def test_local_mode_still_checks_a_signature_that_is_sent(services: Services) -> None:
    local = app(services, None)
    headers = sigv4("GET", SEARCH, key="whoever", secret="whatever")
    assert call(local, "GET", SEARCH, headers).json()["who"] == "whoever"
    stale = {**headers, "X-Amz-Date": "20200101T000000Z"}
    assert call(local, "GET", SEARCH, stale).status == 403
    garbled = {**headers, "Authorization": "AWS4-HMAC-SHA256 nonsense"}
    assert call(local, "GET", SEARCH, garbled).status == 403


def test_a_bearer_token_without_oidc_configured_is_refused(services: Services) -> None:
    got = call(app(services, None), "GET", SEARCH, bearer())
    assert got.status == 401 and "no OIDC issuer" in got.json()["message"]
    assert got.headers["www-authenticate"].startswith('Bearer realm="openhi", error="invalid_token"')


# -- credentials and OIDC ------------------------------------------------------------------------------


def test_with_credentials_unsigned_dicomweb_requests_are_refused(
    services: Services, oidc: BearerVerifier
) -> None:
    got = call(app(services, {KEY: SECRET}), "GET", SEARCH)
    assert got.status == 403 and got.headers["x-amzn-errortype"] == "AccessDeniedException"
    asked = call(app(services, {KEY: SECRET}, oidc), "GET", SEARCH)  # a client is asked for a token
    assert asked.status == 401 and asked.headers["www-authenticate"] == 'Bearer realm="openhi"'
    local_with_oidc = call(app(services, None, oidc), "GET", SEARCH)  # OIDC set: no anonymous access
    assert local_with_oidc.status == 401


def test_bearer_tokens_pass_by_their_scopes(services: Services, oidc: BearerVerifier) -> None:
    front = app(services, {KEY: SECRET}, oidc)
    read = call(front, "GET", INSTANCE, bearer())
    assert read.status == 200 and read.json()["who"] == "oidc:viewer"
    store = call(front, "POST", SEARCH, {**bearer(), "Content-Type": "application/dicom"}, b"x" * 300)
    assert store.status == 403 and "StoreDICOM" in store.json()["message"]
    writer = bearer("dicomweb.write")
    stored = call(front, "POST", SEARCH, {**writer, "Content-Type": "application/dicom"}, b"x" * 300)
    assert stored.status == 200 and stored.json()["size"] == 300
    assert call(front, "GET", SEARCH, writer).status == 403
    other = bearer(datastores=["f" * 32])
    assert call(front, "GET", SEARCH, other).status == 403


def test_invalid_bearer_tokens_get_401_with_a_challenge(services: Services, oidc: BearerVerifier) -> None:
    front = app(services, {KEY: SECRET}, oidc)
    for headers in (
        bearer(exp=int(time.time()) - 3600),
        bearer(aud="another-app"),
        {"Authorization": "Bearer not.a.token"},
    ):
        got = call(front, "GET", SEARCH, headers)
        assert got.status == 401 and got.headers["x-amzn-errortype"] == "AccessDeniedException"
        assert 'error="invalid_token"' in got.headers["www-authenticate"]
    streamed = call(front, "POST", SEARCH, bearer(iss="https://evil.example"), b"y" * 3000)
    assert streamed.status == 401 and streamed.chunks_left == 3  # refused before the body was read


def test_bearer_tokens_do_not_open_api_routes(services: Services, oidc: BearerVerifier) -> None:
    got = call(app(services, {KEY: SECRET}, oidc), "GET", f"/datastore/{DS}", bearer("medical-imaging:*"))
    assert got.status == 403 and "unsupported algorithm" in got.json()["message"]


def test_sigv4_still_works_on_dicomweb_routes_with_oidc(services: Services, oidc: BearerVerifier) -> None:
    front = app(services, {KEY: SECRET}, oidc)
    assert call(front, "GET", SEARCH, sigv4("GET", SEARCH)).json()["who"] == KEY
    assert call(front, "GET", SEARCH, sigv4("GET", SEARCH, secret="wrong")).status == 403


# -- streamed bodies: SigV4 without x-amz-content-sha256 --------------------------------------------


def test_a_streamed_body_signed_without_the_hash_header_is_verified_after_it_arrives(
    services: Services,
) -> None:
    front = app(services, {KEY: SECRET})
    method, path = "POST", SEARCH
    body = bytes(range(256)) * 40
    good = call(front, method, path, sigv4(method, path, body), body)
    assert good.status == 200 and good.json() == {
        "who": KEY,
        "sha256": hashlib.sha256(body).hexdigest(),
        "size": len(body),
    }
    swapped = call(front, method, path, sigv4(method, path, body), body[:-1] + b"!")
    assert swapped.status == 403 and "signature we calculated" in swapped.json()["message"]
    wrong = call(front, method, path, sigv4(method, path, body, secret="nope"), body)
    assert wrong.status == 403 and wrong.chunks_left == 0  # the HMAC needs the body: read, then refused


def test_what_a_signature_says_without_the_body_is_checked_before_it(services: Services) -> None:
    front = app(services, {KEY: SECRET})
    body = b"z" * 3000
    cases = {
        "unknown key": sigv4("POST", SEARCH, body, key="AKIDNOBODY"),
        "stale": {**sigv4("POST", SEARCH, body), "X-Amz-Date": "20200101T000000Z"},
        "malformed": {"Authorization": "AWS4-HMAC-SHA256 Credential=x"},
        "unsigned": {},
    }
    for name, headers in cases.items():
        got = call(front, "POST", SEARCH, headers, body)
        assert got.status == 403 and got.chunks_left == 3, name


def test_uploads_outside_dicomweb_still_need_the_hash_header(services: Services) -> None:
    path, body = "/openhi/upload/b/k", b"u" * 3000
    for credentials in ({KEY: SECRET}, None):
        got = call(app(services, credentials), "PUT", path, sigv4("PUT", path, body), body)
        assert got.status == 403 and "x-amz-content-sha256" in got.json()["message"]
        assert got.chunks_left == 3
    signed = call(app(services, {KEY: SECRET}), "PUT", path, sigv4("PUT", path, body, content_sha=True), body)
    assert signed.status == 200 and signed.json()["size"] == 3000


def test_the_declared_hash_path_is_kept(services: Services) -> None:
    front = app(services, {KEY: SECRET})
    body = b"w" * 3000
    headers = sigv4("POST", SEARCH, body, content_sha=True)
    assert call(front, "POST", SEARCH, headers, body).status == 200
    tampered = call(front, "POST", SEARCH, headers, b"v" * 3000)
    assert tampered.status == 403 and "x-amz-content-sha256" in tampered.json()["message"]
    unsigned_payload = {**headers, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    refused = call(front, "POST", SEARCH, unsigned_payload, body)
    assert refused.status == 403 and refused.chunks_left == 3


# -- start-up -----------------------------------------------------------------------------------------


def test_serve_refuses_partial_oidc_settings_a_bad_jwks_or_a_bad_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from openhi.cli import main

    for name in ("OPENHI_OIDC_ISSUER", "OPENHI_OIDC_AUDIENCE", "OPENHI_OIDC_JWKS", "OPENHI_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "bad.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    cases = {
        "--oidc-audience, --oidc-jwks": ["--oidc-issuer", ISSUER],
        "no asymmetric signature key": [
            *("--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE),
            *("--oidc-jwks", str(tmp_path / "bad.json")),
        ],
        "--cors-origin 'viewer.example'": ["--cors-origin", "viewer.example"],
    }
    for expected, flags in cases.items():
        data = tmp_path / "data"
        assert main(["serve", "--port", "1", "--data-dir", str(data), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("openhi: ") and expected in err[0], err
        assert not data.exists()
    monkeypatch.setenv("OPENHI_OIDC_ISSUER", ISSUER)
    assert main(["serve", "--port", "1", "--data-dir", str(tmp_path / "data")]) == 2
    assert "--oidc-audience" in capsys.readouterr().err


def test_every_api_process_gets_the_oidc_and_cors_settings(
    tmp_path: Path, oidc: BearerVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openhi import server

    monkeypatch.delenv(server.CONFIG_ENV, raising=False)
    config = ServerConfig(data_dir=tmp_path / "data", pixel_workers=0, import_threads=0)
    web = server.WebAccess(oidc=oidc.config, cors_origins=("http://localhost:3000",))
    server._prepare_processes(config, "127.0.0.1", web)
    built = server.app_from_environment()
    try:
        assert built.oidc is not None and built.oidc.config == oidc.config
        assert built.cors is not None and built.cors.origins == {"http://localhost:3000"}
    finally:
        built.services.close()
