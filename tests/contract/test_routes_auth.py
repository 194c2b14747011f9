"""Contract tests: every registered route (read from the route table, the DICOMweb routes included) refuses
unsigned, badly signed and tampered requests on a server with credentials, gives no data and changes
nothing; only the probes are open."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pydicom
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import make_ct_series
from openhi.asgi import build_routes
from openhi.auth.routes import Route

KEY, SECRET = "AKIDROUTES", "routes-secret-value"
BUCKET = "routes-bucket"
STAGED = "staged/file.bin"
STAGED_BYTES = b"secret staged bytes"
pytestmark = pytest.mark.openhi_env(OPENHI_ACCESS_KEY_ID=KEY, OPENHI_SECRET_ACCESS_KEY=SECRET)


@dataclass
class World:
    """What exists on the server: one of each resource a route can name."""

    server: Any
    client: Any
    datastore_id: str
    image_set_id: str
    job_id: str
    arn: str
    uids: dict[str, str]  # StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID of the imported instance


def signed_request(
    method: str,
    url: str,
    body: bytes,
    *,
    key: str = KEY,
    secret: str = SECRET,
    content_sha: str | None = None,
) -> dict[str, str]:
    """The headers botocore's SigV4 signer adds for this request."""
    headers = {"Content-Type": "application/json"}
    if content_sha is not None:
        headers["X-Amz-Content-SHA256"] = content_sha
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), "medical-imaging", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def concrete(route: Route, world: World) -> tuple[str, str, bytes]:
    """(path, query, body) of a plausible request for ``route`` naming existing resources."""
    values = {
        "datastoreId": world.datastore_id,
        "imageSetId": world.image_set_id,
        "sourceImageSetId": world.image_set_id,
        "jobId": world.job_id,
        "resourceArn": quote(world.arn, safe=""),
        "bucket": BUCKET,
        "key": STAGED,
        "frameList": "1",
        "bulkdataPath": "7FE00010",  # names no bulk data of the instance: a 404 once authenticated
        "path": "index.html",  # a console static file or a viewer asset
        **world.uids,
    }

    def fill(m: re.Match[str]) -> str:
        name = m.group(1).rstrip("+")
        assert name in values, f"no value for label {name} of {route.pattern}: add one to this test"
        return values[name]

    path = re.sub(r"\{([^{}]+)\}", fill, route.pattern)
    query = "from=1&to=1" if route.name == "diff" else "tagKeys=k" if route.name == "UntagResource" else ""
    body = b"{}" if route.method in ("POST", "PUT") else b""
    if route.name == "GetImageFrame":
        body = json.dumps({"imageFrameId": "0" * 32}).encode()
    elif route.name == "TagResource":
        body = b'{"tags": {"k": "v"}}'
    elif route.name == "upload":
        body = b"replacement bytes"
    return path, query, body


def state(world: World) -> Any:
    """Everything a request could have changed, read through the API with the right key."""
    c = world.client
    ds = world.datastore_id
    read = httpx.get(
        f"{world.server.endpoint}/openhi/upload/{BUCKET}/{STAGED}",
        headers=signed_request("GET", f"{world.server.endpoint}/openhi/upload/{BUCKET}/{STAGED}", b""),
    )
    return {
        "datastores": sorted(
            (d["datastoreId"], d["datastoreStatus"]) for d in c.list_datastores()["datastoreSummaries"]
        ),
        "versions": [
            (v["versionId"], v["imageSetState"])
            for v in c.list_image_set_versions(datastoreId=ds, imageSetId=world.image_set_id)[
                "imageSetPropertiesList"
            ]
        ],
        "image_sets": sorted(
            s["imageSetId"] for s in c.search_image_sets(datastoreId=ds)["imageSetsMetadataSummaries"]
        ),
        "jobs": len(c.list_dicom_import_jobs(datastoreId=ds)["jobSummaries"]),
        "tags": c.list_tags_for_resource(resourceArn=world.arn)["tags"],
        "staged": (read.status_code, read.content),
    }


