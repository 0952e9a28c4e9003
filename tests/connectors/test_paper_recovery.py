"""The paper connector's resync ends, once, the journal's open orders of its venue that
ended at the venue while their events were lost, and acknowledges the one the journal
never heard accepted; its positions report lists the venue's working orders."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors import topics
from actors.connectors.paper import PaperConfig, PaperConnector
from actors.journal import GOVERNOR_WRITER, KEEPER_WRITER, Journal
from messages import (
    ConnectorUp,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderType,
    RejectReason,
    Side,
    SubmitOrder,
    VenuePositions,
)
from supervision import NO_BACKOFF, ChildSpec, Tree
from tests.recorder import Recorder
from venues.engine import EngineConfig
from venues.paper import paper_venue, stop_paper_venues

NAME = "paper-r"
ACCOUNT = "PAPER-1"


@pytest.fixture(autouse=True)
def _forget_venues() -> Iterator[None]:
    yield
    stop_paper_venues()


def resting(coid: str) -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue=NAME, symbol="AAPL", side=Side.BUY, quantity=Decimal(1),
                       order_type=OrderType.LIMIT, limit_price=Decimal(100), source="test")


def test_resync_ends_what_ended_unseen_once(tmp_path: Path) -> None:
    engine_config = EngineConfig(symbols={"AAPL": Decimal(190)}, volatility_bps=Decimal(0))
    engine = paper_venue(NAME, engine_config, interval_s=0.05).engine
    for coid in ("cancelled-unseen", "still-working", "acceptance-lost"):
        engine.submit(ACCOUNT, resting(coid))
    engine.cancel(ACCOUNT, "cancelled-unseen")
    an_hour_ago = time.time_ns() - 3600 * 10**9
    with Journal(tmp_path / "journal.sqlite3", writer=GOVERNOR_WRITER) as journal:  # as the governor
        for coid in ("cancelled-unseen", "still-working", "acceptance-lost", "never-arrived"):
            journal.record_order(resting(coid), an_hour_ago)
    with Journal(tmp_path / "journal.sqlite3", writer=KEEPER_WRITER) as journal:    # as the keeper
        for coid in ("cancelled-unseen", "still-working"):
            journal.record_order_event(OrderAccepted(client_order_id=coid, venue=NAME, symbol="AAPL"))

    recorder = Recorder.spawn("recorder", [topics.ORDERS, topics.POSITIONS, topics.CONNECTORS])
    config = PaperConfig(name=NAME, kind="paper", symbols=("AAPL",), persist=False, engine=engine_config)
    tree = Tree([ChildSpec(NAME, PaperConnector, args=(config, tmp_path))], backoff=NO_BACKOFF,
                name="connectors-paper-r")
    tree.start(timeout_s=5)
    try:
        recorder.wait_for(lambda m: isinstance(m, ConnectorUp))
        report = recorder.wait_for(lambda m: isinstance(m, VenuePositions))
        assert report.open_orders == ("acceptance-lost", "still-working")
        events = [m for m in recorder.messages()
                  if isinstance(m, (OrderAccepted, OrderCancelled, OrderRejected))]
        by_order = {(type(m).__name__, m.client_order_id) for m in events}
        assert by_order == {("OrderCancelled", "cancelled-unseen"), ("OrderAccepted", "acceptance-lost"),
                            ("OrderRejected", "never-arrived")}
        assert len(events) == 3
        [never] = [m for m in events if isinstance(m, OrderRejected)]
        assert never.reason is RejectReason.VENUE and "never reached" in never.text
    finally:
        tree.stop()
