"""The ZeroMQ connector lists the venue's working orders with every positions report (the
venue's open-orders answer, asked just before the positions), over real ZeroMQ sockets."""

from __future__ import annotations

from decimal import Decimal

from messages import (
    OrderAccepted,
    OrderCancelled,
    OrderType,
    RequestPositions,
    VenuePositions,
)
from supervision import Tree
from tests.connectors.test_zmq_connector import (  # noqa: F401 - fixtures
    NAME,
    Inbox,
    accepted_for,
    engine,
    inbox,
    order,
    tell,
    tree,
    venue,
)
from venues.engine import VenueEngine


def test_positions_reports_list_the_working_orders(
        tree: Tree, engine: VenueEngine, inbox: Inbox) -> None:  # noqa: F811 - fixtures imported above
    resync = inbox.wait(VenuePositions, lambda m: m.request_id == "")
    assert resync.open_orders == ()                    # the resync's report lists them too
    for coid in ("rest-a", "rest-b"):
        tell(order(coid, "1", order_type=OrderType.LIMIT, limit_price=Decimal(1)))
        inbox.wait(OrderAccepted, accepted_for(coid))
    tell(RequestPositions(venue=NAME, request_id="r-1"))
    report = inbox.wait(VenuePositions, lambda m: m.request_id == "r-1")
    assert report.open_orders == ("rest-a", "rest-b")
    # Asking for the list acknowledges nothing again.
    assert len([m for m in inbox.all(OrderAccepted) if m.client_order_id == "rest-a"]) == 1

    engine.cancel("zmq", "rest-a")                     # ended at the venue
    inbox.wait(OrderCancelled, lambda m: m.client_order_id == "rest-a")
    tell(RequestPositions(venue=NAME, request_id="r-2"))
    assert inbox.wait(VenuePositions, lambda m: m.request_id == "r-2").open_orders == ("rest-b",)
