"""The ZeroMQ connector actor, supervised, against a real ZmqVenue over loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pykka
import pytest

from actors import topics
from actors.connectors.zmq import ZmqConfig, ZmqConnector
from messages import (
    CancelAll,
    CancelAllDone,
    CancelOrder,
    ConnectorDown,
    ConnectorUp,
    HealthReport,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteBatch,
    RejectReason,
    RequestPositions,
    SafetyEvent,
    Side,
    SubmitOrder,
    VenuePositions,
)
from supervision import Backoff, ChildSpec, Tree, bus, registry
from tests.helpers import wait_for
from venues.engine import EngineConfig, VenueEngine
from venues.zmq_venue import ZmqVenue

T = TypeVar("T")

NAME = "zmq1"
TOPICS = (
    topics.MARKET, topics.ORDERS, topics.POSITIONS, topics.SAFETY, topics.CONNECTORS,
    topics.HEALTH,
)


class Inbox:
    """Everything the recorder actor received, readable from the test thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Any] = []

    def add(self, message: Any) -> None:
        with self._lock:
            self._messages.append(message)

    def all(self, kind: type[T], where: Callable[[T], bool] = lambda _m: True) -> list[T]:
        with self._lock:
            return [m for m in self._messages if isinstance(m, kind) and where(m)]

    def wait(
        self, kind: type[T], where: Callable[[T], bool] = lambda _m: True, timeout_s: float = 5.0
    ) -> T:
        found = wait_for(lambda: self.all(kind, where), timeout_s, what=kind.__name__)
        assert isinstance(found, list)
        first: T = found[0]
        return first

    def mark(self) -> int:
        """Position after the messages received so far (see ``since``)."""
        with self._lock:
            return len(self._messages)

    def since(self, mark: int, kind: type[T]) -> list[T]:
        with self._lock:
            return [m for m in self._messages[mark:] if isinstance(m, kind)]


class Recorder(pykka.ThreadingActor):
    """A bus subscriber that keeps every message it is told."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.add(message)


@pytest.fixture
def inbox() -> Inbox:
    box = Inbox()
    ref = Recorder.start(box)
    registry.register("recorder", ref)
    for topic in TOPICS:
        bus.subscribe(topic, "recorder")
    return box


@pytest.fixture
def engine() -> VenueEngine:
    return VenueEngine("sim", EngineConfig(depth=Decimal(100)))


@pytest.fixture
def venue(engine: VenueEngine) -> Iterator[ZmqVenue]:
    front = ZmqVenue(engine, heartbeat_s=0.1)
    front.start()
    yield front
    front.stop()


def make_config(venue: ZmqVenue, **overrides: Any) -> ZmqConfig:
    settings: dict[str, Any] = {
        "name": NAME,
        "symbols": ("AAPL", "MSFT"),
        "market_endpoint": venue.market_endpoint,
        "order_endpoint": venue.order_endpoint,
        "connect_timeout_s": 1.0,
        "health_interval_s": 0.1,
        "stale_after_s": 0.5,
        "ping_interval_s": 0.2,
        "reorder_window": 4,
        "reorder_timeout_s": 5.0,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.5,
        **overrides,
    }
    return ZmqConfig(**settings)


def make_unreachable_config(tmp_path: Path, **overrides: Any) -> ZmqConfig:
    """Endpoints nobody listens on (ipc paths in the test's directory)."""
    endpoints = {"market_endpoint": f"ipc://{tmp_path}/none-m", "order_endpoint": f"ipc://{tmp_path}/none-o"}
    return ZmqConfig(**{"name": NAME, "symbols": ("AAPL",), "connect_timeout_s": 0.3,
                        "health_interval_s": 0.1, "reconnect_initial_s": 0.05,
                        "reconnect_max_s": 0.2, **endpoints, **overrides})


def pollers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"zmq-connector-{NAME}"]


def start_tree(config: ZmqConfig, state_dir: Path) -> Tree:
    spec = ChildSpec(name=NAME, actor_class=ZmqConnector, args=(config, state_dir))
    tree = Tree(
        [spec], name="connectors", intensity=100, period_s=10.0,
        backoff=Backoff(initial_s=0.05, maximum_s=0.2, jitter_s=0.01), poll_s=0.1,
    )
    tree.start(timeout_s=10)
    return tree


@pytest.fixture
def tree(venue: ZmqVenue, inbox: Inbox, tmp_path: Path) -> Iterator[Tree]:
    root = start_tree(make_config(venue), tmp_path)
    inbox.wait(ConnectorUp)
    yield root
    root.stop()


