"""The fake TWS against a real, unmodified ib_insync client over loopback TCP."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from ib_insync import IB, Forex, LimitOrder, MarketOrder, Order, Stock, StopOrder

from messages import Side
from venues.engine import EngineConfig, VenueEngine
from venues.tws_venue import SERVER_VERSION, TwsVenue

HOST = "127.0.0.1"
ACCOUNT = "DU000001"
REPO_ROOT = Path(__file__).resolve().parents[2]


def make_engine(**overrides: object) -> VenueEngine:
    """A calm market (no random moves) showing 100 at each side, first quotes published."""
    config = EngineConfig(
        symbols={"AAPL": Decimal("190"), "MSFT": Decimal("410"), "EURUSD": Decimal("1.1")},
        volatility_bps=Decimal(0),
        depth=Decimal(100),
        **overrides,  # type: ignore[arg-type]
    )
    engine = VenueEngine("tws", config)
    engine.step()
    return engine


def wait_until(ib: IB, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run the client's loop until ``condition`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        ib.sleep(0.01)


def wait_for_disconnect(ib: IB, timeout: float = 5.0) -> None:
    """Run the client's loop until it notices that its socket is gone."""
    deadline = time.monotonic() + timeout
    while ib.isConnected():
        if time.monotonic() > deadline:
            raise AssertionError(f"still connected after {timeout} s")
        try:
            ib.sleep(0.01)
        except ConnectionError:
            pass  # ib_insync raises the disconnect out of whatever was running


def error_codes(ib: IB) -> list[tuple[int, int]]:
    """(reqId, code) of every error the client receives from now on."""
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, _text, _contract: seen.append((req_id, code))
    return seen


