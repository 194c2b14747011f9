"""Console pages through the app (ASGI calls, no network): CSRF, refusals shown as pages, validation
messages beside the editor, search criteria, static files, the viewer's config and deep link."""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest

from openhi.asgi import OpenHIApp, build_routes
from openhi.awsapi.sigv4 import SigV4Verifier
from openhi.console.search import Criteria, filters_of
from openhi.console.viewer_install import MARKER
from openhi.core.errors import ValidationError
from openhi.services import ServerConfig, Services, build_services


class Answer:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status, self.body = status, body
        self.headers = {k.decode().lower(): v.decode() for k, v in headers}
        self.text = body.decode("utf-8", "replace")


class Browser:
    """Calls the ASGI app directly and keeps cookies like a browser."""

    def __init__(self, app: OpenHIApp) -> None:
        self.app = app
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Answer:
        body = urlencode(form).encode() if form is not None else b""
        path, _, query = path.partition("?")
        headers = [(b"host", b"127.0.0.1")]
        if self.cookies:
            headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()))
        if form is not None:
            headers.append((b"content-type", b"application/x-www-form-urlencoded"))
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": headers,
        }
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        anyio.run(self.app, scope, receive, send)
        start = sent[0]
        data = b"".join(m.get("body", b"") for m in sent[1:] if m["type"] == "http.response.body")
        if not data and any(m["type"] == "http.response.zerocopysend" for m in sent):
            raise AssertionError("zero-copy send is not offered here")
        answer = Answer(start["status"], start["headers"], data)
        for key, value in start["headers"]:
            if key == b"set-cookie":
                name, _, rest = value.decode().partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> Answer:
        return self.request("POST", path, form)

    def csrf(self) -> str:
        if "openhi_csrf" not in self.cookies:
            self.get("/")
        return self.cookies["openhi_csrf"]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    svc = build_services(
        ServerConfig(data_dir=tmp_path_factory.mktemp("console-unit"), pixel_workers=0, import_threads=1)
    )
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture()
def browser(services: Services) -> Browser:
    routes = build_routes()
    return Browser(OpenHIApp(services, SigV4Verifier(None), routes=routes))


def store(services: Services, ds: str, files: list[bytes]) -> Any:
    """STOW the files (the one synchronous import path) from a scratch folder."""
    from openhi.core.stow import StowPart

    folder = Path(str(services.scratch_dir)) / "stow-parts"
    folder.mkdir(exist_ok=True)
    parts = []
    for data in files:
        path = folder / f"part-{time.monotonic_ns()}.dcm"
        path.write_bytes(data)
        parts.append(StowPart(path, len(data)))
    return services.stow.store(ds, parts)


def active_datastore(browser: Browser, name: str) -> str:
    answer = browser.post("/console/datastores", {"csrf": browser.csrf(), "name": name, "format": "HTJ2K"})
    assert answer.status == 303
    for _ in range(100):
        page = browser.get("/").text
        found = re.search(rf"/console/datastores/([0-9a-f]{{32}})/imagesets\">{name}<", page)
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"datastore {name} did not become ACTIVE")


def test_pages_are_html_with_a_strict_policy(browser: Browser) -> None:
    answer = browser.get("/")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert "<h1>Datastores</h1>" in answer.text


def test_a_form_without_its_csrf_token_is_refused(browser: Browser) -> None:
    browser.csrf()
    answer = browser.post("/console/datastores", {"name": "forged", "csrf": "x" * 43})
    assert answer.status == 403
    assert "CSRF" in answer.text
    assert "forged" not in browser.get("/").text


def test_deleting_a_datastore_that_holds_image_sets_shows_why(browser: Browser, services: Services) -> None:
    from dicom_factory import make_ct_series

    ds = active_datastore(browser, "full-one")
    assert store(services, ds, make_ct_series(2, rows=16, cols=16)).stored
    answer = browser.post(f"/console/datastores/{ds}/delete", {"csrf": browser.csrf()})
    assert answer.status == 303
    page = browser.get(answer.headers["location"])
    assert "was not deleted" in page.text
    assert 'class="flash error"' in page.text
    assert "ACTIVE" in page.text


def test_an_invalid_update_is_shown_beside_the_editor(browser: Browser, services: Services) -> None:
    from dicom_factory import make_ct_series

    ds = active_datastore(browser, "update-one")
    result = store(services, ds, make_ct_series(2, rows=16, cols=16, seed=3))
    set_id = result.stored[0].image_set_id
    url = f"/console/datastores/{ds}/imagesets/{set_id}"
    typed = '{"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDate": 12}}}'
    answer = browser.post(url + "/update", {"csrf": browser.csrf(), "latest": "1", "updatable": typed})
    assert answer.status == 400
    assert 'id="update-error"' in answer.text
    assert "StudyDate" in answer.text.split('id="update-error"')[1].split("</p>")[0]
    assert json.dumps(typed)[1:-1].replace('\\"', "&#34;") in answer.text  # what was typed, kept
    good = '{"SchemaVersion": "1.1", "Study": {"DICOM": {"StudyDescription": "Changed"}}}'
    answer = browser.post(url + "/update", {"csrf": browser.csrf(), "latest": "1", "updatable": good})
    assert answer.status == 303
    for _ in range(100):
        page = browser.get(url).text
        if 'id="set-state">ACTIVE' in page and 'id="latest-version">2<' in page:
            break
        time.sleep(0.05)
    assert "Study.DICOM.StudyDescription" in page
    assert "&#34;Changed&#34;" in page