def order(coid: str, quantity: str, side: Side = Side.BUY, **extra: Any) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=coid, venue=NAME, symbol="AAPL", side=side, quantity=Decimal(quantity),
        source="test", **extra,
    )


def tell(message: Any) -> None:
    assert registry.tell(NAME, message), f"{NAME} is not running"


def step_until(engine: VenueEngine, condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Step the engine until ``condition`` holds (each step publishes one quote a symbol)."""

    def stepped() -> object:
        engine.step()
        return condition()

    wait_for(stepped, timeout_s, interval_s=0.02, what="condition after engine steps")


def prime(engine: VenueEngine, inbox: Inbox, symbols: tuple[str, ...] = ("AAPL",)) -> None:
    """Step until quotes flow, then wait (without stepping) for the last one to arrive."""
    step_until(engine, lambda: all(quotes_of(inbox, s) for s in symbols))

    def caught_up() -> bool:
        for symbol in symbols:
            quote = engine.quote(symbol)
            if quote is None or quotes_of(inbox, symbol)[-1:] != [quote.seq]:
                return False
        return True

    wait_for(caught_up, what="last published quote received")


def quotes_of(inbox: Inbox, symbol: str) -> list[int]:
    return [q.seq for b in inbox.all(QuoteBatch) for q in b.quotes if q.symbol == symbol]


def raw_quote(venue: ZmqVenue, seq: int, **overrides: Any) -> list[bytes]:
    payload: dict[str, Any] = {
        "type": "quote", "session": venue.session, "seq": seq, "symbol": "AAPL",
        "bid": "189.99", "ask": "190.01", "bid_size": "100", "ask_size": "100",
        "ts_ns": time.time_ns(), **overrides,
    }
    return [b"AAPL", json.dumps(payload).encode()]


def latest_health(inbox: Inbox) -> HealthReport:
    """The connector's last published health report (an empty one before the first)."""
    reports = inbox.all(HealthReport, lambda h: h.name == NAME)
    return reports[-1] if reports else HealthReport(name=NAME, connected=False)


# ---- market data ------------------------------------------------------------------------------


def test_subscribed_quotes_arrive_as_batches(tree: Tree, engine: VenueEngine, inbox: Inbox) -> None:
    prime(engine, inbox, ("AAPL", "MSFT"))
    for _ in range(30):
        engine.step()
    last = {symbol: (engine.quote(symbol) or pytest.fail("no quote")).seq for symbol in ("AAPL", "MSFT")}
    wait_for(
        lambda: all(quotes_of(inbox, s)[-1:] == [seq] for s, seq in last.items()),
        what="every quote of the burst",
    )
    batches = inbox.all(QuoteBatch)
    assert len(batches) < sum(len(b.quotes) for b in batches)  # several quotes per message
    assert all(b.venue == NAME and all(q.venue == NAME for q in b.quotes) for b in batches)
    seqs = quotes_of(inbox, "AAPL")
    assert len(seqs) >= 30
    assert seqs == list(range(seqs[0], last["AAPL"] + 1))  # in order, none lost
    assert quotes_of(inbox, "EURUSD") == []  # not subscribed


def test_garbage_is_counted_and_the_connector_keeps_running(
    tree: Tree, venue: ZmqVenue, engine: VenueEngine, inbox: Inbox
) -> None:
    prime(engine, inbox)
    garbage = [
        [b"AAPL", b"{not json"],
        [b"AAPL"],
        [b"AAPL", b"{}", b"extra"],
        raw_quote(venue, 10_000, extra_field=1),
        raw_quote(venue, 10_000, bid="NaN"),
        raw_quote(venue, 10_000, ask_size="-5"),
        raw_quote(venue, 10_000, symbol="MSFT"),  # topic and symbol disagree
        [b"AAPL", b"\xff\xfe"],
    ]
    for frames in garbage:
        venue.publish_raw(frames)
    wait_for(lambda: latest_health(inbox).malformed == len(garbage), what="malformed counted")

    tell(order("after-garbage", "1"))
    fill = inbox.wait(OrderFilled, lambda f: f.client_order_id == "after-garbage")
    assert fill.venue == NAME
    seen = len(quotes_of(inbox, "AAPL"))
    step_until(engine, lambda: len(quotes_of(inbox, "AAPL")) > seen)
    assert inbox.all(ConnectorDown) == []
    assert latest_health(inbox).gaps == 0


def test_sequence_gap_is_reported_and_the_stream_moves_on(
    tree: Tree, venue: ZmqVenue, engine: VenueEngine, inbox: Inbox
) -> None:
    prime(engine, inbox)
    last = quotes_of(inbox, "AAPL")[-1]
    venue.skip_sequence("AAPL", 3)
    for _ in range(5):  # one more than the reorder window of 4
        engine.step()
    gap = inbox.wait(SafetyEvent, lambda e: e.kind == "sequence_gap")
    assert (gap.venue, gap.symbol) == (NAME, "AAPL")
    assert gap.detail == f"expected seq {last + 1}, got {last + 4}"
    wait_for(lambda: quotes_of(inbox, "AAPL")[-1] == last + 8, what="held quotes released")
    assert quotes_of(inbox, "AAPL")[-6:] == [last, *range(last + 4, last + 9)]
    wait_for(lambda: latest_health(inbox).gaps == 1, what="gap counted")


def test_out_of_order_frames_are_reordered_and_duplicates_dropped(
    tree: Tree, venue: ZmqVenue, engine: VenueEngine, inbox: Inbox
) -> None:
    prime(engine, inbox)
    last = quotes_of(inbox, "AAPL")[-1]
    venue.publish_raw(raw_quote(venue, last + 2))
    venue.publish_raw(raw_quote(venue, last + 1))
    venue.publish_raw(raw_quote(venue, last + 1))
    wait_for(lambda: quotes_of(inbox, "AAPL")[-2:] == [last + 1, last + 2], what="reordered")
    wait_for(lambda: latest_health(inbox).drops >= 1, what="duplicate dropped")
    assert inbox.all(SafetyEvent, lambda e: e.kind == "sequence_gap") == []


def test_a_burst_of_far_ahead_sequence_numbers_does_not_blind_the_symbol(
    tree: Tree, venue: ZmqVenue, engine: VenueEngine, inbox: Inbox
) -> None:
    prime(engine, inbox)
    last = quotes_of(inbox, "AAPL")[-1]
    far = last + 1_000_000
    for seq in range(far, far + 5):  # one more than the reorder window: taken for the stream
        venue.publish_raw(raw_quote(venue, seq))
    inbox.wait(SafetyEvent, lambda e: e.kind == "sequence_gap")
    wait_for(lambda: quotes_of(inbox, "AAPL")[-1] == far + 4, what="the burst released")

    # The genuine stream goes on behind the burst: it is taken back after resync_after frames.
    step_until(engine, lambda: inbox.all(SafetyEvent, lambda e: e.kind == "sequence_reset"))
    reset = inbox.all(SafetyEvent, lambda e: e.kind == "sequence_reset")[0]
    assert (reset.venue, reset.symbol, reset.severity.name) == (NAME, "AAPL", "WARNING")
    assert f"behind the expected seq {far + 5}" in reset.detail
    seen = len(quotes_of(inbox, "AAPL"))
    for _ in range(3):
        engine.step()
    current = (engine.quote("AAPL") or pytest.fail("no quote")).seq
    wait_for(lambda: quotes_of(inbox, "AAPL")[-1] == current, what="genuine quotes flowing again")
    assert len(quotes_of(inbox, "AAPL")) >= seen + 3
    assert current < far  # the quotes after the reset are the venue's own numbers
    wait_for(lambda: latest_health(inbox).gaps == 2, what="gap and reset counted")


def test_a_replayed_old_frame_is_a_duplicate_not_a_reset(
    tree: Tree, venue: ZmqVenue, engine: VenueEngine, inbox: Inbox
) -> None:
    for _ in range(6):
        engine.step()
    prime(engine, inbox)
    last = quotes_of(inbox, "AAPL")[-1]
    assert last >= 4
    for seq in (last - 3, last - 1, last - 3, last - 1):  # duplicates, not a stream
        venue.publish_raw(raw_quote(venue, seq))
    engine.step()
    wait_for(lambda: latest_health(inbox).drops >= 4, what="duplicates dropped")
    step_until(engine, lambda: quotes_of(inbox, "AAPL")[-1] > last + 1)
    assert inbox.all(SafetyEvent, lambda e: e.kind == "sequence_reset") == []


# ---- orders -----------------------------------------------------------------------------------


def test_submit_fills_and_positions_are_reported(
    tree: Tree, engine: VenueEngine, inbox: Inbox
) -> None:
    tell(order("buy-1", "10"))
    accepted = inbox.wait(OrderAccepted, lambda m: m.client_order_id == "buy-1")
    fill = inbox.wait(OrderFilled, lambda m: m.client_order_id == "buy-1")
    assert accepted.venue == fill.venue == NAME
    assert (fill.quantity, fill.leaves_quantity) == (Decimal(10), Decimal(0))
    assert fill.price == Decimal("190.01")  # a buy takes the ask
    assert fill.fill_id == engine.executions("zmq")[0].fill_id

    tell(RequestPositions(venue=NAME, request_id="pos-1"))
    report = inbox.wait(VenuePositions, lambda m: m.request_id == "pos-1")
    assert [(p.venue, p.symbol, p.quantity) for p in report.positions] == [
        (NAME, "AAPL", Decimal(10))
    ]
    wait_for(lambda: latest_health(inbox).latency_ms > 0, what="ping round trip measured")
    wait_for(lambda: latest_health(inbox).fills == 1, what="the fill counted")


def test_partial_fill_then_completion(tree: Tree, engine: VenueEngine, inbox: Inbox) -> None:
    tell(order("big", "150"))
    first = inbox.wait(OrderFilled, lambda m: m.client_order_id == "big")
    assert (first.quantity, first.leaves_quantity) == (Decimal(100), Decimal(50))
    assert first.is_partial
    engine.step()
    fills = wait_for(lambda: len(inbox.all(OrderFilled)) == 2 and inbox.all(OrderFilled))
    assert isinstance(fills, list)
    assert (fills[1].quantity, fills[1].leaves_quantity) == (Decimal(50), Decimal(0))
    assert engine.positions("zmq")[0].quantity == 150


def accepted_for(coid: str) -> Callable[[OrderAccepted], bool]:
    return lambda m: m.client_order_id == coid


def test_cancel_and_cancel_all(tree: Tree, engine: VenueEngine, inbox: Inbox) -> None:
    for coid in ("rest-1", "rest-2", "rest-3"):
        tell(order(coid, "1", order_type=OrderType.LIMIT, limit_price=Decimal(1)))
        inbox.wait(OrderAccepted, accepted_for(coid))
    tell(CancelOrder(client_order_id="rest-1", venue=NAME, source="test"))
    cancelled = inbox.wait(OrderCancelled, lambda m: m.client_order_id == "rest-1")
    assert cancelled.venue == NAME
    assert [w.order.client_order_id for w in engine.open_orders("zmq")] == ["rest-2", "rest-3"]

    tell(CancelAll(venue=NAME, source="test", request_id="all-1"))
    done = inbox.wait(CancelAllDone, lambda m: m.request_id == "all-1")
    assert done.venue == NAME
    assert {m.client_order_id for m in inbox.all(OrderCancelled)} == {"rest-1", "rest-2", "rest-3"}
    assert engine.open_orders("zmq") == []


def test_venue_reject_is_delivered(tree: Tree, inbox: Inbox) -> None:
    tell(SubmitOrder(client_order_id="nope", venue=NAME, symbol="NOPE", side=Side.BUY,
                     quantity=Decimal(1)))
    rejected = inbox.wait(OrderRejected, lambda m: m.client_order_id == "nope")
    assert (rejected.venue, rejected.reason) == (NAME, RejectReason.UNKNOWN_SYMBOL)
    assert "SIM-101" in rejected.text


# ---- session loss and recovery ----------------------------------------------------------------


def test_venue_restart_the_connector_reconnects_and_reconciles_positions(
    tmp_path: Path, inbox: Inbox
) -> None:
    state = tmp_path / "venue.json"
    config = EngineConfig(depth=Decimal(100))
    first = ZmqVenue(VenueEngine("sim", config), state_path=state, heartbeat_s=0.1)
    market_port, order_port = first.start()
    tree = start_tree(make_config(first), tmp_path)
    second: ZmqVenue | None = None
    try:
        inbox.wait(ConnectorUp)
        tell(order("keep-1", "7", side=Side.SELL))
        fill = inbox.wait(OrderFilled, lambda m: m.client_order_id == "keep-1")
        tell(order("rest-1", "2", order_type=OrderType.LIMIT, limit_price=Decimal(1)))
        inbox.wait(OrderAccepted, lambda m: m.client_order_id == "rest-1")
        expected = [(p.symbol, p.quantity, p.average_price) for p in first.engine.positions("zmq")]
        assert expected == [("AAPL", Decimal(-7), Decimal("189.99"))]

        first.stop()
        down = inbox.wait(ConnectorDown, timeout_s=5)
        assert down.name == NAME
        mark = inbox.mark()

        second = ZmqVenue(
            VenueEngine("sim", config), market_port=market_port, order_port=order_port,
            state_path=state, heartbeat_s=0.1,
        )
        assert second.start() == (market_port, order_port)
        up = wait_for(lambda: inbox.since(mark, ConnectorUp), 10, what="connector up again")
        assert isinstance(up, list) and up[0].generation == 0  # reconnected inside, not restarted
        assert len(inbox.all(ConnectorDown)) == 1  # one outage, one incident

        positions = wait_for(
            lambda: [p for p in inbox.since(mark, VenuePositions) if p.request_id == ""], 5,
            what="positions after the restart",
        )
        assert isinstance(positions, list)
        assert [(p.symbol, p.quantity, p.average_price) for p in positions[0].positions] == expected
        refills = inbox.since(mark, OrderFilled)
        assert [f.fill_id for f in refills] == [fill.fill_id]  # executions re-read
        working = [m.client_order_id for m in inbox.since(mark, OrderAccepted)]
        assert working == ["rest-1"]  # open orders re-read

        assert len(pollers()) == 1  # the failed attempts left no poller behind
    finally:
        tree.stop()
        if second is not None:
            second.stop()
        first.stop()
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name == f"zmq-connector-{NAME}"],
        2.0, what="poller thread joined",
    )


