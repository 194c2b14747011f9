"""Rendering console pages: the Jinja2 environment, HTML answers with security headers, CSRF, forms."""

from __future__ import annotations

import hmac
import json
import mimetypes
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2

from openhi import __version__
from openhi.auth.routes import Request
from openhi.awsapi.serializer import WireResponse
from openhi.console.session import cookie_value
from openhi.console.viewer_install import viewer_installed
from openhi.core.errors import AccessDeniedError, NotFoundError

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
CSRF_COOKIE = "openhi_csrf"
CSRF_FIELD = "csrf"
#: scripts and styles from this server only; images also as data: / blob: (thumbnails, previews)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
]

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
ENV.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False, default=str)
ENV.filters["urlq"] = lambda value: quote(str(value), safe="")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


ENV.filters["when"] = _when


def csrf_token(request: Request) -> tuple[str, bool]:
    """The browser's CSRF token (its cookie), or a new one; True when it is new (a cookie must be set)."""
    found = cookie_value(request.header("cookie"), CSRF_COOKIE)
    if found and len(found) == 43 and found.replace("-", "").replace("_", "").isalnum():
        return found, False
    return secrets.token_urlsafe(32), True


def check_csrf(request: Request, form: dict[str, str]) -> None:
    """Double-submit check of a POST form: its ``csrf`` field equals the ``openhi_csrf`` cookie.

    Raises:
        AccessDeniedError: missing or different (a form posted from another site).
    """
    cookie = cookie_value(request.header("cookie"), CSRF_COOKIE) or ""
    sent = form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise AccessDeniedError("The form's CSRF token is missing or does not match; reload the page.")


def form_fields(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body (last value wins)."""
    parsed = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def query_fields(request: Request) -> dict[str, str]:
    parsed = parse_qs(request.query.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def secure_request(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a proxy that says so)."""
    return (request.header("x-forwarded-proto") or "").lower() == "https"


def _csrf_cookie(token: str, request: Request) -> tuple[str, str]:
    secure = "; Secure" if secure_request(request) else ""
    return ("set-cookie", f"{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")


def page(services: Any, request: Request, template: str, status: int = 200, **context: Any) -> WireResponse:
    """An HTML page rendered from ``template`` with the layout's context (CSRF token, version, user)."""
    token, new = csrf_token(request)
    html = ENV.get_template(template).render(
        viewer=viewer_installed(services),
        csrf=token,
        version=__version__,
        user=request.access_key_id,
        path=request.path,
        **context,
    )
    headers = [("content-type", "text/html; charset=utf-8"), *_SECURITY_HEADERS]
    if new:
        headers.append(_csrf_cookie(token, request))
    return WireResponse(status, headers, html.encode("utf-8"))


def redirect(location: str, *extra: tuple[str, str]) -> WireResponse:
    """``303 See Other`` (the answer to a POST form: the browser GETs ``location``)."""
    return WireResponse(303, [("location", location), ("cache-control", "no-store"), *extra], b"")


def with_flash(location: str, message: str, kind: str = "ok") -> str:
    """``location`` with a message the next page shows (``?flash=…&flashkind=…``)."""
    sep = "&" if "?" in location else "?"
    return f"{location}{sep}flash={quote(message[:500], safe='')}&flashkind={kind}"


def static_file(directory: Path, relative: str, *, cache: str = "no-cache") -> WireResponse:
    """A file under ``directory`` with its content type.

    Raises:
        NotFoundError: no such file, or a path that leaves ``directory``.
    """
    from urllib.parse import unquote

    name = unquote(relative)
    if not name or "\x00" in name or any(p in ("..", "") for p in name.split("/")):
        raise NotFoundError(f"No file {relative[:200]}")
    path = directory / name
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(directory.resolve()) or not resolved.is_file():
            raise NotFoundError(f"No file {relative[:200]}")
    except OSError:
        raise NotFoundError(f"No file {relative[:200]}") from None
    return file_response(resolved, cache=cache)


_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
}


def content_type(path: Path) -> str:
    return _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def file_response(path: Path, *, cache: str = "no-cache") -> WireResponse:
    """A whole file (sent with sendfile where the server can)."""
    from openhi.core.file_body import FileBody

    fd = os.open(path, os.O_RDONLY)
    try:
        body = FileBody(fd, os.fstat(fd).st_size)
    except BaseException:
        os.close(fd)
        raise
    headers = [
        ("content-type", content_type(path)),
        ("cache-control", cache),
        ("x-content-type-options", "nosniff"),
    ]
    return WireResponse(200, headers, body)
