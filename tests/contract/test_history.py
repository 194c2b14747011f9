"""Contract tests: the version history after a long mixed sequence of writes, old versions, and the diff."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from contract.imaging import run_import, wait_active
from contract.test_updates import Lab, instance_path, series_of
from dicom_factory import make_ct_series, uid
from openhi.testing import RunningServer

SERIES_MISMATCH = "INVALID_REQUEST:  Series of SourceImageSet and DestinationImageSet don't match."


class History:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        study = uid("hist-study", 1)
        self.p = lab.import_series(
            2, seed=41, patient="HIST", study_uid=study, series_uid=uid("hist-series", 1)
        )
        self.x = lab.import_series(
            1, seed=42, patient="HIST", study_uid=study, series_uid=uid("hist-series", 2)
        )
        self.blobs: dict[str, bytes] = {"1": lab.raw_metadata(self.p, "1")}
        third = make_ct_series(3, rows=16, cols=16, seed=41, patient_id="HIST", study_uid=study,
                               series_uid=uid("hist-series", 1))[2]  # fmt: skip
        run_import(lab.client, lab.server, lab.ds, {"third.dcm": third})  # v2 IMPORTED
        self.snap("2")
        lab.copy(self.x, self.p)  # v3 COPY_FAILED
        self.snap("3")
        lab.update(self.p, instance_path(lab.doc(self.p), ImageComments="v4"))  # v4 UPDATED
        self.snap("4")
        lab.copy(self.x, self.p, force=True)  # v5 COPIED (forced)
        self.snap("5")
        lab.client.update_image_set_metadata(
            datastoreId=lab.ds, imageSetId=self.p, latestVersionId="5",
            updateImageSetMetadataUpdates={"revertToVersionId": "2"},
        )  # fmt: skip  # v6 revert
        self.wait()
        self.snap("6")
        lab.update(self.p, instance_path(lab.doc(self.p), ImageType=["DERIVED", "SECONDARY"]), force=True)
        self.snap("7")

    def wait(self) -> None:
        wait_active(self.lab.client, self.lab.ds, self.p)

    def snap(self, version: str) -> None:
        assert self.lab.latest(self.p) == version
        self.blobs[version] = self.lab.raw_metadata(self.p, version)


@pytest.fixture(scope="module")
def history(openhi_server: RunningServer) -> History:
    return History(Lab(openhi_server, "history"))


EXPECTED = [
    ("7", "ACTIVE", "UPDATED", None, True),
    ("6", "ACTIVE", "UPDATED", None, False),
    ("5", "ACTIVE", "COPIED", None, True),
    ("4", "ACTIVE", "UPDATED", None, False),
    ("3", "ACTIVE", "COPY_FAILED", SERIES_MISMATCH, False),
    ("2", "ACTIVE", "IMPORTED", None, False),
    ("1", "ACTIVE", "CREATED", None, False),
]


def _row(v: dict[str, Any]) -> tuple[Any, ...]:
    forced = v.get("overrides", {}).get("forced", False)
    return (v["versionId"], v["imageSetState"], v["ImageSetWorkflowStatus"], v.get("message"), forced)


def test_history_table(history: History) -> None:
    lab = history.lab
    versions = lab.versions(history.p)
    assert [_row(v) for v in versions] == EXPECTED
    assert len({v["createdAt"] for v in versions}) == 1
    assert all(v["isPrimary"] is True for v in versions)
    paged = lab.client.list_image_set_versions(datastoreId=lab.ds, imageSetId=history.p, maxResults=3)
    assert [v["versionId"] for v in paged["imageSetPropertiesList"]] == [
        "7",
        "6",
        "5",
    ] and "nextToken" in paged
    for version, state, status, message, forced in EXPECTED:
        props = lab.get(history.p, version)
        assert (props["versionId"], props["imageSetState"], props["imageSetWorkflowStatus"]) == (
            version,
            state,
            status,
        )
        assert props.get("message") == message and props.get("overrides", {}).get("forced", False) == forced
    # the copy source never got a version
    assert [v["versionId"] for v in lab.versions(history.x)] == ["1"]


def test_old_versions_are_unchanged_byte_for_byte(history: History) -> None:
    for version, blob in history.blobs.items():
        assert history.lab.raw_metadata(history.p, version) == blob, version
    assert history.blobs["3"] == history.blobs["2"]  # the failed copy kept the content
    assert history.blobs["6"] == history.blobs["2"]  # the revert


def _diff_url(lab: Lab, set_id: str, query: str) -> str:
    return f"{lab.server.endpoint}/openhi/datastore/{lab.ds}/imageSet/{set_id}/diff?{query}"


def _get(url: str) -> tuple[int, dict[str, Any]]:
    """A SigV4-signed GET: the /openhi routes authenticate like the API (any signature in local mode)."""
    signed = AWSRequest(method="GET", url=url, data=b"")
    SigV4Auth(Credentials("local", "local"), "medical-imaging", "us-east-1").add_auth(signed)
    request = urllib.request.Request(url, headers=dict(signed.headers.items()))
    try:
        with urllib.request.urlopen(request) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_diff_route(history: History) -> None:
    lab = history.lab
    status, body = _get(_diff_url(lab, history.p, "from=1&to=2"))
    assert status == 200 and (body["from"], body["to"], body["imageSetId"]) == ("1", "2", history.p)
    added = [c for c in body["changes"] if c["change"] == "added" and c["level"] == "Instance"]
    assert len(added) == 1 and ".Instances." in added[0]["path"]
    status, body = _get(_diff_url(lab, history.p, "from=3&to=4"))
    series_uid = series_of(lab.doc(history.p, "4"))[0]
    assert status == 200
    comments = [c for c in body["changes"] if c["path"].endswith(".DICOM.ImageComments")]
    assert (
        len(comments) == 1
        and comments[0]["to"] == "v4"
        and comments[0]["path"].startswith(f"Study.Series.{series_uid}")
    )
    assert _get(_diff_url(lab, history.p, "from=2&to=6"))[1]["changes"] == []
    assert _get(_diff_url(lab, history.p, "from=1&to=99"))[0] == 404
    assert _get(_diff_url(lab, "0" * 32, "from=1&to=2"))[0] == 404
    status, body = _get(_diff_url(lab, history.p, "from=x&to=2"))
    assert status == 400 and "from" in body["message"]


def test_diff_cli(history: History) -> None:
    lab = history.lab
    args = [sys.executable, "-m", "openhi", "diff", "--endpoint", lab.server.endpoint, "--datastore", lab.ds,
            "--image-set", history.p, "--from", "3", "--to", "4"]  # fmt: skip
    out = subprocess.run([*args, "--json"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert any(c["path"].endswith("ImageComments") for c in json.loads(out)["changes"])
    text = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    assert "ImageComments" in text and "Instance" in text
    same = [*args[:-4], "--from", "2", "--to", "6"]
    assert (
        "no differences"
        in subprocess.run(same, capture_output=True, text=True, check=True, timeout=60).stdout
    )
