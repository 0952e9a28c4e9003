"""The base record every tradeguard message derives from, and its validation helpers.

Every number and every text that enters tradeguard is checked when the message holding
it is built, whether a decoder builds it from the wire or a connector builds it from a
venue's fields, so that nothing downstream meets a value its arithmetic, its journal or
its logs cannot take:

- every ``Decimal`` is finite, below ``MAX_DECIMAL`` in magnitude and carries at most
  ``MAX_DECIMAL_PLACES`` decimal places (its exponent is bounded both ways), so no sum,
  product, quotient or rounding of a few of them can raise ``decimal.Overflow``;
- prices, sizes and quantities from outside are held to the tighter ``PRICE_BOUNDS``
  and ``QUANTITY_BOUNDS`` (magnitude and places; a message names those fields in its
  ``field_bounds``), so that what is computed from them (notional, averages, P&L)
  stays within the bounds of any decimal;
- every ``float`` is finite, every ``int`` fits a signed 64-bit integer (SQLite's
  INTEGER), and every ``str`` is encodable as UTF-8 (no lone surrogates).

A value that breaks a rule raises ``MessageError`` naming the field.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

import msgspec

MAX_DECIMAL = Decimal("1e30")
"""Bound on the magnitude of any ``Decimal`` in any message (totals and P&L included)."""

MAX_PRICE = Decimal("1e12")
"""Bound on the magnitude of a price from outside (quotes, trades, fills, orders, positions)."""

MAX_QUANTITY = Decimal("1e12")
"""Bound on a quantity or size from outside."""

MAX_DECIMAL_PLACES = 100
"""Finest digit any decimal may carry (P&L of the smallest positions keeps its digits); with
``MAX_DECIMAL`` it bounds the digits of a number and keeps any quotient far from Overflow."""

MAX_INPUT_PLACES = 40
"""Finest digit a price or quantity from outside may carry: room for a venue's
full-precision (28 digits) average of the smallest prices traded."""

PRICE_BOUNDS: tuple[Decimal, int] = (MAX_PRICE, MAX_INPUT_PLACES)
"""Magnitude limit and decimal places of a price from outside."""

QUANTITY_BOUNDS: tuple[Decimal, int] = (MAX_QUANTITY, MAX_INPUT_PLACES)
"""Magnitude and places of a quantity or size from outside."""

MIN_INT = -(2**63)
"""Smallest integer a message may carry (SQLite's INTEGER is a signed 64-bit integer)."""

MAX_INT = 2**63 - 1
"""Largest integer a message may carry."""


class MessageError(ValueError):
    """A message could not be built, encoded or decoded; the text names the bad field."""


def check_decimal(field: str, value: Decimal, limit: Decimal = MAX_DECIMAL,
                  places: int = MAX_DECIMAL_PLACES) -> None:
    """Raise ``MessageError`` naming ``field`` unless ``value`` is finite, below ``limit``
    (a power of ten, at most ``MAX_DECIMAL``) in magnitude and carries at most ``places``
    decimal places."""
    if not value.is_finite():
        raise MessageError(f"{field}: must be a finite number, got {value}")
    # |value| < 10**n exactly when its adjusted exponent is below n (for zero too: 0E+40
    # has adjusted exponent 40); no Decimal arithmetic, so nothing here can overflow.
    if value.adjusted() >= limit.adjusted():
        raise MessageError(f"{field}: magnitude must be below {limit}, got {_shown(value)}")
    text = str(value)
    if "E" in text:  # scientific notation: a tiny value (a large one was refused above)
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)  # finite
    else:  # plain notation: the places are the digits after the point
        point = text.find(".")
        exponent = point + 1 - len(text) if point >= 0 else 0
    if exponent < -places:
        raise MessageError(f"{field}: at most {places} decimal places, got {_shown(value)}")


Bounds = Mapping[str, tuple[Decimal, int]]
"""Field name -> (magnitude limit, decimal places) for fields held tighter than any decimal."""

