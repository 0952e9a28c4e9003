"""Tests of the simulated venue engine: prices, matching, positions, anomalies, persistence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from messages import (
    OrderAccepted,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    OrderType,
    Quote,
    RejectReason,
    Side,
    SubmitOrder,
    TimeInForce,
)
from tests.helpers import wait_for
from venues import AnomalyConfig, EngineConfig, EngineRunner, VenueEngine

ACCOUNT = "acct-1"
OTHER = "acct-2"
D = Decimal


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """The current fake time in seconds."""
        return self.now


class Recorder:
    """An order listener that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, OrderEvent]] = []

    def __call__(self, account: str, event: OrderEvent) -> None:
        """Keep one event."""
        self.events.append((account, event))

    def kinds(self) -> list[str]:
        """Class names of the events, in order."""
        return [type(event).__name__ for _, event in self.events]

    def fills(self) -> list[OrderFilled]:
        """The fills, in order."""
        return [e for _, e in self.events if isinstance(e, OrderFilled)]

    def clear(self) -> None:
        """Forget the events so far."""
        self.events.clear()


def make_engine(
    clock: Callable[[], float] = time.monotonic, **overrides: Any
) -> tuple[VenueEngine, Recorder]:
    """A quiet venue (no volatility): AAPL at 99.99 / 100.01, 100 shown each side."""
    fields: dict[str, Any] = {
        "symbols": {"AAPL": D("100"), "MSFT": D("50")},
        "volatility_bps": D(0),
        "depth": D(100),
    }
    fields.update(overrides)
    engine = VenueEngine("sim", EngineConfig(**fields), clock=clock)
    recorder = Recorder()
    engine.add_order_listener(recorder)
    return engine, recorder


def order(
    coid: str,
    side: Side = Side.BUY,
    quantity: str = "10",
    order_type: OrderType = OrderType.MARKET,
    limit: str | None = None,
    stop: str | None = None,
    tif: TimeInForce = TimeInForce.DAY,
    symbol: str = "AAPL",
    reduce_only: bool = False,
) -> SubmitOrder:
    """A ``SubmitOrder`` for the quiet venue, written tersely."""
    return SubmitOrder(
        client_order_id=coid,
        venue="sim",
        symbol=symbol,
        side=side,
        quantity=D(quantity),
        order_type=order_type,
        limit_price=D(limit) if limit is not None else None,
        stop_price=D(stop) if stop is not None else None,
        time_in_force=tif,
        reduce_only=reduce_only,
    )


def position(engine: VenueEngine, symbol: str = "AAPL", account: str = ACCOUNT) -> Decimal:
    """The venue's signed position of ``account`` in ``symbol`` (zero when flat)."""
    for pos in engine.positions(account):
        if pos.symbol == symbol:
            return pos.quantity
    return D(0)


def last_seq(engine: VenueEngine, symbol: str = "AAPL") -> int:
    """Sequence number of the last quote published for ``symbol``."""
    quote = engine.quote(symbol)
    assert quote is not None
    return quote.seq


def prices(quotes: list[Quote]) -> list[tuple[str, Decimal, Decimal, int]]:
    """The quotes without their timestamps."""
    return [(q.symbol, q.bid, q.ask, q.seq) for q in quotes]


# ------------------------------------------------------------------ price paths


def test_same_seed_gives_same_quotes_whatever_the_order_flow() -> None:
    quiet = VenueEngine("sim", EngineConfig(seed=11))
    busy = VenueEngine("sim", EngineConfig(seed=11, reject_rate=0.5))
    other = VenueEngine("sim", EngineConfig(seed=12))
    a, b, c = [], [], []
    for i in range(200):
        busy.submit(ACCOUNT, order(f"o{i}", side=Side.BUY if i % 2 else Side.SELL))
        a += prices(quiet.step())
        b += prices(busy.step())
        c += prices(other.step())
    assert a == b
    assert a != c
    assert len({bid for _, bid, _, _ in a}) > 10  # the walk really moves


def test_prices_stay_on_ticks_and_never_below_one_tick() -> None:
    tick = D("0.01")
    engine = VenueEngine(
        "sim",
        EngineConfig(symbols={"PENNY": D("0.05")}, volatility_bps=D(3000), spread_ticks=3),
    )
    bids = []
    for _ in range(2000):
        (q,) = engine.step()
        assert q.bid >= tick
        assert q.bid % tick == 0 and q.ask % tick == 0
        assert q.ask - q.bid == 3 * tick
        bids.append(q.bid)
    assert min(bids) == tick  # the floor was reached and held


