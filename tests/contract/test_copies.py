"""Contract tests: CopyImageSet through boto3 — new, existing, subset, forced, promoteToPrimary, failures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from contract.helpers import active_datastore, wait_for
from contract.imaging import run_import, wait_active
from contract.test_updates import Lab, rejected, series_of
from dicom_factory import make_ct_series, uid
from openhi.testing import RunningServer


@pytest.fixture(scope="module")
def lab(openhi_server: RunningServer) -> Lab:
    return Lab(openhi_server, "copies")


def select(doc: dict[str, Any], *indexes: int) -> dict[str, Any]:
    series_uid, series = series_of(doc)
    sops = sorted(series["Instances"])
    return {"Study": {"Series": {series_uid: {"Instances": {sops[i]: {} for i in indexes}}}}}


def frame(lab: Lab, set_id: str, frame_id: str) -> bytes:
    resp = lab.client.get_image_frame(
        datastoreId=lab.ds, imageSetId=set_id, imageFrameInformation={"imageFrameId": frame_id}
    )
    data: bytes = resp["imageFrameBlob"].read()
    return data


def test_copy_to_a_new_image_set(lab: Lab) -> None:
    src = lab.import_series(3, seed=11, patient="CP-NEW")
    info = {"sourceImageSet": {"latestVersionId": "1"}}
    resp = lab.client.copy_image_set(datastoreId=lab.ds, sourceImageSetId=src, copyImageSetInformation=info)
    s, d = resp["sourceImageSetProperties"], resp["destinationImageSetProperties"]
    assert (s["imageSetId"], s["latestVersionId"], s["imageSetState"]) == (src, "1", "LOCKED")
    assert s["imageSetWorkflowStatus"] == "COPYING_WITH_READ_ONLY_ACCESS"
    assert (d["latestVersionId"], d["imageSetState"], d["imageSetWorkflowStatus"]) == (
        "1",
        "LOCKED",
        "COPYING",
    )
    assert d["imageSetArn"].endswith(f"/imageset/{d['imageSetId']}") and d["imageSetId"] != src
    done = wait_active(lab.client, lab.ds, d["imageSetId"])
    assert (
        done["imageSetWorkflowStatus"] == "COPIED" and done["isPrimary"] is False and done["versionId"] == "1"
    )
    source = wait_active(lab.client, lab.ds, src)
    assert (source["versionId"], source["imageSetWorkflowStatus"]) == ("1", "CREATED")
    a, b = lab.doc(src), lab.doc(d["imageSetId"])
    assert b["ImageSetID"] == d["imageSetId"] and a["Study"] == b["Study"] and a["Patient"] == b["Patient"]
    ids = [f["ID"] for _, node in series_of(a)[1]["Instances"].items() for f in node["ImageFrames"]]
    assert all(frame(lab, src, i) == frame(lab, d["imageSetId"], i) for i in ids)


def test_copy_a_subset_and_a_whole_series(lab: Lab) -> None:
    src = lab.import_series(3, seed=12, patient="CP-SUB")
    doc = lab.doc(src)
    one = lab.copy(src, copiable=select(doc, 1))["destinationImageSetProperties"]["imageSetId"]
    assert sorted(series_of(lab.doc(one))[1]["Instances"]) == [sorted(series_of(doc)[1]["Instances"])[1]]
    whole = lab.copy(src, copiable={"Study": {"Series": {series_of(doc)[0]: {}}}})
    assert series_of(lab.doc(whole["destinationImageSetProperties"]["imageSetId"]))[1] == series_of(doc)[1]


@pytest.mark.parametrize(
    ("copiable", "fragment"),
    [
        ({"Study": {"Series": {"1.2.3.404": {}}}}, "not in the source"),
        ("sop", "not in series"),
        ({"Study": {"DICOM": {"StudyDescription": "x"}}}, "may only select"),
        ({"Study": {"Series": {}}}, "selects no SOP"),
    ],
)
def test_bad_selections(lab: Lab, copiable: Any, fragment: str) -> None:
    src = lab.import_series(1, seed=13, patient=f"CP-BAD-{fragment}")
    if copiable == "sop":
        copiable = {"Study": {"Series": {series_of(lab.doc(src))[0]: {"Instances": {"1.2.3.404": {}}}}}}
    assert fragment in rejected(lambda: lab.copy(src, copiable=copiable))
    info = {"sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {"copiableAttributes": "{nope"}}}
    rejected(
        lambda: lab.client.copy_image_set(
            datastoreId=lab.ds, sourceImageSetId=src, copyImageSetInformation=info
        )
    )


def test_copy_into_an_existing_image_set(lab: Lab) -> None:
    primary = lab.import_series(3, seed=14, patient="CP-EX")
    doc = lab.doc(primary)
    dest = lab.copy(primary, copiable=select(doc, 0))["destinationImageSetProperties"]["imageSetId"]
    resp = lab.client.copy_image_set(
        datastoreId=lab.ds, sourceImageSetId=primary,
        copyImageSetInformation={
            "sourceImageSet": {"latestVersionId": "1", "DICOMCopies": {
                "copiableAttributes": json.dumps({"SchemaVersion": "1.1", **select(doc, 1)})}},
            "destinationImageSet": {"imageSetId": dest, "latestVersionId": "1"},
        },
    )  # fmt: skip
    d = resp["destinationImageSetProperties"]
    assert (d["imageSetId"], d["latestVersionId"], d["imageSetWorkflowStatus"]) == (dest, "2", "COPYING")
    assert wait_active(lab.client, lab.ds, dest)["imageSetWorkflowStatus"] == "COPIED"
    sops = sorted(series_of(doc)[1]["Instances"])
    assert sorted(series_of(lab.doc(dest))[1]["Instances"]) == sops[:2]
    # the same SOP Instance again: COPY_FAILED, content unchanged
    lab.copy(primary, dest, copiable=select(doc, 1))
    failed = lab.get(dest)
    assert failed["versionId"] == "3" and failed["imageSetWorkflowStatus"] == "COPY_FAILED"
    assert failed["message"].startswith("INVALID_REQUEST:  SOP Instance UID ")
    assert re.fullmatch(r"[\w -:`]{1,2048}", failed["message"], re.ASCII), failed["message"]  # the model's
    assert lab.raw_metadata(dest, "3") == lab.raw_metadata(dest, "2")
    # stale destination version, copy onto itself
    info = {
        "sourceImageSet": {"latestVersionId": "1"},
        "destinationImageSet": {"imageSetId": dest, "latestVersionId": "2"},
    }
    assert "latest version 3" in rejected(
        lambda: lab.client.copy_image_set(
            datastoreId=lab.ds, sourceImageSetId=primary, copyImageSetInformation=info
        ),
        "ConflictException",
    )
    assert "onto itself" in rejected(lambda: lab.copy(dest, dest))


def test_mismatch_fails_and_force_keeps_destination_metadata(lab: Lab) -> None:
    study = uid("cp-study", 15)
    a = lab.import_series(2, seed=15, patient="CP-MIS", study_uid=study, series_uid=uid("cp-series", 1))
    b = lab.import_series(2, seed=16, patient="CP-MIS", study_uid=study, series_uid=uid("cp-series", 2),
                          SeriesDescription="OTHER")  # fmt: skip
    dest = lab.copy(a, copiable=select(lab.doc(a), 0))["destinationImageSetProperties"]["imageSetId"]
    lab.copy(b, dest, copiable=select(lab.doc(b), 0))
    failed = lab.get(dest)
    assert failed["imageSetWorkflowStatus"] == "COPY_FAILED" and failed["versionId"] == "2"
    assert (
        failed["message"] == "INVALID_REQUEST:  Series of SourceImageSet and DestinationImageSet don't match."
    )
    assert "overrides" not in failed
    before = lab.doc(dest)
    lab.copy(b, dest, copiable=select(lab.doc(b), 0), force=True)
    forced = lab.get(dest)
    assert forced["imageSetWorkflowStatus"] == "COPIED" and forced["overrides"] == {"forced": True}
    after = lab.doc(dest)
    assert list(after["Study"]["Series"]) == list(before["Study"]["Series"])
    assert series_of(after)[1]["DICOM"] == series_of(before)[1]["DICOM"]
    assert len(series_of(after)[1]["Instances"]) == 2


def test_promote_to_primary_merges_into_the_primary_set(lab: Lab) -> None:
    study, series = uid("cp-pro-study", 1), uid("cp-pro-series", 1)
    primary = lab.import_series(
        2, seed=17, patient="CP-PRO", study_uid=study, series_uid=series, AccessionNumber="A1"
    )
    odd = make_ct_series(3, rows=16, cols=16, seed=17, patient_id="CP-PRO", study_uid=study, series_uid=series,
                         AccessionNumber="A2")[2]  # fmt: skip
    result = run_import(lab.client, lab.server, lab.ds, {"odd.dcm": odd})
    other = result["manifest"]["imageSetsSummary"][0]
    assert other["isPrimary"] is False
    other_id = other["imageSetId"]
    assert "already a primary" in rejected(lambda: lab.copy(primary, promoteToPrimary=True))
    lab.update(other_id, {"Study": {"DICOM": {"AccessionNumber": "A1"}}})
    resp = lab.copy(other_id, promoteToPrimary=True)
    d = resp["destinationImageSetProperties"]
    assert d["imageSetId"] == primary and d["latestVersionId"] == "2"
    merged = lab.get(primary)
    assert merged["imageSetWorkflowStatus"] == "COPIED" and merged["isPrimary"] is True
    assert len(series_of(lab.doc(primary))[1]["Instances"]) == 3
    assert lab.get(other_id)["isPrimary"] is False


def test_promote_to_primary_creates_a_new_primary_set(lab: Lab) -> None:
    src = lab.import_series(2, seed=18, patient="CP-NEWP")
    copy_id = lab.copy(src)["destinationImageSetProperties"]["imageSetId"]
    lab.client.delete_image_set(datastoreId=lab.ds, imageSetId=src)
    wait_for(lambda: lab.get(src)["imageSetState"], lambda s: s == "DELETED")
    resp = lab.copy(copy_id, promoteToPrimary=True)
    new_id = resp["destinationImageSetProperties"]["imageSetId"]
    assert new_id not in (src, copy_id)
    props = lab.get(new_id)
    assert (
        props["isPrimary"] is True
        and props["imageSetWorkflowStatus"] == "COPIED"
        and props["versionId"] == "1"
    )
    assert lab.get(copy_id)["isPrimary"] is False


def test_frame_quota(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", env={"OPENHI_MAX_FRAMES_PER_COPY": "2"}).start()
    try:
        client = server.client()
        ds = active_datastore(client, "quota")
        files = make_ct_series(3, rows=16, cols=16, seed=19)
        result = run_import(client, server, ds, {f"{i}.dcm": f for i, f in enumerate(files)})
        set_id = result["manifest"]["imageSetsSummary"][0]["imageSetId"]
        message = rejected(
            lambda: client.copy_image_set(
                datastoreId=ds,
                sourceImageSetId=set_id,
                copyImageSetInformation={"sourceImageSet": {"latestVersionId": "1"}},
            ),
            "ServiceQuotaExceededException",
        )
        assert "at most 2" in message
    finally:
        server.stop()
