"""Rendered images: VOI window math (PS3.3 C.11.2.1.2), modality rescale, MONOCHROME1, colour, viewport, codecs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_windowing

from openhi.codec import render as r
from openhi.dicom.document import document_from_instances
from openhi.dicom.instance import process_instance
from openhi.dicom.instance_view import instance_view
from openhi.dicom.stored_frames import decode_frame, image_format
from openhi.dicomweb import rendered


def _mono(bits: int = 16, signed: bool = False, **kw: object) -> r.Rendering:
    return r.Rendering("MONOCHROME2", bits, signed, **kw)  # type: ignore[arg-type]


def _pydicom_window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 8, 0  # output range 0 .. 255
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    out: np.ndarray = apply_windowing(x, ds)
    return out


@pytest.mark.parametrize("function", [r.LINEAR, r.LINEAR_EXACT, r.SIGMOID])
@pytest.mark.parametrize(("center", "width"), [(40.0, 400.0), (0.5, 1.0), (100.0, 7.0), (-3.25, 12.5)])
def test_window_functions_equal_the_standard(function: str, center: float, width: float) -> None:
    x = np.arange(-300, 301, dtype=np.float64) / 2
    ours = r.apply_window(x, r.Window(center, width, function))
    assert np.allclose(ours, _pydicom_window(x, center, width, function), rtol=0, atol=1e-9)


def test_linear_window_by_hand() -> None:
    # c=50, w=101: x <= -0.5 -> 0, x > 99.5 -> 255, else ((x - 49.5) / 100 + 0.5) * 255
    x = np.array([-1.0, -0.5, 0.0, 50.0, 99.0, 99.5, 100.0])
    want = [0.0, 0.0, 0.005 * 255, 0.505 * 255, 0.995 * 255, 255.0, 255.0]
    assert np.allclose(r.apply_window(x, r.Window(50, 101)), want, atol=1e-12)
    exact = r.apply_window(x, r.Window(50, 100, r.LINEAR_EXACT))  # x <= 0 -> 0, x > 100 -> 255
    assert np.allclose(exact, [0, 0, 0, 127.5, 0.99 * 255, 0.995 * 255, 255], atol=1e-12)
    sigmoid = r.apply_window(np.array([50.0]), r.Window(50, 100, r.SIGMOID))
    assert sigmoid[0] == pytest.approx(127.5)


def test_rescale_then_window_and_rounding() -> None:
    pixels = np.array([[0, 1024], [1064, 2048]], dtype=np.uint16)  # HU -1024, 0, 40, 1024
    rendering = _mono(12, slope=1.0, intercept=-1024.0, window=r.Window(40, 401, r.LINEAR))
    out = r.to_uint8(r.display_values(pixels, "MONOCHROME2", rendering))
    # x=0: ((0 - 39.5) / 400 + 0.5) * 255 = 102.33 -> 102 ; x=40: 127.81 -> 128
    assert out.tolist() == [[0, 102], [128, 255]]


def test_query_window_wins_and_monochrome1_inverts() -> None:
    pixels = np.array([[0, 50, 100]], dtype=np.uint8)
    rendering = r.Rendering("MONOCHROME1", 8, False, window=r.Window(1000, 10))
    out = r.to_uint8(r.display_values(pixels, "MONOCHROME1", rendering, r.Window(50, 100, r.LINEAR_EXACT)))
    assert out.tolist() == [[255, 128, 0]]  # 50 -> 127.5, inverted 127.5, rounded half up


def test_no_window_maps_the_frame_range() -> None:
    pixels = np.array([[10, 20], [30, 50]], dtype=np.uint16)
    out = r.display_values(pixels, "MONOCHROME2", _mono())
    assert out.tolist() == [[0.0, 255 * 10 / 40], [255 * 20 / 40, 255.0]]
    constant = r.display_values(np.full((2, 2), 7, dtype=np.uint16), "MONOCHROME2", _mono())
    assert np.all(constant == 127.5)


def test_signed_and_high_bits() -> None:
    # 12 bits stored, signed: 0x0FFF is -1, 0x0800 is -2048; high bits (overlay garbage) are masked
    pixels = np.array([[0x0FFF, 0x0800, 0x07FF, 0xF001]], dtype=np.uint16)
    assert r.stored_values(pixels, 12, True).tolist() == [[-1, -2048, 2047, 1]]
    assert r.stored_values(pixels, 12, False).tolist() == [[4095, 2048, 2047, 1]]
    signed = np.array([[-2048, 0, 2047]], dtype=np.int16)
    out = r.display_values(signed, "MONOCHROME2", _mono(12, True, window=r.Window(0, 4096, r.LINEAR_EXACT)))
    assert out.tolist() == [[0.0, 127.5, 255 * 4095 / 4096]]


def test_rgb_passes_through_and_16_bit_colour_scales() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
    rendering = r.Rendering("RGB", 8, False, window=r.Window(0, 10))  # a window does not apply to colour
    assert np.array_equal(r.to_uint8(r.display_values(rgb, "RGB", rendering)), rgb)
    wide = np.array([[[0, 65535, 32768]]], dtype=np.uint16)
    assert r.to_uint8(r.display_values(wide, "RGB", r.Rendering("RGB", 16, False))).tolist() == [
        [[0, 255, 128]]
    ]


def test_ybr_full_becomes_rgb_and_unknown_colour_is_refused() -> None:
    ybr = np.array([[[128, 128, 128], [255, 128, 128]]], dtype=np.uint8)  # grey, white
    out = r.to_uint8(r.display_values(ybr, "YBR_FULL", r.Rendering("YBR_FULL", 8, False)))
    assert out.tolist() == [[[128, 128, 128], [255, 255, 255]]]
    with pytest.raises(r.CannotRender, match="HSV"):
        r.display_values(ybr, "HSV", r.Rendering("HSV", 8, False))


def test_palette_from_document_attributes_and_segmented_refused() -> None:
    lut = np.array([0, 0x8000, 0xFFFF], dtype="<u2").tobytes()
    data = base64.b64encode(lut).decode()
    attributes = {"PhotometricInterpretation": "PALETTE COLOR", "BitsAllocated": 8, "BitsStored": 8}
    for c in ("Red", "Green", "Blue"):
        attributes[f"{c}PaletteColorLookupTableDescriptor"] = [3, 10, 16]
        attributes[f"{c}PaletteColorLookupTableData"] = data
    rendering = r.rendering(attributes)
    pixels = np.array([[9, 10, 11, 12, 200]], dtype=np.uint8)  # below the first mapped value -> entry 0
    out = r.to_uint8(r.display_values(pixels, "PALETTE COLOR", rendering))
    assert out[..., 0].tolist() == [[0, 0, 128, 255, 255]]
    segmented = {k: v for k, v in attributes.items() if not k.endswith("Data")}
    segmented["SegmentedRedPaletteColorLookupTableData"] = data
    with pytest.raises(r.CannotRender, match="segmented"):
        r.rendering(segmented)


def test_rendering_reads_document_values_and_functional_groups() -> None:
    attributes = {
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 16,
        "BitsStored": "12",
        "PixelRepresentation": 1,
        "RescaleSlope": "2 ",
        "RescaleIntercept": "-10",
        "WindowCenter": ["600 ", "40"],
        "WindowWidth": ["1600", "400"],
        "VOILUTFunction": "SIGMOID",
        "SharedFunctionalGroupsSequence": [
            {"FrameVOILUTSequence": [{"WindowCenter": "5", "WindowWidth": "9"}]}
        ],
        "PerFrameFunctionalGroupsSequence": [
            {"PixelValueTransformationSequence": [{"RescaleSlope": "3", "RescaleIntercept": "1"}]},
            {
                "FrameVOILUTSequence": [
                    {"WindowCenter": "7", "WindowWidth": "11", "VOILUTFunction": "LINEAR_EXACT"}
                ]
            },
        ],
    }
    first, second = r.rendering(attributes, 1), r.rendering(attributes, 2)
    assert (first.slope, first.intercept, first.window) == (3.0, 1.0, r.Window(5, 9, r.LINEAR))
    assert (second.slope, second.intercept, second.window) == (2.0, -10.0, r.Window(7, 11, r.LINEAR_EXACT))
    del attributes["SharedFunctionalGroupsSequence"], attributes["PerFrameFunctionalGroupsSequence"]
    plain = r.rendering(attributes)
    assert plain.window == r.Window(600, 1600, r.SIGMOID) and plain.bits_stored == 12 and plain.signed
    attributes["WindowWidth"] = "0"  # unusable: the frame's range is used
    assert r.rendering(attributes).window is None


def test_voi_lut_sequence() -> None:
    attributes = {
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 16,
        "VOILUTSequence": [{"LUTDescriptor": [4, 100, 8], "LUTData": [0, 10, 200, 255]}],
    }
    rendering = r.rendering(attributes)
    pixels = np.array([[0, 100, 101, 102, 103, 999]], dtype=np.uint16)
    assert r.to_uint8(r.display_values(pixels, "MONOCHROME2", rendering)).tolist() == [
        [0, 0, 10, 200, 255, 255]
    ]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("40,400", r.Window(40, 400, r.LINEAR)),
        ("40,400,linear-exact", r.Window(40, 400, r.LINEAR_EXACT)),
        ("-2.5, 0.5 ,SIGMOID", r.Window(-2.5, 0.5, r.SIGMOID)),
    ],
)
def test_parse_window(text: str, want: r.Window) -> None:
    assert rendered.parse_window(text) == want


@pytest.mark.parametrize(
    "text", ["40", "40,400,gamma", "a,400", "40,0.5,linear", "40,0,sigmoid", "1,2,3,4", "nan,4"]
)
def test_parse_window_refuses(text: str) -> None:
    with pytest.raises(r.BadParameter):
        rendered.parse_window(text)


def test_parse_viewport_and_quality() -> None:
    assert rendered.parse_viewport("256,128") == r.Viewport(256, 128)
    assert rendered.parse_viewport("64,64,10,20,-30,40") == r.Viewport(64, 64, 10, 20, -30, 40)
    assert rendered.parse_viewport("64,64,,,30,") == r.Viewport(64, 64, None, None, 30, None)
    for bad in ("0,10", "10", "10,10,1", "x,10", "10,10,-1,0,5,5", "10,10,0,0,0,5", "9000,10"):
        with pytest.raises(r.BadParameter):
            rendered.parse_viewport(bad)
    assert rendered.parse_quality("1") == 1 and rendered.parse_quality("100") == 100
    for bad in ("0", "101", "high", "9.5"):
        with pytest.raises(r.BadParameter):
            rendered.parse_quality(bad)


def test_viewport_keeps_aspect_and_averages_areas() -> None:
    assert r.fit(512, 256, 128, 128) == (128, 64)
    assert r.fit(100, 300, 256, 256) == (85, 256)
    assert r.fit(64, 64, 256, 100) == (100, 100)  # enlarged to fit
    img = np.arange(16, dtype=np.float64).reshape(4, 4)
    half = r.apply_viewport(img, r.Viewport(2, 2))
    assert half.tolist() == [[2.5, 4.5], [10.5, 12.5]]  # 2x2 block means
    third = r.resize(np.array([[0.0, 3.0, 6.0]]), 1, 2)  # areas [0, 1.5) and [1.5, 3)
    assert third.tolist() == [[(0 + 1.5) / 1.5, (1.5 + 6) / 1.5]]
    up = r.resize(np.array([[0.0, 4.0]]), 1, 4)  # pixel centres aligned, edges clamped
    assert up.tolist() == [[0.0, 1.0, 3.0, 4.0]]
    assert np.allclose(r.resize(img, 4, 4), img)


@pytest.mark.parametrize(("n", "size"), [(7, 3), (10, 4), (64, 5), (5, 4), (3, 1)])
def test_shrinking_is_the_exact_area_average(n: int, size: int) -> None:
    img = np.random.default_rng(n).uniform(0, 255, (n, n + 1))
    # reference: each pixel repeated `size` times, then means of blocks of `n` (exact box areas)
    rows = np.repeat(img, size, axis=0).reshape(size, n, n + 1).mean(axis=1)
    want = np.repeat(rows, size, axis=1).reshape(size, size, n + 1).mean(axis=2)
    assert np.allclose(r.resize(img, size, size), want, atol=1e-9)


def test_rendered_image_is_the_table_of_the_pipeline() -> None:
    rng = np.random.default_rng(3)
    for dtype, bits, signed in ((np.uint8, 8, False), (np.int16, 12, True), (np.uint16, 16, False)):
        info = np.iinfo(dtype)
        pixels = rng.integers(info.min, info.max, size=(23, 31), dtype=dtype, endpoint=True)
        for window in (None, r.Window(100, 300, r.SIGMOID)):
            rendering = r.Rendering("MONOCHROME1", bits, signed, slope=0.5, intercept=-7)
            want = r.to_uint8(r.display_values(pixels, "MONOCHROME1", rendering, window))
            assert np.array_equal(r.rendered_image(pixels, "MONOCHROME1", rendering, window), want)
            region = r.rendered_image(pixels, "MONOCHROME1", rendering, window, r.Viewport(5, 7, 1, 2, 5, 7))
            assert np.array_equal(region, want[2:9, 1:6])  # a region of its own size: not resampled
            small = r.rendered_image(pixels, "MONOCHROME1", rendering, window, r.Viewport(10, 10))
            full = r.display_values(pixels, "MONOCHROME1", rendering, window)
            assert (
                np.abs(small.astype(float) - r.apply_viewport(full, r.Viewport(10, 10))).max() <= 0.5 + 1e-3
            )


def test_viewport_region_and_flip() -> None:
    img = np.arange(20, dtype=np.float64).reshape(4, 5)
    crop = r.apply_viewport(img, r.Viewport(100, 100, 1, 1, 2, 2))
    assert crop.shape == (100, 100)
    exact = r.apply_viewport(img, r.Viewport(2, 2, 1, 1, 2, 2))
    assert exact.tolist() == [[6.0, 7.0], [11.0, 12.0]]
    flipped = r.apply_viewport(img, r.Viewport(2, 2, 3, 1, -2, 2))  # columns 1..2, mirrored
    assert flipped.tolist() == [[7.0, 6.0], [12.0, 11.0]]
    with pytest.raises(r.BadParameter, match="outside"):
        r.apply_viewport(img, r.Viewport(2, 2, 4, 0, 2, 2))


def test_png_round_trip_exact_and_jpeg_size() -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(-1000, 3000, size=(37, 53), dtype=np.int16)
    rendering = _mono(16, True, window=r.Window(500, 2000))
    want = r.to_uint8(r.display_values(pixels, "MONOCHROME2", rendering))
    png = r.render(pixels, "MONOCHROME2", rendering, media_type=r.PNG)
    assert np.array_equal(imagecodecs.png_decode(png), want)
    jpeg = r.render(pixels, "MONOCHROME2", rendering, viewport=r.Viewport(20, 20), quality=75)
    assert jpeg[:2] == b"\xff\xd8" and imagecodecs.jpeg8_decode(jpeg).shape == (14, 20)
    rgb = r.render(rng.integers(0, 255, (9, 4, 3), dtype=np.uint8), "RGB", r.Rendering("RGB", 8, False))
    assert imagecodecs.jpeg8_decode(rgb).shape == (9, 4, 3)
    with pytest.raises(r.CannotRender, match="image/gif"):
        r.encode(want, "image/gif")


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "SC_rgb_small_odd.dcm",
        "examples_palette.dcm",
        "SC_ybr_full_422_uncompressed.dcm",  # stored as full-resolution YBR: rendered as RGB
        "examples_ybr_color.dcm",  # JPEG baseline stored as it is: pydicom's decoder gives RGB
    ],
)
def test_stored_frame_renders_like_the_source_pixels(name: str) -> None:
    """The imported instance's stored frame renders to the same PNG as pydicom's pixel_array."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with pydicom")
    processed = process_instance(Path(str(path)).read_bytes())
    doc = json.loads(json.dumps(document_from_instances("d" * 32, "i" * 32, [processed])))
    view = instance_view(doc, processed.sop_uid)
    pixels, photometric = decode_frame(
        processed.frames[0].data, view.stored_transfer_syntax, image_format(view.attributes)
    )
    rendering = r.rendering(view.attributes)
    source = pydicom.dcmread(str(path))
    ours = imagecodecs.png_decode(r.render(pixels, photometric, rendering, media_type=r.PNG))
    first = source.pixel_array[0] if int(source.get("NumberOfFrames") or 1) > 1 else source.pixel_array
    colour = "RGB" if source.PhotometricInterpretation.startswith("YBR") else source.PhotometricInterpretation
    want = r.to_uint8(r.display_values(first, colour, rendering))
    assert np.array_equal(ours, want)
    if name == "MR_small.dcm":
        assert rendering.window == r.Window(600, 1600)
