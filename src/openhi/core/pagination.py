"""Opaque page tokens: a keyset cursor plus a hash of the query, HMAC-signed with the server secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from openhi.core.errors import ValidationError


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Paginator:
    """Tokens survive restarts and work across processes: the secret lives in the shared index."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @staticmethod
    def _query_hash(operation: str, query: Mapping[str, Any]) -> str:
        canonical = json.dumps([operation, query], sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def issue(self, operation: str, query: Mapping[str, Any], cursor: list[Any]) -> str:
        body = _b64(
            json.dumps({"c": cursor, "q": self._query_hash(operation, query)}, separators=(",", ":")).encode()
        )
        sig = _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:20])
        return f"{body}.{sig}"

    def resolve(self, token: str | None, operation: str, query: Mapping[str, Any]) -> list[Any] | None:
        """The cursor carried by ``token`` (None for the first page).

        Raises:
            ValidationError: the token was tampered with, or was issued for a different query.
        """
        if token is None:
            return None
        body, _, sig = token.partition(".")
        expected = _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:20])
        if not sig or not hmac.compare_digest(sig, expected):
            raise ValidationError(
                "Invalid nextToken: the token is malformed or was not issued by this service."
            )
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            raise ValidationError("Invalid nextToken: the token is malformed.") from None
        if payload.get("q") != self._query_hash(operation, query):
            raise ValidationError(
                "Invalid nextToken: the token was issued for a different request; repeat the original parameters."
            )
        cursor = payload.get("c")
        if not isinstance(cursor, list):
            raise ValidationError("Invalid nextToken: the token is malformed.")
        return cursor
