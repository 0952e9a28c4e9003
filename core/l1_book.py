"""A consistent level-1 book per symbol, assembled from separate updates.

Venues do not always send a quote as one message: TWS sends the bid, the ask and their
sizes as separate ticks, which may arrive in separate reads. A connector applies each
update to the symbol's ``L1Book`` and publishes only what the book says, never a pair
made of one fresh side and one stale side.

The one judgement the book makes is about crossing. An update that crosses the book
(bid above ask; a locked book, bid equal to ask, is not crossed) is usually half of a
move: the other side's update is on its way. Such a book is held, not published, until
either the other side updates too (then it is what the venue says, crossed or not) or it
stays crossed for ``settle_ns`` (then it is a crossed market, and it is published for the
safety checks to judge). Every other change is published at once.

Prices and sizes are held to the bounds every message holds them to (finite, below
``PRICE_BOUNDS`` / ``QUANTITY_BOUNDS`` in magnitude and places; sizes not negative);
anything else raises ``ValueError`` (``MessageError``) and leaves the book as it was (the
connector counts it as malformed), so a quote taken from the book is always valid. A
side can be cleared (the venue has no bid, or no ask): a book without both sides has no
quote. Time is passed in (nanoseconds, any clock, the same one for every call).
"""

from __future__ import annotations

from decimal import Decimal

from messages import PRICE_BOUNDS, QUANTITY_BOUNDS, Quote, Trade, check_decimal

__all__ = ["L1Book", "L1Books"]


def _price(name: str, value: Decimal) -> Decimal:
    if not isinstance(value, Decimal):
        raise ValueError(f"{name}: a Decimal price, got {value!r}")
    check_decimal(name, value, *PRICE_BOUNDS)
    return value


def _size(name: str, value: Decimal) -> Decimal:
    if not isinstance(value, Decimal):
        raise ValueError(f"{name}: a Decimal size, got {value!r}")
    check_decimal(name, value, *QUANTITY_BOUNDS)
    if value < 0:
        raise ValueError(f"{name}: must not be negative, got {value}")
    return value


