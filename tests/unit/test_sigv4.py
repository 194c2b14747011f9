"""SigV4 verification against requests signed by botocore itself (no hand-built signatures)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import botocore.auth
import botocore.credentials
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSRequest, AWSResponse
from botocore.config import Config
from botocore.utils import percent_encode_sequence

from openhi.awsapi.sigv4 import SigV4Verifier, canonical_uri
from openhi.core.errors import AccessDeniedError

AK = "AKIAOPENHITESTKEY001"
SK = "openhi/test+secret/Key0000000000000000000"
ENDPOINT = "http://localhost:8080"
ARN = "arn:aws:medical-imaging:us-east-1:123456789012:datastore/0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Wire:
    """A request as an ASGI server receives it."""

    method: str
    raw_path: bytes
    raw_query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @property
    def signed_at(self) -> datetime:
        value = self.header(b"x-amz-date")
        if value is not None:
            return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        query = dict(p.split("=", 1) for p in self.raw_query.decode().split("&"))
        return datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def replace_header(self, name: bytes, value: bytes) -> Wire:
        headers = [(k, value if k == name else v) for k, v in self.headers]
        return Wire(self.method, self.raw_path, self.raw_query, headers, self.body)

    def verify(self, verifier: SigV4Verifier) -> str:
        return verifier.verify(
            self.method, self.raw_path.decode("ascii"), self.raw_query, self.headers, self.body
        )


def to_wire(prepared: AWSPreparedRequest) -> Wire:
    """What http.client/urllib3 put on the wire for a prepared request, split the way ASGI does."""
    parts = urlsplit(prepared.url)
    headers: list[tuple[bytes, bytes]] = []
    names = {k.lower() for k in prepared.headers}
    if "host" not in names:
        # http.client sends the host with the port only when it is not the scheme's default.
        default = {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname or ""
        headers.append(
            (b"host", (host if parts.port in (None, default) else f"{host}:{parts.port}").encode())
        )
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = body.read()
    for name, value in prepared.headers.items():
        headers.append(
            (name.lower().encode("latin-1"), (value if isinstance(value, bytes) else value.encode("latin-1")))
        )
    if body and "content-length" not in names:
        headers.append((b"content-length", str(len(body)).encode()))
    return Wire(prepared.method, parts.path.encode("ascii"), parts.query.encode("ascii"), headers, body)


def signed(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    access_key: str = AK,
    secret: str = SK,
    service: str = "medical-imaging",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Wire:
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {}, params=params or {})
    creds = botocore.credentials.Credentials(access_key, secret)
    botocore.auth.SigV4Auth(creds, service, "us-east-1").add_auth(request)
    return to_wire(request.prepare())


def verifier(*, at: datetime | None = None, local: bool = False, **kw: Any) -> SigV4Verifier:
    clock = (lambda: at) if at is not None else (lambda: datetime.now(UTC))
    return SigV4Verifier(None if local else {AK: SK, "AKIAOTHER": "other-secret"}, clock=clock, **kw)


def arn_path(arn: str = ARN) -> str:
    return "/tags/" + quote(arn, safe="")


# -- accepted ------------------------------------------------------------------------------------


def test_get_without_body() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore?maxResults=5&datastoreStatus=ACTIVE")
    assert wire.body == b""
    assert wire.verify(verifier()) == AK


def test_post_with_json_body() -> None:
    body = json.dumps({"datastoreName": "ds", "clientToken": "ct-1"}).encode()
    wire = signed("POST", f"{ENDPOINT}/datastore", body, headers={"Content-Type": "application/json"})
    assert wire.verify(verifier()) == AK


def test_delete_with_repeated_query_keys_and_encoded_values() -> None:
    query = percent_encode_sequence({"tagKeys": ["zeta", "a b", "k/1", "ü=+&", "alpha"]})
    assert "tagKeys=zeta&tagKeys=a%20b" in query
    wire = signed("DELETE", f"{ENDPOINT}{arn_path()}?{query}")
    assert wire.verify(verifier()) == AK


def test_percent_encoded_arn_path() -> None:
    wire = signed("POST", f"{ENDPOINT}{arn_path()}", b'{"tags":{"k":"v"}}')
    assert wire.raw_path.startswith(b"/tags/arn%3Aaws%3Amedical-imaging%3A")
    assert b"%2F" in wire.raw_path
    assert wire.verify(verifier()) == AK


def test_canonical_uri_double_encodes_like_botocore() -> None:
    signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials(AK, SK), "medical-imaging", "us-east-1")
    for path in [arn_path(), "/", "", "/a//b/./c/../d/", "/datastore/x~y/-_.", "/caf%C3%A9 x"]:
        assert canonical_uri(path) == signer._normalize_url_path(path)
        assert canonical_uri(path.encode()) == signer._normalize_url_path(path)
    assert canonical_uri(arn_path()).startswith("/tags/arn%253Aaws%253A")


@pytest.mark.parametrize(
    "url",
    [
        "https://medical-imaging.us-east-1.amazonaws.com/datastore",
        "https://runtime-medical-imaging.us-east-1.amazonaws.com/datastore/d/imageSetId/i/getImageSet",
        "http://localhost:8080/datastore",
        "http://runtime-localhost.example:9443/datastore",
        "https://example.test:443/datastore",
    ],
)
def test_host_variants(url: str) -> None:
    wire = signed("POST", url, b"{}")
    host = wire.header(b"host")
    assert host is not None
    assert (":" in host) == (urlsplit(url).port not in (None, 443))
    assert wire.verify(verifier()) == AK


def test_date_header_instead_of_x_amz_date() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore", headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"})
    assert wire.header(b"x-amz-date") is None
    date = wire.header(b"date")
    assert date is not None
    from email.utils import parsedate_to_datetime

    at = parsedate_to_datetime(date)
    assert wire.verify(verifier(at=at + timedelta(minutes=1))) == AK


def test_security_token_and_content_sha256_headers() -> None:
    body = b'{"datastoreName":"x"}'
    request = AWSRequest(method="POST", url=f"{ENDPOINT}/datastore", data=body)
    creds = botocore.credentials.Credentials(AK, SK, token="session-token-123")
    request.headers["X-Amz-Content-SHA256"] = __import__("hashlib").sha256(body).hexdigest()
    botocore.auth.SigV4Auth(creds, "medical-imaging", "us-east-1").add_auth(request)
    wire = to_wire(request.prepare())
    assert wire.header(b"x-amz-security-token") == "session-token-123"
    assert wire.verify(verifier()) == AK
    tampered = Wire(wire.method, wire.raw_path, wire.raw_query, wire.headers, body + b" ")
    with pytest.raises(AccessDeniedError, match="x-amz-content-sha256"):
        tampered.verify(verifier())


def test_unencoded_query_characters_signed_as_written() -> None:
    # botocore signs the URL's query as written; a hand-written URL with a raw ':' still verifies.
    wire = signed("GET", f"{ENDPOINT}/datastore?nextToken=a:b&maxResults=1")
    assert wire.verify(verifier()) == AK


def test_params_sent_form_encoded() -> None:
    # AWSRequest(params=...) signs "%20" but prepare() sends "+".
    wire = signed("GET", f"{ENDPOINT}/datastore", params={"nextToken": "a b/c", "maxResults": "1"})
    assert b"+" in wire.raw_query
    assert wire.verify(verifier()) == AK


def test_presigned_url() -> None:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/datastore?maxResults=3")
    creds = botocore.credentials.Credentials(AK, SK, token="tok")
    botocore.auth.SigV4QueryAuth(creds, "medical-imaging", "us-east-1", expires=300).add_auth(request)
    wire = to_wire(request.prepare())
    assert b"X-Amz-Signature=" in wire.raw_query
    assert wire.header(b"authorization") is None
    assert wire.verify(verifier(at=wire.signed_at + timedelta(seconds=299))) == AK
    with pytest.raises(AccessDeniedError, match="expired"):
        wire.verify(verifier(at=wire.signed_at + timedelta(seconds=301)))
    bad = Wire(
        wire.method,
        wire.raw_path,
        wire.raw_query.replace(b"maxResults=3", b"maxResults=4"),
        wire.headers,
        b"",
    )
    with pytest.raises(AccessDeniedError, match="does not match"):
        bad.verify(verifier(at=wire.signed_at))


def test_authenticate_records_region() -> None:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/datastore")
    creds = botocore.credentials.Credentials(AK, SK)
    botocore.auth.SigV4Auth(creds, "medical-imaging", "eu-west-1").add_auth(request)
    wire = to_wire(request.prepare())
    result = verifier().authenticate(wire.method, wire.raw_path, wire.raw_query, wire.headers, wire.body)
    assert result.region == "eu-west-1"
    assert result.access_key_id == AK
    assert "host" in result.signed_headers
    assert not result.presigned


# -- denied --------------------------------------------------------------------------------------


def test_wrong_secret_denied() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore", secret="not-the-secret")
    with pytest.raises(AccessDeniedError, match="signature we calculated does not match"):
        wire.verify(verifier())


def test_unknown_access_key_denied() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore", access_key="AKIAUNKNOWN")
    with pytest.raises(
        AccessDeniedError, match=r"security token included in the request is invalid.*AKIAUNKNOWN"
    ):
        wire.verify(verifier())


def test_other_configured_key_verifies_with_its_own_secret() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore", access_key="AKIAOTHER", secret="other-secret")
    assert wire.verify(verifier()) == "AKIAOTHER"


def test_tampered_body_denied() -> None:
    wire = signed("POST", f"{ENDPOINT}/datastore", b'{"datastoreName":"a"}')
    tampered = Wire(wire.method, wire.raw_path, wire.raw_query, wire.headers, b'{"datastoreName":"b"}')
    with pytest.raises(AccessDeniedError, match="does not match"):
        tampered.verify(verifier())


def test_tampered_path_denied() -> None:
    wire = signed("POST", f"{ENDPOINT}{arn_path()}", b"{}")
    other = arn_path(ARN.replace("0123", "9999"))
    tampered = Wire(wire.method, other.encode(), wire.raw_query, wire.headers, wire.body)
    with pytest.raises(AccessDeniedError, match="does not match"):
        tampered.verify(verifier())


def test_tampered_query_and_method_denied() -> None:
    wire = signed("DELETE", f"{ENDPOINT}{arn_path()}?tagKeys=a&tagKeys=b")
    for bad in (
        Wire(wire.method, wire.raw_path, b"tagKeys=a", wire.headers, b""),
        Wire("GET", wire.raw_path, wire.raw_query, wire.headers, b""),
        wire.replace_header(b"host", b"localhost:8081"),
    ):
        with pytest.raises(AccessDeniedError, match="does not match"):
            bad.verify(verifier())


def test_clock_skew_16_minutes_denied_14_accepted() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore")
    for delta in (timedelta(minutes=16), -timedelta(minutes=16)):
        with pytest.raises(
            AccessDeniedError, match=r"Signature expired: request time \d{8}T\d{6}Z is more than 15 minutes"
        ):
            wire.verify(verifier(at=wire.signed_at + delta))
    for delta in (timedelta(minutes=14), -timedelta(minutes=14)):
        assert wire.verify(verifier(at=wire.signed_at + delta)) == AK


def test_missing_date_denied() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore")
    stripped = Wire(
        wire.method, wire.raw_path, wire.raw_query, [h for h in wire.headers if h[0] != b"x-amz-date"], b""
    )
    with pytest.raises(AccessDeniedError):
        stripped.verify(verifier())
    with pytest.raises(AccessDeniedError):
        stripped.verify(verifier(local=True))


def test_wrong_service_scope_denied() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore", service="s3")
    for v in (verifier(), verifier(local=True)):
        with pytest.raises(AccessDeniedError, match="'s3'"):
            wire.verify(v)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        b"",
        b"Bearer abc",
        b"AWS4-HMAC-SHA256",
        b"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/medical-imaging/aws4_request",
        b"AWS4-HMAC-SHA256 Credential=AK/us-east-1/medical-imaging/aws4_request, SignedHeaders=host, Signature="
        + b"0" * 64,
        b"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/medical-imaging/aws4_request, SignedHeaders=host, Signature=xyz",
    ],
)
def test_missing_or_malformed_authorization_denied(authorization: bytes | None) -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore")
    headers = [h for h in wire.headers if h[0] != b"authorization"]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    bad = Wire(wire.method, wire.raw_path, wire.raw_query, headers, b"")
    for v in (verifier(), verifier(local=True)):
        with pytest.raises(AccessDeniedError, match="Missing or malformed Authorization header"):
            bad.verify(v)


# -- local mode ----------------------------------------------------------------------------------


def test_local_mode_accepts_any_key() -> None:
    v = SigV4Verifier({})
    assert v.local_mode
    assert not verifier().local_mode
    wire = signed("POST", f"{ENDPOINT}/datastore", b"{}", access_key="ANYKEY", secret="whatever")
    assert wire.verify(v) == "ANYKEY"
    assert wire.verify(SigV4Verifier(None)) == "ANYKEY"


def test_local_mode_still_checks_skew_and_header() -> None:
    wire = signed("GET", f"{ENDPOINT}/datastore", access_key="ANYKEY", secret="whatever")
    with pytest.raises(AccessDeniedError, match="Signature expired"):
        wire.verify(verifier(local=True, at=wire.signed_at + timedelta(minutes=16)))
    unsigned = Wire(
        wire.method, wire.raw_path, wire.raw_query, [h for h in wire.headers if h[0] != b"authorization"], b""
    )
    with pytest.raises(AccessDeniedError, match="Missing or malformed Authorization header"):
        unsigned.verify(verifier(local=True))


# -- end to end through a real boto3 client ------------------------------------------------------


class _RawBody:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


@pytest.fixture
def captured_client() -> Iterator[tuple[Any, list[Wire]]]:
    client = boto3.client(
        "medical-imaging",
        region_name="us-east-1",
        endpoint_url="http://localhost:8080",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
    )
    seen: list[Wire] = []

    def before_send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        seen.append(to_wire(request))
        body = json.dumps({"datastoreSummaries": [], "tags": {}}).encode()
        return AWSResponse(request.url, 200, {"Content-Type": "application/json"}, _RawBody(body))

    client.meta.events.register("before-send.medical-imaging", before_send)
    yield client, seen


def test_boto3_client_requests_verify(captured_client: tuple[Any, list[Wire]]) -> None:
    client, seen = captured_client
    client.list_datastores(maxResults=10, datastoreStatus="ACTIVE")
    client.tag_resource(resourceArn=ARN, tags={"k": "v w", "ü": "x"})
    client.untag_resource(resourceArn=ARN, tagKeys=["b key", "a/1", "ü"])
    client.list_tags_for_resource(resourceArn=ARN)
    assert len(seen) == 4
    assert seen[2].method == "DELETE"
    assert seen[2].raw_path.startswith(b"/tags/arn%3Aaws%3A")
    assert seen[2].raw_query.count(b"tagKeys=") == 3
    for wire in seen:
        assert wire.verify(verifier()) == AK
        assert wire.verify(verifier(local=True)) == AK
        with pytest.raises(AccessDeniedError, match="does not match"):
            wire.verify(SigV4Verifier({AK: "wrong"}))


# -- the payload hash is the hash of the body received ------------------------------------------


def _with_content_sha(body: bytes, declared: str) -> Wire:
    request = AWSRequest(method="POST", url=f"{ENDPOINT}/datastore", data=body)
    request.headers["X-Amz-Content-SHA256"] = declared
    botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(AK, SK), "medical-imaging", "us-east-1"
    ).add_auth(request)
    return to_wire(request.prepare())


@pytest.mark.parametrize("local", [False, True])
def test_unsigned_payload_is_refused(local: bool) -> None:
    """A client that signs UNSIGNED-PAYLOAD could have its body swapped after signing: refused."""
    wire = _with_content_sha(b'{"datastoreName":"x"}', "UNSIGNED-PAYLOAD")
    with pytest.raises(AccessDeniedError, match="UNSIGNED-PAYLOAD"):
        wire.verify(verifier(local=local))
    swapped = Wire(wire.method, wire.raw_path, wire.raw_query, wire.headers, b'{"datastoreName":"evil"}')
    with pytest.raises(AccessDeniedError):
        swapped.verify(verifier(local=local))


def test_body_swapped_after_signing_is_refused_without_a_content_header() -> None:
    wire = signed("POST", f"{ENDPOINT}/datastore", b'{"datastoreName":"x"}')
    assert wire.header(b"x-amz-content-sha256") is None
    swapped = Wire(wire.method, wire.raw_path, wire.raw_query, wire.headers, b'{"datastoreName":"y"}')
    with pytest.raises(AccessDeniedError, match="signature"):
        swapped.verify(verifier())


def test_a_streamed_body_is_verified_by_its_digest() -> None:
    """Bodies streamed to disk are verified by the SHA-256 computed while receiving them."""
    import hashlib

    body = b"\x00DICM" * 1000
    digest = hashlib.sha256(body).hexdigest()
    wire = _with_content_sha(body, digest)
    v = verifier()
    assert v.verify(wire.method, "/datastore", wire.raw_query, wire.headers, payload_sha256=digest) == AK
    other = hashlib.sha256(body + b"x").hexdigest()
    with pytest.raises(AccessDeniedError, match="x-amz-content-sha256"):
        v.verify(wire.method, "/datastore", wire.raw_query, wire.headers, payload_sha256=other)
    with pytest.raises(AccessDeniedError, match="x-amz-content-sha256"):
        verifier(local=True).verify(
            wire.method, "/datastore", wire.raw_query, wire.headers, payload_sha256=other
        )


# -- precheck: a streamed body's signature is checked in two steps -------------------------------


def test_precheck_passes_without_the_body_and_verify_then_checks_the_hmac() -> None:
    body = b"\x00DICM" * 1000
    wire = signed(
        "POST", f"{ENDPOINT}/datastore/ds/studies", body, headers={"Content-Type": "application/dicom"}
    )
    v = verifier()
    path = wire.raw_path.decode("ascii")
    assert v.precheck(wire.method, path, wire.raw_query, wire.headers) == AK
    assert v.verify(wire.method, path, wire.raw_query, wire.headers, body) == AK
    with pytest.raises(AccessDeniedError, match="signature"):
        v.verify(wire.method, path, wire.raw_query, wire.headers, body + b"x")


def test_precheck_refuses_an_unknown_key_and_a_stale_signature_before_any_body() -> None:
    unknown = signed("POST", f"{ENDPOINT}/datastore/ds/studies", b"x", access_key="AKIAUNKNOWN")
    with pytest.raises(AccessDeniedError, match="unknown access key"):
        verifier().precheck(unknown.method, unknown.raw_path.decode(), unknown.raw_query, unknown.headers)
    wire = signed("POST", f"{ENDPOINT}/datastore/ds/studies", b"x")
    late = verifier(at=datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(AccessDeniedError):
        late.precheck(wire.method, wire.raw_path.decode(), wire.raw_query, wire.headers)
