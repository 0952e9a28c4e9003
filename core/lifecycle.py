"""The order lifecycle: one state machine from the venue's events.

``pending -> accepted -> partially filled -> filled / cancelled / rejected / expired``.
The inputs are the venue's events (``OrderAccepted``, ``OrderFilled`` with what it leaves,
``OrderCancelled``, ``OrderRejected``, and an expiry: an ``OrderCancelled`` flagged
``expired``); ``STEPS`` is the whole table. The
terminal states are ``messages.DONE_STATES`` (``OrderStatus.is_done()``): once there an
order changes no more, and a later event is reported as late (a fill racing a cancel is
still a fill for the position, but the order stays cancelled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from messages import DONE_STATES, OrderAccepted, OrderCancelled, OrderFilled, OrderRejected, OrderStatus


class VenueEvent(StrEnum):
    """What the venue said about an order."""

    ACCEPTED = "accepted"
    PARTIAL_FILL = "partial_fill"
    """A fill that leaves some quantity working."""
    FILL = "fill"
    """A fill that leaves nothing."""
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    """Its time in force ended at the venue."""


S = OrderStatus
E = VenueEvent

STEPS: Mapping[OrderStatus, Mapping[VenueEvent, OrderStatus]] = {
    S.PENDING: {E.ACCEPTED: S.ACCEPTED, E.PARTIAL_FILL: S.PARTIALLY_FILLED, E.FILL: S.FILLED,
                E.CANCELLED: S.CANCELLED, E.REJECTED: S.REJECTED, E.EXPIRED: S.EXPIRED},
    S.ACCEPTED: {E.ACCEPTED: S.ACCEPTED, E.PARTIAL_FILL: S.PARTIALLY_FILLED, E.FILL: S.FILLED,
                 E.CANCELLED: S.CANCELLED, E.REJECTED: S.REJECTED, E.EXPIRED: S.EXPIRED},
    S.PARTIALLY_FILLED: {E.ACCEPTED: S.PARTIALLY_FILLED, E.PARTIAL_FILL: S.PARTIALLY_FILLED,
                         E.FILL: S.FILLED, E.CANCELLED: S.CANCELLED, E.EXPIRED: S.EXPIRED},
    S.FILLED: {},
    S.CANCELLED: {},
    S.REJECTED: {},
    S.EXPIRED: {},
}
"""Every step: ``STEPS[state][event]`` is the state after ``event``; an event missing from
a state's row changes nothing (late or out of place: a reject after a partial fill, any
event after a terminal state)."""

TERMINAL: frozenset[OrderStatus] = DONE_STATES
"""The states an order never leaves."""


def event_of(message: OrderAccepted | OrderFilled | OrderCancelled | OrderRejected) -> VenueEvent:
    """The lifecycle input a venue message is."""
    if isinstance(message, OrderFilled):
        return E.FILL if message.leaves_quantity <= 0 else E.PARTIAL_FILL
    if isinstance(message, OrderAccepted):
        return E.ACCEPTED
    if isinstance(message, OrderCancelled):
        return E.EXPIRED if message.expired else E.CANCELLED
    return E.REJECTED


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one event."""

    before: OrderStatus
    after: OrderStatus
    late: bool
    """True when the event changed nothing because the order was already terminal or the
    event does not apply in its state."""

    @property
    def ended(self) -> bool:
        """True when this event took the order to a terminal state."""
        return self.after.is_done() and not self.before.is_done()


def step(status: OrderStatus, event: VenueEvent) -> Step:
    """Apply ``event`` to an order in ``status``."""
    after = STEPS[status].get(event)
    if after is None:
        return Step(status, status, late=True)
    return Step(status, after, late=False)


class OrderLifecycle:
    """One order's state, driven by the venue's events."""

    __slots__ = ("status",)

    def __init__(self, status: OrderStatus = OrderStatus.PENDING) -> None:
        self.status = status

    def apply(self, event: VenueEvent) -> Step:
        """Apply ``event``; the step taken."""
        taken = step(self.status, event)
        self.status = taken.after
        return taken

    def is_done(self) -> bool:
        """True once the order reached a terminal state."""
        return self.status in TERMINAL


class WorkingOrders:
    """The orders known to work at each venue: sent (pending until the venue answers) or
    reported working by the venue (an acknowledgement of an order we did not see sent: a
    resynchronisation after a reconnect, or an order placed elsewhere). An order leaves
    once the venue reports it done (filled, cancelled, rejected, expired)."""

    __slots__ = ("_orders",)

    def __init__(self) -> None:
        self._orders: dict[str, dict[str, OrderLifecycle]] = {}

    def sent(self, venue: str, client_order_id: str) -> None:
        """An order was passed to ``venue``'s connector."""
        self._orders.setdefault(venue, {}).setdefault(client_order_id, OrderLifecycle())

    def apply(self, message: OrderAccepted | OrderFilled | OrderCancelled | OrderRejected) -> Step | None:
        """A venue event; the step it took, None for an order not known (and not reported
        working by this event)."""
        orders = self._orders.setdefault(message.venue, {})
        lifecycle = orders.get(message.client_order_id)
        if lifecycle is None:
            if not isinstance(message, OrderAccepted):
                return None
            lifecycle = orders[message.client_order_id] = OrderLifecycle()
        taken = lifecycle.apply(event_of(message))
        if lifecycle.is_done():
            del orders[message.client_order_id]
        return taken

    def working(self, venue: str) -> frozenset[str]:
        """Client order ids working at ``venue``."""
        return frozenset(self._orders.get(venue, ()))
