"""OIDC bearer tokens on the DICOMweb routes: JWT validation against a JWKS, and scopes → DICOMweb actions.

openhi's counterpart of HealthImaging's Lambda authorizer (spec §13.2): a token is valid when its
signature verifies with a key of the configured JWKS (asymmetric algorithms only), its ``iss`` is the
configured issuer, its ``aud`` names the configured audience, ``exp`` is in the future, ``nbf`` (if any)
in the past, and ``iat`` in the past and at most 12 hours ago (HealthImaging's own pre-checks). What it
may do is read from its scopes (``scope`` or ``scp``):

- ``dicomweb.read``: every DICOMweb ``Get*`` and ``Search*`` action;
- ``dicomweb.write``: ``StoreDICOM`` and ``StoreDICOMStudy``;
- ``medical-imaging:<action>``, with ``*`` and ``?`` wildcards (``medical-imaging:GetDICOM*``,
  ``medical-imaging:*``): the DICOMweb actions it matches, regardless of case.

Other scope values are ignored. An optional ``datastores`` claim (a list of datastore ids, or a
space-separated string; ``*`` for any) limits the token to those datastores.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from openhi.auth.actions import DICOMWEB_ACTIONS, SERVICE_PREFIX
from openhi.core.errors import AccessDeniedError, InternalError

#: the longest a token may have been issued before it is used (HealthImaging's pre-check)
MAX_TOKEN_AGE_SECONDS = 12 * 3600
#: clock skew tolerated on exp / nbf / iat
LEEWAY_SECONDS = 60
READ_SCOPE, WRITE_SCOPE = "dicomweb.read", "dicomweb.write"
DATASTORES_CLAIM = "datastores"
_ACTIONS = tuple(f"{SERVICE_PREFIX}:{name}" for name in DICOMWEB_ACTIONS)
_READ = frozenset(a for a in _ACTIONS if a.split(":", 1)[1].startswith(("Get", "Search")))
_WRITE = frozenset(a for a in _ACTIONS if a.split(":", 1)[1].startswith("Store"))
_REFRESH_INTERVAL = 30.0  # a JWKS URL is fetched again for an unknown kid at most this often
_CACHE_SIZE = 1024


class InvalidTokenError(AccessDeniedError):
    """A bearer token that is missing, malformed, expired, or not signed by a configured key (401).

    Carries the ``WWW-Authenticate`` challenge of RFC 6750 §3.
    """

    status = 401

    def __init__(self, message: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        challenge = 'Bearer realm="openhi"'
        if error:
            description = message.replace("\\", "").replace('"', "'")[:200]
            challenge += f', error="{error}", error_description="{description}"'
        self.headers = [("WWW-Authenticate", challenge)]


@dataclass(frozen=True)
class OidcConfig:
    """``--oidc-issuer``, ``--oidc-audience`` and ``--oidc-jwks`` (a file path or an http(s) URL)."""

    issuer: str
    audience: str
    jwks: str


@dataclass(frozen=True)
class BearerPrincipal:
    """Who a valid token speaks for and what it may do."""

    subject: str
    actions: frozenset[str]  # canonical DICOMweb action names
    datastores: frozenset[str] | None  # None: any datastore
    expires: float  # exp, seconds since the epoch

    @property
    def name(self) -> str:
        return f"oidc:{self.subject}"

    def authorize(self, action: str, datastore_id: str | None) -> None:
        """Return when the token may perform ``action`` on the datastore; AccessDeniedError (403) if not."""
        if action not in self.actions:
            raise AccessDeniedError(
                f"Token of {self.subject} is not authorized to perform: {action} (its scopes do not grant it)"
            )
        if self.datastores is not None and (datastore_id or "") not in self.datastores:
            raise AccessDeniedError(
                f"Token of {self.subject} is not authorized to perform: {action} on datastore "
                f"{datastore_id} (not in its {DATASTORES_CLAIM} claim)"
            )


def scope_actions(values: Iterable[str]) -> frozenset[str]:
    """The DICOMweb actions a token's scope values grant (unknown values grant nothing)."""
    granted: set[str] = set()
    for value in values:
        if value == READ_SCOPE:
            granted |= _READ
        elif value == WRITE_SCOPE:
            granted |= _WRITE
        elif value.lower().startswith(f"{SERVICE_PREFIX}:"):
            pattern = value.lower()
            granted.update(a for a in _ACTIONS if fnmatch.fnmatchcase(a.lower(), pattern))
    return frozenset(granted)


def _strings(value: Any) -> list[str]:
    """A claim that is a space-separated string or a list of strings, as a list."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def principal_of(claims: dict[str, Any]) -> BearerPrincipal:
    """The principal of a validated token's claims."""
    datastores: frozenset[str] | None = None
    if DATASTORES_CLAIM in claims:
        listed = frozenset(_strings(claims[DATASTORES_CLAIM]))
        datastores = None if "*" in listed else listed
    subject = claims.get("sub")
    return BearerPrincipal(
        subject=subject if isinstance(subject, str) and subject else "unknown",
        actions=scope_actions([*_strings(claims.get("scope")), *_strings(claims.get("scp"))]),
        datastores=datastores,
        expires=float(claims["exp"]),
    )


