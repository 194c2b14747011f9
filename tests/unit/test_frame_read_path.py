"""The GetImageFrame hot path: one-read frame lookup (both index adapters), JPH wrapping, cached routes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from openhi.awsapi.router import Router
from openhi.codec.jph import wrap_jph
from openhi.core.file_body import CHUNK, FileBody
from openhi.core.reads import HEAD_BYTES, _as_jph
from openhi.core.records import FrameRef, ImageSet, ImageSetVersion
from openhi.ports.index import MetadataIndex, VersionCommit
from openhi.storage.sqlite.index import SqliteIndex

DS = "d" * 32
OTHER = "e" * 32
HTJ2K = "1.2.840.10008.1.2.4.202"


def _create(index: MetadataIndex, i: int) -> ImageSet:
    head = ImageSet(DS, f"{i:032x}", 1, "ACTIVE", "CREATED", True, 1000.0, 1000.0, 1, search={})
    version = ImageSetVersion(DS, head.id, 1, "ACTIVE", "CREATED", 1000.0, 1000.0, True, "meta/1")
    frames = [FrameRef(f"s{i}-{k}", f"frames/s{i}-{k}", HTJ2K) for k in range(2)]
    index.create_image_set(head, version, frames)
    return head


def test_get_frame_for_read_answers_state_and_frame_in_one_read(index: MetadataIndex) -> None:
    head = _create(index, 1)
    assert index.get_frame_for_read(DS, head.id, "s1-1") == ("ACTIVE", FrameRef("s1-1", "frames/s1-1", HTJ2K))
    assert index.get_frame_for_read(DS, head.id, "s1-1") == ("ACTIVE", index.get_frame(DS, head.id, "s1-1"))
    assert index.get_frame_for_read(DS, head.id, "nope") == ("ACTIVE", None)
    assert index.get_frame_for_read(OTHER, head.id, "s1-1") is None
    assert index.get_frame_for_read(DS, "f" * 32, "s1-1") is None
    index.commit_versions(
        DS, [VersionCommit(head.id, None, "DELETED", "DELETED", 2000.0, deleted_at=2000.0, collect=True)]
    )
    assert index.get_frame_for_read(DS, head.id, "s1-1") == ("DELETED", None)


def test_local_reads_flag() -> None:
    idx = SqliteIndex(":memory:")
    try:
        assert idx.local_reads is True
    finally:
        idx.close()


def _codestream(width: int, height: int, depths: tuple[int, ...], body: bytes) -> bytes:
    csiz = len(depths)
    siz = struct.pack(">HHIIIIIIIIH", 38 + 3 * csiz, 0, width, height, 0, 0, width, height, 0, 0, csiz)
    siz += b"".join(bytes((d, 1, 1)) for d in depths)
    return b"\xff\x4f\xff\x51" + siz + body


@pytest.mark.parametrize(
    "codestream",
    [
        _codestream(512, 512, (0x8F,), b"\x00" * 1000),
        _codestream(64, 32, (7, 7, 7), b"\x01\x02"),
        _codestream(64, 32, (7, 11, 7), b""),  # differing depths: a bpcc box
    ],
    ids=["grey16", "rgb8", "mixed-depths"],
)
def test_as_jph_is_wrap_jph(codestream: bytes, tmp_path: Path) -> None:
    assert _as_jph(codestream, codestream[:HEAD_BYTES]) == wrap_jph(codestream)
    wrapped = _as_jph(_file_body(tmp_path, codestream), codestream[:HEAD_BYTES])
    assert isinstance(wrapped, FileBody) and len(wrapped) == len(wrap_jph(codestream))
    assert wrapped.read() == wrap_jph(codestream)  # the prefix, then the file unchanged


def _file_body(tmp_path: Path, data: bytes) -> FileBody:
    path = tmp_path / "frame"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    return FileBody(fd, len(data))


@pytest.mark.parametrize(
    "bad",
    [b"", b"\xff\x4f\xff\x51\x00", b"\xff\x4f\xff\x51\x00\x10" + b"x" * 64, b"\x00" * 64],
    ids=["empty", "no-siz-length", "short-siz", "not-j2k"],
)
def test_as_jph_fails_like_wrap_jph(bad: bytes, tmp_path: Path) -> None:
    with pytest.raises(Exception) as expected:
        wrap_jph(bad)
    with pytest.raises(Exception) as got:
        _as_jph(bad, bad[:HEAD_BYTES])
    assert (type(got.value), str(got.value)) == (type(expected.value), str(expected.value))
    body = _file_body(tmp_path, bad)
    with pytest.raises(Exception) as from_file:
        _as_jph(body, bad[:HEAD_BYTES])
    assert (type(from_file.value), str(from_file.value)) == (type(expected.value), str(expected.value))
    body.close()


def test_file_body_iterates_in_chunks_and_closes(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 2 + 123)
    body = _file_body(tmp_path, data)
    body.prefix = b"head"
    chunks = list(body)
    assert b"".join(chunks) == b"head" + data and len(chunks) == 4
    with pytest.raises(ValueError):
        body.fileno()
    body.close()  # closing twice is harmless


def test_cached_route_matches_are_fresh_dicts() -> None:
    router = Router()
    path = f"/datastore/{DS}/imageSet/{'a' * 32}/getImageFrame"
    op, first = router.match("POST", path)
    first["datastoreId"] = "changed"
    op2, second = router.match("post", path)
    assert op2 is op and op.name == "GetImageFrame"
    assert second == {"datastoreId": DS, "imageSetId": "a" * 32}
