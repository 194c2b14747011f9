"""Contract tests: who gets through the DICOMweb front door — unsigned in local mode, OIDC bearer tokens and
SigV4 with credentials, key policies on DICOMweb actions, and CORS for browser viewers (real servers)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.asymmetric import rsa

from contract.helpers import active_datastore
from openhi.asgi import build_routes
from openhi.auth.routes import Route
from openhi.testing.server import RunningServer

KEY, SECRET = "AKIDFRONTDOOR", "front-door-secret"
ISSUER, AUDIENCE = "https://idp.example/realms/imaging", "openhi-dicomweb"
IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
VIEWER = "http://viewer.example:3000"
STUDY, SERIES, SOP = (
    "1.2.826.0.1.3680043.8.498.1",
    "1.2.826.0.1.3680043.8.498.2",
    "1.2.826.0.1.3680043.8.498.3",
)
DICOMWEB = [r for r in build_routes() if r.front == "dicomweb"]


def concrete(route: Route, ds: str) -> str:
    """A path for ``route`` in datastore ``ds`` (UIDs that need not exist; frame 1; other labels 1)."""
    values = {
        "datastoreId": ds,
        "StudyInstanceUID": STUDY,
        "SeriesInstanceUID": SERIES,
        "SOPInstanceUID": SOP,
    }
    return re.sub(r"\{([^{}+]+)\+?\}", lambda m: values.get(m.group(1), "1"), route.pattern)


def sigv4(
    method: str, url: str, body: bytes = b"", *, key: str = KEY, secret: str = SECRET
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials(key, secret), "medical-imaging", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def bearer(scope: str, **claims: Any) -> dict[str, str]:
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
    return {
        "Authorization": "Bearer " + jwt.encode(doc, IDP_KEY, algorithm="RS256", headers={"kid": "idp-1"})
    }


def stow_route() -> Route:
    found = [r for r in DICOMWEB if r.method == "POST" and r.pattern == "/datastore/{datastoreId}/studies"]
    if not found:
        pytest.skip("the STOW-RS route is not registered yet")
    return found[0]


def refused(resp: httpx.Response) -> bool:
    return resp.status_code in (401, 403) or resp.headers.get("x-amzn-errortype") == "AccessDeniedException"


# -- local mode (the shared server: no credentials, loopback) ------------------------------------------


def test_local_mode_opens_every_dicomweb_route_without_a_signature(openhi_server: Any) -> None:
    assert DICOMWEB, "no DICOMweb route is registered"
    ds = active_datastore(openhi_server.client(), "front-local")
    problems = []
    for route in DICOMWEB:
        url = f"{openhi_server.endpoint}{concrete(route, ds)}"
        resp = httpx.request(route.method, url, timeout=30)
        if refused(resp):
            problems.append(f"{route.method} {route.pattern}: {resp.status_code} {resp.text[:200]}")
    assert problems == []


def test_local_mode_still_needs_a_signature_on_the_api(openhi_server: Any) -> None:
    ds = active_datastore(openhi_server.client(), "front-local-api")
    url = f"{openhi_server.endpoint}/datastore/{ds}"
    unsigned = httpx.get(url)
    assert unsigned.status_code == 403 and unsigned.headers["x-amzn-errortype"] == "AccessDeniedException"
    signed = httpx.get(url, headers=sigv4("GET", url, key="any-key", secret="any-secret"))
    assert signed.status_code == 200 and signed.json()["datastoreProperties"]["datastoreId"] == ds


# -- credentials + OIDC -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("front-oidc")
    public = jwt.algorithms.RSAAlgorithm.to_jwk(IDP_KEY.public_key(), as_dict=True)
    jwks = work / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "idp-1", "use": "sig"}]}))
    flags = ["--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE, "--oidc-jwks", str(jwks)]
    env = {"OPENHI_ACCESS_KEY_ID": KEY, "OPENHI_SECRET_ACCESS_KEY": SECRET}
    server = RunningServer(work / "data", extra_args=flags, env=env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oidc_ds(oidc_server: RunningServer) -> str:
    return active_datastore(oidc_server.client(aws_access_key_id=KEY, aws_secret_access_key=SECRET), "oidc")


def test_unsigned_dicomweb_requests_are_asked_for_a_token(oidc_server: RunningServer, oidc_ds: str) -> None:
    for route in DICOMWEB:
        resp = httpx.request(route.method, f"{oidc_server.endpoint}{concrete(route, oidc_ds)}", timeout=30)
        assert resp.status_code == 401, (route.pattern, resp.text)
        assert resp.headers["www-authenticate"] == 'Bearer realm="openhi"'
        assert resp.headers["x-amzn-errortype"] == "AccessDeniedException"


def test_a_read_token_reads_and_cannot_store(oidc_server: RunningServer, oidc_ds: str) -> None:
    reader = bearer("openid dicomweb.read")
    for route in DICOMWEB:
        url = f"{oidc_server.endpoint}{concrete(route, oidc_ds)}"
        resp = httpx.request(route.method, url, headers=reader, timeout=30)
        if route.action.split(":")[1].startswith(("Get", "Search")):  # type: ignore[union-attr]
            assert not refused(resp), (route.pattern, resp.status_code, resp.text[:200])
        else:
            assert resp.status_code == 403 and route.action in resp.json()["message"], route.pattern
    search = httpx.get(f"{oidc_server.endpoint}/datastore/{oidc_ds}/studies", headers=reader)
    assert search.status_code == 200 and search.json() == []
    stow = stow_route()
    url = f"{oidc_server.endpoint}{concrete(stow, oidc_ds)}"
    headers = {**reader, "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    resp = httpx.post(url, headers=headers, content=b"--b--\r\n")
    assert resp.status_code == 403 and "StoreDICOM" in resp.json()["message"]
    writer = httpx.post(url, headers={**headers, **bearer("dicomweb.write")}, content=b"--b--\r\n")
    assert not refused(writer), writer.text


def test_invalid_tokens_get_401_and_tokens_stop_at_their_datastores(
    oidc_server: RunningServer, oidc_ds: str
) -> None:
    url = f"{oidc_server.endpoint}/datastore/{oidc_ds}/studies"
    for headers in (
        bearer("dicomweb.read", exp=int(time.time()) - 3600),
        bearer("dicomweb.read", aud="other"),
    ):
        resp = httpx.get(url, headers=headers)
        assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["www-authenticate"]
    elsewhere = httpx.get(url, headers=bearer("dicomweb.read", datastores=["f" * 32]))
    assert elsewhere.status_code == 403 and "datastores claim" in elsewhere.json()["message"]
    mine = httpx.get(url, headers=bearer("dicomweb.read", datastores=[oidc_ds]))
    assert mine.status_code == 200


def test_tokens_do_not_open_the_api_and_sigv4_keeps_working(oidc_server: RunningServer, oidc_ds: str) -> None:
    api = f"{oidc_server.endpoint}/datastore/{oidc_ds}"
    assert httpx.get(api, headers=bearer("medical-imaging:*")).status_code == 403
    qido = f"{oidc_server.endpoint}/datastore/{oidc_ds}/studies"
    assert httpx.get(qido, headers=sigv4("GET", qido)).status_code == 200
    wrong = httpx.get(qido, headers=sigv4("GET", qido, secret="not-the-secret"))
    assert wrong.status_code == 403 and "signature we calculated" in wrong.json()["message"]


def test_stow_signed_without_the_hash_header_is_checked_against_the_body(
    oidc_server: RunningServer, oidc_ds: str
) -> None:
    stow = stow_route()
    url = f"{oidc_server.endpoint}{concrete(stow, oidc_ds)}"
    body = b"--b--\r\n"
    headers = {
        **sigv4("POST", url, body),
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
    }
    assert "X-Amz-Content-SHA256" not in headers
    assert not refused(httpx.post(url, headers=headers, content=body))
    swapped = httpx.post(url, headers=headers, content=b"--c--\r\n")
    assert swapped.status_code == 403 and "signature we calculated" in swapped.json()["message"]


# -- key policies on DICOMweb actions -----------------------------------------------------------------


SEARCH_ONLY, NOT_THIS_STUDY = "AKIDSEARCHONLY", "AKIDNOTTHISSTUDY"


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("front-policy")

    def principal(key: str, *statements: dict[str, Any]) -> dict[str, Any]:
        policy = {"Version": "2012-10-17", "Statement": list(statements)}
        return {"accessKeyId": key, "secretAccessKey": f"{key}-secret", "policy": policy}

    allow_all = {"Effect": "Allow", "Action": "medical-imaging:*", "Resource": "*"}
    deny_study = {
        "Effect": "Deny",
        "Action": "medical-imaging:*",
        "Resource": "*",
        "Condition": {"StringEquals": {"medical-imaging:StudyInstanceUID": STUDY}},
    }
    doc = {
        "principals": [
            principal(
                SEARCH_ONLY,
                {"Effect": "Allow", "Action": "medical-imaging:SearchDICOMStudies", "Resource": "*"},
            ),
            principal(NOT_THIS_STUDY, allow_all, deny_study),
        ]
    }
    (work / "policies.json").write_text(json.dumps(doc))
    env = {"OPENHI_ACCESS_KEY_ID": KEY, "OPENHI_SECRET_ACCESS_KEY": SECRET}
    server = RunningServer(work / "data", extra_args=["--policy-file", str(work / "policies.json")], env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _get(server: RunningServer, path: str, key: str) -> httpx.Response:
    url = f"{server.endpoint}{path}"
    return httpx.get(url, headers=sigv4("GET", url, key=key, secret=f"{key}-secret"), timeout=30)


def test_a_key_allowed_only_to_search_studies_gets_no_further(policy_server: RunningServer) -> None:
    ds = active_datastore(policy_server.client(aws_access_key_id=KEY, aws_secret_access_key=SECRET), "p")
    assert _get(policy_server, f"/datastore/{ds}/studies", SEARCH_ONLY).status_code == 200
    for route in DICOMWEB:
        if route.method != "GET" or route.action == "medical-imaging:SearchDICOMStudies":
            continue
        resp = _get(policy_server, concrete(route, ds), SEARCH_ONLY)
        assert resp.status_code == 403, route.pattern
        assert f"perform: {route.action} on resource: arn:aws:medical-imaging:" in resp.json()["message"]


def test_a_deny_on_one_study_blocks_that_study_only(policy_server: RunningServer) -> None:
    ds = active_datastore(policy_server.client(aws_access_key_id=KEY, aws_secret_access_key=SECRET), "q")
    other = "1.2.826.0.1.3680043.8.498.99"
    for route in DICOMWEB:
        if route.method != "GET":
            continue
        path = concrete(route, ds)
        resp = _get(policy_server, path, NOT_THIS_STUDY)
        if "{StudyInstanceUID}" in route.pattern:
            assert resp.status_code == 403 and "explicit deny" in resp.json()["message"], route.pattern
            elsewhere = _get(policy_server, path.replace(STUDY, other), NOT_THIS_STUDY)
            assert not refused(elsewhere), (route.pattern, elsewhere.text[:200])
        else:
            assert not refused(resp), (route.pattern, resp.text[:200])


# -- CORS ---------------------------------------------------------------------------------------------


@pytest.mark.openhi_env(OPENHI_CORS_ORIGINS=f"{VIEWER},http://localhost:3000")
def test_cors_preflight_and_response_headers(openhi_fresh: Any) -> None:
    ds = active_datastore(openhi_fresh.client(), "cors")
    url = f"{openhi_fresh.endpoint}/datastore/{ds}/studies"
    preflight = httpx.options(
        url,
        headers={
            "Origin": VIEWER,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,x-amz-date",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == VIEWER
    assert preflight.headers["access-control-allow-headers"] == "authorization, x-amz-date"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    got = httpx.get(url, headers={"Origin": VIEWER, "Accept": "application/dicom+json"})
    assert got.status_code == 200 and got.json() == []
    assert got.headers["access-control-allow-origin"] == VIEWER
    assert "x-amzn-RequestId" in got.headers["access-control-expose-headers"]
    stranger = httpx.get(url, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers
    denied = httpx.options(
        url, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert denied.status_code == 403 and "access-control-allow-origin" not in denied.headers
