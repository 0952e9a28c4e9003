"""Order entry for outside order sources: one session's credentials, limits and order book.

A ``SessionBook`` holds what tradeguard knows of the orders one order-entry session sent:
it applies the session's own limits (order quantity, order notional, position, orders per
second) before anything reaches the risk governor's global checks, follows each order
through the events the venue reports, and says which execution report the session is
owed for each of them (``ExecReport``). It keeps no clock: every check is given the time.

Positions counted against ``max_position`` are the session's own fills plus, on the side
that would grow the position, what its working orders could still add: an order is
refused when, filled in full together with the session's other working orders on the
same side, it would leave the position beyond the limit. An order that brings the
position toward zero is not refused for position.
"""

from __future__ import annotations

import hmac
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from messages.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    RejectReason,
    SubmitOrder,
)

__all__ = [
    "EntryOrder",
    "ExecReport",
    "ExecType",
    "OrdStatus",
    "SessionBook",
    "SessionLimits",
    "credentials_match",
]

_ZERO = Decimal(0)


class ExecType:
    """FIX ExecType (150) values tradeguard sends."""

    NEW = "0"
    CANCELED = "4"
    REJECTED = "8"
    TRADE = "F"


class OrdStatus:
    """FIX OrdStatus (39) values tradeguard sends."""

    NEW = "0"
    PARTIALLY_FILLED = "1"
    FILLED = "2"
    CANCELED = "4"
    REJECTED = "8"
    PENDING_NEW = "A"


_ORD_STATUS: dict[OrderStatus, str] = {
    OrderStatus.PENDING: OrdStatus.PENDING_NEW,
    OrderStatus.ACCEPTED: OrdStatus.NEW,
    OrderStatus.PARTIALLY_FILLED: OrdStatus.PARTIALLY_FILLED,
    OrderStatus.FILLED: OrdStatus.FILLED,
    OrderStatus.CANCELLED: OrdStatus.CANCELED,
    OrderStatus.REJECTED: OrdStatus.REJECTED,
}


def credentials_match(expected_user: str, expected_password: str | None,
                      user: str | None, password: str | None) -> bool:
    """True when ``user``/``password`` are the expected ones. A session without a
    configured password admits nobody. Compared in constant time."""
    if not expected_password or user is None or password is None:
        return False
    user_ok = hmac.compare_digest(user.encode("utf-8", "surrogatepass"), expected_user.encode())
    password_ok = hmac.compare_digest(password.encode("utf-8", "surrogatepass"),
                                      expected_password.encode())
    return user_ok and password_ok


@dataclass(frozen=True)
class SessionLimits:
    """One session's own limits, applied before the global pre-trade checks."""

    max_order_quantity: Decimal
    """Largest quantity of one order."""
    max_order_notional: Decimal
    """Largest quantity times price of one order (the limit or stop price, else the
    reference price the caller gives)."""
    max_position: Decimal
    """Largest absolute position per venue and symbol the session may build."""
    max_orders_per_s: int
    """Most orders the session may send in any one second (refused ones count too)."""


@dataclass(frozen=True)
class ExecReport:
    """What one ExecutionReport (35=8) to the session says."""

    cl_ord_id: str
    """ClOrdID (11): the session's id of the order, or of the cancel that ended it."""
    order_id: str
    """OrderID (37): tradeguard's id of the order."""
    exec_type: str
    """ExecType (150)."""
    ord_status: str
    """OrdStatus (39)."""
    cum_qty: Decimal
    """CumQty (14)."""
    leaves_qty: Decimal
    """LeavesQty (151)."""
    avg_px: Decimal
    """AvgPx (6)."""
    last_qty: Decimal | None = None
    """LastQty (32), on a trade."""
    last_px: Decimal | None = None
    """LastPx (31), on a trade."""
    exec_id: str = ""
    """ExecID (17): the venue's fill id on a trade; made by the gateway otherwise."""
    orig_cl_ord_id: str | None = None
    """OrigClOrdID (41), on the Canceled report answering a cancel request."""
    text: str = ""
    """Text (58): on a rejection, ``<reason code>: <words>``."""


