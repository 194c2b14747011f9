"""DICOMweb side by side with Orthanc 1.10 + DICOMweb plugin 1.7: one corpus, the same requests, compared answers.

The corpus (5 studies, 8 series, 36 instances of 64 x 64 pixels: CT, MR, CR (RLE), a 3-frame instance, an
instance with private tags; 3 patients "Doe^John", "DOE^JANE", "Smith^Ann"; study dates 2019-2024) goes
into Orthanc through STOW-RS and into openhi through an import job (STOW-RS is compared separately, into a
data store of its own). Both are then read through ``dicomweb_client.DICOMwebClient`` and plain HTTP.

Where Orthanc deviates from PS3.18 the comparison is skipped and only openhi's answer is asserted; each case
is named in the test that covers it:

- PatientName ``Doe*``: Orthanc's PN matching is case-insensitive (its ``CaseSensitivePN`` defaults to
  false; PS3.4 C.2.2.2.1 allows either), openhi's wildcard matching is case-sensitive and its
  ``fuzzymatching=true`` is the case-insensitive form: compared as such.
- Percent-encoded query values (``%2A``, ``%5E``, as dicomweb-client and ``requests`` send ``*`` and ``^``)
  are not decoded by Orthanc (RFC 3986 §2.1; PS3.18 §8.3.4): PN searches through dicomweb-client find
  nothing there. The Orthanc side of those comparisons is sent with the raw characters.
- STOW-RS that stores some instances and fails others: Orthanc answers 409 (a failed Study Instance UID
  check) or 400 (a part that is not DICOM between good ones); PS3.18 §10.5.3 says 202.
- Error responses without a Content-Type (RFC 9110 §8.3; PS3.18 §8.7.9).
- ``includefield=all`` ignored by Orthanc (PS3.18 §8.3.4.3, §10.6.3.3).
- A transcode that cannot be done answered 500 instead of 406 (PS3.18 §8.7.6 / RFC 9110 §15.5.7).
- The multipart response's ``transfer-syntax`` put inside the ``type`` parameter (PS3.18 §8.7.3.5.1).
- QIDO asked for ``multipart/related; type="application/dicom+xml"`` answered with JSON (RFC 9110 §12.5.1).

Differences that both sides may have (not compared): instance metadata carries group 0002 in openhi (the
stored Transfer Syntax UID, as HealthImaging documents it) and not in Orthanc; a small private OB value is
InlineBinary in openhi (HealthImaging's bulk data threshold for private tags is 1 MB) and a BulkDataURI in
Orthanc; Orthanc leaves Pixel Data out of the metadata of an RLE-encapsulated instance (openhi gives its
BulkDataURI). dicomweb-client 0.61 sends ``Host`` without the port (RFC 9110 §7.2 wants it), so the
BulkDataURIs and RetrieveURLs of both servers, built from the Host header, lose the port through it.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from contract.helpers import active_datastore
from contract.imaging import run_import
from dicom_factory import CT_IMAGE_STORAGE, garbage_file, make_instance, uid
from orthanc_peer import dicomweb_url, http, orthanc  # noqa: F401  (orthanc: the session fixture)

ELE = ExplicitVRLittleEndian
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
MULTIFRAME_SC_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
DICOM_JSON = {"Accept": "application/dicom+json"}
PATIENTS = {"DOEJ": "Doe^John", "DOEJA": "DOE^JANE", "SMA": "Smith^Ann"}
#: (study key, PatientID, StudyDate, AccessionNumber, [(series key, Modality, SeriesNumber, instances)])
STUDIES = [
    ("A", "DOEJ", "20190315", "ACC-A", [("A1", "CT", 1, 8), ("A2", "CT", 2, 5)]),
    ("B", "DOEJ", "20210701", "ACC-B", [("B1", "MR", 1, 6)]),
    ("C", "DOEJA", "20221130", "ACC-C", [("C1", "MR", 3, 4), ("C2", "CT", 1, 4)]),
    ("D", "SMA", "20240229", "ACC-D", [("D1", "CR", 1, 4)]),
    ("E", "SMA", "20200101", "ACC-E", [("E1", "CT", 2, 3), ("E2", "MR", 1, 2)]),
]
STUDY_QUERIES: list[dict[str, str]] = [
    {"PatientID": "DOEJ"},
    {"PatientID": "SMA"},
    {"PatientID": "NOBODY"},
    {"StudyDate": "20240229"},
    {"StudyDate": "20200101-20221130"},
    {"StudyDate": "-20200101"},
    {"StudyDate": "20210701-"},
    {"AccessionNumber": "ACC-C"},
    {"ModalitiesInStudy": "MR"},
    {"ModalitiesInStudy": "CR"},
    {"StudyID": "E"},
    {"PatientID": "DOEJ", "StudyDate": "20200101-"},
]


# ---------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Corpus:
    files: list[bytes]
    datasets: dict[str, pydicom.Dataset]  # SOP Instance UID -> the source (pixels readable)
    studies: dict[str, str]  # study key -> StudyInstanceUID
    series: dict[str, str]  # series key -> SeriesInstanceUID

    def uids(self, sop: str) -> tuple[str, str, str]:
        ds = self.datasets[sop]
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop

    def series_of(self, series_uid: str) -> list[str]:
        return [s for s, ds in self.datasets.items() if ds.SeriesInstanceUID == series_uid]


def _with_private_tags(data: bytes) -> bytes:
    ds = pydicom.dcmread(BytesIO(data))
    block = ds.private_block(0x0009, "OPENHI H7", create=True)
    block.add_new(0x01, "LO", "private text")
    block.add_new(0x02, "US", 7)
    block.add_new(0x03, "OB", bytes(range(16)))
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def build_corpus() -> Corpus:
    files: list[bytes] = []
    studies: dict[str, str] = {}
    series_uids: dict[str, str] = {}
    seed = 7000
    for key, patient, date, accession, series in STUDIES:
        studies[key] = uid("dicomweb-vs-orthanc", "study", key)
        for skey, modality, number, count in series:
            series_uids[skey] = uid("dicomweb-vs-orthanc", "series", skey)
            for i in range(count):
                seed += 1
                attrs: dict[str, Any] = {
                    "study_uid": studies[key],
                    "series_uid": series_uids[skey],
                    "sop_uid": uid("dicomweb-vs-orthanc", "sop", skey, i),
                    "rows": 64,
                    "cols": 64,
                    "seed": seed,
                    "PatientID": patient,
                    "PatientName": PATIENTS[patient],
                    "StudyDate": date,
                    "AccessionNumber": accession,
                    "StudyID": key,
                    "StudyDescription": f"study {key}",
                    "Modality": modality,
                    "SeriesNumber": str(number),
                    "SeriesDescription": f"series {skey}",
                    "InstanceNumber": str(i + 1),
                }
                if modality == "CT":
                    attrs.update(bits=16, signed=True, sop_class=CT_IMAGE_STORAGE)
                elif modality == "MR":
                    attrs.update(bits=12, sop_class=MR_IMAGE_STORAGE)
                else:
                    attrs.update(bits=8, sop_class=CR_IMAGE_STORAGE, transfer_syntax=RLELossless)
                if skey == "E1" and i == 0:
                    attrs.update(frames=3, sop_class=MULTIFRAME_SC_WORD)
                data = make_instance(**attrs)
                files.append(_with_private_tags(data) if skey == "E2" and i == 0 else data)
    datasets = {}
    for data in files:
        ds = pydicom.dcmread(BytesIO(data))
        datasets[str(ds.SOPInstanceUID)] = ds
    return Corpus(files, datasets, studies, series_uids)


# ---------------------------------------------------------------- the two systems


@dataclass
class Side:
    """One system: its DICOMweb base URL, a dicomweb-client and the session it uses (plain HTTP: openhi's
    local mode takes unsigned DICOMweb requests)."""

    name: str
    base: str
    client: DICOMwebClient
    session: requests.Session

    def get(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        return self.session.get(self.base + path, headers=headers or {}, timeout=60)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        return self.session.post(self.base + path, data=body, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus()


@pytest.fixture(scope="module")
def peer(orthanc: Any, corpus: Corpus) -> Side:  # noqa: F811
    session = requests.Session()
    side = Side(
        "orthanc", dicomweb_url(orthanc), DICOMwebClient(dicomweb_url(orthanc), session=session), session
    )
    body, ctype = multipart(corpus.files)
    resp = side.post("/studies", body, {"Content-Type": ctype, **DICOM_JSON})
    assert resp.status_code == 200, resp.text[:500]
    return side


@pytest.fixture(scope="module")
def ours(openhi_server: Any, corpus: Corpus) -> Side:
    client = openhi_server.client()
    ds_id = active_datastore(client, "dicomweb-vs-orthanc")
    result = run_import(client, openhi_server, ds_id, {f"{i:03d}.dcm": f for i, f in enumerate(corpus.files)})
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result
    base = f"{openhi_server.endpoint}/datastore/{ds_id}"
    session = requests.Session()
    return Side("openhi", base, DICOMwebClient(base, session=session), session)


@pytest.fixture(scope="module")
def stow_side(openhi_server: Any) -> Side:
    """An empty openhi data store that receives the corpus through STOW-RS."""
    ds_id = active_datastore(openhi_server.client(), "dicomweb-stow-vs-orthanc")
    base = f"{openhi_server.endpoint}/datastore/{ds_id}"
    session = requests.Session()
    return Side("openhi-stow", base, DICOMwebClient(base, session=session), session)


def multipart(parts: list[bytes], boundary: str = "openhi-h7-boundary") -> tuple[bytes, str]:
    """A ``multipart/related; type="application/dicom"`` body of P10 parts, and its Content-Type."""
    out = b""
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f'multipart/related; type="application/dicom"; boundary={boundary}'


def multipart_parts(resp: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart response: (headers with lower-case names, body)."""
    raw = f"Content-Type: {resp.headers['content-type']}\r\n\r\n".encode() + resp.content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart(), resp.headers["content-type"]
    return [
        ({k.lower(): str(v) for k, v in part.items()}, part.get_payload(decode=True) or b"")
        for part in message.iter_parts()
    ]