@pytest.fixture()
def world(openhi_fresh: Any) -> World:
    client = openhi_fresh.client(aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    ds = active_datastore(client, "routes")
    instance = make_ct_series(1, rows=16, cols=16)[0]
    parsed = pydicom.dcmread(io.BytesIO(instance), stop_before_pixels=True)
    uids = {k: str(parsed[k].value) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    result = run_import(client, openhi_fresh, ds, {"a.dcm": instance})
    assert result["job"]["jobStatus"] == "COMPLETED", result
    image_set = result["success"][0]["importResponse"]["imageSetId"]
    arn = client.get_datastore(datastoreId=ds)["datastoreProperties"]["datastoreArn"]
    url = f"{openhi_fresh.endpoint}/openhi/upload/{BUCKET}/{STAGED}"
    digest = hashlib.sha256(STAGED_BYTES).hexdigest()
    put = httpx.put(
        url, content=STAGED_BYTES, headers=signed_request("PUT", url, STAGED_BYTES, content_sha=digest)
    )
    assert put.status_code == 200, put.text
    return World(openhi_fresh, client, ds, image_set, result["job"]["jobId"], arn, uids)


def variants(method: str, url: str, body: bytes, upload: bool) -> dict[str, tuple[dict[str, str], bytes]]:
    """Each way a request can fail authentication: headers to send and the body sent."""
    sha = hashlib.sha256(body).hexdigest() if upload else None
    tampered = body + b" " if body else b"{}"
    return {
        "unsigned": ({"Content-Type": "application/json"}, body),
        "wrong secret": (signed_request(method, url, body, secret="not-the-secret", content_sha=sha), body),
        "unknown key": (signed_request(method, url, body, key="AKIDNOBODY", content_sha=sha), body),
        "tampered body": (signed_request(method, url, body, content_sha=sha), tampered),
        "unsigned payload": (signed_request(method, url, body, content_sha="UNSIGNED-PAYLOAD"), tampered),
    }


def test_every_route_refuses_bad_authentication_and_changes_nothing(world: World) -> None:
    routes = list(build_routes())
    assert len(routes) >= 24  # the probes, 18 API operations, diff and the upload routes (+ DICOMweb)
    before = state(world)
    problems: list[str] = []
    checked = 0
    for route in routes:
        if route.open:
            continue
        path, query, body = concrete(route, world)
        url = f"{world.server.endpoint}{path}" + (f"?{query}" if query else "")
        for name, (headers, sent) in variants(route.method, url, body, route.name == "upload").items():
            resp = httpx.request(route.method, url, headers=headers, content=sent, timeout=30)
            checked += 1
            error_type = resp.headers.get("x-amzn-errortype")
            if route.front == "console" and name == "unsigned" and _browser_refusal(route, resp):
                continue  # a browser without credentials is sent to the sign-in page, never given data
            if resp.status_code not in (401, 403) or error_type != "AccessDeniedException":
                problems.append(
                    f"{route.method} {route.pattern} [{name}]: {resp.status_code} {resp.text[:200]}"
                )
                continue
            doc = resp.json()
            if set(doc) - {"message", "code"} or not resp.headers.get("x-amzn-requestid"):
                problems.append(f"{route.method} {route.pattern} [{name}]: answered {doc}")
    assert problems == [], "\n".join(problems)
    assert checked == 5 * (len(routes) - 2)
    assert state(world) == before


#: console paths a browser reaches before signing in: the sign-in page (its form refuses a POST without the
#: CSRF cookie) and the console's own CSS, script and icon (no data)
SIGN_IN_PATHS = frozenset({"/login", "/console/static/{path+}"})


def _browser_refusal(route: Route, resp: httpx.Response) -> bool:
    """A console route's answer to a request without credentials: a redirect to the sign-in page, or, on
    the sign-in paths, the page itself, a file of the console or a refused form — never data."""
    if resp.status_code == 302:
        return resp.headers.get("location", "").startswith("/login")
    return route.pattern in SIGN_IN_PATHS and resp.status_code in (200, 403, 404)


def test_every_readonly_route_answers_when_signed_right(world: World) -> None:
    """The control for the test above: the same requests, signed with the right key, reach their handler."""
    for route in build_routes():
        action = route.action or ""
        if route.open or not re.match(r"^[^:]+:(Get|List|Search)", action):
            continue
        if route.front == "console" and route.method != "GET":
            continue  # the sign-in and sign-out forms: they need the browser's CSRF cookie
        path, query, body = concrete(route, world)
        url = f"{world.server.endpoint}{path}" + (f"?{query}" if query else "")
        resp = httpx.request(route.method, url, headers=signed_request(route.method, url, body), content=body)
        assert resp.status_code not in (401, 403) and resp.status_code < 500, (route.pattern, resp.text)


def test_the_version_diff_needs_a_signature(world: World) -> None:
    url = (
        f"{world.server.endpoint}/openhi/datastore/{world.datastore_id}/imageSet/{world.image_set_id}/diff"
        "?from=1&to=1"
    )
    for headers in ({}, signed_request("GET", url, b"", secret="wrong")):
        resp = httpx.get(url, headers=headers)
        assert resp.status_code == 403 and "changes" not in resp.text
        assert resp.headers["x-amzn-errortype"] == "AccessDeniedException"
    good = httpx.get(url, headers=signed_request("GET", url, b""))
    assert good.status_code == 200 and good.json()["changes"] == []


def test_only_the_probes_are_open_and_unknown_paths_need_a_signature(world: World) -> None:
    endpoint = world.server.endpoint
    assert httpx.get(f"{endpoint}/healthz").status_code == 200
    ready = httpx.get(f"{endpoint}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert all(v.startswith("available") for v in ready.json()["codecs"].values()), ready.json()
    unknown = httpx.get(f"{endpoint}/no/such/route")
    assert unknown.status_code == 403 and unknown.headers["x-amzn-errortype"] == "AccessDeniedException"
    url = f"{endpoint}/no/such/route"
    signed = httpx.get(url, headers=signed_request("GET", url, b""))
    assert signed.status_code == 404 and signed.headers["x-amzn-errortype"] == "UnknownOperationException"
