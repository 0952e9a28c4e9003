"""P&L and the session boundary: position arithmetic on fills, marking, and the trading day.

Positions are kept per (venue, symbol) as a signed quantity and an average entry price:
adding to a position moves the average, reducing it realizes P&L at the average, closing
it resets the average to zero, and a fill that crosses zero realizes P&L on the closed part
and opens the rest at the fill price. The trading day starts at a fixed time of day (UTC);
times are wall-clock nanoseconds passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from core.exposure import mid_of
from messages import PositionState, Quote

ZERO = Decimal(0)
DAY_NS = 86_400 * 1_000_000_000
"""One day in nanoseconds."""


# ---- the session boundary ----------------------------------------------------------------


def parse_boundary(boundary: str) -> tuple[int, int]:
    """``"HH:MM"`` as (hour, minute); ``ValueError`` naming the field when malformed."""
    try:
        hour_text, minute_text = boundary.split(":")
        if len(hour_text) != 2 or len(minute_text) != 2:
            raise ValueError
        hour, minute = int(hour_text), int(minute_text)
    except ValueError:
        raise ValueError(f"session_boundary: expected HH:MM, got {boundary!r}") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(f"session_boundary: expected HH:MM, got {boundary!r}")
    return hour, minute


def session_start_ns(now: int, boundary: str) -> int:
    """Start of the trading session that contains ``now`` (ns): the last time the clock
    passed ``boundary`` (``HH:MM`` UTC), ``now`` itself included."""
    hour, minute = parse_boundary(boundary)
    moment = datetime.fromtimestamp(now // 1_000_000_000, tz=UTC)
    start = moment.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if start > moment:
        start -= timedelta(days=1)
    return int(start.timestamp()) * 1_000_000_000


def next_session_ns(now: int, boundary: str) -> int:
    """Start of the session after the one containing ``now`` (ns)."""
    return session_start_ns(now, boundary) + DAY_NS


# ---- position arithmetic -----------------------------------------------------------------


class FillEffect(NamedTuple):
    """A position after one fill, and what the fill realized."""

    quantity: Decimal
    """Signed quantity after the fill."""
    average_price: Decimal
    """Average entry price of the open quantity after the fill; zero when flat."""
    realized_pnl: Decimal
    """P&L realized by the part of the fill that closed the position."""


def apply_fill(quantity: Decimal, average_price: Decimal, traded: Decimal, price: Decimal) -> FillEffect:
    """Apply a fill of signed quantity ``traded`` at ``price`` to a position of signed
    ``quantity`` at ``average_price`` (see the module text)."""
    new_quantity = quantity + traded
    if quantity == 0 or (quantity > 0) == (traded > 0):
        average = (quantity * average_price + traded * price) / new_quantity
        return FillEffect(new_quantity, average, ZERO)
    closed = min(abs(traded), abs(quantity))
    realized = closed * (price - average_price) if quantity > 0 else closed * (average_price - price)
    if new_quantity == 0:
        return FillEffect(new_quantity, ZERO, realized)
    if (new_quantity > 0) == (quantity > 0):
        return FillEffect(new_quantity, average_price, realized)
    return FillEffect(new_quantity, price, realized)


@dataclass(slots=True)
class Position:
    """One position (mutable; one owner)."""

    venue: str
    symbol: str
    quantity: Decimal = ZERO
    average_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def apply(self, effect: FillEffect) -> None:
        """Take the position a fill left."""
        self.quantity = effect.quantity
        self.average_price = effect.average_price
        self.realized_pnl += effect.realized_pnl

    def state(self, mark: Quote | None) -> PositionState:
        """The position as a message, marked to ``mark`` when there is one."""
        if mark is None:
            return PositionState(venue=self.venue, symbol=self.symbol, quantity=self.quantity,
                                 average_price=self.average_price, realized_pnl=self.realized_pnl)
        mid = mid_of(mark)
        unrealized = self.quantity * (mid - self.average_price) if self.quantity else ZERO
        return PositionState(venue=self.venue, symbol=self.symbol, quantity=self.quantity,
                             average_price=self.average_price, realized_pnl=self.realized_pnl,
                             mark_price=mid, unrealized_pnl=unrealized)


class DailyTotals:
    """The current session's realized P&L and traded notional, and the (venue, symbol)
    pairs traded in it."""

    __slots__ = ("notional", "realized", "start_ns", "traded")

    def __init__(self) -> None:
        self.start_ns = 0
        self.realized = ZERO
        self.notional = ZERO
        self.traded: set[tuple[str, str]] = set()

    def contains(self, now: int) -> bool:
        """True when ``now`` (ns) is within the current session."""
        return self.start_ns <= now < self.start_ns + DAY_NS

    def restart(self, start_ns: int) -> None:
        """Begin the session starting at ``start_ns`` with nothing counted."""
        self.start_ns = start_ns
        self.realized = ZERO
        self.notional = ZERO
        self.traded.clear()

    def count(self, venue: str, symbol: str, quantity: Decimal, price: Decimal, realized: Decimal) -> None:
        """A fill of this session."""
        self.realized += realized
        self.notional += abs(quantity * price)
        self.traded.add((venue, symbol))
