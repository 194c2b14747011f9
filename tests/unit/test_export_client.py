"""``openhi export``'s client pieces: its SigV4 signature is botocore's, its multipart reader, its credentials."""

from __future__ import annotations

import datetime
import random
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from openhi.cli_client import Connection
from openhi.dicomweb.multipart import Multipart
from openhi.export_http import Signer, connection
from openhi.export_stream import MultipartError, boundary_of, parts

NOW = datetime.datetime(2026, 12, 3, 16, 45, 7, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "token"),
    [
        ("GET", "/datastore/abc/studies/1.2.3/series/4.5", {"Accept": "application/dicom"}, b"", None),
        ("GET", "/base/datastore/abc/studies/1.2?imageSetId=ff&version=2", {"Accept": "a;  b"}, b"", "tok"),
        ("POST", "/datastore/abc/searchImageSets?maxResults=50&nextToken=a%2Fb%3D", {}, b'{"x": 1}', None),
        ("PUT", "/openhi/upload/bucket/pre%20fix/a//b/./c.dcm", {"Content-Type": "x"}, b"\x00" * 9, None),
        ("POST", "/datastore/abc/imageSet/def/getImageSet?version=3", {"User-Agent": "u"}, b"", None),
    ],
)
@pytest.mark.parametrize("netloc", ["127.0.0.1:8080", "openhi.example:443", "openhi.example"])
def test_signature_is_botocores(
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    token: str | None,
    netloc: str,
    monkeypatch: Any,
) -> None:
    import hashlib

    scheme = "https" if netloc.endswith(":443") else "http"
    digest = hashlib.sha256(body).hexdigest()
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = AWSRequest(
        method=method,
        url=f"{scheme}://{netloc}{target}",
        data=body,
        headers={**headers, "X-Amz-Content-SHA256": digest},
    )
    SigV4Auth(Credentials("AKID", "SECRET", token), "medical-imaging", "eu-west-1").add_auth(request)
    conn = Connection(f"{scheme}://{netloc}", "eu-west-1", "AKID", "SECRET", token)
    host = netloc.removesuffix(":443") if scheme == "https" else netloc.removesuffix(":80")
    ours = Signer(conn, host).sign(method, target, headers, digest, now=NOW.timestamp())
    assert ours == dict(request.headers.items())


def _body(contents: list[bytes], boundary: str = "b0undary") -> bytes:
    mp = Multipart("application/dicom", boundary)
    return mp.join(("application/dicom", "1.2.840.10008.1.2.1", c) for c in contents)


def _reader(data: bytes, sizes: random.Random | None = None) -> Any:
    position = 0

    def readinto(view: memoryview) -> int:
        nonlocal position
        n = min(len(view), len(data) - position)
        if sizes is not None:
            n = min(n, sizes.randrange(1, 70000))
        view[:n] = data[position : position + n]
        position += n
        return n

    return readinto


@pytest.mark.parametrize("seed", range(5))
def test_parts_come_whole_whatever_the_reads(seed: int) -> None:
    rng = random.Random(seed)
    contents = [rng.randbytes(rng.choice([0, 1, 5, 1000, 300_000])) for _ in range(rng.randrange(1, 12))]
    contents.append(b"\r\n--b0undar" + b"y" * 0)  # a near miss of the delimiter inside a part
    got = [
        (headers["content-type"], bytes(view))
        for headers, view in parts(_reader(_body(contents), rng), b"b0undary")
    ]
    assert got == [("application/dicom; transfer-syntax=1.2.840.10008.1.2.1", c) for c in contents]


def test_a_part_larger_than_the_buffer() -> None:
    big = random.Random(7).randbytes(20 << 20)
    got = [bytes(view) for _, view in parts(_reader(_body([b"small", big, b"last"])), b"b0undary")]
    assert got == [b"small", big, b"last"]


def test_a_truncated_answer_gives_what_arrived_then_an_error() -> None:
    body = _body([b"one", b"two" * 1000, b"three"])
    cut = body.index(b"three") + 2
    got: list[bytes] = []
    with pytest.raises(MultipartError):
        for _, view in parts(_reader(body[:cut]), b"b0undary"):
            got.append(bytes(view))
    assert got == [b"one", b"two" * 1000]
    with pytest.raises(MultipartError):
        list(parts(_reader(b"x" * 100_000), b"b0undary"))


