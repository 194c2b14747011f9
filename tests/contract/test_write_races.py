"""Contract tests: concurrent writers, locks while a write runs, and a crash between the two halves."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from contract.helpers import wait_for
from contract.imaging import wait_active
from contract.test_updates import Lab, instance_path, rejected
from dicom_factory import uid
from openhi.testing import RunningServer

RESTART_MESSAGE = (
    "INTERNAL_ERROR:  the server stopped before the operation finished, the previous version is unchanged."
)
DELAY = "OPENHI_TEST_WRITE_DELAY_SECONDS"


def _updates(description: str) -> dict[str, Any]:
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": description}}}
    return {"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}}


def test_fifty_writers_one_winner(openhi_server: RunningServer) -> None:
    lab = Lab(openhi_server, "race")
    set_id = lab.import_series(2, seed=51, patient="RACE")
    clients = [openhi_server.client() for _ in range(50)]
    barrier = threading.Barrier(50)
    outcomes: list[Any] = [None] * 50

    def writer(i: int) -> None:
        barrier.wait()
        try:
            resp = clients[i].update_image_set_metadata(
                datastoreId=lab.ds,
                imageSetId=set_id,
                latestVersionId="1",
                updateImageSetMetadataUpdates=_updates(f"R{i}"),
            )
            outcomes[i] = ("ok", resp["latestVersionId"])
        except ClientError as err:
            outcomes[i] = (err.response["Error"]["Code"], err.response["Error"]["Message"])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [o for o in outcomes if o[0] == "ok"]
    assert winners == [("ok", "2")], outcomes
    assert sorted({o[0] for o in outcomes if o[0] != "ok"}) == ["ConflictException"]
    wait_active(lab.client, lab.ds, set_id)
    versions = lab.versions(set_id)
    assert [v["versionId"] for v in versions] == ["2", "1"]
    assert [v["ImageSetWorkflowStatus"] for v in versions] == ["UPDATED", "CREATED"]
    winner = outcomes.index(winners[0])
    assert lab.doc(set_id)["Study"]["DICOM"]["StudyDescription"] == f"R{winner}"


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A server whose background write halves take 1.5 s: long enough to observe the LOCKED states."""
    server = RunningServer(tmp_path_factory.mktemp("slow") / "data", env={DELAY: "1.5"}).start()
    try:
        yield Lab(server, "slow")
    finally:
        server.stop()


def test_a_locked_set_refuses_writes_but_serves_reads(slow: Lab) -> None:
    set_id = slow.import_series(2, seed=52, patient="LOCK")
    v1 = slow.raw_metadata(set_id, "1")
    slow.update(set_id, {"Study": {"DICOM": {"StudyDescription": "SLOW"}}}, wait=False)
    props = slow.get(set_id)
    assert (props["imageSetState"], props["imageSetWorkflowStatus"], props["versionId"]) == (
        "LOCKED",
        "UPDATING",
        "2",
    )
    message = rejected(lambda: slow.update(set_id, {"Study": {"DICOM": {"StudyID": "x"}}}, latest="2", wait=False,
                                           force=True), "ConflictException")  # fmt: skip
    assert message == f"ImageSet {set_id} is locked by an operation in progress (UPDATING)."
    rejected(
        lambda: slow.client.delete_image_set(datastoreId=slow.ds, imageSetId=set_id), "ConflictException"
    )
    cur = slow.client.get_image_set_metadata(datastoreId=slow.ds, imageSetId=set_id)[
        "imageSetMetadataBlob"
    ].read()
    assert cur == v1
    rejected(lambda: slow.raw_metadata(set_id, "2"), "ConflictException")
    assert wait_active(slow.client, slow.ds, set_id)["imageSetWorkflowStatus"] == "UPDATED"


def test_copy_locks_source_read_only_and_releases_it(slow: Lab) -> None:
    src = slow.import_series(1, seed=53, patient="LOCK-CP")
    resp = slow.copy(src, wait=False)
    dest = resp["destinationImageSetProperties"]["imageSetId"]
    s, d = slow.get(src), slow.get(dest)
    assert (s["imageSetState"], s["imageSetWorkflowStatus"], s["versionId"]) == (
        "LOCKED", "COPYING_WITH_READ_ONLY_ACCESS", "1",
    )  # fmt: skip
    assert (d["imageSetState"], d["imageSetWorkflowStatus"]) == ("LOCKED", "COPYING")
    assert slow.doc(src)["ImageSetID"] == src  # reads are allowed
    assert "COPYING_WITH_READ_ONLY_ACCESS" in rejected(
        lambda: slow.update(src, {"Study": {"DICOM": {"StudyDescription": "x"}}}, latest="1", wait=False),
        "ConflictException",
    )
    assert wait_active(slow.client, slow.ds, dest)["imageSetWorkflowStatus"] == "COPIED"
    s = wait_active(slow.client, slow.ds, src)
    assert (s["imageSetState"], s["imageSetWorkflowStatus"], s["versionId"]) == ("ACTIVE", "CREATED", "1")


