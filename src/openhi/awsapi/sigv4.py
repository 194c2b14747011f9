"""AWS Signature Version 4 verification of incoming requests, canonicalised exactly as botocore signs them."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote_to_bytes

from openhi.auth.sigv4_keys import remove_dot_segments, signing_key
from openhi.core.errors import AccessDeniedError

__all__ = ["Credentials", "SigV4Verifier", "VerifiedRequest"]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_TIMESTAMP_RE = re.compile(r"^\d{8}T\d{6}Z$")
_SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
_MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
_QUERY_SAFE = "-_.~"
_PATH_SAFE = "/~"
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


@dataclass(frozen=True)
class Credentials:
    """One configured access key pair."""

    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class VerifiedRequest:
    """What a successful verification learned about the request's signature."""

    access_key_id: str
    region: str
    service: str
    signed_at: datetime
    signed_headers: tuple[str, ...]
    presigned: bool


class _Signature(NamedTuple):
    """A parsed signature (a NamedTuple: built on every request, ~4x cheaper than a frozen dataclass)."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    signed_at: datetime
    expires: int | None  # presigned URLs only


def _utc_now() -> datetime:
    return datetime.now(UTC)


def canonical_uri(raw_path: str | bytes) -> str:
    """The canonical URI as ``SigV4Auth._normalize_url_path`` computes it from the wire path.

    botocore signs ``quote(normalize_url_path(urlsplit(url).path), safe='/~')`` where the URL path is
    already percent-encoded, so every ``%`` is encoded again (``%3A`` -> ``%253A``): the "double
    encoding" SigV4 prescribes for every service but S3.

    A ``str`` path is taken as the wire bytes decoded as latin-1 (what an ASGI app gets from
    ``raw_path.decode("latin-1")``), falling back to UTF-8 for characters beyond U+00FF.
    """
    if isinstance(raw_path, str):
        try:
            wire = raw_path.encode("latin-1")
        except UnicodeEncodeError:
            wire = raw_path.encode("utf-8", "surrogateescape")
    else:
        wire = raw_path
    normalized = remove_dot_segments(wire.decode("latin-1")) if wire else "/"
    return quote(normalized.encode("latin-1"), safe=_PATH_SAFE)


def _query_pairs(raw_query: str) -> list[tuple[str, str]]:
    if not raw_query:
        return []
    pairs = []
    for pair in raw_query.split("&"):
        key, _, value = pair.partition("=")
        pairs.append((key, value))
    return pairs


def _join_pairs(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _reencode(pairs: list[tuple[str, str]], *, plus_is_space: bool = False) -> str:
    def enc(text: str) -> str:
        if plus_is_space:
            text = text.replace("+", "%20")
        return quote(unquote_to_bytes(text), safe=_QUERY_SAFE)

    return _join_pairs([(enc(k), enc(v)) for k, v in pairs])


def canonical_query_candidates(raw_query: str, *, exclude: str | None = None) -> list[str]:
    """Canonical query strings to try, most standard first (distinct; usually just one).

    1. The SigV4 spec form: each key and value percent-decoded and re-encoded with only ``-_.~``
       left unreserved, pairs sorted by key then value.
    2. botocore's ``SigV4Auth._canonical_query_string_url``: the pairs sorted exactly as written in
       the URL (no re-encoding). botocore's serializer encodes with the same safe set, so this equals
       (1) for every botocore client request; it differs only for hand-written URLs.
    3. Form encoding: ``+`` read as a space. ``AWSRequest(params=...)`` signs the params encoded
       with ``%20`` but ``prepare()`` sends them through ``urlencode`` (``+``).
    """
    pairs = [(k, v) for k, v in _query_pairs(raw_query) if exclude is None or k != exclude]
    candidates = [_reencode(pairs), _join_pairs(pairs)]
    if "+" in raw_query:
        candidates.append(_reencode(pairs, plus_is_space=True))
    return list(dict.fromkeys(candidates))


@lru_cache(maxsize=1024)
def _scope(credential: str, signed_headers: str) -> tuple[str, str, str, str, tuple[str, ...]]:
    """Access key, scope date, region, service and signed header names, checked (cached: a client
    signs every request of a day with the same credential scope and usually the same header list)."""
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts) or parts[4] != "aws4_request":
        raise AccessDeniedError(
            "Missing or malformed Authorization header: Credential must be "
            f"<access key>/<YYYYMMDD>/<region>/<service>/aws4_request, got {credential!r}"
        )
    access_key_id, scope_date, region, service, _ = parts
    if not re.fullmatch(r"\d{8}", scope_date):
        raise AccessDeniedError(
            f"Missing or malformed Authorization header: credential scope date {scope_date!r} is not YYYYMMDD"
        )
    names = tuple(signed_headers.split(";"))
    if not all(_HEADER_NAME_RE.match(n) for n in names) or list(names) != sorted(set(names)):
        raise AccessDeniedError(
            "Missing or malformed Authorization header: SignedHeaders must be sorted, distinct, "
            f"lower-case header names separated by ';', got {signed_headers!r}"
        )
    if "host" not in names:
        raise AccessDeniedError("Missing or malformed Authorization header: 'host' must be a signed header")
    return access_key_id, scope_date, region, service, names


def _parse_timestamp(value: str, what: str) -> datetime:
    """``YYYYMMDD'T'HHMMSS'Z'`` as an aware datetime (cached: clients reuse a timestamp for a second)."""
    parsed = _cached_timestamp(value)
    return parsed if parsed is not None else _strict_timestamp(value, what)  # raises with the precise reason


@lru_cache(maxsize=256)
def _cached_timestamp(value: str) -> datetime | None:
    try:
        return _strict_timestamp(value, "timestamp")
    except AccessDeniedError:
        return None


def _strict_timestamp(value: str, what: str) -> datetime:
    if not _TIMESTAMP_RE.match(value):
        raise AccessDeniedError(
            f"Missing or malformed Authorization header: {what} {value!r} is not YYYYMMDD'T'HHMMSS'Z'"
        )
    try:
        return datetime(
            int(value[0:4]),
            int(value[4:6]),
            int(value[6:8]),
            int(value[9:11]),
            int(value[11:13]),
            int(value[13:15]),
            tzinfo=UTC,
        )
    except ValueError:
        raise AccessDeniedError(
            f"Missing or malformed Authorization header: {what} {value!r} is not a valid date"
        ) from None


def _received_hash(declared: list[str] | None, body: bytes, streamed_sha256: str | None) -> str:
    """The hex SHA-256 of the body received; a declared ``x-amz-content-sha256`` must be exactly that.

    Outside S3, AWS services hash the payload they receive: ``UNSIGNED-PAYLOAD`` (which would let a
    body be replaced after signing) and any other value than the body's hash are refused.
    """
    received = streamed_sha256 or hashlib.sha256(body).hexdigest()
    if declared:
        if len(declared) != 1:
            raise AccessDeniedError(
                "Missing or malformed Authorization header: more than one x-amz-content-sha256"
            )
        value = declared[0].strip()
        if value == UNSIGNED_PAYLOAD:
            raise AccessDeniedError(
                "x-amz-content-sha256: UNSIGNED-PAYLOAD is not accepted by this service; "
                "sign the SHA-256 of the request body."
            )
        if not _SHA256_RE.match(value):
            raise AccessDeniedError(f"Unsupported x-amz-content-sha256 value {value[:80]!r}")
        if value.lower() != received:
            raise AccessDeniedError(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )
        return value  # signed as sent (botocore sends lower-case hex)
    return received


def _format_duration(seconds: int) -> str:
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds} seconds"


class SigV4Verifier:
    """Verifies ``AWS4-HMAC-SHA256`` signatures (Authorization header or presigned query).

    ``credentials`` maps access key id to secret access key. ``None`` or an empty mapping selects
    local mode: any well-formed signature made with any key is accepted without checking the HMAC,
    but the format, the service in the credential scope and the clock skew are still checked.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | None,
        *,
        service: str = "medical-imaging",
        max_skew_seconds: int = 900,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._secrets: dict[str, str] = dict(credentials or {})
        self._service = service
        self._max_skew = max_skew_seconds
        self._skew = timedelta(seconds=max_skew_seconds)
        self._clock = clock

    @property
    def local_mode(self) -> bool:
        return not self._secrets

    @property
    def service(self) -> str:
        return self._service

    def verify(
        self,
        method: str,
        raw_path: str | bytes,
        raw_query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        payload_sha256: str | None = None,
    ) -> str:
        """Verify the request's signature and return its access key id; raise ``AccessDeniedError``.

        The payload hash is always that of the body received (``payload_sha256``, the hex digest of a
        body streamed elsewhere, else the hash of ``body``): an ``x-amz-content-sha256`` header must
        equal it, and ``UNSIGNED-PAYLOAD`` is refused, so a body cannot be swapped after signing.
        """
        return self._verified(method, raw_path, raw_query, headers, body, payload_sha256).access_key_id

    def precheck(
        self,
        method: str,
        raw_path: str | bytes,
        raw_query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> str:
        """Every check of :meth:`verify` that does not need the body (format, scope, time, signed headers
        present, the key known); return the access key id or raise ``AccessDeniedError``. The HMAC is
        left for :meth:`verify` once a streamed body has arrived and been hashed."""
        return self._verified(method, raw_path, raw_query, headers, b"", None, check_hmac=False).access_key_id

    def authenticate(
        self,
        method: str,
        raw_path: str | bytes,
        raw_query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        payload_sha256: str | None = None,
    ) -> VerifiedRequest:
        """Like :meth:`verify`, returning the region, signing time and signed headers as well."""
        sig = self._verified(method, raw_path, raw_query, headers, body, payload_sha256)
        return VerifiedRequest(
            access_key_id=sig.access_key_id,
            region=sig.region,
            service=sig.service,
            signed_at=sig.signed_at,
            signed_headers=sig.signed_headers,
            presigned=sig.expires is not None,
        )

    def _verified(
        self,
        method: str,
        raw_path: str | bytes,
        raw_query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        payload_sha256: str | None = None,
        *,
        check_hmac: bool = True,
    ) -> _Signature:
        header_map: dict[str, list[str]] = {}
        for name, value in headers:
            header_map.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        query = raw_query.decode("latin-1")

        authorization = header_map.get("authorization")
        if authorization is None and "X-Amz-Signature=" in query:
            sig = self._parse_presigned(query)
        else:
            if authorization is None:
                raise AccessDeniedError("Missing or malformed Authorization header: no Authorization header")
            if len(authorization) != 1:
                raise AccessDeniedError(
                    "Missing or malformed Authorization header: more than one Authorization header"
                )
            sig = self._parse_authorization(authorization[0], header_map)

        self._check_scope(sig)
        self._check_time(sig)
        for signed in sig.signed_headers:
            if signed not in header_map:
                raise AccessDeniedError(
                    f"Missing or malformed Authorization header: signed header {signed!r} is not in the request"
                )

        content_sha = header_map.get("x-amz-content-sha256")
        if self.local_mode and not check_hmac:
            return sig
        if self.local_mode:
            if content_sha:  # no HMAC to check, but a declared body hash is still the body's
                _received_hash(content_sha, body, payload_sha256)
            return sig
        secret = self._secrets.get(sig.access_key_id)
        if secret is None:
            raise AccessDeniedError(
                "The security token included in the request is invalid: "
                f"unknown access key {sig.access_key_id!r}"
            )
        if not check_hmac:
            return sig
        payload_hash = _received_hash(content_sha, body, payload_sha256)
        self._check_signature(sig, secret, method, raw_path, query, header_map, payload_hash)
        return sig

    # -- parsing ---------------------------------------------------------------------------------

    def _parse_authorization(self, value: str, header_map: Mapping[str, list[str]]) -> _Signature:
        algorithm, _, rest = value.strip().partition(" ")
        if algorithm != ALGORITHM:
            raise AccessDeniedError(
                f"Missing or malformed Authorization header: unsupported algorithm {algorithm!r}, expected {ALGORITHM}"
            )
        fields: dict[str, str] = {}
        for component in rest.split(","):
            key, eq, field_value = component.strip().partition("=")
            if not eq or not key:
                raise AccessDeniedError(
                    f"Missing or malformed Authorization header: cannot parse component {component.strip()!r}"
                )
            if key in fields:
                raise AccessDeniedError(f"Missing or malformed Authorization header: duplicate {key}")
            fields[key] = field_value.strip()
        missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
        if missing:
            raise AccessDeniedError(
                f"Missing or malformed Authorization header: missing {', '.join(missing)}"
            )

        amz_date = header_map.get("x-amz-date")
        if amz_date:
            timestamp = amz_date[0].strip()
            signed_at = _parse_timestamp(timestamp, "X-Amz-Date")
        elif header_map.get("date"):
            raw_date = header_map["date"][0]
            try:
                parsed = parsedate_to_datetime(raw_date)
            except (TypeError, ValueError):
                raise AccessDeniedError(
                    f"Missing or malformed Authorization header: Date {raw_date!r} is not an HTTP date"
                ) from None
            signed_at = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            timestamp = signed_at.strftime(_TIMESTAMP_FORMAT)
        else:
            raise AccessDeniedError(
                "Signature expired: request time is missing; an X-Amz-Date or Date header is required"
            )
        return self._build(
            fields["Credential"], fields["SignedHeaders"], fields["Signature"], timestamp, signed_at, None
        )

    def _parse_presigned(self, query: str) -> _Signature:
        params: dict[str, str] = {}
        for key, value in _query_pairs(query):
            name = unquote_to_bytes(key).decode("utf-8", "replace")
            if name.startswith("X-Amz-"):
                if name in params:
                    raise AccessDeniedError(
                        f"Missing or malformed Authorization header: duplicate {name} query parameter"
                    )
                params[name] = unquote_to_bytes(value).decode("utf-8", "replace")
        missing = [
            k
            for k in (
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature",
            )
            if k not in params
        ]
        if missing:
            raise AccessDeniedError(
                f"Missing or malformed Authorization header: presigned URL lacks {', '.join(missing)}"
            )
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise AccessDeniedError(
                f"Missing or malformed Authorization header: unsupported algorithm {params['X-Amz-Algorithm']!r}"
            )
        expires_text = params["X-Amz-Expires"]
        if not expires_text.isdigit() or not 1 <= int(expires_text) <= _MAX_PRESIGN_EXPIRES:
            raise AccessDeniedError(
                f"Missing or malformed Authorization header: X-Amz-Expires {expires_text!r} must be 1 to {_MAX_PRESIGN_EXPIRES}"
            )
        timestamp = params["X-Amz-Date"]
        signed_at = _parse_timestamp(timestamp, "X-Amz-Date")
        return self._build(
            params["X-Amz-Credential"],
            params["X-Amz-SignedHeaders"],
            params["X-Amz-Signature"],
            timestamp,
            signed_at,
            int(expires_text),
        )

    @staticmethod
    def _build(
        credential: str,
        signed_headers: str,
        signature: str,
        timestamp: str,
        signed_at: datetime,
        expires: int | None,
    ) -> _Signature:
        access_key_id, scope_date, region, service, names = _scope(credential, signed_headers)
        if not _SIGNATURE_RE.match(signature):
            raise AccessDeniedError(
                "Missing or malformed Authorization header: Signature must be 64 lower-case hex digits"
            )
        return _Signature(
            access_key_id=access_key_id,
            scope_date=scope_date,
            region=region,
            service=service,
            signed_headers=names,
            signature=signature,
            timestamp=timestamp,
            signed_at=signed_at,
            expires=expires,
        )

    # -- checks ----------------------------------------------------------------------------------

    def _check_scope(self, sig: _Signature) -> None:
        if sig.service != self._service:
            raise AccessDeniedError(
                f"Credential should be scoped to correct service: '{self._service}', not '{sig.service}'"
            )
        if sig.scope_date != sig.timestamp[:8]:
            raise AccessDeniedError(
                f"Date in Credential scope ({sig.scope_date}) does not match YYYYMMDD from the request time "
                f"({sig.timestamp})"
            )

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is UTC:  # the default clock
            return now
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    def _check_time(self, sig: _Signature) -> None:
        now = self._now()
        skew = self._skew
        if sig.expires is None:
            if abs(sig.signed_at - now) > skew:
                raise AccessDeniedError(
                    f"Signature expired: request time {sig.timestamp} is more than "
                    f"{_format_duration(self._max_skew)} from server time {now.strftime(_TIMESTAMP_FORMAT)}"
                )
            return
        if sig.signed_at - now > skew:
            raise AccessDeniedError(
                f"Signature not yet current: request time {sig.timestamp} is more than "
                f"{_format_duration(self._max_skew)} after server time {now.strftime(_TIMESTAMP_FORMAT)}"
            )
        if now > sig.signed_at + timedelta(seconds=sig.expires):
            raise AccessDeniedError(
                f"Signature expired: presigned URL signed at {sig.timestamp} expired after "
                f"{sig.expires} seconds (server time {now.strftime(_TIMESTAMP_FORMAT)})"
            )

    def _check_signature(
        self,
        sig: _Signature,
        secret: str,
        method: str,
        raw_path: str | bytes,
        query: str,
        header_map: Mapping[str, list[str]],
        payload_hash: str,
    ) -> None:
        canonical_headers = "".join(
            f"{name}:{','.join(' '.join(v.split()) for v in header_map[name])}\n"
            for name in sig.signed_headers
        )
        head = f"{method.upper()}\n{canonical_uri(raw_path)}\n"
        tail = f"\n{canonical_headers}\n{';'.join(sig.signed_headers)}\n{payload_hash}"
        scope = f"{sig.scope_date}/{sig.region}/{sig.service}/aws4_request"
        key = signing_key(secret, sig.scope_date, sig.region, sig.service)
        exclude = "X-Amz-Signature" if sig.expires is not None else None
        for canonical_query in canonical_query_candidates(query, exclude=exclude):
            canonical_request = head + canonical_query + tail
            string_to_sign = (
                f"{ALGORITHM}\n{sig.timestamp}\n{scope}\n"
                f"{hashlib.sha256(canonical_request.encode('utf-8', 'surrogateescape')).hexdigest()}"
            )
            expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, sig.signature):
                return
        raise AccessDeniedError(_MISMATCH)
