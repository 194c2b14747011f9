"""Helpers for idempotent requests: a stable hash of the parameters that define a request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def request_hash(params: Mapping[str, Any], ignore: tuple[str, ...] = ("clientToken",)) -> str:
    """Hash of the request's parameters, used to tell a retry from a different request with the same token."""
    kept = {k: v for k, v in params.items() if k not in ignore and v is not None}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()
