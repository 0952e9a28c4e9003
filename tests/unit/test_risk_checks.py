"""Pre-trade checks of the risk governor, each at and around its threshold.

The governor runs as an actor under a one-child tree with an injected clock. The test plays
every other part: it publishes quotes, fills, venue events, connector notices and
portfolio snapshots on the bus, as the connectors and the position keeper would; a
recorder registered under the venue's name stands in for the connector, so an order that
passes is seen arriving there, and a refusal is seen as ``OrderRejected`` on ORDERS.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import topics
from actors.journal import Journal
from actors.risk_governor import GetRiskState, RiskConfig, RiskGovernor, Tick
from messages import (
    FAILSAFE_SOURCE,
    ConnectorDown,
    ConnectorUp,
    FlattenRequested,
    Mode,
    OperatorCommand,
    OperatorVerb,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    OrderType,
    PortfolioSnapshot,
    Quote,
    QuoteBatch,
    Reconciliation,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    now_ns,
)
from supervision import NO_BACKOFF, SUPERVISION_TOPIC, ChildExited, ChildSpec, Tree, bus, registry
from tests.helpers import wait_for
from tests.recorder import Recorder

D = Decimal
VENUE = "paper"
VENUES: dict[str, tuple[str, ...]] = {VENUE: ("AAPL", "MSFT", "EURUSD")}
R = RejectReason

UNLIMITED = RiskConfig(
    max_order_quantity=D(0), max_order_notional=D(0), max_position=D(0), max_open_positions=0,
    max_daily_notional=D(0), daily_loss_limit=D(0), max_orders_per_s=0, price_band_pct=D(0),
    degradations_to_failsafe=0, circuit_rejections=0,
)
"""Every limit off: each test switches on the one it is about."""

_ids = itertools.count(1)


def limits(**fields: Any) -> RiskConfig:
    """``UNLIMITED`` with ``fields`` set (numbers given as strings become Decimals)."""
    return msgspec.structs.replace(UNLIMITED, **{
        k: D(v) if isinstance(v, str) else v for k, v in fields.items()
    })


def order(side: str = "buy", quantity: str = "10", symbol: str = "AAPL", **fields: Any) -> SubmitOrder:
    """A strategy's order with a fresh client order id."""
    for name in ("limit_price", "stop_price"):
        if isinstance(fields.get(name), str):
            fields[name] = D(fields[name])
    fields.setdefault("source", "strategy")
    fields.setdefault("client_order_id", f"o-{next(_ids)}")
    return SubmitOrder(venue=fields.pop("venue", VENUE), symbol=symbol, side=Side(side),
                       quantity=D(quantity), **fields)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self, offset: float) -> None:
        """Set the time to the start plus ``offset`` (no rounding carried over)."""
        self.now = 1000.0 + offset