_ANY_DECIMAL = (MAX_DECIMAL, MAX_DECIMAL_PLACES)


def check_fields(record: msgspec.Struct, bounds: Bounds = MappingProxyType({})) -> None:
    """Check every field of ``record`` by its value's type (see the module's rules); a
    decimal named in ``bounds`` is held to its bounds there.

    Nested records are checked when they are built, so only direct values and tuples of
    text are looked at here.
    """
    for name in record.__struct_fields__:
        value = getattr(record, name)
        kind = type(value)
        if kind is Decimal:
            check_decimal(name, value, *bounds.get(name, _ANY_DECIMAL))
        elif kind is str:
            if not value.isascii():
                _check_text(name, value)
        elif kind is int:
            if not MIN_INT <= value <= MAX_INT:
                raise MessageError(f"{name}: must fit a signed 64-bit integer, got {_shown(value)}")
        elif kind is float:
            if not math.isfinite(value):
                raise MessageError(f"{name}: must be a finite number, got {value}")
        elif kind is tuple:
            for item in value:
                if type(item) is str and not item.isascii():
                    _check_text(name, item)


def _check_text(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MessageError(f"{field}: not valid Unicode text (lone surrogate at {exc.start})") from None


def _shown(value: object) -> str:
    """``value`` as text, cut short: an absurd number can be very long."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-12:]} ({len(text)} characters)"


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, forbid_unknown_fields=True):
    """An immutable, keyword-only, tagged record.

    The tag (the class name) lets one decoder read any message from the wire.
    Unknown fields are refused so that a misspelt field is an error, not a silent default.
    Every field is checked when the record is built (see the module's rules), decimals
    named in ``field_bounds`` to those bounds; a subclass with rules of its own defines
    ``__post_init__`` and calls ``super().__post_init__()`` first.
    """

    field_bounds: ClassVar[Bounds] = MappingProxyType({})
    """Decimal fields held tighter than any decimal: prices and quantities from outside."""

    def __post_init__(self) -> None:
        check_fields(self, self.field_bounds)


def now_ns() -> int:
    """Wall-clock time in nanoseconds, comparable across processes on one machine."""
    return time.time_ns()


def require_finite(field: str, value: Decimal | None, limit: Decimal = MAX_DECIMAL,
                   places: int = MAX_DECIMAL_PLACES) -> None:
    """Raise ``MessageError`` naming ``field`` when ``value`` is NaN, infinite, not below
    ``limit`` in magnitude or finer than ``places`` (``check_decimal``); None passes."""
    if value is not None:
        check_decimal(field, value, limit, places)


def require_non_negative(field: str, value: Decimal | None, limit: Decimal = MAX_DECIMAL,
                         places: int = MAX_DECIMAL_PLACES) -> None:
    """As ``require_finite``, and raise when ``value`` is below zero."""
    require_finite(field, value, limit, places)
    require_not_below_zero(field, value)


def require_positive(field: str, value: Decimal | None, limit: Decimal = MAX_DECIMAL,
                     places: int = MAX_DECIMAL_PLACES) -> None:
    """As ``require_finite``, and raise when ``value`` is not above zero."""
    require_finite(field, value, limit, places)
    require_above_zero(field, value)


def require_not_below_zero(field: str, value: Decimal | None) -> None:
    """Raise ``MessageError`` naming ``field`` when ``value`` is below zero (the sign only:
    for a field ``check_fields`` has already checked); None passes."""
    if value is not None and value < 0:
        raise MessageError(f"{field}: must not be negative, got {value}")


def require_above_zero(field: str, value: Decimal | None) -> None:
    """Raise ``MessageError`` naming ``field`` when ``value`` is not above zero (the sign
    only); None passes."""
    if value is not None and value <= 0:
        raise MessageError(f"{field}: must be positive, got {value}")


def require_text(field: str, value: str) -> None:
    """Raise ``MessageError`` naming ``field`` when ``value`` is empty."""
    if not value:
        raise MessageError(f"{field}: must not be empty")