def test_order_while_the_gateway_is_unreachable_is_rejected_not_queued(
    venue: ZmqVenue, inbox: Inbox, tmp_path: Path
) -> None:
    tree = start_tree(make_config(venue, stale_after_s=5.0), tmp_path)  # stays up for now
    try:
        inbox.wait(ConnectorUp)
        venue.stop()
        attempts = iter(range(1000))

        def refused() -> bool:
            tell(order(f"late-{next(attempts)}", "1"))
            return bool(inbox.all(OrderRejected, lambda m: m.reason is RejectReason.VENUE_DOWN))

        wait_for(refused, 3.0, interval_s=0.02, what="VENUE_DOWN reject")
        rejected = inbox.all(OrderRejected)[0]
        assert rejected.venue == NAME and rejected.client_order_id.startswith("late-")
        assert inbox.all(ConnectorDown) == []  # refused by a live session, not a dead actor
    finally:
        tree.stop()


def test_an_unreachable_venue_is_a_running_disconnected_connector(tmp_path: Path, inbox: Inbox) -> None:
    config = make_unreachable_config(tmp_path)
    started = time.monotonic()
    tree = start_tree(config, tmp_path)
    try:
        assert time.monotonic() - started < 2.0  # the start does not wait for the venue
        down = inbox.wait(ConnectorDown)
        assert down.name == NAME and "no heartbeat" in down.reason
        wait_for(lambda: inbox.all(HealthReport, lambda h: h.name == NAME and not h.connected),
                 what="health says disconnected")
        tell(order("while-down", "1"))
        rejected = inbox.wait(OrderRejected, lambda m: m.client_order_id == "while-down")
        assert rejected.reason is RejectReason.VENUE_DOWN
        # Attempts go on (with backoff) and each one's poller is gone before the next.
        wait_for(lambda: latest_health(inbox).ts_ns > down.ts_ns + 1_000_000_000, 5,
                 what="a second of retrying")
        assert len(pollers()) <= 1
        assert len(inbox.all(ConnectorDown)) == 1  # one outage, one incident
        assert registry.generation(NAME) == 0  # never restarted by its supervisor
    finally:
        tree.stop()
    wait_for(lambda: not pollers(), 2.0, what="poller joined")


