"""The FIX connector actor, supervised, against the real FixVenue acceptor over loopback."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pykka
import pytest
import quickfix as fix

from actors import topics
from actors.connectors.fix import FixConfig, FixConnector
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
    Side,
    SubmitOrder,
    VenuePositions,
)
from supervision import Backoff, ChildSpec, Tree, bus, registry
from tests.helpers import wait_for
from venues.engine import EngineConfig, VenueEngine
from venues.fix_venue import FIX42, FIX44, FIXT11, FixVenue, Tag, free_port, utc_timestamp

T = TypeVar("T")

NAME = "fix1"
ACCOUNT = "TRADEGUARD"  # the venue trades for the counterparty's comp id
TOPICS = (
    topics.MARKET, topics.ORDERS, topics.POSITIONS, topics.CONNECTORS, topics.HEALTH,
)  # fmt: skip


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

    def wait(self, kind: type[T], where: Callable[[T], bool] = lambda _m: True,
             timeout_s: float = 5.0, count: int = 1) -> list[T]:
        found = wait_for(lambda: len(self.all(kind, where)) >= count and self.all(kind, where),
                         timeout_s, what=kind.__name__)
        assert isinstance(found, list)
        return found

    def mark(self) -> int:
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
    registry.register("recorder", Recorder.start(box))
    for topic in TOPICS:
        bus.subscribe(topic, "recorder")
    return box


@pytest.fixture
def engine() -> VenueEngine:
    return VenueEngine("fixsim", EngineConfig(depth=Decimal(100)))


def make_config(port: int, **overrides: Any) -> FixConfig:
    settings: dict[str, Any] = {
        "name": NAME, "port": port, "symbols": ("AAPL", "MSFT"), "connect_timeout_s": 2.0,
        "health_interval_s": 0.1, "heartbeat_s": 5, "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.5, **overrides,
    }  # fmt: skip
    return FixConfig(**settings)


def start_tree(config: FixConfig, state_dir: Path) -> Tree:
    spec = ChildSpec(name=NAME, actor_class=FixConnector, args=(config, state_dir))
    tree = Tree(
        [spec], name="connectors", intensity=100, period_s=10.0,
        backoff=Backoff(initial_s=0.05, maximum_s=0.3, jitter_s=0.01), poll_s=0.1,
    )  # fmt: skip
    tree.start(timeout_s=10)
    return tree


class Session:
    """A venue and a supervised connector on loopback; stopped in reverse order."""

    def __init__(self, engine: VenueEngine, state_dir: Path, begin_string: str = FIX44) -> None:
        self.port = free_port()
        self.venue = FixVenue(engine, self.port, state_dir / "venue", begin_string=begin_string)
        self.venue.start()
        self.tree = start_tree(make_config(self.port, begin_string=begin_string), state_dir)

    def stop(self) -> None:
        self.tree.stop()
        self.venue.stop()


@pytest.fixture
def session(engine: VenueEngine, inbox: Inbox, tmp_path: Path) -> Iterator[Session]:
    running = Session(engine, tmp_path)
    try:
        inbox.wait(ConnectorUp)
        yield running
    finally:
        running.stop()


def order(coid: str, quantity: str, symbol: str = "AAPL", side: Side = Side.BUY,
          **extra: Any) -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue=NAME, symbol=symbol, side=side,
                       quantity=Decimal(quantity), source="test", **extra)


def resting(coid: str, symbol: str = "AAPL") -> SubmitOrder:
    return order(coid, "1", symbol, order_type=OrderType.LIMIT, limit_price=Decimal(1))


def tell(message: Any) -> None:
    assert registry.tell(NAME, message), f"{NAME} is not running"


def coid_is(coid: str) -> Callable[[Any], bool]:
    return lambda m: m.client_order_id == coid


def latest_health(inbox: Inbox) -> HealthReport:
    reports = inbox.all(HealthReport, lambda h: h.name == NAME)
    return reports[-1] if reports else HealthReport(name=NAME, connected=False)


def step_until(engine: VenueEngine, condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    def stepped() -> object:
        engine.step()
        return condition()

    wait_for(stepped, timeout_s, interval_s=0.02, what="condition after engine steps")


def quotes_of(inbox: Inbox, symbol: str) -> list[tuple[Decimal, Decimal]]:
    return [(q.bid, q.ask) for b in inbox.all(QuoteBatch) for q in b.quotes if q.symbol == symbol]


def venue_sockets(port: int) -> int:
    """TCP sockets of this process connected to or listening on ``port``."""
    inodes = set()
    for entry in os.scandir("/proc/self/fd"):
        try:
            target = os.readlink(entry.path)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                cols = row.split()
                ports = {int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16)}
                if port in ports and cols[9] in inodes:
                    count += 1
    return count


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


# ---- market data and orders -------------------------------------------------------------------


def test_quotes_orders_cancels_and_positions(
    session: Session, engine: VenueEngine, inbox: Inbox
) -> None:
    step_until(engine, lambda: quotes_of(inbox, "AAPL") and quotes_of(inbox, "MSFT"))
    quote = engine.step()[0]
    wait_for(lambda: (quote.bid, quote.ask) in quotes_of(inbox, "AAPL"), what="last quote")
    batches = inbox.all(QuoteBatch)
    assert all(b.venue == NAME and all(q.venue == NAME for q in b.quotes) for b in batches)
    assert any(len(b.quotes) == 2 for b in batches)  # one batch per X, both symbols in it
    assert quotes_of(inbox, "EURUSD") == []

    # a fill within the depth; the fill id is the venue's
    tell(order("buy-1", "10"))
    inbox.wait(OrderAccepted, coid_is("buy-1"))
    [fill] = inbox.wait(OrderFilled, coid_is("buy-1"))
    assert (fill.venue, fill.quantity, fill.leaves_quantity) == (NAME, Decimal(10), Decimal(0))
    assert fill.price == engine.quote("AAPL").ask  # type: ignore[union-attr]
    assert fill.fill_id == engine.executions(ACCOUNT)[0].fill_id

    # partial, then the rest at the next step
    tell(order("big", "150", "MSFT"))
    [first] = inbox.wait(OrderFilled, coid_is("big"))
    assert (first.quantity, first.leaves_quantity) == (Decimal(100), Decimal(50))
    engine.step()
    fills = inbox.wait(OrderFilled, coid_is("big"), count=2)
    assert (fills[1].quantity, fills[1].leaves_quantity) == (Decimal(50), Decimal(0))

    # venue reject with its code and text
    tell(order("nope", "1", "NOPE"))
    [rejected] = inbox.wait(OrderRejected, coid_is("nope"))
    assert rejected.reason is RejectReason.UNKNOWN_SYMBOL
    assert "OrdRejReason 1" in rejected.text and "SIM-101" in rejected.text

    # cancel one, then cancel all
    for coid in ("rest-1", "rest-2", "rest-3"):
        tell(resting(coid))
        inbox.wait(OrderAccepted, coid_is(coid))
    tell(CancelOrder(client_order_id="rest-1", venue=NAME, source="test"))
    inbox.wait(OrderCancelled, coid_is("rest-1"))
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == ["rest-2", "rest-3"]
    tell(CancelAll(venue=NAME, source="test", request_id="all-1"))
    [done] = inbox.wait(CancelAllDone, lambda m: m.request_id == "all-1")
    assert done.venue == NAME and engine.open_orders(ACCOUNT) == []
    assert {m.client_order_id for m in inbox.all(OrderCancelled)} == {"rest-1", "rest-2", "rest-3"}

    # positions as the venue reports them
    tell(RequestPositions(venue=NAME, request_id="pos-1"))
    [report] = inbox.wait(VenuePositions, lambda m: m.request_id == "pos-1")
    got = [(p.venue, p.symbol, p.quantity, p.average_price) for p in report.positions]
    assert got == [(NAME, p.symbol, p.quantity, p.average_price)
                   for p in engine.positions(ACCOUNT)]
    assert [(s, q) for _, s, q, _ in got] == [("AAPL", Decimal(10)), ("MSFT", Decimal(150))]
    wait_for(lambda: latest_health(inbox).fills == 3, what="fills counted")
    assert latest_health(inbox).malformed == 0


def test_garbage_from_the_venue_is_counted_and_the_connector_keeps_running(
    session: Session, engine: VenueEngine, inbox: Inbox
) -> None:
    def report(**values: str) -> fix.Message:
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, "8")
        fields = {Tag.ORDER_ID: "1", Tag.CL_ORD_ID: "ghost", Tag.EXEC_ID: "g-1",
                  Tag.EXEC_TYPE: "F", Tag.ORD_STATUS: "2", Tag.SYMBOL: "AAPL", Tag.SIDE: "1",
                  Tag.LAST_QTY: "1", Tag.LAST_PX: "1", Tag.LEAVES_QTY: "0", Tag.CUM_QTY: "1",
                  Tag.AVG_PX: "1", Tag.TRANSACT_TIME: utc_timestamp()}
        fields.update({Tag[name.upper()]: value for name, value in values.items()})
        for tag, value in fields.items():
            message.setField(tag, value)
        return message

    garbage = [
        report(last_px="abc"),  # refused by quickfix: not a price
        report(ord_status="Z"),  # refused by quickfix: not an OrdStatus
        report(last_qty="0"),  # well-formed FIX, but a fill of nothing
        report(side="5"),  # well-formed FIX, but a side tradeguard does not trade
    ]
    unexpected = fix.Message()  # a NewOrderSingle sent to us: valid FIX, wrong direction
    unexpected.getHeader().setField(Tag.MSG_TYPE, "D")
    for tag, value in ((Tag.CL_ORD_ID, "x"), (21, "1"), (Tag.SYMBOL, "AAPL"), (Tag.SIDE, "1"),
                       (Tag.TRANSACT_TIME, utc_timestamp()), (Tag.ORDER_QTY, "1"),
                       (Tag.ORD_TYPE, "1")):
        unexpected.setField(tag, value)
    garbage.append(unexpected)
    for message in garbage:
        assert session.venue.send(message)
    wait_for(lambda: latest_health(inbox).malformed == len(garbage), what="garbage counted")

    tell(order("after-garbage", "1"))
    inbox.wait(OrderFilled, coid_is("after-garbage"))
    assert inbox.all(OrderFilled, coid_is("ghost")) == []
    assert inbox.all(ConnectorDown) == [] and session.venue.callback_errors == 0


# ---- session loss and recovery ----------------------------------------------------------------


def test_venue_stop_loses_the_session_and_the_connector_reconnects_and_reconciles(
    engine: VenueEngine, inbox: Inbox, tmp_path: Path
) -> None:
    timers_running = any(t.name == "tg-timers" for t in threading.enumerate())
    baseline = native_threads() + (0 if timers_running else 1)  # the kernel's timer thread stays
    running = Session(engine, tmp_path)
    second: FixVenue | None = None
    try:
        inbox.wait(ConnectorUp)
        tell(order("keep-1", "7", side=Side.SELL))
        [fill] = inbox.wait(OrderFilled, coid_is("keep-1"))
        tell(resting("rest-1"))
        inbox.wait(OrderAccepted, coid_is("rest-1"))

        running.venue.stop(graceful=False)  # the venue dies
        [down] = inbox.wait(ConnectorDown)
        assert down.name == NAME
        mark = inbox.mark()
        wait_for(lambda: venue_sockets(running.port) == 0, what="connector socket closed")

        # the connector keeps reconnecting with backoff; the venue comes back
        second = FixVenue(engine, running.port, tmp_path / "venue")
        second.start()
        up = wait_for(lambda: inbox.since(mark, ConnectorUp), 10, what="connector up again")
        assert isinstance(up, list) and up[0].generation == 0  # reconnected inside, not restarted
        assert len(inbox.all(ConnectorDown)) == 1  # one outage, one incident
        positions = wait_for(
            lambda: [p for p in inbox.since(mark, VenuePositions) if p.request_id == ""], 5,
            what="positions after the restart",
        )
        assert isinstance(positions, list)
        assert [(p.symbol, p.quantity, p.average_price) for p in positions[0].positions] == [
            (p.symbol, p.quantity, p.average_price) for p in engine.positions(ACCOUNT)
        ] == [("AAPL", Decimal(-7), fill.price)]
        assert [f.fill_id for f in inbox.since(mark, OrderFilled)] == [fill.fill_id]
        assert [m.client_order_id for m in inbox.since(mark, OrderAccepted)] == ["rest-1"]

        # the new session cancels the order it only knows from the resync
        tell(CancelOrder(client_order_id="rest-1", venue=NAME, source="test"))
        inbox.wait(OrderCancelled, coid_is("rest-1"))
        assert engine.open_orders(ACCOUNT) == []
        assert venue_sockets(running.port) == 3  # listener + one connection, both ends
    finally:
        running.tree.stop()
        if second is not None:
            second.stop()
        running.venue.stop()
    assert venue_sockets(running.port) == 0
    # the failed attempts left no thread behind
    wait_for(lambda: native_threads() <= baseline, what="every thread joined")


def test_an_unreachable_venue_is_a_running_disconnected_connector(inbox: Inbox, tmp_path: Path) -> None:
    port = free_port()
    before = native_threads()
    started = time.monotonic()
    tree = start_tree(make_config(port, connect_timeout_s=0.5), tmp_path)
    try:
        assert time.monotonic() - started < 2.0  # the start does not wait for the venue
        [down] = inbox.wait(ConnectorDown)
        assert down.name == NAME and "no FIX logon" in down.reason
        wait_for(lambda: inbox.all(HealthReport, lambda h: h.name == NAME and not h.connected),
                 what="health says disconnected")
        tell(order("while-down", "1"))
        [rejected] = inbox.wait(OrderRejected, coid_is("while-down"))
        assert rejected.reason is RejectReason.VENUE_DOWN
        wait_for(lambda: latest_health(inbox).ts_ns > down.ts_ns + 1_500_000_000, 5,
                 what="several attempts")
        assert len(inbox.all(ConnectorDown)) == 1  # one outage, one incident
        assert registry.generation(NAME) == 0  # never restarted by its supervisor
    finally:
        tree.stop()
    wait_for(lambda: native_threads() <= before, what="quickfix threads joined")
    assert venue_sockets(port) == 0


# ---- other FIX versions -----------------------------------------------------------------------


@pytest.mark.parametrize("begin_string", [FIX42, FIXT11])
def test_other_versions_trade_cancel_all_and_read_positions(
    begin_string: str, engine: VenueEngine, inbox: Inbox, tmp_path: Path
) -> None:
    running = Session(engine, tmp_path, begin_string=begin_string)
    try:
        inbox.wait(ConnectorUp)
        step_until(engine, lambda: quotes_of(inbox, "MSFT"))
        tell(order("big", "150", "MSFT"))
        fills = inbox.wait(OrderFilled, coid_is("big"))
        engine.step()
        fills = inbox.wait(OrderFilled, coid_is("big"), count=2)
        assert [f.leaves_quantity for f in fills] == [Decimal(50), Decimal(0)]
        tell(resting("rest-1"))
        inbox.wait(OrderAccepted, coid_is("rest-1"))
        tell(CancelAll(venue=NAME, request_id="all-1"))
        inbox.wait(CancelAllDone, lambda m: m.request_id == "all-1")
        inbox.wait(OrderCancelled, coid_is("rest-1"))
        tell(RequestPositions(venue=NAME, request_id="pos-1"))
        [report] = inbox.wait(VenuePositions, lambda m: m.request_id == "pos-1")
        assert [(p.symbol, p.quantity) for p in report.positions] == [("MSFT", Decimal(150))]
        assert latest_health(inbox).malformed == 0 and running.venue.callback_errors == 0
    finally:
        running.stop()
