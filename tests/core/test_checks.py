"""The pre-trade checks and the exposure they read, without an actor: each check at its
threshold, and the order in which they run."""

from __future__ import annotations

import itertools
from decimal import Decimal as D
from typing import Any

import msgspec

from core.checks import Desk, Limits, PreTradeChecks
from core.exposure import Exposure, is_valid_quote, valid_mid
from core.modes import ModeMachine
from core.rejections import CircuitBreaker
from messages import (
    FAILSAFE_SOURCE,
    Mode,
    OrderFilled,
    OrderType,
    PortfolioSnapshot,
    Quote,
    RejectReason,
    Side,
    SubmitOrder,
)

R = RejectReason
VENUE = "paper"
_ids = itertools.count()


def order(side: str = "buy", quantity: str = "10", symbol: str = "AAPL", **fields: Any) -> SubmitOrder:
    fields.setdefault("client_order_id", f"o-{next(_ids)}")
    fields.setdefault("source", "strategy")
    return SubmitOrder(venue=fields.pop("venue", VENUE), symbol=symbol, side=Side(side), quantity=D(quantity),
                       **fields)


def quote(bid: str, ask: str, symbol: str = "AAPL") -> Quote:
    return Quote(venue=VENUE, symbol=symbol, bid=D(bid), ask=D(ask), bid_size=D(1), ask_size=D(1))


def fill(side: str, quantity: str, price: str = "100", symbol: str = "AAPL", leaves: str = "0",
         client_order_id: str = "") -> OrderFilled:
    return OrderFilled(client_order_id=client_order_id or f"f-{next(_ids)}", venue=VENUE,
                       fill_id=f"x-{next(_ids)}", symbol=symbol, side=Side(side), quantity=D(quantity),
                       price=D(price), leaves_quantity=D(leaves))


def desk(mode: Mode = Mode.LIVE, **limits: Any) -> tuple[PreTradeChecks, Desk]:
    exposure = Exposure()
    exposure.on_quotes(VENUE, [quote("99.99", "100.01"), quote("49.99", "50.01", "MSFT")])
    table = Desk(venues={VENUE: ("AAPL", "MSFT", "EURUSD")}, exposure=exposure, modes=ModeMachine(mode=mode),
                 circuits={VENUE: CircuitBreaker(1, 10.0, 5.0)}, up={VENUE}, now=1000.0)
    return PreTradeChecks(Limits(**{k: D(v) if isinstance(v, str) else v for k, v in limits.items()})), table


def reason(checks: PreTradeChecks, table: Desk, new: SubmitOrder) -> RejectReason | None:
    refusal = checks.run(new, table)
    return None if refusal is None else refusal.reason


def test_one_definition_of_a_valid_mid() -> None:
    assert valid_mid(quote("1", "3")) == D(2)
    assert valid_mid(quote("2", "2")) == D(2)                    # locked: valid
    assert valid_mid(quote("3", "1")) is None and not is_valid_quote(quote("3", "1"))   # crossed
    assert valid_mid(quote("0", "1")) is None                    # one-sided
    exposure = Exposure()
    exposure.on_quotes(VENUE, [quote("1", "3"), quote("5", "4")])
    assert exposure.mid((VENUE, "AAPL")) == D(2)                  # the crossed quote did not mark


def test_identity_checks_come_first_in_order() -> None:
    checks, table = desk(Mode.FAILSAFE)
    assert reason(checks, table, order(venue="nowhere")) is R.UNKNOWN_VENUE
    assert reason(checks, table, order(symbol="TSLA")) is R.UNKNOWN_SYMBOL
    table.client_ids.add("used")
    assert reason(checks, table, order(client_order_id="used")) is R.DUPLICATE_ID
    assert reason(checks, table, order()) is R.MODE
    assert reason(checks, table, order(source=FAILSAFE_SOURCE)) is R.REDUCE_ONLY
    assert reason(checks, table, order(source=FAILSAFE_SOURCE, reduce_only=True)) is None
    forged = order()
    msgspec.structs.force_setattr(forged, "quantity", D("NaN"))
    assert reason(checks, table, forged) is R.MALFORMED


def test_mode_pause_and_venue() -> None:
    checks, table = desk(Mode.READY)
    assert reason(checks, table, order()) is R.MODE
    checks, table = desk()
    table.paused = True
    assert reason(checks, table, order()) is R.PAUSED
    table.paused = False
    table.up.clear()
    assert reason(checks, table, order()) is R.VENUE_DOWN


