"""Rendered images (PS3.18 §8.3.5, PS3.4 N.2): decoded pixels → Modality/VOI/Presentation → viewport → JPEG/PNG."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
from pydicom.pixels.processing import convert_color_space

JPEG = "image/jpeg"
PNG = "image/png"
#: the rendered media types this server produces; the first is the default
MEDIA_TYPES = (JPEG, PNG)
DEFAULT_QUALITY = 90
LINEAR, LINEAR_EXACT, SIGMOID = "LINEAR", "LINEAR_EXACT", "SIGMOID"
_FUNCTIONS = {
    "linear": LINEAR,
    "linear-exact": LINEAR_EXACT,
    "linear_exact": LINEAR_EXACT,
    "sigmoid": SIGMOID,
}
_GRAY = frozenset({"MONOCHROME1", "MONOCHROME2"})
_YBR = frozenset({"YBR_FULL", "YBR_FULL_422"})


class RenderError(ValueError):
    """Base class of the rendering errors."""


class BadParameter(RenderError):
    """A rendering query parameter is malformed or out of range (the route answers 400)."""


class CannotRender(RenderError):
    """The image cannot be rendered by this server (the route answers 406)."""


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center, width and the VOI LUT Function."""

    center: float
    width: float
    function: str = LINEAR


@dataclass(frozen=True)
class Lut:
    """A LUT (Modality, VOI or one palette channel): first mapped value, output bits, entries."""

    first: int
    bits: int
    data: np.ndarray


@dataclass(frozen=True)
class Viewport:
    """``viewport=vw,vh[,sx,sy,sw,sh]``: the viewport size and the source region (``None``: default)."""

    width: int
    height: int
    sx: int | None = None
    sy: int | None = None
    sw: int | None = None
    sh: int | None = None


@dataclass(frozen=True)
class Rendering:
    """What an instance says about how one of its frames is displayed."""

    photometric: str
    bits_stored: int
    signed: bool
    slope: float = 1.0
    intercept: float = 0.0
    modality_lut: Lut | None = None
    window: Window | None = None
    voi_lut: Lut | None = None
    palette: tuple[Lut, Lut, Lut] | None = None


def check_window(window: Window) -> Window:
    """``window`` when its width suits its function (raises :class:`BadParameter`)."""
    if window.function == LINEAR and window.width < 1:
        raise BadParameter(f"window width must be at least 1 for the linear function, not {window.width:g}")
    if window.width <= 0:
        raise BadParameter(f"window width must be positive, not {window.width:g}")
    return window


# ------------------------------------------------------------------------------------- instance attributes


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def first_number(value: Any) -> float | None:
    """The first value of a document attribute as a finite number (DS/IS text or a number), or None."""
    value = _first(value)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _item(attributes: Mapping[str, Any], keyword: str) -> Mapping[str, Any]:
    value = attributes.get(keyword)
    item = value[0] if isinstance(value, list) and value else None
    return item if isinstance(item, dict) else {}


def _groups(attributes: Mapping[str, Any], frame: int) -> list[Mapping[str, Any]]:
    """The frame's functional groups, per-frame first, then shared (empty for classic images)."""
    per_frame = attributes.get("PerFrameFunctionalGroupsSequence")
    groups: list[Mapping[str, Any]] = []
    if (
        isinstance(per_frame, list)
        and 0 <= frame - 1 < len(per_frame)
        and isinstance(per_frame[frame - 1], dict)
    ):
        groups.append(per_frame[frame - 1])
    groups.append(_item(attributes, "SharedFunctionalGroupsSequence"))
    return groups


def _words(value: Any, entries: int, bits: int) -> np.ndarray | None:
    """LUT Data as a list of numbers or base64 (OW, little endian; 8-bit entries may be one byte each)."""
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, int):
        return np.asarray([value], dtype=np.int64)
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    if len(raw) == 2 * entries:
        return np.frombuffer(raw, dtype="<u2").astype(np.int64)
    if bits <= 8 and len(raw) in (entries, entries + 1):
        return np.frombuffer(raw[:entries], dtype=np.uint8).astype(np.int64)
    return None


def _lut(item: Mapping[str, Any], descriptor_key: str, data_key: str) -> Lut | None:
    descriptor = item.get(descriptor_key)
    if not isinstance(descriptor, list) or len(descriptor) != 3:
        return None
    try:
        entries, first, bits = (int(v) for v in descriptor)
    except (TypeError, ValueError):
        return None
    entries = entries or 65536
    data = _words(item.get(data_key), entries, bits)
    if data is None or len(data) < entries or not 1 <= bits <= 16:
        return None
    return Lut(first, bits, data[:entries])


