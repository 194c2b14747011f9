"""Identifier generation: 32 lowercase hex characters, as the service uses for every resource id."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """Return a fresh 32-character ``[0-9a-f]`` identifier."""
    return secrets.token_hex(16)