@pytest.fixture(autouse=True)
def _event_loop_for_ib_insync() -> Iterator[None]:
    """ib_insync runs in this thread on the thread's event loop; a test that used
    asyncio.run() before (Textual's pilot does) leaves none set, so give each test its own."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


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
def clients() -> Iterator[list[IB]]:
    """Every IB client a test opens; all disconnected at teardown."""
    opened: list[IB] = []
    yield opened
    for client in opened:
        client.disconnect()


@pytest.fixture
def connect(venue: TwsVenue, clients: list[IB]) -> Callable[..., IB]:
    def _connect(client_id: int = 1, timeout: float = 5) -> IB:
        client = IB()
        clients.append(client)
        client.connect(HOST, venue.port, clientId=client_id, timeout=timeout)
        return client

    return _connect


@pytest.fixture
def ib(connect: Callable[..., IB]) -> IB:
    return connect(1)


@pytest.fixture
def aapl(ib: IB) -> Stock:
    contract = Stock("AAPL", "SMART", "USD")
    assert ib.qualifyContracts(contract) == [contract]
    return contract


# --------------------------------------------------------------------------- session


def test_connect_synchronises_and_reports_account(ib: IB, venue: TwsVenue) -> None:
    assert ib.isConnected()
    assert ib.client.serverVersion() == SERVER_VERSION
    assert ib.managedAccounts() == [ACCOUNT]
    assert venue.connected_client_ids() == [1]
    assert ib.positions() == []
    assert ib.openTrades() == []
    assert abs(ib.reqCurrentTime().timestamp() - time.time()) < 5


def test_duplicate_client_id_is_refused_with_326(
    ib: IB, venue: TwsVenue, clients: list[IB]
) -> None:
    second = IB()
    clients.append(second)
    seen = error_codes(second)
    with pytest.raises(TimeoutError):
        second.connect(HOST, venue.port, clientId=1, timeout=1)
    assert (-1, 326) in seen
    assert not second.isConnected()
    assert venue.connected_client_ids() == [1]
    assert ib.reqCurrentTime() is not None  # the first session is untouched


def test_two_client_ids_connect_side_by_side(
    ib: IB, venue: TwsVenue, connect: Callable[..., IB]
) -> None:
    second = connect(2)
    assert second.isConnected()
    assert venue.connected_client_ids() == [1, 2]


# --------------------------------------------------------------------------- contracts, data


def test_qualify_stock_and_forex_and_unknown_contract(ib: IB) -> None:
    stock = Stock("AAPL", "SMART", "USD")
    fx = Forex("EURUSD")
    assert ib.qualifyContracts(stock, fx) == [stock, fx]
    assert stock.conId > 0 and stock.secType == "STK" and stock.exchange == "SMART"
    assert fx.conId > 0 and fx.secType == "CASH" and fx.localSymbol == "EUR.USD"
    assert stock.conId != fx.conId

    seen = error_codes(ib)
    assert ib.qualifyContracts(Stock("NOPE", "SMART", "USD")) == []
    assert any(code == 200 for _, code in seen)


def test_market_data_ticks_follow_the_engine_until_cancelled(
    ib: IB, engine: VenueEngine, aapl: Stock
) -> None:
    ticker = ib.reqMktData(aapl)
    first = engine.quote("AAPL")
    assert first is not None
    wait_until(ib, lambda: ticker.bid == float(first.bid) and ticker.ask == float(first.ask))
    assert ticker.bidSize == float(first.bid_size)

    engine.set_mid("AAPL", Decimal("200"))
    moved = engine.step()[0]
    wait_until(ib, lambda: ticker.bid == float(moved.bid) and ticker.ask == float(moved.ask))
    assert 199 < ticker.bid < ticker.ask < 201

    ib.cancelMktData(aapl)
    ib.reqCurrentTime()  # round trip: the venue has read the cancel
    engine.set_mid("AAPL", Decimal("210"))
    engine.step()
    ib.reqCurrentTime()  # round trip: a tick sent for that step would have arrived
    assert ticker.bid == float(moved.bid)


def test_snapshot_market_data(ib: IB, engine: VenueEngine, aapl: Stock) -> None:
    (ticker,) = ib.reqTickers(aapl)
    quote = engine.quote("AAPL")
    assert quote is not None
    assert (ticker.bid, ticker.ask) == (float(quote.bid), float(quote.ask))


# --------------------------------------------------------------------------- orders


def test_market_order_fills_at_the_ask(ib: IB, engine: VenueEngine, aapl: Stock) -> None:
    quote = engine.quote("AAPL")
    assert quote is not None
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 10))
    wait_until(ib, trade.isDone)
    assert trade.orderStatus.status == "Filled"
    assert [fill.execution.shares for fill in trade.fills] == [10.0]
    fill = trade.fills[0]
    assert fill.execution.price == float(quote.ask)
    assert fill.execution.side == "BOT"
    assert fill.commissionReport.execId == fill.execution.execId
    assert engine.executions(ACCOUNT)[0].fill_id == fill.execution.execId
    assert engine.executions(ACCOUNT)[0].client_order_id == f"ib-1-{trade.order.orderId}"
    wait_until(ib, lambda: [p.position for p in ib.positions()] == [10.0])
    assert [(p.symbol, p.quantity) for p in engine.positions(ACCOUNT)] == [("AAPL", Decimal(10))]


def test_partial_fills_are_visible(ib: IB, engine: VenueEngine, aapl: Stock) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 250))
    wait_until(ib, lambda: trade.orderStatus.filled == 100)
    assert trade.orderStatus.status == "Submitted"
    assert trade.orderStatus.remaining == 150
    assert not trade.isDone()

    engine.step()
    wait_until(ib, lambda: trade.orderStatus.filled == 200)
    assert not trade.isDone()
    engine.step()
    wait_until(ib, trade.isDone)
    assert trade.orderStatus.status == "Filled"
    assert [fill.execution.shares for fill in trade.fills] == [100.0, 100.0, 50.0]
    assert [fill.execution.cumQty for fill in trade.fills] == [100.0, 200.0, 250.0]
    assert engine.positions(ACCOUNT)[0].quantity == Decimal(250)


def test_limit_order_rests_then_cancels(ib: IB, engine: VenueEngine, aapl: Stock) -> None:
    with_ref = ib.placeOrder(aapl, LimitOrder("BUY", 10, 150, orderRef="strategy-7"))
    plain = ib.placeOrder(aapl, LimitOrder("BUY", 5, 150))
    wait_until(ib, lambda: with_ref.orderStatus.status == plain.orderStatus.status == "Submitted")
    working = {w.order.client_order_id for w in engine.open_orders(ACCOUNT)}
    assert working == {"strategy-7", f"ib-1-{plain.order.orderId}"}

    ib.cancelOrder(with_ref.order)
    wait_until(ib, lambda: with_ref.orderStatus.status == "Cancelled")
    assert with_ref.fills == []
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == [
        f"ib-1-{plain.order.orderId}"
    ]
    assert plain.orderStatus.status == "Submitted"


def test_modification_by_place_order_with_the_same_id(
    ib: IB, engine: VenueEngine, aapl: Stock
) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 150))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    perm_id = trade.orderStatus.permId
    seen = error_codes(ib)

    trade.order.lmtPrice = 151
    trade.order.totalQuantity = 12
    ib.placeOrder(aapl, trade.order)
    wait_until(ib, lambda: [w.order.limit_price for w in engine.open_orders(ACCOUNT)]
               == [Decimal(151)])
    (working,) = engine.open_orders(ACCOUNT)
    assert working.order.quantity == Decimal(12)
    wait_until(ib, lambda: trade.orderStatus.remaining == 12)
    assert trade.orderStatus.status == "Submitted"
    assert trade.orderStatus.permId == perm_id
    assert seen == []

    trade.order.lmtPrice = 191  # through the ask: fills at once
    ib.placeOrder(aapl, trade.order)
    wait_until(ib, trade.isDone)
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.filled == 12
    assert [f.execution.orderId for f in trade.fills] == [trade.order.orderId]
    assert engine.positions(ACCOUNT)[0].quantity == Decimal(12)


def test_modification_after_a_partial_fill_keeps_the_filled_part(
    ib: IB, engine: VenueEngine, aapl: Stock
) -> None:
    quote = engine.quote("AAPL")
    assert quote is not None
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 150, float(quote.ask)))
    wait_until(ib, lambda: trade.orderStatus.filled == 100)  # 100 shown at the ask
    trade.order.totalQuantity = 120
    trade.order.lmtPrice = 150
    ib.placeOrder(aapl, trade.order)
    wait_until(ib, lambda: [w.order.quantity for w in engine.open_orders(ACCOUNT)]
               == [Decimal(20)])
    wait_until(ib, lambda: trade.orderStatus.remaining == 20)
    assert trade.orderStatus.filled == 100
    assert trade.orderStatus.status == "Submitted"

    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled")
    assert engine.open_orders(ACCOUNT) == []
    assert engine.positions(ACCOUNT)[0].quantity == Decimal(100)


def _engine_with_latency() -> tuple[VenueEngine, list[float]]:
    """A calm engine whose orders and cancels take effect 0.2 s (of a clock the test moves)
    after they are sent."""
    now = [0.0]
    config = EngineConfig(symbols={"AAPL": Decimal("190")}, volatility_bps=Decimal(0),
                          depth=Decimal(100), latency_ms=200)
    engine = VenueEngine("tws", config, clock=lambda: now[0])
    engine.step()
    return engine, now


def _settle(ib: IB, engine: VenueEngine, now: list[float], condition: Callable[[], bool]) -> None:
    """Let the engine's latency elapse for whatever has been sent, again and again (the
    venue sends some requests only on engine events), until ``condition`` holds."""

    def settled() -> bool:
        now[0] += 1
        engine.pump()
        return condition()

    wait_until(ib, settled)


def test_an_order_that_fills_before_its_modification_lands_is_not_overfilled(
    clients: list[IB],
) -> None:
    engine, now = _engine_with_latency()
    tws = TwsVenue(engine)
    client = IB()
    clients.append(client)
    try:
        client.connect(HOST, tws.start(), clientId=1, timeout=5)
        seen = error_codes(client)
        contract = Stock("AAPL", "SMART", "USD")
        client.qualifyContracts(contract)
        trade = client.placeOrder(contract, LimitOrder("BUY", 10, 150))
        client.reqCurrentTime()  # round trip: the venue has the order
        _settle(client, engine, now, lambda: trade.orderStatus.status == "Submitted")

        trade.order.totalQuantity = 12
        client.placeOrder(contract, trade.order)
        client.reqCurrentTime()  # the venue has the modification; its cancel is on its way
        engine.set_mid("AAPL", Decimal(149))
        engine.step()  # the original fills in full before the cancel takes effect
        wait_until(client, lambda: trade.orderStatus.filled == 10)
        _settle(client, engine, now, lambda: (trade.order.orderId, 104) in seen)
        wait_until(client, lambda: trade.orderStatus.status == "Filled")
        now[0] += 1
        engine.step()
        client.reqCurrentTime()
        assert engine.positions(ACCOUNT)[0].quantity == Decimal(10)
        assert engine.open_orders(ACCOUNT) == []
        assert trade.orderStatus.filled == 10
    finally:
        client.disconnect()
        tws.stop()


def test_a_modification_with_latency_replaces_once_the_cancel_lands(clients: list[IB]) -> None:
    engine, now = _engine_with_latency()
    tws = TwsVenue(engine)
    client = IB()
    clients.append(client)
    try:
        client.connect(HOST, tws.start(), clientId=1, timeout=5)
        contract = Stock("AAPL", "SMART", "USD")
        client.qualifyContracts(contract)
        trade = client.placeOrder(contract, LimitOrder("BUY", 10, 150))
        client.reqCurrentTime()
        _settle(client, engine, now, lambda: trade.orderStatus.status == "Submitted")
        trade.order.totalQuantity = 12
        client.placeOrder(contract, trade.order)
        client.reqCurrentTime()
        _settle(client, engine, now, lambda: [w.order.quantity for w in
                                              engine.open_orders(ACCOUNT)] == [Decimal(12)])
        wait_until(client, lambda: trade.orderStatus.remaining == 12)

        trade.order.totalQuantity = 5
        client.placeOrder(contract, trade.order)
        client.cancelOrder(trade.order)  # while the modification waits for its cancel
        client.reqCurrentTime()
        _settle(client, engine, now, lambda: trade.orderStatus.status == "Cancelled")
        now[0] += 1
        engine.pump()
        client.reqCurrentTime()
        assert engine.open_orders(ACCOUNT) == []
    finally:
        client.disconnect()
        tws.stop()


def test_modifications_tws_refuses_leave_the_order_working(
    ib: IB, engine: VenueEngine, aapl: Stock
) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 150))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    seen = error_codes(ib)
    flipped = LimitOrder("SELL", 10, 150, orderId=trade.order.orderId)
    ib.client.placeOrder(trade.order.orderId, aapl, flipped)
    wait_until(ib, lambda: (trade.order.orderId, 105) in seen)
    ib.client.placeOrder(trade.order.orderId, Stock("MSFT", "SMART", "USD", conId=0),
                         LimitOrder("BUY", 10, 150, orderId=trade.order.orderId))
    wait_until(ib, lambda: seen.count((trade.order.orderId, 105)) == 2)
    (working,) = engine.open_orders(ACCOUNT)
    assert (working.order.side, working.order.limit_price) == (Side.BUY, Decimal(150))
    assert trade.orderStatus.status == "Submitted"

    filled = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    wait_until(ib, filled.isDone)
    ib.client.placeOrder(filled.order.orderId, aapl, MarketOrder("BUY", 2))
    wait_until(ib, lambda: (filled.order.orderId, 104) in seen)
    assert engine.positions(ACCOUNT)[0].quantity == Decimal(1)


def test_stop_order_triggers_when_touched(ib: IB, engine: VenueEngine, aapl: Stock) -> None:
    trade = ib.placeOrder(aapl, StopOrder("SELL", 5, 185))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    engine.set_mid("AAPL", Decimal("184"))
    engine.step()
    wait_until(ib, trade.isDone)
    assert trade.orderStatus.status == "Filled"
    assert trade.fills[0].execution.price < 185
    assert engine.positions(ACCOUNT)[0].quantity == Decimal(-5)


def test_global_cancel_cancels_every_client_s_orders(
    ib: IB, engine: VenueEngine, aapl: Stock, connect: Callable[..., IB]
) -> None:
    other = connect(2)
    other_contract = Stock("MSFT", "SMART", "USD")
    other.qualifyContracts(other_contract)
    mine = [ib.placeOrder(aapl, LimitOrder("BUY", 1, 150)) for _ in range(2)]
    theirs = other.placeOrder(other_contract, LimitOrder("SELL", 1, 500))
    wait_until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in mine))
    wait_until(other, lambda: theirs.orderStatus.status == "Submitted")
    assert len(engine.open_orders(ACCOUNT)) == 3

    ib.reqGlobalCancel()
    wait_until(ib, lambda: all(t.orderStatus.status == "Cancelled" for t in mine))
    wait_until(other, lambda: theirs.orderStatus.status == "Cancelled")
    assert engine.open_orders(ACCOUNT) == []


def test_open_orders_are_replayed_on_reconnect(
    ib: IB, venue: TwsVenue, aapl: Stock, connect: Callable[..., IB]
) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 3, 150, orderRef="keep"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    ib.disconnect()
    wait_until(ib, lambda: venue.connected_client_ids() == [])

    again = connect(1)
    (restored,) = again.openTrades()
    assert restored.order.orderId == trade.order.orderId
    assert restored.order.orderRef == "keep"
    assert restored.orderStatus.remaining == 3
    assert again.client.getReqId() > trade.order.orderId


def test_rejects_and_errors_carry_ib_codes(ib: IB, engine: VenueEngine, aapl: Stock) -> None:
    seen = error_codes(ib)
    unknown = ib.placeOrder(Stock("NOPE", "SMART", "USD", conId=0), MarketOrder("BUY", 1))
    trailing = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, orderType="TRAIL"))
    first = ib.placeOrder(aapl, LimitOrder("BUY", 1, 150, orderRef="same"))
    second = ib.placeOrder(aapl, LimitOrder("BUY", 1, 150, orderRef="same"))
    ib.client.cancelOrder(99_999)
    filled = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    wait_until(ib, filled.isDone)
    ib.client.cancelOrder(filled.order.orderId)
    wait_until(ib, lambda: len(seen) >= 5)
    assert (filled.order.orderId, 161) in seen
    assert (unknown.order.orderId, 200) in seen
    assert (trailing.order.orderId, 201) in seen
    assert (second.order.orderId, 103) in seen
    assert (99_999, 10147) in seen
    assert unknown.orderStatus.status == trailing.orderStatus.status == "Cancelled"
    assert first.orderStatus.status == "Submitted"
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == ["same"]


def test_venue_reject_is_error_201(clients: list[IB]) -> None:
    engine = make_engine(reject_rate=1.0)
    tws = TwsVenue(engine)
    port = tws.start()
    try:
        client = IB()
        clients.append(client)
        client.connect(HOST, port, clientId=1, timeout=5)
        seen = error_codes(client)
        contract = Stock("AAPL", "SMART", "USD")
        client.qualifyContracts(contract)
        trade = client.placeOrder(contract, MarketOrder("BUY", 1))
        wait_until(client, trade.isDone)
        assert (trade.order.orderId, 201) in seen
        assert engine.executions(ACCOUNT) == []
    finally:
        client.disconnect()
        tws.stop()


# --------------------------------------------------------------------------- faults


def _prefixed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _frame(*fields: object) -> bytes:
    return _prefixed("".join(f"{field}\0" for field in fields).encode())


class RawClient:
    """A hand-rolled IB API socket, to send what no proper client would."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=3)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def handshake(self, client_id: int) -> None:
        self.sock.sendall(b"API\0" + _prefixed(b"v157..176"))
        assert self.read()[0] == str(SERVER_VERSION)
        self.sock.sendall(_frame(71, 2, client_id, ""))
        assert self.read()[0] == "9"  # nextValidId

    def read(self) -> list[str]:
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) >= 4 + size:
                    payload, self.buffer = self.buffer[4 : 4 + size], self.buffer[4 + size :]
                    return payload.decode().split("\0")[:-1]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the venue")
            self.buffer += chunk

    def read_error(self) -> tuple[int, int]:
        """Skip other messages and notices up to the next error; return (reqId, code)."""
        for _ in range(50):
            fields = self.read()
            if fields[0] == "4" and not 2100 <= int(fields[3]) < 2200:
                return int(fields[2]), int(fields[3])
        raise AssertionError("no error message")

    def closed_by_peer(self) -> bool:
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        return True


