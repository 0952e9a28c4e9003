"""The safety monitor actor under a supervision tree: what goes in on the bus comes out
as SafetyEvents on SAFETY."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from actors import topics
from actors.safety_monitor import GetSafetyStats, SafetyConfig, SafetyMonitor, SafetyStats, _Tick
from messages import (
    HealthReport,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    Quote,
    QuoteBatch,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
)
from supervision import ChildSpec, Tree, bus, registry
from tests.recorder import Recorder

D = Decimal
VENUE = "paper"


class FakeClock:
    """A monitor clock the test moves by hand (read from the actor's thread)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def quote(bid: str, ask: str, symbol: str = "AAPL", ts_ns: int = 0) -> Quote:
    return Quote(venue=VENUE, symbol=symbol, bid=D(bid), ask=D(ask), bid_size=D(5), ask_size=D(5),
                 ts_ns=ts_ns)


def market(*quotes: Quote) -> None:
    bus.publish(topics.MARKET, QuoteBatch(venue=VENUE, quotes=quotes, recv_ns=time.time_ns()))


def stats() -> SafetyStats:
    """The monitor's counters; being an ask, it also waits until every message told before
    it has been handled."""
    ref = registry.lookup("safety_monitor")
    assert ref is not None
    result = ref.ask(GetSafetyStats(), timeout=5)
    assert isinstance(result, SafetyStats)
    return result


def safety_events(recorder: Recorder) -> list[tuple[str, Severity]]:
    return [(e.kind, e.severity) for e in recorder.messages(SafetyEvent)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", [topics.SAFETY])


@pytest.fixture
def start_monitor() -> Iterator[Callable[..., Tree]]:
    trees: list[Tree] = []

    def start(config: SafetyConfig | None = None, clock: Callable[[], float] = time.monotonic) -> Tree:
        spec = ChildSpec(name="safety_monitor", actor_class=SafetyMonitor,
                         args=(config or SafetyConfig(),), kwargs={"clock": clock})
        tree = Tree([spec], name="test_root")
        tree.start(timeout_s=10)
        trees.append(tree)
        return tree

    yield start
    for tree in reversed(trees):
        tree.stop(timeout_s=10)


def test_a_negative_price_is_a_critical_event_on_safety(recorder: Recorder, start_monitor: Any) -> None:
    start_monitor()
    market(quote("100.00", "100.02"), quote("-1", "100.02", symbol="MSFT"))
    event = recorder.wait_for(lambda m: isinstance(m, SafetyEvent))
    assert (event.kind, event.severity, event.venue, event.symbol, event.value) == (
        "negative_price", Severity.CRITICAL, VENUE, "MSFT", D(-1))
    assert event.ts_ns > 0


def test_a_persisting_crossed_market_goes_from_warning_to_critical(
    recorder: Recorder, start_monitor: Any
) -> None:
    start_monitor(SafetyConfig(crossed_persist_quotes=3, crossed_persist_s=None, crossed_grace_ms=0))
    for _ in range(4):
        market(quote("100.05", "100.00"))
    recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.severity is Severity.CRITICAL)
    assert stats().batches == 4
    # the second WARNING and the second CRITICAL fall within the cool-down
    assert safety_events(recorder) == [
        ("crossed_market", Severity.WARNING), ("crossed_market", Severity.CRITICAL)]
    assert stats().suppressed == {"crossed_market": 2}


def test_fills_above_the_ordered_quantity_are_critical(recorder: Recorder, start_monitor: Any) -> None:
    start_monitor()
    market(quote("100.00", "100.02"))
    bus.publish(topics.SUBMITTED, SubmitOrder(client_order_id="o1", venue=VENUE, symbol="AAPL",
                                              side=Side.BUY, quantity=D(10)))
    bus.publish(topics.ORDERS, OrderAccepted(client_order_id="o1", venue=VENUE, symbol="AAPL"))

    def filled(fill_id: str, quantity: str, leaves: str) -> None:
        bus.publish(topics.ORDERS, OrderFilled(
            client_order_id="o1", venue=VENUE, fill_id=fill_id, symbol="AAPL", side=Side.BUY,
            quantity=D(quantity), price=D("100.02"), leaves_quantity=D(leaves)))

    filled("f1", "6", "4")
    filled("f1", "6", "4")  # the same execution again (a resync): counted once
    filled("f2", "4", "0")
    assert stats().raised == {}
    filled("f3", "1", "0")
    event = recorder.wait_for(lambda m: isinstance(m, SafetyEvent))
    assert (event.kind, event.severity, event.symbol, event.value) == (
        "overfill", Severity.CRITICAL, "AAPL", D(11))
    bus.publish(topics.ORDERS, OrderCancelled(client_order_id="o1", venue=VENUE))
    assert stats().raised == {"overfill": 1}
    assert registry.lookup("safety_monitor") is not None


def test_five_venue_rejections_within_the_window_are_critical(
    recorder: Recorder, start_monitor: Any
) -> None:
    start_monitor()

    def reject(reason: RejectReason, client_order_id: str = "x") -> None:
        bus.publish(topics.ORDERS, OrderRejected(client_order_id=client_order_id, venue=VENUE,
                                                 reason=reason, text="201: order rejected"))

    for _ in range(3):
        reject(RejectReason.MAX_NOTIONAL)  # tradeguard's own rejections (never sent) do not count
    bus.publish(topics.SUBMITTED, SubmitOrder(client_order_id="sent", venue=VENUE, symbol="AAPL",
                                              side=Side.BUY, quantity=D(1)))
    for _ in range(3):
        reject(RejectReason.VENUE_DOWN, "sent")   # the connector was down: not the venue
    for reason in (RejectReason.VENUE, RejectReason.UNKNOWN_SYMBOL, RejectReason.VENUE,
                   RejectReason.DUPLICATE_ID):
        reject(reason, "sent")                    # the venue's, whatever its reason
    assert stats().raised == {}
    assert recorder.messages(SafetyEvent) == []
    reject(RejectReason.REDUCE_ONLY, "sent")
    event = recorder.wait_for(lambda m: isinstance(m, SafetyEvent))
    assert (event.kind, event.severity, event.venue) == ("venue_rejections", Severity.CRITICAL, VENUE)


def test_a_silent_feed_is_reported_stale_by_the_timer(recorder: Recorder, start_monitor: Any) -> None:
    clock = FakeClock()
    start_monitor(SafetyConfig(tick_interval_s=0.02, feed_stale_s=10.0), clock)
    market(quote("100.00", "100.02"))
    assert stats().batches == 1
    clock.now += 10.5
    event = recorder.wait_for(lambda m: isinstance(m, SafetyEvent))
    assert (event.kind, event.severity, event.venue) == ("feed_stale", Severity.WARNING, VENUE)
    assert event.value is not None and event.value > 10


def test_a_silent_feed_is_reported_stale_from_a_health_report(
    recorder: Recorder, start_monitor: Any
) -> None:
    start_monitor(SafetyConfig(watched_venues=("fix",)))
    now = time.time_ns()
    second = 10**9
    bus.publish(topics.HEALTH, HealthReport(name="fix", connected=True, last_message_ns=now - 5 * second,
                                            ts_ns=now))
    assert stats().raised == {}
    bus.publish(topics.HEALTH, HealthReport(name="fix", connected=True, last_message_ns=now - 12 * second,
                                            ts_ns=now))
    event = recorder.wait_for(lambda m: isinstance(m, SafetyEvent))
    assert (event.kind, event.venue, event.value) == ("feed_stale", "fix", D(12))


def test_stats_count_quotes_gaps_and_time_the_last_verdict(
    recorder: Recorder, start_monitor: Any
) -> None:
    start_monitor()
    sent_ns = time.time_ns()
    market(*[quote("100.00", "100.02", ts_ns=sent_ns)] * 50)
    market(*[quote("100.00", "100.02", symbol="MSFT", ts_ns=sent_ns)] * 25)
    for gaps in (1, 3):
        bus.publish(topics.HEALTH, HealthReport(name="zmq", connected=True, gaps=gaps))
    result = stats()
    assert (result.quotes, result.batches) == (75, 2)
    assert result.sequence_gaps == {"zmq": 3}
    assert result.last_verdict_ns > sent_ns
    assert result.raised == {}
    assert recorder.messages(SafetyEvent) == []


def test_a_crossed_book_past_the_grace_is_judged_on_the_monitors_timer(
    recorder: Recorder, start_monitor: Any
) -> None:
    clock = FakeClock()
    start_monitor(SafetyConfig(crossed_grace_ms=300, crossed_persist_s=2.0, crossed_persist_quotes=None,
                               tick_interval_s=0.02, feed_stale_s=None), clock)
    market(quote("100.05", "100.00"))                      # crossed, then no quote at all
    assert stats().raised == {}                             # within the grace
    clock.now += 0.31
    recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.severity is Severity.WARNING)
    clock.now += 2.0
    recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.severity is Severity.CRITICAL)
    assert safety_events(recorder) == [
        ("crossed_market", Severity.WARNING), ("crossed_market", Severity.CRITICAL)]


def test_a_quiet_market_raises_one_stale_feed_on_the_monitors_ticks(
    recorder: Recorder, start_monitor: Any
) -> None:
    clock = FakeClock()
    # The timer is slow: the test runs each tick itself, at a time it chose.
    start_monitor(SafetyConfig(feed_stale_s=8.0, cooldown_s=5.0, tick_interval_s=3600.0), clock)
    market(quote("100.00", "100.02"))
    monitor = registry.lookup("safety_monitor")
    assert monitor is not None
    for _ in range(12):                                     # 60 s of silence in 5 s steps
        clock.now += 5.0
        # the connector's heartbeats: it hears its venue, only quotes are silent
        bus.publish(topics.HEALTH, HealthReport(name=VENUE, connected=True, last_message_ns=time.time_ns(),
                                                ts_ns=time.time_ns()))
        monitor.tell(_Tick())
        assert stats().batches == 1                         # a barrier: the tick has run
    assert safety_events(recorder) == [("feed_stale", Severity.WARNING)]
    assert stats().suppressed == {}                         # raised once, not held back by a cool-down
