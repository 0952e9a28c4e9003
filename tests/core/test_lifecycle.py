"""The order lifecycle: one table from the venue's events to one terminal state."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.lifecycle import STEPS, TERMINAL, OrderLifecycle, VenueEvent, event_of, step
from messages import (
    DONE_STATES,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    RejectReason,
    Side,
)

E, S = VenueEvent, OrderStatus


def test_terminal_states_are_the_done_states_and_take_no_step() -> None:
    assert TERMINAL == DONE_STATES == {S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED}
    assert set(STEPS) == set(OrderStatus)
    for status in TERMINAL:
        assert status.is_done() and not STEPS[status]
        for event in VenueEvent:
            assert step(status, event).late


@pytest.mark.parametrize(("events", "final"), [
    ([E.ACCEPTED, E.FILL], S.FILLED),
    ([E.ACCEPTED, E.PARTIAL_FILL, E.PARTIAL_FILL, E.FILL], S.FILLED),
    ([E.FILL], S.FILLED),                                  # filled before the ack arrived
    ([E.ACCEPTED, E.PARTIAL_FILL, E.CANCELLED], S.CANCELLED),
    ([E.REJECTED], S.REJECTED),
    ([E.ACCEPTED, E.EXPIRED], S.EXPIRED),
    ([E.CANCELLED, E.ACCEPTED], S.CANCELLED),              # a late ack does not undo a cancel
    ([E.REJECTED, E.FILL], S.REJECTED),
    ([E.ACCEPTED, E.PARTIAL_FILL, E.REJECTED, E.FILL], S.FILLED),  # a reject after a fill is out of place
    ([E.PARTIAL_FILL, E.ACCEPTED], S.PARTIALLY_FILLED),
])
def test_paths_through_the_lifecycle(events: list[VenueEvent], final: OrderStatus) -> None:
    order = OrderLifecycle()
    ended = [order.apply(event).ended for event in events]
    assert order.status is final
    assert ended.count(True) == (1 if final.is_done() else 0)   # exactly one terminal step
    assert order.is_done() is final.is_done()


def test_venue_messages_map_to_events() -> None:
    fill = OrderFilled(client_order_id="o", venue="v", fill_id="f", symbol="S", side=Side.BUY,
                       quantity=Decimal(1), price=Decimal(1), leaves_quantity=Decimal(2))
    assert event_of(fill) is E.PARTIAL_FILL
    assert event_of(OrderFilled(client_order_id="o", venue="v", fill_id="f", symbol="S", side=Side.BUY,
                                quantity=Decimal(1), price=Decimal(1), leaves_quantity=Decimal(0))) is E.FILL
    assert event_of(OrderAccepted(client_order_id="o", venue="v", symbol="S")) is E.ACCEPTED
    assert event_of(OrderCancelled(client_order_id="o", venue="v")) is E.CANCELLED
    assert event_of(OrderRejected(client_order_id="o", venue="v", reason=RejectReason.VENUE)) is E.REJECTED
