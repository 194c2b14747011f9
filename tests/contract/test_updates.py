"""Contract tests: UpdateImageSetMetadata through boto3 — the §4.3 rules, force, primary sets, revert."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from contract.helpers import active_datastore
from contract.imaging import metadata, run_import, wait_active
from dicom_factory import make_ct_series, uid
from openhi.testing import RunningServer


class Lab:
    """One datastore on the session server plus helpers shared by the write tests."""

    def __init__(self, server: RunningServer, name: str) -> None:
        self.server = server
        self.client = server.client()
        unvalidated = Config(
            inject_host_prefix=False, retries={"max_attempts": 1}, parameter_validation=False
        )
        self.raw = server.client(config=unvalidated)
        self.ds = active_datastore(self.client, name)

    def import_series(self, n: int = 3, seed: int = 0, patient: str = "PAT1", **kw: Any) -> str:
        files = make_ct_series(n, rows=16, cols=16, seed=seed, patient_id=patient, **kw)
        result = run_import(
            self.client, self.server, self.ds, {f"s{seed}/{i}.dcm": f for i, f in enumerate(files)}
        )
        assert result["job"]["jobStatus"] == "COMPLETED", result
        ids = {s["imageSetId"] for s in result["manifest"]["imageSetsSummary"]}
        assert len(ids) == 1
        return str(ids.pop())

    def get(self, set_id: str, version: str | None = None) -> dict[str, Any]:
        kw = {"versionId": version} if version else {}
        result: dict[str, Any] = self.client.get_image_set(datastoreId=self.ds, imageSetId=set_id, **kw)
        return result

    def doc(self, set_id: str, version: str | None = None) -> dict[str, Any]:
        return metadata(self.client, self.ds, set_id, version)

    def raw_metadata(self, set_id: str, version: str) -> bytes:
        resp = self.client.get_image_set_metadata(datastoreId=self.ds, imageSetId=set_id, versionId=version)
        data: bytes = resp["imageSetMetadataBlob"].read()
        return data

    def latest(self, set_id: str) -> str:
        return str(self.get(set_id)["versionId"])

    def update(
        self,
        set_id: str,
        updatable: dict[str, Any] | None = None,
        removable: dict[str, Any] | None = None,
        *,
        latest: str | None = None,
        wait: bool = True,
        **kw: Any,
    ) -> dict[str, Any]:
        dicom: dict[str, bytes] = {}
        if updatable is not None:
            dicom["updatableAttributes"] = json.dumps({"SchemaVersion": 1.1, **updatable}).encode()
        if removable is not None:
            dicom["removableAttributes"] = json.dumps({"SchemaVersion": 1.1, **removable}).encode()
        resp: dict[str, Any] = self.client.update_image_set_metadata(
            datastoreId=self.ds,
            imageSetId=set_id,
            latestVersionId=latest or self.latest(set_id),
            updateImageSetMetadataUpdates={"DICOMUpdates": dicom},
            **kw,
        )
        if wait:
            wait_active(self.client, self.ds, set_id)
        return resp

    def versions(self, set_id: str) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_image_set_versions").paginate(
            datastoreId=self.ds, imageSetId=set_id
        )
        return [v for page in pages for v in page["imageSetPropertiesList"]]

    def copy(
        self,
        source: str,
        dest: str | None = None,
        copiable: dict[str, Any] | None = None,
        *,
        wait: bool = True,
        **kw: Any,
    ) -> dict[str, Any]:
        info: dict[str, Any] = {"sourceImageSet": {"latestVersionId": self.latest(source)}}
        if copiable is not None:
            info["sourceImageSet"]["DICOMCopies"] = {
                "copiableAttributes": json.dumps({"SchemaVersion": "1.1", **copiable})
            }
        if dest is not None:
            info["destinationImageSet"] = {"imageSetId": dest, "latestVersionId": self.latest(dest)}
        resp: dict[str, Any] = self.client.copy_image_set(
            datastoreId=self.ds, sourceImageSetId=source, copyImageSetInformation=info, **kw
        )
        if wait:
            wait_active(self.client, self.ds, resp["destinationImageSetProperties"]["imageSetId"])
            wait_active(self.client, self.ds, source)
        return resp


def series_of(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    uid_, node = next(iter(doc["Study"]["Series"].items()))
    return uid_, node


def instance_path(doc: dict[str, Any], **dicom: Any) -> dict[str, Any]:
    """An attribute document addressing one instance of ``doc``."""
    series_uid, series = series_of(doc)
    sop = sorted(series["Instances"])[0]
    return {"Study": {"Series": {series_uid: {"Instances": {sop: {"DICOM": dicom}}}}}}


def rejected(fn: Any, code: str = "ValidationException") -> str:
    with pytest.raises(ClientError) as info:
        fn()
    assert info.value.response["Error"]["Code"] == code, info.value.response
    message: str = info.value.response["Error"]["Message"]
    return message


@pytest.fixture(scope="module")
def lab(openhi_server: RunningServer) -> Lab:
    return Lab(openhi_server, "updates")


@pytest.fixture(scope="module")
def primary(lab: Lab) -> str:
    return lab.import_series(3, seed=1, patient="UPD-P")


@pytest.fixture(scope="module")
def nonprimary(lab: Lab) -> str:
    """A non-primary copy of a separately imported series."""
    src = lab.import_series(3, seed=2, patient="UPD-N")
    return str(lab.copy(src)["destinationImageSetProperties"]["imageSetId"])


def test_update_answers_locked_then_updated(lab: Lab, primary: str) -> None:
    before = lab.get(primary)
    resp = lab.update(primary, {"Study": {"DICOM": {"StudyDescription": "CHEST"}}}, wait=False)
    assert resp["imageSetState"] == "LOCKED" and resp["imageSetWorkflowStatus"] == "UPDATING"
    assert resp["latestVersionId"] == str(int(before["versionId"]) + 1)
    done = wait_active(lab.client, lab.ds, primary)
    assert done["imageSetWorkflowStatus"] == "UPDATED" and done["versionId"] == resp["latestVersionId"]
    assert lab.doc(primary)["Study"]["DICOM"]["StudyDescription"] == "CHEST"
    old = lab.doc(primary, before["versionId"])
    assert old["Study"]["DICOM"].get("StudyDescription") != "CHEST"


def test_search_attributes_follow_the_update(lab: Lab, primary: str) -> None:
    lab.update(primary, {"Study": {"DICOM": {"AccessionNumber": "ACC-NEW-1"}}})
    found = lab.client.search_image_sets(
        datastoreId=lab.ds,
        searchCriteria={
            "filters": [{"values": [{"DICOMAccessionNumber": "ACC-NEW-1"}], "operator": "EQUAL"}]
        },
    )["imageSetsMetadataSummaries"]
    assert [s["imageSetId"] for s in found] == [primary]


def test_remove_study_attribute(lab: Lab, primary: str) -> None:
    lab.update(primary, {"Study": {"DICOM": {"StudyDescription": "TO-REMOVE"}}})
    lab.update(primary, removable={"Study": {"DICOM": {"StudyDescription": "TO-REMOVE"}}})
    assert "StudyDescription" not in lab.doc(primary)["Study"]["DICOM"]
    message = rejected(lambda: lab.update(primary, removable={"Study": {"DICOM": {"StudyDescription": "x"}}}))
    assert "not present" in message


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"Study": {"DICOM": {"PixelData": None}}}, "generated by HealthImaging"),  # rule 2
        ({"DatastoreID": "x"}, "generated by HealthImaging"),  # rule 2
        ({"Study": {"DICOM": {"PatientName": "X^Y"}}}, "Patient level attribute"),  # rule 8
        (
            {"Study": {"Series": {"1.2.3.999": {"DICOM": {"SeriesDescription": "x"}}}}},
            "not a series",
        ),  # rule 9
        ({"Study": {"DICOM": {"001910F9": "97"}}}, "private attributes"),  # rule 1
    ],
)
def test_rules_rejected_also_with_force(
    lab: Lab, nonprimary: str, payload: dict[str, Any], fragment: str
) -> None:
    for force in (False, True):
        message = rejected(lambda force=force: lab.update(nonprimary, payload, force=force))
        assert fragment in message, message


def test_unknown_instance_is_rejected(lab: Lab, nonprimary: str) -> None:  # rule 9
    series_uid, _ = series_of(lab.doc(nonprimary))
    payload = {
        "Study": {"Series": {series_uid: {"Instances": {"1.2.3.4": {"DICOM": {"InstanceNumber": "9"}}}}}}
    }
    assert "not an instance" in rejected(lambda: lab.update(nonprimary, payload))


def test_generated_instance_fields_are_rejected(lab: Lab, nonprimary: str) -> None:  # rule 2
    doc = lab.doc(nonprimary)
    payload = instance_path(doc)
    node = next(iter(next(iter(payload["Study"]["Series"].values()))["Instances"].values()))
    node["ImageFrames"] = []
    assert "generated by HealthImaging" in rejected(lambda: lab.update(nonprimary, payload, force=True))


@pytest.mark.parametrize(
    ("dicom", "fragment", "check"),
    [
        ({"ImageType": ["DERIVED", "SECONDARY"]}, "multi-valued", "ImageType"),  # rule 5
        (
            {"InstanceNumber": "not-a-number"},
            "not compatible with the attribute's VR",
            "InstanceNumber",
        ),  # rule 6
        ({"Rows": "sixteen"}, "not compatible", "Rows"),  # rule 6
        ({"NotAKeyword": "x"}, "not a DICOM attribute keyword", "NotAKeyword"),  # rule 7
        ({"00280010": 16}, "keyword", "00280010"),  # rule 7: public tags go by keyword
        (
            {"ReferencedImageSequence": [{"ReferencedSOPInstanceUID": "1.2.3"}]},
            "VR SQ",
            "ReferencedImageSequence",
        ),
    ],
)
def test_force_rules_at_instance_level(
    lab: Lab, nonprimary: str, dicom: dict[str, Any], fragment: str, check: str
) -> None:
    doc = lab.doc(nonprimary)
    message = rejected(lambda: lab.update(nonprimary, instance_path(doc, **dicom)))
    assert fragment in message, message
    lab.update(nonprimary, instance_path(doc, **dicom), force=True)
    after = lab.get(nonprimary)
    assert after["imageSetWorkflowStatus"] == "UPDATED" and after["overrides"] == {"forced": True}
    _, series = series_of(lab.doc(nonprimary))
    sop = sorted(series["Instances"])[0]
    assert series["Instances"][sop]["DICOM"][check] == dicom[check]


def test_sequence_at_study_level_needs_force(lab: Lab) -> None:  # rule 4
    alone = lab.import_series(1, seed=3, patient="UPD-SQ")
    seq = {"ProcedureCodeSequence": [{"CodeValue": "X1", "CodingSchemeDesignator": "L", "CodeMeaning": "m"}]}
    assert "VR SQ" in rejected(lambda: lab.update(alone, {"Study": {"DICOM": seq}}))
    lab.update(alone, {"Study": {"DICOM": seq}}, force=True)
    assert lab.doc(alone)["Study"]["DICOM"]["ProcedureCodeSequence"] == seq["ProcedureCodeSequence"]


def test_private_tags_per_instance_with_force(lab: Lab, nonprimary: str) -> None:  # rule 1
    doc = lab.doc(nonprimary)
    payload = instance_path(doc, **{"001910F9": "97"})
    node = next(iter(next(iter(payload["Study"]["Series"].values()))["Instances"].values()))
    node["DICOMVRs"] = {"001910F9": "DS"}
    assert "force=true" in rejected(lambda: lab.update(nonprimary, payload))
    lab.update(nonprimary, payload, force=True)
    _, series = series_of(lab.doc(nonprimary))
    inst = series["Instances"][sorted(series["Instances"])[0]]
    assert inst["DICOM"]["001910F9"] == "97" and inst["DICOMVRs"]["001910F9"] == "DS"
    without_vr = instance_path(doc, **{"00191010": "x"})
    assert "DICOMVRs" in rejected(lambda: lab.update(nonprimary, without_vr, force=True))
    lab.update(nonprimary, removable=instance_path(doc, **{"001910F9": "97"}), force=True)
    _, series = series_of(lab.doc(nonprimary))
    inst = series["Instances"][sorted(series["Instances"])[0]]
    assert "001910F9" not in inst["DICOM"] and "001910F9" not in inst["DICOMVRs"]


def test_identity_attributes_need_force_and_never_on_primary(lab: Lab, primary: str, nonprimary: str) -> None:
    new_sop = uid("renamed-sop", 1)
    doc = lab.doc(nonprimary)
    assert "force=true" in rejected(
        lambda: lab.update(nonprimary, instance_path(doc, SOPInstanceUID=new_sop))
    )
    lab.update(nonprimary, instance_path(doc, SOPInstanceUID=new_sop), force=True)
    _, series = series_of(lab.doc(nonprimary))
    assert (
        new_sop in series["Instances"] and series["Instances"][new_sop]["DICOM"]["SOPInstanceUID"] == new_sop
    )
    pdoc = lab.doc(primary)
    for force in (False, True):
        message = rejected(
            lambda force=force: lab.update(primary, instance_path(pdoc, SOPInstanceUID=new_sop), force=force)
        )
        assert ("primary image set" in message) if force else ("force" in message)
    assert "cannot be removed" in rejected(
        lambda: lab.update(nonprimary, removable={"Study": {"DICOM": {"StudyInstanceUID": "x"}}}, force=True)
    )
    # StudyID: force only (a Study-level identifier, allowed on a primary set that is alone in its study)
    assert "force" in rejected(lambda: lab.update(primary, {"Study": {"DICOM": {"StudyID": "S-9"}}}))
    lab.update(primary, {"Study": {"DICOM": {"StudyID": "S-9"}}}, force=True)
    assert lab.doc(primary)["Study"]["DICOM"]["StudyID"] == "S-9"


def test_primary_patient_and_series_levels_are_read_only(lab: Lab, primary: str, nonprimary: str) -> None:
    series_uid, _ = series_of(lab.doc(primary))
    for payload in (
        {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}}},
        {"Study": {"Series": {series_uid: {"DICOM": {"SeriesDescription": "NEW"}}}}},
    ):
        for force in (False, True):
            assert "primary image set" in rejected(lambda p=payload, f=force: lab.update(primary, p, force=f))
    lab.update(nonprimary, {"Patient": {"DICOM": {"PatientName": "NEW^NAME"}}})
    assert lab.doc(nonprimary)["Patient"]["DICOM"]["PatientName"] == "NEW^NAME"
    nseries, _ = series_of(lab.doc(nonprimary))
    lab.update(nonprimary, {"Study": {"Series": {nseries: {"DICOM": {"SeriesDescription": "NEW"}}}}})
    assert series_of(lab.doc(nonprimary))[1]["DICOM"]["SeriesDescription"] == "NEW"


def test_remove_instances_and_series(lab: Lab) -> None:
    src = lab.import_series(3, seed=4, patient="UPD-RM")
    copy_id = str(lab.copy(src)["destinationImageSetProperties"]["imageSetId"])
    doc = lab.doc(src)
    series_uid, series = series_of(doc)
    sops = sorted(series["Instances"])
    lab.update(src, removable={"Study": {"Series": {series_uid: {"Instances": {sops[0]: {}}}}}})
    assert sorted(series_of(lab.doc(src))[1]["Instances"]) == sops[1:]
    # every instance gone: refused (DeleteImageSet deletes image sets)
    everything: dict[str, Any] = {"Study": {"Series": {series_uid: {"Instances": {s: {} for s in sops[1:]}}}}}
    assert "DeleteImageSet" in rejected(lambda: lab.update(src, removable=everything))
    # a whole series: not on a primary set; on a non-primary set only if something remains
    assert "primary" in rejected(lambda: lab.update(src, removable={"Study": {"Series": {series_uid: {}}}}))
    assert "DeleteImageSet" in rejected(
        lambda: lab.update(copy_id, removable={"Study": {"Series": {series_uid: {}}}})
    )


@pytest.mark.parametrize(
    ("updates", "fragment"),
    [
        ({"DICOMUpdates": {"updatableAttributes": b"{not json"}}, "not a valid JSON"),
        ({"DICOMUpdates": {"updatableAttributes": b'{"Study": {}}'}}, "SchemaVersion"),
        ({"DICOMUpdates": {"updatableAttributes": b'{"SchemaVersion": 1.1, "Series": {}}'}}, "unknown key"),
        ({"DICOMUpdates": {"updatableAttributes": b'{"SchemaVersion": "2.0"}'}}, "not supported"),
        ({"DICOMUpdates": {"updatableAttributes": b'{"SchemaVersion": 1.1}'}}, "names no attribute"),
        ({"DICOMUpdates": {}}, "must contain"),
        (
            {"DICOMUpdates": {"updatableAttributes": b'{"SchemaVersion": 1.1}'}, "revertToVersionId": "1"},
            "exactly one",
        ),
        ({}, "exactly one"),
    ],
)
def test_malformed_payloads(lab: Lab, primary: str, updates: dict[str, Any], fragment: str) -> None:
    message = rejected(
        lambda: lab.raw.update_image_set_metadata(
            datastoreId=lab.ds, imageSetId=primary, latestVersionId=lab.latest(primary),
            updateImageSetMetadataUpdates=updates,
        )
    )  # fmt: skip
    assert fragment in message, message


def test_payload_quota(lab: Lab, primary: str) -> None:
    big = {"Study": {"DICOM": {"StudyDescription": "x" * 60}}, "Pad": "y" * 11000}
    raw = json.dumps({"SchemaVersion": 1.1, **big}).encode()
    rejected(
        lambda: lab.client.update_image_set_metadata(
            datastoreId=lab.ds, imageSetId=primary, latestVersionId=lab.latest(primary),
            updateImageSetMetadataUpdates={"DICOMUpdates": {"updatableAttributes": raw}},
        ),
        "ServiceQuotaExceededException",
    )  # fmt: skip


def test_stale_version_and_unknown_set(lab: Lab, primary: str) -> None:
    latest = int(lab.latest(primary))
    message = rejected(
        lambda: lab.update(primary, {"Study": {"DICOM": {"StudyDescription": "S"}}}, latest=str(latest - 1)),
        "ConflictException",
    )
    assert message == f"ImageSet {primary} has latest version {latest}; the request named {latest - 1}."
    rejected(lambda: lab.update("0" * 32, {"Study": {"DICOM": {"StudyDescription": "S"}}}, latest="1"),
             "ResourceNotFoundException")  # fmt: skip


def test_revert(lab: Lab) -> None:
    set_id = lab.import_series(2, seed=5, patient="UPD-REV")
    v1 = lab.raw_metadata(set_id, "1")
    lab.update(set_id, {"Study": {"DICOM": {"StudyDescription": "TWO"}}})
    lab.update(set_id, {"Study": {"DICOM": {"StudyDescription": "THREE"}}})
    resp = lab.client.update_image_set_metadata(
        datastoreId=lab.ds, imageSetId=set_id, latestVersionId="3",
        updateImageSetMetadataUpdates={"revertToVersionId": "1"},
    )  # fmt: skip
    assert resp["latestVersionId"] == "4" and resp["imageSetWorkflowStatus"] == "UPDATING"
    wait_active(lab.client, lab.ds, set_id)
    assert lab.raw_metadata(set_id, "4") == v1
    assert lab.get(set_id)["imageSetWorkflowStatus"] == "UPDATED"
    assert [v["versionId"] for v in lab.versions(set_id)] == ["4", "3", "2", "1"]
    assert lab.doc(set_id, "3")["Study"]["DICOM"]["StudyDescription"] == "THREE"
    rejected(
        lambda: lab.client.update_image_set_metadata(
            datastoreId=lab.ds, imageSetId=set_id, latestVersionId="4",
            updateImageSetMetadataUpdates={"revertToVersionId": "9"},
        ),
        "ResourceNotFoundException",
    )  # fmt: skip
    message = rejected(
        lambda: lab.client.update_image_set_metadata(
            datastoreId=lab.ds, imageSetId=set_id, latestVersionId="4", includeStudyImageSets=True,
            updateImageSetMetadataUpdates={"revertToVersionId": "1"},
        )
    )  # fmt: skip
    assert "includeStudyImageSets" in message


def test_include_study_image_sets(lab: Lab) -> None:
    study = uid("upd-study", 7)
    sets = [
        lab.import_series(
            2, seed=70 + i, patient="UPD-STUDY", study_uid=study, series_uid=uid("upd-series", i)
        )
        for i in range(3)
    ]
    assert all(lab.get(s)["isPrimary"] for s in sets)
    change = {"Study": {"DICOM": {"StudyDescription": "CONSISTENT"}}}
    assert "includeStudyImageSets=true" in rejected(lambda: lab.update(sets[0], change))
    before = {s: int(lab.latest(s)) for s in sets}
    resp = lab.update(sets[0], change, includeStudyImageSets=True, wait=False)
    assert resp["imageSetWorkflowStatus"] == "UPDATING"
    for s in sets:
        done = wait_active(lab.client, lab.ds, s)
        assert int(done["versionId"]) == before[s] + 1 and done["imageSetWorkflowStatus"] == "UPDATED"
        assert lab.doc(s)["Study"]["DICOM"]["StudyDescription"] == "CONSISTENT"
    assert all(lab.versions(s)[0]["ImageSetWorkflowStatus"] == "UPDATED" for s in sets)
    # Instance-level changes stay on the requested set
    doc0 = lab.doc(sets[0])
    lab.update(sets[0], instance_path(doc0, ImageComments="only here"), includeStudyImageSets=True)
    assert int(lab.latest(sets[1])) == before[sets[1]] + 1
