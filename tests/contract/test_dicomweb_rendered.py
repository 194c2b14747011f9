"""Contract tests: DICOMweb rendered frames and thumbnails of imported files, over raw HTTP, pixel-exact."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydicom.data import get_testdata_file

from contract.helpers import active_datastore
from contract.imaging import metadata, run_import
from dicom_factory import make_ct_series, uid
from openhi.codec import render
from openhi.dicom.instance_view import instance_view
from openhi.testing import RunningServer

FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_rle_2frame.dcm")
STUDY = uid("render-study")


@dataclass
class Imported:
    server: RunningServer
    ds_id: str
    sources: dict[str, pydicom.Dataset]  # file name (or SOP Instance UID of a generated one) -> dataset
    attributes: dict[str, dict[str, Any]]  # SOP Instance UID -> the document's merged attributes

    def path(self, source: pydicom.Dataset, tail: str = "rendered") -> str:
        return (
            f"/datastore/{self.ds_id}/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}"
            f"/instances/{source.SOPInstanceUID}/{tail}"
        )

    def get(self, path: str, accept: str | None = None) -> httpx.Response:
        url = f"{self.server.endpoint}{path}"
        headers = {"X-Amz-Content-SHA256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
        if accept is not None:
            headers["Accept"] = accept
        request = AWSRequest(method="GET", url=url, headers=headers)
        SigV4Auth(Credentials("test", "test"), "medical-imaging", "us-east-1").add_auth(request)
        return httpx.get(url, headers=dict(request.headers.items()), timeout=60)

    def rendering(self, source: pydicom.Dataset, frame: int = 1) -> render.Rendering:
        return render.rendering(self.attributes[str(source.SOPInstanceUID)], frame)


def _png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    out: np.ndarray = imagecodecs.png_decode(response.content)
    return out


def _expected(
    pixels: np.ndarray,
    source: pydicom.Dataset,
    rendering: render.Rendering,
    window: render.Window | None = None,
    viewport: render.Viewport | None = None,
) -> np.ndarray:
    """Our own render of the source file's pixels with the imported instance's attributes."""
    return render.rendered_image(pixels, str(source.PhotometricInterpretation), rendering, window, viewport)


@pytest.fixture(scope="module")
def imported(openhi_server: RunningServer) -> Imported:
    client = openhi_server.client()
    files: dict[str, bytes] = {}
    for name in FILES:
        path = get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"{name} is not bundled with pydicom")
        files[name] = Path(str(path)).read_bytes()
    # one study, two series: series number 2 (five slices), series number 1 (three slices)
    second = make_ct_series(
        5, rows=32, cols=48, seed=11, study_uid=STUDY, series_uid=uid("rs", 2), SeriesNumber="2"
    )
    first = make_ct_series(
        3, rows=40, cols=24, seed=12, study_uid=STUDY, series_uid=uid("rs", 1), SeriesNumber="1"
    )
    for i, data in enumerate(second + first):
        files[f"gen-{i}.dcm"] = data
    ds_id = active_datastore(client, "rendered")
    result = run_import(client, openhi_server, ds_id, files)
    assert result["job"]["jobStatus"] == "COMPLETED" and not result["failure"], result["failure"]
    sources = {name: pydicom.dcmread(io.BytesIO(data)) for name, data in files.items()}
    attributes: dict[str, dict[str, Any]] = {}
    for success in result["success"]:
        set_id = success["importResponse"]["imageSetId"]
        doc = metadata(client, ds_id, set_id)
        for series in doc["Study"]["Series"].values():
            for sop in series["Instances"]:
                attributes[sop] = instance_view(doc, sop).attributes
    return Imported(openhi_server, ds_id, sources, attributes)


def test_ct_rendered_png_equals_the_source_rendered(imported: Imported) -> None:
    ct = imported.sources["CT_small.dcm"]
    got = _png(imported.get(imported.path(ct), accept="image/png"))
    want = _expected(ct.pixel_array, ct, imported.rendering(ct))  # no window in CT_small: its range
    assert got.shape == (128, 128) and np.array_equal(got, want)
    assert got.min() == 0 and got.max() == 255
    Path("/tmp/openhi-helpers").mkdir(exist_ok=True)
    Path("/tmp/openhi-helpers/render-ct.png").write_bytes(imagecodecs.png_encode(got))


def test_window_viewport_and_accept_parameters(imported: Imported) -> None:
    mr = imported.sources["MR_small.dcm"]
    rendering = imported.rendering(mr)
    assert rendering.window == render.Window(600, 1600)  # the instance's own window
    plain = _png(imported.get(imported.path(mr) + "?accept=image/png"))
    assert np.array_equal(plain, _expected(mr.pixel_array, mr, rendering))
    window = render.Window(300, 500, render.SIGMOID)
    viewport = render.Viewport(40, 20)
    query = "?window=300,500,sigmoid&viewport=40,20&accept=image/png"
    got = _png(imported.get(imported.path(mr) + query, accept="image/jpeg"))  # the query's accept wins
    assert got.shape == (20, 20)
    assert np.array_equal(got, _expected(mr.pixel_array, mr, rendering, window, viewport))
    region = _png(imported.get(imported.path(mr) + "?viewport=32,32,16,8,-16,32", accept="image/png"))
    want = _expected(mr.pixel_array, mr, rendering, None, render.Viewport(32, 32, 16, 8, -16, 32))
    assert region.shape == (32, 16) and np.array_equal(region, want)


def test_jpeg_is_the_default_and_decodes(imported: Imported) -> None:
    ct = imported.sources["CT_small.dcm"]
    for accept in (None, "*/*", "image/*", "image/gif;q=0.9, image/jpeg;q=0.5"):
        response = imported.get(imported.path(ct) + "?quality=60&viewport=64,64", accept=accept)
        assert response.status_code == 200, (accept, response.text)
        assert response.headers["content-type"] == "image/jpeg"
        assert "max-age" in response.headers["cache-control"]
        image = imagecodecs.jpeg8_decode(response.content)
        assert image.shape == (64, 64)
        want = _expected(ct.pixel_array, ct, imported.rendering(ct), None, render.Viewport(64, 64))
        assert np.abs(image.astype(int) - want).mean() < 4  # lossy, but the same picture


def test_colour_and_multi_frame(imported: Imported) -> None:
    rgb = imported.sources["SC_rgb_small_odd.dcm"]
    assert np.array_equal(_png(imported.get(imported.path(rgb), "image/png")), rgb.pixel_array)
    two = imported.sources["SC_rgb_rle_2frame.dcm"]
    frames = two.pixel_array
    assert np.array_equal(_png(imported.get(imported.path(two, "frames/2/rendered"), "image/png")), frames[1])
    assert np.array_equal(_png(imported.get(imported.path(two), "image/png")), frames[0])  # the first frame
    thumb = _png(imported.get(imported.path(two, "frames/2/thumbnail?viewport=50,50"), "image/png"))
    want = _expected(frames[1], two, imported.rendering(two, 2), None, render.Viewport(50, 50))
    assert np.array_equal(thumb, want)


def test_thumbnails(imported: Imported) -> None:
    mr = imported.sources["MR_small.dcm"]
    thumb = imported.get(imported.path(mr, "thumbnail"))
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert imagecodecs.jpeg8_decode(thumb.content).shape == (128, 128)  # 64 x 64 enlarged to the default
    # OHIF: thumbnailRendering "thumbnail" (a bulk data retrieve) and "thumbnailDirect" (an <img> element)
    for query, accept in (
        ("?accept=image/jpeg", 'multipart/related; type="application/octet-stream"; transfer-syntax=*'),
        ("", "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"),
    ):
        viewer = imported.get(imported.path(mr, "thumbnail") + query, accept=accept)
        assert viewer.status_code == 200 and viewer.headers["content-type"] == "image/jpeg", accept
        assert viewer.content == thumb.content
    generated = {
        str(ds.SOPInstanceUID): ds for name, ds in imported.sources.items() if name.startswith("gen-")
    }
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for ds in generated.values():
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    base = f"/datastore/{imported.ds_id}/studies/{STUDY}"
    for series_uid, members in by_series.items():
        middle = sorted(members, key=lambda d: int(d.InstanceNumber))[(len(members) - 1) // 2]
        got = _png(imported.get(f"{base}/series/{series_uid}/thumbnail?viewport=16,16", "image/png"))
        viewport = render.Viewport(16, 16)
        assert np.array_equal(
            got, _expected(middle.pixel_array, middle, imported.rendering(middle), None, viewport)
        )
    study = _png(imported.get(f"{base}/thumbnail", "image/png"))
    first_series = by_series[uid("rs", 1)]
    middle = sorted(first_series, key=lambda d: int(d.InstanceNumber))[1]
    want = _expected(middle.pixel_array, middle, imported.rendering(middle), None, render.Viewport(128, 128))
    assert study.shape == (128, 77) and np.array_equal(study, want)  # 40 x 24 fitted into 128 x 128


def test_refusals(imported: Imported) -> None:
    ct, two = imported.sources["CT_small.dcm"], imported.sources["SC_rgb_rle_2frame.dcm"]
    for query, words in (
        ("window=abc,10", "window center"),
        ("window=40,400,gamma", "window function"),
        ("viewport=0,10", "viewport"),
        ("viewport=10,10,120,0,20,20", "outside"),
        ("quality=101", "quality"),
    ):
        response = imported.get(imported.path(ct) + "?" + query)
        assert response.status_code == 400, (query, response.text)
        assert (
            words in response.json()["message"]
            and response.headers["x-amzn-errortype"] == "ValidationException"
        )
    several = imported.get(imported.path(two, "frames/1,2/rendered"))
    assert several.status_code == 400 and "one at a time" in several.json()["message"]
    for bad in ("0", "%C2%B2", "x", "1.5"):
        assert imported.get(imported.path(two, f"frames/{bad}/rendered")).status_code == 400, bad
    assert imported.get(imported.path(two, "frames/3/rendered")).status_code == 404
    gif = imported.get(imported.path(ct), accept="image/gif")
    assert gif.status_code == 406 and "image/jpeg" in gif.json()["message"]
    unknown = ct.copy()
    unknown.SOPInstanceUID = uid("no-such-instance")
    assert imported.get(imported.path(unknown)).status_code == 404
    unknown.SeriesInstanceUID = uid("no-such-series")
    assert imported.get(imported.path(unknown, "thumbnail")).status_code == 404
    missing_study = f"/datastore/{imported.ds_id}/studies/{uid('no-such-study')}/thumbnail"
    assert imported.get(missing_study).status_code == 404
    malformed = imported.get(f"/datastore/{imported.ds_id}/studies/1.2.x/thumbnail")
    assert malformed.status_code == 400 and "UID" in malformed.json()["message"]
    other_set = imported.get(imported.path(ct) + "?imageSetId=" + "0" * 32)
    assert other_set.status_code == 404
