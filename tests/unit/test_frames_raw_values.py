"""Image Pixel values read from raw elements equal pydicom's own conversion, in every encoding."""

from __future__ import annotations

import struct
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from openhi.codec import transfer_syntax as tsx
from openhi.dicom.frames import PIXEL_DATA, _pixel_bytes, pixel_info, us_value

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory

US_TAGS = {
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280002: "SamplesPerPixel",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
    0x00280006: "PlanarConfiguration",
}


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(BytesIO(data))


@pytest.mark.parametrize(
    "syntax", [tsx.EXPLICIT_VR_LE, tsx.IMPLICIT_VR_LE, factory.ExplicitVRBigEndian, factory.J2K_LOSSLESS]
)
@pytest.mark.parametrize("samples", [1, 3])
def test_us_values_equal_pydicom(syntax: str, samples: int) -> None:
    data = factory.make_instance(rows=5, cols=7, samples=samples, transfer_syntax=syntax, bits=12)
    raw_ds, ref_ds = _read(data), _read(data)
    for tag, keyword in US_TAGS.items():
        got = us_value(raw_ds, tag, keyword)
        assert got == ref_ds.get(keyword) and type(got) is type(ref_ds.get(keyword))
    assert _pixel_bytes(raw_ds) == ref_ds.PixelData
    assert pixel_info(raw_ds) == pixel_info(ref_ds)


def _with_raw(ds: pydicom.Dataset, tag: int, vr: str | None, value: bytes, little: bool = True) -> None:
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, little)


@pytest.mark.parametrize(
    ("vr", "value", "little"),
    [
        ("US", struct.pack("<H", 512), True),
        (None, struct.pack("<H", 512), True),  # implicit VR
        ("US", struct.pack(">H", 512), False),  # big endian: pydicom decides
        ("US", struct.pack("<HH", 512, 3), True),  # two values: pydicom's MultiValue
        ("US", b"", True),  # empty
        ("US", b"\x00", True),  # odd length
        ("SS", struct.pack("<h", -3), True),  # a VR the file got wrong
        ("UN", struct.pack("<H", 512), True),
    ],
)
def test_unusual_raw_elements_give_pydicoms_answer(vr: str | None, value: bytes, little: bool) -> None:
    data = factory.make_instance(rows=4, cols=4)
    raw_ds, ref_ds = _read(data), _read(data)
    for ds in (raw_ds, ref_ds):
        _with_raw(ds, 0x00280010, vr, value, little)
    try:
        expected: Any = ref_ds.Rows
    except Exception as exc:
        with pytest.raises(type(exc)):
            us_value(raw_ds, 0x00280010, "Rows", required=True)
        return
    got = us_value(raw_ds, 0x00280010, "Rows", required=True)
    assert got == expected and type(got) is type(expected)


def test_absent_values() -> None:
    ds = _read(factory.make_instance(rows=4, cols=4))
    del ds.Rows
    assert us_value(ds, 0x00280010, "Rows") is None
    with pytest.raises(AttributeError):
        us_value(ds, 0x00280010, "Rows", required=True)
    assert us_value(ds, 0x00280006, "PlanarConfiguration") is None


def test_converted_elements_are_used_as_converted() -> None:
    ds = _read(factory.make_instance(rows=4, cols=4))
    ds.Rows = 9  # a DataElement now, not raw
    assert us_value(ds, 0x00280010, "Rows", required=True) == 9
    assert PIXEL_DATA in ds
    ds.PixelData = b"\x01\x02" * 16
    assert _pixel_bytes(ds) == b"\x01\x02" * 16
