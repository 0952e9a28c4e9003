"""The IBKR connector actor, supervised, against the fake TWS (IB's wire protocol) over
loopback TCP."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.connectors.ibkr import IbkrConfig, IbkrConnector, _QuoteGate
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
    Quote,
    QuoteBatch,
    RejectReason,
    RequestPositions,
    SafetyEvent,
    Side,
    SubmitOrder,
    TimeInForce,
    Trade,
    VenuePositions,
)
from supervision import SUPERVISION_TOPIC, Backoff, ChildExited, ChildSpec, Tree, registry
from tests.helpers import wait_for
from tests.recorder import Recorder
from venues.engine import EngineConfig, VenueEngine
from venues.tws_behaviour import TwsBehaviour
from venues.tws_venue import SERVER_VERSION, TwsVenue, encode_frame

HOST = "127.0.0.1"
ACCOUNT = "DU000001"
NAME = "ib1"
CLIENT_ID = 17
TOPICS = (
    topics.MARKET, topics.ORDERS, topics.POSITIONS, topics.CONNECTORS, topics.HEALTH,
    topics.SAFETY, SUPERVISION_TOPIC,
)


def make_engine(**overrides: Any) -> VenueEngine:
    """A calm market (no random moves), 100 shown at each side, first quotes published."""
    settings: dict[str, Any] = {
        "symbols": {"AAPL": Decimal("190"), "MSFT": Decimal("410")},
        "volatility_bps": Decimal(0),
        "depth": Decimal(100),
        **overrides,
    }
    engine = VenueEngine("tws", EngineConfig(**settings))
    engine.step()
    return engine


def make_config(port: int, **overrides: Any) -> IbkrConfig:
    settings: dict[str, Any] = {
        "name": NAME,
        "symbols": ("AAPL", "MSFT"),
        "port": port,
        "client_id": CLIENT_ID,
        "connect_timeout_s": 3.0,
        "health_interval_s": 0.1,
        "request_timeout_s": 2.0,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.5,
        **overrides,
    }
    return IbkrConfig(**settings)


def ibkr_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ibkr-")]


@contextmanager
def running_connector(config: IbkrConfig, state_dir: Path) -> Iterator[Tree]:
    """The connector under a supervisor with a short backoff; stopped (and its thread
    checked gone) on exit."""
    spec = ChildSpec(name=NAME, actor_class=IbkrConnector, args=(config, state_dir),
                     start_timeout_s=config.connect_timeout_s + 5)
    tree = Tree([spec], name="connectors", intensity=50, period_s=10.0,
                backoff=Backoff(initial_s=0.05, maximum_s=0.2, jitter_s=0.01), poll_s=0.1)
    tree.start(timeout_s=10, require_running=False)  # some tests watch failed starts
    try:
        yield tree
    finally:
        tree.stop()
    assert ibkr_threads() == []


@pytest.fixture
def engine() -> VenueEngine:
    return make_engine()


@pytest.fixture
def venue(engine: VenueEngine) -> Iterator[TwsVenue]:
    tws = TwsVenue(engine)
    tws.start()
    yield tws
    tws.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", TOPICS)


@pytest.fixture
def tree(venue: TwsVenue, recorder: Recorder, tmp_path: Path) -> Iterator[Tree]:
    with running_connector(make_config(venue.port), tmp_path) as root:
        recorder.wait_for(lambda m: isinstance(m, ConnectorUp))
        yield root


def send(message: Any) -> None:
    assert registry.tell(NAME, message), "the connector is not registered"


def order(coid: str, side: Side = Side.BUY, quantity: int = 10, symbol: str = "AAPL",
          **fields: Any) -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue=NAME, symbol=symbol, side=side,
                       quantity=Decimal(quantity), source="test", **fields)


def of(kind: type, **expected: Any) -> Callable[[Any], bool]:
    """A predicate: a message of ``kind`` whose named fields have the expected values."""
    return lambda m: isinstance(m, kind) and all(getattr(m, k) == v for k, v in expected.items())


def fills_of(recorder: Recorder, coid: str) -> list[OrderFilled]:
    return [f for f in recorder.messages(OrderFilled) if f.client_order_id == coid]


def quote_of(batch: QuoteBatch, symbol: str) -> Quote | None:
    return next((q for q in batch.quotes if q.symbol == symbol), None)


def shows(engine_quote: Quote | None) -> Callable[[Any], bool]:
    """A predicate: a QuoteBatch quoting the engine's quote for its symbol."""
    assert engine_quote is not None

    def match(m: Any) -> bool:
        if not isinstance(m, QuoteBatch):
            return False
        quote = quote_of(m, engine_quote.symbol)
        return quote is not None and (quote.bid, quote.ask, quote.bid_size, quote.ask_size) == (
            engine_quote.bid, engine_quote.ask, engine_quote.bid_size, engine_quote.ask_size)

    return match


