"""The login page outside local mode: an access key id and its secret set the session cookie."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openhi.auth.routes import Request
from openhi.awsapi.serializer import WireResponse
from openhi.console import session
from openhi.console.render import check_csrf, form_fields, page, query_fields, redirect, secure_request
from openhi.core.errors import OpenHIError

if TYPE_CHECKING:
    from openhi.services import Services


def login_page(services: Services, request: Request) -> WireResponse:
    """``GET /login``: the form (local mode needs none: straight to the console)."""
    secrets = session.configured()
    target = session.safe_next(query_fields(request).get("next"))
    if secrets is None or secrets.local_mode:
        return redirect(target)
    return page(services, request, "login.html", next=target, error=None)


def login(services: Services, request: Request) -> WireResponse:
    """``POST /login``: a valid key and secret set the signed session cookie and go on to ``next``."""
    form = form_fields(request)
    target = session.safe_next(form.get("next"))
    secrets = session.configured()
    if secrets is None or secrets.local_mode:
        return redirect(target)
    try:
        check_csrf(request, form)
    except OpenHIError as exc:
        return page(services, request, "login.html", status=403, next=target, error=exc.message)
    key_id = form.get("access_key_id", "").strip()
    if not session.check_login(secrets, key_id, form.get("secret_access_key", "")):
        return page(
            services,
            request,
            "login.html",
            status=401,
            next=target,
            error="Unknown access key or wrong secret.",
        )
    cookie = session.issue(secrets, key_id)
    return redirect(target, session.set_cookie_header(cookie, secure=secure_request(request)))


def logout(services: Services, request: Request) -> WireResponse:
    """``POST /logout``: the session cookie is cleared."""
    form = form_fields(request)
    check_csrf(request, form)
    return redirect(session.LOGIN_PATH, session.clear_cookie_header())