def test_garbage_is_answered_or_dropped_and_others_keep_trading(
    ib: IB, venue: TwsVenue, engine: VenueEngine, aapl: Stock
) -> None:
    not_ib = RawClient(venue.port)
    not_ib.sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert not_ib.closed_by_peer()
    not_ib.close()

    raw = RawClient(venue.port)
    try:
        raw.handshake(client_id=7)
        raw.sock.sendall(_frame(3, "not-an-order-id"))
        assert raw.read_error() == (-1, 320)
        raw.sock.sendall(_frame(9, 8, 42, 0, "AAPL"))  # reqContractDetails cut short
        assert raw.read_error() == (42, 320)
        raw.sock.sendall(_frame(999, 1))
        assert raw.read_error() == (-1, 321)
        raw.sock.sendall(_frame("\xff\x00junk"))
        assert raw.read_error() == (-1, 320)
        raw.sock.sendall(_frame(49, 1))  # the session still answers reqCurrentTime
        assert raw.read()[0] == "49"
        raw.sock.sendall(b"\xff\xff\xff\xff")  # absurd frame length: the venue hangs up
        assert raw.closed_by_peer()
    finally:
        raw.close()

    assert venue.malformed_requests >= 6
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    wait_until(ib, trade.isDone)
    assert trade.orderStatus.status == "Filled"
    assert venue.connected_client_ids() == [1]