class Harness:
    """A governor under test and the fakes around it."""

    def __init__(self, state_dir: Path, config: RiskConfig, clock: Clock) -> None:
        self.state_dir = state_dir
        self.config = config
        self.clock = clock
        self.connector = Recorder.spawn(VENUE)
        """Registered under the venue's name: what the governor passes to the connector."""
        self.failsafe = Recorder.spawn("failsafe")
        """Registered as the failsafe: the flatten requests the governor sends."""
        self.bus = Recorder.spawn("observer", [topics.ORDERS, topics.MODE, topics.SUBMITTED])
        spec = ChildSpec(name="risk_governor", actor_class=RiskGovernor, args=(config, state_dir, VENUES),
                         kwargs={"clock": clock, "tick_s": 3600.0})
        self.tree = Tree([spec], name=f"root-{id(self)}", backoff=NO_BACKOFF, intensity=10)
        self.tree.start(timeout_s=5)
        self.passed: set[str] = set()

    # ---- talking to the governor ------------------------------------------------------

    @property
    def ref(self) -> Any:
        ref = registry.lookup("risk_governor")
        assert ref is not None, "the governor is not running"
        return ref

    def state(self) -> dict[str, Any]:
        """The governor's state; also a barrier: everything told before is handled."""
        state: dict[str, Any] = self.ref.ask(GetRiskState(), timeout=2)
        return state

    def mode(self) -> Mode:
        return Mode(self.state()["mode"])

    def publish(self, topic: str, message: Any) -> None:
        bus.publish(topic, message)
        self.state()

    def flatten_requests(self, after: int = 0) -> list[FlattenRequested]:
        """The flatten requests the failsafe got (from index ``after`` on), once everything
        the governor has told it so far has arrived."""
        self.state()
        marker = object()
        registry.tell("failsafe", marker)
        self.failsafe.wait_for(lambda m: m is marker, after=after)
        return [m for m in self.failsafe.messages()[after:] if isinstance(m, FlattenRequested)]

    def operator(self, verb: OperatorVerb) -> str:
        answer: str = self.ref.ask(OperatorCommand(verb=verb, operator="test"), timeout=2)
        return answer

    def submit(self, new: SubmitOrder) -> RejectReason | None:
        """Send ``new`` to the governor; None when it reached the connector, else the reason
        of the ``OrderRejected`` seen on ORDERS."""
        coid = new.client_order_id
        arrived = self.connector.count()
        refused = self.bus.count()
        registry.tell("risk_governor", new)

        def at_venue() -> list[SubmitOrder]:
            return [m for m in self.connector.messages()[arrived:]
                    if isinstance(m, SubmitOrder) and m.client_order_id == coid]

        def rejected() -> list[OrderRejected]:
            return [m for m in self.bus.messages()[refused:]
                    if isinstance(m, OrderRejected) and m.client_order_id == coid]

        wait_for(lambda: at_venue() or rejected(), timeout_s=3, what=f"the outcome of {coid}")
        if at_venue():
            assert at_venue() == [new]
            self.passed.add(coid)
            return None
        refusals = rejected()
        assert len(refusals) == 1
        assert refusals[0].source == new.source and refusals[0].venue == new.venue
        return refusals[0].reason

    # ---- playing the rest of the system -----------------------------------------------

    def connector_up(self, reconciled: bool = True) -> None:
        """The connector comes up and the venue reconciles (matching, unless said)."""
        self.publish(topics.CONNECTORS, ConnectorUp(name=VENUE))
        self.publish(topics.PORTFOLIO, Reconciliation(venue=VENUE, reconciled=reconciled))

    def quote(self, symbol: str, mid: str) -> None:
        price = D(mid)
        quote = Quote(venue=VENUE, symbol=symbol, bid=price, ask=price, bid_size=D(100), ask_size=D(100))
        self.publish(topics.MARKET, QuoteBatch(venue=VENUE, quotes=(quote,)))

    def live(self, mids: dict[str, str] | None = None) -> None:
        """Connector up, a mid for every symbol (100 unless said), mode LIVE."""
        self.connector_up()
        for symbol in VENUES[VENUE]:
            self.quote(symbol, (mids or {}).get(symbol, "100"))
        assert self.mode() is Mode.LIVE

    def fill(self, side: str, quantity: str, symbol: str = "AAPL", price: str = "100",
             client_order_id: str = "", leaves: str = "0") -> OrderFilled:
        """A fill reported by the venue (for an order the governor passed, or not)."""
        fill = OrderFilled(client_order_id=client_order_id or f"x-{next(_ids)}", venue=VENUE,
                           fill_id=f"f-{next(_ids)}", symbol=symbol, side=Side(side), quantity=D(quantity),
                           price=D(price), leaves_quantity=D(leaves), ts_ns=now_ns())
        self.publish(topics.ORDERS, fill)
        return fill

    def venue_rejects(self, client_order_id: str = "") -> None:
        self.publish(topics.ORDERS, OrderRejected(client_order_id=client_order_id or f"v-{next(_ids)}",
                                                  venue=VENUE, reason=R.VENUE, text="SIM-103 refused"))

    def snapshot(self, **fields: Any) -> None:
        values: dict[str, Any] = {k: D(v) if isinstance(v, str) else v for k, v in fields.items()}
        self.publish(topics.PORTFOLIO, PortfolioSnapshot(**values))

    def warning(self, kind: str = "price_spike") -> None:
        self.publish(topics.SAFETY, SafetyEvent(kind=kind, severity=Severity.WARNING, venue=VENUE))

    def tick(self) -> None:
        """Run the governor's timed rules now."""
        self.ref.tell(Tick())
        self.state()

    def restart(self) -> None:
        """Stop the governor; its supervisor starts a new one (a new generation)."""
        old = self.ref
        old.stop()
        wait_for(lambda: registry.lookup("risk_governor") not in (None, old), what="a new governor")
        self.state()

    def check_nothing_else_reached_the_venue(self) -> None:
        got = {m.client_order_id for m in self.connector.messages(SubmitOrder)}
        assert got == self.passed