def values(results: list[dict[str, Any]], tag: str) -> list[str]:
    return [str(r[tag]["Value"][0]) for r in results if r.get(tag, {}).get("Value")]


def study_set(results: list[dict[str, Any]]) -> set[str]:
    return set(values(results, "0020000D"))


# ---------------------------------------------------------------- QIDO-RS


def test_all_studies_are_the_same(peer: Side, ours: Side, corpus: Corpus) -> None:
    expected = set(corpus.studies.values())
    assert study_set(peer.client.search_for_studies()) == expected
    assert study_set(ours.client.search_for_studies()) == expected


@pytest.mark.parametrize("query", STUDY_QUERIES, ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()))
def test_study_queries_match_the_same_studies(peer: Side, ours: Side, query: dict[str, str]) -> None:
    theirs = study_set(peer.client.search_for_studies(search_filters=query))
    mine = study_set(ours.client.search_for_studies(search_filters=query))
    assert mine == theirs
    if "NOBODY" not in query.values():
        assert mine, "every query but the NOBODY one matches something (else the comparison means little)"


def test_study_instance_uid_list(peer: Side, ours: Side, corpus: Corpus) -> None:
    wanted = [corpus.studies["A"], corpus.studies["D"], "1.2.3.4.5.6.7.8.9"]
    query = {"StudyInstanceUID": ",".join(wanted)}
    theirs = study_set(peer.client.search_for_studies(search_filters=query))
    mine = study_set(ours.client.search_for_studies(search_filters=query))
    assert mine == theirs == set(wanted[:2])


