"""Trade busts and corrections: the executions in effect after a venue amended some.

A venue can take back an execution it reported (a bust, FIX ExecType=H) or change its
quantity or price (a correction, ExecType=G). The journal keeps every execution as the
venue first reported it and every amendment beside it; the executions *in effect* are the
reported ones with the amendments applied:

- a bust removes its execution;
- a correction replaces the execution's quantity and price; the corrected execution is
  known from then on by the correction's id as well as by the original one (a later bust
  or correction may name either);
- an amendment of an execution that is not (or no longer) in effect changes nothing
  (an unknown execution, one already busted).

An amendment names its execution by id, not by time: one that arrives before the
execution it amends (a race between two reports) applies to it all the same.

A position is the executions in effect replayed in the order they were journaled
(``rebuild_position``), so a bust removes its quantity *and* the P&L it realized, and
every later execution's P&L is what it would have been without the busted trade. The
change in realized P&L is booked when the amendment is applied (the day of the bust).

Pure: no clock, no I/O; imports only ``messages`` and ``core``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from core.pnl import Position, apply_fill
from messages import OrderFilled
from messages.orders import FillBusted, FillCorrected

ZERO = Decimal(0)

Amendment = FillBusted | FillCorrected
"""A bust or a correction of one execution."""


def amendment_id(amendment: Amendment) -> str:
    """The venue's id of the amendment itself (the bust's or the correction's)."""
    return amendment.bust_id if isinstance(amendment, FillBusted) else amendment.correction_id


def amendment_kind(amendment: Amendment) -> str:
    """``bust`` or ``correction``."""
    return "bust" if isinstance(amendment, FillBusted) else "correction"


@dataclass(frozen=True, slots=True)
class Applied:
    """What one amendment did to the executions in effect."""

    before: OrderFilled | None
    """The execution as it was in effect; None when the amendment named none in effect."""
    after: OrderFilled | None
    """The execution in effect afterwards; None after a bust (or when nothing applied)."""

    @property
    def applied(self) -> bool:
        """True when the amendment changed an execution in effect."""
        return self.before is not None

    @property
    def quantity_delta(self) -> Decimal:
        """Change of the order's filled quantity (negative for a bust)."""
        if self.before is None:
            return ZERO
        return (self.after.quantity if self.after is not None else ZERO) - self.before.quantity

    @property
    def notional_delta(self) -> Decimal:
        """Change of traded notional (|quantity x price|)."""
        if self.before is None:
            return ZERO
        after = abs(self.after.quantity * self.after.price) if self.after is not None else ZERO
        return after - abs(self.before.quantity * self.before.price)


class AmendedFills:
    """One or more venues' executions, in journal order, with amendments applied.

    ``add`` an execution as reported, ``amend`` with a bust or correction (in the order
    they were journaled); ``fills`` is what is in effect. Amendments that arrive before
    their execution are kept and applied when it is added.
    """

    __slots__ = ("_current", "_early", "_reported", "_where")

    def __init__(self, fills: Iterable[OrderFilled] = (), amendments: Iterable[Amendment] = ()) -> None:
        self._current: list[OrderFilled | None] = []
        self._reported: list[OrderFilled] = []
        self._where: dict[tuple[str, str], int] = {}
        self._early: dict[tuple[str, str], list[Amendment]] = {}
        for fill in fills:
            self.add(fill)
        for amendment in amendments:
            self.amend(amendment)

    def add(self, fill: OrderFilled) -> None:
        """An execution as the venue reported it (the same id twice: the first stands)."""
        key = (fill.venue, fill.fill_id)
        if key in self._where:
            return
        self._where[key] = len(self._current)
        self._current.append(fill)
        self._reported.append(fill)
        for amendment in self._early.pop(key, []):
            self.amend(amendment)

    def amend(self, amendment: Amendment) -> Applied:
        """Apply a bust or a correction; what it did."""
        key = (amendment.venue, amendment.fill_id)
        index = self._where.get(key)
        if index is None:
            self._early.setdefault(key, []).append(amendment)
            return Applied(None, None)
        before = self._current[index]
        if before is None:
            return Applied(None, None)  # busted already
        if isinstance(amendment, FillBusted):
            self._current[index] = None
            return Applied(before, None)
        after = msgspec.structs.replace(before, fill_id=amendment.correction_id,
                                        quantity=amendment.quantity, price=amendment.price)
        self._current[index] = after
        self._where.setdefault((amendment.venue, amendment.correction_id), index)
        return Applied(before, after)

    def fills(self, venue: str | None = None, symbol: str | None = None) -> list[OrderFilled]:
        """The executions in effect, in journal order; only ``venue``'s / ``symbol``'s when given."""
        return [f for f in self._current if f is not None
                and (venue is None or f.venue == venue) and (symbol is None or f.symbol == symbol)]

    def in_effect(self) -> list[tuple[OrderFilled, OrderFilled]]:
        """Each execution in effect with the report it came from, in journal order."""
        return [(reported, current) for reported, current in zip(self._reported, self._current, strict=True)
                if current is not None]

    def effective_quantity(self, venue: str, fill_id: str) -> Decimal | None:
        """The quantity in effect of the execution reported as ``fill_id``: zero once busted,
        None when unknown."""
        index = self._where.get((venue, fill_id))
        if index is None:
            return None
        current = self._current[index]
        return ZERO if current is None else current.quantity


def rebuild_position(venue: str, symbol: str, fills: Iterable[OrderFilled]) -> Position:
    """The position the executions ``fills`` (in effect, in journal order) make at ``venue``
    in ``symbol``; fills of other venues or symbols are skipped."""
    position = Position(venue=venue, symbol=symbol)
    for fill in fills:
        if fill.venue == venue and fill.symbol == symbol:
            position.apply(apply_fill(position.quantity, position.average_price,
                                      fill.signed_quantity, fill.price))
    return position


def describe(amendment: Amendment, applied: Applied) -> str:
    """One line for the log and the reconciliation status."""
    ident = f"{amendment.fill_id} of order {amendment.client_order_id or '?'}"
    if applied.before is None:
        return (f"trade {amendment_kind(amendment)} {amendment_id(amendment)} of {ident}: "
                "no such execution in effect in the journal; nothing changed")
    before = applied.before
    if applied.after is None:
        return (f"trade {ident} busted ({before.side} {before.quantity} {before.symbol} at "
                f"{before.price} taken back; venue id {amendment_id(amendment)})")
    after = applied.after
    return (f"trade {ident} corrected from {before.quantity} at {before.price} to "
            f"{after.quantity} at {after.price} (venue id {amendment_id(amendment)})")
