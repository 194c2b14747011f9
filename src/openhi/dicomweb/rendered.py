"""DICOMweb rendered resources and thumbnails (PS3.18 §10.4.1.1.3, §8.3.5): JPEG or PNG of a frame.

``…/instances/{uid}/rendered`` renders the instance's first frame; ``…/frames/{n}/rendered`` one frame
(a list of several is refused); thumbnails render the instance's first frame, the series' middle
instance (by Instance Number) or the study's first series (by Series Number) to fit a viewport
(128 × 128 unless the request names one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import numpy as np

from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.codec import render
from openhi.core.errors import NotAcceptableError, NotFoundError, ValidationError
from openhi.core.reads import negotiate
from openhi.core.records import ImageSet
from openhi.dicom.instance_view import InstanceView, iter_instance_views
from openhi.dicom.stored_frames import TranscodeUnavailable, decode_frame, image_format
from openhi.dicomweb.targets import DATASTORE, INSTANCE, SERIES, STUDY, dicomweb_targets
from openhi.ports.blobs import BlobNotFound

if TYPE_CHECKING:
    from openhi.services import Services

ACTION = "medical-imaging:GetDICOMInstanceFrames"
STUDY_PATH = "/datastore/{datastoreId}/studies/{StudyInstanceUID}"
SERIES_PATH = STUDY_PATH + "/series/{SeriesInstanceUID}"
INSTANCE_PATH = SERIES_PATH + "/instances/{SOPInstanceUID}"
FRAMES_PATH = INSTANCE_PATH + "/frames/{frameList}"
#: the viewport of a thumbnail request that names none
THUMBNAIL = render.Viewport(128, 128)
#: rendered answers may be reused for a minute (an update of the image set can change the window)
CACHE_CONTROL = "private, max-age=60"


#: the largest side of a viewport
MAX_SIDE = 8192
_FUNCTIONS = {
    "linear": render.LINEAR,
    "linear-exact": render.LINEAR_EXACT,
    "linear_exact": render.LINEAR_EXACT,
    "sigmoid": render.SIGMOID,
}


@dataclass(frozen=True)
class Options:
    """The rendering query parameters and the negotiated media type of one request."""

    media_type: str
    window: render.Window | None
    viewport: render.Viewport | None
    quality: int


@dataclass(frozen=True)
class Located:
    """An instance of a live primary image set."""

    head: ImageSet
    view: InstanceView


def _decimal(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise render.BadParameter(f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise render.BadParameter(f"{name} must be a finite number, not {text!r}")
    return value


def _integer(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise render.BadParameter(f"{name} must be an integer, not {text!r}") from None


def parse_window(text: str) -> render.Window:
    """``center,width[,function]`` (function: linear, linear-exact or sigmoid; default linear).

    Raises :class:`~openhi.codec.render.BadParameter`.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise render.BadParameter(f"window must be center,width,function, not {text!r}")
    function = render.LINEAR
    if len(parts) == 3:
        found = _FUNCTIONS.get(parts[2].lower())
        if found is None:
            raise render.BadParameter(
                f"window function must be linear, linear-exact or sigmoid, not {parts[2]!r}"
            )
        function = found
    return render.check_window(
        render.Window(_decimal(parts[0], "window center"), _decimal(parts[1], "window width"), function)
    )