def _window(source: Mapping[str, Any]) -> Window | None:
    center, width = first_number(source.get("WindowCenter")), first_number(source.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(_first(source.get("VOILUTFunction")) or LINEAR).strip().upper()
    try:
        return check_window(
            Window(center, width, function if function in (LINEAR_EXACT, SIGMOID) else LINEAR)
        )
    except BadParameter:
        return None  # an unusable window of the instance: the frame's range is used instead


def rendering(attributes: Mapping[str, Any], frame: int = 1) -> Rendering:
    """The rendering attributes of frame ``frame`` (1-based) of an instance's merged attributes.

    Functional groups (per-frame, then shared) win over the top-level Modality LUT / VOI LUT modules.
    Raises :class:`CannotRender` for a PALETTE COLOR image without usable (unsegmented) palette data.
    """
    photometric = str(_first(attributes.get("PhotometricInterpretation")) or "").strip().upper()
    allocated = int(first_number(attributes.get("BitsAllocated")) or 8)
    bits_stored = int(first_number(attributes.get("BitsStored")) or allocated)
    signed = first_number(attributes.get("PixelRepresentation")) == 1
    sources = [
        *(_item(g, "PixelValueTransformationSequence") for g in _groups(attributes, frame)),
        attributes,
    ]
    slope, intercept = 1.0, 0.0
    for source in sources:
        s, i = first_number(source.get("RescaleSlope")), first_number(source.get("RescaleIntercept"))
        if s is not None or i is not None:
            slope, intercept = s if s else 1.0, i or 0.0
            break
    modality_lut = None
    if "RescaleSlope" not in attributes and "ModalityLUTSequence" in attributes:
        modality_lut = _lut(_item(attributes, "ModalityLUTSequence"), "LUTDescriptor", "LUTData")
    window = None
    for source in (*(_item(g, "FrameVOILUTSequence") for g in _groups(attributes, frame)), attributes):
        window = _window(source)
        if window is not None:
            break
    voi_lut = _lut(_item(attributes, "VOILUTSequence"), "LUTDescriptor", "LUTData")
    palette = None
    if photometric == "PALETTE COLOR":
        channels = [
            _lut(attributes, f"{c}PaletteColorLookupTableDescriptor", f"{c}PaletteColorLookupTableData")
            for c in ("Red", "Green", "Blue")
        ]
        if any(c is None for c in channels):
            segmented = "SegmentedRedPaletteColorLookupTableData" in attributes
            raise CannotRender(
                "this PALETTE COLOR image has segmented palette data, which is not rendered"
                if segmented
                else "this PALETTE COLOR image has no usable palette data"
            )
        red, green, blue = (c for c in channels if c is not None)
        palette = (red, green, blue)
    return Rendering(
        photometric, bits_stored, signed, slope, intercept, modality_lut, window, voi_lut, palette
    )


# ------------------------------------------------------------------------------------- pixel pipeline


def stored_values(pixels: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Integer pixels reduced to their stored bits (unused high bits masked, signed values sign-extended)."""
    if pixels.dtype.kind not in "iu" or bits_stored >= pixels.dtype.itemsize * 8:
        return pixels
    values = pixels.astype(np.int64) & ((1 << bits_stored) - 1)
    if signed:
        values = np.where(values >= 1 << (bits_stored - 1), values - (1 << bits_stored), values)
    return values


def apply_lut(values: np.ndarray, lut: Lut) -> np.ndarray:
    """Table lookup: values below the first mapped value take the first entry, above it the last."""
    index = np.clip(np.rint(values).astype(np.int64) - lut.first, 0, len(lut.data) - 1)
    out: np.ndarray = lut.data[index]
    return out


def apply_window(values: np.ndarray, window: Window, low: float = 0.0, high: float = 255.0) -> np.ndarray:
    """The VOI window of PS3.3 C.11.2.1.2 (linear, linear exact, sigmoid) onto [low, high], as floats."""
    x = values.astype(np.float64, copy=False)
    c, w, span = window.center, window.width, high - low
    if window.function == SIGMOID:
        return span / (1.0 + np.exp(-4.0 * (x - c) / w)) + low
    if window.function == LINEAR_EXACT:
        y = ((x - c) / w + 0.5) * span + low
        return np.where(x <= c - w / 2, low, np.where(x > c + w / 2, high, y))
    if w == 1:  # a step: nothing lies strictly inside the window
        return np.where(x <= c - 0.5, low, high)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * span + low
    return np.where(x <= c - 0.5 - (w - 1) / 2, low, np.where(x > c - 0.5 + (w - 1) / 2, high, y))


def _modality(values: np.ndarray, rendering: Rendering) -> np.ndarray:
    if rendering.modality_lut is not None:
        return apply_lut(values, rendering.modality_lut)
    out: np.ndarray = values * rendering.slope + rendering.intercept
    return out


def _gray(
    values: np.ndarray,
    photometric: str,
    rendering: Rendering,
    window: Window | None,
    frame_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Stored values → Modality LUT / rescale → VOI (``frame_range``: the modality values' range of
    the frame, for the window of last resort) → MONOCHROME1 inversion, as floats in [0, 255]."""
    values = _modality(values, rendering)
    window = window or rendering.window
    if window is not None:
        out = apply_window(values, window)
    elif rendering.voi_lut is not None:
        out = apply_lut(values, rendering.voi_lut) * (255.0 / ((1 << rendering.voi_lut.bits) - 1))
        out = np.clip(out, 0.0, 255.0)
    else:
        low, high = frame_range or (float(np.min(values)), float(np.max(values)))
        out = apply_window(values, Window((low + high) / 2, max(high - low, 1e-9), LINEAR_EXACT))
    return 255.0 - out if photometric == "MONOCHROME1" else out


def _table(
    pixels: np.ndarray, photometric: str, rendering: Rendering, window: Window | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The grayscale or palette pipeline as a table over every 8- or 16-bit sample value, and the index
    into it (the pixels as unsigned): a frame is then rendered with one lookup. None for other frames."""
    gray = photometric in _GRAY
    if pixels.dtype.kind not in "iu" or pixels.dtype.itemsize > 2 or not (gray or rendering.palette):
        return None
    unsigned = np.dtype(f"u{pixels.dtype.itemsize}")
    index = pixels.view(unsigned)
    raw = stored_values(
        np.arange(1 << (8 * pixels.dtype.itemsize), dtype=unsigned).view(pixels.dtype),
        rendering.bits_stored,
        rendering.signed,
    )
    if not gray:
        assert rendering.palette is not None
        return np.stack(
            [_to_8bit(apply_lut(raw, lut), lut.bits) for lut in rendering.palette], axis=-1
        ), index
    frame_range = None
    if (window or rendering.window) is None and rendering.voi_lut is None:
        present = np.bincount(index.ravel(), minlength=len(raw)) > 0
        modality = _modality(raw, rendering)[present]
        frame_range = (float(modality.min()), float(modality.max()))
    return _gray(raw, photometric, rendering, window, frame_range), index


def display_values(
    pixels: np.ndarray, photometric: str, rendering: Rendering, window: Window | None = None
) -> np.ndarray:
    """One decoded frame as display values in [0, 255] (float64): rows × cols, or rows × cols × 3 (RGB).

    ``photometric`` is what the decoder gave (RGB after a YBR conversion); ``window`` (the query's)
    wins over the instance's window. Raises :class:`CannotRender` for other colour spaces.
    """
    if photometric in _GRAY:
        return _gray(
            stored_values(pixels, rendering.bits_stored, rendering.signed), photometric, rendering, window
        )
    if photometric == "PALETTE COLOR" and rendering.palette is not None:
        values = stored_values(pixels, rendering.bits_stored, rendering.signed)
        return np.stack([_to_8bit(apply_lut(values, lut), lut.bits) for lut in rendering.palette], axis=-1)
    if photometric in _YBR and pixels.ndim == 3:
        pixels = convert_color_space(pixels, photometric, "RGB")
        photometric = "RGB"
    if photometric == "RGB" and pixels.ndim == 3 and pixels.shape[2] == 3:
        return _to_8bit(stored_values(pixels, rendering.bits_stored, False), rendering.bits_stored)
    raise CannotRender(f"images with Photometric Interpretation {photometric!r} are not rendered")


def rendered_image(
    pixels: np.ndarray,
    photometric: str,
    rendering: Rendering,
    window: Window | None = None,
    viewport: Viewport | None = None,
) -> np.ndarray:
    """One decoded frame rendered to 8 bits: :func:`display_values`, the viewport, :func:`to_uint8`.

    8- and 16-bit grayscale and palette frames go through one table lookup. Raises
    :class:`CannotRender` and :class:`BadParameter` (the viewport's region).
    """
    found = _table(pixels, photometric, rendering, window)
    if found is None:
        return to_uint8(apply_viewport(display_values(pixels, photometric, rendering, window), viewport))
    table, index = found
    lookup: np.ndarray
    if viewport is None:
        lookup = to_uint8(table)[index]
        return lookup
    part = region(index, viewport)
    rows, columns = fit(part.shape[0], part.shape[1], viewport.width, viewport.height)
    if (rows, columns) == part.shape[:2]:
        lookup = to_uint8(table)[part]
        return lookup
    return to_uint8(resize(table.astype(np.float32)[part], rows, columns))


def _to_8bit(values: np.ndarray, bits: int) -> np.ndarray:
    scaled = values.astype(np.float64)
    return scaled if bits == 8 else scaled * (255.0 / ((1 << bits) - 1))


# ------------------------------------------------------------------------------------- geometry


def fit(height: int, width: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The (rows, columns) of a ``height`` × ``width`` image scaled to fit the box, aspect kept."""
    scale = min(box_width / width, box_height / height)
    return max(1, min(box_height, round(height * scale))), max(1, min(box_width, round(width * scale)))


def _resize_axis(img: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Area averaging when shrinking, bilinear (pixel centres aligned) when enlarging."""
    n = img.shape[axis]
    if size == n:
        return img
    if size < n:  # interval i is [e_i, e_i+1): whole pixels by reduceat, the partial ones at its ends
        starts = np.arange(size) * (n / size)
        first = np.floor(starts).astype(np.intp)
        partial = np.take(img, first, axis=axis) * _shape(starts - first, axis, img.ndim)
        sums = np.add.reduceat(img, first, axis=axis, dtype=np.float64) - partial
        inner = [slice(None)] * img.ndim
        inner[axis] = slice(None, -1)
        after = list(inner)
        after[axis] = slice(1, None)
        sums[tuple(inner)] += partial[tuple(after)]
        shrunk: np.ndarray = sums / (n / size)
        return shrunk
    centres = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = _shape(centres - lo, axis, img.ndim).astype(img.dtype if img.dtype.kind == "f" else np.float64)
    grown: np.ndarray = np.take(img, lo, axis=axis) * (1 - frac) + np.take(img, hi, axis=axis) * frac
    return grown


def _shape(weights: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = len(weights)
    return weights.reshape(shape)


def resize(img: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``img`` (float, rows × cols [× 3]) resampled to ``rows`` × ``columns``."""
    return _resize_axis(_resize_axis(img, columns, 1), rows, 0)  # along rows first: contiguous, fastest


def region(img: np.ndarray, viewport: Viewport) -> np.ndarray:
    """The viewport's source region of ``img`` (flipped where sw / sh are negative).

    Raises :class:`BadParameter` when the region lies outside the image.
    """
    rows, columns = img.shape[:2]
    sx, sy = viewport.sx or 0, viewport.sy or 0
    sw = viewport.sw if viewport.sw is not None else columns - sx
    sh = viewport.sh if viewport.sh is not None else rows - sy
    x0, x1 = sorted((sx, sx + sw))
    y0, y1 = sorted((sy, sy + sh))
    if x0 < 0 or y0 < 0 or x1 > columns or y1 > rows or x1 <= x0 or y1 <= y0:
        raise BadParameter(f"the viewport's source region is outside the {columns}x{rows} image")
    part = img[y0:y1, x0:x1]
    return part[:: -1 if sh < 0 else 1, :: -1 if sw < 0 else 1]


def apply_viewport(img: np.ndarray, viewport: Viewport | None) -> np.ndarray:
    """The viewport's source region scaled to fit the viewport (raises :class:`BadParameter`)."""
    if viewport is None:
        return img
    part = region(img, viewport)
    return resize(part, *fit(part.shape[0], part.shape[1], viewport.width, viewport.height))


# ------------------------------------------------------------------------------------- encoding


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Display values rounded half up to 8 bits."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def encode(img: np.ndarray, media_type: str, quality: int = DEFAULT_QUALITY) -> bytes:
    """An 8-bit image (rows × cols, or × 3 RGB) as JPEG or PNG bytes (raises :class:`CannotRender`)."""
    img = np.ascontiguousarray(img)
    if media_type == JPEG:
        return bytes(imagecodecs.jpeg8_encode(img, level=quality))
    if media_type == PNG:
        return bytes(imagecodecs.png_encode(img))
    raise CannotRender(f"rendered media type {media_type} is not produced; use image/jpeg or image/png")


def render(
    pixels: np.ndarray,
    photometric: str,
    rendering: Rendering,
    *,
    window: Window | None = None,
    viewport: Viewport | None = None,
    media_type: str = JPEG,
    quality: int = DEFAULT_QUALITY,
) -> bytes:
    """One decoded frame rendered and encoded: display values, viewport, 8 bits, JPEG or PNG.

    Raises :class:`BadParameter` (viewport region) and :class:`CannotRender`.
    """
    return encode(rendered_image(pixels, photometric, rendering, window, viewport), media_type, quality)
