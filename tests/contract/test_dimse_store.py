"""Contract tests: the DICOM port (C-ECHO, C-STORE) of a real server, with dcmtk's tools and pynetdicom."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE

from contract.helpers import active_datastore
from dicom_factory import make_ct_series
from openhi.testing.plugin import deployment
from openhi.testing.server import RunningServer, free_port

pytestmark = pytest.mark.deployment_aware  # the dimse fixture starts the selected deployment

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"
ALLOWED = ["STORESCU", "ECHOSCU", "OHTEST", "OHPARALLEL"]
COMPRESSED = ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_gdcm.dcm", "CT_small.dcm"]


class Dimse:
    """A running deployment with a DICOM port, and what the tests share."""

    def __init__(self, server: Any, port: int) -> None:
        self.server = server
        self.port = port
        self.client = server.client()

    def ae(self, title: str = "OHTEST", syntaxes: list[str] | None = None, sop: str = CT) -> AE:
        ae = AE(ae_title=title)
        ae.add_requested_context("1.2.840.10008.1.1")
        ae.add_requested_context(sop, syntaxes or [ELE])
        return ae

    def associate(self, called: str, title: str = "OHTEST", **kwargs: Any) -> Any:
        assoc = self.ae(title, **kwargs).associate("127.0.0.1", self.port, ae_title=called)
        assert assoc.is_established, f"association {title} -> {called} not established"
        return assoc

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"{self.server.endpoint}{path}", timeout=60) as resp:
            body: bytes = resp.read()
            return body

    def qido(self, ds_id: str, path: str) -> list[dict[str, Any]]:
        body = self.get(f"/datastore/{ds_id}{path}")
        found: list[dict[str, Any]] = json.loads(body) if body else []
        return found

    def image_sets(self, ds_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.client.search_image_sets(datastoreId=ds_id)[
            "imageSetsMetadataSummaries"
        ]
        return found

    def versions(self, ds_id: str, set_id: str) -> int:
        answer = self.client.list_image_set_versions(datastoreId=ds_id, imageSetId=set_id)
        return len(answer["imageSetPropertiesList"])


@pytest.fixture(scope="module")
def dimse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dimse]:
    """A deployment of its own with ``--dicom-port`` (embedded, or distributed like the plugin's)."""
    port = free_port()
    args = ["--dicom-port", str(port), "--dicom-aet", "OPENHI"]
    for title in ALLOWED:
        args += ["--dicom-allow", title]
    work = tmp_path_factory.mktemp("dimse")
    server: Any
    if deployment(request.config) == "distributed":
        from openhi.testing.distributed import DistributedDeployment

        server = DistributedDeployment(work, extra_args=args).start()
    else:
        server = RunningServer(work / "data", extra_args=args).start()
    try:
        wait_port(port)
        yield Dimse(server, port)
    finally:
        server.stop()
        if hasattr(server, "close"):
            server.close()


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def write_files(folder: Path, files: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, data in enumerate(files):
        path = folder / f"{n:04d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def wado_pixels(d: Dimse, ds_id: str, source: pydicom.Dataset) -> np.ndarray:
    path = (
        f"/datastore/{ds_id}/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}"
        f"/instances/{source.SOPInstanceUID}"
    )
    return np.asarray(read(d.get(path)).pixel_array)


# ------------------------------------------------------------------------------------- verification


def test_echo_with_echoscu_and_pynetdicom(dimse: Dimse) -> None:
    done = subprocess.run(
        ["echoscu", "-aec", "OPENHI", "127.0.0.1", str(dimse.port)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assoc = dimse.associate("OPENHI")
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_calling_ae_outside_the_allow_list_is_rejected(dimse: Dimse) -> None:
    assoc = dimse.ae("INTRUDER").associate("127.0.0.1", dimse.port, ae_title="OPENHI")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)


def test_unknown_called_ae_is_rejected(dimse: Dimse) -> None:
    assoc = dimse.ae().associate("127.0.0.1", dimse.port, ae_title="NO-SUCH-STORE")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x07)


# -------------------------------------------------------------------------------------------- storage


def test_storescu_folder_is_visible_through_the_api_and_dicomweb_pixel_exact(
    dimse: Dimse, tmp_path: Path
) -> None:
    ds_id = active_datastore(dimse.client, "STORE1")
    files = make_ct_series(12, seed=801, patient_id="DIMSE1")
    paths = write_files(tmp_path / "series", files)
    done = subprocess.run(
        ["storescu", "-aec", "STORE1", "127.0.0.1", str(dimse.port), *map(str, paths)],
        capture_output=True,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    sets = dimse.image_sets(ds_id)  # committed before the A-RELEASE-RP: visible at once
    assert len(sets) == 1 and sets[0]["version"] == 1
    source = [read(f) for f in files]
    study = source[0].StudyInstanceUID
    instances = dimse.qido(ds_id, f"/studies/{study}/instances")
    assert {i["00080018"]["Value"][0] for i in instances} == {s.SOPInstanceUID for s in source}
    for s in source:
        assert np.array_equal(wado_pixels(dimse, ds_id, s), s.pixel_array)


def test_compressed_test_files_store_pixel_exact(dimse: Dimse) -> None:
    ds_id = active_datastore(dimse.client, "STORE2")
    for name in COMPRESSED:
        source = pydicom.dcmread(get_testdata_file(name, download=False))
        syntax = str(source.file_meta.TransferSyntaxUID)
        assoc = dimse.associate("STORE2", sop=str(source.SOPClassUID), syntaxes=[syntax])
        try:
            answer = assoc.send_c_store(source)
        finally:
            assoc.release()
        assert answer.Status in (0x0000, 0xB000, 0xB006, 0xB007), (name, answer)
        assert np.array_equal(wado_pixels(dimse, ds_id, source), source.pixel_array), name


def test_300_instances_over_one_association_make_one_version(dimse: Dimse) -> None:
    ds_id = active_datastore(dimse.client, "STORE3")
    files = [read(f) for f in make_ct_series(300, rows=16, cols=16, seed=803, patient_id="DIMSE3")]
    assoc = dimse.associate("STORE3")
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in files]
    finally:
        assoc.release()
    assert statuses == [0] * 300
    sets = dimse.image_sets(ds_id)
    assert len(sets) == 1
    assert dimse.versions(ds_id, sets[0]["imageSetId"]) == 1
    series = dimse.qido(ds_id, f"/studies/{files[0].StudyInstanceUID}/series")
    assert series[0]["00201209"]["Value"] == [300]


def test_a_bad_data_set_fails_its_c_store_and_the_association_goes_on(dimse: Dimse) -> None:
    ds_id = active_datastore(dimse.client, "STORE4")
    good = [read(f) for f in make_ct_series(3, rows=16, cols=16, seed=804, patient_id="DIMSE4")]
    bad = read(make_ct_series(1, rows=16, cols=16, seed=805, patient_id="DIMSE4B")[0])
    del bad.StudyInstanceUID  # no study: the import core cannot place it
    assoc = dimse.associate("STORE4")
    try:
        first = assoc.send_c_store(good[0]).Status
        failed = assoc.send_c_store(bad)
        rest = [assoc.send_c_store(ds).Status for ds in good[1:]]
    finally:
        assoc.release()
    assert first == 0 and rest == [0, 0]
    assert 0xC000 <= failed.Status <= 0xCFFF, failed
    assert "ErrorComment" in failed
    instances = dimse.qido(ds_id, f"/studies/{good[0].StudyInstanceUID}/instances")
    assert len(instances) == 3


def test_ten_parallel_associations(dimse: Dimse) -> None:
    ds_id = active_datastore(dimse.client, "STORE5")
    errors: list[BaseException] = []
    series = [
        [read(f) for f in make_ct_series(8, rows=16, cols=16, seed=900 + n, patient_id=f"PAR{n}")]
        for n in range(10)
    ]

    def send(files: list[pydicom.Dataset]) -> None:
        try:
            assoc = dimse.associate("STORE5", title="OHPARALLEL")
            try:
                assert [assoc.send_c_store(ds).Status for ds in files] == [0] * len(files)
            finally:
                assoc.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(files,)) for files in series]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    studies = dimse.qido(ds_id, "/studies")
    assert len(studies) == 10
    assert sum(s["00201208"]["Value"][0] for s in studies) == 80