def _orthanc_studies(peer: Side, raw_query: str) -> set[str]:
    """Orthanc with the query characters sent as they are (it does not decode %2A / %5E; ``requests``
    would encode ``^``, urllib does not)."""
    status, _, body = http("GET", f"{peer.base}/studies?{raw_query}", headers=DICOM_JSON)
    assert status == 200
    return study_set(json.loads(body))


def test_patient_name_matching(peer: Side, ours: Side, corpus: Corpus) -> None:
    """openhi's wildcard is case-sensitive, Orthanc's (CaseSensitivePN false) is not: compare like with like."""
    names = {corpus.studies[key]: PATIENTS[patient] for key, patient, *_ in STUDIES}
    insensitive = _orthanc_studies(peer, "PatientName=Doe*")
    assert insensitive == {s for s, n in names.items() if n.lower().startswith("doe")}
    # the case-sensitive part of Orthanc's answer is openhi's wildcard answer (through dicomweb-client: %2A)
    mine = study_set(ours.client.search_for_studies(search_filters={"PatientName": "Doe*"}))
    assert mine == {s for s in insensitive if names[s].startswith("Doe")}
    # openhi's fuzzy matching is the case-insensitive one
    fuzzy = study_set(
        ours.client.search_for_studies(search_filters={"PatientName": "doe"}, fuzzymatching=True)
    )
    assert fuzzy == insensitive == _orthanc_studies(peer, "PatientName=doe*")
    # an exact name with a component separator (dicomweb-client sends %5E)
    exact = study_set(ours.client.search_for_studies(search_filters={"PatientName": "DOE^JANE"}))
    assert exact == _orthanc_studies(peer, "PatientName=DOE^JANE") == {corpus.studies["C"]}


