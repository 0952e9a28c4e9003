"""A silent ZeroMQ order channel takes no orders; late acknowledgements are flagged; an
order carries ``expire_ns`` and the venue refuses it when it arrives later. The ZeroMQ
connector against the simulated venue: market data direct, the order channel (tcp on
loopback) through a relay that can stall it (sockets open, no byte either way), so only
the ping/pong probe can tell."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.connectors.zmq import ZmqConfig, ZmqConnector
from messages import (
    ConnectorDown,
    ConnectorUp,
    OrderFilled,
    OrderRejected,
    RejectReason,
    SafetyEvent,
    Side,
    SubmitOrder,
    VenuePositions,
)
from messages import zmq_wire as wire
from supervision import SUPERVISION_TOPIC, Backoff, ChildExited, ChildSpec, Tree, registry
from tests.fault_proxy import FaultProxy
from tests.helpers import wait_for
from tests.recorder import Recorder
from venues.engine import EngineConfig, VenueEngine
from venues.zmq_venue import ZmqVenue

pytestmark = pytest.mark.timeout(120)

NAME = "zmq-stale"
TOPICS = (topics.ORDERS, topics.POSITIONS, topics.CONNECTORS, topics.SAFETY, SUPERVISION_TOPIC)
PING_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 0.5
OVERDUE_S = PING_INTERVAL_S + PROBE_TIMEOUT_S
SLACK_S = 0.5


@pytest.fixture
def engine() -> VenueEngine:
    engine = VenueEngine("zmqsim", EngineConfig(symbols={"AAPL": Decimal("190")},
                                                volatility_bps=Decimal(0), depth=Decimal(100)))
    engine.step()
    return engine


@pytest.fixture
def venue(engine: VenueEngine) -> Iterator[ZmqVenue]:
    front = ZmqVenue(engine, heartbeat_s=0.2)
    front.start()
    yield front
    front.stop()


@pytest.fixture
def proxy(venue: ZmqVenue) -> Iterator[FaultProxy]:
    with FaultProxy(int(venue.order_endpoint.rpartition(":")[2])) as relay:
        yield relay


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", TOPICS)


def of(kind: type, **expected: Any) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, kind) and all(getattr(m, k) == v for k, v in expected.items())


def send(message: Any) -> None:
    assert registry.tell(NAME, message), "the connector is not registered"


def order(coid: str) -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue=NAME, symbol="AAPL", side=Side.BUY,
                       quantity=Decimal(1), source="test")


def pace_until(moment: float) -> None:
    threading.Event().wait(max(0.0, moment - time.monotonic()))


def at_venue(engine: VenueEngine) -> set[str]:
    return ({f.client_order_id for f in engine.executions("zmq")}
            | {o.order.client_order_id for o in engine.open_orders("zmq")})


def late_flags(recorder: Recorder) -> dict[str, SafetyEvent]:
    return {e.detail.split()[1]: e for e in recorder.messages(SafetyEvent) if e.kind == "late_execution"}


@contextmanager
def trading(recorder: Recorder, venue: ZmqVenue, proxy: FaultProxy, tmp_path: Path,
            **overrides: Any) -> Iterator[Tree]:
    settings: dict[str, Any] = {
        "name": NAME, "symbols": (), "market_endpoint": venue.market_endpoint,
        "order_endpoint": f"tcp://127.0.0.1:{proxy.port}", "connect_timeout_s": 3.0,
        "stale_after_s": 30.0,  # the market data heartbeat flows: only pings find the stall
        "ping_interval_s": PING_INTERVAL_S, "probe_timeout_s": PROBE_TIMEOUT_S,
        "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5, **overrides,
    }  # fmt: skip
    spec = ChildSpec(name=NAME, actor_class=ZmqConnector, args=(ZmqConfig(**settings), tmp_path))
    tree = Tree([spec], name="connectors", intensity=50, period_s=10.0,
                backoff=Backoff(initial_s=0.05, maximum_s=0.2, jitter_s=0.01), poll_s=0.1)
    tree.start(timeout_s=10)
    try:
        recorder.wait_for(of(ConnectorUp, name=NAME), timeout_s=10)
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10)
        send(order("warm-up"))
        recorder.wait_for(of(OrderFilled, client_order_id="warm-up"))
        yield tree
    finally:
        tree.stop()


def test_a_stalled_order_channel_refuses_orders_then_is_reset_and_reconnected(
    proxy: FaultProxy, venue: ZmqVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """The order channel stalls for 12 s while an order is sent every second; pings go
    unanswered: orders sent once a ping is overdue are refused and never reach the venue;
    the session is declared dead (``stale_after_s + ping_interval_s``) and its connection
    reset; after the heal it reconnects, and an order sent before the stall that reached
    the venue late is flagged."""
    stall_s = 12.0
    # Without the venue's own guard (order_expiry_s, on by default): what reaches the venue
    # late executes, and must be flagged.
    with trading(recorder, venue, proxy, tmp_path, stale_after_s=4.0, late_ack_warn_s=2.0,
                 order_expiry_s=0.0):
        mark = recorder.count()
        sent: dict[str, float] = {}
        proxy.stall()
        stalled_at = time.monotonic()
        for i in range(int(stall_s)):
            pace_until(stalled_at + i + 0.2)
            coid = f"stalled-{i}"
            sent[coid] = time.monotonic() - stalled_at
            send(order(coid))
        pace_until(stalled_at + stall_s)
        down = recorder.wait_for(of(ConnectorDown, name=NAME), after=mark)
        assert "pings" in down.reason
        healed = recorder.count()
        proxy.heal()
        recorder.wait_for(of(ConnectorUp, name=NAME), timeout_s=30, after=healed)
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10, after=healed)
        send(order("after"))
        recorder.wait_for(of(OrderFilled, client_order_id="after"), timeout_s=10)

        venue_orders = at_venue(engine)
        for coid in venue_orders & set(sent):
            recorder.wait_for(of(OrderFilled, client_order_id=coid), timeout_s=10)
        flags = late_flags(recorder)
        refused = {m.client_order_id: m for m in recorder.messages(OrderRejected)}
        for coid, offset in sent.items():
            if offset > OVERDUE_S + SLACK_S:
                assert coid not in venue_orders, f"{coid} sent {offset:.1f}s into the stall reached the venue"
                assert coid in refused and refused[coid].reason is RejectReason.VENUE_DOWN, coid
            if coid in venue_orders:
                assert offset <= OVERDUE_S + SLACK_S
                assert coid in flags, f"{coid} reached the venue late without a warning"
        assert sum(offset > OVERDUE_S + SLACK_S for offset in sent.values()) >= 8
        assert "warm-up" not in flags and "after" not in flags
        assert proxy.client_ends.get(0) == "reset", proxy.client_ends
        assert recorder.messages(ChildExited) == []


def test_a_short_stall_refuses_new_orders_and_the_venue_refuses_the_expired_one(
    proxy: FaultProxy, venue: ZmqVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """The order channel stalls for 3.5 s: the order written just before carries
    ``expire_ns`` 1 s ahead and the venue refuses it on its late arrival; one sent once the
    ping is overdue is refused while the link is silent; afterwards orders go through."""
    with trading(recorder, venue, proxy, tmp_path, order_expiry_s=1.0, late_ack_warn_s=1.0):
        mark = recorder.count()
        proxy.stall()
        stalled_at = time.monotonic()
        send(order("expiring"))
        pace_until(stalled_at + OVERDUE_S + SLACK_S)
        send(order("overdue"))
        refused = recorder.wait_for(of(OrderRejected, client_order_id="overdue"), after=mark)
        assert proxy.stalled
        assert refused.reason is RejectReason.VENUE_DOWN and "stale" in refused.text
        pace_until(stalled_at + 3.5)
        proxy.heal()

        expired = recorder.wait_for(of(OrderRejected, client_order_id="expiring"), timeout_s=10)
        assert expired.reason is RejectReason.VENUE and "SIM-106" in expired.text
        assert venue.expired_on_arrival == ["expiring"]

        def goes_through() -> bool:
            coid = f"healed-{time.monotonic_ns()}"
            send(order(coid))
            answer = recorder.wait_for(lambda m: isinstance(m, (OrderFilled, OrderRejected))
                                       and m.client_order_id == coid)
            return isinstance(answer, OrderFilled)

        wait_for(goes_through, timeout_s=10, interval_s=0.2, what="orders fill once pongs return")
        assert "expiring" not in at_venue(engine) and "overdue" not in at_venue(engine)
        assert recorder.messages(ConnectorDown) == []
        assert late_flags(recorder) == {}  # the expired order never executed


def test_expire_ns_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expire_ns"):
        wire.NewOrderRequest(client_order_id="x", symbol="AAPL", side=Side.BUY,
                             quantity=Decimal(1), expire_ns=0)
