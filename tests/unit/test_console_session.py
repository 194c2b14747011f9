"""Session cookies of the console: signed, bound to the key's secret, expiring; CSRF double submit."""

from __future__ import annotations

from typing import Any

import pytest

from openhi.auth.routes import Request
from openhi.console import session
from openhi.console.render import CSRF_COOKIE, check_csrf, csrf_token
from openhi.core.errors import AccessDeniedError

SECRETS = session.SessionSecrets(b"k" * 32, {"alice": "alice-secret", "bob": "bob-secret"})


def cookie(value: str) -> str:
    return f"other=1; {session.COOKIE}={value}; x=y"


def test_a_cookie_it_issued_names_its_key() -> None:
    value = session.issue(SECRETS, "alice", now=1000.0)
    assert session.session_principal(cookie(value), SECRETS, now=1001.0) == "alice"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.replace("alice", "bob"),  # another key, same MAC
        lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"),  # a MAC bit
        lambda v: v.replace(".", "", 1),  # the format
        lambda v: "v2" + v[2:],  # the version
        lambda v: "",
        lambda v: v + "x" * 600,
    ],
)
def test_a_forged_cookie_names_nobody(mutate: Any) -> None:
    value = session.issue(SECRETS, "alice", now=1000.0)
    assert session.session_principal(cookie(mutate(value)), SECRETS, now=1001.0) is None


def test_expiry_rotation_and_local_mode_end_sessions() -> None:
    value = session.issue(SECRETS, "alice", now=1000.0)
    later = 1000.0 + session.LIFETIME_SECONDS + 1
    assert session.session_principal(cookie(value), SECRETS, now=later) is None
    rotated = session.SessionSecrets(SECRETS.key, {"alice": "new-secret"})
    assert session.session_principal(cookie(value), rotated, now=1001.0) is None
    other_store = session.SessionSecrets(b"z" * 32, dict(SECRETS.credentials))
    assert session.session_principal(cookie(value), other_store, now=1001.0) is None
    local = session.SessionSecrets(SECRETS.key, {})
    assert session.session_principal(cookie(value), local, now=1001.0) is None
    assert session.session_principal(None, SECRETS) is None


def test_login_checks_the_secret() -> None:
    assert session.check_login(SECRETS, "alice", "alice-secret")
    assert not session.check_login(SECRETS, "alice", "bob-secret")
    assert not session.check_login(SECRETS, "carol", "alice-secret")


def test_the_cookie_is_http_only_and_same_site_strict() -> None:
    name, value = session.set_cookie_header("v", secure=True)
    assert name == "set-cookie"
    assert {"HttpOnly", "SameSite=Strict", "Secure", "Path=/"} <= {p.strip() for p in value.split(";")}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "/"),
        ("/console/status", "/console/status"),
        ("//evil.example/", "/"),
        ("https://x/", "/"),
        ("/\\x", "/"),
    ],
)
def test_login_goes_on_to_local_paths_only(given: str | None, expected: str) -> None:
    assert session.safe_next(given) == expected


class _Route:
    def __init__(self, name: str, front: str) -> None:
        self.name, self.front = name, front


def _request(cookie_header: str | None = None) -> Request:
    headers = [(b"cookie", cookie_header.encode())] if cookie_header else []
    return Request("GET", "/console/status", b"a=1", headers, {})


def test_browser_session_for_each_kind_of_route() -> None:
    value = session.issue(SECRETS, "bob")
    assert (
        session.browser_session(_Route("console-status", "console"), _request(cookie(value)), SECRETS)
        == "bob"
    )
    public = _Route("console-login-page", "console")
    assert session.browser_session(public, _request(), SECRETS) == session.PUBLIC_PRINCIPAL
    assert session.browser_session(_Route("qido", "dicomweb"), _request(), SECRETS) is None
    with pytest.raises(session.LoginRequired) as raised:
        session.browser_session(_Route("console-status", "console"), _request(), SECRETS)
    assert raised.value.status == 302
    assert dict(raised.value.headers)["location"] == "/login?next=%2Fconsole%2Fstatus%3Fa%3D1"


def test_csrf_double_submit() -> None:
    token, new = csrf_token(_request())
    assert new and len(token) == 43
    with_cookie = Request("POST", "/x", b"", [(b"cookie", f"{CSRF_COOKIE}={token}".encode())], {})
    assert csrf_token(with_cookie) == (token, False)
    check_csrf(with_cookie, {"csrf": token})
    other = token[:-1] + (
        "B" if token.endswith("A") else "A"
    )  # one character off (a random token may end in A)
    for form in ({}, {"csrf": ""}, {"csrf": other}):
        with pytest.raises(AccessDeniedError):
            check_csrf(with_cookie, form)
    with pytest.raises(AccessDeniedError):
        check_csrf(_request(), {"csrf": token})