# ----------------------------------------------------------------------------------------- robustness


def test_garbage_and_half_open_connections_never_block_the_listener(dimse: Dimse) -> None:
    garbage = socket.create_connection(("127.0.0.1", dimse.port))
    garbage.sendall(bytes(range(256)) * 8)
    half = socket.create_connection(("127.0.0.1", dimse.port))
    half.sendall(b"\x01\x00\x00\x00\x00\xcd\x00\x01")  # an A-ASSOCIATE-RQ header, then nothing
    try:
        started = time.monotonic()
        assoc = dimse.associate("OPENHI")
        try:
            assert assoc.send_c_echo().Status == 0
        finally:
            assoc.release()
        assert time.monotonic() - started < 5
    finally:
        garbage.close()
        half.close()
    assoc = dimse.associate("OPENHI")
    assoc.release()


def test_abort_mid_transfer_keeps_what_was_acknowledged_only(dimse: Dimse) -> None:
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu import P_DATA_TF

    ds_id = active_datastore(dimse.client, "STORE6")
    files = [read(f) for f in make_ct_series(4, rows=64, cols=64, seed=806, patient_id="DIMSE6")]
    assoc = dimse.associate("STORE6")
    acked = [assoc.send_c_store(ds).Status for ds in files[:3]]
    # the fourth instance: its command and a first fragment of its data set, then an A-ABORT
    last = files[3]
    primitive = C_STORE()
    primitive.MessageID = 99
    primitive.AffectedSOPClassUID = last.SOPClassUID
    primitive.AffectedSOPInstanceUID = last.SOPInstanceUID
    primitive.Priority = 0
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, last, write_like_original=False)
    encoded = buffer.getvalue()
    primitive.DataSet = io.BytesIO(encoded[encoded.index(b"\x08\x00") :])  # past the file meta
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    context = assoc.accepted_contexts[-1].context_id
    pdus = list(message.encode_msg(context, 1024))
    sock = assoc.dul.socket.socket
    for p_data in pdus[: len(pdus) // 2]:
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        sock.sendall(pdu.encode())
    assoc.abort()
    assert acked == [0, 0, 0]
    dimse.associate("OPENHI").release()  # the next association works
    deadline = time.monotonic() + 20
    while True:
        instances = dimse.qido(ds_id, f"/studies/{files[0].StudyInstanceUID}/instances")
        if len(instances) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {i["00080018"]["Value"][0] for i in instances} == {ds.SOPInstanceUID for ds in files[:3]}


@pytest.mark.embedded_only("kills its own embedded server")
def test_an_acknowledged_instance_survives_kill_9(tmp_path: Path) -> None:
    port = free_port()
    server = RunningServer(tmp_path / "data", extra_args=["--dicom-port", str(port)]).start()
    try:
        wait_port(port)
        d = Dimse(server, port)
        ds_id = active_datastore(d.client, "KILLED")
        files = [read(f) for f in make_ct_series(5, rows=16, cols=16, seed=807, patient_id="DIMSE7")]
        assoc = d.associate("KILLED")
        assert [assoc.send_c_store(ds).Status for ds in files] == [0] * 5
        assert len(list((tmp_path / "data" / "dimse-spool").glob("*/*.dcm"))) == 5  # durable, not committed
        server.kill()  # the association is still open: nothing was committed yet
        assoc.abort()
        server.start()
        wait_port(port)
        deadline = time.monotonic() + 30
        while True:
            instances = d.qido(ds_id, f"/studies/{files[0].StudyInstanceUID}/instances")
            if len(instances) == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {i["00080018"]["Value"][0] for i in instances} == {ds.SOPInstanceUID for ds in files}
        assert not list((tmp_path / "data" / "dimse-spool").glob("*/*.dcm"))
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------- storage SCU


def test_openhi_send_pushes_a_study_to_a_peer_pixel_exact(dimse: Dimse, tmp_path: Path) -> None:
    """``openhi send`` reads a study over DICOMweb and C-STOREs it to a peer: here the server's own
    DICOM port, called by another datastore's name."""
    source_ds = active_datastore(dimse.client, "SENDSRC")
    target_ds = active_datastore(dimse.client, "SENDDST")
    files = [read(f) for f in make_ct_series(4, rows=32, cols=32, seed=808, patient_id="DIMSE8")]
    assoc = dimse.associate("SENDSRC")
    try:
        assert [assoc.send_c_store(ds).Status for ds in files] == [0] * 4
    finally:
        assoc.release()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openhi",
            "send",
            "--datastore",
            source_ds,
            "--study",
            files[0].StudyInstanceUID,
            "--to",
            f"SENDDST=127.0.0.1:{dimse.port}",
            "--calling-aet",
            "OHTEST",
            "--endpoint",
            dimse.server.endpoint,
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sent 4 of 4" in done.stdout
    for ds in files:
        assert np.array_equal(wado_pixels(dimse, target_ds, ds), ds.pixel_array)
    command = [
        sys.executable,
        "-m",
        "openhi",
        "send",
        "--datastore",
        source_ds,
        "--study",
        files[0].StudyInstanceUID,
    ]
    command += ["--to", f"SENDDST=127.0.0.1:{dimse.port}", "--calling-aet", "INTRUDER"]
    refused = subprocess.run([*command, "--endpoint", dimse.server.endpoint], capture_output=True, text=True)
    assert refused.returncode != 0 and "not established" in refused.stderr