def test_set_mid_is_published_by_the_next_step() -> None:
    engine = VenueEngine("sim", EngineConfig(symbols={"AAPL": D("100")}))
    engine.set_mid("AAPL", D("123.45"))
    (q,) = engine.step()
    assert (q.bid, q.ask) == (D("123.44"), D("123.46"))
    assert engine.quote("AAPL") == q


# ------------------------------------------------------------------ matching


def test_market_order_fills_partially_then_completes_on_later_steps() -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("m1", quantity="250"))
    assert rec.kinds() == ["OrderAccepted", "OrderFilled"]
    first = rec.fills()[0]
    assert (first.quantity, first.price, first.leaves_quantity) == (D(100), D("100.01"), D(150))
    (working,) = engine.open_orders(ACCOUNT)
    assert (working.filled, working.leaves) == (D(100), D(150))
    assert working.status is OrderStatus.PARTIALLY_FILLED

    engine.set_mid("AAPL", D("101"))
    engine.step()
    engine.step()
    fills = rec.fills()
    assert [(f.quantity, f.price, f.leaves_quantity) for f in fills] == [
        (D(100), D("100.01"), D(150)),
        (D(100), D("101.01"), D(50)),
        (D(50), D("101.01"), D(0)),
    ]
    assert len({f.fill_id for f in fills}) == 3
    assert engine.open_orders(ACCOUNT) == []
    assert position(engine) == D(250)
    assert engine.executions(ACCOUNT) == fills


def test_depth_is_shared_by_orders_within_a_step() -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("a", quantity="70"))
    engine.submit(OTHER, order("b", quantity="70"))
    assert [f.quantity for f in rec.fills()] == [D(70), D(30)]
    engine.step()
    assert [f.quantity for f in rec.fills()] == [D(70), D(30), D(40)]


@pytest.mark.parametrize(
    ("side", "limit", "new_mid", "fill_price"),
    [
        (Side.BUY, "99.00", "98.50", "98.51"),
        (Side.SELL, "101.00", "101.50", "101.49"),
    ],
)
def test_limit_order_rests_then_fills_when_crossed(
    side: Side, limit: str, new_mid: str, fill_price: str
) -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("l1", side=side, order_type=OrderType.LIMIT, limit=limit))
    assert rec.kinds() == ["OrderAccepted"]
    engine.step()
    assert rec.fills() == []
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == ["l1"]

    engine.set_mid("AAPL", D(new_mid))
    engine.step()
    (fill,) = rec.fills()
    assert fill.price == D(fill_price)
    assert fill.leaves_quantity == 0
    assert engine.open_orders(ACCOUNT) == []
    assert position(engine) == side.sign * D(10)


@pytest.mark.parametrize(
    ("side", "limit", "fill_price"),
    [(Side.BUY, "101.00", "100.01"), (Side.SELL, "99.00", "99.99")],
)
def test_marketable_limit_fills_at_the_touch(side: Side, limit: str, fill_price: str) -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("l1", side=side, order_type=OrderType.LIMIT, limit=limit))
    assert [f.price for f in rec.fills()] == [D(fill_price)]


@pytest.mark.parametrize(
    ("side", "order_type", "stop", "limit", "path"),
    [
        # path: (mid set before a step, expected fill price or None, triggered after the step)
        (
            Side.BUY,
            OrderType.STOP,
            "101.01",
            None,
            [("100.50", None, False), ("101.00", "101.01", True)],
        ),
        (
            Side.SELL,
            OrderType.STOP,
            "98.99",
            None,
            [("99.50", None, False), ("99.00", "98.99", True)],
        ),
        (
            Side.BUY,
            OrderType.STOP_LIMIT,
            "101.00",
            "101.50",
            [("100.50", None, False), ("102.00", None, True), ("101.40", "101.41", True)],
        ),
        (
            Side.SELL,
            OrderType.STOP_LIMIT,
            "99.00",
            "98.50",
            [("99.50", None, False), ("98.00", None, True), ("98.80", "98.79", True)],
        ),
    ],
)
def test_stop_and_stop_limit_trigger(
    side: Side,
    order_type: OrderType,
    stop: str,
    limit: str | None,
    path: list[tuple[str, str | None, bool]],
) -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("s1", side=side, order_type=order_type, stop=stop, limit=limit))
    assert rec.kinds() == ["OrderAccepted"]
    for mid, fill_price, triggered in path:
        engine.set_mid("AAPL", D(mid))
        engine.step()
        if fill_price is None:
            assert rec.fills() == []
            (working,) = engine.open_orders(ACCOUNT)
            assert working.triggered is triggered
        else:
            (fill,) = rec.fills()
            assert fill.price == D(fill_price)
            assert engine.open_orders(ACCOUNT) == []
    assert position(engine) == side.sign * D(10)


