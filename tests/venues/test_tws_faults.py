"""The fake TWS's switches for what real TWS does that a client must survive: connectivity
codes, orders lost in flight, executions nobody here placed, executions while the client
is away, trade corrections, an ignored global cancel. Real clients over loopback TCP."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from ib_insync import IB, LimitOrder, MarketOrder, Stock
from ibapi.execution import ExecutionFilter

from messages import Side
from tests.venues.tws_helpers import ACCOUNT, HOST, IbapiClient, make_engine
from venues.engine import VenueEngine
from venues.tws_behaviour import TwsBehaviour
from venues.tws_venue import TwsVenue

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _event_loop_for_ib_insync() -> Iterator[None]:
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
def clients() -> Iterator[list[IB | IbapiClient]]:
    opened: list[IB | IbapiClient] = []
    yield opened
    for client in opened:
        if isinstance(client, IB):
            client.disconnect()
        else:
            client.stop()


@pytest.fixture
def ib(venue: TwsVenue, clients: list[IB | IbapiClient]) -> IB:
    client = IB()
    clients.append(client)
    client.connect(HOST, venue.port, clientId=1, timeout=5)
    return client


@pytest.fixture
def official(venue: TwsVenue, clients: list[IB | IbapiClient]) -> Callable[[int], IbapiClient]:
    def start(client_id: int) -> IbapiClient:
        client = IbapiClient()
        clients.append(client)
        client.start(venue.port, client_id)
        return client

    return start


@pytest.fixture
def aapl(ib: IB) -> Stock:
    contract = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(contract)
    return contract


def wait_until(ib: IB, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        ib.sleep(0.01)


def error_codes(ib: IB) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, _text, _contract: seen.append((req_id, code))
    return seen


# --------------------------------------------------------------------------- switches


def test_bad_switches_are_refused_naming_the_field(venue: TwsVenue) -> None:
    with pytest.raises(ValueError, match="drop_order_rate"):
        TwsBehaviour(drop_order_rate=1.5)
    with pytest.raises(ValueError, match="quote_split_delay_s"):
        TwsBehaviour(quote_split_delay_s=-1)
    with pytest.raises(ValueError, match="initial_cash"):
        TwsBehaviour(initial_cash=Decimal("NaN"))
    with pytest.raises(ValueError, match="drop_order_rate"):
        venue.configure(drop_order_rate=-0.1)
    assert venue.behaviour == TwsBehaviour()
    with pytest.raises(ValueError, match="code"):
        venue.inject_error(1234)


# --------------------------------------------------------------------------- connectivity codes


def test_connectivity_codes_reach_clients_and_pause_market_data(
    ib: IB, engine: VenueEngine, venue: TwsVenue, aapl: Stock
) -> None:
    seen = error_codes(ib)
    ticker = ib.reqMktData(aapl)
    wait_until(ib, lambda: ticker.bid == 189.99)

    venue.inject_error(1100)
    wait_until(ib, lambda: (-1, 1100) in seen)
    engine.set_mid("AAPL", Decimal(195))
    engine.step()
    ib.reqCurrentTime()  # round trip: a tick sent for that step would have arrived
    assert ticker.bid == 189.99

    venue.inject_error(1102)  # restored, data kept: the subscription streams again
    wait_until(ib, lambda: (-1, 1102) in seen)
    engine.set_mid("AAPL", Decimal(196))
    engine.step()
    wait_until(ib, lambda: ticker.bid == 195.99)

    venue.inject_error(2110)
    venue.inject_error(1101)  # restored, data lost: the client must subscribe again
    wait_until(ib, lambda: (-1, 1101) in seen)
    assert (-1, 2110) in seen
    engine.set_mid("AAPL", Decimal(197))
    engine.step()
    ib.reqCurrentTime()
    assert ticker.bid == 195.99
    ib.cancelMktData(aapl)
    again = ib.reqMktData(aapl)
    wait_until(ib, lambda: again.bid == 196.99)


def test_connectivity_codes_on_a_schedule_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "venues.tws_venue", "--port", "0", "--state-dir", str(tmp_path),
         "--inject-errors", "1100@0.5,1102@1.0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    client = IbapiClient()
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "venue process did not report its port"
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        client.start(port, client_id=5)
        client.wait_for("error", lambda a: a[:2] == (-1, 1100))
        client.wait_for("error", lambda a: a[:2] == (-1, 1102))
    finally:
        client.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_a_bad_schedule_is_refused_before_the_venue_starts() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "venues.tws_venue", "--port", "0", "--inject-errors", "1234@1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "--inject-errors" in result.stderr


# --------------------------------------------------------------------------- orders lost in flight


def test_an_order_lost_in_flight_is_never_acknowledged(
    ib: IB, engine: VenueEngine, venue: TwsVenue, aapl: Stock
) -> None:
    venue.drop_next_orders(1)
    lost = ib.placeOrder(aapl, LimitOrder("BUY", 5, 150))
    kept = ib.placeOrder(aapl, LimitOrder("BUY", 6, 150))
    wait_until(ib, lambda: kept.orderStatus.status == "Submitted")
    assert lost.orderStatus.status == "PendingSubmit"
    assert venue.dropped_orders == [(1, lost.order.orderId)]
    assert [w.order.quantity for w in engine.open_orders(ACCOUNT)] == [Decimal(6)]
    assert {t.order.orderId for t in ib.reqOpenOrders()} == {kept.order.orderId}
    assert ib.reqExecutions() == []

    venue.configure(drop_order_rate=1.0)
    also_lost = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    ib.reqCurrentTime()  # round trip: the venue has read the order
    assert also_lost.orderStatus.status == "PendingSubmit"
    assert len(venue.dropped_orders) == 2
    assert engine.executions(ACCOUNT) == []


# --------------------------------------------------------------------------- executions from elsewhere


def test_executions_nobody_here_placed(
    ib: IB, engine: VenueEngine, venue: TwsVenue, official: Callable[[int], IbapiClient]
) -> None:
    client_zero = official(0)
    venue.external_fill("AAPL", Side.BUY, Decimal(7))
    (_req, contract, execution) = client_zero.wait_for("execDetails")
    assert (execution.orderId, execution.clientId, contract.symbol) == (0, 0, "AAPL")
    assert execution.shares == 7.0

    wait_until(ib, lambda: [p.position for p in ib.positions()] == [7.0])
    assert ib.fills() == []  # client 1 is not told about other orders live ...
    fills = ib.reqExecutions()  # ... but reqExecutions reports every execution
    assert [(f.execution.orderId, f.execution.shares) for f in fills] == [(0, 7.0)]
    assert fills[0].execution.execId == engine.executions(ACCOUNT)[0].fill_id


def test_master_client_sees_every_client_s_executions(
    ib: IB, venue: TwsVenue, aapl: Stock, official: Callable[[int], IbapiClient]
) -> None:
    venue.configure(master_client_id=9)
    master = official(9)
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 2))
    wait_until(ib, trade.isDone)
    (_req, _contract, execution) = master.wait_for("execDetails")
    assert (execution.orderId, execution.clientId) == (trade.order.orderId, 1)
    master.wait_for("orderStatus", lambda a: a[0] == trade.order.orderId and a[1] == "Filled")


# --------------------------------------------------------------------------- client away


def test_executions_while_the_client_is_away_come_only_through_req_executions(
    ib: IB, engine: VenueEngine, venue: TwsVenue, aapl: Stock,
    official: Callable[[int], IbapiClient],
) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 3, 185))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    ib.disconnect()
    wait_until(ib, lambda: venue.connected_client_ids() == [])

    engine.set_mid("AAPL", Decimal(184))
    engine.step()  # fills the resting order while nobody listens
    (fill,) = engine.executions(ACCOUNT)

    back = official(1)
    back.reqCurrentTime()
    back.wait_for("currentTime")
    assert back.of("execDetails") == []  # nothing is replayed unasked
    back.reqExecutions(21, ExecutionFilter())
    back.wait_for("execDetailsEnd", lambda a: a == (21,))
    (req_id, _contract, execution) = back.wait_for("execDetails")
    assert (req_id, execution.execId, execution.orderId) == (21, fill.fill_id, trade.order.orderId)


def test_disconnect_client_drops_only_that_client(
    ib: IB, venue: TwsVenue, official: Callable[[int], IbapiClient]
) -> None:
    other = official(2)
    assert venue.connected_client_ids() == [1, 2]
    venue.disconnect_client(2)
    wait_until(ib, lambda: not other.isConnected())
    assert venue.connected_client_ids() == [1]
    assert ib.reqCurrentTime() is not None


# --------------------------------------------------------------------------- corrections


def test_a_trade_correction_revises_the_exec_id_and_the_price(
    ib: IB, engine: VenueEngine, venue: TwsVenue, aapl: Stock,
    official: Callable[[int], IbapiClient],
) -> None:
    venue.configure(master_client_id=4)
    watcher = official(4)
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 10))
    wait_until(ib, trade.isDone)
    original = trade.fills[0].execution
    watcher.wait_for("execDetails")

    revised = venue.correct_execution(original.execId, Decimal("190.05"))
    assert revised == f"{original.execId}.02"
    (_req, _contract, execution) = watcher.wait_for(
        "execDetails", lambda a: a[2].execId == revised)
    assert execution.execId.rsplit(".", 1)[0] == original.execId
    assert (execution.orderId, execution.shares, execution.price) == (
        original.orderId, 10.0, 190.05)
    watcher.wait_for("commissionReport", lambda a: a[0].execId == revised)

    assert venue.correct_execution(original.execId, Decimal("190.02")) == f"{original.execId}.03"
    fills = ib.reqExecutions()
    assert [(f.execution.execId, f.execution.price) for f in fills] == [
        (f"{original.execId}.03", 190.02)]
    assert engine.positions(ACCOUNT)[0].quantity == Decimal(10)
    wait_until(ib, lambda: any(Decimal(v.value) == Decimal(1_000_000) - Decimal("1900.20")
                               for v in ib.accountValues(ACCOUNT)
                               if v.tag == "TotalCashValue" and v.currency == "USD"))


# --------------------------------------------------------------------------- mass cancel ignored


def test_an_ignored_global_cancel_leaves_every_order_working(
    ib: IB, engine: VenueEngine, venue: TwsVenue, aapl: Stock
) -> None:
    venue.configure(ignore_global_cancel=True)
    trades = [ib.placeOrder(aapl, LimitOrder("BUY", 1, 150)) for _ in range(2)]
    wait_until(ib, lambda: all(t.orderStatus.status == "Submitted" for t in trades))
    ib.reqGlobalCancel()
    ib.reqCurrentTime()  # round trip: the venue has read the cancel
    assert len(engine.open_orders(ACCOUNT)) == 2
    assert all(t.orderStatus.status == "Submitted" for t in trades)

    venue.configure(ignore_global_cancel=False)
    ib.reqGlobalCancel()
    wait_until(ib, lambda: all(t.orderStatus.status == "Cancelled" for t in trades))
    assert engine.open_orders(ACCOUNT) == []