def parse_viewport(text: str) -> render.Viewport:
    """``vw,vh[,sx,sy,sw,sh]`` (an empty sx … sh takes its default). Raises :class:`~openhi.codec.render.BadParameter`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise render.BadParameter(f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh, not {text!r}")
    vw, vh = _integer(parts[0], "viewport width"), _integer(parts[1], "viewport height")
    if not (0 < vw <= MAX_SIDE and 0 < vh <= MAX_SIDE):
        raise render.BadParameter(
            f"viewport width and height must be between 1 and {MAX_SIDE}, not {vw},{vh}"
        )
    region = [
        None if not p else _integer(p, "viewport " + n)
        for p, n in zip(parts[2:], ["sx", "sy", "sw", "sh"], strict=False)
    ]
    sx, sy, sw, sh = region + [None] * (4 - len(region))
    if (sx is not None and sx < 0) or (sy is not None and sy < 0):
        raise render.BadParameter("viewport sx and sy must not be negative")
    if sw == 0 or sh == 0:
        raise render.BadParameter("viewport sw and sh must not be zero")
    return render.Viewport(vw, vh, sx, sy, sw, sh)


def parse_quality(text: str) -> int:
    """``quality`` as an integer 1..100. Raises :class:`~openhi.codec.render.BadParameter`."""
    quality = _integer(text, "quality")
    if not 1 <= quality <= 100:
        raise render.BadParameter(f"quality must be between 1 and 100, not {quality}")
    return quality


def options(request: Request, thumbnail: bool = False) -> Options:
    """The request's ``accept`` (query parameter, else header), ``window``, ``viewport``, ``quality``.

    Other parameters (``annotation``, ``charset``, ``iccprofile``, cache busters) are ignored.
    Raises ValidationError (a malformed value) and NotAcceptableError (no JPEG or PNG acceptable).
    """
    params: dict[str, str] = {}
    for key, value in parse_qsl(request.query.decode("latin-1"), keep_blank_values=True):
        params.setdefault(key, value)
    accept = params.get("accept") or request.header("accept")
    try:
        media_type = negotiate(accept, list(render.MEDIA_TYPES))
    except NotAcceptableError:
        raise NotAcceptableError(
            f"Accept {accept!r} matches no rendered media type of this server: "
            f"{', '.join(render.MEDIA_TYPES)}."
        ) from None
    try:
        window = parse_window(params["window"]) if "window" in params else None
        viewport = parse_viewport(params["viewport"]) if "viewport" in params else None
        quality = parse_quality(params["quality"]) if "quality" in params else render.DEFAULT_QUALITY
    except render.BadParameter as exc:
        raise ValidationError(str(exc)) from None
    if thumbnail and viewport is None:
        viewport = THUMBNAIL
    return Options(media_type, window, viewport, quality)


def frame_number(frame_list: str) -> int:
    """The one frame number of a ``{frameList}`` (raises ValidationError for a list or a bad number)."""
    parts = [p.strip() for p in frame_list.split(",")]
    if len(parts) != 1:
        raise ValidationError(
            f"Rendered frames are given one at a time: frame list {frame_list!r} names several."
        )
    if not parts[0].isdigit() or int(parts[0]) < 1:
        raise ValidationError(f"Frame number must be a positive integer, not {parts[0]!r}.")
    return int(parts[0])


# ------------------------------------------------------------------------------------- lookups


def _primary(services: Services, ds: str, study: str, series: str) -> ImageSet:
    services.dicom_reads.live_datastore(ds)
    head = services.env.index.find_primary(ds, study, series)
    if head is None:
        raise NotFoundError(f"Series {series} of study {study} does not exist in datastore {ds}.")
    return head


def _views(services: Services, head: ImageSet, series: str | None = None) -> Iterator[InstanceView]:
    for view in iter_instance_views(services.dicom_reads.document(head)):
        if series in (None, view.series_uid):
            yield view


def _instance(services: Services, labels: dict[str, str]) -> Located:
    ds, study, series, sop = labels[DATASTORE], labels[STUDY], labels[SERIES], labels[INSTANCE]
    head = _primary(services, ds, study, series)
    for view in _views(services, head, series):
        if view.sop_uid == sop:
            return Located(head, view)
    raise NotFoundError(f"Instance {sop} does not exist in series {series} of study {study}.")


def _renderable(view: InstanceView) -> bool:
    return bool(view.frame_ids) and "Rows" in view.attributes and "Columns" in view.attributes


def _instance_number(view: InstanceView) -> tuple[float, str]:
    number = render.first_number(view.attributes.get("InstanceNumber"))
    return (number if number is not None else float("inf"), view.sop_uid)


def _middle(heads: list[ImageSet], services: Services, series: str | None) -> Located | None:
    """The middle renderable instance (by Instance Number) of the series, in the first set that has one."""
    for head in heads:
        views = sorted((v for v in _views(services, head, series) if _renderable(v)), key=_instance_number)
        if views:
            return Located(head, views[(len(views) - 1) // 2])
    return None


def _frame(services: Services, located: Located, number: int) -> tuple[np.ndarray, str]:
    """Frame ``number`` (1-based) decoded. Raises NotFoundError and NotAcceptableError."""
    view, head = located.view, located.head
    if not _renderable(view):
        raise NotAcceptableError(f"Instance {view.sop_uid} has no image frames to render.")
    if number > len(view.frame_ids):
        raise NotFoundError(
            f"Frame {number} does not exist in instance {view.sop_uid} ({len(view.frame_ids)} frames)."
        )
    found = services.env.index.get_frame_for_read(head.datastore_id, head.id, view.frame_ids[number - 1])
    if found is None or found[1] is None:
        raise NotFoundError(f"Frame {number} of instance {view.sop_uid} is not stored.")
    try:
        data = services.env.blobs.get(found[1].blob_key)
    except BlobNotFound:
        raise NotFoundError(f"Frame {number} of instance {view.sop_uid} is not stored.") from None
    try:
        return decode_frame(data, view.stored_transfer_syntax, image_format(view.attributes))
    except (TranscodeUnavailable, ValueError) as exc:
        raise NotAcceptableError(f"Instance {view.sop_uid} cannot be rendered: {exc}") from None


def _respond(services: Services, located: Located, number: int, opts: Options) -> WireResponse:
    pixels, photometric = _frame(services, located, number)
    try:
        rendering = render.rendering(located.view.attributes, number)
        body = render.render(
            pixels,
            photometric,
            rendering,
            window=opts.window,
            viewport=opts.viewport,
            media_type=opts.media_type,
            quality=opts.quality,
        )
    except render.BadParameter as exc:
        raise ValidationError(str(exc)) from None
    except render.CannotRender as exc:
        raise NotAcceptableError(f"Instance {located.view.sop_uid} cannot be rendered: {exc}") from None
    headers = [("content-type", opts.media_type), ("cache-control", CACHE_CONTROL), ("vary", "Accept")]
    return WireResponse(200, headers, body)


# ------------------------------------------------------------------------------------- handlers


def rendered_instance(services: Services, request: Request) -> WireResponse:
    """The instance's first frame, rendered."""
    opts = options(request)
    return _respond(services, _instance(services, request.labels), 1, opts)


