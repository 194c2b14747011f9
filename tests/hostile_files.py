"""Hostile DICOM P10 files crafted byte by byte (for the strict-parsing tests, unit and contract)."""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

import dicom_factory as factory

PIXEL_TAG = b"\xe0\x7f\x10\x00"
_LONG = (b"OB", b"OW", b"SQ", b"UN", b"UT")


def element(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element; ``length`` overrides the declared length."""
    declared = len(value) if length is None else length
    if vr in _LONG:
        return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", declared) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", declared) + value


def before_pixels(extra: bytes, **kwargs: Any) -> bytes:
    """A valid 64 × 64 explicit VR LE file with ``extra`` bytes inserted just before its Pixel Data."""
    data = factory.make_instance(rows=64, cols=64, **kwargs)
    pos = data.rindex(PIXEL_TAG)
    return data[:pos] + extra + data[pos:]


def private_block(*elements: bytes) -> bytes:
    """A private creator (0029,0010) followed by ``elements``."""
    return element(0x0029, 0x0010, b"LO", b"HOSTILE ") + b"".join(elements)


def overrunning_private(**kwargs: Any) -> bytes:
    """(0029,1010) declares 0xFFFFFFF0 bytes with about 8 KB (the Pixel Data) left in the file."""
    return before_pixels(private_block(element(0x0029, 0x1010, b"OB", b"", length=0xFFFFFFF0)), **kwargs)


def deflated_with_private_binary(size: int, **kwargs: Any) -> bytes:
    """A deflated file carrying ``size`` zero bytes in a private OB: tiny on disk, large inflated."""
    ds = pydicom.dcmread(BytesIO(factory.make_instance(rows=16, cols=16, **kwargs)))
    ds.add_new(0x00290010, "LO", "HOSTILE")
    ds.add_new(0x00291010, "OB", bytes(size))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
