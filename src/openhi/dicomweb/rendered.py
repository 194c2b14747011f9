"""DICOMweb rendered resources and thumbnails (PS3.18 §10.4.1.1.3, §8.3.5): JPEG or PNG of a frame.

``…/instances/{uid}/rendered`` renders the instance's first frame; ``…/frames/{n}/rendered`` one frame
(a list of several is refused); thumbnails render the instance's first frame, the series' middle
instance (by Instance Number) or the study's first series (by Series Number) to fit a viewport
(128 × 128 unless the request names one).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.codec import render
from openhi.core.dicom_reads import require_uid
from openhi.core.errors import NotAcceptableError, ValidationError
from openhi.core.reads import negotiate
from openhi.dicom.instance_view import InstanceView
from openhi.dicom.stored_frames import TranscodeUnavailable, decode_frame, image_format
from openhi.dicomweb.targets import DATASTORE, INSTANCE, SERIES, STUDY, dicomweb_targets

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
#: the largest side of a viewport (an enlarged 4096 x 4096 image takes a few hundred MB to resample)
MAX_SIDE = 4096
_FRAME = re.compile(r"[0-9]{1,9}")
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
    image_set_id: str | None = None  # ``imageSetId``: an image set other than the series' primary one


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
    """The request's ``accept`` (query parameter, else header), ``window``, ``viewport``, ``quality``,
    ``imageSetId``.

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
    return Options(media_type, window, viewport, quality, params.get("imageSetId") or None)


def frame_number(frame_list: str) -> int:
    """The one frame number of a ``{frameList}`` (raises ValidationError for a list or a bad number)."""
    parts = [p.strip() for p in frame_list.split(",")]
    if len(parts) != 1:
        raise ValidationError(
            f"Rendered frames are given one at a time: frame list {frame_list!r} names several."
        )
    if not _FRAME.fullmatch(parts[0]) or int(parts[0]) < 1:
        raise ValidationError(f"Frame number must be a positive integer, not {parts[0]!r}.")
    return int(parts[0])


# ------------------------------------------------------------------------------------- lookups


def _uids(request: Request, *names: str) -> list[str]:
    return [require_uid(request.labels[name], name) for name in names]


def _instance(services: Services, request: Request, opts: Options) -> InstanceView:
    study, series, sop = _uids(request, STUDY, SERIES, INSTANCE)
    return services.dicom_reads.instance_view(
        request.labels[DATASTORE], study, series, sop, opts.image_set_id
    )


def _renderable(view: InstanceView) -> bool:
    return bool(view.frame_ids) and "Rows" in view.attributes and "Columns" in view.attributes


def _instance_number(view: InstanceView) -> tuple[float, str]:
    number = render.first_number(view.attributes.get("InstanceNumber"))
    return (number if number is not None else float("inf"), view.sop_uid)


def _middle(views: list[InstanceView]) -> InstanceView | None:
    """The middle renderable instance by Instance Number (then SOP Instance UID)."""
    images = sorted((v for v in views if _renderable(v)), key=_instance_number)
    return images[(len(images) - 1) // 2] if images else None


def _respond(services: Services, ds: str, view: InstanceView, number: int, opts: Options) -> WireResponse:
    """Frame ``number`` (1-based) of the instance, rendered. Raises NotFoundError (no such frame),
    NotAcceptableError (not an image, or one this server cannot decode or render), ValidationError."""
    if not _renderable(view):
        raise NotAcceptableError(f"Instance {view.sop_uid} has no image frames to render.")
    data = services.dicom_reads.frame_bytes(ds, view, number)
    try:
        pixels, photometric = decode_frame(data, view.stored_transfer_syntax, image_format(view.attributes))
        rendering = render.rendering(view.attributes, number)
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
    except (TranscodeUnavailable, render.CannotRender, ValueError) as exc:
        raise NotAcceptableError(f"Instance {view.sop_uid} cannot be rendered: {exc}") from None
    headers = [("content-type", opts.media_type), ("cache-control", CACHE_CONTROL), ("vary", "Accept")]
    return WireResponse(200, headers, body)


# ------------------------------------------------------------------------------------- handlers


def rendered_instance(services: Services, request: Request) -> WireResponse:
    """The instance's first frame, rendered."""
    opts = options(request)
    return _respond(services, request.labels[DATASTORE], _instance(services, request, opts), 1, opts)


def rendered_frame(services: Services, request: Request) -> WireResponse:
    """One frame, rendered."""
    opts, number = options(request), frame_number(request.labels["frameList"])
    return _respond(services, request.labels[DATASTORE], _instance(services, request, opts), number, opts)


def instance_thumbnail(services: Services, request: Request) -> WireResponse:
    """The instance's first frame, fitted to the viewport."""
    opts = options(request, thumbnail=True)
    return _respond(services, request.labels[DATASTORE], _instance(services, request, opts), 1, opts)


def frame_thumbnail(services: Services, request: Request) -> WireResponse:
    """One frame, fitted to the viewport."""
    opts, number = options(request, thumbnail=True), frame_number(request.labels["frameList"])
    return _respond(services, request.labels[DATASTORE], _instance(services, request, opts), number, opts)


def series_thumbnail(services: Services, request: Request) -> WireResponse:
    """The first frame of the series' middle instance by Instance Number."""
    opts = options(request, thumbnail=True)
    ds, (study, series) = request.labels[DATASTORE], _uids(request, STUDY, SERIES)
    view = _middle(services.dicom_reads.series_views(ds, study, series, opts.image_set_id))
    if view is None:
        raise NotAcceptableError(f"Series {series} has no image to make a thumbnail of.")
    return _respond(services, ds, view, 1, opts)


def _series_order(views: list[InstanceView]) -> tuple[float, str]:
    number = render.first_number(views[0].attributes.get("SeriesNumber"))
    return (number if number is not None else float("inf"), views[0].series_uid)


def study_thumbnail(services: Services, request: Request) -> WireResponse:
    """The thumbnail of the study's first series (by Series Number) that has an image."""
    opts = options(request, thumbnail=True)
    ds, (study,) = request.labels[DATASTORE], _uids(request, STUDY)
    by_series: dict[str, list[InstanceView]] = {}
    for view in services.dicom_reads.study_views(ds, study, opts.image_set_id):
        by_series.setdefault(view.series_uid, []).append(view)
    for views in sorted(by_series.values(), key=_series_order):
        middle = _middle(views)
        if middle is not None:
            return _respond(services, ds, middle, 1, opts)
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
