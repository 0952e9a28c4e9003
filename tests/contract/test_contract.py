"""The connector contract, run against every connector and its real venue on loopback.

Each test starts the connector under a connectors supervisor (as the service does) and
observes what it publishes on the bus; venue-side truth comes from the venue's engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pykka
import pytest

from actors import topics
from actors.connectors.plugins import connector_class
from actors.failsafe import Failsafe, FailsafeConfig
from actors.risk_governor import EnterFailsafe
from messages import (
    CancelAll,
    CancelAllDone,
    CancelOrder,
    ConnectorDown,
    ConnectorUp,
    FailsafeReport,
    FlattenRequested,
    HealthReport,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteBatch,
    RejectReason,
    RequestPositions,
    Side,
    SubmitOrder,
    VenuePositions,
)
from supervision import Backoff, ChildSpec, Supervisor, Tree, registry
from tests.contract.kits import KITS, SYMBOLS, VENUE_NAME, Kit
from tests.helpers import wait_for
from tests.recorder import Recorder

BACKOFF = Backoff(initial_s=0.05, maximum_s=0.3, jitter_s=0.01, reset_after_s=5.0)
_ids = iter(range(1, 1_000_000))


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    venue_kit = KITS[request.param](tmp_path)
    venue_kit.start_venue()
    try:
        yield venue_kit
    finally:
        # Sessions end before their venue does, as in production.
        pykka.ActorRegistry.stop_all(block=True, timeout=15)
        venue_kit.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", [topics.MARKET, topics.ORDERS, topics.POSITIONS,
                                       topics.HEALTH, topics.CONNECTORS, topics.FAILSAFE])


def start(kit: Kit, *extra: ChildSpec) -> Tree:
    config = kit.config()
    spec = ChildSpec(name=config.name, actor_class=connector_class(kit.kind),
                     args=(config, kit.state_dir), start_timeout_s=15.0)
    connectors = ChildSpec(name="connectors", actor_class=Supervisor, args=([spec],),
                           kwargs={"intensity": 20, "period_s": 10.0, "backoff": BACKOFF})
    tree = Tree([*extra, connectors], intensity=5, period_s=10.0, backoff=BACKOFF)
    tree.start(timeout_s=20)
    return tree


def connected(recorder: Recorder, generation: int = 0, after: int = 0) -> ConnectorUp:
    up: ConnectorUp = recorder.wait_for(
        lambda m: isinstance(m, ConnectorUp) and m.name == VENUE_NAME and m.generation >= generation,
        timeout_s=15, after=after)
    return up


def order(side: Side = Side.BUY, quantity: str = "10", **fields: object) -> SubmitOrder:
    return SubmitOrder(client_order_id=f"c{next(_ids)}", venue=VENUE_NAME, symbol="AAPL", side=side,
                       quantity=Decimal(quantity), source="contract", **fields)  # type: ignore[arg-type]


def venue_position(kit: Kit, symbol: str = "AAPL") -> Decimal:
    return sum((p.quantity for p in kit.engine.positions(kit.account) if p.symbol == symbol), Decimal(0))


def fills_of(recorder: Recorder, client_order_id: str) -> list[OrderFilled]:
    return [m for m in recorder.messages(OrderFilled) if m.client_order_id == client_order_id]


def test_connect_and_subscribe(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    batch = recorder.wait_for(lambda m: isinstance(m, QuoteBatch) and m.quotes, timeout_s=10)
    assert batch.venue == VENUE_NAME
    assert {q.symbol for q in batch.quotes} <= set(SYMBOLS)
    assert all(q.ask >= q.bid > 0 for q in batch.quotes)


def test_submit_and_fill(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    recorder.wait_for(lambda m: isinstance(m, QuoteBatch), timeout_s=10)
    buy = order(quantity="4")
    registry.tell(VENUE_NAME, buy)
    fill = recorder.wait_for(lambda m: isinstance(m, OrderFilled) and m.client_order_id == buy.client_order_id
                             and m.leaves_quantity == 0, timeout_s=10)
    assert fill.venue == VENUE_NAME and fill.side is Side.BUY and fill.price > 0
    assert sum(f.quantity for f in fills_of(recorder, buy.client_order_id)) == Decimal(4)
    wait_for(lambda: venue_position(kit) == Decimal(4), what="venue position +4")


def test_partial_fill(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    recorder.wait_for(lambda m: isinstance(m, QuoteBatch), timeout_s=10)
    buy = order(quantity="12")  # displayed depth is 5: at least three executions
    registry.tell(VENUE_NAME, buy)
    recorder.wait_for(lambda m: isinstance(m, OrderFilled) and m.client_order_id == buy.client_order_id
                      and m.leaves_quantity == 0, timeout_s=10)
    fills = fills_of(recorder, buy.client_order_id)
    assert len(fills) >= 3
    assert any(f.is_partial for f in fills)
    assert sum(f.quantity for f in fills) == Decimal(12)
    assert len({f.fill_id for f in fills}) == len(fills)


def test_cancel(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    resting = order(order_type=OrderType.LIMIT, limit_price=Decimal("150"))
    registry.tell(VENUE_NAME, resting)
    wait_for(lambda: kit.engine.open_orders(kit.account), what="order working at the venue")
    registry.tell(VENUE_NAME, CancelOrder(client_order_id=resting.client_order_id, venue=VENUE_NAME))
    recorder.wait_for(lambda m: isinstance(m, OrderCancelled)
                      and m.client_order_id == resting.client_order_id, timeout_s=10)
    assert kit.engine.open_orders(kit.account) == []


def test_cancel_all(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    for price in ("150", "151", "152"):
        registry.tell(VENUE_NAME, order(order_type=OrderType.LIMIT, limit_price=Decimal(price)))
    wait_for(lambda: len(kit.engine.open_orders(kit.account)) == 3, what="three orders working")
    registry.tell(VENUE_NAME, CancelAll(venue=VENUE_NAME, request_id="mass-1"))
    recorder.wait_for(lambda m: isinstance(m, CancelAllDone) and m.request_id == "mass-1", timeout_s=10)
    wait_for(lambda: kit.engine.open_orders(kit.account) == [], what="no order working")


def test_venue_positions(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    recorder.wait_for(lambda m: isinstance(m, QuoteBatch), timeout_s=10)
    sell = order(Side.SELL, "3")
    registry.tell(VENUE_NAME, sell)
    recorder.wait_for(lambda m: isinstance(m, OrderFilled) and m.client_order_id == sell.client_order_id
                      and m.leaves_quantity == 0, timeout_s=10)
    registry.tell(VENUE_NAME, RequestPositions(venue=VENUE_NAME, request_id="pos-1"))
    report = recorder.wait_for(lambda m: isinstance(m, VenuePositions) and m.request_id == "pos-1",
                               timeout_s=10)
    reported = {p.symbol: p.quantity for p in report.positions if p.quantity != 0}
    assert reported == {p.symbol: p.quantity for p in kit.engine.positions(kit.account)}
    assert reported["AAPL"] == Decimal(-3)


def test_health(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    report = recorder.wait_for(lambda m: isinstance(m, HealthReport) and m.name == VENUE_NAME
                               and m.connected and m.messages_in > 0, timeout_s=10)
    assert report.malformed == 0


def test_reconnect_after_the_venue_restarts(kit: Kit, recorder: Recorder) -> None:
    start(kit)
    connected(recorder)
    recorder.wait_for(lambda m: isinstance(m, QuoteBatch), timeout_s=10)
    buy = order(quantity="2")
    registry.tell(VENUE_NAME, buy)
    recorder.wait_for(lambda m: isinstance(m, OrderFilled) and m.client_order_id == buy.client_order_id
                      and m.leaves_quantity == 0, timeout_s=10)
    mark = recorder.count()
    kit.stop_venue()
    recorder.wait_for(lambda m: isinstance(m, ConnectorDown) and m.name == VENUE_NAME, timeout_s=10,
                      after=mark)  # the connector notices the venue is gone
    recorder.wait_for(lambda m: isinstance(m, HealthReport) and m.name == VENUE_NAME
                      and not m.connected, timeout_s=10, after=mark)
    kit.restart_venue()
    connected(recorder, after=mark)
    assert registry.generation(VENUE_NAME) == 0  # reconnected by the connector, not restarted
    downs = [m for m in recorder.messages(ConnectorDown) if m.name == VENUE_NAME]
    assert len(downs) == 1  # one outage, one incident
    registry.tell(VENUE_NAME, RequestPositions(venue=VENUE_NAME, request_id="after"))
    report = recorder.wait_for(lambda m: isinstance(m, VenuePositions) and m.request_id == "after",
                               timeout_s=10)
    assert {p.symbol: p.quantity for p in report.positions if p.quantity} == {"AAPL": Decimal(2)}
    after = recorder.wait_for(lambda m: isinstance(m, QuoteBatch), timeout_s=10, after=mark)
    assert after.venue == VENUE_NAME


def test_an_unreachable_venue_leaves_the_connector_running_and_disconnected(
        kit: Kit, recorder: Recorder) -> None:
    kit.stop_venue()
    start(kit)  # returns without waiting for the venue
    down = recorder.wait_for(lambda m: isinstance(m, ConnectorDown) and m.name == VENUE_NAME, timeout_s=10)
    assert down.reason
    recorder.wait_for(lambda m: isinstance(m, HealthReport) and m.name == VENUE_NAME and not m.connected,
                      timeout_s=10)
    refused = order()
    registry.tell(VENUE_NAME, refused)
    rejected = recorder.wait_for(lambda m: isinstance(m, OrderRejected)
                                 and m.client_order_id == refused.client_order_id, timeout_s=10)
    assert rejected.reason is RejectReason.VENUE_DOWN
    mark = recorder.count()
    kit.restart_venue()
    connected(recorder, after=mark)
    recorder.wait_for(lambda m: isinstance(m, QuoteBatch), timeout_s=10, after=mark)
    assert registry.generation(VENUE_NAME) == 0


def test_failsafe_flattens_through_the_connector(kit: Kit, recorder: Recorder, tmp_path: Path) -> None:
    failsafe = ChildSpec(name="failsafe", actor_class=Failsafe,
                         args=(FailsafeConfig(round_timeout_s=2.0), tmp_path, (VENUE_NAME,)))
    start(kit, failsafe)
    connected(recorder)
    recorder.wait_for(lambda m: isinstance(m, QuoteBatch), timeout_s=10)
    for side, symbol, qty in ((Side.BUY, "AAPL", "7"), (Side.SELL, "MSFT", "4")):
        new = SubmitOrder(client_order_id=f"c{next(_ids)}", venue=VENUE_NAME, symbol=symbol, side=side,
                          quantity=Decimal(qty), source="contract")
        registry.tell(VENUE_NAME, new)
    registry.tell(VENUE_NAME, order(order_type=OrderType.LIMIT, limit_price=Decimal("150")))
    wait_for(lambda: len(kit.engine.positions(kit.account)) == 2 and kit.engine.open_orders(kit.account),
             what="two positions and a resting order at the venue")
    registry.tell("failsafe", FlattenRequested(reason="contract test", source="test"))
    report = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=20)
    assert report.flat, report.detail
    assert kit.engine.positions(kit.account) == []
    assert kit.engine.open_orders(kit.account) == []
    assert EnterFailsafe  # the failsafe tells the (absent) governor: a dead letter, not an error
