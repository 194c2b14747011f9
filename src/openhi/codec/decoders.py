"""Which input transfer syntaxes this install can decode for transcoding, and what is missing if not."""

from __future__ import annotations

from openhi.codec.transfer_syntax import (
    J2K_LOSSLESS,
    JPEG_EXTENDED,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
)

#: Compressed input syntaxes that are decoded at import (then stored losslessly), with the packages of the
#: core install that pydicom decodes them with. Native syntaxes need no plugin; HTJ2K input is decoded by
#: imagecodecs (a core dependency). JPEG 2000 Part 2 (4.92) has no decoder in pydicom: such frames are
#: stored as they are, with a TRANSCODING_EXCEPTION warning.
REQUIRED: dict[str, str] = {
    JPEG_EXTENDED: "pylibjpeg-libjpeg",
    JPEG_LOSSLESS: "pylibjpeg-libjpeg",
    JPEG_LOSSLESS_SV1: "pylibjpeg-libjpeg",
    JPEG_LS_LOSSLESS: "pylibjpeg-libjpeg",
    JPEG_LS_NEAR_LOSSLESS: "pylibjpeg-libjpeg",
    J2K_LOSSLESS: "pylibjpeg-openjpeg",
    RLE_LOSSLESS: "pylibjpeg-rle",
}


def decoder_status() -> dict[str, str]:
    """Transfer syntax UID → ``"available (<plugins>)"`` or ``"missing: install <package>"``."""
    from pydicom.pixels.decoders.base import get_decoder

    status: dict[str, str] = {}
    for uid, package in REQUIRED.items():
        try:
            decoder = get_decoder(uid)
            plugins = decoder.available_plugins if decoder.is_available else ()
        except (NotImplementedError, ValueError):
            plugins = ()
        status[uid] = f"available ({', '.join(plugins)})" if plugins else f"missing: install {package}"
    return status


def missing_decoders() -> dict[str, str]:
    """Transfer syntax UID → the package to install, for every required decoder this install lacks."""
    return {uid: REQUIRED[uid] for uid, state in decoder_status().items() if state.startswith("missing")}