# --------------------------------------------------------------------------- venue reach-ins


def write_to_sessions(venue: TwsVenue, frames: Callable[[dict[int, str]], list[list[object]]]) -> None:
    """Write raw IB frames to every API session of the venue; ``frames`` gets the session's
    market data subscriptions (reqId -> symbol). This reaches into the venue's loop and
    sessions: the only way to send what a well-behaved TWS never would."""

    async def write() -> None:
        for session in list(venue._sessions):
            if session.client_id is not None:
                for fields in frames(dict(session.market_data)):
                    session.writer.write(encode_frame(fields))

    assert venue._loop is not None
    asyncio.run_coroutine_threadsafe(write(), venue._loop).result(timeout=5)


def subscriptions(venue: TwsVenue) -> dict[int, str]:
    """reqId -> symbol of the market data subscriptions of every session."""
    found: dict[int, str] = {}
    write_to_sessions(venue, lambda market_data: found.update(market_data) or [])
    return found


class ClientIdHolder:
    """A bare IB API session holding a client id."""

    def __init__(self, port: int, client_id: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=3)
        self.buffer = b""
        payload = b"v157..176"
        self.sock.sendall(b"API\0" + struct.pack(">I", len(payload)) + payload)
        assert self.read()[0] == str(SERVER_VERSION)
        self.sock.sendall(encode_frame([71, 2, client_id, ""]))
        assert self.read()[0] == "9"  # nextValidId: the id is ours

    def read(self) -> list[str]:
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) >= 4 + size:
                    payload, self.buffer = self.buffer[4:4 + size], self.buffer[4 + size:]
                    return payload.decode().split("\0")[:-1]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the venue")
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- session, data


def test_connects_resyncs_and_streams_quote_batches(
    tree: Tree, recorder: Recorder, engine: VenueEngine, venue: TwsVenue
) -> None:
    up = recorder.wait_for(of(ConnectorUp, name=NAME))
    assert up.generation == 0
    assert venue.connected_client_ids() == [CLIENT_ID]
    recorder.wait_for(of(VenuePositions, venue=NAME, request_id="", positions=()))
    recorder.wait_for(shows(engine.quote("AAPL")))
    recorder.wait_for(shows(engine.quote("MSFT")))
    health = recorder.wait_for(lambda m: isinstance(m, HealthReport) and m.name == NAME and m.latency_ms > 0)
    assert health.connected

    mark = recorder.count()
    engine.set_mid("AAPL", Decimal("200"))
    moved = engine.step()
    batch = recorder.wait_for(shows(next(q for q in moved if q.symbol == "AAPL")), after=mark)
    assert batch.venue == NAME and all(q.venue == NAME for q in batch.quotes)


def test_market_order_fills_at_the_ask(tree: Tree, recorder: Recorder, engine: VenueEngine) -> None:
    ask = engine.quote("AAPL").ask  # type: ignore[union-attr]
    send(order("buy-1", Side.BUY, 10))
    accepted = recorder.wait_for(of(OrderAccepted, client_order_id="buy-1"))
    fill = recorder.wait_for(of(OrderFilled, client_order_id="buy-1"))
    assert (accepted.venue, accepted.symbol) == (NAME, "AAPL")
    assert (fill.venue, fill.symbol, fill.side) == (NAME, "AAPL", Side.BUY)
    assert (fill.quantity, fill.price, fill.leaves_quantity) == (Decimal(10), ask, Decimal(0))
    (execution,) = engine.executions(ACCOUNT)
    assert (fill.fill_id, execution.client_order_id) == (execution.fill_id, "buy-1")
    assert [(p.symbol, p.quantity) for p in engine.positions(ACCOUNT)] == [("AAPL", Decimal(10))]


