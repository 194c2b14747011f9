"""The multipart/related writer: byte-exact framing, part header spelling, and a round trip through the reader."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from openhi.dicomweb.multipart import Multipart, new_boundary
from openhi.dicomweb.multipart_reader import read_multipart

TS = "1.2.840.10008.1.2.4.202"


def test_content_type_names_type_and_boundary_only() -> None:
    mp = Multipart("application/octet-stream", "abc")
    assert mp.content_type == 'multipart/related; type="application/octet-stream"; boundary=abc'


def test_byte_exact_framing() -> None:
    mp = Multipart("application/octet-stream", "B")
    body = mp.join([("image/jphc", TS, b"one"), ("application/octet-stream", None, b"two")])
    assert body == (
        b"--B\r\nContent-Type: image/jphc; transfer-syntax=1.2.840.10008.1.2.4.202\r\n\r\none"
        b"\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\ntwo"
        b"\r\n--B--\r\n"
    )


def test_head_and_close_around_a_file_body() -> None:
    mp = Multipart("image/jphc", "X")
    assert mp.head("image/jphc", TS, first=True) == (
        b"--X\r\nContent-Type: image/jphc; transfer-syntax=1.2.840.10008.1.2.4.202\r\n\r\n"
    )
    assert mp.head("a/b", first=False) == b"\r\n--X\r\nContent-Type: a/b\r\n\r\n"
    assert mp.close() == b"\r\n--X--\r\n"
    assert mp.join([]) == mp.empty() == b"--X--\r\n"


def test_stream_is_lazy_and_takes_chunks() -> None:
    seen: list[int] = []

    def parts() -> Iterator[tuple[str, str | None, list[bytes]]]:
        for i in range(3):
            seen.append(i)
            yield "a/b", None, [b"x" * i, b"y"]

    mp = Multipart("a/b", "Q")
    stream = mp.stream(parts())
    assert next(stream).startswith(b"--Q\r\n") and seen == [0]
    rest = b"".join(stream)
    assert seen == [0, 1, 2] and rest.endswith(b"xxy\r\n--Q--\r\n")


def test_round_trip_through_the_reader(tmp_path: Path) -> None:
    boundary = new_boundary()
    assert len(boundary) == 32 and boundary.isalnum()
    payloads = [b"\r\n--" + b"z" * 10, b"", bytes(range(256)) * 40]
    mp = Multipart("application/dicom", boundary)
    body = mp.join([("application/dicom", "1.2.840.10008.1.2.1", p) for p in payloads])
    parts = read_multipart(io.BytesIO(body), boundary, tmp_path)
    assert [p.path.read_bytes() for p in parts] == payloads
    assert parts[0].headers == {"content-type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"}
