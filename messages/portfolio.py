"""Positions and P&L as the position keeper sees them, and reconciliation results."""

from __future__ import annotations

from decimal import Decimal

from messages._base import Message


class PositionState(Message, frozen=True, kw_only=True):
    """One position as tradeguard's journal knows it."""

    venue: str
    """Connector carrying the position."""
    symbol: str
    """Instrument symbol."""
    quantity: Decimal
    """Signed quantity: positive long, negative short."""
    average_price: Decimal
    """Average entry price of the open quantity; zero when flat."""
    realized_pnl: Decimal = Decimal(0)
    """Realized P&L of this position since the journal began."""
    mark_price: Decimal | None = None
    """Last mid used to mark the position; None before any quote."""
    unrealized_pnl: Decimal = Decimal(0)
    """Open quantity marked to ``mark_price``."""


class PortfolioSnapshot(Message, frozen=True, kw_only=True):
    """Every position and the P&L, published by the position keeper after each fill and
    at a bounded rate as marks move."""

    positions: tuple[PositionState, ...] = ()
    """Non-flat positions, plus flat ones that carry realized P&L today."""
    realized_pnl: Decimal = Decimal(0)
    """Realized P&L since the journal began."""
    unrealized_pnl: Decimal = Decimal(0)
    """Open positions marked to the last mids."""
    daily_realized_pnl: Decimal = Decimal(0)
    """Realized P&L since the current session boundary."""
    daily_pnl: Decimal = Decimal(0)
    """``daily_realized_pnl`` plus ``unrealized_pnl``: what the daily loss limit watches."""
    daily_traded_notional: Decimal = Decimal(0)
    """Sum of |quantity x price| of fills since the session boundary."""
    fills: int = 0
    """Fills in the journal."""
    ts_ns: int = 0
    """When the snapshot was made, wall clock nanoseconds."""


class Reconciliation(Message, frozen=True, kw_only=True):
    """The outcome of comparing the journal with what a venue reports."""

    venue: str
    """Connector compared."""
    reconciled: bool
    """True when every symbol's quantity agrees."""
    venue_positions: tuple[PositionState, ...] = ()
    """What the venue reports (average price as the venue computes it)."""
    keeper_positions: tuple[PositionState, ...] = ()
    """What the journal holds for that venue."""
    mismatches: tuple[str, ...] = ()
    """One line per symbol that disagrees."""
    ts_ns: int = 0
    """When compared, wall clock nanoseconds."""
    since_ns: int = 0
    """Since when the venue is reconciled (or not) without interruption, wall clock
    nanoseconds; 0 when unknown."""
    venue_open_orders: tuple[str, ...] | None = None
    """Client order ids the venue reported working; None when its report did not list its
    orders (they were then not compared)."""
    keeper_open_orders: tuple[str, ...] = ()
    """Client order ids the journal held working at that venue (pending, accepted or
    partially filled) when compared."""
    order_mismatches: tuple[str, ...] = ()
    """The lines of ``mismatches`` that are about orders (working on one side only)."""
