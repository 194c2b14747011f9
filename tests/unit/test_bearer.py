"""OIDC bearer tokens: validation against a JWKS file (RSA and EC keys made here), the refusals, scopes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from openhi.auth.bearer import (
    BearerVerifier,
    InvalidTokenError,
    OidcConfig,
    bearer_token,
    load_jwks_file,
    principal_of,
    scope_actions,
)
from openhi.core.errors import AccessDeniedError

ISSUER, AUDIENCE = "https://idp.example/realms/imaging", "openhi-dicomweb"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
READ = {
    "medical-imaging:GetDICOMInstance",
    "medical-imaging:GetDICOMInstanceMetadata",
    "medical-imaging:GetDICOMInstanceFrames",
    "medical-imaging:GetDICOMSeriesMetadata",
    "medical-imaging:GetDICOMBulkdata",
    "medical-imaging:SearchDICOMStudies",
    "medical-imaging:SearchDICOMSeries",
    "medical-imaging:SearchDICOMInstances",
}
WRITE = {"medical-imaging:StoreDICOM", "medical-imaging:StoreDICOMStudy"}


def jwk(key: Any, kid: str, **extra: str) -> dict[str, Any]:
    public = key.public_key()
    algorithm = (
        jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    )
    doc: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)
    return {**doc, "kid": kid, "use": "sig", **extra}


def write_jwks(path: Path, *keys: dict[str, Any]) -> str:
    path.write_text(json.dumps({"keys": list(keys)}))
    return str(path)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    doc: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now - 10,
        "exp": now + 600,
        "scope": "openid dicomweb.read",
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def token(key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "rsa1", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


@pytest.fixture()
def verifier(tmp_path: Path) -> BearerVerifier:
    jwks = write_jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "rsa1"), jwk(EC_KEY, "ec1"))
    return BearerVerifier(OidcConfig(ISSUER, AUDIENCE, jwks))


def test_a_good_rsa_token_and_a_good_ec_token_are_accepted(verifier: BearerVerifier) -> None:
    rsa_principal = verifier.verify(token())
    assert rsa_principal.name == "oidc:alice" and rsa_principal.actions == READ
    assert rsa_principal.datastores is None
    ec_principal = verifier.verify(token(EC_KEY, "ES256", "ec1", scope="dicomweb.write", sub="bob"))
    assert ec_principal.name == "oidc:bob" and ec_principal.actions == WRITE


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"iat": int(time.time()) - 13 * 3600}, "more than 12 hours"),
        ({"iss": "https://other.example"}, "issuer"),
        ({"aud": "someone-else"}, "audience"),
        ({"aud": None}, "aud"),
        ({"exp": None}, "exp"),
        ({"iat": None}, "iat"),
    ],
)
def test_claims_that_make_a_token_invalid(
    verifier: BearerVerifier, overrides: dict[str, Any], why: str
) -> None:
    with pytest.raises(InvalidTokenError, match=why) as info:
        verifier.verify(token(**overrides))
    assert info.value.status == 401 and info.value.code == "AccessDeniedException"
    assert info.value.headers[0][0] == "WWW-Authenticate"
    assert info.value.headers[0][1].startswith('Bearer realm="openhi", error="invalid_token"')


def test_a_token_signed_by_another_key_is_refused(verifier: BearerVerifier) -> None:
    with pytest.raises(InvalidTokenError, match="signature does not verify"):
        verifier.verify(token(OTHER_RSA))


def test_an_unknown_kid_is_refused(verifier: BearerVerifier) -> None:
    with pytest.raises(InvalidTokenError, match="not in the JWKS"):
        verifier.verify(token(kid="rsa-rotated-away"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{_b64(signature)}"


def test_alg_none_is_refused(verifier: BearerVerifier) -> None:
    with pytest.raises(InvalidTokenError, match="algorithm 'none'"):
        verifier.verify(_forged({"alg": "none", "typ": "JWT", "kid": "rsa1"}, None))


def test_hs256_with_the_public_key_as_secret_is_refused(verifier: BearerVerifier) -> None:
    """The classic key-confusion attack: an HMAC over the token keyed with the published RSA key."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, json.dumps(jwk(RSA_KEY, "rsa1")).encode()):
        with pytest.raises(InvalidTokenError, match="algorithm 'HS256'"):
            verifier.verify(_forged({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}, secret))


def test_a_token_of_another_algorithm_than_its_key_is_refused(verifier: BearerVerifier) -> None:
    with pytest.raises(InvalidTokenError, match="not its key's"):
        verifier.verify(token(RSA_KEY, "PS256"))


def test_a_key_with_an_explicit_alg_verifies_that_algorithm(tmp_path: Path) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "ps", alg="PS256"))
    verifier = BearerVerifier(OidcConfig(ISSUER, AUDIENCE, jwks))
    assert verifier.verify(token(RSA_KEY, "PS256", "ps")).actions == READ
    with pytest.raises(InvalidTokenError):
        verifier.verify(token(RSA_KEY, "RS256", "ps"))


