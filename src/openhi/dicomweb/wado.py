"""DICOMweb WADO-RS routes (PS3.18 §10.4): instances, series and studies as Part 10, metadata, frames, bulk data.

Every route reads the live primary image set of the series (or the study's), or with ``?imageSetId=``
that image set, primary or not (HealthImaging's optional image set parameter).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import numpy as np

from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.codec.j2k import decode_j2k_part1, encode_j2k_lossless
from openhi.core.dicom_reads import DicomReader, require_uid
from openhi.core.errors import NotAcceptableError, NotFoundError, ValidationError
from openhi.core.file_body import FileBody
from openhi.dicom import part10_writer
from openhi.dicom.dicom_json import bulkdata_value, dumps, instance_dicom_json
from openhi.dicom.instance_view import InstanceView, iter_instance_views
from openhi.dicom.part10 import DocumentValueError, TranscodeUnavailable, available_syntaxes, rebuild
from openhi.dicom.part10_writer import Layout
from openhi.dicom.stored_frames import decode_frame, image_format, native_bytes
from openhi.dicomweb import media
from openhi.dicomweb.multipart import Multipart
from openhi.dicomweb.qido import acceptable
from openhi.dicomweb.targets import DATASTORE, INSTANCE, SERIES, STUDY, dicomweb_targets
from openhi.dicomweb.urls import base_url, instance_url

if TYPE_CHECKING:
    from openhi.services import Services

JSON = "application/dicom+json"
_STUDY = "/datastore/{datastoreId}/studies/{StudyInstanceUID}"
_SERIES = _STUDY + "/series/{SeriesInstanceUID}"
_INSTANCE = _SERIES + "/instances/{SOPInstanceUID}"
#: a multi-instance answer is kept in memory up to this size, then written on to a temporary file
SPOOL_IN_MEMORY = 8 * 1024 * 1024
#: a multi-instance answer is sent as it is built (below) when no instance's stored frames exceed
#: this many bytes and all its parts' data set bytes (kept until sent) stay within STREAM_HEADERS
STREAM_PART_FRAMES = 16 * 1024 * 1024
STREAM_HEADERS = 64 * 1024 * 1024
PIXEL_DATA_PATH = "7FE00010"
_TS_TAG = "00020010"


# ------------------------------------------------------------------------------------- request parts


def _uids(request: Request) -> tuple[str, str, str, str]:
    """Datastore id, then the study / series / instance UIDs of the path ("" where the route has none).
    Raises ValidationError for a malformed UID."""
    labels = request.labels
    study, series, sop = labels.get(STUDY, ""), labels.get(SERIES, ""), labels.get(INSTANCE, "")
    for value, name in ((study, "StudyInstanceUID"), (series, "SeriesInstanceUID"), (sop, "SOPInstanceUID")):
        if value:
            require_uid(value, name)
    return labels[DATASTORE], study, series, sop


def _image_set_id(request: Request) -> str | None:
    """The ``imageSetId`` query parameter (None when absent). Raises ValidationError when empty."""
    if b"imageSetId" not in request.query:
        return None
    for key, value in parse_qsl(request.query.decode("latin-1"), keep_blank_values=True):
        if key == "imageSetId":
            if not value:
                raise ValidationError("imageSetId must not be empty.")
            return value
    return None


def _version(request: Request, image_set_id: str | None) -> int | None:
    """The ``version`` query parameter of an instance, series or study retrieval (beyond AWS: an image
    set's older version, as ``openhi export --version`` reads it); None when absent.

    Raises ValidationError: not a positive integer, or given without ``imageSetId``.
    """
    if b"version" not in request.query:
        return None
    for key, value in parse_qsl(request.query.decode("latin-1"), keep_blank_values=True):
        if key == "version":
            if image_set_id is None:
                raise ValidationError("version needs imageSetId (the image set whose version it is).")
            if not value.isascii() or not value.isdigit() or not 0 < len(value) < 10 or int(value) < 1:
                raise ValidationError(f"version must be a positive integer, got {value[:20]!r}.")
            return int(value)
    return None


def frame_numbers(frame_list: str) -> list[int]:
    """The 1-based frame numbers of a ``{frameList}`` in request order.

    Raises ValidationError: an empty item, not a positive decimal integer, or a number named twice.
    """
    numbers: list[int] = []
    for item in frame_list.split(","):
        text = item.strip()
        if not text.isascii() or not text.isdigit() or int(text) < 1 or len(text) > 9:
            raise ValidationError(
                f"Frame numbers are positive integers: {text[:20]!r} in {frame_list[:80]!r}."
            )
        numbers.append(int(text))
    if len(set(numbers)) != len(numbers):
        raise ValidationError(f"The frame list {frame_list[:80]!r} names a frame more than once.")
    return numbers


def _spooled(chunks: Iterable[bytes], scratch: Path | None) -> bytes | FileBody:
    """The chunks as bytes, or (over :data:`SPOOL_IN_MEMORY`) as an unnamed temporary file to sendfile.

    Built in the handler's worker thread: an iterable body would be produced on the event loop."""
    held: list[bytes] = []
    size = 0
    it = iter(chunks)
    for chunk in it:
        held.append(chunk)
        size += len(chunk)
        if size > SPOOL_IN_MEMORY:
            break
    else:
        return b"".join(held)
    with tempfile.TemporaryFile(dir=scratch) as spool:
        spool.writelines(held)
        held.clear()
        for chunk in it:
            spool.write(chunk)
        spool.flush()
        size = spool.tell()
        fd = os.dup(spool.fileno())
    return FileBody(fd, size)


# ------------------------------------------------------------------------------------- Part 10


def _part10(reader: DicomReader, ds: str, view: InstanceView, syntax: str) -> bytes:
    """The instance as a Part 10 file. Raises NotAcceptableError (cannot be given so) and NotFoundError."""

    def frames(frame_id: str) -> bytes:
        return reader.stored_frame(ds, frame_id, view.stored_transfer_syntax)

    try:
        return rebuild(view, frames, syntax)
    except TranscodeUnavailable as exc:
        raise NotAcceptableError(f"{exc}. Retry with transfer-syntax=*.") from None
    except DocumentValueError as exc:
        raise NotAcceptableError(f"Instance {view.sop_uid} cannot be written as Part 10: {exc}") from None


def retrieve_instance(services: Services, request: Request) -> WireResponse:
    """GetDICOMInstance: single-part application/dicom (AWS's form, also for ``*/*`` and no Accept) or
    multipart/related; type="application/dicom" (PS3.18's form), Explicit VR Little Endian by default.
    ``?imageSetId=ID&version=N``: the instance as version N of that image set holds it."""
    ds, study, series, sop = _uids(request)
    reader = services.dicom_reads
    image_set_id = _image_set_id(request)
    version = _version(request, image_set_id)
    if image_set_id is not None and version is not None:
        view = reader.version_view(ds, study, series, sop, image_set_id, version)
    else:
        view = reader.instance_view(ds, study, series, sop, image_set_id)
    choice = media.choose_instance(
        request.header("accept"), available_syntaxes(view), view.stored_transfer_syntax
    )
    data = _part10(reader, ds, view, choice.transfer_syntax)
    if not choice.multipart:
        ctype = f"{media.DICOM}; transfer-syntax={choice.transfer_syntax}"
        return WireResponse(200, [("content-type", ctype)], data)
    mp = Multipart(media.DICOM)
    body = mp.join([(media.DICOM, choice.transfer_syntax, data)])
    return WireResponse(200, [("content-type", mp.content_type)], body)


def _retrieve_many(
    services: Services, request: Request, views: list[InstanceView], what: str
) -> WireResponse:
    """Several instances as multipart/related; type="application/dicom", each in the syntax the Accept
    header asks for (each instance's own stored one for ``*``). Instances that cannot be given so are
    left out (206 with a Warning); none at all is 406."""
    ds = request.labels[DATASTORE]
    accept = request.header("accept")
    plans: list[tuple[InstanceView, str]] = []
    refused = 0
    for view in views:
        try:
            choice = media.choose_instance(accept, available_syntaxes(view), view.stored_transfer_syntax)
        except NotAcceptableError:
            refused += 1
            continue
        plans.append((view, choice.transfer_syntax))
    if not plans:
        media.choose_instance(accept, (media.ELE,), media.ELE)  # names the Accept problem (or says none fits)
        raise NotAcceptableError(f"No instance of this {what} can be given in the transfer syntax asked for.")
    parts: list[tuple[InstanceView, str, bytes]] = []

    def built() -> Iterator[tuple[str, str | None, bytes]]:
        nonlocal refused
        for view, syntax in plans:
            try:
                data = _part10(services.dicom_reads, ds, view, syntax)
            except NotAcceptableError:
                refused += 1
                continue
            parts.append((view, syntax, data))
            yield media.DICOM, syntax, data

    mp = Multipart(media.DICOM)
    streamed = _streamable(services.dicom_reads, ds, plans) if not refused else None
    if streamed is not None:
        body_stream = _streamed_body(services.dicom_reads, ds, streamed, mp)
        return WireResponse(200, [("content-type", mp.content_type)], body_stream)
    body = _spooled(mp.stream(built()), services.scratch_dir)
    if not parts:
        if isinstance(body, FileBody):
            body.close()
        raise NotAcceptableError(f"No instance of this {what} can be given in the transfer syntax asked for.")
    headers = [("content-type", mp.content_type)]
    if refused:
        text = f"{refused} instance(s) cannot be given in the transfer syntax asked for and are left out"
        headers.append(("warning", f'299 openhi "{text}"'))
    return WireResponse(206 if refused else 200, headers, body)


def _streamable(
    reader: DicomReader, ds: str, plans: list[tuple[InstanceView, str]]
) -> list[tuple[InstanceView, str, Layout]] | None:
    """Each instance's Part 10 file but its frames, when the answer can be sent as it is built (else
    None: it is built whole first, and any instance that cannot be given is left out with a 206).

    It can when frames are local files read from the event loop (as the frames routes read them:
    shorter than a hop to a worker thread), every instance is asked for in its stored syntax and
    written by part10_writer, and the bounds above hold. What can fail then is done here, in the
    handler's thread: the data sets are encoded now (a document value that cannot be written is
    known before the answer starts); a frame deleted meanwhile (the image set deleted during the
    answer) breaks the answer off.
    """
    if not reader.frames_inline:
        return None
    out: list[tuple[InstanceView, str, Layout]] = []
    held = 0
    memo: part10_writer.Memo = {}  # what the instances share is encoded once
    for view, syntax in plans:
        if syntax != (view.stored_transfer_syntax or media.ELE):
            return None
        sizes = [reader.local_size(ds, frame_id) for frame_id in view.frame_ids]
        if any(not size for size in sizes) or sum(size or 0 for size in sizes) > STREAM_PART_FRAMES:
            return None

        def first_frame(view: InstanceView = view) -> bytes:
            return reader.stored_frame(ds, view.frame_ids[0], view.stored_transfer_syntax)

        try:
            shape = part10_writer.layout(view, syntax, first_frame, memo)
        except (part10_writer.Unsupported, NotFoundError):
            return None
        held += len(shape.head) + len(shape.tail)
        if held > STREAM_HEADERS:
            return None
        out.append((view, syntax, shape))
    return out


def _streamed_body(
    reader: DicomReader, ds: str, prepared: list[tuple[InstanceView, str, Layout]], mp: Multipart
) -> Iterator[bytes]:
    """The multipart body, one chunk per part, each built when the server asks for it (frames read then).

    Raises NotFoundError when a frame is no longer stored (the answer breaks off).
    """
    first = True
    for view, syntax, shape in prepared:
        frames = [reader.stored_frame(ds, f, view.stored_transfer_syntax) for f in view.frame_ids]
        try:
            pixels = shape.pixel_data(frames)
        except part10_writer.Unsupported:  # not expected (sizes were checked): pydicom writes the file
            pixels, shape = [_part10(reader, ds, view, syntax)], Layout(b"", b"", None)
        yield b"".join((mp.head(media.DICOM, syntax, first=first), shape.head, *pixels, shape.tail))
        first = False
    yield mp.close() if not first else mp.empty()


def _many_views(services: Services, request: Request, series: str | None) -> list[InstanceView]:
    """The instances of the study (or of ``series``), from the primary image sets or ``?imageSetId=ID``,
    and with ``&version=N`` as version N of that image set holds them."""
    ds, study, _, _ = _uids(request)
    image_set_id = _image_set_id(request)
    version = _version(request, image_set_id)
    reader = services.dicom_reads
    if image_set_id is not None and version is not None:
        return reader.version_views(ds, study, series, image_set_id, version)
    if series is not None:
        return reader.series_views(ds, study, series, image_set_id)
    return reader.study_views(ds, study, image_set_id)


def retrieve_series(services: Services, request: Request) -> WireResponse:
    """GetDICOMInstance of every instance of the series; ``?imageSetId=ID&version=N``: as version N of
    that image set holds them."""
    series = _uids(request)[2]
    return _retrieve_many(services, request, _many_views(services, request, series), "series")


def retrieve_study(services: Services, request: Request) -> WireResponse:
    """GetDICOMInstance of every instance of the study; ``?imageSetId=ID&version=N``: as version N of
    that image set holds them."""
    return _retrieve_many(services, request, _many_views(services, request, None), "study")


# ------------------------------------------------------------------------------------- metadata


def instance_metadata_json(view: InstanceView, base: str) -> dict[str, Any]:
    """An instance's DICOM JSON: bulk data (and Pixel Data) as absolute BulkDataURIs, and Transfer Syntax
    UID (0002,0010) = the stored syntax (AWS: "the Transfer Syntax UID indicated in the metadata matches
    the Stored Transfer Syntax UID"); no other File Meta element."""
    url = instance_url(base, view.study_uid, view.series_uid, view.sop_uid) + "/bulkdata/"
    body = instance_dicom_json(view, bulkdata_uri=lambda path: url + path)
    stored = view.stored_transfer_syntax or str(view.attributes.get("TransferSyntaxUID") or media.ELE)
    return {_TS_TAG: {"vr": "UI", "Value": [stored]}, **body}


def _metadata_response(request: Request, body: Callable[[], bytes]) -> WireResponse:
    if not acceptable(request.header("accept")):
        raise NotAcceptableError(
            f"Metadata is {JSON} (or application/json); the Accept header allows neither."
        )
    return WireResponse(200, [("content-type", JSON)], body())


def instance_metadata(services: Services, request: Request) -> WireResponse:
    ds, study, series, sop = _uids(request)
    view = services.dicom_reads.instance_view(ds, study, series, sop, _image_set_id(request))
    base = base_url(request, ds)
    return _metadata_response(request, lambda: dumps([instance_metadata_json(view, base)]).encode())


def series_metadata(services: Services, request: Request) -> WireResponse:
    """Every instance of the series; the bytes are kept per (document, base URL, series)."""
    ds, study, series, _ = _uids(request)
    reader = services.dicom_reads
    head = reader.series_set(ds, study, series, _image_set_id(request))
    key, base = reader.metadata_key(head), base_url(request, ds)

    def build() -> bytes:
        views = [v for v in iter_instance_views(reader.document_at(key)) if v.series_uid == series]
        return dumps([instance_metadata_json(v, base) for v in views]).encode()

    return _metadata_response(request, lambda: reader.cached_answer(("series", key, base, series), build))


def study_metadata(services: Services, request: Request) -> WireResponse:
    """Every instance of the study's primary image sets; kept per (documents, base URL)."""
    ds, study, _, _ = _uids(request)
    reader = services.dicom_reads
    heads = reader.study_sets(ds, study, _image_set_id(request))
    keys, base = tuple(reader.metadata_key(h) for h in heads), base_url(request, ds)

    def build() -> bytes:
        views = [v for key in keys for v in iter_instance_views(reader.document_at(key))]
        return dumps([instance_metadata_json(v, base) for v in views]).encode()

    return _metadata_response(request, lambda: reader.cached_answer(("study", keys, base), build))


# ------------------------------------------------------------------------------------- frames


def _transcoded(data: bytes, stored: str, view: InstanceView, target: str) -> bytes:
    """One stored frame in ``target``: Explicit VR Little Endian (native bytes) or JPEG 2000 lossless
    (encoded, decoded again and compared). Raises NotAcceptableError."""
    try:
        fmt = image_format(view.attributes)
        pixels, photometric = decode_frame(data, stored, fmt)
        if target == media.ELE:
            return native_bytes(pixels, fmt)
        pixels = pixels.astype(fmt.dtype.newbyteorder("="), copy=False)
        try:
            encoded = encode_j2k_lossless(pixels, mct=photometric == "RGB")
            same = np.array_equal(decode_j2k_part1(encoded), pixels)
        except (ValueError, RuntimeError) as exc:
            raise TranscodeUnavailable(target, stored, f"a frame cannot be encoded: {exc}") from exc
        if not same:
            raise TranscodeUnavailable(target, stored, "JPEG 2000 cannot hold these samples losslessly")
        return encoded
    except ValueError as exc:
        raise NotAcceptableError(f"Frames of instance {view.sop_uid} cannot be decoded: {exc}") from None
    except TranscodeUnavailable as exc:
        raise NotAcceptableError(f"{exc}. Retry with transfer-syntax=*.") from None


def _stored_body(
    reader: DicomReader, ds: str, ids: list[str], stored: str, choice: media.Choice
) -> tuple[str, bytes | FileBody | Iterable[bytes]]:
    """Frames as stored: one local file is sent with sendfile between the multipart head and close."""
    first = reader.frame_blob(ds, ids[0], stored)
    if not choice.multipart:
        return f"{choice.media_type}; transfer-syntax={stored}", first
    mp = Multipart(choice.top_type)
    if len(ids) == 1:
        head, close = mp.head(choice.media_type, stored, first=True), mp.close()
        if isinstance(first, FileBody):
            first.prefix, first.suffix = head, close
            return mp.content_type, first
        return mp.content_type, b"".join((head, first, close))
    if isinstance(first, FileBody):  # local files: opened one by one as the body is sent

        def rest() -> Iterator[bytes | FileBody]:
            yield first
            for frame_id in ids[1:]:
                yield reader.frame_blob(ds, frame_id, stored)

        return mp.content_type, mp.stream((choice.media_type, stored, part) for part in rest())
    datas = [first, *(reader.stored_frame(ds, f, stored) for f in ids[1:])]
    return mp.content_type, mp.join((choice.media_type, stored, d) for d in datas)


def _frames_response(
    reader: DicomReader,
    where: tuple[str, str, str, str, str | None],
    numbers: list[int] | None,
    choice_of: Callable[[str, int], media.Choice],
) -> WireResponse:
    """Frames ``numbers`` (all for None) of the instance at ``where`` (datastore, study, series, sop,
    image set id), in the representation ``choice_of(stored syntax, frame count)`` picks."""
    ds, study, series, sop, image_set_id = where
    info = reader.instance_frames(ds, study, series, sop, image_set_id)
    count = len(info.frame_ids)
    if not count:
        raise NotFoundError(f"Instance {sop} has no frames.")
    numbers = numbers or list(range(1, count + 1))
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise NotFoundError(f"Frame {beyond[0]} does not exist in instance {sop} ({count} frames).")
    stored = info.stored_ts or media.ELE
    choice = choice_of(stored, len(numbers))
    ids = [info.frame_ids[n - 1] for n in numbers]
    target = choice.transfer_syntax
    if target == stored and (choice.multipart or len(ids) == 1):
        ctype, body = _stored_body(reader, ds, ids, stored, choice)
        return WireResponse(200, [("content-type", ctype)], body)
    if target == stored:
        datas = [reader.stored_frame(ds, f, stored) for f in ids]
    else:
        view = reader.instance_view(ds, study, series, sop, image_set_id)
        datas = [_transcoded(reader.stored_frame(ds, f, stored), stored, view, target) for f in ids]
    if not choice.multipart:  # one frame, or (bulk data) the whole Pixel Data value
        ctype = f"{choice.media_type}; transfer-syntax={target}"
        return WireResponse(200, [("content-type", ctype)], b"".join(datas))
    mp = Multipart(choice.top_type)
    body = mp.join((choice.media_type, target, d) for d in datas)
    return WireResponse(200, [("content-type", mp.content_type)], body)


def _where(request: Request) -> tuple[str, str, str, str, str | None]:
    ds, study, series, sop = _uids(request)
    return ds, study, series, sop, _image_set_id(request)


def retrieve_frames(services: Services, request: Request) -> WireResponse:
    """GetDICOMInstanceFrames: multipart/related frames, Explicit VR Little Endian by default, the
    stored syntax for ``transfer-syntax=*`` (HTJ2K parts are ``image/jphc``)."""
    numbers = frame_numbers(request.labels["frameList"])
    accept = request.header("accept")
    where = _where(request)

    def choice_of(stored: str, count: int) -> media.Choice:
        return media.choose_frames(accept, media.frame_syntaxes(stored), stored, count)

    return _frames_response(services.dicom_reads, where, numbers, choice_of)


def _frames_inline(services: Services, request: Request) -> bool:
    """Frames in their stored syntax (``transfer-syntax=*`` in the best range) from a local index and
    local files run on the event loop: opening a file costs less than the hop to a worker thread."""
    if not services.dicom_reads.frames_inline or b"imageSetId" in request.query:
        return False
    ranges = media.parse_accept(request.header("accept"))
    return (
        bool(ranges)
        and ranges[0].param("transfer-syntax") == media.ANY_SYNTAX
        and ((ranges[0].param("type") or media.OCTET).lower() in (media.OCTET, "*/*"))
    )


# ------------------------------------------------------------------------------------- bulk data


def bulkdata_path(path: str) -> str:
    """A bulk data path (``00091010``, ``00081140/0/00091010``: tags and item indexes), upper case.
    Raises ValidationError."""
    parts = path.split("/")
    ok = len(parts) % 2 == 1 and all(
        (len(p) == 8 and all(c in "0123456789abcdefABCDEF" for c in p))
        if i % 2 == 0
        else (p.isascii() and p.isdigit() and len(p) < 10)
        for i, p in enumerate(parts)
    )
    if not ok:
        raise ValidationError(f"Bulk data path {path[:120]!r} is not tags (8 hex digits) and item indexes.")
    return path.upper()


def retrieve_bulkdata(services: Services, request: Request) -> WireResponse:
    """GetDICOMBulkdata: a binary value as application/octet-stream (AWS's form; also ``*/*`` and no
    Accept) or multipart/related (PS3.18's). Pixel Data (``7FE00010``): every frame, one part each
    (any frames Accept, ``transfer-syntax=*`` too), or as one body the native Pixel Data value."""
    path = bulkdata_path(request.labels["bulkdataPath"])
    accept = request.header("accept")
    where = _where(request)
    reader = services.dicom_reads
    ds, study, series, sop, image_set_id = where
    if path == PIXEL_DATA_PATH:

        def choice_of(stored: str, count: int) -> media.Choice:
            try:
                whole = media.choose_bulkdata(accept)
            except NotAcceptableError:
                whole = None
            if whole is not None and not whole.multipart:
                return whole  # the native value of every frame, as one body
            return media.choose_frames(accept, media.frame_syntaxes(stored), stored, count)

        return _frames_response(reader, where, None, choice_of)
    bulk = media.choose_bulkdata(accept)
    view = reader.instance_view(ds, study, series, sop, image_set_id)
    try:
        value = bulkdata_value(view, path)
    except KeyError:
        raise NotFoundError(f"Instance {sop} has no bulk data at {path}.") from None
    if not bulk.multipart:
        return WireResponse(200, [("content-type", media.OCTET)], value)
    mp = Multipart(media.OCTET)
    return WireResponse(200, [("content-type", mp.content_type)], mp.join([(media.OCTET, None, value)]))


# ------------------------------------------------------------------------------------- routes


def _route(pattern: str, action: str, handler: Any, name: str, inline: Any = None) -> Route:
    return Route(
        "GET",
        pattern,
        f"medical-imaging:{action}",
        handler,
        dicomweb_targets,
        inline=inline,
        name=name,
        front="dicomweb",
    )


ROUTES: list[Route] = [
    _route(_INSTANCE, "GetDICOMInstance", retrieve_instance, "wado-instance"),
    _route(_SERIES, "GetDICOMInstance", retrieve_series, "wado-series"),
    _route(_STUDY, "GetDICOMInstance", retrieve_study, "wado-study"),
    _route(_INSTANCE + "/metadata", "GetDICOMInstanceMetadata", instance_metadata, "wado-instance-metadata"),
    _route(_SERIES + "/metadata", "GetDICOMSeriesMetadata", series_metadata, "wado-series-metadata"),
    _route(_STUDY + "/metadata", "GetDICOMSeriesMetadata", study_metadata, "wado-study-metadata"),
    _route(
        _INSTANCE + "/frames/{frameList}",
        "GetDICOMInstanceFrames",
        retrieve_frames,
        "wado-frames",
        inline=_frames_inline,
    ),
    _route(_INSTANCE + "/bulkdata/{bulkdataPath+}", "GetDICOMBulkdata", retrieve_bulkdata, "wado-bulkdata"),
]