def test_related_counts_are_equal(peer: Side, ours: Side, corpus: Corpus) -> None:
    fields = ["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"]

    def counts(side: Side) -> dict[str, tuple[int, int]]:
        return {
            str(r["0020000D"]["Value"][0]): (int(r["00201206"]["Value"][0]), int(r["00201208"]["Value"][0]))
            for r in side.client.search_for_studies(fields=fields)
        }

    expected = {
        corpus.studies[key]: (len(series), sum(n for *_, n in series)) for key, _, _, _, series in STUDIES
    }
    assert counts(ours) == counts(peer) == expected

    def series_counts(side: Side, study: str) -> dict[str, int]:
        return {
            str(r["0020000E"]["Value"][0]): int(r["00201209"]["Value"][0])
            for r in side.client.search_for_series(study, fields=["NumberOfSeriesRelatedInstances"])
        }

    for study in corpus.studies.values():
        assert series_counts(ours, study) == series_counts(peer, study)


@pytest.mark.parametrize("modality", ["CT", "MR", "CR"])
def test_series_of_a_study_by_modality(peer: Side, ours: Side, corpus: Corpus, modality: str) -> None:
    found = 0
    for study in corpus.studies.values():
        theirs = set(
            values(peer.client.search_for_series(study, search_filters={"Modality": modality}), "0020000E")
        )
        mine = set(
            values(ours.client.search_for_series(study, search_filters={"Modality": modality}), "0020000E")
        )
        assert mine == theirs
        found += len(mine)
        # openhi orders series by Series Number (HealthImaging; Orthanc defines no order)
        everything = ours.client.search_for_series(study)
        numbers = [int(n) for n in values(everything, "00200011")]
        assert numbers == sorted(numbers)
    assert found > 0


def test_instances_of_each_series(peer: Side, ours: Side, corpus: Corpus) -> None:
    for skey, series in corpus.series.items():
        study = str(corpus.datasets[corpus.series_of(series)[0]].StudyInstanceUID)
        theirs = values(peer.client.search_for_instances(study, series), "00080018")
        mine = ours.client.search_for_instances(study, series)
        assert set(values(mine, "00080018")) == set(theirs) == set(corpus.series_of(series)), skey
        # openhi orders instances by Instance Number (HealthImaging; Orthanc defines no order)
        numbers = [int(n) for n in values(mine, "00200013")]
        assert numbers == sorted(numbers)