def test_a_token_without_kid_uses_the_only_key_and_is_refused_among_several(
    tmp_path: Path, verifier: BearerVerifier
) -> None:
    single = BearerVerifier(
        OidcConfig(ISSUER, AUDIENCE, write_jwks(tmp_path / "one.json", jwk(RSA_KEY, "k")))
    )
    assert single.verify(token(kid=None)).subject == "alice"
    with pytest.raises(InvalidTokenError, match="names no key"):
        verifier.verify(token(kid=None))


def test_garbage_is_not_a_token(verifier: BearerVerifier) -> None:
    for bad in ("not-a-jwt", "a.b.c", ""):
        with pytest.raises(InvalidTokenError):
            verifier.verify(bad)


def test_a_jwks_file_without_an_asymmetric_key_is_refused(tmp_path: Path) -> None:
    oct_only = write_jwks(tmp_path / "oct.json", {"kty": "oct", "k": _b64(b"secret"), "kid": "h"})
    with pytest.raises(ValueError, match="no asymmetric signature key"):
        load_jwks_file(oct_only)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_jwks_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read"):
        load_jwks_file(tmp_path / "missing.json")
    mixed = write_jwks(tmp_path / "mixed.json", {"kty": "oct", "k": _b64(b"s"), "kid": "h"}, jwk(EC_KEY, "e"))
    assert [k.key_id for k in load_jwks_file(mixed)] == ["e"]


def test_valid_tokens_are_cached_until_they_expire(tmp_path: Path) -> None:
    now = [time.time()]
    jwks = write_jwks(tmp_path / "jwks.json", jwk(RSA_KEY, "rsa1"))
    verifier = BearerVerifier(OidcConfig(ISSUER, AUDIENCE, jwks), clock=lambda: now[0])
    good = token(exp=int(now[0]) + 120)
    assert verifier.cached(good) is None
    first = verifier.verify(good)
    assert verifier.cached(good) is first
    now[0] += 600  # past exp and the leeway
    assert verifier.cached(good) is None


# -- scopes → actions --------------------------------------------------------------------------------


def test_scope_values_map_to_dicomweb_actions() -> None:
    assert scope_actions(["dicomweb.read"]) == READ
    assert scope_actions(["dicomweb.write"]) == WRITE
    assert scope_actions(["medical-imaging:*"]) == READ | WRITE
    assert scope_actions(["medical-imaging:GetDICOM*"]) == {a for a in READ if ":GetDICOM" in a}
    assert scope_actions(["Medical-Imaging:searchdicom*"]) == {a for a in READ if ":SearchDICOM" in a}
    assert scope_actions(["medical-imaging:GetDICOMInstance"]) == {"medical-imaging:GetDICOMInstance"}
    # API actions and unknown values grant nothing: a token only opens DICOMweb routes
    assert scope_actions(["openid", "profile", "medical-imaging:GetImageSet", "*", "dicomweb"]) == set()


def test_scope_and_scp_claims_are_both_read() -> None:
    base = {"exp": time.time() + 60}
    assert principal_of({**base, "scp": ["dicomweb.write"]}).actions == WRITE
    assert principal_of({**base, "scp": "dicomweb.write"}).actions == WRITE
    assert principal_of({**base, "scope": "dicomweb.read", "scp": ["dicomweb.write"]}).actions == READ | WRITE
    assert principal_of({**base, "scope": 42}).actions == set()


def test_the_datastores_claim_limits_a_token() -> None:
    base = {"exp": time.time() + 60, "scope": "dicomweb.read", "sub": "carol"}
    limited = principal_of({**base, "datastores": ["a" * 32]})
    limited.authorize("medical-imaging:SearchDICOMStudies", "a" * 32)
    with pytest.raises(AccessDeniedError, match="not in its datastores claim"):
        limited.authorize("medical-imaging:SearchDICOMStudies", "b" * 32)
    with pytest.raises(AccessDeniedError, match="scopes do not grant it"):
        limited.authorize("medical-imaging:StoreDICOM", "a" * 32)
    assert principal_of({**base, "datastores": "x y"}).datastores == {"x", "y"}
    assert principal_of({**base, "datastores": ["*"]}).datastores is None
    assert principal_of(base).datastores is None


def test_bearer_token_reads_the_authorization_header() -> None:
    assert bearer_token(None) is None
    assert bearer_token("AWS4-HMAC-SHA256 Credential=x") is None
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc ") == "abc"
    with pytest.raises(InvalidTokenError, match="carries no token") as info:
        bearer_token("Bearer ")
    assert 'error="invalid_request"' in info.value.headers[0][1]