def test_request_before_start_api_is_refused(venue: TwsVenue) -> None:
    raw = RawClient(venue.port)
    try:
        raw.sock.sendall(b"API\0" + _prefixed(b"v176"))
        assert raw.read()[0] == str(SERVER_VERSION)
        raw.sock.sendall(_frame(61, 1))  # reqPositions
        assert raw.read_error() == (-1, 321)
    finally:
        raw.close()


def test_kill_connections_then_reconnect(
    ib: IB, venue: TwsVenue, aapl: Stock, clients: list[IB]
) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 4))
    wait_until(ib, trade.isDone)
    venue.kill_connections()
    wait_for_disconnect(ib)
    assert venue.connected_client_ids() == []

    ib.connect(HOST, venue.port, clientId=1, timeout=5)
    assert ib.isConnected()
    assert [p.position for p in ib.positions()] == [4.0]
    assert trade.fills[0].execution.execId in {f.execution.execId for f in ib.fills()}


# --------------------------------------------------------------------------- persistence


def test_restarted_venue_keeps_positions_orders_and_ids(tmp_path: Path, clients: list[IB]) -> None:
    engine_path, tws_path = tmp_path / "engine.json", tmp_path / "tws.json"
    client = IB()
    clients.append(client)

    engine = make_engine()
    tws = TwsVenue(engine, state_path=tws_path)
    port = tws.start()
    try:
        client.connect(HOST, port, clientId=1, timeout=5)
        contract = Stock("AAPL", "SMART", "USD")
        client.qualifyContracts(contract)
        bought = client.placeOrder(contract, MarketOrder("BUY", 10))
        resting = client.placeOrder(contract, LimitOrder("BUY", 2, 150, orderRef="rest"))
        wait_until(client, lambda: bought.isDone() and resting.orderStatus.status == "Submitted")
        client.disconnect()
    finally:
        tws.stop()
    engine.save(engine_path)

    engine = make_engine()
    engine.load(engine_path)
    tws = TwsVenue(engine, state_path=tws_path)
    port = tws.start()
    client = IB()  # a fresh client: nothing cached from the first session
    clients.append(client)
    try:
        client.connect(HOST, port, clientId=1, timeout=5)
        assert [(p.contract.symbol, p.position) for p in client.positions()] == [("AAPL", 10.0)]
        fills = {f.execution.execId: f.execution for f in client.fills()}
        execution = fills[bought.fills[0].execution.execId]
        assert (execution.orderId, execution.permId) == (bought.order.orderId, bought.order.permId)
        (restored,) = client.openTrades()
        assert restored.order.orderId == resting.order.orderId
        assert client.client.getReqId() > resting.order.orderId

        client.cancelOrder(restored.order)
        wait_until(client, lambda: restored.orderStatus.status == "Cancelled")
        assert engine.open_orders(ACCOUNT) == []
    finally:
        client.disconnect()
        tws.stop()