def test_fill_or_kill_stop_is_cancelled_when_triggered_without_depth() -> None:
    engine, rec = make_engine()
    stop = order("s1", quantity="150", order_type=OrderType.STOP, stop="101", tif=TimeInForce.FOK)
    engine.submit(ACCOUNT, stop)
    assert rec.kinds() == ["OrderAccepted"]
    engine.set_mid("AAPL", D("102"))
    engine.step()
    assert rec.kinds() == ["OrderAccepted", "OrderCancelled"]
    assert engine.positions(ACCOUNT) == []


def test_stop_already_touched_triggers_on_submit() -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("s1", order_type=OrderType.STOP, stop="99.00"))
    assert [f.price for f in rec.fills()] == [D("100.01")]


@pytest.mark.parametrize(
    ("tif", "order_type", "limit", "quantity", "kinds", "filled"),
    [
        (
            TimeInForce.IOC,
            OrderType.MARKET,
            None,
            "150",
            ["OrderAccepted", "OrderFilled", "OrderCancelled"],
            "100",
        ),
        (TimeInForce.IOC, OrderType.MARKET, None, "80", ["OrderAccepted", "OrderFilled"], "80"),
        (TimeInForce.IOC, OrderType.LIMIT, "99.00", "10", ["OrderAccepted", "OrderCancelled"], "0"),
        (TimeInForce.FOK, OrderType.MARKET, None, "150", ["OrderRejected"], "0"),
        (TimeInForce.FOK, OrderType.MARKET, None, "100", ["OrderAccepted", "OrderFilled"], "100"),
        (TimeInForce.FOK, OrderType.LIMIT, "99.00", "10", ["OrderRejected"], "0"),
    ],
)
def test_immediate_or_cancel_and_fill_or_kill(
    tif: TimeInForce,
    order_type: OrderType,
    limit: str | None,
    quantity: str,
    kinds: list[str],
    filled: str,
) -> None:
    engine, rec = make_engine()
    engine.submit(
        ACCOUNT, order("x1", quantity=quantity, order_type=order_type, limit=limit, tif=tif)
    )
    assert rec.kinds() == kinds
    engine.step()
    assert rec.kinds() == kinds  # nothing left working
    assert engine.open_orders(ACCOUNT) == []
    assert position(engine) == D(filled)
    if kinds == ["OrderRejected"]:
        (_, rejected) = rec.events[0]
        assert isinstance(rejected, OrderRejected)
        assert rejected.reason is RejectReason.VENUE
        assert "fill-or-kill" in rejected.text


# ------------------------------------------------------------------ cancels and rejects


def test_cancel_and_cancel_all() -> None:
    engine, rec = make_engine()
    for coid in ("a", "b", "c"):
        engine.submit(ACCOUNT, order(coid, order_type=OrderType.LIMIT, limit="90"))
    engine.submit(OTHER, order("z", order_type=OrderType.LIMIT, limit="90"))
    rec.clear()

    engine.cancel(ACCOUNT, "b")
    assert rec.kinds() == ["OrderCancelled"]
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == ["a", "c"]

    engine.cancel(ACCOUNT, "b")
    (_, rejected) = rec.events[-1]
    assert isinstance(rejected, OrderRejected)
    assert rejected.reason is RejectReason.VENUE and "unknown order" in rejected.text

    rec.clear()
    assert engine.cancel_all(ACCOUNT) == 2
    assert rec.kinds() == ["OrderCancelled", "OrderCancelled"]
    assert {a for a, _ in rec.events} == {ACCOUNT}
    assert engine.open_orders(ACCOUNT) == []
    assert [w.order.client_order_id for w in engine.open_orders(OTHER)] == ["z"]
    assert engine.cancel_all(ACCOUNT) == 0
    assert engine.cancel_all("nobody") == 0

    engine.set_mid("AAPL", D("80"))
    engine.step()
    assert position(engine) == 0  # cancelled orders never trade
    assert position(engine, account=OTHER) == D(10)


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        (order("d1"), order("d1"), RejectReason.DUPLICATE_ID),
        (
            order("d1"),
            order("d1", order_type=OrderType.LIMIT, limit="1"),
            RejectReason.DUPLICATE_ID,
        ),
        (order("d1"), order("d2", symbol="NOPE"), RejectReason.UNKNOWN_SYMBOL),
    ],
)
def test_duplicate_id_and_unknown_symbol_are_rejected(
    first: SubmitOrder, second: SubmitOrder, reason: RejectReason
) -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, first)
    rec.clear()
    engine.submit(ACCOUNT, second)
    (_, event) = rec.events[0]
    assert rec.kinds() == ["OrderRejected"]
    assert isinstance(event, OrderRejected)
    assert event.reason is reason
    assert event.text.startswith("SIM-")
    assert position(engine) == D(10)


