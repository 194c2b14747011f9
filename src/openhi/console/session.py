"""Browser sessions outside local mode: a signed, HttpOnly, SameSite=Strict cookie naming an access key.

The cookie is ``v1.<access key id>.<expiry epoch>.<hmac>``; the HMAC (SHA-256) is keyed by a per-store
secret kept in the index's meta table and covers the key id, the expiry and a digest of the key's secret
access key, so rotating a key's secret ends its sessions. :func:`session_principal` is what the app's
authentication step calls for the browser front doors (console and DICOMweb).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from openhi.awsapi.serializer import WireResponse
from openhi.core.errors import OpenHIError

COOKIE = "openhi_session"
LIFETIME_SECONDS = 12 * 3600
META_KEY = "console_session_secret"
LOGIN_PATH = "/login"


@dataclass(frozen=True)
class SessionSecrets:
    """The HMAC key of this store's session cookies and the server's credentials (key id → secret)."""

    key: bytes
    credentials: Mapping[str, str] = field(default_factory=dict)

    @property
    def local_mode(self) -> bool:
        return not self.credentials


_configured: list[SessionSecrets] = []


def configure(services: Any, credentials: Mapping[str, str] | None) -> SessionSecrets:
    """Read (or create, once per store) the session secret and remember it with ``credentials`` for the
    login page of this process; returns it for the app's authentication step."""
    text = services.env.index.set_meta_if_absent(META_KEY, _secrets.token_hex(32))
    found = SessionSecrets(bytes.fromhex(text), dict(credentials or {}))
    _configured[:] = [found]
    return found


def configured() -> SessionSecrets | None:
    """What :func:`configure` set in this process, or None (then the login page says it is unavailable)."""
    return _configured[0] if _configured else None


def _mac(secrets: SessionSecrets, key_id: str, expires: int) -> str:
    secret = secrets.credentials.get(key_id, "")
    binding = hashlib.sha256(secret.encode()).hexdigest()
    message = f"v1|{key_id}|{expires}|{binding}".encode()
    return hmac.new(secrets.key, message, hashlib.sha256).hexdigest()


def issue(secrets: SessionSecrets, key_id: str, now: float | None = None) -> str:
    """A cookie value for ``key_id`` valid for :data:`LIFETIME_SECONDS`."""
    expires = int((now if now is not None else time.time()) + LIFETIME_SECONDS)
    return f"v1.{key_id}.{expires}.{_mac(secrets, key_id, expires)}"


def check_login(secrets: SessionSecrets, key_id: str, secret: str) -> bool:
    """Whether ``secret`` is the secret access key of ``key_id`` (constant time)."""
    expected = secrets.credentials.get(key_id)
    if expected is None:
        hmac.compare_digest(secret.encode(), b"x" * len(secret.encode()))  # same work for unknown keys
        return False
    return hmac.compare_digest(secret.encode(), expected.encode())


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """One cookie of a ``Cookie`` request header, or None."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def session_principal(
    cookie_header: str | None, secrets: SessionSecrets | None, now: float | None = None
) -> str | None:
    """The access key id of a valid, unexpired session cookie in ``cookie_header``, or None. Never
    raises: a malformed, forged, expired cookie or one of a key no longer configured is None."""
    if secrets is None or secrets.local_mode:
        return None
    value = cookie_value(cookie_header, COOKIE)
    if not value or len(value) > 512:
        return None
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not parts[2].isdigit():
        return None
    _, key_id, expires_text, mac = parts
    expires = int(expires_text)
    if key_id not in secrets.credentials:
        return None
    if expires < (now if now is not None else time.time()):
        return None
    if not hmac.compare_digest(mac, _mac(secrets, key_id, expires)):
        return None
    return key_id


class LoginRequired(OpenHIError):
    """A console page asked for without a valid session (outside local mode): the app answers ``302`` to
    the login page (``status`` and ``headers`` are what the app's error path sends)."""

    code = "LoginRequired"
    status = 302

    def __init__(self, path: str, query: bytes = b"") -> None:
        super().__init__("Sign in first: " + LOGIN_PATH)
        self.headers = login_redirect(path, query).headers


#: the console routes a browser reaches without a session: the login form and the styles it uses
PUBLIC_ROUTES = frozenset({"console-login-page", "console-login", "console-static"})
#: the principal of a request to one of :data:`PUBLIC_ROUTES` without a session (no policy names it)
PUBLIC_PRINCIPAL = "anonymous-browser"


def browser_session(route: Any, request: Any, secrets: SessionSecrets | None) -> str | None:
    """What the app's authentication step asks, outside local mode, for a request on a browser front
    door (``console``, ``dicomweb``) that carries no ``Authorization`` header and no presigned query: the
    access key id of its valid session cookie; :data:`PUBLIC_PRINCIPAL` for the login page and its
    styles; None for a DICOMweb request without a session (the usual SigV4 refusal follows).

    Raises:
        LoginRequired: any other console route without a valid session (302 to the login page).
    """
    principal = session_principal(request.header("cookie"), secrets)
    if principal is not None:
        return principal
    if route.name in PUBLIC_ROUTES:
        return PUBLIC_PRINCIPAL
    if route.front == "console":
        raise LoginRequired(request.path, request.query)
    return None


def set_cookie_header(value: str, *, secure: bool = False) -> tuple[str, str]:
    """The ``Set-Cookie`` header that stores a session (HttpOnly, SameSite=Strict, Path=/)."""
    attrs = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECONDS}"
    return ("set-cookie", attrs + ("; Secure" if secure else ""))


def clear_cookie_header() -> tuple[str, str]:
    return ("set-cookie", f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")


def login_redirect(path: str, query: bytes = b"") -> WireResponse:
    """``302`` to the login page, remembering where the browser was going (a local path only)."""
    target = path + ("?" + query.decode("latin-1") if query else "")
    location = f"{LOGIN_PATH}?next={quote(target, safe='')}"
    return WireResponse(302, [("location", location), ("cache-control", "no-store")], b"")


def safe_next(value: str | None) -> str:
    """Where to go after login: a path on this server only (never ``//host`` or a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value
