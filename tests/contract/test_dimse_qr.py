"""DIMSE Query/Retrieve through a real server: C-FIND against QIDO-RS (and Orthanc), C-MOVE to Storage SCPs
started here, C-GET on the requesting association, with pynetdicom and dcmtk's findscu / movescu / getscu.

The corpus (4 patients, 6 studies, 8 series, 174 instances: CT, MR, one 3-frame instance, a series of 150) is imported into a
datastore named ``QRTEST``; associations call that name as their called AE title. Every retrieved
instance is compared pixel for pixel with the file it came from.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import CT_IMAGE_STORAGE, make_instance, uid
from openhi.testing import RunningServer
from openhi.testing.plugin import deployment
from openhi.testing.server import free_port
from orthanc_peer import ORTHANC_AET, orthanc_dicom, store  # noqa: F401  (orthanc_dicom: the fixture)

pytestmark = pytest.mark.deployment_aware  # the corpus fixture starts the selected deployment

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ELE, IVLE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
HTJ2K_SYNTAXES = ["1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"]
CALLED = "QRTEST"
#: instances of the series that C-CANCEL interrupts (tiny images: a long answer, a short import)
BULK = 150
#: (study key, PatientID, PatientName, StudyDate, AccessionNumber, [(series key, Modality, number, instances)])
STUDIES = [
    ("A", "DOEJ", "Doe^John", "20190315", "ACC-A", [("A1", "CT", 1, 5), ("A2", "MR", 2, 3)]),
    ("B", "DOEJ", "Doe^John", "20210701", "ACC-B", [("B1", "MR", 1, 4)]),
    ("C", "DOEJA", "DOE^JANE", "20221130", "ACC-C", [("C1", "CT", 1, 4)]),
    ("D", "SMA", "Smith^Ann", "20240229", "ACC-D", [("D1", "CT", 3, 3), ("D2", "MR", 1, 2)]),
    ("E", "SMA", "Smith^Ann", "20200101", "ACC-E", [("E1", "CT", 2, 3)]),
    ("F", "BULK", "Many^Images", "20230505", "ACC-F", [("F1", "CT", 1, BULK)]),
]


# ------------------------------------------------------------------------------------ Storage SCPs


@dataclass
class StorageSCP:
    """A pynetdicom Storage SCP (the C-MOVE destination): every received dataset by SOP Instance UID."""

    aet: str
    syntaxes: list[str]
    port: int = field(default_factory=free_port)
    received: dict[str, Dataset] = field(default_factory=dict)
    syntax_of: dict[str, str] = field(default_factory=dict)
    server: Any = None

    def start(self) -> StorageSCP:
        ae = AE(ae_title=self.aet)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, self.syntaxes)
        lock = threading.Lock()

        def on_store(event: Any) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            with lock:
                self.received[str(ds.SOPInstanceUID)] = ds
                self.syntax_of[str(ds.SOPInstanceUID)] = str(event.context.transfer_syntax)
            return 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        return self

    def clear(self) -> None:
        self.received.clear()
        self.syntax_of.clear()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()


@dataclass
class Corpus:
    server: RunningServer
    dicom_port: int
    ds: str
    files: dict[str, bytes]  # SOP Instance UID -> P10 file
    study: dict[str, str]  # study key -> StudyInstanceUID
    series: dict[str, str]  # series key -> SeriesInstanceUID
    sops: dict[str, list[str]]  # series key -> SOP Instance UIDs
    dest: StorageSCP
    ele_only: StorageSCP

    def qido(self, path: str, query: dict[str, str]) -> list[dict[str, Any]]:
        url = f"{self.server.endpoint}/datastore/{self.ds}{path}"
        response = httpx.get(url, params=query, headers={"Accept": "application/dicom+json"}, timeout=60)
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body


def _files() -> tuple[dict[str, bytes], dict[str, str], dict[str, str], dict[str, list[str]]]:
    files: dict[str, bytes] = {}
    studies: dict[str, str] = {}
    series_uids: dict[str, str] = {}
    sops: dict[str, list[str]] = {}
    for key, pid, name, date, acc, series in STUDIES:
        studies[key] = uid("qr-study", key)
        for skey, modality, number, count in series:
            series_uids[skey] = uid("qr-series", skey)
            sops[skey] = []
            for i in range(count):
                sop = uid("qr-sop", skey, i)
                sops[skey].append(sop)
                files[sop] = make_instance(
                    rows=4 if skey == "F1" else 16,
                    cols=4 if skey == "F1" else 16,
                    frames=3 if (skey, i) == ("A1", 0) else 1,
                    seed=len(files),
                    sop_class=CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE,
                    study_uid=studies[key],
                    series_uid=series_uids[skey],
                    sop_uid=sop,
                    PatientName=name,
                    PatientID=pid,
                    StudyDate=date,
                    StudyTime="101500",
                    AccessionNumber=acc,
                    StudyID=f"S{key}",
                    Modality=modality,
                    SeriesNumber=str(number),
                    InstanceNumber=str(i + 1),
                )
    return files, studies, series_uids, sops


@pytest.fixture(scope="module")
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    """The selected deployment (embedded, or distributed like the plugin's) with the DICOM port on."""
    dest = StorageSCP("DEST", [ELE, IVLE, *HTJ2K_SYNTAXES]).start()
    ele_only = StorageSCP("ELEONLY", [ELE, IVLE]).start()
    dicom_port = free_port()
    args = [
        "--dicom-port", str(dicom_port),
        "--dicom-peer", f"DEST=127.0.0.1:{dest.port}",
        "--dicom-peer", f"ELEONLY=127.0.0.1:{ele_only.port}",
        "--dicom-peer", "NOBODY=127.0.0.1:9",
    ]  # fmt: skip
    server: Any
    if deployment(request.config) == "distributed":
        from openhi.testing.distributed import DistributedDeployment

        server = DistributedDeployment(tmp_path_factory.mktemp("dimse-qr"), extra_args=args).start()
    else:
        server = RunningServer(tmp_path_factory.mktemp("dimse-qr"), extra_args=args).start()
    try:
        client = server.client()
        ds = active_datastore(client, CALLED)
        files, studies, series_uids, sops = _files()
        result = run_import(client, server, ds, {f"{k}.dcm": v for k, v in files.items()})
        assert result["job"]["jobStatus"] == "COMPLETED", result
        assert len(result["success"]) == len(files), result["failure"]
        yield Corpus(server, dicom_port, ds, files, studies, series_uids, sops, dest, ele_only)
    finally:
        server.stop()
        if hasattr(server, "close"):
            server.close()
        dest.stop()
        ele_only.stop()


# ------------------------------------------------------------------------------------ SCU helpers


def associate(corpus: Corpus, contexts: list[str], port: int | None = None, called: str = CALLED) -> Any:
    ae = AE(ae_title="QRSCU")
    for context in contexts:
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", port or corpus.dicom_port, ae_title=called)
    assert assoc.is_established
    return assoc


def c_find(
    corpus: Corpus,
    keys: dict[str, Any],
    model: str = StudyRootQueryRetrieveInformationModelFind,
    port: int | None = None,
    called: str = CALLED,
) -> tuple[list[Dataset], int]:
    """The identifiers of a C-FIND (to openhi, or to ``port`` / ``called``) and its final status."""
    ident = Dataset()
    for keyword, value in keys.items():
        setattr(ident, keyword, value)
    assoc = associate(corpus, [model], port, called)
    try:
        found: list[Dataset] = []
        final = -1
        for status, answer in assoc.send_c_find(ident, model):
            if status.Status == 0xFF00:
                found.append(answer)
            else:
                final = int(status.Status)
        return found, final
    finally:
        assoc.release()


def uids(found: list[Dataset], keyword: str) -> set[str]:
    return {str(getattr(d, keyword)) for d in found}


def qido_uids(objs: list[dict[str, Any]], tag: str) -> set[str]:
    return {o[tag]["Value"][0] for o in objs}


def pixels(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.pixel_array)


def assert_pixel_exact(corpus: Corpus, received: dict[str, Dataset], sop_uids: list[str]) -> None:
    assert set(received) == set(sop_uids)
    for sop in sop_uids:
        source = pydicom.dcmread(io.BytesIO(corpus.files[sop]))
        got = received[sop]
        assert got.SOPClassUID == source.SOPClassUID and got.StudyInstanceUID == source.StudyInstanceUID
        assert np.array_equal(pixels(got), pixels(source)), sop


# ------------------------------------------------------------------------------------ C-FIND


STUDY_QUERIES: list[dict[str, str]] = [
    {"PatientID": "DOEJ"},
    {"PatientID": "SMA"},
    {"PatientID": "NOBODY"},
    {"StudyDate": "20200101-20221130"},
    {"StudyDate": "-20200101"},
    {"AccessionNumber": "ACC-C"},
    {"PatientName": "Doe*"},
    {"PatientName": "D?E^*"},
    {"ModalitiesInStudy": "MR"},
]


@pytest.mark.parametrize("query", STUDY_QUERIES, ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()))
def test_find_studies_like_qido(corpus: Corpus, query: dict[str, str]) -> None:
    found, final = c_find(corpus, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", **query})
    assert final == 0x0000
    expected = qido_uids(corpus.qido("/studies", query), "0020000D")
    assert uids(found, "StudyInstanceUID") == expected
    if not expected:
        assert query == {"PatientID": "NOBODY"}  # every other query finds something


#: Orthanc matches PN case-insensitively (its CaseSensitivePN defaults to false; PS3.4 C.2.2.2.1 allows
#: either); openhi's wildcard matching is case-sensitive, as QIDO-RS's: these are compared with openhi's
#: QIDO-RS only (above)
ORTHANC_CASE_INSENSITIVE = ({"PatientName": "Doe*"}, {"PatientName": "D?E^*"})


@pytest.fixture(scope="module")
def orthanc_peer(corpus: Corpus, orthanc_dicom: Any) -> Any:  # noqa: F811
    """Orthanc's DICOM port with the same corpus (stored through its REST API)."""
    store(orthanc_dicom, corpus.files.values())
    return orthanc_dicom


@pytest.mark.parametrize(
    "query",
    [q for q in STUDY_QUERIES if q not in ORTHANC_CASE_INSENSITIVE],
    ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()),
)
def test_find_studies_like_orthanc(corpus: Corpus, orthanc_peer: Any, query: dict[str, str]) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", **query}
    ours, final = c_find(corpus, keys)
    theirs, their_final = c_find(corpus, keys, port=orthanc_peer.dicom_port, called=ORTHANC_AET)
    assert (final, their_final) == (0x0000, 0x0000)
    assert uids(ours, "StudyInstanceUID") == uids(theirs, "StudyInstanceUID")