def test_same_id_in_another_account_is_not_a_duplicate() -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("d1"))
    engine.submit(OTHER, order("d1"))
    assert rec.kinds() == ["OrderAccepted", "OrderFilled"] * 2


@pytest.mark.parametrize(("rate", "rejected"), [(1.0, 5), (0.0, 0)])
def test_reject_rate(rate: float, rejected: int) -> None:
    engine, rec = make_engine(reject_rate=rate)
    for i in range(5):
        engine.submit(ACCOUNT, order(f"r{i}"))
    rejects = [e for _, e in rec.events if isinstance(e, OrderRejected)]
    assert len(rejects) == rejected
    assert all(r.reason is RejectReason.VENUE and r.text.startswith("SIM-") for r in rejects)
    assert position(engine) == D(10) * (5 - rejected)


def test_reduce_only_never_grows_a_position() -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("r0", side=Side.SELL, reduce_only=True))
    (_, event) = rec.events[0]
    assert isinstance(event, OrderRejected) and event.reason is RejectReason.REDUCE_ONLY

    engine.submit(ACCOUNT, order("r1", quantity="10"))
    rec.clear()
    engine.submit(ACCOUNT, order("r2", side=Side.SELL, quantity="15", reduce_only=True))
    assert rec.kinds() == ["OrderAccepted", "OrderFilled", "OrderCancelled"]
    assert rec.fills()[0].quantity == D(10)
    assert engine.positions(ACCOUNT) == []


def test_resting_reduce_only_order_is_cancelled_once_the_position_is_closed() -> None:
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("buy", quantity="10"))
    reduce = order("r1", Side.SELL, "10", OrderType.LIMIT, limit="120", reduce_only=True)
    engine.submit(ACCOUNT, reduce)
    engine.submit(ACCOUNT, order("sell", side=Side.SELL, quantity="10"))
    assert [w.order.client_order_id for w in engine.open_orders(ACCOUNT)] == ["r1"]
    rec.clear()
    engine.set_mid("AAPL", D("130"))
    engine.step()
    assert rec.kinds() == ["OrderCancelled"]
    assert engine.open_orders(ACCOUNT) == []
    assert engine.positions(ACCOUNT) == []


# ------------------------------------------------------------------ positions


@pytest.mark.parametrize(
    ("trades", "expected", "realized"),
    [
        # trades: (side, quantity, mid); buys at mid + 0.01, sells at mid - 0.01
        ([(Side.BUY, "10", "100")], ("10", "100.01"), "0"),
        ([(Side.BUY, "10", "100"), (Side.BUY, "10", "102")], ("20", "101.01"), "0"),
        (
            [(Side.BUY, "10", "100"), (Side.BUY, "10", "102"), (Side.SELL, "5", "103")],
            ("15", "101.01"),
            "9.90",
        ),
        ([(Side.BUY, "10", "100"), (Side.SELL, "10", "101")], None, "9.80"),
        ([(Side.BUY, "10", "100"), (Side.SELL, "25", "99")], ("-15", "98.99"), "-10.20"),
        ([(Side.SELL, "10", "100"), (Side.SELL, "30", "104")], ("-40", "102.99"), "0"),
        ([(Side.SELL, "10", "100"), (Side.BUY, "4", "90")], ("-6", "99.99"), "39.92"),
        ([(Side.SELL, "10", "100"), (Side.BUY, "12", "90")], ("2", "90.01"), "99.80"),
    ],
)
def test_position_average_price_through_add_reduce_close_and_flip(
    trades: list[tuple[Side, str, str]], expected: tuple[str, str] | None, realized: str
) -> None:
    engine, _ = make_engine()
    for i, (side, quantity, mid) in enumerate(trades):
        engine.set_mid("AAPL", D(mid))
        engine.submit(ACCOUNT, order(f"p{i}", side=side, quantity=quantity))
    positions = engine.positions(ACCOUNT)
    if expected is None:
        assert positions == []
    else:
        (pos,) = positions
        assert (pos.quantity, pos.average_price) == (D(expected[0]), D(expected[1]))
        assert pos.venue == "sim"
    assert engine.realized_pnl(ACCOUNT)["AAPL"] == D(realized)


