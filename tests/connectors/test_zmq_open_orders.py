"""The ZeroMQ connector lists the venue's working orders with every positions report (the
venue's open-orders answer, asked just before the positions), over real ZeroMQ sockets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from actors.journal import GOVERNOR_WRITER, KEEPER_WRITER, Journal
from messages import (
    ConnectorUp,
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
    make_config,
    order,
    start_tree,
    tell,
    tree,
    venue,
)
from venues.engine import VenueEngine
from venues.zmq_venue import ZmqVenue


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


def test_resync_asks_about_the_journal_orders_the_venue_no_longer_lists(
        venue: ZmqVenue, engine: VenueEngine, inbox: Inbox, tmp_path: Path) -> None:  # noqa: F811
    """An order the journal holds acknowledged that was cancelled at the venue while the
    connector was away is asked about at the resync and ends cancelled, once."""
    for coid in ("gone", "alive"):
        engine.submit(venue.account, order(coid, "1", order_type=OrderType.LIMIT, limit_price=Decimal(1)))
    engine.cancel(venue.account, "gone")
    with Journal(tmp_path / "journal.sqlite3", writer=GOVERNOR_WRITER) as journal:  # as the governor
        for coid in ("gone", "alive"):
            journal.record_order(order(coid, "1", order_type=OrderType.LIMIT, limit_price=Decimal(1)))
    with Journal(tmp_path / "journal.sqlite3", writer=KEEPER_WRITER) as journal:    # as the keeper
        for coid in ("gone", "alive"):
            journal.record_order_event(OrderAccepted(client_order_id=coid, venue=NAME, symbol="AAPL"))
    root = start_tree(make_config(venue), tmp_path)
    try:
        inbox.wait(ConnectorUp)
        cancelled = inbox.wait(OrderCancelled, lambda m: m.client_order_id == "gone")
        assert cancelled.venue == NAME
        report = inbox.wait(VenuePositions, lambda m: m.request_id == "")
        assert report.open_orders == ("alive",)
        tell(RequestPositions(venue=NAME, request_id="after"))
        inbox.wait(VenuePositions, lambda m: m.request_id == "after")
        assert [m.client_order_id for m in inbox.all(OrderCancelled)] == ["gone"]
    finally:
        root.stop()
