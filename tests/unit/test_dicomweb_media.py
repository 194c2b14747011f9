"""DICOMweb Accept parsing and negotiation: quality values, wildcards, ``type=`` and ``transfer-syntax=``."""

from __future__ import annotations

import pytest

from openhi.core.errors import NotAcceptableError
from openhi.dicomweb.media import (
    Choice,
    choose_bulkdata,
    choose_frames,
    choose_instance,
    frame_syntaxes,
    media_type_of,
    parse_accept,
)

ELE = "1.2.840.10008.1.2.1"
RPCL = "1.2.840.10008.1.2.4.202"
J2KL = "1.2.840.10008.1.2.4.90"
JPEG = "1.2.840.10008.1.2.4.50"
OCTET = "application/octet-stream"
LOSSLESS = (RPCL, ELE, J2KL)


def test_parse_orders_by_quality_then_position_and_drops_q0() -> None:
    ranges = parse_accept('text/html;q=0.2, multipart/related; type="application/dicom"; q=0.9, */*;q=0, a/b')
    assert [r.media_type for r in ranges] == ["a/b", "multipart/related", "text/html"]
    assert ranges[1].param("type") == "application/dicom" and ranges[1].q == 0.9
    assert ranges[1].param("q") is None


def test_parse_case_quoting_and_commas_inside_quotes() -> None:
    (r,) = parse_accept('Multipart/Related; TYPE="application/x,y"; Transfer-Syntax="1.2.\\"3"')
    assert r.media_type == "multipart/related"
    assert r.param("type") == "application/x,y"
    assert r.param("transfer-syntax") == '1.2."3'


def test_parse_absent_blank_and_malformed() -> None:
    assert [r.media_type for r in parse_accept(None)] == ["*/*"]
    assert [r.media_type for r in parse_accept("  ")] == ["*/*"]
    assert parse_accept("a/b;q=x") == ()  # a malformed quality counts as 0
    assert [r.media_type for r in parse_accept(", a/b;;noequals")] == ["a/b"]


def test_media_types_per_syntax() -> None:
    assert media_type_of(RPCL) == "image/jphc" == media_type_of("1.2.840.10008.1.2.4.201")
    assert media_type_of(J2KL) == "image/jp2" and media_type_of(JPEG) == "image/jpeg"
    assert media_type_of("1.2.840.10008.1.2.4.80") == "image/jls"
    assert media_type_of("1.2.840.10008.1.2.5") == "image/dicom-rle"
    assert media_type_of(ELE) == OCTET and media_type_of("1.9.9") == OCTET
    assert frame_syntaxes(RPCL) == LOSSLESS
    assert frame_syntaxes(JPEG) == (JPEG, ELE)
    assert frame_syntaxes("1.2.840.10008.1.2.4.112") == ("1.2.840.10008.1.2.4.112",)
    assert frame_syntaxes("") == (ELE, J2KL)


@pytest.mark.parametrize(
    ("accept", "multipart", "syntax"),
    [
        (None, False, ELE),
        ("*/*", False, ELE),
        ("application/dicom", False, ELE),
        ("application/dicom; transfer-syntax=*", False, RPCL),
        (f"application/dicom; transfer-syntax={J2KL}", False, J2KL),
        ('multipart/related; type="application/dicom"', True, ELE),
        ("multipart/related; type=application/dicom; transfer-syntax=*", True, RPCL),
        ("multipart/related", True, ELE),
        (f"application/dicom; transfer-syntax={JPEG}, multipart/related;q=0.1", True, ELE),
        (f"application/dicom; transfer-syntax={JPEG}", None, None),
        ("multipart/related; type=application/octet-stream", None, None),
        ("image/png", None, None),
    ],
)
def test_instance(accept: str | None, multipart: bool | None, syntax: str | None) -> None:
    if syntax is None:
        with pytest.raises(NotAcceptableError):
            choose_instance(accept, LOSSLESS, RPCL)
        return
    assert choose_instance(accept, LOSSLESS, RPCL) == Choice(
        bool(multipart), syntax, "application/dicom", "application/dicom"
    )


def test_instance_without_ele_defaults_to_stored() -> None:
    video = "1.2.840.10008.1.2.4.102"
    assert choose_instance(None, (video,), video).transfer_syntax == video
    with pytest.raises(NotAcceptableError):
        choose_instance(f"application/dicom; transfer-syntax={ELE}", (video,), video)


@pytest.mark.parametrize(
    ("accept", "count", "expected"),
    [
        (None, 1, Choice(True, ELE, OCTET, OCTET)),
        ("*/*", 2, Choice(True, ELE, OCTET, OCTET)),
        ("multipart/related; type=application/octet-stream", 2, Choice(True, ELE, OCTET, OCTET)),
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            2,
            Choice(True, RPCL, "image/jphc", OCTET),
        ),
        ("multipart/related; type=image/jphc", 1, Choice(True, RPCL, "image/jphc", "image/jphc")),
        (
            f"multipart/related; type=image/jphc; transfer-syntax={RPCL}",
            1,
            Choice(True, RPCL, "image/jphc", "image/jphc"),
        ),
        ("multipart/related; type=image/jp2", 1, Choice(True, J2KL, "image/jp2", "image/jp2")),
        (
            f"multipart/related; type=application/octet-stream; transfer-syntax={RPCL}",
            1,
            Choice(True, RPCL, "image/jphc", OCTET),
        ),
        ("application/octet-stream", 1, Choice(False, ELE, OCTET, OCTET)),
        ("image/jphc", 1, Choice(False, RPCL, "image/jphc", "image/jphc")),
        ("multipart/related; type=*/*; transfer-syntax=*", 1, Choice(True, RPCL, "image/jphc", "image/jphc")),
        ("image/jpeg, */*;q=0.1", 1, Choice(True, ELE, OCTET, OCTET)),
    ],
)
def test_frames(accept: str | None, count: int, expected: Choice) -> None:
    assert choose_frames(accept, LOSSLESS, RPCL, count) == expected


@pytest.mark.parametrize(
    "accept",
    [
        "application/octet-stream",  # single part for two frames
        "multipart/related; type=image/jpeg",
        f"multipart/related; type=application/octet-stream; transfer-syntax={JPEG}",
        "multipart/related; type=image/*",
        "text/plain",
    ],
)
def test_frames_refused(accept: str) -> None:
    with pytest.raises(NotAcceptableError):
        choose_frames(accept, LOSSLESS, RPCL, 2)


def test_frames_stored_jpeg() -> None:
    assert choose_frames("multipart/related; type=image/jpeg", (JPEG, ELE), JPEG, 1).transfer_syntax == JPEG
    assert (
        choose_frames("multipart/related; transfer-syntax=*", (JPEG, ELE), JPEG, 1).media_type == "image/jpeg"
    )


def test_bulkdata() -> None:
    assert choose_bulkdata(None) == Choice(False, ELE, OCTET, OCTET)
    assert choose_bulkdata("*/*").multipart is False
    assert choose_bulkdata('multipart/related; type="application/octet-stream"').multipart is True
    assert choose_bulkdata("multipart/related").multipart is True
    with pytest.raises(NotAcceptableError):
        choose_bulkdata("multipart/related; type=image/jpeg")
    with pytest.raises(NotAcceptableError):
        choose_bulkdata(f"application/octet-stream; transfer-syntax={JPEG}")