@pytest.mark.parametrize(
    "keys",
    [
        {"QueryRetrieveLevel": "SERIES", "Modality": "MR", "SeriesInstanceUID": ""},
        {"QueryRetrieveLevel": "IMAGE", "SOPClassUID": MR_IMAGE_STORAGE, "SOPInstanceUID": ""},
        {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": ""},
    ],
    ids=lambda k: str(k["QueryRetrieveLevel"]),
)
def test_find_other_levels_like_orthanc(corpus: Corpus, orthanc_peer: Any, keys: dict[str, str]) -> None:
    model = PatientRootQueryRetrieveInformationModelFind
    unique = {"SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID", "PATIENT": "PatientID"}[
        keys["QueryRetrieveLevel"]
    ]
    if keys["QueryRetrieveLevel"] != "PATIENT":
        model = StudyRootQueryRetrieveInformationModelFind
    ours, _ = c_find(corpus, keys, model)
    theirs, _ = c_find(corpus, keys, model, port=orthanc_peer.dicom_port, called=ORTHANC_AET)
    assert ours and uids(ours, unique) == uids(theirs, unique)


def test_find_study_returns_exactly_the_requested_keys(corpus: Corpus) -> None:
    keys = {
        "QueryRetrieveLevel": "STUDY",
        "PatientID": "DOEJ",
        "PatientName": "",
        "StudyDate": "",
        "NumberOfStudyRelatedInstances": "",
        "ModalitiesInStudy": "",
        "PatientAge": "",
        "StudyInstanceUID": corpus.study["A"],
    }
    found, final = c_find(corpus, keys)
    assert final == 0x0000 and len(found) == 1
    answer = found[0]
    returned = {e.keyword for e in answer}
    assert returned == set(keys) | {"RetrieveAETitle"}
    assert str(answer.PatientName) == "Doe^John" and answer.StudyDate == "20190315"
    assert int(answer.NumberOfStudyRelatedInstances) == 8
    assert sorted(answer.ModalitiesInStudy) == ["CT", "MR"]
    assert answer.RetrieveAETitle == "OPENHI"


@pytest.mark.parametrize(
    ("keys", "level", "path", "tag", "keyword"),
    [
        ({"Modality": "MR"}, "SERIES", "/series", "0020000E", "SeriesInstanceUID"),
        ({"SeriesNumber": "1"}, "SERIES", "/series", "0020000E", "SeriesInstanceUID"),
        ({"PatientID": "SMA"}, "SERIES", "/series", "0020000E", "SeriesInstanceUID"),
        ({"SOPClassUID": MR_IMAGE_STORAGE}, "IMAGE", "/instances", "00080018", "SOPInstanceUID"),
        ({"InstanceNumber": "2"}, "IMAGE", "/instances", "00080018", "SOPInstanceUID"),
    ],
)
def test_find_series_and_images_like_qido(
    corpus: Corpus, keys: dict[str, str], level: str, path: str, tag: str, keyword: str
) -> None:
    found, final = c_find(corpus, {"QueryRetrieveLevel": level, keyword: "", **keys})
    assert final == 0x0000 and found
    assert uids(found, keyword) == qido_uids(corpus.qido(path, {**keys, "limit": "1000"}), tag)


def test_find_in_one_study_and_series(corpus: Corpus) -> None:
    found, _ = c_find(
        corpus,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": corpus.study["A"], "SeriesInstanceUID": ""},
    )
    assert uids(found, "SeriesInstanceUID") == {corpus.series["A1"], corpus.series["A2"]}
    assert uids(found, "StudyInstanceUID") == {corpus.study["A"]}
    found, _ = c_find(
        corpus,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": corpus.study["A"],
            "SeriesInstanceUID": corpus.series["A1"],
            "SOPInstanceUID": "",
            "NumberOfFrames": "",
        },
    )
    assert [d.SOPInstanceUID for d in found] == corpus.sops["A1"]  # by InstanceNumber
    assert int(found[0].NumberOfFrames) == 3


