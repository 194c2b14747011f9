"""Contract tests: DICOMweb STOW-RS (``POST /datastore/{id}/studies[/{study}]``) through a real server."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import uuid
from typing import Any

import httpx
import pydicom
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from contract.helpers import active_datastore
from dicom_factory import garbage_file, make_ct_series, make_instance, uid

DICOM_JSON = "application/dicom+json"
CT = "1.2.840.10008.5.1.4.1.1.2"


def multipart(files: list[bytes], types: list[str] | None = None) -> tuple[bytes, str]:
    """A multipart/related body of ``files`` and its Content-Type."""
    boundary = f"stow-{uuid.uuid4().hex}"
    chunks = [b"preamble, ignored\r\n"]
    for n, data in enumerate(files):
        kind = types[n] if types else "application/dicom"
        chunks.append(f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\nepilogue, ignored".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def post(server: Any, path: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    url = f"{server.endpoint}{path}"
    all_headers = {
        "Content-Type": content_type,
        "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
        **headers,
    }
    request = AWSRequest(method="POST", url=url, data=body, headers=all_headers)
    SigV4Auth(Credentials("test", "test"), "medical-imaging", "us-east-1").add_auth(request)
    return httpx.post(url, content=body, headers=dict(request.headers.items()), timeout=300)


def stow(server: Any, ds_id: str, files: list[bytes], study: str | None = None) -> httpx.Response:
    body, ctype = multipart(files)
    path = f"/datastore/{ds_id}/studies" + (f"/{study}" if study else "")
    return post(server, path, body, ctype)


def values(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value", []))


def referenced(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return values(answer, "00081199")


def failed(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return values(answer, "00081198")


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def metadata(client: Any, ds_id: str, set_id: str) -> dict[str, Any]:
    blob = client.get_image_set_metadata(datastoreId=ds_id, imageSetId=set_id)["imageSetMetadataBlob"].read()
    doc: dict[str, Any] = json.loads(gzip.decompress(blob))
    return doc


@pytest.fixture(scope="module")
def datastore(openhi_server: Any) -> str:
    return active_datastore(openhi_server.client(), "stow")


def test_a_multipart_request_stores_one_primary_image_set(openhi_server: Any, datastore: str) -> None:
    files = make_ct_series(4, rows=32, cols=32, seed=101)
    source = [read(f) for f in files]
    study, series = str(source[0].StudyInstanceUID), str(source[0].SeriesInstanceUID)
    resp = stow(openhi_server, datastore, files)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == DICOM_JSON
    answer = resp.json()
    base = f"{openhi_server.endpoint}/datastore/{datastore}"
    assert values(answer, "00081190") == [f"{base}/studies/{study}"]
    assert "00081198" not in answer and "00081196" not in answer
    refs = referenced(answer)
    assert [values(r, "00081155") for r in refs] == [[str(d.SOPInstanceUID)] for d in source]
    assert all(values(r, "00081150") == [CT] for r in refs)
    assert [values(r, "00081190") for r in refs] == [
        [f"{base}/studies/{study}/series/{series}/instances/{d.SOPInstanceUID}"] for d in source
    ]
    set_ids = {values(r, "00091001")[0] for r in refs}
    assert len(set_ids) == 1 and all(values(r, "00090010") == ["OPENHI"] for r in refs)
    set_id = set_ids.pop()
    client = openhi_server.client()
    found = client.search_image_sets(
        datastoreId=datastore,
        searchCriteria={"filters": [{"values": [{"DICOMStudyInstanceUID": study}], "operator": "EQUAL"}]},
    )["imageSetsMetadataSummaries"]
    assert [(s["imageSetId"], s["isPrimary"], s["version"]) for s in found] == [(set_id, True, 1)]
    doc = metadata(client, datastore, set_id)
    instances = doc["Study"]["Series"][series]["Instances"]
    assert sorted(instances) == sorted(str(d.SOPInstanceUID) for d in source)
    assert doc["Patient"]["DICOM"]["PatientID"] == "PAT1"


def test_a_garbage_part_in_the_middle_is_a_202_with_its_failure(openhi_server: Any, datastore: str) -> None:
    good = [make_instance(seed=102), make_instance(seed=103)]
    resp = stow(openhi_server, datastore, [good[0], garbage_file(2048), good[1]])
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert [values(r, "00081155") for r in referenced(answer)] == [
        [str(read(g).SOPInstanceUID)] for g in good
    ]
    [failure] = failed(answer)
    assert failure == {"00081197": {"vr": "US", "Value": [0xC000]}}  # no UIDs: nothing could be read


def test_all_bad_is_a_409_with_every_failure(openhi_server: Any, datastore: str) -> None:
    no_study = make_instance(seed=104, StudyInstanceUID=None)
    resp = stow(openhi_server, datastore, [garbage_file(100), no_study])
    assert resp.status_code == 409, resp.text
    answer = resp.json()
    assert "00081199" not in answer and answer["00081190"] == {"vr": "UR"}
    first, second = failed(answer)
    assert values(first, "00081197") == [0xC000] and "00081155" not in first
    assert values(second, "00081155") == [str(read(no_study).SOPInstanceUID)]
    assert values(second, "00081150") == [str(read(no_study).SOPClassUID)]


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom+json"; boundary=x',
        "multipart/related; type=application/dicom+xml; boundary=x",
        "application/json",
        "application/octet-stream",
    ],
)
def test_other_media_types_are_415(openhi_server: Any, datastore: str, content_type: str) -> None:
    resp = post(openhi_server, f"/datastore/{datastore}/studies", b"--x--\r\n", content_type)
    assert resp.status_code == 415, resp.text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"--b\r\n\r\nabc", 'multipart/related; type="application/dicom"; boundary=b'),  # never closed
        (b"no delimiter at all", "multipart/related; boundary=b"),
        (b"--b--\r\n", "multipart/related; type=application/dicom"),  # no boundary parameter
        (b"--b--\r\n", "multipart/related; boundary=b"),  # no part
    ],
)
def test_malformed_multipart_is_400(
    openhi_server: Any, datastore: str, body: bytes, content_type: str
) -> None:
    resp = post(openhi_server, f"/datastore/{datastore}/studies", body, content_type)
    assert resp.status_code == 400, resp.text


def test_a_single_application_dicom_body(openhi_server: Any, datastore: str) -> None:
    data = make_instance(seed=105, rows=24, cols=20)
    resp = post(openhi_server, f"/datastore/{datastore}/studies", data, "application/dicom")
    assert resp.status_code == 200, resp.text
    [ref] = referenced(resp.json())
    assert values(ref, "00081155") == [str(read(data).SOPInstanceUID)]
    client = openhi_server.client()
    set_id = values(ref, "00091001")[0]
    doc = metadata(client, datastore, set_id)
    [series] = doc["Study"]["Series"].values()
    [node] = series["Instances"].values()
    [frame] = node["ImageFrames"]
    pixels = client.get_image_frame(
        datastoreId=datastore, imageSetId=set_id, imageFrameInformation={"imageFrameId": frame["ID"]}
    )["imageFrameBlob"].read()
    from openhi.codec.j2k import decode_htj2k

    assert (decode_htj2k(pixels) == read(data).pixel_array).all()


def test_a_repeat_is_idempotent(openhi_server: Any, datastore: str) -> None:
    files = make_ct_series(3, rows=16, cols=16, seed=106)
    first = stow(openhi_server, datastore, files)
    assert first.status_code == 200, first.text
    again = stow(openhi_server, datastore, files)
    assert again.status_code == 200, again.text
    refs = referenced(again.json())
    assert [values(r, "00081155") for r in referenced(first.json())] == [values(r, "00081155") for r in refs]
    set_id = values(refs[0], "00091001")[0]
    assert {values(r, "00091002")[0] for r in refs} == {1}
    versions = openhi_server.client().list_image_set_versions(datastoreId=datastore, imageSetId=set_id)
    assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["1"]


def test_an_instance_of_another_study_fails_on_the_study_route(openhi_server: Any, datastore: str) -> None:
    study = uid("stow-contract-study", 107)
    mine, other = make_instance(seed=107, study_uid=study), make_instance(seed=108)
    resp = stow(openhi_server, datastore, [mine, other], study=study)
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert values(answer, "00081190") == [f"{openhi_server.endpoint}/datastore/{datastore}/studies/{study}"]
    assert [values(r, "00081155") for r in referenced(answer)] == [[str(read(mine).SOPInstanceUID)]]
    [failure] = failed(answer)
    assert values(failure, "00081155") == [str(read(other).SOPInstanceUID)]
    assert values(failure, "00081197") == [0xC409]


def test_a_part_of_another_type_fails_alone(openhi_server: Any, datastore: str) -> None:
    good = make_instance(seed=109)
    body, ctype = multipart([good, good], ["application/dicom", "image/jpeg"])
    resp = post(openhi_server, f"/datastore/{datastore}/studies", body, ctype)
    assert resp.status_code == 202, resp.text
    assert len(referenced(resp.json())) == 1
    assert [values(f, "00081197") for f in failed(resp.json())] == [[0xC000]]


def test_an_unknown_datastore_is_404(openhi_server: Any) -> None:
    body, ctype = multipart([make_instance(seed=110)])
    resp = post(openhi_server, f"/datastore/{'0' * 32}/studies", body, ctype)
    assert resp.status_code == 404, resp.text


def test_a_300_instance_series_is_one_image_set_version(openhi_server: Any, datastore: str) -> None:
    files = make_ct_series(300, rows=64, cols=64, seed=111)
    resp = stow(openhi_server, datastore, files)
    assert resp.status_code == 200, resp.text
    refs = referenced(resp.json())
    assert len(refs) == 300
    set_ids = {values(r, "00091001")[0] for r in refs}
    assert len(set_ids) == 1
    set_id = set_ids.pop()
    client = openhi_server.client()
    versions = client.list_image_set_versions(datastoreId=datastore, imageSetId=set_id)
    assert [v["versionId"] for v in versions["imageSetPropertiesList"]] == ["1"]
    doc = metadata(client, datastore, set_id)
    [series] = doc["Study"]["Series"].values()
    assert len(series["Instances"]) == 300


def test_an_answer_other_than_dicom_json_is_406(openhi_server: Any, datastore: str) -> None:
    body, ctype = multipart([make_instance(seed=112)])
    resp = post(openhi_server, f"/datastore/{datastore}/studies", body, ctype, Accept="application/dicom+xml")
    assert resp.status_code == 406, resp.text
    ok = post(openhi_server, f"/datastore/{datastore}/studies", body, ctype, Accept="application/dicom+json")
    assert ok.status_code == 200, ok.text


def test_no_part_file_is_left_behind(openhi_server: Any, datastore: str) -> None:
    files = [make_instance(seed=113), garbage_file(64)]
    assert stow(openhi_server, datastore, files).status_code == 202
    data_dir = openhi_server.data_dir
    if not data_dir.exists():
        pytest.skip("the deployment keeps its scratch files elsewhere")
    assert list(data_dir.glob("stow-*")) == []