# ------------------------------------------------------------------ latency


def test_latency_delays_orders_and_cancels_on_the_injected_clock() -> None:
    clock = FakeClock()
    engine, rec = make_engine(clock=clock, latency_ms=100)
    engine.submit(ACCOUNT, order("m1"))
    engine.submit(ACCOUNT, order("l1", order_type=OrderType.LIMIT, limit="90"))
    assert rec.events == []

    clock.now += 0.099
    engine.pump()
    engine.step()
    assert rec.events == []

    clock.now += 0.001
    engine.pump()
    assert rec.kinds() == ["OrderAccepted", "OrderFilled", "OrderAccepted"]
    assert position(engine) == D(10)

    rec.clear()
    engine.cancel(ACCOUNT, "l1")
    assert engine.cancel_all(ACCOUNT) == 1  # l1 still works until the cancel lands
    clock.now += 0.05
    engine.step()
    assert rec.events == []
    assert len(engine.open_orders(ACCOUNT)) == 1
    clock.now += 0.05
    engine.step()  # step() processes due requests too
    assert rec.kinds() == ["OrderCancelled"]
    assert engine.open_orders(ACCOUNT) == []


# ------------------------------------------------------------------ anomalies


def _check_anomaly(kind: str, before: Quote, quotes: list[Quote]) -> None:
    """Assert that ``quotes`` show the anomaly ``kind`` for AAPL, compared with ``before``."""
    by_symbol = {q.symbol: q for q in quotes}
    if kind == "stall":
        assert "AAPL" not in by_symbol
        return
    q = by_symbol["AAPL"]
    if kind == "spike":
        assert q.mid in (D("130.00"), D("70.00"))
        assert abs(q.mid - before.mid) / before.mid == D("0.3")
    elif kind == "crossed":
        assert q.bid > q.ask
    elif kind == "negative":
        assert q.bid < 0


PROBABILITY_FIELD = {
    "spike": "spike_probability",
    "crossed": "crossed_probability",
    "negative": "negative_probability",
    "stall": "stall_probability",
}


@pytest.mark.parametrize("kind", ["spike", "crossed", "negative", "stall"])
def test_injected_anomaly_shows_up_in_the_next_quote(kind: str) -> None:
    engine, _ = make_engine()
    before = engine.step()[0]
    engine.inject(kind, "AAPL")
    quotes = engine.step()
    _check_anomaly(kind, before, quotes)
    assert "MSFT" in {q.symbol for q in quotes}  # other symbols are untouched
    if kind in ("crossed", "negative"):
        (after, _) = engine.step()
        assert (after.bid, after.ask) == (before.bid, before.ask)  # one-shot: sane again


@pytest.mark.parametrize("kind", ["spike", "crossed", "negative", "stall"])
def test_random_anomaly_with_probability_one(kind: str) -> None:
    fields: dict[str, Any] = {PROBABILITY_FIELD[kind]: 1.0}
    anomalies = AnomalyConfig(**fields)
    engine, _ = make_engine(symbols={"AAPL": D("100")}, anomalies=anomalies)
    engine.set_mid("AAPL", D("100"))
    before = Quote(
        venue="sim", symbol="AAPL", bid=D("99.99"), ask=D("100.01"), bid_size=D(1), ask_size=D(1)
    )
    _check_anomaly(kind, before, engine.step())