def test_limit_and_offset_page_through_the_same_set(peer: Side, ours: Side, corpus: Corpus) -> None:
    for side in (peer, ours):
        pages = [side.client.search_for_studies(limit=2, offset=offset) for offset in (0, 2, 4, 6)]
        assert [len(p) for p in pages] == [2, 2, 1, 0], side.name
        seen = [uid for page in pages for uid in values(page, "0020000D")]
        assert len(seen) == len(set(seen)) and set(seen) == set(corpus.studies.values()), side.name


def test_includefield_all(ours: Side) -> None:
    """PS3.18 §8.3.4.3 / §10.6.3.3: ``all`` adds the optional study attributes (Orthanc ignores it)."""
    plain = ours.get("/studies", DICOM_JSON).json()
    everything = ours.get("/studies?includefield=all", DICOM_JSON).json()
    assert len(everything) == len(plain) == 5
    # StudyDescription (an optional study key, PS3.4 C.6.2.1.2): Orthanc leaves it out of ``all``
    assert all("00081030" in r for r in everything)
    assert all(set(a) <= set(b) for a, b in zip(plain, everything, strict=True))


def test_qido_xml_is_not_answered_with_json(ours: Side) -> None:
    """RFC 9110 §12.5.1: an Accept the server cannot meet gets 406 (Orthanc answers JSON instead)."""
    resp = ours.get("/studies", {"Accept": 'multipart/related; type="application/dicom+xml"'})
    if resp.status_code == 200:
        assert "application/dicom+xml" in resp.headers["content-type"]
    else:
        assert resp.status_code == 406
        assert resp.headers.get("content-type")


# ---------------------------------------------------------------- WADO-RS


def _selection(corpus: Corpus) -> list[str]:
    """The first instance of every series (the multi-frame, RLE and private-tag instances among them)."""
    return [corpus.series_of(series)[0] for series in corpus.series.values()]


def test_instances_are_pixel_exact_on_both(peer: Side, ours: Side, corpus: Corpus) -> None:
    for sop in _selection(corpus):
        source = corpus.datasets[sop]
        expected = source.pixel_array
        for side in (peer, ours):
            got = side.client.retrieve_instance(*corpus.uids(sop), media_types=(("application/dicom", ELE),))
            assert got.file_meta.TransferSyntaxUID == ELE, side.name
            assert np.array_equal(got.pixel_array, expected), (side.name, sop)
            for element in source:
                if element.tag == 0x7FE00010:
                    continue
                assert element.tag in got, (side.name, sop, element)
                assert got[element.tag].value == element.value, (side.name, sop, element)


def _frame_numbers(ds: pydicom.Dataset) -> list[int]:
    return list(range(1, int(getattr(ds, "NumberOfFrames", 1) or 1) + 1))


def test_frames_in_explicit_vr_little_endian_are_byte_equal(peer: Side, ours: Side, corpus: Corpus) -> None:
    for sop in _selection(corpus):
        source = corpus.datasets[sop]
        frames = _frame_numbers(source)
        pixels = source.pixel_array.reshape(len(frames), -1)
        expected = [np.ascontiguousarray(f).astype(f.dtype.newbyteorder("<")).tobytes() for f in pixels]
        media = (("application/octet-stream", ELE),)
        theirs = peer.client.retrieve_instance_frames(*corpus.uids(sop), frames, media_types=media)
        mine = ours.client.retrieve_instance_frames(*corpus.uids(sop), frames, media_types=media)
        assert [bytes(f) for f in mine] == [bytes(f) for f in theirs] == expected, sop


