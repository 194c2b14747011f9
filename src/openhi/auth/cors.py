"""CORS for browser clients (``--cors-origin``): preflight answers and the headers of allowed responses.

Off unless origins are configured. A preflight (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) carries no credentials, so it is answered before authentication: 200
with the allowed methods and headers for an allowed origin, 403 otherwise. Every other response to a
request from an allowed origin gets ``Access-Control-Allow-Origin`` and the headers a script may read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

ANY = "*"
METHODS = "GET, HEAD, POST, PUT, DELETE"
#: request headers a browser may send (besides the CORS-safelisted ones); x-amz-* and amz-sdk-* by prefix
ALLOWED_HEADERS = frozenset({"authorization", "content-type", "accept", "range", "x-amz-user-agent"})
ALLOWED_PREFIXES = ("x-amz-", "amz-sdk-")
EXPOSED = (
    "Content-Type, Content-Length, Content-Location, Location, Warning, x-amzn-RequestId, x-amzn-ErrorType"
)
MAX_AGE = "600"


def parse_origin(value: str) -> str:
    """``*`` or a normalised ``scheme://host[:port]``; ValueError when ``value`` is neither."""
    value = value.strip()
    if value == ANY:
        return ANY
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"--cors-origin {value!r}: expected * or scheme://host[:port] (http or https)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"--cors-origin {value!r}: an origin has no path, query or fragment")
    return f"{parts.scheme}://{parts.netloc.lower()}"


class CorsPolicy:
    """The origins allowed to call from a browser (``*``: any)."""

    def __init__(self, origins: Iterable[str]) -> None:
        """Raises ValueError for an origin that is neither ``*`` nor ``scheme://host[:port]``."""
        parsed = {parse_origin(o) for o in origins}
        if not parsed:
            raise ValueError("--cors-origin: no origin given")
        self.any = ANY in parsed
        self.origins = frozenset(parsed - {ANY})

    def allowed(self, origin: str) -> bool:
        return self.any or origin.lower() in self.origins

    def _allow_origin(self, origin: str) -> list[tuple[str, str]]:
        if self.any:
            return [("Access-Control-Allow-Origin", ANY)]
        return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """What a (non-preflight) response to a request from ``origin`` adds; nothing if not allowed."""
        if origin is None or not self.allowed(origin):
            return [] if self.any else [("Vary", "Origin")]
        return [*self._allow_origin(origin), ("Access-Control-Expose-Headers", EXPOSED)]

    def preflight(self, origin: str, requested_headers: str | None) -> tuple[int, list[tuple[str, str]]]:
        """(status, headers) answering a preflight from ``origin``: 200 and the grants, or 403."""
        if not self.allowed(origin):
            return 403, [] if self.any else [("Vary", "Origin")]
        headers = [
            *self._allow_origin(origin),
            ("Access-Control-Allow-Methods", METHODS),
            ("Access-Control-Max-Age", MAX_AGE),
        ]
        granted = allowed_request_headers(requested_headers)
        if granted:
            headers.append(("Access-Control-Allow-Headers", ", ".join(granted)))
        return 200, headers


def allowed_request_headers(requested: str | None) -> Sequence[str]:
    """The names of ``Access-Control-Request-Headers`` that may be sent (others are left out)."""
    names = [n.strip().lower() for n in (requested or "").split(",") if n.strip()]
    return [n for n in dict.fromkeys(names) if n in ALLOWED_HEADERS or n.startswith(ALLOWED_PREFIXES)]
