"""Market data: quotes, trades, book levels, bars, and the per-read-cycle batch."""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from messages._base import (
    PRICE_BOUNDS,
    QUANTITY_BOUNDS,
    Bounds,
    Message,
    MessageError,
    require_not_below_zero,
    require_text,
)


class Quote(Message, frozen=True, kw_only=True):
    """Top of book for one symbol at one venue."""

    venue: str
    """Name of the venue (connector) the quote came from."""
    symbol: str
    """Instrument symbol as the venue names it."""
    bid: Decimal
    """Best bid price. Finite and below ``MAX_PRICE`` in magnitude; may be zero or negative
    only on a faulty feed (the safety monitor judges that, the codec does not hide it)."""
    ask: Decimal
    """Best ask price."""
    bid_size: Decimal
    """Quantity available at the bid; never negative."""
    ask_size: Decimal
    """Quantity available at the ask; never negative."""
    seq: int = 0
    """Per-venue, per-symbol sequence number; 0 when the venue has none."""
    ts_ns: int = 0
    """Venue timestamp, wall clock nanoseconds, when the quote left the venue."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "bid": PRICE_BOUNDS,
        "ask": PRICE_BOUNDS,
        "bid_size": QUANTITY_BOUNDS,
        "ask_size": QUANTITY_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("symbol", self.symbol)
        require_not_below_zero("bid_size", self.bid_size)
        require_not_below_zero("ask_size", self.ask_size)

    @property
    def mid(self) -> Decimal:
        """Midpoint of bid and ask."""
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> Decimal:
        """Ask minus bid; negative on a crossed market."""
        return self.ask - self.bid


class Trade(Message, frozen=True, kw_only=True):
    """A print on the tape."""

    venue: str
    """Venue the trade was reported by."""
    symbol: str
    """Instrument symbol."""
    price: Decimal
    """Traded price."""
    size: Decimal
    """Traded quantity; never negative."""
    seq: int = 0
    """Per-venue, per-symbol sequence number; 0 when the venue has none."""
    ts_ns: int = 0
    """Venue timestamp, wall clock nanoseconds."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "price": PRICE_BOUNDS,
        "size": QUANTITY_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("symbol", self.symbol)
        require_not_below_zero("size", self.size)


class BookLevel(Message, frozen=True, kw_only=True):
    """One price level of an order book."""

    price: Decimal
    """Price of the level."""
    size: Decimal
    """Quantity resting at the level; never negative."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "price": PRICE_BOUNDS,
        "size": QUANTITY_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_not_below_zero("size", self.size)


MAX_BOOK_LEVELS = 5
"""Depth carried by a ``Book``: levels L1 to L5."""


class Book(Message, frozen=True, kw_only=True):
    """Depth of book, L1 to L5, best level first."""

    venue: str
    """Venue the book came from."""
    symbol: str
    """Instrument symbol."""
    bids: tuple[BookLevel, ...] = ()
    """Bid levels, best (highest) first; at most five."""
    asks: tuple[BookLevel, ...] = ()
    """Ask levels, best (lowest) first; at most five."""
    ts_ns: int = 0
    """Venue timestamp, wall clock nanoseconds."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("symbol", self.symbol)
        if len(self.bids) > MAX_BOOK_LEVELS:
            raise MessageError(f"bids: at most {MAX_BOOK_LEVELS} levels, got {len(self.bids)}")
        if len(self.asks) > MAX_BOOK_LEVELS:
            raise MessageError(f"asks: at most {MAX_BOOK_LEVELS} levels, got {len(self.asks)}")


class Bar(Message, frozen=True, kw_only=True):
    """An OHLCV bar."""

    venue: str
    """Venue the bar was built from."""
    symbol: str
    """Instrument symbol."""
    start_ns: int
    """Start of the bar interval, wall clock nanoseconds."""
    interval_s: int
    """Length of the interval in seconds; positive."""
    open: Decimal
    """First price in the interval."""
    high: Decimal
    """Highest price in the interval."""
    low: Decimal
    """Lowest price in the interval."""
    close: Decimal
    """Last price in the interval."""
    volume: Decimal
    """Traded quantity in the interval; never negative."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "open": PRICE_BOUNDS,
        "high": PRICE_BOUNDS,
        "low": PRICE_BOUNDS,
        "close": PRICE_BOUNDS,
        "volume": QUANTITY_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("symbol", self.symbol)
        if self.interval_s <= 0:
            raise MessageError(f"interval_s: must be positive, got {self.interval_s}")
        require_not_below_zero("volume", self.volume)
        if self.low > self.high:
            raise MessageError(f"low: {self.low} is above high {self.high}")


class QuoteBatch(Message, frozen=True, kw_only=True):
    """Every quote and trade one connector read in one read cycle.

    Connectors publish market data in batches so that a burst of ticks costs one actor
    message, not one per tick.
    """

    venue: str
    """Venue (connector name) that read the batch."""
    quotes: tuple[Quote, ...] = ()
    """Quotes in arrival order."""
    trades: tuple[Trade, ...] = ()
    """Trades in arrival order."""
    recv_ns: int = 0
    """When the connector finished reading the batch, wall clock nanoseconds."""
