"""Contract tests: ``openhi serve --policy-file`` — for every operation of the model, keys limited by
IAM-style policies are allowed or refused (AccessDeniedException, nothing changed) as their policy says."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from contract.helpers import active_datastore, wait_for
from contract.imaging import ROLE, metadata, run_import, wait_active
from dicom_factory import make_ct_series
from openhi.awsapi.service import load_service_model

ADMIN, ADMIN_SECRET = "AKIDPOLICYADMIN", "admin-secret"
pytestmark = pytest.mark.openhi_env(OPENHI_ACCESS_KEY_ID=ADMIN, OPENHI_SECRET_ACCESS_KEY=ADMIN_SECRET)
READ, ONE_DS, TAGGED, NO_DELETE = "AKIDREADONLY", "AKIDONEDATASTORE", "AKIDTAGGED", "AKIDNODELETE"
TEAM = {"team": "radiology"}


@dataclass
class Place:
    """A datastore with one imported image set, a job and a frame: where a request is sent."""

    ds: str
    arn: str
    image_set: str
    job: str
    frame: str


@dataclass
class World:
    server: Any
    admin: Any
    a: Place  # the datastore the limited keys may use (tagged team=radiology)
    b: Place  # another datastore (untagged)


def _place(client: Any, server: Any, name: str, seed: int) -> Place:
    ds = active_datastore(client, name)
    result = run_import(client, server, ds, {"a.dcm": make_ct_series(1, rows=16, cols=16, seed=seed)[0]})
    assert result["job"]["jobStatus"] == "COMPLETED", result
    image_set = result["success"][0]["importResponse"]["imageSetId"]
    doc = metadata(client, ds, image_set)
    series = next(iter(doc["Study"]["Series"].values()))
    frame = next(iter(series["Instances"].values()))["ImageFrames"][0]["ID"]
    arn = client.get_datastore(datastoreId=ds)["datastoreProperties"]["datastoreArn"]
    return Place(ds, arn, image_set, result["job"]["jobId"], frame)


def _policies(a: Place) -> dict[str, Any]:
    def key(name: str, *statements: dict[str, Any]) -> dict[str, Any]:
        return {
            "accessKeyId": name,
            "secretAccessKey": f"{name}-secret",
            "policy": {"Version": "2012-10-17", "Statement": list(statements)},
        }

    actions = ["medical-imaging:Get*", "medical-imaging:List*", "medical-imaging:Search*"]
    return {
        "principals": [
            key(READ, {"Effect": "Allow", "Action": actions, "Resource": "*"}),
            key(
                ONE_DS, {"Effect": "Allow", "Action": "medical-imaging:*", "Resource": [a.arn, f"{a.arn}/*"]}
            ),
            key(
                TAGGED,
                {
                    "Effect": "Allow",
                    "Action": "medical-imaging:*",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:ResourceTag/team": "radiology"}},
                },
            ),
            key(
                NO_DELETE,
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "Action": "medical-imaging:Delete*", "Resource": "*"},
            ),
        ]
    }


@pytest.fixture()
def world(openhi_fresh: Any, tmp_path: Path) -> World:
    admin = openhi_fresh.client(aws_access_key_id=ADMIN, aws_secret_access_key=ADMIN_SECRET)
    a = _place(admin, openhi_fresh, "policy-a", 1)
    b = _place(admin, openhi_fresh, "policy-b", 2)
    admin.tag_resource(resourceArn=a.arn, tags=TEAM)
    admin.tag_resource(resourceArn=f"{a.arn}/imageset/{a.image_set}", tags=TEAM)
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(_policies(a)))
    openhi_fresh.env["OPENHI_POLICY_FILE"] = str(path)
    openhi_fresh.restart()
    wait_for(lambda: admin.get_datastore(datastoreId=a.ds)["datastoreProperties"]["datastoreStatus"], bool)
    return World(openhi_fresh, admin, a, b)


def _victim(world: World, place: Place) -> str:
    """A fresh image set in ``place`` (a copy, tagged like its datastore) for an operation that changes it."""
    copied = world.admin.copy_image_set(
        datastoreId=place.ds,
        sourceImageSetId=place.image_set,
        copyImageSetInformation={"sourceImageSet": {"latestVersionId": _latest(world.admin, place)}},
    )
    new_id = copied["destinationImageSetProperties"]["imageSetId"]
    wait_active(world.admin, place.ds, new_id)
    if place is world.a:
        world.admin.tag_resource(resourceArn=f"{place.arn}/imageset/{new_id}", tags=TEAM)
    return new_id


def _latest(client: Any, place: Place, image_set: str | None = None) -> str:
    got = client.get_image_set(datastoreId=place.ds, imageSetId=image_set or place.image_set)
    return str(got["versionId"])


Call = Callable[[Any, World, Place], Any]


def _update(c: Any, w: World, p: Place) -> Any:
    victim = _victim(w, p)
    attributes = json.dumps({"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": "CHANGED"}}})
    return lambda: c.update_image_set_metadata(
        datastoreId=p.ds,
        imageSetId=victim,
        latestVersionId=_latest(w.admin, p, victim),
        updateImageSetMetadataUpdates={
            "DICOMUpdates": {"updatableAttributes": base64.b64encode(attributes.encode())}
        },
    )


def _delete_image_set(c: Any, w: World, p: Place) -> Any:
    victim = _victim(w, p)
    return lambda: c.delete_image_set(datastoreId=p.ds, imageSetId=victim)


def _copy(c: Any, w: World, p: Place) -> Any:
    victim = _victim(w, p)
    info = {"sourceImageSet": {"latestVersionId": _latest(w.admin, p, victim)}}
    return lambda: c.copy_image_set(datastoreId=p.ds, sourceImageSetId=victim, copyImageSetInformation=info)


#: one request per operation of the model: (client, world, place) -> a function that sends it
OPERATIONS: dict[str, Call] = {
    "CopyImageSet": _copy,
    "CreateDatastore": lambda c, w, p: lambda: c.create_datastore(datastoreName="made-by-policy-test"),
    "DeleteDatastore": lambda c, w, p: lambda: c.delete_datastore(datastoreId=p.ds),  # not empty: 409
    "DeleteImageSet": _delete_image_set,
    "GetDICOMImportJob": lambda c, w, p: lambda: c.get_dicom_import_job(datastoreId=p.ds, jobId=p.job),
    "GetDatastore": lambda c, w, p: lambda: c.get_datastore(datastoreId=p.ds),
    "GetImageFrame": lambda c, w, p: (
        lambda: c.get_image_frame(
            datastoreId=p.ds, imageSetId=p.image_set, imageFrameInformation={"imageFrameId": p.frame}
        )
    ),
    "GetImageSet": lambda c, w, p: lambda: c.get_image_set(datastoreId=p.ds, imageSetId=p.image_set),
    "GetImageSetMetadata": lambda c, w, p: (
        lambda: c.get_image_set_metadata(datastoreId=p.ds, imageSetId=p.image_set)
    ),
    "ListDICOMImportJobs": lambda c, w, p: lambda: c.list_dicom_import_jobs(datastoreId=p.ds),
    "ListDatastores": lambda c, w, p: lambda: c.list_datastores(),
    "ListImageSetVersions": lambda c, w, p: (
        lambda: c.list_image_set_versions(datastoreId=p.ds, imageSetId=p.image_set)
    ),
    "ListTagsForResource": lambda c, w, p: lambda: c.list_tags_for_resource(resourceArn=p.arn),
    "SearchImageSets": lambda c, w, p: lambda: c.search_image_sets(datastoreId=p.ds),
    "StartDICOMImportJob": lambda c, w, p: (
        lambda: c.start_dicom_import_job(
            datastoreId=p.ds,
            dataAccessRoleArn=ROLE,
            inputS3Uri="s3://input-bucket/policy-test-empty/",
            outputS3Uri="s3://output-bucket/policy-test/",
        )
    ),
    "TagResource": lambda c, w, p: lambda: c.tag_resource(resourceArn=p.arn, tags={"note": "x"}),
    "UntagResource": lambda c, w, p: lambda: c.untag_resource(resourceArn=p.arn, tagKeys=["note"]),
    "UpdateImageSetMetadata": _update,
}
WITHOUT_RESOURCE = {"CreateDatastore", "ListDatastores"}


def expected_allowed(key: str, op: str, in_a: bool) -> bool:
    if key == READ:
        return op.startswith(("Get", "List", "Search"))
    if key in (ONE_DS, TAGGED):  # datastore a and its image sets only; nothing without a resource
        return in_a and op not in WITHOUT_RESOURCE
    assert key == NO_DELETE
    return not op.startswith("Delete")


def snapshot(world: World) -> Any:
    """What any operation could change, read with the admin key."""
    c = world.admin
    out: dict[str, Any] = {
        "datastores": sorted(
            (d["datastoreId"], d["datastoreStatus"]) for d in c.list_datastores()["datastoreSummaries"]
        )
    }
    for place in (world.a, world.b):
        sets = c.search_image_sets(datastoreId=place.ds)["imageSetsMetadataSummaries"]
        out[place.ds] = {
            "sets": sorted((s["imageSetId"], s["version"]) for s in sets),
            "jobs": len(c.list_dicom_import_jobs(datastoreId=place.ds)["jobSummaries"]),
            "tags": c.list_tags_for_resource(resourceArn=place.arn)["tags"],
            "versions": {
                s["imageSetId"]: [
                    (v["versionId"], v["imageSetState"])
                    for v in c.list_image_set_versions(datastoreId=place.ds, imageSetId=s["imageSetId"])[
                        "imageSetPropertiesList"
                    ]
                ]
                for s in sets
            },
        }
    return out


def settle(world: World) -> None:
    """Wait until nothing is in transition: image sets LOCKED by copies, updates and deletes, datastores
    CREATING or DELETING (they finish in the background)."""
    transient = ("'LOCKED'", "'CREATING'", "'DELETING'")
    wait_for(
        lambda: snapshot(world), lambda s: not any(t in repr(s) for t in transient), timeout=60, step=0.1
    )


def test_the_cases_cover_every_operation_of_the_model() -> None:
    assert set(OPERATIONS) == set(load_service_model().operation_names)


def test_every_operation_is_allowed_or_denied_as_each_policy_says(world: World) -> None:
    problems: list[str] = []
    decided = 0
    for key in (READ, ONE_DS, TAGGED, NO_DELETE):
        client = world.server.client(aws_access_key_id=key, aws_secret_access_key=f"{key}-secret")
        for op, make in OPERATIONS.items():
            places = [world.a] if op in WITHOUT_RESOURCE else [world.a, world.b]
            for place in places:
                send = make(client, world, place)
                allowed = expected_allowed(key, op, place is world.a)
                before = None if allowed else snapshot(world)
                try:
                    send()
                    code = "OK"
                except ClientError as exc:
                    code = exc.response["Error"]["Code"]
                    status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                    if code == "AccessDeniedException" and status != 403:
                        problems.append(f"{key} {op}: AccessDeniedException with status {status}")
                decided += 1
                if code == "OK" and not op.startswith(("Get", "List", "Search")):
                    settle(world)  # an asynchronous change must not land inside a later denial's window
                where = "a" if place is world.a else "b"
                if allowed and code == "AccessDeniedException":
                    problems.append(f"{key} {op} on {where}: denied, expected allowed")
                elif not allowed:
                    if code != "AccessDeniedException":
                        problems.append(f"{key} {op} on {where}: {code}, expected AccessDeniedException")
                    elif snapshot(world) != before:
                        problems.append(f"{key} {op} on {where}: denied, but the state changed")
    assert problems == [], "\n".join(problems)
    assert decided == 4 * (2 * len(OPERATIONS) - len(WITHOUT_RESOURCE))


def _signed(method: str, url: str, body: bytes, key: str) -> httpx.Response:
    headers = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key, f"{key}-secret"), "medical-imaging", "us-east-1").add_auth(request)
    return httpx.request(method, url, content=body, headers=dict(request.headers.items()))


def test_openhi_routes_have_their_own_actions(world: World) -> None:
    """``medical-imaging:Get*`` does not cover openhi's own routes; ``*`` does."""
    endpoint = world.server.endpoint
    upload = f"{endpoint}/openhi/upload/policy-bucket/in/file.bin"
    diff = f"{endpoint}/openhi/datastore/{world.a.ds}/imageSet/{world.a.image_set}/diff?from=1&to=1"
    for key, allowed in ((READ, False), (NO_DELETE, True)):
        put = _signed("PUT", upload, b"data", key)
        assert (put.status_code == 200) is allowed, put.text
        got = _signed("GET", diff, b"", key)
        assert (got.status_code == 200) is allowed, got.text
        if not allowed:
            assert put.status_code == 403 and put.headers["x-amzn-errortype"] == "AccessDeniedException"
    removed = _signed("DELETE", f"{endpoint}/openhi/upload/policy-bucket/in/", b"", NO_DELETE)
    assert removed.status_code == 200 and removed.json() == {"deleted": 1}


def test_policy_keys_are_the_only_keys_besides_credentials(world: World) -> None:
    stranger = world.server.client(aws_access_key_id="AKIDSTRANGER", aws_secret_access_key="x")
    with pytest.raises(ClientError) as info:
        stranger.list_datastores()
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "unknown access key" in info.value.response["Error"]["Message"]
    wait_for(lambda: world.admin.list_datastores()["datastoreSummaries"], lambda s: len(s) >= 2)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("{not json", "not valid JSON"),
        (
            '{"principals": [{"accessKeyId": "A", "secretAccessKey": "s", "policy": {"Statement": []}}]}',
            "Statement",
        ),
        (
            '{"principals": [{"accessKeyId": "A", "secretAccessKey": "s", "policy": {"Statement": '
            '{"Effect": "Allow", "Action": "medical-imaging:GetImageSett", "Resource": "*"}}}]}',
            "unknown action",
        ),
    ],
)
def test_a_bad_policy_file_stops_the_start_with_one_line(tmp_path: Path, doc: str, fragment: str) -> None:
    path = tmp_path / "policies.json"
    path.write_text(doc)
    data = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openhi",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data),
            "--policy-file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("openhi: ") and fragment in lines[0], proc.stderr
    assert not data.exists()
