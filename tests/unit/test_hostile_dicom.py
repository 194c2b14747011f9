"""Hostile DICOM files, crafted byte by byte: each is refused naming its element, or imported within limits."""

from __future__ import annotations

import base64
import json
import struct
import sys
import zlib
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from openhi.dicom import strict
from openhi.dicom.instance import InstanceRejected, ProcessedInstance, process_instance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dicom_factory as factory
from hostile_files import (
    before_pixels,
    deflated_with_private_binary,
    element,
    overrunning_private,
    private_block,
)


def rejected(data: bytes) -> str:
    with pytest.raises(InstanceRejected) as info:
        process_instance(data)
    assert info.value.exception_type == "ValidationException"
    return info.value.message


def test_an_element_running_past_the_end_of_the_file_is_refused_by_tag() -> None:
    """(0029,1010) declares 0xFFFFFFF0 bytes with 8 KB left: a lenient reader swallows the pixel data."""
    hostile = overrunning_private()
    ds = pydicom.dcmread(BytesIO(hostile))  # pydicom reads it "fine": the pixel data is gone
    assert "PixelData" not in ds
    message = rejected(hostile)
    assert "(0029,1010) declares 4294967280 bytes but only 8" in message, message


def test_an_element_running_past_its_sequence_item_is_refused_by_tag() -> None:
    inner = element(0x0008, 0x0100, b"SH", b"ABCDEFGH", length=1000)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
    message = rejected(before_pixels(element(0x0040, 0x0275, b"SQ", item)))
    assert "(0008,0100) CodeValue in item 1 of (0040,0275)" in message and "declares 1000 bytes" in message


def test_a_sequence_without_its_delimiter_is_refused() -> None:
    undefined = struct.pack("<I", 0xFFFFFFFF)
    never_closed = (
        struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + undefined
        + struct.pack("<HH", 0xFFFE, 0xE000) + undefined + element(0x0008, 0x0100, b"SH", b"ABCD")
    )  # fmt: skip
    assert "not a valid DICOM Part 10 file" in rejected(before_pixels(never_closed))


def test_the_truncated_pixel_data_is_named() -> None:
    assert "(7FE0,0010) PixelData declares" in rejected(factory.truncated_file())


def test_a_deflate_bomb_is_refused_before_it_is_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = deflated_with_private_binary(8 * strict.MB)
    assert len(bomb) < 64 * 1024
    monkeypatch.setattr(strict, "MAX_INFLATED_BYTES", 4 * strict.MB)
    message = rejected(bomb)
    assert f"expands beyond the maximum of {4 * strict.MB} bytes" in message
    broken = bomb[: len(bomb) // 2] + b"\xff" * 64 + bomb[len(bomb) // 2 + 64 :]
    with pytest.raises(InstanceRejected):
        process_instance(broken)


def test_a_large_binary_is_not_inlined_and_is_reported() -> None:
    """The 41 KB file expanding to 32 MiB: imported, but the 32 MiB value is not in the metadata."""
    data = deflated_with_private_binary(32 * strict.MB)
    assert len(data) < 64 * 1024
    p = process_instance(data)
    assert isinstance(p, ProcessedInstance)
    assert "00291010" not in p.instance["DICOM"] and "00291010" not in p.instance["DICOMVRs"]
    assert p.instance["DICOM"]["00290010"] == "HOSTILE"
    assert len(p.instance["ImageFrames"]) == 1
    assert p.metadata_bytes < 64 * 1024
    assert len(json.dumps(p.instance)) < 64 * 1024
    [warning] = p.warnings
    assert (warning["warning_reason_code"], warning["type"]) == (0xB006, "ELEMENTS_DISCARDED")
    assert "(0029,1010)" in warning["message"]


def test_a_binary_at_the_limit_is_inlined() -> None:
    p = process_instance(before_pixels(private_block(element(0x0029, 0x1010, b"OB", bytes(strict.MB)))))
    assert p.instance["DICOM"]["00291010"] == base64.b64encode(bytes(strict.MB)).decode()
    assert p.warnings == []


def test_a_binary_over_the_limit_inside_a_sequence_is_not_inlined() -> None:
    big = element(0x0029, 0x1010, b"OB", bytes(strict.MB + 2))
    creator = element(0x0029, 0x0010, b"LO", b"HOSTILE ")
    item = struct.pack("<HHI", 0xFFFE, 0xE000, len(creator) + len(big)) + creator + big
    p = process_instance(before_pixels(element(0x0008, 0x1140, b"SQ", item)))  # ReferencedImageSequence
    [node] = p.instance["DICOM"]["ReferencedImageSequence"]
    assert node == {"00290010": "HOSTILE"}
    assert "(0029,1010)" in p.warnings[0]["message"]


def test_an_oversized_text_element_is_refused() -> None:
    text = b"A" * (strict.MAX_ELEMENT_BYTES + 2)
    message = rejected(before_pixels(element(0x0020, 0x4000, b"UT", text)))  # ImageComments
    assert f"(0020,4000) ImageComments holds {len(text)} bytes, over the maximum" in message


def test_metadata_over_the_per_instance_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strict, "MAX_INSTANCE_METADATA_BYTES", 200_000)
    comments = b"B" * 250_000
    message = rejected(before_pixels(element(0x0020, 0x4000, b"UT", comments)))
    assert "metadata is" in message and "over the maximum of 200000 bytes per instance" in message


def test_inflation_check_passes_ordinary_files() -> None:
    strict.check_inflation(factory.make_instance(transfer_syntax=DeflatedExplicitVRLittleEndian))
    strict.check_inflation(factory.make_instance())
    strict.check_inflation(b"not dicom")
    assert zlib.MAX_WBITS == 15
