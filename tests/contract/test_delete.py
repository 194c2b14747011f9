"""Contract tests: DeleteImageSet through boto3 — states, idempotence, and background blob collection."""

from __future__ import annotations

from typing import Any

import pytest

from contract.helpers import wait_for
from contract.test_updates import Lab, rejected, series_of
from openhi.testing import RunningServer


@pytest.fixture(scope="module")
def lab(openhi_server: RunningServer) -> Lab:
    return Lab(openhi_server, "delete")


def test_delete_answers_deleting_then_deleted(lab: Lab) -> None:
    set_id = lab.import_series(2, seed=31, patient="DEL-1")
    lab.update(set_id, {"Study": {"DICOM": {"StudyDescription": "BEFORE-DELETE"}}})
    resp = lab.client.delete_image_set(datastoreId=lab.ds, imageSetId=set_id)
    assert (resp["imageSetState"], resp["imageSetWorkflowStatus"]) == ("LOCKED", "DELETING")
    assert (resp["datastoreId"], resp["imageSetId"]) == (lab.ds, set_id)
    done = wait_for(lambda: lab.get(set_id), lambda r: r["imageSetState"] == "DELETED")
    assert done["imageSetWorkflowStatus"] == "DELETED" and done["versionId"] == "3" and "deletedAt" in done
    history = lab.versions(set_id)
    assert [(v["versionId"], v["imageSetState"], v["ImageSetWorkflowStatus"]) for v in history] == [
        ("3", "DELETED", "DELETED"),
        ("2", "ACTIVE", "UPDATED"),
        ("1", "ACTIVE", "CREATED"),
    ]
    assert "deletedAt" in history[0]
    rejected(lambda: lab.doc(set_id), "ResourceNotFoundException")
    again = lab.client.delete_image_set(datastoreId=lab.ds, imageSetId=set_id)
    assert (again["imageSetState"], again["imageSetWorkflowStatus"]) == ("DELETED", "DELETED")
    message = rejected(
        lambda: lab.update(set_id, {"Study": {"DICOM": {"StudyDescription": "x"}}}, latest="3"),
        "ConflictException",
    )
    assert "deleted" in message
    rejected(
        lambda: lab.client.delete_image_set(datastoreId=lab.ds, imageSetId="f" * 32),
        "ResourceNotFoundException",
    )
    search = lab.client.search_image_sets(datastoreId=lab.ds)["imageSetsMetadataSummaries"]
    assert set_id not in {s["imageSetId"] for s in search}


def _frame(lab: Lab, set_id: str, frame_id: str) -> bytes:
    resp = lab.client.get_image_frame(
        datastoreId=lab.ds, imageSetId=set_id, imageFrameInformation={"imageFrameId": frame_id}
    )
    data: bytes = resp["imageFrameBlob"].read()
    return data


def _frames(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {
        sop: [f["ID"] for f in node["ImageFrames"]] for sop, node in series_of(doc)[1]["Instances"].items()
    }


def test_collection_keeps_blobs_a_copy_still_references(openhi_fresh: RunningServer) -> None:
    lab = Lab(openhi_fresh, "collect")
    src = lab.import_series(3, seed=32, patient="DEL-GC")
    lab.update(src, {"Study": {"DICOM": {"StudyDescription": "V2"}}})
    doc = lab.doc(src)
    frames = _frames(doc)
    kept_sop = sorted(frames)[0]
    series_uid = series_of(doc)[0]
    copy_id = lab.copy(src, copiable={"Study": {"Series": {series_uid: {"Instances": {kept_sop: {}}}}}})[
        "destinationImageSetProperties"
    ]["imageSetId"]
    # blob keys, read through the deployment (files in embedded mode, S3 objects in distributed mode)
    frame_key = {fid: f"frames/{lab.ds}/{fid}" for ids in frames.values() for fid in ids}
    meta_keys = [f"metadata/{lab.ds}/{src}/{v}.json.gz" for v in (1, 2)]

    def present(keys: list[str]) -> list[str]:
        return [k for k in keys if openhi_fresh.read_blob(k) is not None]

    assert present([*frame_key.values(), *meta_keys]) == [*frame_key.values(), *meta_keys]
    served = {fid: _frame(lab, src, fid) for fid in frames[kept_sop]}
    lab.client.delete_image_set(datastoreId=lab.ds, imageSetId=src)
    gone = [frame_key[i] for sop, ids in frames.items() if sop != kept_sop for i in ids] + meta_keys
    wait_for(lambda: present(gone), lambda left: not left, timeout=30, step=0.25)
    kept = [frame_key[i] for i in frames[kept_sop]]
    assert present(kept) == kept
    assert {fid: _frame(lab, copy_id, fid) for fid in frames[kept_sop]} == served
    # deleting the copy too releases the shared frames
    lab.client.delete_image_set(datastoreId=lab.ds, imageSetId=copy_id)
    wait_for(lambda: present(kept), lambda left: not left, timeout=30, step=0.25)