def test_stall_lasts_stall_steps_and_sequence_has_no_gap() -> None:
    engine, _ = make_engine(anomalies=AnomalyConfig(stall_steps=3))
    seq = engine.step()[0].seq
    engine.inject("stall", "AAPL")
    for _ in range(3):
        assert [q.symbol for q in engine.step()] == ["MSFT"]
    assert last_seq(engine) == seq
    resumed = engine.step()[0]
    assert (resumed.symbol, resumed.seq) == ("AAPL", seq + 1)


def test_bad_quotes_do_not_move_the_book() -> None:
    engine, rec = make_engine()
    engine.inject("negative", "AAPL")
    engine.inject("crossed", "MSFT")
    engine.step()
    engine.submit(ACCOUNT, order("m1", side=Side.SELL))
    assert rec.fills()[0].price == D("99.99")


def test_inject_refuses_unknown_kind_and_symbol() -> None:
    engine, _ = make_engine()
    with pytest.raises(ValueError, match="kind"):
        engine.inject("meteor", "AAPL")
    with pytest.raises(ValueError, match="symbol"):
        engine.inject("spike", "NOPE")


# ------------------------------------------------------------------ listeners and threads


def test_listener_may_call_back_into_the_engine_and_order_is_kept() -> None:
    engine, rec = make_engine()

    def hedge(account: str, event: OrderEvent) -> None:
        """Answer every AAPL fill with a MSFT order, from inside the listener."""
        if isinstance(event, OrderFilled) and event.symbol == "AAPL":
            engine.submit(account, order("h-" + event.client_order_id, symbol="MSFT"))

    engine.remove_order_listener(rec)
    engine.add_order_listener(hedge)  # called first: its order goes out while m1's fill is
    engine.add_order_listener(rec)  # still being delivered, yet rec sees m1's events first
    engine.submit(ACCOUNT, order("m1"))
    assert [(type(e).__name__, e.client_order_id) for _, e in rec.events] == [
        ("OrderAccepted", "m1"),
        ("OrderFilled", "m1"),
        ("OrderAccepted", "h-m1"),
        ("OrderFilled", "h-m1"),
    ]
    engine.remove_order_listener(hedge)
    engine.remove_order_listener(rec)
    engine.submit(ACCOUNT, order("m2"))
    assert len(rec.events) == 4
    assert position(engine, "MSFT") == D(10)


def test_quote_listener_gets_each_step_before_its_fills() -> None:
    engine, _ = make_engine()
    seen: list[str] = []
    engine.add_quote_listener(lambda quotes: seen.append(f"quotes:{len(quotes)}"))
    engine.add_order_listener(lambda account, event: seen.append(type(event).__name__))
    engine.submit(ACCOUNT, order("m1", quantity="150"))
    seen.clear()
    engine.step()
    assert seen == ["quotes:2", "OrderFilled"]


