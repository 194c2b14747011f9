"""DICOMweb content negotiation (PS3.18 §8.7): Accept media ranges with ``type=`` and ``transfer-syntax=``.

A WADO-RS answer is a Part 10 instance, a frame (or several) or a bulk data value; each function here
takes the request's Accept header and what the server can give, and says which representation to
send: single part or ``multipart/related``, the transfer syntax, the media type of the part(s) and
the ``type`` parameter of the multipart answer. Ranges are tried best first (quality value, then the
header's order); one that cannot be satisfied (an unavailable transfer syntax) is skipped, and when
none can be, :class:`~openhi.core.errors.NotAcceptableError` (406) names what is offered.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from openhi.codec import transfer_syntax as tsx
from openhi.core.errors import NotAcceptableError
from openhi.dicom.stored_frames import LOSSLESS

OCTET = "application/octet-stream"
DICOM = "application/dicom"
MULTIPART = "multipart/related"
ELE = tsx.EXPLICIT_VR_LE
#: the transfer-syntax value asking for the stored syntax
ANY_SYNTAX = "*"

#: PS3.18 Table 8.7.3-5: the media type of a frame (or bulk data) in each transfer syntax
_MEDIA_OF: dict[str, str] = {
    ELE: OCTET,
    tsx.IMPLICIT_VR_LE: OCTET,
    tsx.EXPLICIT_VR_BE: OCTET,
    tsx.DEFLATED_EXPLICIT_VR_LE: OCTET,
    tsx.JPEG_BASELINE: "image/jpeg",
    tsx.JPEG_EXTENDED: "image/jpeg",
    tsx.JPEG_LOSSLESS: "image/jpeg",
    tsx.JPEG_LOSSLESS_SV1: "image/jpeg",
    tsx.JPEG_LS_LOSSLESS: "image/jls",
    tsx.JPEG_LS_NEAR_LOSSLESS: "image/jls",
    tsx.J2K_LOSSLESS: "image/jp2",
    tsx.J2K: "image/jp2",
    tsx.J2K_PART2_LOSSLESS: "image/jpx",
    tsx.J2K_PART2: "image/jpx",
    tsx.HTJ2K_LOSSLESS: "image/jphc",
    tsx.HTJ2K_RPCL: "image/jphc",
    tsx.HTJ2K: "image/jphc",
    tsx.JPEG_XL_LOSSLESS: "image/jxl",
    tsx.JPEG_XL_JPEG_RECOMPRESSION: "image/jxl",
    tsx.JPEG_XL: "image/jxl",
    tsx.RLE_LOSSLESS: "image/dicom-rle",
    **{uid: "video/mpeg" for uid in tsx.MPEG2},
    **{uid: "video/mp4" for uid in tsx.MPEG4},
    **{uid: "video/H265" for uid in tsx.HEVC},
}
#: the default transfer syntax of each media type (PS3.18 Table 8.7.3-5 "default")
_DEFAULT_OF: dict[str, str] = {
    OCTET: ELE,
    "image/jpeg": tsx.JPEG_BASELINE,
    "image/jls": tsx.JPEG_LS_LOSSLESS,
    "image/jp2": tsx.J2K_LOSSLESS,
    "image/jpx": tsx.J2K_PART2_LOSSLESS,
    "image/jphc": tsx.HTJ2K_LOSSLESS,
    "image/jxl": tsx.JPEG_XL_LOSSLESS,
    "image/dicom-rle": tsx.RLE_LOSSLESS,
}
_UNDECODED = tsx.VIDEO | {tsx.JPEG_XL, tsx.JPEG_XL_LOSSLESS, tsx.JPEG_XL_JPEG_RECOMPRESSION}
_ANY_TYPE = ("*/*", "*")


def media_type_of(transfer_syntax: str) -> str:
    """The media type of pixel data in ``transfer_syntax`` (application/octet-stream when unknown)."""
    return _MEDIA_OF.get(transfer_syntax, OCTET)


def frame_syntaxes(stored: str) -> tuple[str, ...]:
    """The syntaxes frames stored in ``stored`` can be given in, the stored one first: Explicit VR
    Little Endian (decoded) unless openhi cannot decode them (video, JPEG XL), JPEG 2000 lossless when
    they are lossless. Whether a frame really decodes or encodes is only known when it is read."""
    stored = stored or ELE
    out = [stored]
    if ELE not in out and stored not in _UNDECODED:
        out.append(ELE)
    if tsx.J2K_LOSSLESS not in out and stored in LOSSLESS:
        out.append(tsx.J2K_LOSSLESS)
    return tuple(out)


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header: ``type/subtype`` in lower case, its parameters (names in
    lower case, values unquoted; ``q`` is not among them) and its quality value."""

    media_type: str
    params: tuple[tuple[str, str], ...]
    q: float

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside double-quoted strings (quoted-pairs honoured)."""
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                i += 1
            out.append(inner[i])
            i += 1
        return "".join(out)
    return value


@functools.lru_cache(maxsize=512)
def parse_accept(header: str | None) -> tuple[MediaRange, ...]:
    """The media ranges of an Accept header, best first (higher ``q``, then the header's order); ranges
    with ``q=0`` (not acceptable) and empty ones are left out. No header (or a blank one) is ``*/*``.

    A malformed quality value counts as 0; a parameter without ``=`` is ignored.
    """
    if header is None or not header.strip():
        return (MediaRange("*/*", (), 1.0),)
    ranges: list[tuple[float, int, MediaRange]] = []
    for i, item in enumerate(_split(header, ",")):
        head, *raw_params = _split(item, ";")
        media_type = head.strip().lower()
        if not media_type:
            continue
        q = 1.0
        params: list[tuple[str, str]] = []
        for raw in raw_params:
            name, eq, value = raw.partition("=")
            name = name.strip().lower()
            if not eq or not name:
                continue
            if name == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
                continue
            params.append((name, _unquote(value)))
        if q > 0:
            ranges.append((-q, i, MediaRange(media_type, tuple(params), q)))
    ranges.sort(key=lambda r: (r[0], r[1]))
    return tuple(r[2] for r in ranges)


@dataclass(frozen=True)
class Choice:
    """The representation to send: ``multipart`` or a single body, its ``transfer_syntax``, the media type
    of the body (each part's, in a multipart answer) and the multipart ``type`` parameter."""

    multipart: bool
    transfer_syntax: str
    media_type: str
    top_type: str


def _syntax(
    param: str | None, part_type: str, generic: bool, available: tuple[str, ...], stored: str
) -> str | None:
    """The syntax a range asks for, or None when it cannot be given.

    ``param``: its transfer-syntax (None when absent); ``part_type``: the media type the parts must
    have (ignored when ``generic``: application/dicom, application/octet-stream with ``*``, or a
    wildcard). Absent = Explicit VR Little Endian for a generic type (the stored syntax where ELE
    cannot be given: HealthImaging's rule for instances it cannot transcode), else the type's default
    syntax, else the stored syntax when it has that media type.
    """
    stored = stored or ELE
    if param is None:
        if generic:
            return ELE if ELE in available else stored
        default = _DEFAULT_OF.get(part_type)
        if default in available:
            return default
        return stored if media_type_of(stored) == part_type else None
    param = param.strip()
    if param == ANY_SYNTAX:
        return stored if generic or media_type_of(stored) == part_type else None
    if param not in available:
        return None
    return param if generic or media_type_of(param) == part_type else None


def _refuse(accept: str | None, what: str, available: tuple[str, ...]) -> NotAcceptableError:
    return NotAcceptableError(
        f"Accept {accept!r} matches no representation of this {what}; available transfer syntaxes: "
        f"{', '.join(available)} (or transfer-syntax=*)."
    )


def choose_instance(accept: str | None, available: tuple[str, ...], stored: str) -> Choice:
    """A Part 10 instance: ``application/dicom`` (single part, AWS's form; also ``*/*`` and no Accept)
    or ``multipart/related; type="application/dicom"`` (PS3.18's form).

    Raises NotAcceptableError when no range can be given.
    """
    for r in parse_accept(accept):
        if r.media_type in (DICOM, "application/*", *_ANY_TYPE):
            multipart = False
        elif r.media_type in (MULTIPART, "multipart/*"):
            kind = (r.param("type") or DICOM).lower()
            if kind not in (DICOM, "application/*", *_ANY_TYPE):
                continue
            multipart = True
        else:
            continue
        syntax = _syntax(r.param("transfer-syntax"), DICOM, True, available, stored)
        if syntax is not None:
            return Choice(multipart, syntax, DICOM, DICOM)
    raise _refuse(accept, "instance", available)


def choose_frames(accept: str | None, available: tuple[str, ...], stored: str, count: int) -> Choice:
    """Frames: ``multipart/related; type=…; transfer-syntax=…`` (``type`` defaults to
    application/octet-stream, which with ``transfer-syntax=*`` or a compressed syntax means "whatever
    media type that syntax has"); ``*/*`` and no Accept: multipart Explicit VR Little Endian; a bare
    media type (``application/octet-stream``, ``image/jphc`` …) gives one frame as a single part.

    Raises NotAcceptableError when no range can be given.
    """
    stored = stored or ELE
    for r in parse_accept(accept):
        if r.media_type in (MULTIPART, "multipart/*", *_ANY_TYPE):
            multipart = True
            part_type = "*/*" if r.media_type in _ANY_TYPE else (r.param("type") or OCTET).lower()
        elif count == 1 and "/" in r.media_type:
            multipart = False
            part_type = r.media_type
        else:
            continue
        generic = part_type in (OCTET, *_ANY_TYPE)
        if part_type.endswith("/*") and not generic:
            continue  # image/* and the like: not offered
        syntax = _syntax(r.param("transfer-syntax"), part_type, generic, available, stored)
        if syntax is None:
            continue
        media = media_type_of(syntax)
        top = media if part_type in _ANY_TYPE else part_type
        return Choice(multipart, syntax, media, top)
    raise _refuse(accept, "instance's frames", available)


def choose_bulkdata(accept: str | None) -> Choice:
    """A bulk data value (not Pixel Data): ``application/octet-stream`` as a single body (AWS's form;
    also ``*/*`` and no Accept) or ``multipart/related; type="application/octet-stream"`` (PS3.18).

    Raises NotAcceptableError when no range allows it.
    """
    for r in parse_accept(accept):
        if r.media_type in (OCTET, "application/*", *_ANY_TYPE):
            multipart = False
        elif r.media_type in (MULTIPART, "multipart/*"):
            if (r.param("type") or OCTET).lower() not in (OCTET, "application/*", *_ANY_TYPE):
                continue
            multipart = True
        else:
            continue
        if r.param("transfer-syntax") not in (None, ANY_SYNTAX, ELE):
            continue
        return Choice(multipart, ELE, OCTET, OCTET)
    raise NotAcceptableError(
        f"Accept {accept!r} does not allow application/octet-stream, the only media type of bulk data."
    )
