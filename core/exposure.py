"""Exposure: positions from fills, working orders, marks, and the one definition of a
valid mid.

``Exposure`` is the risk governor's view of what it could be holding: per (venue, symbol)
the position its fills made (each venue fill id counted once), the orders it passed that
are still working (summed by side, so no check walks every working order), and the last
valid mid. It also carries the day's traded notional as the position keeper last reported
it plus the fills that report does not count yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from decimal import Decimal

from messages import OrderFilled, PortfolioSnapshot, Quote, Side, SubmitOrder
from messages.orders import FillBusted, FillCorrected

ZERO = Decimal(0)

Key = tuple[str, str]
"""(venue, symbol)."""


def is_valid_quote(quote: Quote) -> bool:
    """A quote whose mid means something: a positive bid and an ask not below it (a locked
    market, bid equal to ask, is valid; a crossed or one-sided one is not)."""
    return quote.bid > 0 and quote.ask >= quote.bid


def mid_of(quote: Quote) -> Decimal:
    """The midpoint of ``quote`` (check ``is_valid_quote`` first)."""
    return (quote.bid + quote.ask) / 2


def valid_mid(quote: Quote) -> Decimal | None:
    """The mid of ``quote`` when it is valid, else None."""
    return (quote.bid + quote.ask) / 2 if quote.bid > 0 and quote.ask >= quote.bid else None


class WorkingTotals:
    """The working orders of one (venue, symbol): how many, and their signed quantities
    summed by side (``bought`` >= 0, ``sold`` <= 0)."""

    __slots__ = ("bought", "orders", "sold")

    def __init__(self) -> None:
        self.orders = 0
        self.bought = ZERO
        self.sold = ZERO

    def add(self, quantity: Decimal) -> None:
        """A working order of signed ``quantity``."""
        self.orders += 1
        if quantity > 0:
            self.bought += quantity
        else:
            self.sold += quantity

    def remove(self, quantity: Decimal) -> None:
        """A working order of signed ``quantity`` is no longer working."""
        self.orders -= 1
        if not self.orders:
            self.bought = self.sold = ZERO
        elif quantity > 0:
            self.bought -= quantity
        else:
            self.sold -= quantity


class Exposure:
    """Positions, working orders, marks and the day's traded notional (see the module)."""

    def __init__(self) -> None:
        self.positions: dict[Key, Decimal] = {}
        """Signed position per (venue, symbol), from fills."""
        self.mids: dict[Key, Decimal] = {}
        """Last valid mid per (venue, symbol)."""
        self.working: dict[str, tuple[str, str, Decimal]] = {}
        """Working orders by client order id: (venue, symbol, signed leaves quantity)."""
        self._totals: dict[Key, WorkingTotals] = {}
        self._fill_ids: set[tuple[str, str]] = set()
        self._in_effect: dict[tuple[str, str], tuple[str, Decimal]] = {}
        """(venue, fill id) -> (symbol, signed quantity in effect), for busts and corrections."""
        self._aliases: dict[tuple[str, str], tuple[str, str]] = {}
        """(venue, correction id) -> (venue, fill id) of the execution it corrected."""
        self.portfolio = PortfolioSnapshot()
        """The position keeper's last snapshot (daily P&L and notional)."""
        self._unreported: deque[tuple[int, Decimal]] = deque()
        self._unreported_notional = ZERO

    # ---- marks --------------------------------------------------------------------------

    def on_quotes(self, venue: str, quotes: Iterable[Quote]) -> None:
        """Take the valid mids of ``quotes``."""
        mids = self.mids
        for quote in quotes:
            if quote.bid > 0 and quote.ask >= quote.bid:  # is_valid_quote, inlined: the hot path
                mids[(venue, quote.symbol)] = (quote.bid + quote.ask) / 2

    def mid(self, key: Key) -> Decimal | None:
        """The last valid mid of ``key``."""
        return self.mids.get(key)

    # ---- fills --------------------------------------------------------------------------

    @property
    def fills(self) -> int:
        """Distinct fills applied."""
        return len(self._fill_ids)

    def apply_fill(self, fill: OrderFilled) -> bool:
        """Move the position by ``fill``; False (nothing changed) for a fill already applied."""
        key = (fill.venue, fill.fill_id)
        if key in self._fill_ids:
            return False
        self._fill_ids.add(key)
        self._in_effect[key] = (fill.symbol, fill.signed_quantity)
        pos_key = (fill.venue, fill.symbol)
        self.positions[pos_key] = self.positions.get(pos_key, ZERO) + fill.signed_quantity
        return True

    def on_amendment(self, amendment: FillBusted | FillCorrected) -> bool:
        """A trade bust (the execution's quantity leaves the position) or correction (its
        quantity is replaced); False for an execution not applied here or already busted."""
        named = (amendment.venue, amendment.fill_id)
        execution = self._aliases.get(named, named)
        found = self._in_effect.get(execution)
        if found is None or not found[1]:
            return False
        symbol, before = found
        after = ZERO
        if isinstance(amendment, FillCorrected):
            after = amendment.quantity if before > 0 else -amendment.quantity
            self._aliases[(amendment.venue, amendment.correction_id)] = execution
        self._in_effect[execution] = (symbol, after)
        key = (amendment.venue, symbol)
        self.positions[key] = self.positions.get(key, ZERO) + after - before
        return True

    def on_fill(self, fill: OrderFilled) -> bool:
        """A new execution: the position, the working order's leaves, and the day's notional
        until the keeper's next snapshot counts it. False for a duplicate."""
        if not self.apply_fill(fill):
            return False
        notional = abs(fill.quantity * fill.price)
        self._unreported.append((len(self._fill_ids), notional))
        self._unreported_notional += notional
        working = self.working.get(fill.client_order_id)
        if working is not None:
            if fill.leaves_quantity <= 0:
                self.drop_working(fill.client_order_id)
            else:
                venue, symbol, quantity = working
                sign = 1 if quantity > 0 else -1
                self.set_working(fill.client_order_id, (venue, symbol, fill.leaves_quantity * sign))
        return True

    def on_portfolio(self, snapshot: PortfolioSnapshot) -> None:
        """The keeper's snapshot: the fills it counts leave the unreported notional."""
        self.portfolio = snapshot
        while self._unreported and self._unreported[0][0] <= snapshot.fills:
            self._unreported_notional -= self._unreported.popleft()[1]
        if not self._unreported:
            self._unreported_notional = ZERO

    def traded_notional(self) -> Decimal:
        """The day's traded notional: the keeper's figure plus fills it does not count yet."""
        return self.portfolio.daily_traded_notional + self._unreported_notional

    # ---- working orders -------------------------------------------------------------------

    def add_order(self, order: SubmitOrder) -> None:
        """``order`` was passed to its venue and is working."""
        self.set_working(order.client_order_id, (order.venue, order.symbol, order.signed_quantity))

    def set_working(self, client_order_id: str, entry: tuple[str, str, Decimal]) -> None:
        """Record (or update) a working order and its per-symbol totals."""
        self.drop_working(client_order_id)
        self.working[client_order_id] = entry
        venue, symbol, quantity = entry
        totals = self._totals.get((venue, symbol))
        if totals is None:
            totals = self._totals[(venue, symbol)] = WorkingTotals()
        totals.add(quantity)

    def drop_working(self, client_order_id: str) -> bool:
        """Forget a working order; False when it was not working."""
        entry = self.working.pop(client_order_id, None)
        if entry is None:
            return False
        venue, symbol, quantity = entry
        totals = self._totals[(venue, symbol)]
        totals.remove(quantity)
        if not totals.orders:
            del self._totals[(venue, symbol)]
        return True

    def working_on_side(self, key: Key, side: Side) -> Decimal:
        """Signed quantity of the working orders for ``key`` on ``side``."""
        totals = self._totals.get(key)
        if totals is None:
            return ZERO
        return totals.bought if side is Side.BUY else totals.sold

    def working_keys(self) -> set[Key]:
        """The (venue, symbol) pairs with working orders."""
        return set(self._totals)

    def has_working(self, key: Key) -> bool:
        """True when ``key`` has a working order."""
        return key in self._totals

    def working_reducing(self, key: Key, position: Decimal) -> Decimal:
        """Quantity already working against ``position`` (so two reducing orders cannot flip it)."""
        totals = self._totals.get(key)
        if totals is None:
            return ZERO
        return -totals.sold if position > 0 else totals.bought

    def working_notional(self) -> Decimal:
        """Notional of every working order at its symbol's last mid (unpriced ones count 0)."""
        total = ZERO
        for key, totals in self._totals.items():
            mid = self.mids.get(key)
            if mid is not None:
                total += (totals.bought - totals.sold) * mid
        return total

    # ---- questions the checks ask -----------------------------------------------------------

    def position(self, key: Key) -> Decimal:
        """The signed position of ``key``."""
        return self.positions.get(key, ZERO)

    def reduces(self, order: SubmitOrder) -> bool:
        """True when ``order`` only reduces its position, counting the orders already working
        against it."""
        key = (order.venue, order.symbol)
        position = self.positions.get(key, ZERO)
        return (position != 0 and (position > 0) != (order.side.sign > 0)
                and order.quantity <= abs(position) - self.working_reducing(key, position))

    def open_keys(self) -> set[Key]:
        """(venue, symbol) pairs with a position or a working order."""
        return self.working_keys() | {k for k, q in self.positions.items() if q != 0}
