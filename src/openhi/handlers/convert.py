"""Conversions shared by handlers: epoch floats to the datetimes the serializer writes."""

from __future__ import annotations

from datetime import UTC, datetime


def dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


def epoch(value: datetime | float | int) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