def test_partial_fills_report_what_is_left(tree: Tree, recorder: Recorder, engine: VenueEngine) -> None:
    send(order("big", Side.BUY, 250))
    wait_for(lambda: len(fills_of(recorder, "big")) == 1, what="first partial fill")
    engine.step()
    wait_for(lambda: len(fills_of(recorder, "big")) == 2, what="second partial fill")
    engine.step()
    wait_for(lambda: len(fills_of(recorder, "big")) == 3, what="last fill")
    fills = fills_of(recorder, "big")
    assert [f.quantity for f in fills] == [Decimal(100), Decimal(100), Decimal(50)]
    assert [f.leaves_quantity for f in fills] == [Decimal(150), Decimal(50), Decimal(0)]
    assert len({f.fill_id for f in fills}) == 3
    assert {f.fill_id for f in fills} == {e.fill_id for e in engine.executions(ACCOUNT)}


def test_limit_order_rests_then_cancels(tree: Tree, recorder: Recorder, engine: VenueEngine) -> None:
    send(order("rest-1", Side.BUY, 10, order_type=OrderType.LIMIT, limit_price=Decimal(150)))
    recorder.wait_for(of(OrderAccepted, client_order_id="rest-1"))
    (working,) = engine.open_orders(ACCOUNT)
    assert (working.order.client_order_id, working.order.limit_price) == ("rest-1", Decimal(150))

    send(CancelOrder(client_order_id="rest-1", venue=NAME, source="test"))
    cancelled = recorder.wait_for(of(OrderCancelled, client_order_id="rest-1"))
    assert (cancelled.venue, cancelled.symbol) == (NAME, "AAPL")
    assert engine.open_orders(ACCOUNT) == []
    assert fills_of(recorder, "rest-1") == []


def test_order_types_and_time_in_force_reach_the_venue(
    tree: Tree, recorder: Recorder, engine: VenueEngine
) -> None:
    send(order("lmt-gtc", Side.SELL, 1, order_type=OrderType.LIMIT, limit_price=Decimal("250.5"),
               time_in_force=TimeInForce.GTC))
    send(order("stp-day", Side.SELL, 2, order_type=OrderType.STOP, stop_price=Decimal(150)))
    send(order("stp-lmt", Side.BUY, 3, order_type=OrderType.STOP_LIMIT, stop_price=Decimal(250),
               limit_price=Decimal(251), time_in_force=TimeInForce.GTC))
    send(order("ioc", Side.BUY, 4, order_type=OrderType.LIMIT, limit_price=Decimal(100),
               time_in_force=TimeInForce.IOC))
    for coid in ("lmt-gtc", "stp-day", "stp-lmt"):
        recorder.wait_for(of(OrderAccepted, client_order_id=coid))
    recorder.wait_for(of(OrderCancelled, client_order_id="ioc"))
    working = {w.order.client_order_id: w.order for w in engine.open_orders(ACCOUNT)}
    assert {coid: (o.side, o.quantity, o.order_type, o.limit_price, o.stop_price, o.time_in_force)
            for coid, o in working.items()} == {
        "lmt-gtc": (Side.SELL, Decimal(1), OrderType.LIMIT, Decimal("250.5"), None, TimeInForce.GTC),
        "stp-day": (Side.SELL, Decimal(2), OrderType.STOP, None, Decimal(150), TimeInForce.DAY),
        "stp-lmt": (Side.BUY, Decimal(3), OrderType.STOP_LIMIT, Decimal(251), Decimal(250), TimeInForce.GTC),
    }

    engine.set_mid("AAPL", Decimal(149))
    engine.step()
    stop_fill = recorder.wait_for(of(OrderFilled, client_order_id="stp-day"))
    assert (stop_fill.side, stop_fill.quantity, stop_fill.leaves_quantity) == (Side.SELL, 2, 0)


def test_unknown_symbol_and_reused_id_are_rejected(tree: Tree, recorder: Recorder) -> None:
    send(order("nope", symbol="NOPE"))
    rejected = recorder.wait_for(of(OrderRejected, client_order_id="nope"))
    assert (rejected.reason, rejected.venue, rejected.symbol) == (RejectReason.UNKNOWN_SYMBOL, NAME, "NOPE")

    send(order("twice", quantity=1))
    recorder.wait_for(of(OrderFilled, client_order_id="twice"))
    send(order("twice", quantity=1))
    again = recorder.wait_for(of(OrderRejected, client_order_id="twice"))
    assert again.reason is RejectReason.DUPLICATE_ID
    assert len(fills_of(recorder, "twice")) == 1