def test_degraded_passes_only_what_reduces_counting_working_orders() -> None:
    checks, table = desk(Mode.DEGRADED)
    table.exposure.on_fill(fill("buy", "10"))
    assert reason(checks, table, order("buy", "1")) is R.REDUCE_ONLY
    assert reason(checks, table, order("sell", "11")) is R.REDUCE_ONLY
    first = order("sell", "6")
    assert reason(checks, table, first) is None
    table.exposure.add_order(first)
    assert reason(checks, table, order("sell", "6")) is R.REDUCE_ONLY     # two could flip it
    assert reason(checks, table, order("sell", "4")) is None


def test_order_rate_window() -> None:
    checks, table = desk(max_orders_per_s=2)
    for _ in range(2):
        assert reason(checks, table, order()) is None
        checks.note_passed(table.now)
    assert reason(checks, table, order()) is R.RATE_LIMIT
    table.now += 1.0
    assert reason(checks, table, order()) is None


def test_quantity_band_market_notional() -> None:
    checks, table = desk(max_order_quantity="10", price_band_pct="5", max_order_notional="1000")
    assert reason(checks, table, order(quantity="10.01")) is R.MAX_QUANTITY
    def limit(price: str) -> SubmitOrder:
        return order(order_type=OrderType.LIMIT, limit_price=D(price), quantity="1")

    assert reason(checks, table, limit("105.01")) is R.PRICE_BAND
    assert reason(checks, table, limit("105")) is None
    assert reason(checks, table, order(symbol="EURUSD", quantity="1")) is R.NO_MARKET
    assert reason(checks, table, order(quantity="10")) is None                   # 10 x 100 = 1000
    table.exposure.on_quotes(VENUE, [quote("100.01", "100.03")])
    assert reason(checks, table, order(quantity="10")) is R.MAX_NOTIONAL


def test_position_open_positions_daily_notional_daily_loss() -> None:
    checks, table = desk(max_position="20", max_open_positions=1, max_daily_notional="5000",
                         daily_loss_limit="100")
    working = order("buy", "15")
    table.exposure.add_order(working)
    assert reason(checks, table, order("buy", "6")) is R.MAX_POSITION       # 15 working + 6
    assert reason(checks, table, order("sell", "6")) is None                 # the other side
    assert reason(checks, table, order("buy", "1", "MSFT")) is R.MAX_OPEN_POSITIONS
    table.exposure.on_portfolio(PortfolioSnapshot(daily_traded_notional=D(3400)))
    assert reason(checks, table, order("buy", "1")) is None                  # 3400 + 1500 + 100 = 5000
    table.exposure.on_portfolio(PortfolioSnapshot(daily_traded_notional=D("3400.01")))
    assert reason(checks, table, order("buy", "1")) is R.MAX_DAILY_NOTIONAL
    table.exposure.on_portfolio(PortfolioSnapshot(daily_pnl=D(-100)))
    assert reason(checks, table, order("buy", "1")) is R.DAILY_LOSS


def test_the_circuit_check_comes_last_and_lets_one_probe_through() -> None:
    checks, table = desk(max_order_quantity="10")
    table.circuits[VENUE].on_rejection(table.now)
    assert reason(checks, table, order(quantity="11")) is R.MAX_QUANTITY     # refused before the circuit
    assert reason(checks, table, order()) is R.CIRCUIT_OPEN
    table.now += 5.0
    assert reason(checks, table, order()) is None                            # the probe
    assert reason(checks, table, order()) is R.CIRCUIT_OPEN


def test_a_disabled_limit_is_not_in_the_list() -> None:
    checks, _ = desk()
    assert [type(c).__name__ for c in checks.trading] == [
        "TradingMode", "NotPaused", "ScopePaused", "VenueUp", "VenueTrading", "ReduceOnly",
        "DegradedReducesOnly", "VenueReducing", "Priced", "CircuitClosed"]


def test_exposure_follows_fills_once_and_working_leaves() -> None:
    exposure = Exposure()
    working = order("buy", "10")
    exposure.add_order(working)
    partial = fill("buy", "4", leaves="6", client_order_id=working.client_order_id)
    assert exposure.on_fill(partial) and not exposure.on_fill(partial)       # a duplicate counts once
    assert exposure.position((VENUE, "AAPL")) == D(4)
    assert exposure.working[working.client_order_id] == (VENUE, "AAPL", D(6))
    assert exposure.traded_notional() == D(400)
    exposure.on_portfolio(PortfolioSnapshot(daily_traded_notional=D(400), fills=1))
    assert exposure.traded_notional() == D(400)                             # not counted twice
    exposure.on_fill(fill("buy", "6", client_order_id=working.client_order_id))
    assert not exposure.working and exposure.position((VENUE, "AAPL")) == D(10)