@pytest.fixture
def governor(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def start(config: RiskConfig = UNLIMITED, clock: Clock | None = None) -> Harness:
        harness = Harness(tmp_path, config, clock or Clock())
        made.append(harness)
        return harness

    yield start
    for harness in made:
        harness.check_nothing_else_reached_the_venue()
        harness.tree.stop(timeout_s=5)


# ---- size and exposure ---------------------------------------------------------------------


@pytest.mark.parametrize(("quantity", "expected"), [
    ("99", None), ("100", None), ("100.01", R.MAX_QUANTITY), ("101", R.MAX_QUANTITY),
])
def test_max_order_quantity(governor: Callable[..., Harness], quantity: str, expected: R | None) -> None:
    gov = governor(limits(max_order_quantity="100"))
    gov.live()
    assert gov.submit(order("buy", quantity)) is expected
    assert gov.submit(order("sell", quantity)) is expected


@pytest.mark.parametrize(("quantity", "limit_price", "expected"), [
    ("100", None, None),                 # 100 x mid 100 = 10 000: at the limit
    ("100.01", None, R.MAX_NOTIONAL),
    ("99", "101", None),                 # 9 999 at the limit price
    ("100", "100", None),
    ("100", "100.01", R.MAX_NOTIONAL),   # the limit price, not the mid, prices a limit order
    ("101", "99", None),                 # 9 999
])
def test_max_order_notional(governor: Callable[..., Harness], quantity: str, limit_price: str | None,
                            expected: R | None) -> None:
    gov = governor(limits(max_order_notional="10000"))
    gov.live()
    kind = OrderType.MARKET if limit_price is None else OrderType.LIMIT
    assert gov.submit(order("buy", quantity, order_type=kind, limit_price=limit_price)) is expected


def test_no_market_to_price_a_market_order(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(max_order_notional="10000"))
    gov.connector_up()
    assert gov.submit(order("buy", "1")) is R.NO_MARKET
    gov.quote("AAPL", "100")
    assert gov.submit(order("buy", "1")) is None


@pytest.mark.parametrize(("filled", "working", "new", "expected"), [
    ([], [], ("buy", "100"), None),
    ([], [], ("buy", "101"), R.MAX_POSITION),
    ([], [], ("sell", "100"), None),
    ([], [], ("sell", "101"), R.MAX_POSITION),
    ([("buy", "60")], [], ("buy", "40"), None),
    ([("buy", "60")], [], ("buy", "41"), R.MAX_POSITION),
    ([], [("buy", "60")], ("buy", "40"), None),            # working orders count
    ([], [("buy", "60")], ("buy", "41"), R.MAX_POSITION),
    ([("buy", "30")], [("buy", "30")], ("buy", "41"), R.MAX_POSITION),
    # a working sell does not make room for a buy: it may be cancelled while the buys fill
    ([], [("buy", "100"), ("sell", "100")], ("buy", "1"), R.MAX_POSITION),
    ([], [("buy", "100")], ("sell", "100"), None),
    ([("buy", "100")], [], ("sell", "200"), None),          # from +100 to -100
    ([("buy", "100")], [], ("sell", "201"), R.MAX_POSITION),
    ([("sell", "100")], [], ("buy", "100"), None),          # reducing always fits
])
def test_max_position_counts_working_orders(
    governor: Callable[..., Harness], filled: list[tuple[str, str]], working: list[tuple[str, str]],
    new: tuple[str, str], expected: R | None,
) -> None:
    gov = governor(limits(max_position="100"))
    gov.live()
    for side, quantity in filled:
        gov.fill(side, quantity)
    for side, quantity in working:
        assert gov.submit(order(side, quantity)) is None
    assert gov.submit(order(*new)) is expected


@pytest.mark.parametrize(("filled", "working", "symbol", "expected"), [
    ([("AAPL", "buy")], [], "MSFT", None),
    ([("AAPL", "buy"), ("MSFT", "sell")], [], "EURUSD", R.MAX_OPEN_POSITIONS),
    ([("AAPL", "buy"), ("MSFT", "sell")], [], "AAPL", None),     # adding to an open one
    ([("AAPL", "buy"), ("MSFT", "sell")], [], "MSFT", None),
    ([("AAPL", "buy")], ["MSFT"], "EURUSD", R.MAX_OPEN_POSITIONS),  # a working order opens one
    ([("AAPL", "buy")], ["MSFT"], "MSFT", None),
    ([("AAPL", "buy"), ("AAPL", "sell")], ["MSFT"], "EURUSD", None),  # AAPL is flat again
])
def test_max_open_positions(governor: Callable[..., Harness], filled: list[tuple[str, str]],
                            working: list[str], symbol: str, expected: R | None) -> None:
    gov = governor(limits(max_open_positions=2))
    gov.live()
    for filled_symbol, side in filled:
        gov.fill(side, "5", filled_symbol)
    for working_symbol in working:
        assert gov.submit(order("buy", "1", working_symbol)) is None
    assert gov.submit(order("buy", "1", symbol)) is expected


@pytest.mark.parametrize(("traded", "working", "quantity", "expected"), [
    ("9000", None, "10", None),              # 9 000 + 1 000 = 10 000: at the limit
    ("9000", None, "10.01", R.MAX_DAILY_NOTIONAL),
    ("0", "50", "50", None),                 # working orders count
    ("0", "50", "51", R.MAX_DAILY_NOTIONAL),
    ("5000", "40", "11", R.MAX_DAILY_NOTIONAL),
])
def test_max_daily_notional(governor: Callable[..., Harness], traded: str, working: str | None,
                            quantity: str, expected: R | None) -> None:
    gov = governor(limits(max_daily_notional="10000"))
    gov.live()
    gov.snapshot(daily_traded_notional=traded)
    if working is not None:
        assert gov.submit(order("buy", working)) is None
    assert gov.submit(order("buy", quantity)) is expected


def test_a_fill_counts_in_the_daily_notional_before_the_keeper_reports_it(
    governor: Callable[..., Harness],
) -> None:
    gov = governor(limits(max_daily_notional="10000"))
    gov.live()
    first = order("buy", "60")
    assert gov.submit(first) is None
    gov.fill("buy", "60", client_order_id=first.client_order_id)   # no longer working...
    assert gov.submit(order("sell", "41")) is R.MAX_DAILY_NOTIONAL  # ...but traded
    gov.snapshot(daily_traded_notional="6000", fills=1)             # the keeper catches up
    assert gov.submit(order("sell", "41")) is R.MAX_DAILY_NOTIONAL
    assert gov.submit(order("sell", "40")) is None


def test_a_restarted_governor_reads_the_days_notional_from_the_journal(
    governor: Callable[..., Harness], tmp_path: Path,
) -> None:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        for n in range(9):
            journal.record_fill(OrderFilled(client_order_id=f"old-{n}", venue=VENUE, fill_id=f"old-{n}",
                                            symbol="MSFT", side=Side.BUY, quantity=D(10), price=D(100),
                                            leaves_quantity=D(0), ts_ns=now_ns()), D(0))
    gov = governor(limits(max_daily_notional="10000"))
    gov.live()
    assert gov.submit(order("buy", "10.01")) is R.MAX_DAILY_NOTIONAL
    assert gov.submit(order("buy", "10")) is None


# ---- daily loss ---------------------------------------------------------------------------


def test_daily_loss_just_inside_the_limit_trades(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(daily_loss_limit="1000"))
    gov.live()
    gov.snapshot(daily_pnl="-999.99")
    assert gov.mode() is Mode.LIVE
    assert gov.submit(order()) is None
    assert gov.flatten_requests() == []


def test_daily_loss_at_the_limit_while_live_is_failsafe(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(daily_loss_limit="1000"))
    gov.live()
    gov.snapshot(daily_pnl="-1000")
    assert gov.mode() is Mode.FAILSAFE
    request = gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested))
    assert "daily loss" in request.reason
    assert gov.submit(order()) is R.MODE