def test_concurrent_submits_while_a_runner_steps() -> None:
    engine, rec = make_engine(depth=D(5))
    runner = EngineRunner(engine, interval_s=0.001)
    runner.start()
    try:

        def send(prefix: str) -> None:
            """Send 25 market buys of 3."""
            for i in range(25):
                engine.submit(ACCOUNT, order(f"{prefix}{i}", quantity="3"))

        threads = [threading.Thread(target=send, args=(f"t{n}-",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=5)
        wait_for(lambda: position(engine) == D(300))
    finally:
        runner.stop()
    fills = engine.executions(ACCOUNT)
    assert len({f.fill_id for f in fills}) == len(fills)
    assert sum((f.quantity for f in fills), D(0)) == D(300)
    assert rec.fills() == fills


def test_runner_steps_saves_and_stops(tmp_path: Path) -> None:
    state = tmp_path / "venue.json"
    engine, _ = make_engine()
    engine.submit(ACCOUNT, order("m1"))
    runner = EngineRunner(engine, interval_s=0.001, state_path=state, save_every_s=0.01)
    runner.start()
    with pytest.raises(RuntimeError):
        runner.start()
    wait_for(lambda: runner.steps >= 5 and state.exists())
    runner.stop()
    assert not runner.running
    steps = runner.steps
    assert last_seq(engine) == steps
    restored, _ = make_engine()
    restored.load(state)
    assert restored.positions(ACCOUNT) == engine.positions(ACCOUNT)


def test_runner_with_max_steps_ends_by_itself() -> None:
    engine, _ = make_engine()
    runner = EngineRunner(engine, interval_s=0.001, max_steps=3)
    runner.start()
    wait_for(lambda: not runner.running)
    runner.stop()
    assert runner.steps == 3
    assert last_seq(engine) == 3


# ------------------------------------------------------------------ persistence


def _busy_engine() -> tuple[VenueEngine, Recorder]:
    """A venue with fills and working orders (partial, limit, stop) in two accounts."""
    engine, rec = make_engine()
    engine.submit(ACCOUNT, order("m1", quantity="250"))  # 100 now
    engine.step()  # 100 more; 50 left working
    engine.submit(ACCOUNT, order("l1", side=Side.SELL, order_type=OrderType.LIMIT, limit="120"))
    engine.submit(ACCOUNT, order("s1", side=Side.SELL, order_type=OrderType.STOP, stop="80"))
    engine.submit(OTHER, order("o1", side=Side.SELL, symbol="MSFT", quantity="7"))
    engine.set_mid("AAPL", D("105"))
    return engine, rec


def test_state_round_trip_continues_the_account() -> None:
    engine, _ = _busy_engine()
    data = engine.state_bytes()
    executions = {a: engine.executions(a) for a in (ACCOUNT, OTHER)}
    restored, rec = make_engine()
    restored.load_state(data)

    for account in (ACCOUNT, OTHER):
        assert restored.positions(account) == engine.positions(account)
        assert restored.open_orders(account) == engine.open_orders(account)
        assert restored.executions(account) == engine.executions(account)
    assert restored.state_bytes() == data

    # mids and sequence numbers continue
    assert prices(restored.step()) == prices(engine.step())
    # the partial market order finished on the restored venue, with a new fill id
    (fill,) = rec.fills()
    assert (fill.client_order_id, fill.quantity, fill.price) == ("m1", D(50), D("105.01"))
    old_ids = [int(f.fill_id.split("-")[1]) for a in (ACCOUNT, OTHER) for f in executions[a]]
    assert int(fill.fill_id.split("-")[1]) > max(old_ids)
    # ids used before the restart are still duplicates
    rec.clear()
    restored.submit(ACCOUNT, order("l1"))
    restored.submit(OTHER, order("o1"))  # filled before the restart, no longer working
    for _, event in rec.events:
        assert isinstance(event, OrderRejected) and event.reason is RejectReason.DUPLICATE_ID
    rec.clear()
    # venue order ids keep increasing
    restored.submit(ACCOUNT, order("n1"))
    accepted = [e for _, e in rec.events if isinstance(e, OrderAccepted)]
    assert int(accepted[0].venue_order_id) > 4
    # resting orders still work after the restart
    restored.set_mid("AAPL", D("79"))
    restored.step()
    assert "s1" not in {w.order.client_order_id for w in restored.open_orders(ACCOUNT)}


def test_save_and_load_through_a_file(tmp_path: Path) -> None:
    engine, _ = _busy_engine()
    path = tmp_path / "state" / "venue.json"
    path.parent.mkdir()
    engine.save(path)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    restored, _ = make_engine()
    restored.load(path)
    assert restored.positions(ACCOUNT) == engine.positions(ACCOUNT)
    assert restored.open_orders(ACCOUNT) == engine.open_orders(ACCOUNT)

    restored.load(tmp_path / "missing.json")
    assert restored.positions(ACCOUNT) == []
    assert restored.open_orders(ACCOUNT) == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"version": 1}',
        b'{"version": 99, "venue": "x", "next_order_id": 1, "next_fill_id": 1}',
    ],
)
def test_bad_state_is_refused_and_leaves_the_venue_as_it_was(data: bytes) -> None:
    engine, _ = _busy_engine()
    before = engine.state_bytes()
    with pytest.raises(ValueError, match="engine state"):
        engine.load_state(data)
    assert engine.state_bytes() == before


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    "fields",
    [
        {"symbols": {}},
        {"symbols": {"AAPL": D(0)}},
        {"tick_size": D(0)},
        {"spread_ticks": 0},
        {"depth": D(-1)},
        {"latency_ms": -1},
        {"reject_rate": 1.5},
        {"volatility_bps": D(-1)},
    ],
)
def test_bad_config_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EngineConfig(**fields)


@pytest.mark.parametrize(
    "fields", [{"spike_probability": -0.1}, {"stall_steps": 0}, {"spike_size_pct": D(0)}]
)
def test_bad_anomaly_config_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AnomalyConfig(**fields)
