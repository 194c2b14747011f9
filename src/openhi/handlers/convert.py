"""Conversions shared by handlers: epoch floats to datetimes, and version ids to the numbers the core takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from openhi.core.errors import ConflictError, NotFoundError

#: the largest version number an index can hold (a signed 64-bit integer column)
MAX_VERSION = 2**63 - 1
#: the number an out-of-range version id is read as: versions start at 1, so no version has it
NO_VERSION = 0
_SHOWN_DIGITS = 24


def dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


def epoch(value: datetime | float | int) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def version_number(text: str) -> int | None:
    """The version number a version id (decimal digits, leading zeros allowed) names, or None when it is
    past :data:`MAX_VERSION` (or is not decimal digits): no version can have it. Never converts more than
    19 digits, so Python's 4,300-digit int conversion limit is never reached."""
    digits = text.lstrip("0") or "0"
    if len(digits) > 19 or not (digits.isascii() and digits.isdigit()):
        return None
    number = int(digits)
    return number if number <= MAX_VERSION else None


class VersionIds:
    """The version ids of one request as numbers for the core.

    A version id past the index's range names no version, so it gets the answer any unknown or stale id
    gets: it reaches the core as :data:`NO_VERSION` (never a value the index cannot store), the core
    answers as it does for any version that does not exist (``ResourceNotFoundException``) or is not the
    latest (``ConflictException``), and :meth:`explained` adds the id the client sent to that message.
    """

    __slots__ = ("_beyond",)

    def __init__(self) -> None:
        self._beyond: list[tuple[str, str]] = []

    def number(self, member: str, text: str) -> int:
        number = version_number(text)
        if number is None:
            self._beyond.append((member, text))
            return NO_VERSION
        return number

    def optional(self, member: str, text: str | None) -> int | None:
        return None if text is None else self.number(member, text)

    def text(self, member: str, text: str | None) -> str | None:
        """For read operations that take the id as text: the same id, or ``"0"`` when out of range."""
        return None if text is None else str(self.number(member, text))

    @contextmanager
    def explained(self) -> Iterator[None]:
        try:
            yield
        except (ConflictError, NotFoundError) as exc:
            if not self._beyond:
                raise
            notes = "; ".join(
                f"{member} {_shown(text)} is past the largest version number {MAX_VERSION}"
                for member, text in self._beyond
            )
            raise type(exc)(f"{exc.message} ({notes}, so no version has it.)") from None


def _shown(text: str) -> str:
    if len(text) <= _SHOWN_DIGITS:
        return text
    return f"{text[:_SHOWN_DIGITS]}... ({len(text)} digits)"