@dataclass
class EntryOrder:
    """One order a session sent, as the gateway follows it."""

    order: SubmitOrder
    """The order as it went to the governor (tradeguard's ``client_order_id``)."""
    cl_ord_id: str
    """The session's ClOrdID."""
    status: OrderStatus = OrderStatus.PENDING
    """Where it stands."""
    cum: Decimal = _ZERO
    """Quantity filled so far."""
    notional: Decimal = _ZERO
    """Sum of fill quantity times price."""
    cancel_cl_ord_id: str | None = None
    """ClOrdID of the session's pending cancel request, if any."""
    fill_ids: set[str] = field(default_factory=set)
    """Fills applied (a connector resynchronising may publish a fill again)."""

    @property
    def avg_px(self) -> Decimal:
        """Average fill price so far (zero before the first fill)."""
        return self.notional / self.cum if self.cum else _ZERO

    @property
    def leaves(self) -> Decimal:
        """Quantity still working: zero once the order is done."""
        return _ZERO if self.status.is_done() else self.order.quantity - self.cum

    @property
    def working(self) -> bool:
        """True until the order reaches a terminal state."""
        return not self.status.is_done()


class SessionBook:
    """One session's orders, positions and rate window; decides and reports, sends nothing."""

    def __init__(self, limits: SessionLimits) -> None:
        self.limits = limits
        self.orders: dict[str, EntryOrder] = {}
        """By tradeguard's ``client_order_id``."""
        self.by_cl_ord_id: dict[str, str] = {}
        """The session's ClOrdID to tradeguard's ``client_order_id``."""
        self.positions: dict[tuple[str, str], Decimal] = {}
        """(venue, symbol) to the signed quantity the session's fills built."""
        self._sent: deque[float] = deque()

    # ---- checks ----------------------------------------------------------------------

    def check(self, order: SubmitOrder, reference_price: Decimal | None,
              now: float) -> tuple[RejectReason, str] | None:
        """The session's limits for ``order`` at time ``now`` (seconds); the first one it
        breaks, or None. Every call counts against the rate, passed or not."""
        limits = self.limits
        while self._sent and now - self._sent[0] >= 1.0:
            self._sent.popleft()
        over_rate = len(self._sent) >= limits.max_orders_per_s
        self._sent.append(now)
        if over_rate:
            return RejectReason.RATE_LIMIT, (
                f"session rate: more than {limits.max_orders_per_s} orders in one second")
        if order.quantity > limits.max_order_quantity:
            return RejectReason.MAX_QUANTITY, (
                f"session limit: quantity {order.quantity} above {limits.max_order_quantity}")
        price = order.limit_price or order.stop_price or reference_price
        if price is None:
            return RejectReason.NO_MARKET, f"no price known for {order.symbol} to value the order"
        notional = order.quantity * price
        if notional > limits.max_order_notional:
            return RejectReason.MAX_NOTIONAL, (
                f"session limit: notional {notional:f} above {limits.max_order_notional}")
        key = (order.venue, order.symbol)
        position = self.positions.get(key, _ZERO)
        same_side = sum((o.leaves for o in self.orders.values()
                         if o.working and (o.order.venue, o.order.symbol) == key
                         and o.order.side is order.side), _ZERO)
        projected = position + order.side.sign * (same_side + order.quantity)
        if abs(projected) > limits.max_position and abs(projected) > abs(position):
            return RejectReason.MAX_POSITION, (
                f"session limit: position {order.symbol} would reach {projected} "
                f"(limit {limits.max_position})")
        return None

    def is_duplicate(self, cl_ord_id: str) -> bool:
        """True when the session already used ``cl_ord_id`` for a working order."""
        existing = self.by_cl_ord_id.get(cl_ord_id)
        return existing is not None and self.orders[existing].working

    # ---- the orders ------------------------------------------------------------------

    def add(self, order: SubmitOrder, cl_ord_id: str) -> EntryOrder:
        """Follow ``order``, sent by the session as ``cl_ord_id``."""
        entry = EntryOrder(order=order, cl_ord_id=cl_ord_id)
        self.orders[order.client_order_id] = entry
        self.by_cl_ord_id[cl_ord_id] = order.client_order_id
        return entry

    def find(self, cl_ord_id: str) -> EntryOrder | None:
        """The order the session knows as ``cl_ord_id``."""
        key = self.by_cl_ord_id.get(cl_ord_id)
        return self.orders.get(key) if key is not None else None

    def working(self) -> list[EntryOrder]:
        """Orders not yet in a terminal state, oldest first."""
        return [o for o in self.orders.values() if o.working]

    def forget_done(self, keep: int = 10_000) -> list[str]:
        """Drop the oldest finished orders beyond ``keep`` (memory stays bounded); their
        ``client_order_id``s."""
        excess = len(self.orders) - keep
        if excess <= 0:
            return []
        dropped = [k for k, o in self.orders.items() if not o.working][:excess]
        for key in dropped:
            entry = self.orders.pop(key)
            if self.by_cl_ord_id.get(entry.cl_ord_id) == key:
                del self.by_cl_ord_id[entry.cl_ord_id]
        return dropped

    def refuse_new(self, order: SubmitOrder, cl_ord_id: str, reason: RejectReason,
                   text: str) -> ExecReport:
        """The report refusing an order that is not followed (refused before it was sent)."""
        return self.refuse(EntryOrder(order=order, cl_ord_id=cl_ord_id), reason, text)

    def refuse(self, entry: EntryOrder, reason: RejectReason, text: str) -> ExecReport:
        """The order is refused (by the session's limits, the governor or the venue)."""
        entry.status = OrderStatus.REJECTED
        return self._report(entry, ExecType.REJECTED, text=f"{reason}: {text}")

    def apply(self, event: OrderAccepted | OrderFilled | OrderCancelled | OrderRejected
              ) -> ExecReport | tuple[str, str] | None:
        """The report ``event`` is owed to the session: an ``ExecReport``, or for a
        refused cancel request ``(cancel ClOrdID, text)`` (an OrderCancelReject), or None
        when it changes nothing (unknown order, repeated fill, late event)."""
        entry = self.orders.get(event.client_order_id)
        if entry is None:
            return None
        if isinstance(event, OrderAccepted):
            if entry.status is not OrderStatus.PENDING:
                return None
            entry.status = OrderStatus.ACCEPTED
            return self._report(entry, ExecType.NEW)
        if isinstance(event, OrderFilled):
            if event.fill_id in entry.fill_ids or entry.status in (OrderStatus.REJECTED,):
                return None
            entry.fill_ids.add(event.fill_id)
            entry.cum += event.quantity
            entry.notional += event.quantity * event.price
            key = (entry.order.venue, entry.order.symbol)
            self.positions[key] = self.positions.get(key, _ZERO) + event.signed_quantity
            full = event.leaves_quantity == 0 or entry.cum >= entry.order.quantity
            entry.status = OrderStatus.FILLED if full else OrderStatus.PARTIALLY_FILLED
            return self._report(entry, ExecType.TRADE, last_qty=event.quantity,
                                last_px=event.price, exec_id=event.fill_id)
        if isinstance(event, OrderCancelled):
            if entry.status.is_done():
                return None
            entry.status = OrderStatus.CANCELLED
            cancel_id, entry.cancel_cl_ord_id = entry.cancel_cl_ord_id, None
            return self._report(entry, ExecType.CANCELED, text=event.text,
                                cl_ord_id=cancel_id, orig_cl_ord_id=entry.cl_ord_id if cancel_id else None)
        # OrderRejected: of the order itself while it is pending, else of a cancel request.
        if entry.status is OrderStatus.PENDING:
            return self.refuse(entry, event.reason, event.text)
        if entry.cancel_cl_ord_id is not None:
            cancel_id, entry.cancel_cl_ord_id = entry.cancel_cl_ord_id, None
            return cancel_id, f"{event.reason}: {event.text}"
        return None

    def _report(self, entry: EntryOrder, exec_type: str, *, last_qty: Decimal | None = None,
                last_px: Decimal | None = None, exec_id: str = "", text: str = "",
                cl_ord_id: str | None = None, orig_cl_ord_id: str | None = None) -> ExecReport:
        return ExecReport(
            cl_ord_id=cl_ord_id or entry.cl_ord_id, order_id=entry.order.client_order_id,
            exec_type=exec_type, ord_status=_ORD_STATUS[entry.status], cum_qty=entry.cum,
            leaves_qty=entry.leaves, avg_px=entry.avg_px, last_qty=last_qty, last_px=last_px,
            exec_id=exec_id, orig_cl_ord_id=orig_cl_ord_id, text=text,
        )