def _usable(keys: Iterable[jwt.PyJWK]) -> list[jwt.PyJWK]:
    """Signature keys of an asymmetric algorithm: a symmetric (``oct``/HS*) key is never used."""
    return [
        k
        for k in keys
        if k.public_key_use in ("sig", None)
        and k.key_type != "oct"
        and not k.algorithm_name.upper().startswith(("HS", "NONE"))
    ]


def load_jwks_file(path: str | Path) -> list[jwt.PyJWK]:
    """The usable signature keys of a JWKS file; ValueError naming the problem otherwise."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the JWKS ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: the JWKS is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f'{path}: expected a JWK Set {{"keys": [...]}}')
    try:
        keys = _usable(jwt.PyJWKSet.from_dict(doc).keys)
    except jwt.PyJWTError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not keys:
        raise ValueError(f"{path}: the JWKS has no asymmetric signature key (RSA, EC or OKP)")
    return keys


class _UrlKeys:
    """The keys at a JWKS URL, through PyJWKClient's cache; refetched for an unknown kid (rate-limited)."""

    def __init__(self, url: str) -> None:
        self._client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=300, timeout=10)
        self._lock = threading.Lock()
        self._last_refresh = 0.0

    def keys(self, refresh: bool) -> list[jwt.PyJWK]:
        with self._lock:
            if refresh:
                if time.monotonic() - self._last_refresh < _REFRESH_INTERVAL:
                    refresh = False
                else:
                    self._last_refresh = time.monotonic()
        try:
            return _usable(self._client.get_jwk_set(refresh=refresh).keys)
        except jwt.PyJWTError as exc:
            raise InternalError(f"The OIDC key set (JWKS) cannot be read: {exc}") from None


class BearerVerifier:
    """Validates bearer tokens against one issuer, audience and key set; caches the valid ones."""

    def __init__(self, config: OidcConfig, *, clock: Callable[[], float] = time.time) -> None:
        """Raises ValueError when the JWKS is a file that cannot be used."""
        self.config = config
        self._clock = clock
        if config.jwks.startswith(("http://", "https://")):
            url_keys = _UrlKeys(config.jwks)
            self._keys: Callable[[bool], list[jwt.PyJWK]] = url_keys.keys
        else:
            static = load_jwks_file(config.jwks)
            self._keys = lambda refresh: static
        self._cache: OrderedDict[str, BearerPrincipal] = OrderedDict()
        self._cache_lock = threading.Lock()

    def cached(self, token: str) -> BearerPrincipal | None:
        """The principal of a token validated before and not yet expired (cheap: no signature check)."""
        with self._cache_lock:
            found = self._cache.get(token)
            if found is None:
                return None
            if found.expires + LEEWAY_SECONDS <= self._clock():
                del self._cache[token]
                return None
            self._cache.move_to_end(token)
            return found

    def verify(self, token: str) -> BearerPrincipal:
        """The token's principal; InvalidTokenError (401) when it is not valid, InternalError when a JWKS
        URL cannot be read."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        principal = principal_of(self._claims(token))
        with self._cache_lock:
            self._cache[token] = principal
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return principal

    def _key(self, header: dict[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        for refresh in (False, True):
            keys = self._keys(refresh)
            if kid is None:
                if len(keys) == 1:
                    return keys[0]
                raise InvalidTokenError(f"The token names no key (kid) and the JWKS has {len(keys)} keys")
            for key in keys:
                if key.key_id == kid:
                    return key
        raise InvalidTokenError(f"The token's key (kid {str(kid)[:64]!r}) is not in the JWKS")

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"The bearer token is not a JWT: {exc}") from None
        key = self._key(header)
        alg = header.get("alg")
        if alg != key.algorithm_name:
            raise InvalidTokenError(
                f"The token's algorithm {str(alg)[:20]!r} is not its key's ({key.algorithm_name})"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidTokenError("The token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidTokenError("The token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise InvalidTokenError(f"The token's audience is not {self.config.audience}") from None
        except jwt.InvalidIssuerError:
            raise InvalidTokenError(f"The token's issuer is not {self.config.issuer}") from None
        except jwt.InvalidSignatureError:
            raise InvalidTokenError("The token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"The token is not valid: {exc}") from None
        if self._clock() - float(claims["iat"]) > MAX_TOKEN_AGE_SECONDS + LEEWAY_SECONDS:
            raise InvalidTokenError("The token was issued more than 12 hours ago")
        return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (scheme case-insensitive), else None.

    Raises InvalidTokenError when the scheme is Bearer but no token follows.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        raise InvalidTokenError("Authorization: Bearer carries no token", error="invalid_request")
    return token
