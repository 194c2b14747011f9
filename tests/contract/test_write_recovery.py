"""Contract tests: crash recovery of writes with two API processes sharing one index and blob store."""

from __future__ import annotations

import time
from pathlib import Path

from contract.helpers import wait_for
from contract.test_updates import Lab
from openhi.testing import RunningServer

RESTART_MESSAGE = (
    "INTERNAL_ERROR:  the server stopped before the operation finished, the previous version is unchanged."
)
DELAY = "OPENHI_TEST_WRITE_DELAY_SECONDS"
BEAT = {"OPENHI_WRITE_HEARTBEAT_SECONDS": "0.2"}  # a dead process is noticed within ~0.6 s


def _state(lab: Lab, set_id: str) -> tuple[str, str, str]:
    props = lab.get(set_id)
    return props["imageSetState"], props["imageSetWorkflowStatus"], props["versionId"]


def test_restarting_one_process_leaves_another_process_writes_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slow = RunningServer(data, env={DELAY: "6", **BEAT}).start()  # A: its background halves take 6 s
    other = RunningServer(data, env=BEAT).start()  # B: same SQLite index and blob directory
    try:
        lab = Lab(slow, "two-procs")
        a = lab.import_series(2, seed=71, patient="LIVE-A")
        b = lab.import_series(1, seed=72, patient="LIVE-B")
        lab.update(a, {"Study": {"DICOM": {"StudyDescription": "KEPT"}}}, wait=False)
        copy = lab.copy(b, wait=False)["destinationImageSetProperties"]["imageSetId"]
        other.restart()  # recovery runs at B's start and then every beat: A is alive, nothing is touched
        lab.server, lab.client = other, other.client()
        time.sleep(1.0)  # several sweeps of B
        assert _state(lab, a) == ("LOCKED", "UPDATING", "2")
        assert _state(lab, b)[:2] == ("LOCKED", "COPYING_WITH_READ_ONLY_ACCESS")
        assert _state(lab, copy)[:2] == ("LOCKED", "COPYING")
        wait_for(lambda: _state(lab, a), lambda s: s[0] == "ACTIVE", timeout=30)
        assert _state(lab, a) == ("ACTIVE", "UPDATED", "2")
        assert lab.doc(a)["Study"]["DICOM"]["StudyDescription"] == "KEPT"
        wait_for(lambda: _state(lab, copy), lambda s: s[0] == "ACTIVE", timeout=30)
        assert _state(lab, copy)[1] == "COPIED"
        assert _state(lab, b) == ("ACTIVE", "CREATED", "1")
    finally:
        other.stop()
        slow.stop()


def test_a_killed_process_writes_are_recovered_by_a_live_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    victim = RunningServer(data, env={DELAY: "60", **BEAT}).start()
    survivor = RunningServer(data, env=BEAT).start()
    try:
        lab = Lab(victim, "killed")
        a = lab.import_series(2, seed=73, patient="DEAD-A")
        b = lab.import_series(1, seed=74, patient="DEAD-B")
        v1 = lab.raw_metadata(a, "1")
        lab.update(a, {"Study": {"DICOM": {"StudyDescription": "LOST"}}}, wait=False)
        copy = lab.copy(b, wait=False)["destinationImageSetProperties"]["imageSetId"]
        victim.kill()
        killed_at = time.monotonic()
        lab.server, lab.client = survivor, survivor.client()
        props = wait_for(lambda: lab.get(a), lambda p: p["imageSetState"] == "ACTIVE", timeout=10)
        assert time.monotonic() - killed_at < 10
        assert (props["imageSetWorkflowStatus"], props["versionId"], props["message"]) == (
            "UPDATE_FAILED", "2", RESTART_MESSAGE,
        )  # fmt: skip
        assert lab.raw_metadata(a, "2") == v1
        wait_for(lambda: _state(lab, b), lambda s: s[0] == "ACTIVE", timeout=10)
        assert _state(lab, b) == ("ACTIVE", "CREATED", "1")
        failed = lab.get(copy)
        assert (failed["imageSetWorkflowStatus"], failed["message"]) == ("COPY_FAILED", RESTART_MESSAGE)
        # the set is writable again, through the live process
        lab.update(a, {"Study": {"DICOM": {"StudyDescription": "AGAIN"}}}, latest="2")
        assert _state(lab, a) == ("ACTIVE", "UPDATED", "3")
        assert lab.doc(a)["Study"]["DICOM"]["StudyDescription"] == "AGAIN"
    finally:
        survivor.stop()
        victim.kill()