def test_an_order_against_a_breached_daily_loss_is_refused_and_trips_failsafe(
    governor: Callable[..., Harness],
) -> None:
    gov = governor(limits(daily_loss_limit="1000"))
    gov.snapshot(daily_pnl="-1000.01")          # arrives while READY: nothing trades yet
    gov.live()
    assert gov.submit(order()) is R.DAILY_LOSS
    assert gov.mode() is Mode.FAILSAFE
    gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested))
    assert gov.submit(order()) is R.MODE


def test_a_restarted_governor_reads_the_days_loss_from_the_journal(
    governor: Callable[..., Harness], tmp_path: Path,
) -> None:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        journal.record_fill(OrderFilled(client_order_id="old", venue=VENUE, fill_id="old", symbol="MSFT",
                                        side=Side.SELL, quantity=D(10), price=D(100), leaves_quantity=D(0),
                                        ts_ns=now_ns()), D(-1000))
    gov = governor(limits(daily_loss_limit="1000"))
    gov.live()
    assert gov.submit(order()) is R.DAILY_LOSS
    assert gov.mode() is Mode.FAILSAFE


# ---- rate and price --------------------------------------------------------------------------


def test_order_rate_limit(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(limits(max_orders_per_s=3), clock)
    gov.live()
    for _ in range(3):
        assert gov.submit(order()) is None
    assert gov.submit(order()) is R.RATE_LIMIT
    clock.at(0.5)
    assert gov.submit(order()) is R.RATE_LIMIT       # refused orders do not count...
    clock.at(0.999)
    assert gov.submit(order()) is R.RATE_LIMIT       # ...and the window is still full
    clock.at(1.0)                                     # a second after the first three
    for _ in range(3):
        assert gov.submit(order()) is None
    assert gov.submit(order()) is R.RATE_LIMIT


@pytest.mark.parametrize(("kind", "limit_price", "stop_price", "expected"), [
    (OrderType.LIMIT, "105", None, None),            # exactly 5 % from the mid of 100
    (OrderType.LIMIT, "105.01", None, R.PRICE_BAND),
    (OrderType.LIMIT, "95", None, None),
    (OrderType.LIMIT, "94.99", None, R.PRICE_BAND),
    (OrderType.STOP, None, "105", None),
    (OrderType.STOP, None, "105.01", R.PRICE_BAND),
    (OrderType.STOP, None, "94.99", R.PRICE_BAND),
    (OrderType.STOP_LIMIT, "101", "94.99", R.PRICE_BAND),
    (OrderType.STOP_LIMIT, "94.99", "101", R.PRICE_BAND),
    (OrderType.STOP_LIMIT, "95", "105", None),
])
def test_price_band_around_the_last_mid(governor: Callable[..., Harness], kind: OrderType,
                                        limit_price: str | None, stop_price: str | None,
                                        expected: R | None) -> None:
    gov = governor(limits(price_band_pct="5"))
    gov.live()
    new = order("buy", "1", order_type=kind, limit_price=limit_price, stop_price=stop_price)
    assert gov.submit(new) is expected


def test_price_band_follows_the_market(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(price_band_pct="5"))
    gov.live()
    assert gov.submit(order("buy", "1", order_type=OrderType.LIMIT, limit_price="110")) is R.PRICE_BAND
    gov.quote("AAPL", "106")
    assert gov.submit(order("buy", "1", order_type=OrderType.LIMIT, limit_price="110")) is None


# ---- identity and form -----------------------------------------------------------------------


def test_duplicate_client_order_id(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(max_position="100"))
    gov.live()
    first = order("buy", "100")
    assert gov.submit(first) is None
    assert gov.submit(order("sell", "1", client_order_id=first.client_order_id)) is R.DUPLICATE_ID
    # the refusal of the duplicate must leave the original working (and counted)
    assert gov.state()["working_orders"] == 1
    assert gov.submit(order("buy", "1")) is R.MAX_POSITION


def test_duplicate_of_a_journaled_order_after_a_restart(governor: Callable[..., Harness],
                                                         tmp_path: Path) -> None:
    earlier = order("buy", "1")
    with Journal(tmp_path / "journal.sqlite3") as journal:   # what the keeper journaled before
        journal.record_order(earlier)
    gov = governor()
    gov.live()
    assert gov.submit(order("buy", "1", client_order_id=earlier.client_order_id)) is R.DUPLICATE_ID
    passed = order("buy", "1")
    assert gov.submit(passed) is None
    with Journal(tmp_path / "journal.sqlite3") as journal:
        journal.record_order(passed)
    gov.restart()
    gov.live()
    assert gov.submit(order("sell", "1", client_order_id=passed.client_order_id)) is R.DUPLICATE_ID


@pytest.mark.parametrize(("venue", "symbol", "expected"), [
    (VENUE, "AAPL", None),
    ("nyse", "AAPL", R.UNKNOWN_VENUE),
    (VENUE, "TSLA", R.UNKNOWN_SYMBOL),
])
def test_unknown_venue_or_symbol(governor: Callable[..., Harness], venue: str, symbol: str,
                                 expected: R | None) -> None:
    gov = governor()
    gov.live()
    assert gov.submit(order("buy", "1", symbol, venue=venue)) is expected


def _forced(**fields: Any) -> SubmitOrder:
    """A valid order with ``fields`` overwritten behind the struct's own validation (as a
    buggy source could build one)."""
    base = order("buy", "1", order_type=fields.pop("order_type", OrderType.MARKET),
                 limit_price=fields.pop("limit_price_valid", None),
                 stop_price=fields.pop("stop_price_valid", None))
    for name, value in fields.items():
        msgspec.structs.force_setattr(base, name, value)
    return base


@pytest.mark.parametrize("malformed", [
    pytest.param(lambda: _forced(quantity=D(0)), id="zero-quantity"),
    pytest.param(lambda: _forced(quantity=D(-5)), id="negative-quantity"),
    pytest.param(lambda: _forced(quantity=D("NaN")), id="nan-quantity"),
    pytest.param(lambda: _forced(quantity=D("Infinity")), id="infinite-quantity"),
    pytest.param(lambda: _forced(quantity="10"), id="text-quantity"),
    pytest.param(lambda: _forced(order_type=OrderType.LIMIT, limit_price_valid=D(100), limit_price=None),
                 id="limit-without-price"),
    pytest.param(lambda: _forced(order_type=OrderType.LIMIT, limit_price_valid=D(100), limit_price=D(-1)),
                 id="negative-limit"),
    pytest.param(lambda: _forced(order_type=OrderType.STOP, stop_price_valid=D(100), stop_price=None),
                 id="stop-without-price"),
    pytest.param(lambda: _forced(order_type=OrderType.STOP, stop_price_valid=D(100), stop_price=D("NaN")),
                 id="nan-stop"),
    pytest.param(lambda: _forced(side="buy"), id="side-not-a-side"),
    pytest.param(lambda: _forced(symbol=""), id="empty-symbol"),
])
def test_malformed_orders_are_refused_and_the_governor_lives_on(
    governor: Callable[..., Harness], malformed: Callable[[], SubmitOrder],
) -> None:
    gov = governor()
    gov.live()
    bad = malformed()
    assert gov.submit(bad) is R.MALFORMED
    assert gov.state()["rejected"] == 1
    assert gov.submit(order()) is None


def test_malformed_order_checked_directly(tmp_path: Path) -> None:
    governor = RiskGovernor(UNLIMITED, tmp_path, VENUES)   # never started: check() alone
    rejection = governor.check(_forced(quantity=D("NaN")))
    assert rejection is not None and rejection[0] is R.MALFORMED


# ---- modes, operator and venue -------------------------------------------------------------


def test_reduce_only_in_degraded(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    gov.fill("buy", "10")
    gov.warning()
    assert gov.mode() is Mode.DEGRADED
    assert gov.submit(order("buy", "1")) is R.REDUCE_ONLY           # increases
    assert gov.submit(order("sell", "11")) is R.REDUCE_ONLY         # would flip
    assert gov.submit(order("buy", "1", "MSFT")) is R.REDUCE_ONLY   # flat: opens
    assert gov.submit(order("sell", "6")) is None                   # reduces
    assert gov.submit(order("sell", "6")) is R.REDUCE_ONLY          # two reducing orders cannot flip
    assert gov.submit(order("sell", "4")) is None
    assert gov.submit(order("sell", "1")) is R.REDUCE_ONLY


def test_reduce_only_flag_while_live(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    gov.fill("sell", "10")
    assert gov.submit(order("sell", "1", reduce_only=True)) is R.REDUCE_ONLY
    assert gov.submit(order("buy", "11", reduce_only=True)) is R.REDUCE_ONLY
    assert gov.submit(order("buy", "10", reduce_only=True)) is None
    assert gov.submit(order("buy", "1", "MSFT")) is None            # LIVE: opening is fine


def test_only_the_failsafes_orders_pass_in_failsafe(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    gov.fill("buy", "10")
    gov.operator(OperatorVerb.FLATTEN)
    assert gov.mode() is Mode.FAILSAFE
    assert gov.submit(order("sell", "10")) is R.MODE                       # even reducing
    assert gov.submit(order("sell", "10", source="operator")) is R.MODE
    assert gov.submit(order("sell", "10", reduce_only=True)) is R.MODE
    assert gov.submit(order("buy", "10", source=FAILSAFE_SOURCE)) is R.REDUCE_ONLY
    assert gov.submit(order("sell", "10", source=FAILSAFE_SOURCE, reduce_only=True)) is None


def test_pause_and_resume(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    assert "paused" in gov.operator(OperatorVerb.PAUSE)
    assert gov.submit(order()) is R.PAUSED
    assert gov.submit(order("sell", "1", source=FAILSAFE_SOURCE, reduce_only=True)) is None
    assert gov.operator(OperatorVerb.RESUME) == "resumed"
    assert gov.submit(order()) is None


def test_venue_down_when_the_connector_is_not_up(governor: Callable[..., Harness]) -> None:
    gov = governor()
    assert gov.submit(order()) is R.MODE                      # READY: nothing is up yet
    gov.live()
    assert gov.submit(order()) is None
    gov.publish(topics.CONNECTORS, ConnectorDown(name=VENUE, reason="session lost"))
    assert gov.submit(order()) is R.VENUE_DOWN
    assert gov.mode() is Mode.DEGRADED                        # its only venue is gone
    gov.connector_up()
    gov.clock.advance(UNLIMITED.recover_after_s)
    gov.tick()
    assert gov.mode() is Mode.LIVE
    assert gov.submit(order()) is None
    gov.publish(SUPERVISION_TOPIC, ChildExited(supervisor="connectors", name=VENUE, generation=0,
                                               abnormal=True, reason="crashed"))
    assert gov.submit(order("sell", "1")) is R.VENUE_DOWN


def test_venue_down_when_the_connector_cannot_be_reached(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    registry.unregister(VENUE)                 # the connector's name no longer resolves
    assert gov.submit(order()) is R.VENUE_DOWN
    assert gov.state()["working_orders"] == 0


# ---- circuit breaker ---------------------------------------------------------------------------


CIRCUIT = limits(circuit_rejections=3, circuit_window_s=10.0, circuit_cooldown_s=5.0)


def test_circuit_stays_closed_when_rejections_are_spread_out(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(CIRCUIT, clock)
    gov.live()
    gov.venue_rejects()
    gov.venue_rejects()
    clock.advance(10.01)
    gov.venue_rejects()                      # the first two left the window
    assert gov.state()["circuits"][VENUE] == "CLOSED"
    assert gov.submit(order()) is None


def test_every_venue_rejection_counts_whatever_its_reason(governor: Callable[..., Harness]) -> None:
    """A venue answering "unknown symbol" again and again is a loop as much as plain
    refusals; the governor's own refusals and a connector that is down never count."""
    clock = Clock()
    gov = governor(limits(circuit_rejections=3, circuit_window_s=10.0, circuit_cooldown_s=5.0,
                          max_order_quantity=5), clock)
    gov.live()
    for _ in range(5):                       # the governor's own refusals, published on ORDERS
        assert gov.submit(order(quantity="6")) is R.MAX_QUANTITY
    for _ in range(3):                       # a connector refusing while its session is down
        gov.publish(topics.ORDERS, OrderRejected(client_order_id=f"d-{next(_ids)}", venue=VENUE,
                                                 reason=R.VENUE_DOWN))
    assert gov.state()["circuits"][VENUE] == "CLOSED"
    for reason in (R.UNKNOWN_SYMBOL, R.DUPLICATE_ID):
        gov.publish(topics.ORDERS, OrderRejected(client_order_id=f"u-{next(_ids)}", venue=VENUE,
                                                 reason=reason, text="venue says no"))
    assert gov.state()["circuits"][VENUE] == "CLOSED"
    gov.publish(topics.ORDERS, OrderRejected(client_order_id=f"u-{next(_ids)}", venue=VENUE,
                                             reason=R.REDUCE_ONLY, text="venue says no"))
    assert gov.state()["circuits"][VENUE] == "OPEN"
    assert gov.submit(order(quantity="1")) is R.CIRCUIT_OPEN


def test_circuit_opens_then_half_opens_then_closes(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(CIRCUIT, clock)
    gov.live()
    for offset in (0.0, 5.0, 10.0):         # within the 10 s window: opens at 10 s
        clock.at(offset)
        gov.venue_rejects()
    assert gov.state()["circuits"][VENUE] == "OPEN"
    assert gov.submit(order(quantity="1")) is R.CIRCUIT_OPEN
    clock.at(14.99)
    assert gov.submit(order()) is R.CIRCUIT_OPEN
    clock.at(15.0)                            # cool-down over: HALF_OPEN lets one probe through
    probe = order()
    assert gov.submit(probe) is None
    assert gov.submit(order()) is R.CIRCUIT_OPEN
    accepted = OrderAccepted(client_order_id=probe.client_order_id, venue=VENUE, symbol="AAPL")
    gov.publish(topics.ORDERS, accepted)
    assert gov.state()["circuits"][VENUE] == "CLOSED"
    assert gov.submit(order()) is None
    assert gov.submit(order()) is None


def test_circuit_reopens_when_the_probe_is_rejected(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(CIRCUIT, clock)
    gov.live()
    for _ in range(3):
        gov.venue_rejects()
    clock.advance(5.0)
    probe = order()
    assert gov.submit(probe) is None
    gov.venue_rejects(probe.client_order_id)
    assert gov.state()["circuits"][VENUE] == "OPEN"
    assert gov.submit(order(quantity="1")) is R.CIRCUIT_OPEN
    clock.advance(5.0)
    assert gov.submit(order()) is None        # the next probe


def test_circuit_sends_another_probe_when_the_first_is_never_answered(
    governor: Callable[..., Harness],
) -> None:
    clock = Clock()
    gov = governor(CIRCUIT, clock)
    gov.live()
    for _ in range(3):
        gov.venue_rejects()
    clock.advance(5.0)
    assert gov.submit(order()) is None        # the probe (at 5 s) is lost with the session
    clock.at(9.99)
    assert gov.submit(order()) is R.CIRCUIT_OPEN
    clock.at(10.0)
    assert gov.submit(order()) is None