def test_a_venue_that_appears_later_is_connected_to(tmp_path: Path, inbox: Inbox,
                                                   engine: VenueEngine) -> None:
    from tests.system.processes import free_port

    market, orders = free_port(pair=True), 0
    orders = market + 1
    config = make_unreachable_config(tmp_path, market_endpoint=f"tcp://127.0.0.1:{market}",
                                     order_endpoint=f"tcp://127.0.0.1:{orders}")
    tree = start_tree(config, tmp_path)
    front: ZmqVenue | None = None
    try:
        inbox.wait(ConnectorDown)
        front = ZmqVenue(engine, market_port=market, order_port=orders, heartbeat_s=0.1)
        front.start()
        up = inbox.wait(ConnectorUp, timeout_s=10)
        assert up.generation == 0
        wait_for(lambda: latest_health(inbox).connected, what="health says connected")
        tell(order("after-up", "1"))
        inbox.wait(OrderFilled, lambda m: m.client_order_id == "after-up")
    finally:
        tree.stop()
        if front is not None:
            front.stop()


@pytest.mark.parametrize("endpoint", ["udp://127.0.0.1:5601", "tcp://", "ipc://", "127.0.0.1:5601"])
def test_config_refuses_endpoints_that_are_not_tcp_or_ipc(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        ZmqConfig(name=NAME, market_endpoint=endpoint)