def test_find_uid_list(corpus: Corpus) -> None:
    wanted = [corpus.study["B"], corpus.study["D"]]
    found, _ = c_find(corpus, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": wanted})
    assert uids(found, "StudyInstanceUID") == set(wanted)


def test_find_patients(corpus: Corpus) -> None:
    found, final = c_find(
        corpus,
        {
            "QueryRetrieveLevel": "PATIENT",
            "PatientID": "",
            "PatientName": "",
            "NumberOfPatientRelatedStudies": "",
            "NumberOfPatientRelatedInstances": "",
        },
        PatientRootQueryRetrieveInformationModelFind,
    )
    assert final == 0x0000
    by_id = {d.PatientID: d for d in found}
    assert set(by_id) == {"DOEJ", "DOEJA", "SMA", "BULK"}
    assert str(by_id["DOEJ"].PatientName) == "Doe^John"
    assert int(by_id["DOEJ"].NumberOfPatientRelatedStudies) == 2
    assert int(by_id["DOEJ"].NumberOfPatientRelatedInstances) == 12
    found, _ = c_find(
        corpus, {"QueryRetrieveLevel": "PATIENT", "PatientName": "Smith*", "PatientID": ""},
        PatientRootQueryRetrieveInformationModelFind,
    )  # fmt: skip
    assert uids(found, "PatientID") == {"SMA"}


def test_find_refusals(corpus: Corpus) -> None:
    _, final = c_find(corpus, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""})  # Study Root
    assert final == 0xA900
    _, final = c_find(corpus, {"QueryRetrieveLevel": "WARD", "PatientID": ""})
    assert final == 0xA900
    _, final = c_find(corpus, {"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-13-45"})
    assert final == 0xA900
    _, final = c_find(corpus, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.x"})
    assert final == 0xA900


def test_find_cancel(corpus: Corpus) -> None:
    """A C-CANCEL sent once the first match has arrived ends the C-FIND with 0xFE00 before its
    150 matches have all been sent."""
    ident = Dataset()
    ident.QueryRetrieveLevel = "IMAGE"
    ident.SeriesInstanceUID = corpus.series["F1"]
    ident.SOPInstanceUID = ""
    model = StudyRootQueryRetrieveInformationModelFind
    outcomes = []
    for attempt in range(5):  # the cancel races the answers: the server may have sent them all first
        assoc = associate(corpus, [model])
        try:
            statuses = []
            for status, _ in assoc.send_c_find(ident, model, msg_id=7 + attempt):
                statuses.append(int(status.Status))
                if len(statuses) == 1:
                    assoc.send_c_cancel(7 + attempt, query_model=model)
        finally:
            assoc.release()
        outcomes.append((statuses[-1], len(statuses)))
        if statuses[-1] == 0xFE00:
            break
        assert statuses[-1] == 0x0000 and len(statuses) == BULK + 1, outcomes  # too late: every match
    if outcomes[-1][0] != 0xFE00:  # C-GET's cancel (sub-operations take longer) is tested below
        pytest.skip(f"the C-CANCEL arrived after all {BULK} answers in every attempt: {outcomes}")
    assert outcomes[-1][1] < BULK, outcomes


def _findscu(corpus: Corpus, out: Path, *keys: str) -> list[Dataset]:
    out.mkdir()
    args = ["findscu", "-S", "-aec", CALLED, "-X", "--output-directory", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run(
        [*args, "127.0.0.1", str(corpus.dicom_port)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.mark.skipif(shutil.which("findscu") is None, reason="dcmtk is not installed")
def test_findscu_by_patient_id(corpus: Corpus, tmp_path: Path) -> None:
    found = _findscu(
        corpus,
        tmp_path / "find",
        "QueryRetrieveLevel=STUDY",
        "PatientID=DOEJ",
        "StudyInstanceUID",
        "StudyDate",
    )
    assert uids(found, "StudyInstanceUID") == {corpus.study["A"], corpus.study["B"]}
    assert {d.StudyDate for d in found} == {"20190315", "20210701"}


# ------------------------------------------------------------------------------------ C-MOVE


def c_move(corpus: Corpus, destination: str, keys: dict[str, Any]) -> list[Dataset]:
    ident = Dataset()
    for keyword, value in keys.items():
        setattr(ident, keyword, value)
    assoc = associate(corpus, [StudyRootQueryRetrieveInformationModelMove])
    try:
        return [
            status
            for status, _ in assoc.send_c_move(ident, destination, StudyRootQueryRetrieveInformationModelMove)
        ]
    finally:
        assoc.release()


def test_move_study_to_a_peer_as_stored(corpus: Corpus) -> None:
    corpus.dest.clear()
    statuses = c_move(corpus, "DEST", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": corpus.study["A"]})
    final = statuses[-1]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 8
    assert final.NumberOfFailedSuboperations == 0
    pending = [s for s in statuses if s.Status == 0xFF00]
    assert [s.NumberOfRemainingSuboperations for s in pending] == list(range(7, -1, -1))
    assert_pixel_exact(corpus, corpus.dest.received, corpus.sops["A1"] + corpus.sops["A2"])
    assert set(corpus.dest.syntax_of.values()) <= set(HTJ2K_SYNTAXES)  # the stored syntax, not decoded


def _send(corpus: Corpus, body: dict[str, Any]) -> httpx.Response:
    """POST /openhi/datastore/{ds}/send, signed (openhi's own routes always are)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{corpus.server.endpoint}/openhi/datastore/{corpus.ds}/send"
    data = json.dumps(body).encode()
    request = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("test", "test"), "medical-imaging", "us-east-1").add_auth(request)
    return httpx.post(url, content=data, headers=dict(request.headers.items()), timeout=120)


def test_the_send_route_pushes_a_study_to_a_known_peer(corpus: Corpus) -> None:
    corpus.dest.clear()
    answer = _send(corpus, {"destination": "DEST", "studyInstanceUID": corpus.study["A"]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "destination": "DEST", "completed": 8, "failed": 0, "warning": 0, "failedSOPInstanceUIDs": []
    }  # fmt: skip
    assert_pixel_exact(corpus, corpus.dest.received, corpus.sops["A1"] + corpus.sops["A2"])
    corpus.ele_only.clear()
    one = _send(
        corpus,
        {
            "destination": "ELEONLY",
            "studyInstanceUID": corpus.study["A"],
            "seriesInstanceUID": corpus.series["A2"],
        },
    )
    assert one.status_code == 200 and one.json()["completed"] == len(corpus.sops["A2"])
    assert_pixel_exact(corpus, corpus.ele_only.received, corpus.sops["A2"])  # decoded for this peer


def test_the_send_route_refuses_unknown_peers_and_bad_bodies(corpus: Corpus) -> None:
    unknown = _send(corpus, {"destination": "ELSEWHERE", "studyInstanceUID": corpus.study["A"]})
    assert unknown.status_code == 400 and "not a known DICOM peer" in unknown.json()["message"]
    assert _send(corpus, {"destination": "DEST", "studyInstanceUID": "1.2.x"}).status_code == 400
    assert _send(corpus, {"destination": "DEST"}).status_code == 400
    missing = _send(corpus, {"destination": "DEST", "studyInstanceUID": "1.2.3.4.5.6.999"})
    assert missing.status_code == 404
    refused = _send(corpus, {"destination": "NOBODY", "studyInstanceUID": corpus.study["A"]})
    assert refused.status_code == 400 and "refused or did not answer" in refused.json()["message"]


def test_move_series_to_a_peer_that_takes_only_uncompressed(corpus: Corpus) -> None:
    corpus.ele_only.clear()
    statuses = c_move(
        corpus,
        "ELEONLY",
        {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": [corpus.series["D1"], corpus.series["D2"]]},
    )
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 5
    assert_pixel_exact(corpus, corpus.ele_only.received, corpus.sops["D1"] + corpus.sops["D2"])
    assert set(corpus.ele_only.syntax_of.values()) <= {ELE, IVLE}


def test_move_refusals(corpus: Corpus) -> None:
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": corpus.study["B"]}
    assert [s.Status for s in c_move(corpus, "STRANGER", keys)] == [0xA801]
    assert c_move(corpus, "DEST", {"QueryRetrieveLevel": "STUDY"})[-1].Status == 0xA900
    nothing = c_move(corpus, "DEST", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3.4"})
    assert nothing[-1].Status == 0x0000 and nothing[-1].NumberOfCompletedSuboperations == 0


@pytest.mark.skipif(shutil.which("movescu") is None, reason="dcmtk is not installed")
def test_movescu_image_level(corpus: Corpus) -> None:
    corpus.dest.clear()
    sop = corpus.sops["C1"][1]
    done = subprocess.run(
        [
            "movescu", "-S", "-aec", CALLED, "-aem", "DEST",
            "-k", "QueryRetrieveLevel=IMAGE",
            "-k", f"StudyInstanceUID={corpus.study['C']}",
            "-k", f"SeriesInstanceUID={corpus.series['C1']}",
            "-k", f"SOPInstanceUID={sop}",
            "127.0.0.1", str(corpus.dicom_port),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_pixel_exact(corpus, corpus.dest.received, [sop])


# ------------------------------------------------------------------------------------ C-GET


def c_get(
    corpus: Corpus,
    keys: dict[str, Any],
    storage: list[str],
    model: str = StudyRootQueryRetrieveInformationModelGet,
) -> tuple[list[Dataset], dict[str, Dataset]]:
    received: dict[str, Dataset] = {}

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    ident = Dataset()
    for keyword, value in keys.items():
        setattr(ident, keyword, value)
    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(model)
    for sop_class in storage:
        ae.add_requested_context(sop_class, [ELE, *HTJ2K_SYNTAXES])
    roles = [build_role(sop_class, scp_role=True) for sop_class in storage]
    assoc = ae.associate(
        "127.0.0.1",
        corpus.dicom_port,
        ae_title=CALLED,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_get(ident, model)], received
    finally:
        assoc.release()


def test_get_study(corpus: Corpus) -> None:
    statuses, received = c_get(
        corpus,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": corpus.study["D"]},
        [CTImageStorage, MRImageStorage],
    )
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 5
    assert_pixel_exact(corpus, received, corpus.sops["D1"] + corpus.sops["D2"])


def test_get_patient_goes_on_past_a_sop_class_without_context(corpus: Corpus) -> None:
    statuses, received = c_get(
        corpus,
        {"QueryRetrieveLevel": "PATIENT", "PatientID": "DOEJ"},
        [CTImageStorage],
        PatientRootQueryRetrieveInformationModelGet,
    )
    final = statuses[-1]
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == 5 and final.NumberOfFailedSuboperations == 7
    assert_pixel_exact(corpus, received, corpus.sops["A1"])


def test_get_cancel(corpus: Corpus) -> None:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = [corpus.study[k] for k in "ABCDE"]
    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc_box: list[Any] = []

    def on_store(event: Any) -> int:
        if len(assoc_box) == 1:
            assoc_box.append("cancelled")
            assoc_box[0].send_c_cancel(9, query_model=StudyRootQueryRetrieveInformationModelGet)
            time.sleep(0.2)
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        corpus.dicom_port,
        ae_title=CALLED,
        ext_neg=[build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assoc_box.append(assoc)
    try:
        statuses = [
            s for s, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet, msg_id=9)
        ]
    finally:
        assoc.release()
    assert statuses[-1].Status == 0xFE00
    assert statuses[-1].NumberOfRemainingSuboperations > 0


@pytest.mark.skipif(shutil.which("getscu") is None, reason="dcmtk is not installed")
def test_getscu_series(corpus: Corpus, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            "getscu", "-S", "-aec", CALLED, "-od", str(tmp_path),
            "-k", "QueryRetrieveLevel=SERIES",
            "-k", f"StudyInstanceUID={corpus.study['E']}",
            "-k", f"SeriesInstanceUID={corpus.series['E1']}",
            "127.0.0.1", str(corpus.dicom_port),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    received = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in tmp_path.iterdir())}
    assert_pixel_exact(corpus, received, corpus.sops["E1"])
