"""RFC 3339 rendering and the clocks that order changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    """UTC with ``Z``; milliseconds or microseconds only when the moment has them."""
    moment = moment.astimezone(UTC)
    micros = moment.microsecond
    # isoformat is C and several times faster than strftime on this hot path.
    if micros == 0:
        return moment.isoformat(timespec="seconds")[:19] + "Z"
    if micros % 1000 == 0:
        return moment.isoformat(timespec="milliseconds")[:23] + "Z"
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def to_micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)
