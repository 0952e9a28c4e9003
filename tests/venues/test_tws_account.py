"""The fake TWS's account: account values and account summary under TWS's tag names,
consistent with the venue's executions, positions and marks, read by real clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from ib_insync import IB, MarketOrder, Stock

from messages import Side
from tests.venues.tws_helpers import ACCOUNT, HOST, IbapiClient, make_engine
from venues.engine import VenueEngine
from venues.tws_account import ACCOUNT_SUMMARY_TAGS, Holding, account_figures
from venues.tws_behaviour import TwsBehaviour
from venues.tws_venue import TwsVenue

INITIAL = Decimal(1_000_000)


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
    tws = TwsVenue(engine, behaviour=TwsBehaviour(initial_cash=INITIAL))
    tws.start()
    yield tws
    tws.stop()


@pytest.fixture
def ib(venue: TwsVenue) -> Iterator[IB]:
    client = IB()
    client.connect(HOST, venue.port, clientId=1, timeout=5)
    yield client
    client.disconnect()


def wait_until(ib: IB, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        ib.sleep(0.01)


def values(ib: IB, currency: str = "USD") -> dict[str, Decimal]:
    """The account values (updateAccountValue) in ``currency`` the client holds now."""
    found = {}
    for value in ib.accountValues(ACCOUNT):
        if value.currency == currency:
            try:
                found[value.tag] = Decimal(value.value)
            except ArithmeticError:
                continue
    return found


def trade(ib: IB, action: str, quantity: int) -> None:
    contract = Stock("AAPL", "SMART", "USD")
    ib.qualifyContracts(contract)
    placed = ib.placeOrder(contract, MarketOrder(action, quantity))
    wait_until(ib, placed.isDone)
    assert placed.orderStatus.status == "Filled"


def test_a_fresh_account_reports_its_cash_under_every_summary_tag(ib: IB) -> None:
    summary = {v.tag: v for v in ib.accountSummary(ACCOUNT)}
    assert set(ACCOUNT_SUMMARY_TAGS) <= set(summary)
    for tag in ("NetLiquidation", "TotalCashValue", "AvailableFunds", "ExcessLiquidity",
                "EquityWithLoanValue"):
        assert (Decimal(summary[tag].value), summary[tag].currency) == (INITIAL, "USD")
    assert Decimal(summary["BuyingPower"].value) == 4 * INITIAL
    assert Decimal(summary["GrossPositionValue"].value) == 0
    assert summary["AccountType"].value == "INDIVIDUAL"


def test_values_follow_executions_positions_and_marks(ib: IB, engine: VenueEngine) -> None:
    before = engine.quote("AAPL")
    assert before is not None
    trade(ib, "BUY", 10)  # at the ask, 190.01, marked at the mid, 190
    wait_until(ib, lambda: values(ib).get("TotalCashValue") == INITIAL - 10 * before.ask)
    now = values(ib)
    assert now["GrossPositionValue"] == 10 * before.mid
    assert now["NetLiquidation"] == now["TotalCashValue"] + 10 * before.mid
    assert now["UnrealizedPnL"] == (before.mid - before.ask) * 10

    engine.set_mid("AAPL", Decimal(200))
    moved = engine.step()[0]
    trade(ib, "SELL", 4)  # at the bid, 199.99: realises (199.99 - 190.01) * 4
    realized = (moved.bid - before.ask) * 4
    unrealized = (moved.mid - before.ask) * 6
    cash = INITIAL - 10 * before.ask + 4 * moved.bid
    wait_until(ib, lambda: values(ib).get("TotalCashValue") == cash)
    now = values(ib)
    assert now["RealizedPnL"] == realized
    assert now["UnrealizedPnL"] == unrealized
    assert now["NetLiquidation"] == cash + 6 * moved.mid == INITIAL + realized + unrealized
    assert now["InitMarginReq"] == 6 * moved.mid / 2
    assert now["MaintMarginReq"] == 6 * moved.mid / 4
    assert now["AvailableFunds"] == now["NetLiquidation"] - now["InitMarginReq"]
    assert now["BuyingPower"] == 4 * now["AvailableFunds"]
    assert values(ib, "BASE")["NetLiquidationByCurrency"] == now["NetLiquidation"]
    (item,) = ib.portfolio()
    assert (item.position, item.realizedPNL) == (6.0, float(realized))


def test_account_summary_subscription_is_sent_again_after_executions(venue: TwsVenue) -> None:
    client = IbapiClient()
    client.start(venue.port, client_id=2)
    try:
        client.reqAccountSummary(30, "All", "NetLiquidation,TotalCashValue,BuyingPower,$LEDGER")
        client.wait_for("accountSummaryEnd", lambda a: a == (30,))
        first = {a[2]: a[3] for a in client.of("accountSummary")}
        assert first["TotalCashValue"] == "1000000.00"
        assert first["CashBalance"] == "1000000.00"  # from $LEDGER
        assert set(first) >= {"NetLiquidation", "BuyingPower", "RealizedPnL"}

        venue.external_fill("MSFT", Side.SELL, Decimal(5))
        client.wait_for("accountSummary", lambda a: a[2] == "TotalCashValue"
                        and a[3] != "1000000.00")
        cash = [a[3] for a in client.of("accountSummary") if a[2] == "TotalCashValue"][-1]
        assert Decimal(cash) == INITIAL + 5 * Decimal("409.99")

        client.cancelAccountSummary(30)
        client.reqAccountSummary(31, "NoSuchGroup", "NetLiquidation")
        assert client.wait_for("error", lambda a: a[0] == 31)[1] == 321
    finally:
        client.stop()


def test_identity_holds_for_any_trades() -> None:
    """NetLiquidation = cash + market value = initial cash + realised + unrealised."""
    executions = [(True, Decimal(10), Decimal("100.5")), (False, Decimal(4), Decimal("101"))]
    realized = (Decimal(101) - Decimal("100.5")) * 4
    holding = Holding(Decimal(6), Decimal("100.5"), Decimal("99"))
    figures = account_figures(INITIAL, executions, [holding], realized)
    assert figures.net_liquidation == INITIAL + realized + figures.unrealized
    assert figures.net_liquidation == figures.cash + 6 * Decimal(99)
    short = account_figures(INITIAL, [(False, Decimal(3), Decimal(50))],
                            [Holding(Decimal(-3), Decimal(50), Decimal(55))], Decimal(0))
    assert short.gross_position_value == 165
    assert short.net_liquidation == INITIAL - 15


def test_cash_follows_a_correction_made_before_the_account_was_read(
    venue: TwsVenue, engine: VenueEngine
) -> None:
    client = IbapiClient()
    client.start(venue.port, client_id=2)
    try:
        venue.external_fill("AAPL", Side.BUY, Decimal(10))
        (fill,) = engine.executions(ACCOUNT)
        venue.correct_execution(fill.fill_id, Decimal("190.05"))
        client.reqAccountSummary(40, "All", "TotalCashValue")
        client.wait_for("accountSummaryEnd", lambda a: a == (40,))
        (cash,) = [a[3] for a in client.of("accountSummary") if a[2] == "TotalCashValue"]
        assert Decimal(cash) == INITIAL - Decimal("1900.50")
        venue.correct_execution(fill.fill_id, Decimal("190.00"))  # now it was read
        client.wait_for("accountSummary", lambda a: a[3] == f"{INITIAL - 1900:.2f}")
    finally:
        client.stop()