def test_search_sends_two_criteria_to_the_index_and_checks_the_rest_on_rows() -> None:
    c = Criteria.from_query(
        {
            "patient_id": "P1",
            "accession": "A1",
            "study_uid": "1.2.3",
            "primary": "yes",
            "date_from": "2024-01-01",
        }
    )
    sent, rest = filters_of(c)
    assert [next(iter(s["values"][0])) for s in sent] == ["DICOMStudyInstanceUID", "DICOMPatientId"]
    assert [name for name, _ in rest] == ["accession", "dates", "primary"]
    with pytest.raises(ValidationError):
        filters_of(Criteria.from_query({"date_from": "yesterday"}))


def test_search_page_pages_and_filters(browser: Browser, services: Services) -> None:
    from dicom_factory import make_ct_series

    ds = active_datastore(browser, "search-one")
    for i in range(3):
        files = make_ct_series(1, rows=8, cols=8, seed=100 + i, patient_id=f"SP{i}", AccessionNumber=f"AC{i}")
        store(services, ds, files)
    page = browser.get(f"/console/datastores/{ds}/imagesets?patient_id=SP1").text
    assert page.count("<tr>") == 2 and "SP1" in page  # header and one row
    page = browser.get(f"/console/datastores/{ds}/imagesets?patient_id=SP1&accession=AC1&primary=yes").text
    assert page.count("<tr>") == 2
    page = browser.get(f"/console/datastores/{ds}/imagesets?patient_id=SP1&accession=AC2&primary=yes").text
    assert "No image sets match" in page
    page = browser.get(f"/console/datastores/{ds}/imagesets?date_from=nope").text
    assert "must be a date" in page


def test_static_files_have_their_types_and_stay_inside(browser: Browser) -> None:
    css = browser.get("/console/static/console.css")
    assert css.status == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
    js = browser.get("/console/static/console.js")
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    for path in (
        "/console/static/%2e%2e/render.py",
        "/console/static/..%2Frender.py",
        "/console/static/nope.css",
    ):
        assert browser.get(path).status == 404, path


def test_status_page_shows_no_secrets(browser: Browser) -> None:
    page = browser.get("/console/status").text
    assert "sqlite:///" in page and "file://" in page
    assert "1.2.840.10008.1.2.4.201" in page or "1.2.840.10008.1.2.4.90" in page
    assert "pagination_secret" not in page and "console_session_secret" not in page


def test_without_the_viewer_the_console_says_how_to_install_it(browser: Browser) -> None:
    answer = browser.get("/viewer?StudyInstanceUIDs=1.2.3&datastore=x")
    assert answer.status == 404
    assert "openhi viewer install" in answer.text
    assert browser.get("/ohif/").status == 404


def test_viewer_config_and_deep_link(browser: Browser, services: Services) -> None:
    ds = active_datastore(browser, "viewer-one")
    root = Path(str(services.scratch_dir)) / "viewer"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text("<html>ohif</html>")
    (root / "app.bundle.0123456789abcdef.js").write_text("x")
    (root / MARKER).write_text("{}")
    try:
        config = browser.get("/ohif/app-config.js")
        assert config.headers["content-type"] == "text/javascript; charset=utf-8"
        assert f'"sourceName": "{ds}"' in config.text
        assert "window.location.origin + '/datastore/'" in config.text
        assert '"routerBasename": "/ohif"' in config.text
        link = browser.get(f"/viewer?StudyInstanceUIDs=1.2.3&datastore={ds}")
        assert link.status == 302
        assert link.headers["location"] == f"/ohif/viewer/{ds}?StudyInstanceUIDs=1.2.3"
        assert browser.get("/viewer?StudyInstanceUIDs=1.2.3&datastore=" + "0" * 32).status == 404
        spa = browser.get(f"/ohif/viewer/{ds}")  # the viewer's own routes answer its index.html
        assert spa.text == "<html>ohif</html>"
        bundle = browser.get("/ohif/app.bundle.0123456789abcdef.js")
        assert "immutable" in bundle.headers["cache-control"]
    finally:
        for f in root.iterdir():
            f.unlink()
        root.rmdir()


def test_job_manifests_render(browser: Browser, services: Services) -> None:
    ds = active_datastore(browser, "import-one")
    from dicom_factory import make_ct_series

    bucket = Path(str(services.scratch_dir)) / "buckets" / "unit-bucket" / "in"
    bucket.mkdir(parents=True)
    for i, data in enumerate(make_ct_series(2, rows=8, cols=8, seed=77)):
        (bucket / f"{i}.dcm").write_bytes(data)
    (bucket / "bad.dcm").write_bytes(gzip.compress(b"nope"))
    form = {"csrf": browser.csrf(), "input": "s3://unit-bucket/in/", "output": "s3://unit-bucket/out/"}
    answer = browser.post(f"/console/datastores/{ds}/imports", form)
    assert answer.status == 303
    for _ in range(200):
        page = browser.get(answer.headers["location"]).text
        if 'id="job-status">COMPLETED' in page:
            break
        time.sleep(0.05)
    assert "bad.dcm" in page
    assert "Failures <small>(1)</small>" in page
    assert "Imported files <small>(2)</small>" in page