def test_venue_reject_carries_the_ib_code(recorder: Recorder, tmp_path: Path) -> None:
    engine = make_engine(reject_rate=1.0)
    tws = TwsVenue(engine)
    tws.start()
    try:
        with running_connector(make_config(tws.port), tmp_path):
            recorder.wait_for(of(ConnectorUp, name=NAME))
            send(order("refused", quantity=1))
            rejected = recorder.wait_for(of(OrderRejected, client_order_id="refused"))
            assert rejected.reason is RejectReason.VENUE
            assert rejected.text.startswith("IB 201:")
            assert recorder.messages(OrderCancelled) == []
            assert engine.executions(ACCOUNT) == []
    finally:
        tws.stop()


def test_cancel_all_confirms_once_nothing_works(tree: Tree, recorder: Recorder, engine: VenueEngine) -> None:
    send(order("bid", Side.BUY, 5, order_type=OrderType.LIMIT, limit_price=Decimal(150)))
    send(order("offer", Side.SELL, 5, symbol="MSFT", order_type=OrderType.LIMIT,
               limit_price=Decimal(500), time_in_force=TimeInForce.GTC))
    for coid in ("bid", "offer"):
        recorder.wait_for(of(OrderAccepted, client_order_id=coid))
    assert len(engine.open_orders(ACCOUNT)) == 2

    send(CancelAll(venue=NAME, source="test", request_id="mass-1"))
    done = recorder.wait_for(of(CancelAllDone, request_id="mass-1"))
    assert done.venue == NAME
    assert engine.open_orders(ACCOUNT) == []
    seen = recorder.messages()
    done_at = seen.index(done)
    cancelled = {m.client_order_id for m in seen[:done_at] if isinstance(m, OrderCancelled)}
    assert cancelled == {"bid", "offer"}


def test_request_positions_match_the_venue(tree: Tree, recorder: Recorder, engine: VenueEngine) -> None:
    send(order("long", Side.BUY, 10))
    send(order("short", Side.SELL, 7, symbol="MSFT"))
    for coid in ("long", "short"):
        recorder.wait_for(of(OrderFilled, client_order_id=coid))

    send(RequestPositions(venue=NAME, request_id="pos-1"))
    report = recorder.wait_for(of(VenuePositions, request_id="pos-1"))
    assert report.venue == NAME
    assert {(p.symbol, p.quantity, p.average_price) for p in report.positions} == {
        (p.symbol, p.quantity, p.average_price) for p in engine.positions(ACCOUNT)
    }
    assert {p.symbol for p in report.positions} == {"AAPL", "MSFT"}


# --------------------------------------------------------------------------- faults


def test_session_loss_reconnects_resyncs_and_never_doubles_a_fill(
    tree: Tree, recorder: Recorder, engine: VenueEngine, venue: TwsVenue
) -> None:
    send(order("before", Side.BUY, 10))
    send(order("resting", Side.BUY, 3, order_type=OrderType.LIMIT, limit_price=Decimal(150)))
    recorder.wait_for(of(OrderFilled, client_order_id="before"))
    recorder.wait_for(of(OrderAccepted, client_order_id="resting"))
    assert len(ibkr_threads()) == 1

    mark = recorder.count()
    venue.kill_connections()
    recorder.wait_for(of(ConnectorDown, name=NAME), after=mark)
    # Reconnected by the same actor (not restarted by its supervisor).
    recorder.wait_for(of(ConnectorUp, name=NAME, generation=0), timeout_s=10, after=mark)
    assert len(recorder.messages(ConnectorDown)) == 1  # one outage, one incident
    # Resync after the reconnect: the working order, positions that reconcile; the fill
    # delivered before the outage is not delivered again.
    recorder.wait_for(of(OrderAccepted, client_order_id="resting"), after=mark)
    engine_positions = {(p.symbol, p.quantity) for p in engine.positions(ACCOUNT)}
    recorder.wait_for(lambda m: isinstance(m, VenuePositions) and m.request_id == "" and
                      {(p.symbol, p.quantity) for p in m.positions} == engine_positions and
                      m.open_orders == ("resting",), after=mark)
    assert [m for m in recorder.messages()[mark:] if isinstance(m, OrderFilled)] == []
    assert len(ibkr_threads()) == 1
    assert venue.connected_client_ids() == [CLIENT_ID]

    send(order("after", Side.SELL, 4))
    recorder.wait_for(of(OrderFilled, client_order_id="after"))
    send(CancelOrder(client_order_id="resting", venue=NAME, source="test"))  # named across lives
    recorder.wait_for(of(OrderCancelled, client_order_id="resting"))
    assert engine.open_orders(ACCOUNT) == []

    fills = recorder.messages(OrderFilled)
    venue_fill_ids = {e.fill_id for e in engine.executions(ACCOUNT)}
    assert {f.fill_id for f in fills} == venue_fill_ids and len(venue_fill_ids) == 2
    per_session = Counter(f.fill_id for f in recorder.messages()[mark:] if isinstance(f, OrderFilled))
    assert max(per_session.values()) == 1  # each session delivers a fill once

    send(RequestPositions(venue=NAME, request_id="after-restart"))
    report = recorder.wait_for(of(VenuePositions, request_id="after-restart"))
    assert [(p.symbol, p.quantity) for p in report.positions] == [("AAPL", Decimal(6))]


