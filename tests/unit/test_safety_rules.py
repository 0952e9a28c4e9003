"""The safety rules, one table per check, at and around each threshold; no actors."""

from __future__ import annotations

import time
from decimal import Decimal

import msgspec
import pytest

from actors.safety_monitor import (
    CROSSED_MARKET,
    FEED_STALE,
    NEGATIVE_PRICE,
    OVERFILL,
    PRICE_SPIKE,
    SLIPPAGE,
    TIME_GAP,
    VENUE_REJECTIONS,
    WIDE_SPREAD,
    ZERO_PRICE,
    Cooldown,
    CrossedRule,
    FeedStaleRule,
    Finding,
    OrderTracker,
    RejectionRule,
    SafetyChecks,
    SafetyConfig,
    SpikeRule,
    SpreadRule,
    TimeGapRule,
    adverse_slippage,
    check_overfill,
    check_prices,
    check_slippage,
    reference_price,
)
from messages import (
    HealthReport,
    OrderFilled,
    OrderRejected,
    OrderType,
    Quote,
    QuoteBatch,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    Trade,
)

D = Decimal
S = 1_000_000_000
VENUE = "paper"


def quote(bid: str | Decimal, ask: str | Decimal, symbol: str = "AAPL", ts_ns: int = 0) -> Quote:
    return Quote(venue=VENUE, symbol=symbol, bid=D(bid), ask=D(ask), bid_size=D(1), ask_size=D(1),
                 ts_ns=ts_ns)


def around_mid(mid: str, symbol: str = "AAPL") -> Quote:
    """A quote one cent either side of ``mid``."""
    return quote(D(mid) - D("0.01"), D(mid) + D("0.01"), symbol)


def batch(*quotes: Quote, trades: tuple[Trade, ...] = (), recv_ns: int = 0) -> QuoteBatch:
    return QuoteBatch(venue=VENUE, quotes=quotes, trades=trades, recv_ns=recv_ns)


def kinds(found: list[Finding] | list[SafetyEvent]) -> list[tuple[str, Severity]]:
    return [(f.kind, f.severity) for f in found]


def order(coid: str = "o1", side: Side = Side.BUY, quantity: str = "10",
          order_type: OrderType = OrderType.MARKET, limit: str | None = None, stop: str | None = None,
          symbol: str = "AAPL") -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue=VENUE, symbol=symbol, side=side, quantity=D(quantity),
                       order_type=order_type, limit_price=None if limit is None else D(limit),
                       stop_price=None if stop is None else D(stop))


def fill(coid: str = "o1", fill_id: str = "f1", side: Side = Side.BUY, quantity: str = "10",
         price: str = "100", symbol: str = "AAPL") -> OrderFilled:
    return OrderFilled(client_order_id=coid, venue=VENUE, fill_id=fill_id, symbol=symbol, side=side,
                       quantity=D(quantity), price=D(price), leaves_quantity=D(0))


def rejected(venue: str = VENUE, reason: RejectReason = RejectReason.VENUE) -> OrderRejected:
    return OrderRejected(client_order_id="x", venue=venue, reason=reason, text="201: no margin")


