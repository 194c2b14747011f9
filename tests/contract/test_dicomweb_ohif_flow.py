"""The DICOMweb requests OHIF 3.13 makes, replayed as OHIF sends them, after a store with dicomweb-client.

The request list is what OHIF 3.13 was seen to send to a DICOMweb server: the study list with a
comma-separated (``%2C``) includefield list, tag-number filters, the series of a study, the series
metadata, one ``frames/1`` per instance with ``transfer-syntax=*`` (the frame syntax read only from a part
header spelled ``Content-Type:``) and thumbnails with ``viewport=256,256``.
"""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from contract.helpers import active_datastore
from dicom_factory import make_ct_series

HTJ2K = "1.2.840.10008.1.2.4.202"
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
STUDY_FIELDS = "00081030%2C00080060%2C00080020%2C00080030%2C00100010%2C00100020%2C00201208"
SERIES_FIELDS = "00080021%2C00080031%2C0008103E%2C00200011%2C00201209"


@pytest.fixture(scope="module")
def stored(openhi_server: Any) -> dict[str, Any]:
    """A 6-slice CT series stored through dicomweb-client's STOW-RS, unsigned (local mode)."""
    ds_id = active_datastore(openhi_server.client(), "ohif-flow")
    files = make_ct_series(6, rows=48, cols=40, seed=31, patient_id="OHIF-1", StudyDescription="Chest CT")
    datasets = [pydicom.dcmread(io.BytesIO(f)) for f in files]
    client = DICOMwebClient(url=f"{openhi_server.endpoint}/datastore/{ds_id}")
    client.store_instances(datasets)
    first = datasets[0]
    return {
        "base": f"{openhi_server.endpoint}/datastore/{ds_id}",
        "study": str(first.StudyInstanceUID),
        "series": str(first.SeriesInstanceUID),
        "sources": {str(d.SOPInstanceUID): d for d in datasets},
    }


def _get(url: str, accept: str = "application/dicom+json") -> httpx.Response:
    response = httpx.get(url, headers={"Accept": accept}, timeout=30)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return response


def _value(item: dict[str, Any], tag: str) -> Any:
    return (item.get(tag) or {}).get("Value", [None])[0]


def test_the_study_list_honours_a_comma_separated_includefield(stored: dict[str, Any]) -> None:
    url = f"{stored['base']}/studies?limit=101&offset=0&fuzzymatching=false&includefield={STUDY_FIELDS}"
    studies = _get(url).json()
    mine = [s for s in studies if _value(s, "0020000D") == stored["study"]]
    assert len(mine) == 1
    study = mine[0]
    assert _value(study, "00081030") == "Chest CT"  # Orthanc ignores the %2C list: "No Description"
    assert _value(study, "00080061") == "CT"
    assert _value(study, "00201208") == 6
    assert _value(study, "00100020") == "OHIF-1"


def test_a_tag_number_filter_finds_the_patient(stored: dict[str, Any]) -> None:
    url = f"{stored['base']}/studies?00100020=OHIF-1&limit=101&offset=0&includefield={STUDY_FIELDS}"
    assert [_value(s, "0020000D") for s in _get(url).json()] == [stored["study"]]


def test_series_of_the_study_then_its_metadata(stored: dict[str, Any]) -> None:
    series = _get(f"{stored['base']}/studies/{stored['study']}/series?includefield={SERIES_FIELDS}").json()
    assert [_value(s, "0020000E") for s in series] == [stored["series"]]
    assert _value(series[0], "00201209") == 6
    meta = _get(f"{stored['base']}/studies/{stored['study']}/series/{stored['series']}/metadata").json()
    assert sorted(_value(m, "00080018") for m in meta) == sorted(stored["sources"])
    for item in meta:
        assert list(item) == sorted(item)  # 8-hex keys ascending
        assert "BulkDataURI" in item["7FE00010"]


def test_one_frame_per_instance_as_stored_htj2k_decodes_to_the_source_pixels(stored: dict[str, Any]) -> None:
    base = f"{stored['base']}/studies/{stored['study']}/series/{stored['series']}/instances"
    for sop, source in stored["sources"].items():
        response = _get(f"{base}/{sop}/frames/1", OHIF_FRAMES)
        top = response.headers["content-type"]
        assert top.startswith("multipart/related") and "transfer-syntax" not in top
        boundary = re.search(r'boundary="?([^";]+)"?', top)
        assert boundary is not None
        body = response.content
        head_end = body.index(b"\r\n\r\n")
        head = body[:head_end].decode("latin-1")
        # spelled exactly so: OHIF reads the frame syntax from this header only
        assert f"Content-Type: image/jphc; transfer-syntax={HTJ2K}" in head.split("\r\n")
        closing = f"\r\n--{boundary[1]}--".encode()
        codestream = body[head_end + 4 : body.rindex(closing)]
        pixels = imagecodecs.htj2k_decode(codestream)
        assert np.array_equal(pixels, source.pixel_array)


def test_thumbnails_as_ohif_asks_for_them(stored: dict[str, Any]) -> None:
    base = f"{stored['base']}/studies/{stored['study']}/series/{stored['series']}/instances"
    sop = next(iter(stored["sources"]))
    response = _get(f"{base}/{sop}/thumbnail?viewport=256,256", "image/jpeg")
    assert response.headers["content-type"].startswith("image/jpeg")
    image = imagecodecs.jpeg8_decode(response.content)
    assert max(image.shape[:2]) == 256 and image.std() > 0
