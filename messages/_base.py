"""The base record every tradeguard message derives from, and its validation helpers."""

from __future__ import annotations

import time
from decimal import Decimal

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, forbid_unknown_fields=True):
    """An immutable, keyword-only, tagged record.

    The tag (the class name) lets one decoder read any message from the wire.
    Unknown fields are refused so that a misspelt field is an error, not a silent default.
    """


def now_ns() -> int:
    """Wall-clock time in nanoseconds, comparable across processes on one machine."""
    return time.time_ns()


def require_finite(field: str, value: Decimal | None) -> None:
    """Raise ``ValueError`` naming ``field`` when ``value`` is NaN or infinite."""
    if value is not None and not value.is_finite():
        raise ValueError(f"{field}: must be a finite number, got {value}")


def require_non_negative(field: str, value: Decimal | None) -> None:
    """Raise ``ValueError`` naming ``field`` when ``value`` is not finite or below zero."""
    require_finite(field, value)
    if value is not None and value < 0:
        raise ValueError(f"{field}: must not be negative, got {value}")


def require_positive(field: str, value: Decimal | None) -> None:
    """Raise ``ValueError`` naming ``field`` when ``value`` is not finite or not above zero."""
    require_finite(field, value)
    if value is not None and value <= 0:
        raise ValueError(f"{field}: must be positive, got {value}")


def require_text(field: str, value: str) -> None:
    """Raise ``ValueError`` naming ``field`` when ``value`` is empty."""
    if not value:
        raise ValueError(f"{field}: must not be empty")
