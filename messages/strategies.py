"""What an in-process strategy asks at start, and what it can say about itself.

A strategy that (re)starts asks the position keeper for its book: the positions its own
orders built and its orders still working, as the journal holds them. The keeper tells
the answer back to the strategy's name (actors never ask one another).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from messages.orders import OrderStatus, SubmitOrder


class GetSourceBook(msgspec.Struct, frozen=True, kw_only=True):
    """Tell the position keeper: send ``source``'s ``SourceBook`` to ``reply_to``."""

    source: str
    """The order source (a strategy's name): orders whose ``source`` is this."""
    reply_to: str
    """Registry name the answer is told to."""
    request_id: str = ""
    """Echoed in the answer, so that a late answer to an earlier request is told apart."""


class SourcePosition(msgspec.Struct, frozen=True, kw_only=True):
    """The net quantity the fills of one source's orders built at one venue and symbol."""

    venue: str
    """Connector the fills came through."""
    symbol: str
    """Instrument symbol."""
    quantity: Decimal
    """Signed: positive long, negative short."""


class SourceOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One order of a source not yet in a terminal state, as the journal holds it."""

    order: SubmitOrder
    """The order as it was passed to the connector."""
    status: OrderStatus
    """Pending, accepted or partially filled."""
    filled_quantity: Decimal
    """Sum of its journaled fills."""
    fill_ids: tuple[str, ...] = ()
    """The venue's ids of its journaled fills (a fill re-delivered later is not counted twice)."""


class SourceBook(msgspec.Struct, frozen=True, kw_only=True):
    """Answer to ``GetSourceBook``: what one source holds, from the journal.

    Attribution: a fill belongs to the source of the order it fills. The failsafe's
    closing orders are its own source (``failsafe``), so a flatten does not change a
    strategy's book; an order of another source on the same symbol neither."""

    source: str
    """Whose book."""
    request_id: str = ""
    """The request's id."""
    positions: tuple[SourcePosition, ...] = ()
    """Every (venue, symbol) its fills left non-flat."""
    working: tuple[SourceOrder, ...] = ()
    """Its orders not in a terminal state, in submission order."""
    fills: int = 0
    """How many fills of its orders the journal holds."""
    ts_ns: int = 0
    """When the book was read, wall clock nanoseconds."""


class GetStrategyState(msgspec.Struct, frozen=True, kw_only=True):
    """Ask a strategy (from outside the actor system): its ``StrategyState``."""


class StrategyState(msgspec.Struct, frozen=True, kw_only=True):
    """What a strategy knows about itself."""

    name: str
    """Its name, the ``source`` of its orders."""
    kind: str
    """Its plug-in kind."""
    venue: str
    """Connector it trades through."""
    ready: bool
    """Its book has arrived from the position keeper and it trades."""
    positions: dict[str, Decimal]
    """Its own net position per symbol (non-flat ones)."""
    working: tuple[str, ...]
    """Client order ids of its working orders."""
    submitted: int
    """Orders it sent since this start."""
    rejected: int
    """Of them, refused (by the governor or the venue)."""
    fills: int
    """Fills of its orders applied since this start."""
    book_fills: int = 0
    """Fills of its orders the journal held when its book was read."""
