"""Version negotiation: the fake TWS speaks server versions 157..176 and answers each client
with the highest version both sides know, in that version's message formats. The official
``ibapi`` client (v100..157), ib_insync (v157..176) and ib_async (v157..178) each connect,
trade and read their account over loopback TCP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest
from ibapi.contract import Contract
from ibapi.order import Order

from tests.venues.tws_helpers import ACCOUNT, HOST, IbapiClient, RawClient, frame, make_engine, prefixed
from venues.engine import VenueEngine
from venues.tws_venue import MIN_SERVER_VERSION, SERVER_VERSION, TwsVenue
from venues.tws_wire import ProtocolViolation, negotiate_version


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
def ibapi_client(venue: TwsVenue) -> Iterator[IbapiClient]:
    client = IbapiClient()
    client.start(venue.port, client_id=3)
    yield client
    client.stop()


def aapl_contract() -> Contract:
    contract = Contract()
    contract.symbol, contract.secType = "AAPL", "STK"
    contract.exchange, contract.currency = "SMART", "USD"
    return contract


def ib_order(action: str, quantity: int, order_type: str, limit: float | None = None,
             ref: str = "") -> Order:
    order = Order()
    order.action, order.totalQuantity, order.orderType = action, quantity, order_type
    if limit is not None:
        order.lmtPrice = limit
    order.orderRef = ref
    return order


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("offer", "chosen"),
    [("v100..157", 157), ("v157..176", 176), ("v157..178", 176), ("v176", 176),
     ("v160..165 +PACEAPI", 165), ("v150..157", 157)],
)
def test_the_highest_common_version_is_chosen(offer: str, chosen: int) -> None:
    assert negotiate_version(offer) == chosen


@pytest.mark.parametrize("offer", ["v100..156", "v177..190", "v165..160", "version 176", ""])
def test_offers_sharing_no_version_are_refused(offer: str) -> None:
    with pytest.raises(ProtocolViolation):
        negotiate_version(offer)


def test_a_client_too_old_is_refused_at_the_handshake_and_others_connect(venue: TwsVenue) -> None:
    old = RawClient(venue.port)
    try:
        old.sock.sendall(b"API\0" + prefixed(b"v100..150"))
        assert old.closed_by_peer()
    finally:
        old.close()
    assert venue.malformed_requests == 1
    fresh = RawClient(venue.port)
    try:
        assert fresh.hello(b"v100..176")[0] == str(SERVER_VERSION)
    finally:
        fresh.close()


def test_error_messages_follow_the_negotiated_version(venue: TwsVenue) -> None:
    """From 166 on an error carries the advanced-reject field; before, it does not."""
    for version, extra in ((MIN_SERVER_VERSION, 0), (165, 0), (166, 1), (SERVER_VERSION, 1)):
        raw = RawClient(venue.port)
        try:
            assert raw.hello(f"v{version}".encode())[0] == str(version)
            raw.start_api(client_id=40 + version)
            raw.read_until("9")
            raw.sock.sendall(frame(9, 8, 77, 0, "NOPE", "STK", "", 0, "", "", "SMART", "",
                                   "USD", "", "", 0, "", ""))
            error = raw.read_until("4")
            while error[3] != "200":
                error = raw.read_until("4")
            assert error[2] == "77"
            assert len(error) == 5 + extra
        finally:
            raw.close()


# --------------------------------------------------------------------------- ibapi (v100..157)


def test_official_ibapi_client_connects_at_157_and_trades(
    ibapi_client: IbapiClient, engine: VenueEngine
) -> None:
    client = ibapi_client
    assert client.serverVersion() == 157
    assert client.wait_for("managedAccounts") == (ACCOUNT,)

    client.reqContractDetails(5, aapl_contract())
    (req_id, details) = client.wait_for("contractDetails")
    assert req_id == 5
    assert details.contract.symbol == "AAPL" and details.contract.conId > 0
    assert details.minTick == 0.01 and details.stockType == "COMMON"
    client.wait_for("contractDetailsEnd", lambda a: a == (5,))

    client.reqMktData(6, aapl_contract(), "", False, False, [])
    quote = engine.quote("AAPL")
    assert quote is not None
    client.wait_for("tickPrice", lambda a: a[0] == 6 and a[1] == 1 and a[2] == float(quote.bid))
    client.wait_for("tickPrice", lambda a: a[0] == 6 and a[1] == 2 and a[2] == float(quote.ask))
    client.wait_for("tickSize", lambda a: a[:3] == (6, 0, 100))

    client.placeOrder(100, aapl_contract(), ib_order("BUY", 10, "MKT", ref="api-1"))
    status = client.wait_for("orderStatus", lambda a: a[0] == 100 and a[1] == "Filled")
    assert status[2:5] == (10.0, 0.0, float(quote.ask))
    (_req, _contract, execution) = client.wait_for("execDetails")
    assert execution.orderId == 100 and execution.shares == 10.0
    assert execution.execId == engine.executions(ACCOUNT)[0].fill_id
    assert execution.orderRef == "api-1"
    (_order_id, _contract, order, _state) = client.wait_for("openOrder")
    assert (order.action, order.totalQuantity, order.orderType, order.orderRef) == (
        "BUY", 10.0, "MKT", "api-1")

    client.reqPositions()
    client.wait_for("positionEnd")
    assert [(a[1].symbol, a[2], a[3]) for a in client.of("position")] == [
        ("AAPL", 10.0, float(quote.ask))]


def test_ibapi_client_sees_errors_with_its_request_ids(ibapi_client: IbapiClient) -> None:
    unknown = aapl_contract()
    unknown.symbol = "NOPE"
    ibapi_client.reqContractDetails(9, unknown)
    assert ibapi_client.wait_for("error", lambda a: a[0] == 9)[1] == 200
    ibapi_client.placeOrder(200, aapl_contract(), ib_order("BUY", 1, "TRAIL"))
    assert ibapi_client.wait_for("error", lambda a: a[0] == 200)[1] == 201


def test_ibapi_limit_order_rests_is_listed_and_cancels(
    ibapi_client: IbapiClient, engine: VenueEngine
) -> None:
    ibapi_client.placeOrder(300, aapl_contract(), ib_order("BUY", 5, "LMT", limit=150.5))
    ibapi_client.wait_for("orderStatus", lambda a: a[0] == 300 and a[1] == "Submitted")
    (working,) = engine.open_orders(ACCOUNT)
    assert working.order.limit_price == Decimal("150.5")

    ibapi_client.reqOpenOrders()
    ibapi_client.wait_for("openOrderEnd")
    orders = [a[2] for a in ibapi_client.of("openOrder")]
    assert orders and all(o.lmtPrice == 150.5 and o.totalQuantity == 5 for o in orders)

    ibapi_client.cancelOrder(300)
    ibapi_client.wait_for("orderStatus", lambda a: a[0] == 300 and a[1] == "Cancelled")
    assert engine.open_orders(ACCOUNT) == []


# --------------------------------------------------------------------------- ib_async (v157..178)


@pytest.fixture
def _event_loop() -> Iterator[None]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.mark.usefixtures("_event_loop")
def test_ib_async_connects_at_176_and_trades(venue: TwsVenue, engine: VenueEngine) -> None:
    from ib_async import IB, LimitOrder, MarketOrder, Stock

    ib = IB()
    try:
        ib.connect(HOST, venue.port, clientId=8, timeout=10)
        assert ib.client.serverVersion() == SERVER_VERSION
        assert ib.managedAccounts() == [ACCOUNT]
        contract = Stock("MSFT", "SMART", "USD")
        assert ib.qualifyContracts(contract) == [contract]
        trade = ib.placeOrder(contract, MarketOrder("SELL", 4))
        deadline = asyncio.get_event_loop().time() + 10
        while not trade.isDone() and asyncio.get_event_loop().time() < deadline:
            ib.sleep(0.02)
        assert trade.orderStatus.status == "Filled"
        assert [f.execution.shares for f in trade.fills] == [4.0]
        resting = ib.placeOrder(contract, LimitOrder("BUY", 1, 300))
        while resting.orderStatus.status != "Submitted" and \
                asyncio.get_event_loop().time() < deadline:
            ib.sleep(0.02)
        assert resting.orderStatus.status == "Submitted"
        assert [(p.contract.symbol, p.position) for p in ib.positions()] == [("MSFT", -4.0)]
        assert [p.quantity for p in engine.positions(ACCOUNT)] == [Decimal(-4)]
    finally:
        ib.disconnect()