def test_boundary_of() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary=abc') == b"abc"
    assert boundary_of('Multipart/Related; boundary="q q"; type=x') == b"q q"
    assert boundary_of("application/dicom") is None
    assert boundary_of("multipart/related; type=x") is None


def test_credentials_in_the_environment_need_no_botocore(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "T"}
    missing = str(tmp_path / "no-config")
    got = connection("http://h", {**env, "AWS_CONFIG_FILE": missing})
    assert (got.access_key, got.secret_key, got.token, got.region) == ("AK", "SK", "T", "us-east-1")
    got = connection("http://h", {**env, "AWS_DEFAULT_REGION": "eu-west-3"})
    assert got.region == "eu-west-3"


class _Answer:
    """A streamed answer: a multipart body that may break off."""

    def __init__(self, body: bytes, broken: bool) -> None:
        self.status = 200
        self.body, self.broken, self.position = body, broken, 0

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return (
            'multipart/related; type="application/dicom"; boundary=b0undary'
            if name == "content-type"
            else default
        )

    def readinto(self, view: memoryview) -> int:
        n = min(len(view), len(self.body) - self.position, 5000)
        if not n and self.broken:
            raise ConnectionResetError("the server went away")
        view[:n] = self.body[self.position : self.position + n]
        self.position += n
        return n


def _part10(sop: str, syntax: str = "1.2.840.10008.1.2.4.202") -> bytes:
    from openhi.dicom.part10_writer import _header, _value  # the writer's own element encoding

    meta = b""
    for tag, value in ((0x00020003, sop), (0x00020010, syntax)):
        data = _value(tag, "UI", value, lambda t: t.encode())
        meta += _header(tag, "UI", len(data)) + data
    group = b"\x02\x00\x00\x00UL\x04\x00" + len(meta).to_bytes(4, "little")
    return b"\x00" * 128 + b"DICM" + group + meta + b"pixels of " + sop.encode()


@pytest.mark.parametrize("broken", [False, True])
def test_a_streamed_answer_writes_what_arrived_and_leaves_the_rest(tmp_path: Path, broken: bool) -> None:
    """The parts that arrived are written; instances left out, in another syntax, or after the answer
    broke off are left to one request each; an instance not asked for is ignored."""
    from contextlib import contextmanager

    from openhi import cli_export
    from openhi.export_plan import Item
    from openhi.export_sinks import FolderSink

    syntax = "1.2.840.10008.1.2.4.202"
    items = [Item(f"1.2.{n}", "1.2", "1.2.9", "set", syntax, 1) for n in range(6)]
    parts_sent = [
        _part10("1.2.0"),
        _part10("1.2.1"),
        _part10("9.9.9"),
        _part10("1.2.3", "1.2.840.10008.1.2.1"),
    ]
    parts_sent.append(_part10("1.2.4"))
    body = _body(parts_sent)
    body = body.replace(b"1.2.840.10008.1.2.1\r\n", syntax.encode() + b"\r\n")  # every part header says HTJ2K
    if broken:
        body = body[: body.index(b"pixels of 1.2.4")]

    class Client:
        @contextmanager
        def stream(self, path: str, *, query: str = "", headers: dict[str, str] | None = None) -> Any:
            assert path == "/datastore/ds/studies/1.2/series/1.2.9" and query == "imageSetId=set&version=1"
            yield _Answer(body, broken)

    tally = cli_export.Tally()
    sink = FolderSink(tmp_path)
    left = cli_export._streamed(Client(), sink, "ds", items, cli_export.STORED, tally)  # type: ignore[arg-type]
    written = {"1.2.0", "1.2.1"} | (set() if broken else {"1.2.4"})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{sop}.dcm" for sop in written)
    assert [i.sop_uid for i in left] == [i.sop_uid for i in items if i.sop_uid not in written]
    assert tally.exported == len(written) and not tally.failed
    assert (tmp_path / "1.2.0.dcm").read_bytes() == _part10("1.2.0")