def test_a_modified_order_is_still_that_order_after_a_venue_restart(
    tmp_path: Path, clients: list[IB]
) -> None:
    engine_path, tws_path = tmp_path / "engine.json", tmp_path / "tws.json"
    engine = make_engine()
    tws = TwsVenue(engine, state_path=tws_path)
    client = IB()
    clients.append(client)
    try:
        client.connect(HOST, tws.start(), clientId=1, timeout=5)
        contract = Stock("AAPL", "SMART", "USD")
        client.qualifyContracts(contract)
        trade = client.placeOrder(contract, LimitOrder("BUY", 4, 150))
        wait_until(client, lambda: trade.orderStatus.status == "Submitted")
        trade.order.lmtPrice = 152
        client.placeOrder(contract, trade.order)
        wait_until(client, lambda: [w.order.limit_price for w in engine.open_orders(ACCOUNT)]
                   == [Decimal(152)])
        client.disconnect()
    finally:
        tws.stop()
    engine.save(engine_path)

    engine = make_engine()
    engine.load(engine_path)
    tws = TwsVenue(engine, state_path=tws_path)
    client = IB()
    clients.append(client)
    try:
        client.connect(HOST, tws.start(), clientId=1, timeout=5)
        (restored,) = client.openTrades()
        assert (restored.order.orderId, restored.order.lmtPrice) == (trade.order.orderId, 152)
        assert restored.order.permId == trade.order.permId
        engine.set_mid("AAPL", Decimal(151))
        engine.step()
        wait_until(client, restored.isDone)
        assert restored.orderStatus.status == "Filled"
        assert [f.execution.orderId for f in restored.fills] == [trade.order.orderId]
    finally:
        client.disconnect()
        tws.stop()