class L1Book:
    """Best bid and ask, with sizes, of one symbol at one venue."""

    __slots__ = ("_ask_moved", "_bid_moved", "_changed", "_crossed_since_ns", "ask", "ask_size",
                 "bid", "bid_size", "settle_ns", "symbol", "ts_ns", "venue")

    def __init__(self, venue: str, symbol: str, *, settle_ns: int = 0) -> None:
        if settle_ns < 0:
            raise ValueError(f"settle_ns: must not be negative, got {settle_ns}")
        self.venue = venue
        """The venue (connector) name put on every quote."""
        self.symbol = symbol
        """The instrument."""
        self.settle_ns = settle_ns
        """Longest a book crossed by one side's update is held for the other side's."""
        self.bid: Decimal | None = None
        """Best bid; None when the venue has none (yet)."""
        self.ask: Decimal | None = None
        """Best ask; None when the venue has none (yet)."""
        self.bid_size = Decimal(0)
        """Quantity at the bid."""
        self.ask_size = Decimal(0)
        """Quantity at the ask."""
        self.ts_ns = 0
        """Time of the last update."""
        self._changed = False
        self._crossed_since_ns: int | None = None
        self._bid_moved = False
        self._ask_moved = False

    # ---- updates --------------------------------------------------------------------

    def set_bid(self, price: Decimal, size: Decimal | None, ts_ns: int) -> None:
        """A new best bid (and its size, when the update carries one)."""
        price = _price("bid", price)
        if size is not None:
            self.bid_size = _size("bid_size", size)
        self.bid = price
        self._updated(ts_ns, bid=True)

    def set_ask(self, price: Decimal, size: Decimal | None, ts_ns: int) -> None:
        """A new best ask (and its size, when the update carries one)."""
        price = _price("ask", price)
        if size is not None:
            self.ask_size = _size("ask_size", size)
        self.ask = price
        self._updated(ts_ns, bid=False)

    def set_bid_size(self, size: Decimal, ts_ns: int) -> None:
        """A new quantity at the bid."""
        self.bid_size = _size("bid_size", size)
        self._updated(ts_ns, bid=None)

    def set_ask_size(self, size: Decimal, ts_ns: int) -> None:
        """A new quantity at the ask."""
        self.ask_size = _size("ask_size", size)
        self._updated(ts_ns, bid=None)

    def clear_bid(self, ts_ns: int) -> None:
        """The venue has no bid: no quote until one arrives."""
        self.bid, self.bid_size = None, Decimal(0)
        self._updated(ts_ns, bid=True)

    def clear_ask(self, ts_ns: int) -> None:
        """The venue has no ask: no quote until one arrives."""
        self.ask, self.ask_size = None, Decimal(0)
        self._updated(ts_ns, bid=False)

    def trade(self, price: Decimal, size: Decimal, ts_ns: int) -> Trade:
        """A print (tick LAST) as a ``Trade``; the book itself does not change."""
        return Trade(venue=self.venue, symbol=self.symbol, price=_price("last", price),
                     size=_size("last_size", size), ts_ns=ts_ns)

    def _updated(self, ts_ns: int, *, bid: bool | None) -> None:
        self.ts_ns = ts_ns
        self._changed = True
        if not self.crossed:
            self._crossed_since_ns = None
            return
        if self._crossed_since_ns is None:  # this update crossed it
            self._crossed_since_ns = ts_ns
            self._bid_moved = self._ask_moved = False
        if bid is True:
            self._bid_moved = True
        elif bid is False:
            self._ask_moved = True

    # ---- reading --------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Both sides are known."""
        return self.bid is not None and self.ask is not None

    @property
    def crossed(self) -> bool:
        """Both sides are known and the bid is above the ask."""
        return self.bid is not None and self.ask is not None and self.bid > self.ask

    def quote(self) -> Quote | None:
        """The book as a ``Quote``; None without both sides."""
        if self.bid is None or self.ask is None:
            return None
        return Quote(venue=self.venue, symbol=self.symbol, bid=self.bid, ask=self.ask,
                     bid_size=self.bid_size, ask_size=self.ask_size, ts_ns=self.ts_ns)

    def held(self, now_ns: int) -> bool:
        """True while a change waits for the other side of a crossing update."""
        if not self._changed or self._crossed_since_ns is None:
            return False
        if self._bid_moved and self._ask_moved:
            return False
        return now_ns - self._crossed_since_ns < self.settle_ns

    def due_ns(self) -> int | None:
        """When a held change becomes publishable; None when nothing is held."""
        if not self._changed or self._crossed_since_ns is None or (self._bid_moved and self._ask_moved):
            return None
        return self._crossed_since_ns + self.settle_ns

    def take(self, now_ns: int) -> Quote | None:
        """The quote to publish now: the book changed since the last one taken, has both
        sides and is not held. Taking it marks the book published."""
        if not self._changed or not self.complete or self.held(now_ns):
            return None
        self._changed = False
        if self._crossed_since_ns is not None:
            # Published crossed: the next crossing update starts a new hold.
            self._bid_moved = self._ask_moved = True
        return self.quote()


class L1Books:
    """The books of one venue, by symbol."""

    def __init__(self, venue: str, *, settle_ns: int = 0) -> None:
        self.venue = venue
        """The venue (connector) name."""
        self.settle_ns = settle_ns
        """Passed to every book (see ``L1Book``)."""
        self._books: dict[str, L1Book] = {}

    def book(self, symbol: str) -> L1Book:
        """The book of ``symbol`` (an empty one the first time)."""
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = L1Book(self.venue, symbol, settle_ns=self.settle_ns)
        return book

    def take(self, now_ns: int) -> list[Quote]:
        """Every quote ready to publish now (see ``L1Book.take``)."""
        quotes = []
        for book in self._books.values():
            quote = book.take(now_ns)
            if quote is not None:
                quotes.append(quote)
        return quotes

    def next_due_ns(self) -> int | None:
        """The earliest time a held change becomes publishable; None when none is held."""
        due = [d for d in (b.due_ns() for b in self._books.values()) if d is not None]
        return min(due) if due else None

    def __len__(self) -> int:
        return len(self._books)
