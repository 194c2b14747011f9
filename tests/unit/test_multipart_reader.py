"""The streaming multipart/related reader of STOW-RS: RFC 2046 framing, chunk boundaries, bounded memory."""

from __future__ import annotations

import io
import os
import random
import tempfile
import tracemalloc
from pathlib import Path
from typing import IO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openhi.dicomweb.multipart_reader import MultipartError, Part, media_type, read_multipart


def body(
    parts: list[tuple[dict[str, str], bytes]], boundary: str, preamble: bytes = b"", epilogue: bytes = b""
) -> bytes:
    out = [preamble + (b"\r\n" if preamble else b"")]
    for headers, data in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out.append(f"--{boundary}\r\n{head}\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--".encode() + epilogue)
    return b"".join(out)


def read(
    data: bytes | IO[bytes], boundary: str, tmp: Path, chunk: int = 1024 * 1024
) -> list[tuple[Part, bytes]]:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    parts = read_multipart(source, boundary, tmp, chunk=chunk)
    return [(p, p.path.read_bytes()) for p in parts]


DICOM = {"Content-Type": "application/dicom"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            'multipart/related; type="application/dicom"; boundary=abc',
            ("multipart/related", {"type": "application/dicom", "boundary": "abc"}),
        ),
        (
            'Multipart/Related;boundary="a;b=c";type=application/dicom',
            ("multipart/related", {"boundary": "a;b=c", "type": "application/dicom"}),
        ),
        ('multipart/related; boundary="q\\"x"', ("multipart/related", {"boundary": 'q"x'})),
        ("application/dicom", ("application/dicom", {})),
        (
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
            ("application/dicom", {"transfer-syntax": "1.2.840.10008.1.2.1"}),
        ),
        ("multipart/related; junk; boundary=b", ("multipart/related", {"boundary": "b"})),
    ],
)
def test_media_type_parameters(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert media_type(value) == expected


def test_parts_with_preamble_and_epilogue(tmp_path: Path) -> None:
    data = body(
        [(DICOM, b"first"), ({"content-type": "text/plain", "X-A": "1"}, b"second\r\n")],
        "b1",
        b"pre",
        b"\r\nepi--b1--",
    )
    got = read(data, "b1", tmp_path)
    assert [d for _, d in got] == [b"first", b"second\r\n"]
    assert got[0][0].content_type == "application/dicom" and got[1][0].content_type == "text/plain"
    assert got[1][0].headers == {"content-type": "text/plain", "x-a": "1"}
    assert [p.size for p, _ in got] == [5, 8]


def test_first_delimiter_at_the_very_start_and_empty_parts(tmp_path: Path) -> None:
    data = b"--x\r\n\r\n\r\n--x\r\nContent-Type: application/dicom\r\n\r\nA\r\n--x--"
    got = read(data, "x", tmp_path)
    assert [(p.headers, d) for p, d in got] == [({}, b""), ({"content-type": "application/dicom"}, b"A")]
    assert got[0][0].content_type is None


def test_transport_padding_after_a_delimiter(tmp_path: Path) -> None:
    data = b"--x \t\r\nContent-Type: application/dicom\r\n\r\nA\r\n--x--  \r\n"
    assert [d for _, d in read(data, "x", tmp_path)] == [b"A"]


def test_a_boundary_like_text_inside_a_line_is_data(tmp_path: Path) -> None:
    # only CRLF + "--boundary" delimits: "--x" in the middle of a line, or after a bare LF, is data
    payload = b"a--x b\n--x c\r--x d"
    data = body([(DICOM, payload)], "x")
    assert [d for _, d in read(data, "x", tmp_path)] == [payload]


@pytest.mark.parametrize(
    "data",
    [
        b"no delimiter at all",
        b"--x\r\nContent-Type: a\r\n\r\nnever closed",
        b"--x\r\nContent-Type: a\r\n\r\nA\r\n--x\r\n",  # ends after a delimiter, before its part
        b"--x\r\nContent-Type: a",  # ends inside the headers
        b"--xjunk\r\n\r\nA\r\n--x--",  # a delimiter line with more than padding
        b"--x\nContent-Type: a\n\nA\n--x--",  # bare LF line ends
        b"--x\r\nno colon here\r\n\r\nA\r\n--x--",
    ],
)
def test_malformed_bodies(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(MultipartError):
        read_multipart(io.BytesIO(data), "x", tmp_path)


@pytest.mark.parametrize("boundary", ["", "x" * 201, "bad\x01"])
def test_bad_boundaries(tmp_path: Path, boundary: str) -> None:
    with pytest.raises(MultipartError):
        read_multipart(io.BytesIO(b"--x--"), boundary, tmp_path)


def test_too_many_parts_and_oversized_headers(tmp_path: Path) -> None:
    many = body([(DICOM, b"a")] * 4, "x")
    with pytest.raises(MultipartError, match="more than 3 parts"):
        read_multipart(io.BytesIO(many), "x", tmp_path, max_parts=3)
    assert (
        len(list(tmp_path.iterdir())) == 3
    )  # written before the fourth was refused; the caller removes them
    huge = body([({"X-Big": "y" * 20_000}, b"a")], "x")
    (tmp_path / "b").mkdir()
    with pytest.raises(MultipartError, match="headers exceed"):
        read_multipart(io.BytesIO(huge), "x", tmp_path / "b")


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    chunk=st.integers(min_value=1, max_value=64),
    boundary=st.sampled_from(["x", "b0undary", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "'()+_,-./:=?"]),
)
def test_any_split_into_chunks_reads_the_same(payloads: list[bytes], chunk: int, boundary: str) -> None:
    """Delimiters, CRLFs and header blank lines cut at every possible place between reads."""
    payloads = [p.replace(f"--{boundary}".encode(), b"--") for p in payloads]  # a conforming sender's data
    data = body([(DICOM, p) for p in payloads], boundary, b"pre\r\n--" + boundary[:-1].encode(), b"\r\nafter")
    with tempfile.TemporaryDirectory() as tmp:
        got = read(data, boundary, Path(tmp), chunk=chunk)
        assert [d for _, d in got] == payloads
        assert all(p.content_type == "application/dicom" for p, _ in got)


class _Generated(io.RawIOBase):
    """A multipart body produced as it is read: one part of ``size`` pseudo-random bytes."""

    def __init__(self, size: int, boundary: str) -> None:
        self.head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.size = size
        self.pos = 0
        self.block = random.Random(5).randbytes(1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        total = len(self.head) + self.size + len(self.tail)
        n = min(len(buffer), total - self.pos)
        out = bytearray()
        pos = self.pos
        while len(out) < n:
            if pos < len(self.head):
                piece = self.head[pos : pos + n - len(out)]
            elif pos < len(self.head) + self.size:
                offset = pos - len(self.head)
                take = min(n - len(out), self.size - offset, len(self.block) - offset % len(self.block))
                start = offset % len(self.block)
                piece = self.block[start : start + take]
            else:
                offset = pos - len(self.head) - self.size
                piece = self.tail[offset : offset + n - len(out)]
            out += piece
            pos += len(piece)
        buffer[:n] = out
        self.pos = pos
        return n


def test_a_100_mb_part_streams_with_bounded_memory(tmp_path: Path) -> None:
    size = 100 * 1024 * 1024
    source = io.BufferedReader(_Generated(size, "big"), buffer_size=1 << 20)
    tracemalloc.start()
    try:
        [part] = read_multipart(source, "big", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert part.size == size == os.path.getsize(part.path)
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes"  # a few 1 MiB chunks, never the part
    block = random.Random(5).randbytes(1 << 20)
    with part.path.open("rb") as f:
        f.seek(size - 1000)
        assert f.read() == (block * 100)[-1000:]
        f.seek(0)
        assert f.read(1 << 20) == block
