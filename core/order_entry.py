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

A cancel/replace (FIX 35=G) is done as cancel-then-new, since no connector can modify an
order in place: ``request_replace`` checks the replacement against the session's limits as
a new order of the new quantity (the order it replaces no longer counted) and marks the
order pending replace; the caller cancels it at the venue. Once the venue confirms the
cancel, ``handle`` returns the replacement to send, for the new quantity less what the
original filled; the session sees Replaced when the venue accepts it. If the original
fills before its cancel lands, or the replacement is refused, the replace is rejected
(an ``OrderCancelReject`` with ``CxlRejResponseTo`` 2).
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
    "CancelReject",
    "CxlRejReason",
    "CxlRejResponseTo",
    "EntryOrder",
    "ExecReport",
    "ExecType",
    "OrdStatus",
    "Outcome",
    "PendingReplace",
    "SessionBook",
    "SessionLimits",
    "credentials_match",
]

_ZERO = Decimal(0)


class ExecType:
    """FIX ExecType (150) values tradeguard sends."""

    NEW = "0"
    CANCELED = "4"
    REPLACED = "5"
    REJECTED = "8"
    PENDING_REPLACE = "E"
    TRADE = "F"


class OrdStatus:
    """FIX OrdStatus (39) values tradeguard sends."""

    NEW = "0"
    PARTIALLY_FILLED = "1"
    FILLED = "2"
    CANCELED = "4"
    REJECTED = "8"
    PENDING_NEW = "A"
    PENDING_REPLACE = "E"


class CxlRejReason:
    """FIX CxlRejReason (102) values tradeguard sends on an OrderCancelReject (35=9)."""

    TOO_LATE = "0"
    UNKNOWN_ORDER = "1"
    VENUE = "2"
    """Broker / exchange option: the venue is down or refused."""
    PENDING = "3"
    """A cancel or replace of the order is already pending."""
    DUPLICATE_CL_ORD_ID = "6"
    OTHER = "99"


class CxlRejResponseTo:
    """FIX CxlRejResponseTo (434)."""

    CANCEL = "1"
    REPLACE = "2"


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
    order_qty: Decimal | None = None
    """OrderQty (38): the order's quantity as the session knows it (after a replace, the
    new quantity); None: the order's own."""


@dataclass(frozen=True)
class CancelReject:
    """What one OrderCancelReject (35=9) to the session says."""

    cl_ord_id: str
    """ClOrdID (11): the cancel's or the replace's own ClOrdID."""
    orig_cl_ord_id: str
    """OrigClOrdID (41): the order the request named."""
    order_id: str
    """OrderID (37): tradeguard's id of the order; ``NONE`` when unknown."""
    ord_status: str
    """OrdStatus (39): where the order stands now."""
    response_to: str
    """CxlRejResponseTo (434): 1 a cancel request, 2 a cancel/replace request."""
    reason: str
    """CxlRejReason (102)."""
    text: str
    """Text (58)."""