def _start_process(state_dir: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "venues.tws_venue", "--port", "0", "--state-dir", str(state_dir)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    if not ready:
        proc.kill()
        raise AssertionError("venue process did not report its port")
    line = proc.stdout.readline()
    return proc, int(line.rsplit(":", 1)[1])


def _stop_process(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_main_process_keeps_its_account_across_restarts(
    tmp_path: Path, clients: list[IB]
) -> None:
    client = IB()
    clients.append(client)
    proc, port = _start_process(tmp_path)
    try:
        client.connect(HOST, port, clientId=1, timeout=5)
        contract = Stock("MSFT", "SMART", "USD")
        client.qualifyContracts(contract)
        trade = client.placeOrder(contract, MarketOrder("SELL", 3))
        wait_until(client, trade.isDone)
        client.disconnect()
    finally:
        assert _stop_process(proc) == 0
    assert (tmp_path / "engine.json").exists() and (tmp_path / "tws.json").exists()

    proc, port = _start_process(tmp_path)
    client = IB()  # a fresh client: nothing cached from the first session
    clients.append(client)
    try:
        client.connect(HOST, port, clientId=1, timeout=5)
        assert [(p.contract.symbol, p.position) for p in client.positions()] == [("MSFT", -3.0)]
        assert client.client.getReqId() > trade.order.orderId
        client.disconnect()
    finally:
        assert _stop_process(proc) == 0