def test_study_siblings_show_updating_for_study_consistency(slow: Lab) -> None:
    study = uid("race-study", 1)
    sets = [
        slow.import_series(
            1, seed=54 + i, patient="LOCK-ST", study_uid=study, series_uid=uid("race-series", i)
        )
        for i in range(3)
    ]
    slow.update(
        sets[1], {"Study": {"DICOM": {"StudyDescription": "ALL"}}}, includeStudyImageSets=True, wait=False
    )
    statuses = {s: slow.get(s)["imageSetWorkflowStatus"] for s in sets}
    assert statuses == {
        sets[0]: "UPDATING_FOR_STUDY_CONSISTENCY",
        sets[1]: "UPDATING",
        sets[2]: "UPDATING_FOR_STUDY_CONSISTENCY",
    }
    for s in sets:
        wait_active(slow.client, slow.ds, s)
    # one of them locked: the whole study update is refused and nothing changes
    slow.update(sets[2], instance_path(slow.doc(sets[2]), ImageComments="x"), wait=False, latest="2")
    assert "locked" in rejected(
        lambda: slow.update(sets[0], {"Study": {"DICOM": {"StudyDescription": "X"}}}, includeStudyImageSets=True,
                            wait=False),
        "ConflictException",
    )  # fmt: skip
    for s in sets:
        wait_active(slow.client, slow.ds, s)
        assert slow.doc(s)["Study"]["DICOM"]["StudyDescription"] == "ALL"
    assert [slow.latest(s) for s in sets] == ["2", "2", "3"]


def test_delete_shows_deleting(slow: Lab) -> None:
    set_id = slow.import_series(1, seed=58, patient="LOCK-DEL")
    slow.client.delete_image_set(datastoreId=slow.ds, imageSetId=set_id)
    props = slow.get(set_id)
    assert (props["imageSetState"], props["imageSetWorkflowStatus"], props["versionId"]) == (
        "LOCKED",
        "DELETING",
        "2",
    )
    wait_for(lambda: slow.get(set_id)["imageSetState"], lambda state: state == "DELETED", timeout=30)


def test_kill_between_the_two_halves(tmp_path: Path) -> None:
    data = tmp_path / "data"
    beat = {"OPENHI_WRITE_HEARTBEAT_SECONDS": "0.2"}  # the dead process's writes are recovered in < 1 s
    server = RunningServer(data, env={DELAY: "60", **beat}).start()
    try:
        lab = Lab(server, "crash")
        a = lab.import_series(2, seed=61, patient="CRASH-A")
        b = lab.import_series(1, seed=62, patient="CRASH-B")
        d = lab.import_series(1, seed=63, patient="CRASH-D")
        v1 = lab.raw_metadata(a, "1")
        lab.update(a, {"Study": {"DICOM": {"StudyDescription": "LOST"}}}, wait=False)
        copy = lab.copy(b, wait=False)["destinationImageSetProperties"]["imageSetId"]
        lab.client.delete_image_set(datastoreId=lab.ds, imageSetId=d)
        assert lab.get(a)["imageSetState"] == lab.get(b)["imageSetState"] == "LOCKED"
    finally:
        server.kill()
    server = RunningServer(data, env=beat).start()
    try:
        lab.client = server.client()
        props = wait_for(lambda: lab.get(a), lambda p: p["imageSetState"] == "ACTIVE", timeout=10)
        wait_for(lambda: lab.get(b)["imageSetState"], lambda state: state == "ACTIVE", timeout=10)
        assert (props["imageSetState"], props["imageSetWorkflowStatus"], props["versionId"]) == (
            "ACTIVE", "UPDATE_FAILED", "2",
        )  # fmt: skip
        assert props["message"] == RESTART_MESSAGE
        assert lab.raw_metadata(a, "2") == v1
        assert (
            lab.client.get_image_set_metadata(datastoreId=lab.ds, imageSetId=a)["imageSetMetadataBlob"].read()
            == v1
        )
        lab.update(a, {"Study": {"DICOM": {"StudyDescription": "AGAIN"}}}, latest="2")
        assert lab.get(a)["imageSetWorkflowStatus"] == "UPDATED"
        assert lab.doc(a)["Study"]["DICOM"]["StudyDescription"] == "AGAIN"
        source = lab.get(b)
        assert (source["imageSetState"], source["imageSetWorkflowStatus"], source["versionId"]) == (
            "ACTIVE", "CREATED", "1",
        )  # fmt: skip
        failed_copy = lab.get(copy)
        assert (failed_copy["imageSetWorkflowStatus"], failed_copy["message"]) == (
            "COPY_FAILED",
            RESTART_MESSAGE,
        )
        assert lab.get(d)["imageSetState"] == "DELETED"
    finally:
        server.stop()