def test_frames_in_the_stored_syntax_decode_to_the_same_pixels(
    peer: Side, ours: Side, corpus: Corpus
) -> None:
    """``transfer-syntax=*``: openhi sends its HTJ2K, Orthanc what it stored (ELE here); same pixels."""
    accept = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    compared = 0
    for sop in _selection(corpus):
        study, series, _ = corpus.uids(sop)
        source = corpus.datasets[sop]
        if source.file_meta.TransferSyntaxUID != ELE:
            continue  # Orthanc sends RLE as stored: nothing byte-comparable
        path = f"/studies/{study}/series/{series}/instances/{sop}/frames/1"
        ((_, theirs),) = multipart_parts(peer.get(path, accept))
        ((my_headers, mine),) = multipart_parts(ours.get(path, accept))
        assert "1.2.840.10008.1.2.4.20" in my_headers["content-type"]  # HTJ2K (4.201 / 4.202)
        decoded = imagecodecs.htj2k_decode(mine)
        first = source.pixel_array.reshape(-1, source.Rows, source.Columns)[0]
        assert np.array_equal(decoded, first), sop
        assert decoded.astype(first.dtype).tobytes() == theirs, sop
        compared += 1
    assert compared >= 5


def _comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    """A metadata dataset without what the two may legitimately write differently (see the docstring)."""
    out = {}
    for tag, attr in attrs.items():
        if tag.startswith("0002") or tag == "7FE00010" or "BulkDataURI" in attr or "InlineBinary" in attr:
            continue
        group = int(tag[:4], 16)
        out[tag] = attr.get("Value") if group % 2 else attr  # private: values, VR may be UN on one side
    return out


def test_instance_metadata_has_the_same_attributes(peer: Side, ours: Side, corpus: Corpus) -> None:
    """Same tags and values; not compared: group 0002, bulk data (URI vs inline), private VRs (UN or real)."""
    for sop in _selection(corpus):
        theirs = peer.client.retrieve_instance_metadata(*corpus.uids(sop))
        mine = ours.client.retrieve_instance_metadata(*corpus.uids(sop))
        assert "7FE00010" in mine
        a, b = _comparable(mine), _comparable(theirs)
        assert set(a) == set(b), (sop, set(a) ^ set(b))
        for tag in a:
            assert _normalised(a[tag]) == _normalised(b[tag]), (sop, tag, a[tag], b[tag])


def _normalised(value: Any) -> Any:
    """Numbers of IS/DS written as strings or numbers compare equal."""
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def test_series_metadata_lists_the_same_instances(peer: Side, ours: Side, corpus: Corpus) -> None:
    for series in corpus.series.values():
        study = str(corpus.datasets[corpus.series_of(series)[0]].StudyInstanceUID)
        theirs = set(values(peer.client.retrieve_series_metadata(study, series), "00080018"))
        mine = set(values(ours.client.retrieve_series_metadata(study, series), "00080018"))
        assert mine == theirs == set(corpus.series_of(series))


