"""Completed orders and orders ended by the venue itself: reqCompletedOrders answers the
account's orders done today in completedOrder messages laid out for the negotiated server
version (the official ``ibapi`` client at 157, ib_insync and ib_async at 176 read them),
honours apiOnly, and ends with its marker; ``cancel_at_venue`` ends an order as an exchange
would, told to its connected clients or, silently, to none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from ibapi.contract import Contract
from ibapi.order import Order

from messages import Side
from tests.venues.tws_helpers import ACCOUNT, HOST, IbapiClient, make_engine
from venues.engine import VenueEngine
from venues.tws_venue import TwsVenue


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
def client(venue: TwsVenue) -> Iterator[IbapiClient]:
    official = IbapiClient()
    official.start(venue.port, client_id=3)
    yield official
    official.stop()


@pytest.fixture
def _event_loop() -> Iterator[None]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def aapl() -> Contract:
    contract = Contract()
    contract.symbol, contract.secType, contract.exchange, contract.currency = "AAPL", "STK", "SMART", "USD"
    return contract


def order(action: str, quantity: int, order_type: str, ref: str, limit: float | None = None) -> Order:
    placed = Order()
    placed.action, placed.totalQuantity, placed.orderType, placed.orderRef = action, quantity, order_type, ref
    if limit is not None:
        placed.lmtPrice = limit
    return placed


def wait_until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def completed(client: IbapiClient, api_only: bool) -> list[tuple[Any, ...]]:
    """One reqCompletedOrders: the completedOrder callbacks up to its end marker."""
    before_end = len(client.of("completedOrdersEnd"))
    before = len(client.of("completedOrder"))
    client.reqCompletedOrders(api_only)
    wait_until(lambda: len(client.of("completedOrdersEnd")) > before_end, "completedOrdersEnd")
    return client.of("completedOrder")[before:]


def test_the_official_client_reads_completed_orders_at_157(
        client: IbapiClient, venue: TwsVenue, engine: VenueEngine) -> None:
    client.placeOrder(11, aapl(), order("BUY", 5, "MKT", "filled-1"))
    client.placeOrder(12, aapl(), order("BUY", 3, "LMT", "resting-1", limit=150))
    client.wait_for("orderStatus", lambda a: a[0] == 11 and a[1] == "Filled")
    client.wait_for("orderStatus", lambda a: a[0] == 12 and a[1] == "Submitted")
    assert [o.orderRef for _c, o, _s in completed(client, api_only=False)] == ["filled-1"]
    client.cancelOrder(12)
    client.wait_for("orderStatus", lambda a: a[0] == 12 and a[1] == "Cancelled")
    venue.external_fill("AAPL", Side.SELL, Decimal(2))         # an order entered elsewhere
    wait_until(lambda: len(engine.executions(ACCOUNT)) == 2, "the external fill")

    everything = completed(client, api_only=False)
    seen = {(o.orderRef, state.status, o.filledQuantity, o.totalQuantity) for _c, o, state in everything}
    assert ("filled-1", "Filled", 5.0, 5.0) in seen and ("resting-1", "Cancelled", 0.0, 3.0) in seen
    assert len(everything) == 3                                 # and the external order
    for contract, placed, state in everything:
        assert contract.symbol == "AAPL" and contract.secType == "STK" and placed.permId > 0
        assert placed.account == ACCOUNT and state.completedTime and state.completedStatus
    api = completed(client, api_only=True)
    assert {o.orderRef for _c, o, _s in api} == {"filled-1", "resting-1"}


@pytest.mark.usefixtures("_event_loop")
@pytest.mark.parametrize("library", ["ib_insync", "ib_async"])
def test_ib_insync_and_ib_async_read_completed_orders_at_176(library: str, venue: TwsVenue) -> None:
    module = __import__(library)
    ib = module.IB()
    try:
        ib.connect(HOST, venue.port, clientId=9, timeout=10)
        assert ib.client.serverVersion() == 176
        contract = module.Stock("AAPL", "SMART", "USD")
        ib.qualifyContracts(contract)
        done = ib.placeOrder(contract, module.MarketOrder("SELL", 4, orderRef="m-1"))
        resting = ib.placeOrder(contract, module.LimitOrder("BUY", 2, 150, orderRef="l-1"))
        wait_ib(ib, lambda: done.isDone() and resting.orderStatus.status == "Submitted")
        ib.cancelOrder(resting.order)
        wait_ib(ib, resting.isDone)
        found = {t.order.orderRef: (t.orderStatus.status, t.order.filledQuantity, t.order.totalQuantity)
                 for t in ib.reqCompletedOrders(apiOnly=True)}
        assert found == {"m-1": ("Filled", 4.0, 4.0), "l-1": ("Cancelled", 0.0, 2.0)}
    finally:
        ib.disconnect()


def wait_ib(ib: Any, check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting on the IB client")
        ib.sleep(0.02)


def test_an_order_cancelled_at_the_venue_is_told_to_its_client(
        client: IbapiClient, venue: TwsVenue, engine: VenueEngine) -> None:
    client.placeOrder(21, aapl(), order("BUY", 3, "LMT", "told-1", limit=150))
    client.wait_for("orderStatus", lambda a: a[0] == 21 and a[1] == "Submitted")
    venue.cancel_at_venue("told-1", "halted by the exchange")
    client.wait_for("orderStatus", lambda a: a[0] == 21 and a[1] == "Cancelled")
    client.wait_for("error", lambda a: a[0] == 21 and a[1] == 202)
    assert engine.open_orders(ACCOUNT) == []
    [(_c, placed, state)] = completed(client, api_only=True)
    assert (placed.orderRef, state.status) == ("told-1", "Cancelled")
    with pytest.raises(ValueError, match="no working order"):
        venue.cancel_at_venue("told-1")


def test_a_silent_cancel_tells_no_client_and_shows_in_later_requests(
        client: IbapiClient, venue: TwsVenue, engine: VenueEngine) -> None:
    client.placeOrder(31, aapl(), order("BUY", 3, "LMT", "quiet-1", limit=150))
    client.wait_for("orderStatus", lambda a: a[0] == 31 and a[1] == "Submitted")
    venue.cancel_at_venue("quiet-1", "lost by the venue", silent=True)
    wait_until(lambda: engine.open_orders(ACCOUNT) == [], "the order no longer working")
    before = len(client.of("openOrderEnd"))
    client.reqOpenOrders()
    wait_until(lambda: len(client.of("openOrderEnd")) > before, "openOrderEnd")
    [(_c, placed, state)] = completed(client, api_only=True)  # only later requests show it
    assert (placed.orderRef, state.status) == ("quiet-1", "Cancelled")
    assert not [a for a in client.of("orderStatus") if a[0] == 31 and a[1] == "Cancelled"]
    assert not [a for a in client.of("error") if a[0] == 31]


@pytest.mark.parametrize("silent", [False, True])
def test_the_venue_cancels_orders_on_its_own_after_a_while(
        client: IbapiClient, venue: TwsVenue, engine: VenueEngine, silent: bool) -> None:
    venue.configure(cancel_after_s=0.2, silent_cancels=silent)
    client.placeOrder(41, aapl(), order("BUY", 3, "LMT", "aged-1", limit=150))
    client.wait_for("orderStatus", lambda a: a[0] == 41 and a[1] == "Submitted")
    wait_until(lambda: engine.open_orders(ACCOUNT) == [], "the venue's own cancel")
    if not silent:
        client.wait_for("orderStatus", lambda a: a[0] == 41 and a[1] == "Cancelled")
    [(_c, placed, state)] = completed(client, api_only=True)
    assert (placed.orderRef, state.status) == ("aged-1", "Cancelled")
    told = [a for a in client.of("orderStatus") if a[0] == 41 and a[1] == "Cancelled"]
    assert bool(told) is not silent


def test_cancel_after_is_checked() -> None:
    from venues.tws_behaviour import TwsBehaviour

    with pytest.raises(ValueError, match="cancel_after_s"):
        TwsBehaviour(cancel_after_s=-1.0)