@dataclass
class PendingReplace:
    """A cancel/replace waiting for the venue to confirm the cancel of the order."""

    cl_ord_id: str
    """The replace's ClOrdID: the replacement's from now on."""
    order: SubmitOrder
    """The replacement as the session asked for it: the new quantity in full, and
    tradeguard's ``client_order_id`` for the new venue order."""


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
    replace: PendingReplace | None = None
    """A cancel/replace of this order waiting for the cancel at the venue."""
    replaces: EntryOrder | None = None
    """On a replacement: the order it replaced."""
    base_cum: Decimal = _ZERO
    """On a replacement: what the orders it replaced had filled (counted in ``cum``)."""
    replaced_reported: bool = True
    """False on a replacement until the session got its Replaced report."""

    @property
    def avg_px(self) -> Decimal:
        """Average fill price so far (zero before the first fill)."""
        return self.notional / self.cum if self.cum else _ZERO

    @property
    def order_qty(self) -> Decimal:
        """The quantity the session knows the order by (after a replace: the new one)."""
        return self.base_cum + self.order.quantity

    @property
    def leaves(self) -> Decimal:
        """Quantity still working: zero once the order is done."""
        return _ZERO if self.status.is_done() else self.order_qty - self.cum

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
        self._closing_fills: dict[str, None] = {}
        """Fill ids of closing orders counted (``note_closing_fill``), oldest first."""

    # ---- checks ----------------------------------------------------------------------

    def check(self, order: SubmitOrder, reference_price: Decimal | None, now: float,
              *, replacing: EntryOrder | None = None) -> tuple[RejectReason, str] | None:
        """The session's limits for ``order`` at time ``now`` (seconds); the first one it
        breaks, or None. Every call counts against the rate, passed or not.

        ``replacing``: ``order`` replaces that working order: it is checked as a new order
        of its full quantity, the order it replaces is no longer counted, and what that
        one filled is not counted again."""
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
                         if o.working and o is not replacing and (o.order.venue, o.order.symbol) == key
                         and o.order.side is order.side), _ZERO)
        adds = order.quantity - (replacing.cum if replacing is not None else _ZERO)
        projected = position + order.side.sign * (same_side + adds)
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

    # ---- cancel and cancel/replace requests --------------------------------------------

    def cancel_reject(self, request_id: str, orig_cl_ord_id: str, entry: EntryOrder | None,
                      response_to: str, reason: str, text: str) -> CancelReject:
        """The OrderCancelReject answering a request about ``entry`` (None: unknown)."""
        return CancelReject(
            cl_ord_id=request_id, orig_cl_ord_id=orig_cl_ord_id,
            order_id=entry.order.client_order_id if entry is not None else "NONE",
            ord_status=self._ord_status(entry) if entry is not None else OrdStatus.REJECTED,
            response_to=response_to, reason=reason, text=text)

    def request_replace(self, orig_cl_ord_id: str, cl_ord_id: str, replacement: SubmitOrder,
                        reference_price: Decimal | None, now: float) -> ExecReport | CancelReject:
        """A cancel/replace of the order the session knows as ``orig_cl_ord_id`` by
        ``replacement`` (its new quantity in full, a fresh ``client_order_id``), named
        ``cl_ord_id``. A Pending Replace report when it may go ahead (the caller then
        cancels the order at its venue), else the OrderCancelReject. Counts in the rate."""
        entry = self.find(orig_cl_ord_id)

        def reject(reason: str, text: str) -> CancelReject:
            return self.cancel_reject(cl_ord_id, orig_cl_ord_id, entry, CxlRejResponseTo.REPLACE,
                                      reason, text)

        if entry is None:
            self.check(replacement, reference_price, now)  # counted, whatever comes of it
            return reject(CxlRejReason.UNKNOWN_ORDER, "unknown order")
        if not entry.working:
            self.check(replacement, reference_price, now)
            return reject(CxlRejReason.TOO_LATE, f"order already {entry.status}")
        if entry.replace is not None or entry.cancel_cl_ord_id is not None:
            self.check(replacement, reference_price, now)
            return reject(CxlRejReason.PENDING, "a cancel or replace of the order is pending")
        if entry.status is OrderStatus.PENDING:
            self.check(replacement, reference_price, now)
            return reject(CxlRejReason.OTHER, "the order is not yet acknowledged by its venue")
        if cl_ord_id == orig_cl_ord_id or cl_ord_id in self.by_cl_ord_id:
            self.check(replacement, reference_price, now)
            return reject(CxlRejReason.DUPLICATE_CL_ORD_ID, f"ClOrdID {cl_ord_id} already used")
        original = entry.order
        for name in ("venue", "symbol", "side"):
            if getattr(replacement, name) != getattr(original, name):
                self.check(replacement, reference_price, now)
                return reject(CxlRejReason.OTHER, f"{name} cannot be changed by a replace")
        refusal = self.check(replacement, reference_price, now, replacing=entry)
        if refusal is not None:
            return reject(CxlRejReason.OTHER, f"{refusal[0]}: {refusal[1]}")
        if replacement.quantity <= entry.cum:
            return reject(CxlRejReason.TOO_LATE,
                          f"new quantity {replacement.quantity} not above the {entry.cum} filled")
        entry.replace = PendingReplace(cl_ord_id=cl_ord_id, order=replacement)
        self.by_cl_ord_id[cl_ord_id] = original.client_order_id  # reserved until it resolves
        return self._report(entry, ExecType.PENDING_REPLACE, cl_ord_id=cl_ord_id,
                            orig_cl_ord_id=entry.cl_ord_id, ord_status=OrdStatus.PENDING_REPLACE)

    def abandon_replace(self, entry: EntryOrder, text: str) -> CancelReject | None:
        """Give up ``entry``'s pending replace (the order is being cancelled for good: a
        mass cancel, the session dropping); its OrderCancelReject, or None without one."""
        pending, entry.replace = entry.replace, None
        if pending is None:
            return None
        self._release(pending.cl_ord_id, entry)
        return self.cancel_reject(pending.cl_ord_id, entry.cl_ord_id, entry, CxlRejResponseTo.REPLACE,
                                  CxlRejReason.TOO_LATE, text)

    def _release(self, cl_ord_id: str, entry: EntryOrder) -> None:
        if self.by_cl_ord_id.get(cl_ord_id) == entry.order.client_order_id:
            del self.by_cl_ord_id[cl_ord_id]

    def note_closing_fill(self, fill: OrderFilled) -> bool:
        """A fill of an order that closed the session's share on its behalf (an operator's
        flatten of the session's source): it counts in the session's positions like the
        session's own fills. False for a fill already counted."""
        if fill.fill_id in self._closing_fills:
            return False
        self._closing_fills[fill.fill_id] = None
        while len(self._closing_fills) > 10_000:
            del self._closing_fills[next(iter(self._closing_fills))]
        key = (fill.venue, fill.symbol)
        self.positions[key] = self.positions.get(key, _ZERO) + fill.signed_quantity
        return True

    # ---- events ------------------------------------------------------------------------

    def handle(self, event: OrderAccepted | OrderFilled | OrderCancelled | OrderRejected) -> list[Outcome]:
        """What ``event`` means for the session, in order: execution reports, cancel
        rejects, and a replacement order to send (a ``SubmitOrder``, after the venue
        confirmed the cancel of the order it replaces). Empty when it changes nothing
        (unknown order, repeated fill, late event)."""
        entry = self.orders.get(event.client_order_id)
        if entry is None:
            return []
        if isinstance(event, OrderAccepted):
            if entry.status is not OrderStatus.PENDING:
                return []
            entry.status = OrderStatus.PARTIALLY_FILLED if entry.cum else OrderStatus.ACCEPTED
            if not entry.replaced_reported:
                return [self._replaced(entry)]
            return [self._report(entry, ExecType.NEW)]
        if isinstance(event, OrderFilled):
            return self._on_fill(entry, event)
        if isinstance(event, OrderCancelled):
            return self._on_cancelled(entry, event)
        return self._on_rejected(entry, event)

    def _on_fill(self, entry: EntryOrder, event: OrderFilled) -> list[Outcome]:
        if event.fill_id in entry.fill_ids or entry.status is OrderStatus.REJECTED:
            return []
        out: list[Outcome] = []
        if not entry.replaced_reported:  # traded before its acknowledgement came
            out.append(self._replaced(entry))
        entry.fill_ids.add(event.fill_id)
        entry.cum += event.quantity
        entry.notional += event.quantity * event.price
        key = (entry.order.venue, entry.order.symbol)
        self.positions[key] = self.positions.get(key, _ZERO) + event.signed_quantity
        full = event.leaves_quantity == 0 or entry.cum >= entry.order_qty
        entry.status = OrderStatus.FILLED if full else OrderStatus.PARTIALLY_FILLED
        out.append(self._report(entry, ExecType.TRADE, last_qty=event.quantity,
                                last_px=event.price, exec_id=event.fill_id))
        if full and entry.replace is not None:
            rejected = self.abandon_replace(entry, "too late: the order filled")
            if rejected is not None:
                out.append(rejected)
        return out

    def _on_cancelled(self, entry: EntryOrder, event: OrderCancelled) -> list[Outcome]:
        if entry.status.is_done():
            return []
        pending = entry.replace
        if pending is None:
            entry.status = OrderStatus.CANCELLED
            cancel_id, entry.cancel_cl_ord_id = entry.cancel_cl_ord_id, None
            if not entry.replaced_reported:
                entry.replaced_reported = True  # the replace never showed; this ends it
                if entry.replaces is not None:
                    return [self._report(entry, ExecType.CANCELED, text=event.text,
                                         cl_ord_id=cancel_id or entry.cl_ord_id,
                                         orig_cl_ord_id=entry.replaces.cl_ord_id)]
            return [self._report(entry, ExecType.CANCELED, text=event.text, cl_ord_id=cancel_id,
                                 orig_cl_ord_id=entry.cl_ord_id if cancel_id else None)]
        # The cancel of a replace: the replacement goes now, for what is left to fill.
        entry.replace = None
        entry.status = OrderStatus.CANCELLED
        left = pending.order.quantity - entry.cum
        if left <= 0:
            self._release(pending.cl_ord_id, entry)
            return [
                self._report(entry, ExecType.CANCELED, text=event.text),
                self.cancel_reject(pending.cl_ord_id, entry.cl_ord_id, entry, CxlRejResponseTo.REPLACE,
                                   CxlRejReason.TOO_LATE,
                                   f"filled {entry.cum} before the cancel, not below the new quantity"),
            ]
        template = pending.order
        replacement = SubmitOrder(
            client_order_id=template.client_order_id, venue=template.venue, symbol=template.symbol,
            side=template.side, quantity=left, order_type=template.order_type,
            limit_price=template.limit_price, stop_price=template.stop_price,
            time_in_force=template.time_in_force, reduce_only=template.reduce_only,
            source=template.source, created_ns=template.created_ns)
        successor = EntryOrder(order=replacement, cl_ord_id=pending.cl_ord_id, cum=entry.cum,
                               notional=entry.notional, replaces=entry, base_cum=entry.cum,
                               replaced_reported=False)
        self.orders[replacement.client_order_id] = successor
        self.by_cl_ord_id[pending.cl_ord_id] = replacement.client_order_id
        return [replacement]

    def _on_rejected(self, entry: EntryOrder, event: OrderRejected) -> list[Outcome]:
        # Of the order itself while it is pending, else of a cancel (or replace) request.
        if entry.status is OrderStatus.PENDING:
            if entry.replaces is not None and not entry.replaced_reported:
                return self._replacement_refused(entry, event)
            return [self.refuse(entry, event.reason, event.text)]
        text = f"{event.reason}: {event.text}"
        if entry.replace is not None:
            pending, entry.replace = entry.replace, None
            self._release(pending.cl_ord_id, entry)
            return [self.cancel_reject(pending.cl_ord_id, entry.cl_ord_id, entry, CxlRejResponseTo.REPLACE,
                                       CxlRejReason.VENUE if event.reason is RejectReason.VENUE_DOWN
                                       else CxlRejReason.OTHER, text)]
        if entry.cancel_cl_ord_id is not None:
            cancel_id, entry.cancel_cl_ord_id = entry.cancel_cl_ord_id, None
            return [self.cancel_reject(cancel_id, entry.cl_ord_id, entry, CxlRejResponseTo.CANCEL,
                                       CxlRejReason.OTHER, text)]
        return []

    def _replacement_refused(self, entry: EntryOrder, event: OrderRejected) -> list[Outcome]:
        """The replacement was refused after the order it replaces was cancelled: the
        order is gone (Canceled under its old ClOrdID) and the replace is rejected."""
        original = entry.replaces
        assert original is not None
        entry.status = OrderStatus.REJECTED
        entry.replaced_reported = True
        self._release(entry.cl_ord_id, entry)
        text = f"{event.reason}: {event.text}"
        return [
            self._report(original, ExecType.CANCELED,
                         text=f"cancelled for a replace that was refused: {text}"),
            self.cancel_reject(entry.cl_ord_id, original.cl_ord_id, original, CxlRejResponseTo.REPLACE,
                               CxlRejReason.OTHER, text),
        ]

    def _replaced(self, entry: EntryOrder) -> ExecReport:
        entry.replaced_reported = True
        original = entry.replaces
        return self._report(entry, ExecType.REPLACED,
                            orig_cl_ord_id=original.cl_ord_id if original is not None else None)

    @staticmethod
    def _ord_status(entry: EntryOrder) -> str:
        if entry.replace is not None and entry.working:
            return OrdStatus.PENDING_REPLACE
        return _ORD_STATUS[entry.status]

    def _report(self, entry: EntryOrder, exec_type: str, *, last_qty: Decimal | None = None,
                last_px: Decimal | None = None, exec_id: str = "", text: str = "",
                cl_ord_id: str | None = None, orig_cl_ord_id: str | None = None,
                ord_status: str | None = None) -> ExecReport:
        return ExecReport(
            cl_ord_id=cl_ord_id or entry.cl_ord_id, order_id=entry.order.client_order_id,
            exec_type=exec_type, ord_status=ord_status or _ORD_STATUS[entry.status], cum_qty=entry.cum,
            leaves_qty=entry.leaves, avg_px=entry.avg_px, last_qty=last_qty, last_px=last_px,
            exec_id=exec_id, orig_cl_ord_id=orig_cl_ord_id, text=text, order_qty=entry.order_qty,
        )


Outcome = ExecReport | CancelReject | SubmitOrder
"""What ``SessionBook.handle`` asks of the gateway: a report or cancel reject to send to
the session, or a replacement order to send to the risk governor."""
