"""An order the ZeroMQ venue ends because its time in force ran out reaches tradeguard as
expired, over real sockets (the venue's ``cancelled`` event with ``expired: true``)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from messages import OrderAccepted, OrderCancelled, OrderType, TimeInForce
from supervision import Tree
from tests.connectors.test_zmq_connector import Inbox, accepted_for, engine, inbox, order, tell, tree, venue
from venues.engine import VenueEngine
from venues.zmq_venue import ZmqVenue

__all__ = ["engine", "inbox", "tree", "venue"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(60)


def test_an_order_ended_by_its_time_in_force_arrives_expired(
    tree: Tree, engine: VenueEngine, venue: ZmqVenue, inbox: Inbox
) -> None:
    tell(order("gtd-1", "1", order_type=OrderType.LIMIT, limit_price=Decimal(1),
               time_in_force=TimeInForce.GTC))
    inbox.wait(OrderAccepted, accepted_for("gtd-1"))
    tell(order("cxl-1", "1", order_type=OrderType.LIMIT, limit_price=Decimal(1)))
    inbox.wait(OrderAccepted, accepted_for("cxl-1"))
    # The engine has no session end: the test makes the venue report the expiry, as its
    # engine would (an OrderCancelled flagged expired), and an ordinary cancel beside it.
    venue._on_order_event(venue.account, OrderCancelled(
        client_order_id="gtd-1", venue=engine.venue, symbol="AAPL", text="good-till-date reached",
        expired=True))
    engine.cancel(venue.account, "cxl-1")
    expired = inbox.wait(OrderCancelled, lambda m: m.client_order_id == "gtd-1")
    cancelled = inbox.wait(OrderCancelled, lambda m: m.client_order_id == "cxl-1")
    assert (expired.expired, expired.text) == (True, "good-till-date reached")
    assert cancelled.expired is False