class FakeClock:
    """A monitor clock the test moves by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---- prices --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bid", "ask", "expected"),
    [
        ("-0.01", "100", [(NEGATIVE_PRICE, Severity.CRITICAL)]),
        ("100", "-5", [(NEGATIVE_PRICE, Severity.CRITICAL)]),
        ("-2", "-1", [(NEGATIVE_PRICE, Severity.CRITICAL)]),
        ("0", "100", [(ZERO_PRICE, Severity.CRITICAL)]),
        ("100", "0", [(ZERO_PRICE, Severity.CRITICAL)]),
        ("0", "0", [(ZERO_PRICE, Severity.CRITICAL)]),
        ("0.0001", "0.0002", []),
        ("99.99", "100.01", []),
    ],
)
def test_price_check_table(bid: str, ask: str, expected: list[tuple[str, Severity]]) -> None:
    found = check_prices(batch(quote(bid, ask)))
    assert kinds(found) == expected
    if expected:
        assert found[0].value == min(D(bid), D(ask))
        assert found[0].symbol == "AAPL"


@pytest.mark.parametrize(
    ("price", "expected"),
    [("-1", [(NEGATIVE_PRICE, Severity.CRITICAL)]), ("0", [(ZERO_PRICE, Severity.CRITICAL)]), ("0.01", [])],
)
def test_trade_price_check_table(price: str, expected: list[tuple[str, Severity]]) -> None:
    trade = Trade(venue=VENUE, symbol="MSFT", price=D(price), size=D(1))
    assert kinds(check_prices(batch(trades=(trade,)))) == expected


def test_invalid_quotes_never_reach_the_other_checks() -> None:
    checks = SafetyChecks(SafetyConfig(cooldown_s=0))
    assert checks.on_quotes(batch(around_mid("100"))) == []
    events = checks.on_quotes(batch(quote("-1", "100.01"), quote("0", "0")))
    assert kinds(events) == [(NEGATIVE_PRICE, Severity.CRITICAL), (ZERO_PRICE, Severity.CRITICAL)]
    # the spike check still compares with the last valid mid, 100
    assert checks.on_quotes(batch(around_mid("101"))) == []


def test_invalid_quotes_are_dropped_even_with_the_price_check_off() -> None:
    checks = SafetyChecks(SafetyConfig(check_prices=False, cooldown_s=0))
    checks.on_quotes(batch(around_mid("100")))
    assert checks.on_quotes(batch(quote("-1", "-1"))) == []
    assert checks.on_quotes(batch(around_mid("101"))) == []


# ---- crossed market ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persist_quotes", "expected"),
    [
        (3, [Severity.WARNING, Severity.WARNING, Severity.CRITICAL, Severity.CRITICAL]),
        (1, [Severity.CRITICAL] * 4),
        (None, [Severity.WARNING] * 4),
        (0, [Severity.WARNING] * 4),
    ],
)
def test_crossed_escalates_on_consecutive_quotes(
    persist_quotes: int | None, expected: list[Severity]
) -> None:
    rule = CrossedRule(persist_s=None, persist_quotes=persist_quotes)
    severities = []
    for _ in range(4):
        (found,) = rule.check(VENUE, [quote("100.02", "100.00")], now=0.0)
        assert found.kind == CROSSED_MARKET
        assert found.value == D("-0.02")
        severities.append(found.severity)
    assert severities == expected


@pytest.mark.parametrize(
    ("second_at", "expected"),
    [(1.0, Severity.WARNING), (2.0, Severity.WARNING), (2.01, Severity.CRITICAL), (60.0, Severity.CRITICAL)],
)
def test_crossed_escalates_after_persisting_longer_than_persist_s(
    second_at: float, expected: Severity
) -> None:
    rule = CrossedRule(persist_s=2.0, persist_quotes=None)
    (first,) = rule.check(VENUE, [quote("100.02", "100.00")], now=10.0)
    assert first.severity is Severity.WARNING
    (second,) = rule.check(VENUE, [quote("100.02", "100.00")], now=10.0 + second_at)
    assert second.severity is expected


@pytest.mark.parametrize(("tick_at", "escalates"), [(1.99, False), (2.0, False), (2.01, True)])
def test_crossed_escalates_on_the_tick_when_no_quote_follows(tick_at: float, escalates: bool) -> None:
    rule = CrossedRule(persist_s=2.0, persist_quotes=None)
    rule.check(VENUE, [quote("100.02", "100.00", symbol="MSFT")], now=0.0)
    found = rule.check_time(tick_at)
    assert kinds(found) == ([(CROSSED_MARKET, Severity.CRITICAL)] if escalates else [])
    if escalates:
        assert (found[0].venue, found[0].symbol) == (VENUE, "MSFT")
        assert rule.check_time(tick_at + 1) == []  # escalated once


def test_a_quote_that_is_not_crossed_ends_the_crossing() -> None:
    rule = CrossedRule(persist_s=2.0, persist_quotes=3)
    crossed, fine = quote("100.02", "100.00"), quote("100.00", "100.02")
    found = rule.check(VENUE, [crossed, crossed, fine], now=0.0)
    assert kinds(found) == [(CROSSED_MARKET, Severity.WARNING)] * 2
    assert not rule.is_crossed(VENUE, "AAPL")
    # the count and the clock start again
    found = rule.check(VENUE, [crossed, crossed], now=2.5)
    assert [f.severity for f in found] == [Severity.WARNING, Severity.WARNING]
    assert rule.check_time(4.4) == []


def test_crossings_are_per_symbol() -> None:
    rule = CrossedRule(persist_s=None, persist_quotes=2)
    found = rule.check(VENUE, [quote("2", "1", "A"), quote("2", "1", "B"), quote("2", "1", "A")], now=0.0)
    assert [(f.symbol, f.severity) for f in found] == [
        ("A", Severity.WARNING), ("B", Severity.WARNING), ("A", Severity.CRITICAL)]


@pytest.mark.parametrize(("uncrossed_at", "raised"), [(0.29, []), (0.31, [Severity.WARNING])])
def test_a_crossing_within_the_grace_is_not_judged(uncrossed_at: float, raised: list[Severity]) -> None:
    rule = CrossedRule(persist_s=2.0, persist_quotes=10, grace_s=0.3)
    crossed, fine = quote("100.02", "100.00"), quote("100.00", "100.02")
    found = rule.check(VENUE, [crossed], now=0.0)
    found += rule.check(VENUE, [crossed], now=uncrossed_at)
    found += rule.check(VENUE, [fine], now=uncrossed_at + 0.01)
    assert [f.severity for f in found] == raised
    assert rule.check_time(100.0) == []          # the crossing ended: nothing more


def test_a_crossing_past_the_grace_warns_once_then_is_critical_on_the_tick() -> None:
    rule = CrossedRule(persist_s=2.0, persist_quotes=None, grace_s=0.3)
    assert rule.check(VENUE, [quote("100.02", "100.00")], now=0.0) == []
    assert rule.check_time(0.3) == []                                     # not past the grace yet
    assert kinds(rule.check_time(0.31)) == [(CROSSED_MARKET, Severity.WARNING)]
    assert rule.check_time(1.0) == []                                     # warned once
    assert kinds(rule.check_time(2.01)) == [(CROSSED_MARKET, Severity.CRITICAL)]
    assert rule.check_time(3.0) == []


def test_quotes_past_the_grace_count_towards_persist_quotes() -> None:
    rule = CrossedRule(persist_s=None, persist_quotes=3, grace_s=0.3)
    crossed = quote("100.02", "100.00")
    burst = [f for i in range(20) for f in rule.check(VENUE, [crossed], now=i * 0.01)]
    assert burst == []                                       # 20 quotes within 0.2 s: the grace
    later = [f.severity for t in (0.4, 0.5, 0.6) for f in rule.check(VENUE, [crossed], now=t)]
    assert later == [Severity.WARNING, Severity.WARNING, Severity.CRITICAL]


def test_a_locked_market_is_not_crossed() -> None:
    rule = CrossedRule(persist_s=2.0, persist_quotes=1)
    assert rule.check(VENUE, [quote("100", "100")], now=0.0) == []


# ---- price spike ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_mid", "expected_move"),
    [
        ("119.99", None),  # +19.99 %
        ("120", None),  # exactly +20 %: the threshold is exclusive
        ("120.01", D("0.2001")),
        ("80.01", None),  # -19.99 %
        ("80", None),  # exactly -20 %
        ("79.99", D("-0.2001")),
        ("250", D("1.5")),
    ],
)
def test_spike_table(new_mid: str, expected_move: Decimal | None) -> None:
    rule = SpikeRule(D("0.20"))
    assert rule.check(VENUE, [around_mid("100")], now=0.0) == []
    found = rule.check(VENUE, [around_mid(new_mid)], now=0.0)
    if expected_move is None:
        assert found == []
    else:
        (finding,) = found
        assert (finding.kind, finding.severity) == (PRICE_SPIKE, Severity.WARNING)
        assert finding.value == expected_move


def test_spike_compares_with_the_previous_mid_of_the_same_symbol_and_venue() -> None:
    rule = SpikeRule(D("0.20"))
    rule.check(VENUE, [around_mid("100", "A"), around_mid("500", "B")], now=0.0)
    rule.check("other", [around_mid("200", "A")], now=0.0)
    assert rule.check(VENUE, [around_mid("110", "A"), around_mid("550", "B")], now=0.0) == []
    # a gradual walk never trips: each step is compared with the step before it
    steps = [around_mid(str(110 + 15 * i), "A") for i in range(1, 10)]
    assert rule.check(VENUE, steps, now=0.0) == []


# ---- time gap ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap_ns", "trips"),
    [(29 * S, False), (30 * S, False), (30 * S + 1, True), (300 * S, True)],
)
def test_time_gap_table(gap_ns: int, trips: bool) -> None:
    rule = TimeGapRule(30.0)
    t0 = 1_700_000_000 * S
    assert rule.check(VENUE, [quote("1", "2", ts_ns=t0)], now=0.0) == []
    found = rule.check(VENUE, [quote("1", "2", ts_ns=t0 + gap_ns)], now=0.0)
    assert kinds(found) == ([(TIME_GAP, Severity.WARNING)] if trips else [])
    if trips:
        assert found[0].value == D(gap_ns) / S


def test_time_gap_falls_back_to_the_batch_receive_time() -> None:
    rule = TimeGapRule(30.0)
    t0 = 1_700_000_000 * S
    rule.check(VENUE, [quote("1", "2")], now=0.0, recv_ns=t0)
    assert kinds(rule.check(VENUE, [quote("1", "2")], now=0.0, recv_ns=t0 + 31 * S)) == [
        (TIME_GAP, Severity.WARNING)]
    # a quote with no time at all is not timed, and does not reset the last time
    assert rule.check(VENUE, [quote("1", "2")], now=0.0, recv_ns=0) == []
    assert rule.check(VENUE, [quote("1", "2", ts_ns=t0 + 32 * S)], now=0.0) == []


def test_time_gap_ignores_a_quote_older_than_the_last_one() -> None:
    rule = TimeGapRule(30.0)
    t0 = 1_700_000_000 * S
    rule.check(VENUE, [quote("1", "2", ts_ns=t0)], now=0.0)
    assert rule.check(VENUE, [quote("1", "2", ts_ns=t0 - 100 * S)], now=0.0) == []
    assert rule.check(VENUE, [quote("1", "2", ts_ns=t0 + 10 * S)], now=0.0) == []


def test_time_gap_is_per_symbol() -> None:
    rule = TimeGapRule(30.0)
    t0 = 1_700_000_000 * S
    rule.check(VENUE, [quote("1", "2", "A", ts_ns=t0), quote("1", "2", "B", ts_ns=t0)], now=0.0)
    ticking = [quote("1", "2", "A", ts_ns=t0 + i * 10 * S) for i in range(1, 5)]
    assert rule.check(VENUE, ticking, now=0.0) == []
    found = rule.check(VENUE, [quote("1", "2", "B", ts_ns=t0 + 40 * S)], now=0.0)
    assert [(f.kind, f.symbol) for f in found] == [(TIME_GAP, "B")]


# ---- spread vs its running normal ------------------------------------------------------------


def warmed_spread_rule() -> SpreadRule:
    """A rule whose normal spread for AAPL is exactly 0.02 and warmed up."""
    rule = SpreadRule(multiple=D(10), alpha=D("0.5"), warmup=3)
    assert rule.check(VENUE, [quote("100", "100.02")] * 3, now=0.0) == []
    assert rule.normal(VENUE, "AAPL") == D("0.02")
    return rule


@pytest.mark.parametrize(
    ("spread", "trips"),
    [("0.19", False), ("0.1999", False), ("0.20", False), ("0.2001", True), ("1", True)],
)
def test_spread_table(spread: str, trips: bool) -> None:
    rule = warmed_spread_rule()
    found = rule.check(VENUE, [quote("100", D(100) + D(spread))], now=0.0)
    assert kinds(found) == ([(WIDE_SPREAD, Severity.WARNING)] if trips else [])
    if trips:
        assert found[0].value == D(spread)


def test_an_abnormal_spread_does_not_move_the_normal() -> None:
    rule = warmed_spread_rule()
    wide = quote("100", "101")
    assert len(rule.check(VENUE, [wide, wide, wide], now=0.0)) == 3
    assert rule.normal(VENUE, "AAPL") == D("0.02")


def test_the_normal_follows_the_market() -> None:
    rule = warmed_spread_rule()
    rule.check(VENUE, [quote("100", "100.10")], now=0.0)  # 5x: folded in with weight 0.5
    assert rule.normal(VENUE, "AAPL") == D("0.06")
    assert rule.check(VENUE, [quote("100", "100.60")], now=0.0) == []  # 10x of 0.06 exactly


def test_spread_check_waits_for_the_warmup() -> None:
    rule = SpreadRule(multiple=D(10), alpha=D("0.5"), warmup=3)
    warming = [quote("100", "100.02"), quote("100", "100.02"), quote("100", "105")]
    assert rule.check(VENUE, warming, now=0.0) == []
    assert kinds(rule.check(VENUE, [quote("100", "150")], now=0.0)) == [(WIDE_SPREAD, Severity.WARNING)]


def test_crossed_quotes_do_not_feed_the_spread_normal() -> None:
    rule = warmed_spread_rule()
    assert rule.check(VENUE, [quote("101", "100")], now=0.0) == []
    assert rule.normal(VENUE, "AAPL") == D("0.02")


# ---- slippage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "order_type", "limit", "stop", "mid", "price", "expected"),
    [
        # market orders: against the mid at submission (100)
        (Side.BUY, OrderType.MARKET, None, None, "100", "104.99", None),
        (Side.BUY, OrderType.MARKET, None, None, "100", "105", None),  # exactly 5 %: exclusive
        (Side.BUY, OrderType.MARKET, None, None, "100", "105.01", D("0.0501")),
        (Side.BUY, OrderType.MARKET, None, None, "100", "50", None),  # favourable
        (Side.SELL, OrderType.MARKET, None, None, "100", "95", None),
        (Side.SELL, OrderType.MARKET, None, None, "100", "94.99", D("0.0501")),
        (Side.SELL, OrderType.MARKET, None, None, "100", "150", None),  # favourable
        (Side.BUY, OrderType.MARKET, None, None, None, "1000", None),  # no mid known: not judged
        # limit orders: against the limit, whatever the mid
        (Side.BUY, OrderType.LIMIT, "50", None, "100", "52.5", None),
        (Side.BUY, OrderType.LIMIT, "50", None, "100", "52.51", D("0.0502")),
        (Side.SELL, OrderType.LIMIT, "50", None, "10", "47.5", None),
        (Side.SELL, OrderType.LIMIT, "50", None, "10", "47.49", D("0.0502")),
        (Side.SELL, OrderType.STOP_LIMIT, "50", "51", "10", "47.49", D("0.0502")),
        # stop orders: against the stop
        (Side.BUY, OrderType.STOP, None, "200", "150", "210", None),
        (Side.BUY, OrderType.STOP, None, "200", "150", "210.02", D("0.0501")),
    ],
)
def test_slippage_table(side: Side, order_type: OrderType, limit: str | None, stop: str | None,
                        mid: str | None, price: str, expected: Decimal | None) -> None:
    tracker = OrderTracker()
    tracked = tracker.on_submit(order(side=side, order_type=order_type, limit=limit, stop=stop),
                                None if mid is None else D(mid))
    the_fill = fill(side=side, price=price)
    assert tracker.on_fill(the_fill) is tracked
    finding = check_slippage(tracked, the_fill, D("0.05"))
    if expected is None:
        assert finding is None
    else:
        assert finding is not None
        assert (finding.kind, finding.severity, finding.value) == (SLIPPAGE, Severity.WARNING, expected)


def test_reference_price_and_adverse_slippage_are_pure() -> None:
    assert reference_price(order(), D("101")) == D("101")
    assert reference_price(order(order_type=OrderType.LIMIT, limit="99"), D("101")) == D("99")
    assert reference_price(order(order_type=OrderType.STOP, stop="98"), D("101")) == D("98")
    assert adverse_slippage(Side.BUY, D(100), D(110)) == D("0.1")
    assert adverse_slippage(Side.SELL, D(100), D(110)) == D("-0.1")


def test_slippage_uses_the_mid_at_submission_not_a_later_one() -> None:
    checks = SafetyChecks(SafetyConfig(cooldown_s=0))
    checks.on_quotes(batch(around_mid("100")))
    checks.check(order(side=Side.BUY))
    checks.on_quotes(batch(around_mid("110")))  # the market moves on before the fill
    events = checks.check(fill(side=Side.BUY, price="106"))
    assert kinds(events) == [(SLIPPAGE, Severity.WARNING)]
    assert events[0].value == D("0.06")


# ---- overfill ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fills", "expected_overfill_at"),
    [
        ([("f1", "10")], None),
        ([("f1", "4"), ("f2", "6")], None),
        ([("f1", "4"), ("f2", "6"), ("f3", "0.001")], ("f3", D("10.001"))),
        ([("f1", "11")], ("f1", D("11"))),
        ([("f1", "4"), ("f2", "4"), ("f3", "4")], ("f3", D("12"))),
        ([("f1", "4"), ("f1", "4"), ("f1", "4"), ("f2", "6")], None),  # one fill seen three times
    ],
)
def test_overfill_table(
    fills: list[tuple[str, str]], expected_overfill_at: tuple[str, Decimal] | None
) -> None:
    tracker = OrderTracker()
    tracker.on_submit(order(quantity="10"))
    found = []
    for fill_id, quantity in fills:
        the_fill = fill(fill_id=fill_id, quantity=quantity)
        tracked = tracker.on_fill(the_fill)
        if tracked is not None and (finding := check_overfill(tracked, the_fill)) is not None:
            found.append((fill_id, finding))
    if expected_overfill_at is None:
        assert found == []
    else:
        fill_id, cumulative = expected_overfill_at
        assert [(f_id, f.kind, f.severity, f.value) for f_id, f in found] == [
            (fill_id, OVERFILL, Severity.CRITICAL, cumulative)]


def test_fills_of_unknown_orders_are_not_judged() -> None:
    checks = SafetyChecks(SafetyConfig(cooldown_s=0))
    assert checks.check(fill(coid="never-seen", quantity="1000000")) == []


def test_the_tracker_forgets_the_oldest_orders_first() -> None:
    tracker = OrderTracker(max_orders=2)
    for coid in ("a", "b", "c"):
        tracker.on_submit(order(coid=coid))
    assert len(tracker) == 2
    assert tracker.get("a") is None
    assert tracker.get("c") is not None


# ---- venue rejections ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "trips_at"),
    [
        ([0, 10, 20, 30], None),
        ([0, 10, 20, 30, 40], 4),
        ([0, 10, 20, 30, 60], 4),  # exactly 60 s apart: within the window
        ([0, 10, 20, 30, 60.01], None),
        ([0, 100, 110, 120, 130, 140], 5),  # the first one fell out of the window
        ([0, 1, 2, 3, 4, 5], 4),
    ],
)
def test_venue_rejection_table(times: list[float], trips_at: int | None) -> None:
    rule = RejectionRule(max_count=5, window_s=60.0)
    results = [rule.on_rejected(rejected(), now, sent=True) for now in times]
    tripped = [i for i, r in enumerate(results) if r is not None]
    if trips_at is None:
        assert tripped == []
    else:
        assert tripped[0] == trips_at
        finding = results[trips_at]
        assert finding is not None
        assert (finding.kind, finding.severity, finding.venue) == (VENUE_REJECTIONS, Severity.CRITICAL, VENUE)


def test_every_venue_rejection_counts_whatever_its_reason() -> None:
    """The policy of ``core.rejections``: any reason the venue gives counts (an "unknown
    symbol" loop is a loop); an order never sent (a pre-trade refusal) and a connector that
    is down do not."""
    rule = RejectionRule(max_count=5, window_s=60.0)
    for reason in (RejectReason.MAX_QUANTITY, RejectReason.MODE, RejectReason.RATE_LIMIT):
        assert rule.on_rejected(rejected(reason=reason), 0.0, sent=False) is None
    for _ in range(5):
        assert rule.on_rejected(rejected(reason=RejectReason.VENUE_DOWN), 0.0, sent=True) is None
    reasons = (RejectReason.UNKNOWN_SYMBOL, RejectReason.DUPLICATE_ID, RejectReason.REDUCE_ONLY,
               RejectReason.VENUE)
    assert all(rule.on_rejected(rejected(reason=r), 1.0, sent=True) is None for r in reasons)
    finding = rule.on_rejected(rejected(reason=RejectReason.UNKNOWN_SYMBOL), 2.0, sent=True)
    assert finding is not None and (finding.kind, finding.severity) == (VENUE_REJECTIONS, Severity.CRITICAL)


def test_rejections_are_counted_per_venue() -> None:
    rule = RejectionRule(max_count=5, window_s=60.0)
    venues = ("a", "b", "a", "b", "a", "b", "a")
    results = [rule.on_rejected(rejected(venue=v), 1.0, sent=True) for v in venues]
    assert all(r is None for r in results)
    finding = rule.on_rejected(rejected(venue="a"), 2.0, sent=True)
    assert finding is not None and finding.venue == "a"


# ---- stale feed ----------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "stale"), [(9.99, False), (10.0, False), (10.01, True)])
def test_feed_stale_table(at: float, stale: bool) -> None:
    rule = FeedStaleRule(10.0, watched=("watched",), now=100.0)
    rule.note(VENUE, 105.0)
    found = rule.check(100.0 + at)
    assert [f.venue for f in found] == (["watched"] if stale else [])
    found = rule.check(105.0 + at)
    # "watched" stays silent: its silence was raised once, at the first check past the limit
    assert [f.venue for f in found] == ([VENUE] if stale else ["watched"])
    assert all((f.kind, f.severity) == (FEED_STALE, Severity.WARNING) for f in found)


def test_a_quiet_market_is_one_warning_until_data_returns() -> None:
    rule = FeedStaleRule(10.0, watched=(VENUE,), now=0.0)
    raised = [f for second in range(1, 61) for f in rule.check(float(second))]
    assert [(f.kind, f.venue) for f in raised] == [(FEED_STALE, VENUE)]   # at 11 s, once
    assert rule.is_stale(VENUE)
    # heartbeats alive: the connector hears its venue, so the health path adds nothing
    alive = HealthReport(name=VENUE, connected=True, last_message_ns=59 * S, ts_ns=60 * S)
    assert rule.on_health(alive, 60 * S) is None
    rule.note(VENUE, 61.0)                                                 # quotes again
    assert not rule.is_stale(VENUE)
    assert rule.check(71.0) == []
    (again,) = rule.check(71.01)                                           # a new silence
    assert again.venue == VENUE


def test_the_health_path_and_the_tick_raise_one_silence_once() -> None:
    rule = FeedStaleRule(10.0, watched=(VENUE,), now=0.0)
    dead = HealthReport(name=VENUE, connected=True, last_message_ns=1 * S, ts_ns=30 * S)
    assert rule.on_health(dead, 30 * S) is not None
    assert rule.check(30.0) == []
    assert rule.on_health(dead, 31 * S) is None


def test_a_venue_never_heard_from_is_not_watched_unless_configured() -> None:
    rule = FeedStaleRule(10.0)
    assert rule.check(1e9) == []


@pytest.mark.parametrize(
    ("name", "age_ns", "last_message_ns", "stale"),
    [
        (VENUE, 10 * S, 1, False),
        (VENUE, 10 * S + 1, 1, True),
        ("not-watched", 60 * S, 1, False),
        (VENUE, 60 * S, 0, False),  # the connector never heard anything: nothing to age
    ],
)
def test_feed_stale_from_health_reports(name: str, age_ns: int, last_message_ns: int, stale: bool) -> None:
    rule = FeedStaleRule(10.0, watched=(VENUE,), now=0.0)
    t0 = 1_700_000_000 * S
    last = t0 if last_message_ns else 0
    report = HealthReport(name=name, connected=True, last_message_ns=last, ts_ns=t0 + age_ns)
    finding = rule.on_health(report, t0)   # the report's own time wins over the wall clock
    assert (finding is not None) is stale
    if finding is not None:
        assert (finding.kind, finding.venue, finding.value) == (FEED_STALE, VENUE, D(age_ns) / S)


# ---- cool-down -----------------------------------------------------------------------------


def finding(
    kind: str = CROSSED_MARKET, severity: Severity = Severity.WARNING, symbol: str = "AAPL"
) -> Finding:
    return Finding(kind=kind, severity=severity, venue=VENUE, symbol=symbol)


@pytest.mark.parametrize(
    ("second", "at", "admitted"),
    [
        (finding(), 4.99, False),
        (finding(), 5.0, True),
        (finding(severity=Severity.CRITICAL), 0.0, True),  # escalation always passes
        (finding(severity=Severity.INFO), 1.0, False),
        (finding(symbol="MSFT"), 1.0, True),
        (finding(kind=PRICE_SPIKE), 1.0, True),
    ],
)
def test_cooldown_table(second: Finding, at: float, admitted: bool) -> None:
    cooldown = Cooldown(5.0)
    assert cooldown.admit(finding(), 0.0)
    assert cooldown.admit(second, at) is admitted


def test_after_an_escalation_the_lesser_severity_waits_for_the_cooldown() -> None:
    cooldown = Cooldown(5.0)
    assert cooldown.admit(finding(), 0.0)
    assert cooldown.admit(finding(severity=Severity.CRITICAL), 1.0)
    assert not cooldown.admit(finding(), 2.0)
    assert not cooldown.admit(finding(severity=Severity.CRITICAL), 5.99)
    assert cooldown.admit(finding(), 6.0)


def test_cooldown_zero_lets_everything_through() -> None:
    cooldown = Cooldown(0.0)
    assert all(cooldown.admit(finding(), 0.0) for _ in range(3))


def test_a_persisting_crossed_market_raises_warning_then_critical_then_waits() -> None:
    clock = FakeClock()
    config = SafetyConfig(crossed_persist_quotes=3, crossed_persist_s=None, cooldown_s=5.0,
                          crossed_grace_ms=250)
    checks = SafetyChecks(config, clock)
    crossed = quote("100.02", "100.00")
    raised = []
    for i in range(10):
        clock.now = i * 0.1
        raised += checks.on_quotes(batch(crossed))
    # 0.0 to 0.2 within the grace; WARNING at 0.3; the third quote past the grace (0.5) CRITICAL
    assert kinds(raised) == [(CROSSED_MARKET, Severity.WARNING), (CROSSED_MARKET, Severity.CRITICAL)]
    stats = checks.stats()
    assert stats.raised == {CROSSED_MARKET: 2}
    assert stats.suppressed == {CROSSED_MARKET: 5}
    clock.now = 5.6  # the cool-down of the CRITICAL (raised at 0.5) is over
    assert kinds(checks.on_quotes(batch(crossed))) == [(CROSSED_MARKET, Severity.CRITICAL)]


# ---- configuration and wiring --------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"spike_threshold": 0},
        {"spike_threshold": None},
        {"time_gap_s": 0},
        {"time_gap_s": None},
        {"spread_multiple": 0},
        {"spread_multiple": None},
        {"slippage_threshold": 0},
        {"slippage_threshold": None},
        {"max_venue_rejections": 0},
        {"max_venue_rejections": None},
        {"feed_stale_s": 0},
        {"feed_stale_s": None},
        {"check_crossed": False},
        {"check_prices": False},
        {"check_overfill": False},
    ],
)
def test_a_zero_or_none_threshold_disables_its_check(overrides: dict[str, object]) -> None:
    """Each scenario trips exactly one check with the defaults, and nothing once it is off."""
    scenarios: dict[str, list[object]] = {
        "spike_threshold": [batch(around_mid("100")), batch(around_mid("150"))],
        "time_gap_s": [batch(quote("1", "1.01", ts_ns=S)), batch(quote("1", "1.01", ts_ns=100 * S))],
        "spread_multiple": [batch(*[quote("100", "100.01")] * 30), batch(quote("100", "100.50"))],
        "slippage_threshold": [batch(around_mid("100")), order(), fill(price="110")],
        "max_venue_rejections": [order(coid="x"), *[rejected() for _ in range(5)]],
        "feed_stale_s": [batch(around_mid("100")), "tick"],
        "check_crossed": [batch(quote("2", "1")), "short tick"],
        "check_prices": [batch(quote("-1", "1"))],
        "check_overfill": [order(quantity="1"), fill(quantity="2", price="100")],
    }
    (field,) = overrides
    for enabled in (True, False):
        clock = FakeClock()
        config = msgspec.convert(overrides, SafetyConfig) if not enabled else SafetyConfig()
        checks = SafetyChecks(msgspec.structs.replace(config, cooldown_s=0), clock)
        events: list[SafetyEvent] = []
        for message in scenarios[field]:
            if isinstance(message, str):  # "tick": 20 s later, the timed checks run ("short": 3 s)
                clock.now += 3.0 if message == "short tick" else 20.0
                events += checks.on_tick()
            else:
                events += checks.check(message)
        assert (len(events) > 0) is enabled, (field, enabled, events)


def test_config_decodes_from_plain_data_and_refuses_mistakes() -> None:
    config = msgspec.convert({"spike_threshold": 0.25, "watched_venues": ["fix"]}, SafetyConfig)
    assert config.spike_threshold == D("0.25")
    assert config.watched_venues == ("fix",)
    with pytest.raises(msgspec.ValidationError, match="spike_treshold"):
        msgspec.convert({"spike_treshold": 0.25}, SafetyConfig)
    with pytest.raises(msgspec.ValidationError, match="time_gap_s"):
        msgspec.convert({"time_gap_s": -1}, SafetyConfig)
    with pytest.raises(msgspec.ValidationError, match="spread_alpha"):
        msgspec.convert({"spread_alpha": 0}, SafetyConfig)
    with pytest.raises(AttributeError):
        config.cooldown_s = 1.0  # type: ignore[misc]


def test_sequence_gaps_are_counted_from_health_reports_across_restarts() -> None:
    checks = SafetyChecks(SafetyConfig())
    for gaps in (0, 2, 5, 5, 1, 3):  # the connector restarted after 5
        assert checks.check(HealthReport(name="zmq", connected=True, gaps=gaps)) == []
    assert checks.stats().sequence_gaps == {"zmq": 8}


def test_the_stats_count_quotes_batches_and_the_last_verdict() -> None:
    checks = SafetyChecks(SafetyConfig())
    assert checks.stats().last_verdict_ns == 0
    before = time.time_ns()
    checks.on_quotes(batch(*[around_mid("100")] * 7))
    checks.on_quotes(batch(around_mid("100"), quote("-1", "1")))
    stats = checks.stats()
    assert (stats.quotes, stats.batches) == (9, 2)
    assert stats.last_verdict_ns > before
    assert stats.raised == {NEGATIVE_PRICE: 1}
