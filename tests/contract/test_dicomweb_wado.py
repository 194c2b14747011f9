"""Contract tests of WADO-RS over raw HTTP: instances, series, studies, metadata, frames and bulk data of
imported files, compared attribute by attribute and pixel by pixel with the source files."""

from __future__ import annotations

import http.client
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from contract.helpers import active_datastore
from contract.imaging import run_import
from contract.test_part10_roundtrip import _pixels, differences, expected_photometric
from dicom_factory import make_ct_series, make_instance, uid
from openhi.codec.j2k import decode_j2k
from openhi.testing import RunningServer

ELE = "1.2.840.10008.1.2.1"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
MULTI_FRAME = "multi-frame"
PRIVATE = "private"
BUNDLED = ("CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_rle_2frame.dcm")
PRIVATE_BLOB = bytes(range(256)) * 8  # 2048 bytes: over the 1024-byte inline limit, a BulkDataURI


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        return json.loads(self.body)


def _private_file() -> bytes:
    """A factory instance with a private block (a short and a long binary) and a sequence holding a
    private long binary: the long ones come back as BulkDataURIs, one of them with a sequence path."""
    ds = pydicom.dcmread(io.BytesIO(make_instance(seed=71, rows=8, cols=8, PatientName="Doe^Jane^^Dr")))
    block = ds.private_block(0x0009, "OPENHI TEST", create=True)
    block.add_new(0x10, "OB", PRIVATE_BLOB)
    block.add_new(0x11, "LO", "private text")
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    item.ReferencedSOPInstanceUID = uid("ref", 71)
    inner = item.private_block(0x0009, "OPENHI TEST", create=True)
    inner.add_new(0x10, "OB", PRIVATE_BLOB[::-1])
    ds.ReferencedImageSequence = Sequence([item])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Imported:
    server: RunningServer
    datastore_id: str
    sources: dict[str, Dataset]  # name -> source dataset
    image_sets: dict[str, str]  # name -> image set id
    ct_series: list[Dataset]
    conflict: Dataset  # an instance of a non-primary image set
    conflict_set: str

    def url(self, path: str) -> str:
        return f"/datastore/{self.datastore_id}{path}"

    def instance_path(self, ds: Dataset) -> str:
        return self.url(
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        )

    def get(self, path: str, accept: str | None = None) -> Reply:
        parts = urlsplit(self.server.endpoint)
        conn = http.client.HTTPConnection(parts.hostname or "localhost", parts.port, timeout=60)
        try:
            conn.request("GET", path, headers={"Accept": accept} if accept is not None else {})
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def imported(openhi_server: RunningServer) -> Imported:
    client = openhi_server.client()
    files: dict[str, bytes] = {}
    for name in BUNDLED:
        path = get_testdata_file(name, download=False)
        if path is not None:
            files[name] = Path(str(path)).read_bytes()
    files[MULTI_FRAME] = make_instance(seed=72, frames=3, rows=12, cols=10, bits=12)
    files[PRIVATE] = _private_file()
    ct = make_ct_series(3, rows=16, cols=16, seed=73, patient_id="WADO")
    files.update({f"ct-{i}": data for i, data in enumerate(ct)})
    ds_id = active_datastore(client, "wado")
    result = run_import(client, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result["failure"]
    sets = {s["inputFile"].rsplit("/", 1)[-1]: s["importResponse"]["imageSetId"] for s in result["success"]}
    # the same series again under another patient: a conflict, so a non-primary image set
    first = pydicom.dcmread(io.BytesIO(ct[0]))
    conflict_bytes = make_instance(
        seed=74,
        study_uid=first.StudyInstanceUID,
        series_uid=first.SeriesInstanceUID,
        sop_uid=uid("conflict", 74),
        PatientID="OTHER",
        Modality="CT",
    )
    again = run_import(client, openhi_server, ds_id, {"conflict.dcm": conflict_bytes})
    assert again["job"]["jobStatus"] == "COMPLETED" and not again["failure"], again["failure"]
    conflict_set = again["success"][0]["importResponse"]["imageSetId"]
    assert not client.get_image_set(datastoreId=ds_id, imageSetId=conflict_set)["isPrimary"]
    return Imported(
        openhi_server,
        ds_id,
        {name: pydicom.dcmread(io.BytesIO(data)) for name, data in files.items()},
        sets,
        [pydicom.dcmread(io.BytesIO(d)) for d in ct],
        pydicom.dcmread(io.BytesIO(conflict_bytes)),
        conflict_set,
    )


def multipart(reply: Reply) -> list[tuple[list[str], bytes]]:
    """The parts of a multipart answer: each part's raw header lines and its bytes."""
    match = re.search(r'boundary="?([^";]+)"?', reply.content_type)
    assert match and reply.content_type.startswith("multipart/related"), reply.content_type
    dash = b"--" + match.group(1).encode()
    assert reply.body.startswith(dash + b"\r\n") and reply.body.endswith(b"\r\n" + dash + b"--\r\n")
    chunks = reply.body[len(dash) + 2 : -(len(dash) + 6)].split(b"\r\n" + dash + b"\r\n")
    out = []
    for chunk in chunks:
        head, _, data = chunk.partition(b"\r\n\r\n")
        out.append((head.decode("latin-1").split("\r\n"), data))
    return out


def _pixel_name(imported: Imported) -> list[str]:
    return [n for n, ds in imported.sources.items() if "PixelData" in ds]


def _check_part10(name: str, source: Dataset, data: bytes, syntax: str) -> None:
    out = pydicom.dcmread(io.BytesIO(data))
    assert out.file_meta.TransferSyntaxUID == syntax, name
    assert out.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
    assert not differences(source, out), (name, differences(source, out))
    if "PixelData" in source:
        assert out.PhotometricInterpretation == expected_photometric(source, syntax), name
        expected, got = np.asarray(source.pixel_array), _pixels(out)
        assert got.shape == expected.shape and np.array_equal(got, expected), name


# ------------------------------------------------------------------------------------- instances


def test_instance_default_is_single_part_explicit_le_equal_to_the_source(imported: Imported) -> None:
    for name, source in imported.sources.items():
        for accept in (None, "*/*", "application/dicom"):
            reply = imported.get(imported.instance_path(source), accept)
            assert reply.status == 200, (name, reply.body[:200])
            assert reply.content_type == f"application/dicom; transfer-syntax={ELE}"
            _check_part10(name, source, reply.body, ELE)


def test_instance_multipart_stored_and_jpeg2000(imported: Imported) -> None:
    source = imported.sources["CT_small.dcm"] if "CT_small.dcm" in imported.sources else imported.ct_series[0]
    path = imported.instance_path(source)
    reply = imported.get(path, 'multipart/related; type="application/dicom"; transfer-syntax=*')
    assert reply.status == 200, reply.body[:200]
    assert reply.content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    parts = multipart(reply)
    assert len(parts) == 1 and parts[0][0] == [
        f"Content-Type: application/dicom; transfer-syntax={HTJ2K_RPCL}"
    ]
    _check_part10("stored", source, parts[0][1], HTJ2K_RPCL)
    reply = imported.get(path, f"application/dicom; transfer-syntax={J2K_LOSSLESS}")
    assert reply.status == 200 and reply.content_type.endswith(J2K_LOSSLESS)
    _check_part10("j2k", source, reply.body, J2K_LOSSLESS)


def test_instance_unavailable_syntax_is_406(imported: Imported) -> None:
    path = imported.instance_path(imported.ct_series[0])
    reply = imported.get(path, f"application/dicom; transfer-syntax={JPEG_BASELINE}")
    assert reply.status == 406 and reply.content_type.startswith("application/json")
    assert "transfer" in reply.json()["message"].lower()
    assert imported.get(path, "image/png").status == 406
    # a later acceptable range is used
    ok = imported.get(path, f"application/dicom; transfer-syntax={JPEG_BASELINE}, application/dicom;q=0.5")
    assert ok.status == 200 and ok.content_type.endswith(ELE)


def test_series_and_study_retrieval(imported: Imported) -> None:
    first = imported.ct_series[0]
    reply = imported.get(imported.url(f"/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"))
    assert reply.status == 200 and reply.content_type.startswith(
        'multipart/related; type="application/dicom"'
    )
    parts = multipart(reply)
    assert len(parts) == len(imported.ct_series)
    by_sop = {str(s.SOPInstanceUID): s for s in imported.ct_series}
    for head, data in parts:
        assert head == [f"Content-Type: application/dicom; transfer-syntax={ELE}"]
        out = pydicom.dcmread(io.BytesIO(data))
        _check_part10("series", by_sop[str(out.SOPInstanceUID)], data, ELE)
    study = imported.sources.get("SC_rgb_small_odd.dcm", first)
    same_study = [s for s in imported.sources.values() if s.StudyInstanceUID == study.StudyInstanceUID]
    reply = imported.get(
        imported.url(f"/studies/{study.StudyInstanceUID}"), "multipart/related; transfer-syntax=*"
    )
    assert reply.status == 200 and len(multipart(reply)) == len(same_study)


# ------------------------------------------------------------------------------------- frames


def test_frames_default_explicit_le_in_request_order(imported: Imported) -> None:
    source = imported.sources[MULTI_FRAME]
    pixels = np.asarray(source.pixel_array)
    reply = imported.get(imported.instance_path(source) + "/frames/3,1")
    assert reply.status == 200 and reply.content_type.startswith(
        'multipart/related; type="application/octet-stream"'
    )
    parts = multipart(reply)
    assert [h for h, _ in parts] == [[f"Content-Type: application/octet-stream; transfer-syntax={ELE}"]] * 2
    assert (
        parts[0][1] == pixels[2].astype("<u2").tobytes() and parts[1][1] == pixels[0].astype("<u2").tobytes()
    )


def test_frames_stored_are_jphc_parts_that_decode_exactly(imported: Imported) -> None:
    for name in _pixel_name(imported):
        source = imported.sources[name]
        count = int(source.get("NumberOfFrames") or 1)
        frame_list = ",".join(str(n) for n in range(count, 0, -1))
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        reply = imported.get(imported.instance_path(source) + f"/frames/{frame_list}", accept)
        assert reply.status == 200, (name, reply.body[:200])
        assert reply.content_type.startswith('multipart/related; type="application/octet-stream"; boundary=')
        assert "transfer-syntax" not in reply.content_type
        parts = multipart(reply)
        assert len(parts) == count
        arr = np.asarray(source.pixel_array)
        frames = arr if count > 1 else arr[None]
        for i, (head, data) in enumerate(parts):
            assert head == [f"Content-Type: image/jphc; transfer-syntax={HTJ2K_RPCL}"], (name, head)
            want = frames[count - 1 - i]
            decoded = decode_j2k(data)
            assert np.array_equal(decoded.reshape(want.shape), want), name


def test_frames_single_stored_frame_and_single_part(imported: Imported) -> None:
    source = imported.ct_series[1]
    path = imported.instance_path(source) + "/frames/1"
    reply = imported.get(path, "multipart/related; type=image/jphc")
    assert reply.status == 200 and reply.content_type.startswith('multipart/related; type="image/jphc"')
    ((head, data),) = multipart(reply)
    assert head == [f"Content-Type: image/jphc; transfer-syntax={HTJ2K_RPCL}"]
    assert np.array_equal(decode_j2k(data), source.pixel_array)
    single = imported.get(path, "application/octet-stream")
    assert single.status == 200 and single.content_type == f"application/octet-stream; transfer-syntax={ELE}"
    assert single.body == np.asarray(source.pixel_array).astype("<i2").tobytes()


def test_frame_list_errors(imported: Imported) -> None:
    path = imported.instance_path(imported.sources[MULTI_FRAME]) + "/frames/"
    for bad in ("1,1", "0", "a", "1,,2", "-1"):
        reply = imported.get(path + bad)
        assert reply.status == 400, (bad, reply.status)
        assert reply.content_type.startswith("application/json")
    assert imported.get(path + "4").status == 404
    accept = f"multipart/related; type=application/octet-stream; transfer-syntax={JPEG_BASELINE}"
    assert imported.get(path + "1", accept).status == 406


# ------------------------------------------------------------------------------------- metadata, bulk data


def test_series_metadata_and_bulkdata(imported: Imported) -> None:
    source = imported.sources[PRIVATE]
    path = imported.url(f"/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}/metadata")
    reply = imported.get(path, "application/dicom+json")
    assert reply.status == 200 and reply.content_type == "application/dicom+json"
    (doc,) = reply.json()
    assert list(doc) == sorted(doc) and all(re.fullmatch(r"[0-9A-F]{8}", k) for k in doc)
    assert doc["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane^^Dr"}]}
    assert doc["00020010"]["Value"] == [HTJ2K_RPCL]
    assert [k for k in doc if k.startswith("0002")] == ["00020010"]
    back = Dataset.from_json({k: v for k, v in doc.items() if not k.startswith("0002")}, lambda *a: b"")
    assert not [d for d in differences(source, back) if "missing" in d and "Pixel" not in d]
    pixel_uri = doc["7FE00010"]["BulkDataURI"]
    assert pixel_uri.endswith(f"/instances/{source.SOPInstanceUID}/bulkdata/7FE00010")
    private = next(v for k, v in doc.items() if k.startswith("0009") and v["vr"] == "OB")
    nested = doc["00081140"]["Value"][0]
    nested_uri = next(v["BulkDataURI"] for k, v in nested.items() if k.startswith("0009") and v["vr"] == "OB")
    assert "/bulkdata/00081140/0/0009" in nested_uri
    for uri, want in ((private["BulkDataURI"], PRIVATE_BLOB), (nested_uri, PRIVATE_BLOB[::-1])):
        got = imported.get(urlsplit(uri).path)
        assert got.status == 200 and got.content_type == "application/octet-stream" and got.body == want
        parts = multipart(
            imported.get(urlsplit(uri).path, 'multipart/related; type="application/octet-stream"')
        )
        assert parts == [(["Content-Type: application/octet-stream"], want)]
    pixels = imported.get(urlsplit(pixel_uri).path)
    assert pixels.status == 200 and pixels.body == np.asarray(source.pixel_array).astype("<u2").tobytes()
    frames = multipart(
        imported.get(urlsplit(pixel_uri).path, "multipart/related; type=application/octet-stream")
    )
    assert [d for _, d in frames] == [pixels.body]
    assert imported.get(urlsplit(pixel_uri).path.replace("7FE00010", "00100010")).status == 404
    assert imported.get(path, "application/dicom+xml").status == 406


