"""Market data from the fake TWS: as TWS sends them (the default), every tick a write of its
own with the ask side after the bid side, or, on request, ticks coalesced into one write per
quote; and prices that step at a realistic volatility relative to the spread."""

from __future__ import annotations

import asyncio
import itertools
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from ib_insync import IB, Stock, Ticker
from ibapi.contract import Contract

from tests.venues.tws_helpers import HOST, IbapiClient, RawClient, frame, make_engine
from venues.engine import EngineConfig, VenueEngine
from venues.tws_behaviour import TwsBehaviour, step_volatility_bps
from venues.tws_venue import TwsVenue

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _event_loop_for_ib_insync() -> Iterator[None]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def wait_until(ib: IB, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        ib.sleep(0.005)


@contextmanager
def watch(behaviour: TwsBehaviour, engine: VenueEngine) -> Iterator[tuple[IB, Ticker, list[
        tuple[float, float]]]]:
    """A venue with ``behaviour``, an ib_insync client streaming AAPL, and every (bid, ask)
    the client's ticker showed after each batch of messages it read."""
    venue = TwsVenue(engine, behaviour=behaviour)
    venue.start()
    ib = IB()
    try:
        ib.connect(HOST, venue.port, clientId=1, timeout=5)
        contract = Stock("AAPL", "SMART", "USD")
        ib.qualifyContracts(contract)
        ticker = ib.reqMktData(contract)
        shown: list[tuple[float, float]] = []
        ib.pendingTickersEvent += lambda tickers: shown.extend(
            (t.bid, t.ask) for t in tickers if t is ticker)
        wait_until(ib, lambda: ticker.bid > 0 and ticker.ask > 0)
        yield ib, ticker, shown
    finally:
        ib.disconnect()
        venue.stop()


@pytest.fixture
def engine() -> VenueEngine:
    return make_engine()


def move(ib: IB, engine: VenueEngine, ticker: Ticker, mid: Decimal) -> tuple[float, float]:
    engine.set_mid("AAPL", mid)
    quote = next(q for q in engine.step() if q.symbol == "AAPL")
    wait_until(ib, lambda: (ticker.bid, ticker.ask) == (float(quote.bid), float(quote.ask)))
    return float(quote.bid), float(quote.ask)


def test_coalesced_quotes_never_show_a_half_updated_book(engine: VenueEngine) -> None:
    with watch(TwsBehaviour(coalesce_quotes=True), engine) as (ib, ticker, shown):
        books = {(ticker.bid, ticker.ask)}
        for i in range(20):
            books.add(move(ib, engine, ticker, Decimal(190 + (i % 2) * 3 + i)))
        assert shown and set(shown) <= books


def test_split_quotes_show_the_new_bid_beside_the_old_ask(engine: VenueEngine) -> None:
    behaviour = TwsBehaviour(coalesce_quotes=False, quote_split_delay_s=0.3)
    with watch(behaviour, engine) as (ib, ticker, shown):
        old_bid, old_ask = ticker.bid, ticker.ask
        new_bid, new_ask = move(ib, engine, ticker, Decimal(195))
        assert (new_bid, old_ask) in shown  # the half-updated book a client must assemble
        assert shown.index((new_bid, old_ask)) < shown.index((new_bid, new_ask))
        assert (old_bid, new_ask) not in shown  # the bid side is always written first


def test_split_quotes_are_one_message_per_tick_bid_side_first() -> None:
    engine = make_engine()
    venue = TwsVenue(engine, behaviour=TwsBehaviour(coalesce_quotes=False))
    venue.start()
    raw = RawClient(venue.port)
    try:
        raw.hello(b"v157..176")
        raw.start_api(client_id=3)
        raw.read_until("9")
        raw.sock.sendall(frame(1, 11, 5, 0, "AAPL", "STK", "", 0, "", "", "SMART", "", "USD",
                               "", "", 0, "", 0, 0, ""))
        raw.read_until("58")  # marketDataType, then the first quote
        first = [raw.read() for _ in range(4)]
        assert [(t[0], t[3]) for t in first] == [("1", "1"), ("2", "0"), ("1", "2"), ("2", "3")]
        engine.set_mid("AAPL", Decimal(200))
        engine.step()
        ticks = [raw.read() for _ in range(4)]
        # tickPrice bid (with its size), tickSize bid size, then the same for the ask
        assert [t[0] for t in ticks] == ["1", "2", "1", "2"]
        assert [(ticks[0][3], ticks[0][4], ticks[0][5]), (ticks[1][3], ticks[1][4])] == [
            ("1", "199.99", "100"), ("0", "100")]
        assert [(ticks[2][3], ticks[2][4], ticks[2][5]), (ticks[3][3], ticks[3][4])] == [
            ("2", "200.01", "100"), ("3", "100")]
    finally:
        raw.close()
        venue.stop()


# --------------------------------------------------------------------------- volatility


def test_step_volatility_for_a_large_stock() -> None:
    per_step = step_volatility_bps(0.25, 0.05)
    assert Decimal("0.2") < per_step < Decimal("0.25")
    assert step_volatility_bps(0.25, 1.0) > per_step
    with pytest.raises(ValueError, match="annual_volatility"):
        step_volatility_bps(-1, 0.05)
    with pytest.raises(ValueError, match="step_interval_s"):
        step_volatility_bps(0.25, 0)


def test_prices_step_by_a_fraction_of_the_spread() -> None:
    """At the venue's default step (0.05 s) and a large stock's volatility, the quote moves
    in a minority of steps, by a tick or two, yet does wander over a few thousand steps."""
    config = EngineConfig(symbols={"AAPL": Decimal(190)}, seed=3,
                          volatility_bps=step_volatility_bps(0.25, 0.05))
    engine = VenueEngine("tws", config)
    mids = [next(iter(engine.step())).mid for _ in range(3000)]
    spread = config.tick_size * config.spread_ticks
    moves = [abs(b - a) / spread for a, b in itertools.pairwise(mids)]
    assert statistics.fmean(float(m) for m in moves) < 0.5
    assert max(moves) <= 2
    assert sum(1 for m in moves if m) < 0.8 * len(moves)
    assert (max(mids) - min(mids)) / spread >= 2


def test_the_venue_command_steps_prices_at_a_realistic_volatility(tmp_path: Path) -> None:
    """``tradeguard venue tws`` with its defaults, watched over TCP by the official client:
    the bid moves by a tick or two at a time, never by several spreads."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "venues.tws_venue", "--port", "0", "--state-dir", str(tmp_path)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    client = IbapiClient()
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "venue process did not report its port"
        client.start(int(proc.stdout.readline().rsplit(":", 1)[1]), client_id=6)
        contract = Contract()
        contract.symbol, contract.secType = "AAPL", "STK"
        contract.exchange, contract.currency = "SMART", "USD"
        client.reqMktData(1, contract, "", False, False, [])
        client.wait_for("tickPrice", lambda _: len(
            [a for a in client.of("tickPrice") if a[1] == 1]) >= 12, timeout=30)
        bids = [Decimal(str(a[2])) for a in client.of("tickPrice") if a[1] == 1]
        steps = [abs(b - a) for a, b in itertools.pairwise(bids)]
        assert max(steps) <= Decimal("0.04")  # two 2-cent spreads
        assert min(steps) > 0  # a tick is sent only when the price moved
    finally:
        client.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
