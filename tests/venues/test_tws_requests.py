"""Requests the fake TWS does not serve are answered, as TWS refuses a request, with an error
under the request's own id: a client's reqHistoricalData, reqPnL or reqMatchingSymbols ends
with an error instead of waiting forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from ib_insync import IB, Stock
from ib_insync.wrapper import RequestError
from ibapi.contract import Contract

from tests.venues.tws_helpers import ACCOUNT, HOST, IbapiClient, RawClient, frame, make_engine
from venues.tws_venue import TwsVenue


@pytest.fixture(autouse=True)
def _event_loop_for_ib_insync() -> Iterator[None]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def venue() -> Iterator[TwsVenue]:
    tws = TwsVenue(make_engine())
    tws.start()
    yield tws
    tws.stop()


@pytest.fixture
def ib(venue: TwsVenue) -> Iterator[IB]:
    client = IB()
    client.RaiseRequestErrors = True
    client.connect(HOST, venue.port, clientId=1, timeout=5)
    yield client
    client.disconnect()


def timed(call: object) -> float:
    """Seconds ``call()`` took (it must return or raise)."""
    start = time.monotonic()
    try:
        call()  # type: ignore[operator]
    except RequestError:
        pass
    return time.monotonic() - start


def test_ib_insync_requests_end_with_the_venue_s_error(ib: IB) -> None:
    aapl = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(aapl)
    ib.RequestTimeout = 20  # a hang would fail this test by time, not by a client timeout

    with pytest.raises(RequestError) as historical:
        ib.reqHistoricalData(aapl, "", "1 D", "1 min", "TRADES", useRTH=True)
    assert historical.value.code == 162
    with pytest.raises(RequestError) as symbols:
        ib.reqMatchingSymbols("AA")
    assert symbols.value.code == 321
    with pytest.raises(RequestError) as head:
        ib.reqHeadTimeStamp(aapl, "TRADES", useRTH=True)
    assert head.value.code == 162
    with pytest.raises(RequestError) as fundamentals:
        ib.reqFundamentalData(aapl, "ReportSnapshot")
    assert fundamentals.value.code == 430
    assert ib.reqMktDepthExchanges() == []
    assert ib.reqNewsProviders() == []


def test_ib_insync_reqpnl_gets_an_error_for_its_request_id(ib: IB) -> None:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, _text, _contract: seen.append((req_id, code))
    pnl = ib.reqPnL(ACCOUNT)
    req_id = next(iter(ib.wrapper.pnlKey2ReqId.values()))
    deadline = time.monotonic() + 5
    while (req_id, 321) not in seen and time.monotonic() < deadline:
        ib.sleep(0.01)
    assert (req_id, 321) in seen
    assert pnl.account == ACCOUNT
    ib.cancelPnL(ACCOUNT)  # a cancel of a refused request is read and dropped
    assert ib.reqCurrentTime() is not None
    assert [code for _, code in seen] == [321]


def test_official_client_requests_end_with_errors(venue: TwsVenue) -> None:
    client = IbapiClient()
    client.start(venue.port, client_id=2)
    try:
        contract = Contract()
        contract.symbol, contract.secType = "AAPL", "STK"
        contract.exchange, contract.currency = "SMART", "USD"
        client.reqHistoricalData(7, contract, "", "1 D", "1 min", "TRADES", 1, 1, False, [])
        client.reqPnL(8, ACCOUNT, "")
        client.reqMatchingSymbols(9, "AA")
        client.reqPnLSingle(10, ACCOUNT, "", 1234)
        client.reqTickByTickData(11, contract, "BidAsk", 0, False)
        client.reqMktDepth(12, contract, 5, False, [])
        expected = {7: 162, 8: 321, 9: 321, 10: 321, 11: 354, 12: 354}
        for req_id, code in expected.items():
            assert client.wait_for("error", lambda a, r=req_id: a[0] == r)[1] == code
        client.reqFamilyCodes()
        assert client.wait_for("familyCodes") == ([],)
    finally:
        client.stop()
    assert venue.unsupported_requests == 6
    assert venue.malformed_requests == 0


def test_unknown_message_id_is_still_refused_without_a_request_id(venue: TwsVenue) -> None:
    raw = RawClient(venue.port)
    try:
        raw.hello(b"v157..176")
        raw.start_api(client_id=4)
        raw.read_until("9")
        raw.sock.sendall(frame(999, 1, 5))
        error = raw.read_until("4")
        while int(error[3]) >= 2100:
            error = raw.read_until("4")
        assert (error[2], error[3]) == ("-1", "321")
        raw.sock.sendall(frame(92))  # reqPnL without its request id: malformed
        error = raw.read_until("4")
        assert (error[2], error[3]) == ("-1", "320")
    finally:
        raw.close()