def test_frames_response_media_type(ours: Side, corpus: Corpus) -> None:
    """PS3.18 §8.7.3.5.1: transfer-syntax is a parameter of its own, not inside ``type`` (as Orthanc writes it)."""
    sop = _selection(corpus)[0]
    study, series, _ = corpus.uids(sop)
    resp = ours.get(
        f"/studies/{study}/series/{series}/instances/{sop}/frames/1",
        {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'},
    )
    assert resp.status_code == 200
    ctype = resp.headers["content-type"]
    params = dict(
        (k.strip().lower(), v.strip().strip('"'))
        for k, _, v in (p.partition("=") for p in ctype.split(";")[1:])
    )
    assert params["type"] == "application/octet-stream"
    ((headers, _body),) = multipart_parts(resp)
    assert "transfer-syntax=" in headers["content-type"]


def test_impossible_transcode_is_406(ours: Side, corpus: Corpus) -> None:
    """A lossless instance asked for as JPEG baseline (lossy): 406 with a typed body (Orthanc: 500)."""
    sop = _selection(corpus)[0]
    study, series, _ = corpus.uids(sop)
    resp = ours.get(
        f"/studies/{study}/series/{series}/instances/{sop}",
        {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'},
    )
    assert resp.status_code == 406
    assert resp.headers.get("content-type")


def test_errors_carry_a_content_type(ours: Side, corpus: Corpus) -> None:
    """A 404 body says what it is (Orthanc sends its JSON error bodies without a Content-Type)."""
    study, series, _ = corpus.uids(_selection(corpus)[0])
    resp = ours.get(f"/studies/{study}/series/{series}/instances/1.2.3.4.5/metadata", DICOM_JSON)
    assert resp.status_code == 404
    assert resp.headers.get("content-type", "").startswith("application/")


# ---------------------------------------------------------------- STOW-RS


def _stow_response(resp: requests.Response) -> tuple[set[str], set[str]]:
    """(stored SOP Instance UIDs, failed SOP Instance UIDs) of a STOW-RS JSON response."""
    body = resp.json()
    stored = {str(i["00081155"]["Value"][0]) for i in body.get("00081199", {}).get("Value", [])}
    failed = {
        str(i.get("00081155", {}).get("Value", ["?"])[0]) for i in body.get("00081198", {}).get("Value", [])
    }
    return stored, failed


def test_stow_of_the_corpus(stow_side: Side, peer: Side, corpus: Corpus) -> None:
    """Both accept the corpus (Orthanc in the ``peer`` fixture); openhi then finds the same studies."""
    body, ctype = multipart(corpus.files)
    resp = stow_side.post("/studies", body, {"Content-Type": ctype, **DICOM_JSON})
    assert resp.status_code == 200, resp.text[:500]
    stored, failed = _stow_response(resp)
    assert stored == set(corpus.datasets) and not failed
    assert study_set(stow_side.client.search_for_studies()) == study_set(peer.client.search_for_studies())
    sop = _selection(corpus)[-1]
    got = stow_side.client.retrieve_instance(*corpus.uids(sop), media_types=(("application/dicom", ELE),))
    assert np.array_equal(got.pixel_array, corpus.datasets[sop].pixel_array)


def _fresh(seed: int, study: str) -> bytes:
    return make_instance(
        rows=64, cols=64, seed=seed, study_uid=study, series_uid=uid("stow-extra-series", study)
    )


def test_stow_partly_stored_is_202(stow_side: Side) -> None:
    """PS3.18 §10.5.3: some stored, some failed -> 202 with a FailedSOPSequence (Orthanc: 409)."""
    study, other = uid("stow-partial", 1), uid("stow-partial", 2)
    good, wrong = _fresh(9101, study), _fresh(9102, other)
    body, ctype = multipart([good, wrong])
    resp = stow_side.post(f"/studies/{study}", body, {"Content-Type": ctype, **DICOM_JSON})
    assert resp.status_code == 202, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/dicom+json")
    stored, failed = _stow_response(resp)
    assert stored == {str(pydicom.dcmread(BytesIO(good)).SOPInstanceUID)}
    assert failed == {str(pydicom.dcmread(BytesIO(wrong)).SOPInstanceUID)}


def test_stow_garbage_between_good_parts_is_202(stow_side: Side) -> None:
    """PS3.18 §10.5.3: the good parts are stored, the garbage one fails -> 202 (Orthanc: 400, nothing said)."""
    study = uid("stow-garbage", 1)
    first, second = _fresh(9201, study), _fresh(9202, study)
    body, ctype = multipart([first, garbage_file(), second])
    resp = stow_side.post("/studies", body, {"Content-Type": ctype, **DICOM_JSON})
    assert resp.status_code == 202, resp.text[:500]
    stored, _ = _stow_response(resp)
    assert stored == {str(pydicom.dcmread(BytesIO(d)).SOPInstanceUID) for d in (first, second)}
    assert resp.json()["00081198"]["Value"], "the garbage part is reported as failed"


@pytest.fixture(scope="module", autouse=True)
def _quiet_dicomweb_client() -> Iterator[None]:
    import logging

    logger = logging.getLogger("dicomweb_client")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)
