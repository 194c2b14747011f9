"""DIMSE status codes of the Storage SCP, mapped from the store core's PS3.18 failure and warning reasons.

PS3.4 B.2.3 (C-STORE): ``A7xx`` refused out of resources, ``A9xx`` error data set does not match SOP
class, ``Cxxx`` error cannot understand, ``B000`` coercion of data elements, ``B007`` data set does
not match SOP class, ``B006`` elements discarded; PS3.7 C.4: ``0110`` processing failure. The store
core (core/stow.py) uses PS3.18 Table I.2-2's reasons, which share these families, so a code inside a
C-STORE family passes as it is and anything else becomes the family it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATA_SET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
COERCION = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATA_SET_MISMATCH_WARNING = 0xB007


def failure_status(reason: int) -> int:
    """The C-STORE failure status for a store failure reason (PS3.18 Table I.2-2 code)."""
    family = reason & 0xFF00
    if family == 0xA700 or family == 0xA900 or (reason & 0xF000) == 0xC000:
        return reason  # A7xx, A9xx, Cxxx: the same meaning in PS3.4 B.2.3
    if reason == PROCESSING_FAILURE:
        return PROCESSING_FAILURE
    return CANNOT_UNDERSTAND


def warning_status(codes: Iterable[int]) -> int:
    """The C-STORE warning status for an instance stored with warnings (PS3.18 Table I.2-1 codes):
    the first one that is a C-STORE warning, else ``B000`` (coercion of data elements)."""
    for code in codes:
        if code in (COERCION, ELEMENTS_DISCARDED, DATA_SET_MISMATCH_WARNING):
            return code
    return COERCION