def rendered_frame(services: Services, request: Request) -> WireResponse:
    """One frame, rendered."""
    opts, number = options(request), frame_number(request.labels["frameList"])
    return _respond(services, _instance(services, request.labels), number, opts)


def instance_thumbnail(services: Services, request: Request) -> WireResponse:
    opts = options(request, thumbnail=True)
    return _respond(services, _instance(services, request.labels), 1, opts)


def frame_thumbnail(services: Services, request: Request) -> WireResponse:
    opts, number = options(request, thumbnail=True), frame_number(request.labels["frameList"])
    return _respond(services, _instance(services, request.labels), number, opts)


def series_thumbnail(services: Services, request: Request) -> WireResponse:
    """The first frame of the series' middle instance by Instance Number."""
    opts = options(request, thumbnail=True)
    labels = request.labels
    ds, study, series = labels[DATASTORE], labels[STUDY], labels[SERIES]
    located = _middle([_primary(services, ds, study, series)], services, series)
    if located is None:
        raise NotAcceptableError(f"Series {series} has no image to make a thumbnail of.")
    return _respond(services, located, 1, opts)


def _series_number(item: tuple[Any, str, float | None]) -> tuple[float, str]:
    return (item[2] if item[2] is not None else float("inf"), item[1])


def study_thumbnail(services: Services, request: Request) -> WireResponse:
    """The thumbnail of the study's first series (by Series Number) that has an image."""
    opts = options(request, thumbnail=True)
    ds, study = request.labels[DATASTORE], request.labels[STUDY]
    services.dicom_reads.live_datastore(ds)
    heads = services.env.index.list_primary_in_study(ds, study)
    if not heads:
        raise NotFoundError(f"Study {study} does not exist in datastore {ds}.")
    series: dict[str, tuple[ImageSet, str, float | None]] = {}
    for head in heads:
        for view in _views(services, head):
            if view.series_uid not in series and _renderable(view):
                number = render.first_number(view.attributes.get("SeriesNumber"))
                series[view.series_uid] = (head, view.series_uid, number)
    for head, series_uid, _ in sorted(series.values(), key=_series_number):
        located = _middle([head], services, series_uid)
        if located is not None:
            return _respond(services, located, 1, opts)
    raise NotAcceptableError(f"Study {study} has no image to make a thumbnail of.")


def _route(pattern: str, handler: Any, name: str) -> Route:
    return Route("GET", pattern, ACTION, handler, dicomweb_targets, name=name, front="dicomweb")


ROUTES: list[Route] = [
    _route(INSTANCE_PATH + "/rendered", rendered_instance, "dicomweb-rendered-instance"),
    _route(FRAMES_PATH + "/rendered", rendered_frame, "dicomweb-rendered-frames"),
    _route(INSTANCE_PATH + "/thumbnail", instance_thumbnail, "dicomweb-thumbnail-instance"),
    _route(FRAMES_PATH + "/thumbnail", frame_thumbnail, "dicomweb-thumbnail-frames"),
    _route(SERIES_PATH + "/thumbnail", series_thumbnail, "dicomweb-thumbnail-series"),
    _route(STUDY_PATH + "/thumbnail", study_thumbnail, "dicomweb-thumbnail-study"),
]