def test_orders_the_closing_session_never_placed_are_refused(
    venue: TwsVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    unblock = threading.Event()
    try:
        with running_connector(make_config(venue.port, symbols=()), tmp_path):
            recorder.wait_for(of(VenuePositions, request_id=""))  # resync done
            assert venue._loop is not None
            venue._loop.call_soon_threadsafe(unblock.wait, 5)  # the venue stops answering
            send(order("stranded-1"))  # waits for its contract, which never comes
            send(order("stranded-2", symbol="MSFT"))  # queued behind it
            recorder.wait_for(lambda m: isinstance(m, HealthReport) and m.messages_out >= 2)
        # The connector stopped with both orders unplaced: each is refused, none is lost.
        for coid in ("stranded-1", "stranded-2"):
            refused = recorder.wait_for(of(OrderRejected, client_order_id=coid))
            assert refused.reason is RejectReason.VENUE_DOWN
    finally:
        unblock.set()
    assert engine.open_orders(ACCOUNT) == [] and engine.executions(ACCOUNT) == []


def test_client_id_in_use_fails_fast_and_recovers(
    venue: TwsVenue, recorder: Recorder, tmp_path: Path
) -> None:
    holder = ClientIdHolder(venue.port, CLIENT_ID)
    try:
        started = time.monotonic()
        with running_connector(make_config(venue.port), tmp_path):
            refused = recorder.wait_for(of(ConnectorDown, name=NAME))
            assert time.monotonic() - started < 3.0  # not the connect timeout
            assert "326" in refused.reason and "client_id" in refused.reason
            assert recorder.messages(ConnectorUp) == []
            holder.close()
            recorder.wait_for(of(ConnectorUp, name=NAME, generation=0), timeout_s=10)  # retried inside
            assert venue.connected_client_ids() == [CLIENT_ID]
            assert len(ibkr_threads()) == 1
            assert recorder.messages(ChildExited) == []
    finally:
        holder.close()


def test_unreachable_venue_is_a_running_disconnected_connector(recorder: Recorder, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        started = time.monotonic()
        with running_connector(make_config(port), tmp_path):
            assert time.monotonic() - started < 2.0  # the start does not wait for the venue
            down = recorder.wait_for(of(ConnectorDown, name=NAME))
            assert "cannot connect" in down.reason
            recorder.wait_for(lambda m: isinstance(m, HealthReport) and not m.connected
                              and m.ts_ns > down.ts_ns + 1_000_000_000, timeout_s=5)  # still retrying
            send(order("while-down"))
            refused = recorder.wait_for(of(OrderRejected, client_order_id="while-down"))
            assert refused.reason is RejectReason.VENUE_DOWN
            assert len(ibkr_threads()) <= 1
            assert len(recorder.messages(ConnectorDown)) == 1
            assert recorder.messages(ChildExited) == []  # never restarted by its supervisor


def test_malformed_ticks_are_counted_and_skipped(
    tree: Tree, recorder: Recorder, engine: VenueEngine, venue: TwsVenue
) -> None:
    recorder.wait_for(shows(engine.quote("AAPL")))

    def garbage(market_data: dict[int, str]) -> list[list[object]]:
        (req,) = [r for r, symbol in market_data.items() if symbol == "AAPL"]
        return [
            [1, 6, req, 1, "nan", 100, 0],  # bid price NaN
            [1, 6, req, 2, "inf", 100, 0],  # ask price infinite
            [2, 6, req, 0, -5],  # negative bid size
            [1, 6, req, 4, 190, -3, 0],  # trade with a negative size
            [1, 6, req, 1, "abc", 1, 0],  # unreadable: ib_insync's decoder drops it
            [1, 6, req],  # too short
            [1, 6, 999_999, 1, 100, 1, 0],  # unknown request id
            ["not-a-message-id"],
        ]

    mark = recorder.count()
    write_to_sessions(venue, garbage)
    recorder.wait_for(lambda m: isinstance(m, HealthReport) and m.malformed == 4, after=mark)
    garbled = [quote_of(b, "AAPL") for b in recorder.messages()[mark:] if isinstance(b, QuoteBatch)]
    assert [q for q in garbled if q is not None] == []  # AAPL is skipped until both sides are sane

    engine.set_mid("AAPL", Decimal("195"))
    moved = engine.step()
    recorder.wait_for(shows(next(q for q in moved if q.symbol == "AAPL")), after=mark)
    send(order("still-trading", quantity=1))
    recorder.wait_for(of(OrderFilled, client_order_id="still-trading"))
    assert recorder.messages(ConnectorDown) == []


def test_ib_connectivity_codes(tree: Tree, recorder: Recorder, engine: VenueEngine, venue: TwsVenue) -> None:
    wait_for(lambda: sorted(subscriptions(venue).values()) == ["AAPL", "MSFT"], what="subscriptions")
    before = subscriptions(venue)
    write_to_sessions(venue, lambda _md: [[4, 2, -1, 1101, "Connectivity restored, data lost.", ""]])
    wait_for(lambda: sorted(subscriptions(venue).values()) == ["AAPL", "MSFT"]
             and not set(subscriptions(venue)) & set(before), what="market data renewed after 1101")
    mark = recorder.count()
    engine.set_mid("MSFT", Decimal("420"))
    moved = engine.step()
    recorder.wait_for(shows(next(q for q in moved if q.symbol == "MSFT")), after=mark)
    assert recorder.messages(ConnectorDown) == []

    # 1100 halts the venue on the same session; 1102 ends the halt.
    write_to_sessions(venue, lambda _md: [[4, 2, -1, 1100, "Connectivity between IB and TWS lost.", ""]])
    down = recorder.wait_for(of(ConnectorDown, name=NAME), after=mark)
    assert "1100" in down.reason
    write_to_sessions(venue, lambda _md: [[4, 2, -1, 1102, "Connectivity restored, data kept.", ""]])
    recorder.wait_for(of(ConnectorUp, name=NAME, generation=0), timeout_s=10, after=mark)
    assert venue.connected_client_ids() == [CLIENT_ID]


def test_a_flood_of_ticks_is_conflated_and_the_last_quote_arrives(
    venue: TwsVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    def last_quote(symbol: str) -> Quote | None:
        quotes = [quote_of(b, symbol) for b in recorder.messages(QuoteBatch)]
        return next((q for q in reversed(quotes) if q is not None), None)

    def same(quote: Quote | None, expected: Quote | None) -> bool:
        assert expected is not None
        return quote is not None and (quote.bid, quote.ask) == (expected.bid, expected.ask)

    with running_connector(make_config(venue.port, max_batches_in_flight=1), tmp_path):
        recorder.wait_for(of(ConnectorUp, name=NAME))
        recorder.wait_for(shows(engine.quote("AAPL")))
        recorder.wait_for(shows(engine.quote("MSFT")))
        for i in range(2000):
            engine.set_mid("AAPL", Decimal(190 + i % 7))
            engine.set_mid("MSFT", Decimal(410 + i % 5))
            engine.step()
        # Whatever was conflated on the way, the newest quote of each symbol gets through.
        wait_for(lambda: same(last_quote("AAPL"), engine.quote("AAPL")), what="last AAPL quote")
        wait_for(lambda: same(last_quote("MSFT"), engine.quote("MSFT")), what="last MSFT quote")
        assert recorder.messages(ConnectorDown) == []


def test_quote_gate_bounds_what_waits_for_the_actor() -> None:
    def quote(symbol: str, bid: int) -> Quote:
        return Quote(venue=NAME, symbol=symbol, bid=Decimal(bid), ask=Decimal(bid + 1),
                     bid_size=Decimal(1), ask_size=Decimal(1))

    def trade(price: int) -> Trade:
        return Trade(venue=NAME, symbol="AAPL", price=Decimal(price), size=Decimal(1))

    gate = _QuoteGate(limit=1, max_trades=3)
    assert gate.take() is None
    assert gate.offer([quote("AAPL", 1)], [trade(1)]) == 0
    first = gate.take()
    assert first is not None and [q.bid for q in first[0]] == [1] and len(first[1]) == 1

    # The actor has not handled the first batch yet: new data waits, newest quote per symbol.
    assert gate.offer([quote("AAPL", 2), quote("MSFT", 5)], [trade(2), trade(3)]) == 0
    assert gate.offer([quote("AAPL", 3)], [trade(4), trade(5)]) == 2  # AAPL@2 and trade 2 out
    assert gate.take() is None
    assert gate.release() is True  # something waits for the room just freed
    quotes, trades = gate.take() or ((), ())
    assert sorted((q.symbol, q.bid) for q in quotes) == [("AAPL", Decimal(3)), ("MSFT", Decimal(5))]
    assert [t.price for t in trades] == [Decimal(3), Decimal(4), Decimal(5)]
    assert gate.release() is False
    assert gate.take() is None


def test_stopping_closes_the_session_and_the_thread(
    venue: TwsVenue, recorder: Recorder, tmp_path: Path
) -> None:
    baseline = set(threading.enumerate())
    with running_connector(make_config(venue.port), tmp_path):
        recorder.wait_for(of(ConnectorUp, name=NAME))
        assert len(ibkr_threads()) == 1
    recorder.wait_for(of(ConnectorDown, name=NAME))
    wait_for(lambda: venue.connected_client_ids() == [], what="the venue to see the session end")
    started = {t.name for t in set(threading.enumerate()) - baseline}
    assert started <= {"tg-timers"}  # the kernel's shared timer thread may start on first use


def test_config_checks_its_fields() -> None:
    assert IbkrConfig(name="ib").kind == "ibkr"
    defaults = IbkrConfig(name="ib")
    assert (defaults.host, defaults.port, defaults.client_id, defaults.account) == ("127.0.0.1", 7497, 17, "")
    for bad in ({"port": 0}, {"client_id": -1}, {"request_timeout_s": 0}, {"max_batches_in_flight": 0},
                {"host": ""}, {"book_settle_s": -1}, {"book_settle_s": 6}, {"reconnect_initial_s": 0},
                {"reconnect_max_s": float("inf")}, {"connect_timeout_s": float("nan")}):
        with pytest.raises(ValueError):
            IbkrConfig(name="ib", **bad)
    assert (defaults.probe_interval_s, defaults.probe_timeout_s, defaults.stale_after_s) == (1.0, 0.5, 5.0)
    for field, bad_settings in (
        ("probe_interval_s", {"probe_interval_s": 0.01}),
        ("probe_interval_s", {"probe_interval_s": float("nan")}),
        ("probe_timeout_s", {"probe_timeout_s": 0}),
        ("probe_timeout_s", {"probe_timeout_s": 3601}),
        ("stale_after_s", {"stale_after_s": -1}),
        ("late_ack_warn_s", {"late_ack_warn_s": 0}),
    ):
        with pytest.raises(ValueError, match=field):
            IbkrConfig(name="ib", **bad_settings)


# --------------------------------------------------------------------------- the L1 book


def tick(req: int, tick_type: int, price: float, size: int) -> list[object]:
    """An IB TICK_PRICE frame (version 6): request id, tick type, price, size, attributes."""
    return [1, 6, req, tick_type, price, size, 0]


def req_of(market_data: dict[int, str], symbol: str) -> int:
    return next(r for r, s in market_data.items() if s == symbol)


def crossed_quotes(recorder: Recorder, symbol: str) -> list[Quote]:
    quotes = [quote_of(b, symbol) for b in recorder.messages(QuoteBatch)]
    return [q for q in quotes if q is not None and q.bid > q.ask]


def test_bid_and_ask_in_separate_writes_make_one_consistent_quote(
    tree: Tree, recorder: Recorder, engine: VenueEngine, venue: TwsVenue
) -> None:
    recorder.wait_for(shows(engine.quote("AAPL")))
    recorder.wait_for(shows(engine.quote("MSFT")))
    old = engine.quote("AAPL")
    assert old is not None and Decimal("190.5") > old.ask
    # The market moves up: the new bid (through the old ask) arrives first, with a marker
    # tick of another symbol in the same write, so the read holding it is known processed.
    mark = recorder.count()
    write_to_sessions(venue, lambda md: [tick(req_of(md, "AAPL"), 1, 190.5, 300),
                                         tick(req_of(md, "MSFT"), 1, 409.5, 200)])
    recorder.wait_for(lambda m: isinstance(m, QuoteBatch) and (q := quote_of(m, "MSFT")) is not None
                      and q.bid == Decimal("409.5"), after=mark)
    assert crossed_quotes(recorder, "AAPL") == []  # the half-updated book is held
    write_to_sessions(venue, lambda md: [tick(req_of(md, "AAPL"), 2, 190.6, 400)])
    moved = recorder.wait_for(lambda m: isinstance(m, QuoteBatch) and (q := quote_of(m, "AAPL")) is not None
                              and q.ask == Decimal("190.6"), after=mark)
    quote = quote_of(moved, "AAPL")
    assert quote is not None
    assert (quote.bid, quote.bid_size, quote.ask, quote.ask_size) == (
        Decimal("190.5"), Decimal(300), Decimal("190.6"), Decimal(400))
    assert crossed_quotes(recorder, "AAPL") == []
    assert recorder.messages(SafetyEvent) == []


def test_a_crossed_book_that_persists_is_published_for_the_safety_checks(
    venue: TwsVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    with running_connector(make_config(venue.port, book_settle_s=0.3), tmp_path):
        recorder.wait_for(shows(engine.quote("AAPL")))
        recorder.wait_for(shows(engine.quote("MSFT")))
        mark = recorder.count()
        write_to_sessions(venue, lambda md: [tick(req_of(md, "AAPL"), 1, 190.5, 300),
                                             tick(req_of(md, "MSFT"), 1, 409.5, 200)])
        recorder.wait_for(lambda m: isinstance(m, QuoteBatch) and (q := quote_of(m, "MSFT")) is not None
                          and q.bid == Decimal("409.5"), after=mark)
        crossed = recorder.wait_for(lambda m: isinstance(m, QuoteBatch) and (q := quote_of(m, "AAPL"))
                                    is not None and q.bid > q.ask, timeout_s=5, after=mark)
        quote = quote_of(crossed, "AAPL")
        assert quote is not None and quote.bid == Decimal("190.5")
        assert crossed.recv_ns - quote.ts_ns >= 300_000_000  # held the settle time first


def _crossed_while_the_market_climbs(tmp_path: Path, recorder: Recorder, settle_s: float) -> list[Quote]:
    """A fake TWS writing the bid side, then (after 30 ms) the ask side, while the market
    climbs by more than its spread at every step; the quotes the connector published
    crossed. Ends once the connector shows the engine's last quote."""
    engine = make_engine()
    tws = TwsVenue(engine, behaviour=TwsBehaviour(coalesce_quotes=False, quote_split_delay_s=0.03))
    tws.start()
    try:
        with running_connector(make_config(tws.port, book_settle_s=settle_s), tmp_path):
            recorder.wait_for(shows(engine.quote("AAPL")), timeout_s=10)
            for step in range(1, 16):
                engine.set_mid("AAPL", Decimal(190 + step))  # each new bid is above the old ask
                moved = engine.step()
                recorder.wait_for(shows(next(q for q in moved if q.symbol == "AAPL")), timeout_s=5)
            return crossed_quotes(recorder, "AAPL")
    finally:
        tws.stop()


def test_a_tws_writing_bid_and_ask_apart_never_shows_a_crossed_quote(
    recorder: Recorder, tmp_path: Path
) -> None:
    assert _crossed_while_the_market_climbs(tmp_path, recorder, settle_s=0.5) == []


def test_without_the_book_hold_the_same_market_shows_crossed_quotes(
    recorder: Recorder, tmp_path: Path
) -> None:
    """The control: the half-updated books the hold keeps back are really there."""
    assert _crossed_while_the_market_climbs(tmp_path, recorder, settle_s=0.0) != []