def test_instance_and_study_metadata(imported: Imported) -> None:
    source = imported.ct_series[2]
    reply = imported.get(imported.instance_path(source) + "/metadata")
    assert reply.status == 200
    (doc,) = reply.json()
    assert doc["00080018"]["Value"] == [source.SOPInstanceUID]
    first = imported.get(imported.url(f"/studies/{source.StudyInstanceUID}/metadata"))
    study = first.json()
    sops = sorted(d["00080018"]["Value"][0] for d in study)
    assert sops == sorted(s.SOPInstanceUID for s in imported.ct_series)
    again = imported.get(imported.url(f"/studies/{source.StudyInstanceUID}/metadata"))
    assert again.body == first.body  # served from the answer cache, byte for byte


# ------------------------------------------------------------------------------------- image sets, errors


def test_image_set_id_reads_a_non_primary_set(imported: Imported) -> None:
    conflict = imported.conflict
    path = imported.instance_path(conflict)
    assert imported.get(path).status == 404  # not in the primary image set
    reply = imported.get(path + f"?imageSetId={imported.conflict_set}")
    assert reply.status == 200
    assert pydicom.dcmread(io.BytesIO(reply.body)).PatientID == "OTHER"
    meta = imported.get(path + f"/metadata?imageSetId={imported.conflict_set}").json()
    assert meta[0]["00100020"]["Value"] == ["OTHER"]
    frames = imported.get(path + f"/frames/1?imageSetId={imported.conflict_set}")
    assert frames.status == 200 and len(multipart(frames)) == 1
    other = imported.instance_path(imported.ct_series[0]) + f"?imageSetId={imported.conflict_set}"
    assert imported.get(other).status == 404  # the set has the series but not this instance
    wrong = imported.instance_path(imported.sources[MULTI_FRAME]) + f"?imageSetId={imported.conflict_set}"
    assert imported.get(wrong).status == 404


def test_not_found_and_malformed(imported: Imported) -> None:
    source = imported.ct_series[0]
    study, series, sop = source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID
    for path in (
        f"/datastore/{'0' * 32}/studies/{study}/series/{series}/instances/{sop}",
        imported.url(f"/studies/1.2.3/series/{series}/instances/{sop}"),
        imported.url(f"/studies/{study}/series/1.2.3/instances/{sop}"),
        imported.url(f"/studies/{study}/series/{series}/instances/1.2.3"),
        imported.url(f"/studies/{study}/series/{series}/instances/1.2.3/metadata"),
        imported.url(f"/studies/{study}/series/1.2.3/metadata"),
        imported.url("/studies/1.2.3/metadata"),
        imported.url("/studies/1.2.3"),
    ):
        reply = imported.get(path)
        assert reply.status == 404, (path, reply.status)
        assert reply.content_type.startswith("application/json") and reply.json()["message"]
    for bad in ("1.2.x", "1..2", "1" * 65):
        reply = imported.get(imported.url(f"/studies/{bad}/series/{series}/instances/{sop}"))
        assert reply.status == 400, bad
