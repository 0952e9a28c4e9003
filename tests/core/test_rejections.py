"""The rejection-loop policy both the safety monitor and the risk governor apply."""

from __future__ import annotations

import pytest

from core.rejections import CircuitBreaker, CircuitState, RejectionLoop, RejectionWindow, is_venue_rejection
from messages import OrderRejected, RejectReason


def rejected(reason: RejectReason = RejectReason.VENUE) -> OrderRejected:
    return OrderRejected(client_order_id="o", venue="fix", reason=reason, text="58=unknown symbol")


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reason_a_venue_gives_counts_but_venue_down(reason: RejectReason) -> None:
    assert is_venue_rejection(rejected(reason), sent=True) is (reason is not RejectReason.VENUE_DOWN)
    assert not is_venue_rejection(rejected(reason), sent=False)


@pytest.mark.parametrize(("times", "loop_at"), [
    ([0, 10, 20, 30], None),
    ([0, 10, 20, 30, 40], 4),
    ([0, 10, 20, 30, 60], 4),          # exactly the window apart: within it
    ([0, 10, 20, 30, 60.01], None),
    ([0, 100, 110, 120, 130, 140], 5),
])
def test_a_loop_is_the_limit_within_the_window(times: list[float], loop_at: int | None) -> None:
    loop = RejectionLoop(limit=5, window_s=60.0)
    counts = [loop.on_rejection("fix", t) for t in times]
    looped = [i for i, c in enumerate(counts) if c]
    assert (looped[0] if looped else None) == loop_at


def test_loops_are_per_venue_and_a_zero_limit_never_loops() -> None:
    loop = RejectionLoop(limit=2, window_s=1.0)
    assert not loop.on_rejection("a", 0.0) and not loop.on_rejection("b", 0.0)
    assert loop.on_rejection("a", 0.5) == 2
    assert all(not RejectionLoop(0, 1.0).on_rejection("a", float(t)) for t in range(10))


def test_window_span_and_clear() -> None:
    window = RejectionWindow(10.0)
    assert [window.record(t) for t in (0.0, 4.0, 9.0)] == [1, 2, 3]
    assert window.span() == 9.0
    assert window.record(15.0) == 2           # 0 and 4 left the window
    window.clear()
    assert window.span() == 0.0


def test_circuit_opens_half_opens_and_closes() -> None:
    breaker = CircuitBreaker(rejections=3, window_s=10.0, cooldown_s=5.0)
    assert [breaker.on_rejection(t) for t in (0.0, 5.0, 10.0)] == [False, False, True]
    assert breaker.state is CircuitState.OPEN and not breaker.allow(14.99)
    assert breaker.allow(15.0) and breaker.state is CircuitState.HALF_OPEN   # the probe
    assert not breaker.allow(16.0)                                           # one probe at a time
    breaker.on_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow(16.0)


def test_a_rejected_probe_reopens_and_an_unanswered_one_is_retried() -> None:
    breaker = CircuitBreaker(rejections=1, window_s=10.0, cooldown_s=5.0)
    assert breaker.on_rejection(0.0)
    assert breaker.allow(5.0)
    assert breaker.on_rejection(6.0) and breaker.state is CircuitState.OPEN
    assert not breaker.allow(10.99) and breaker.allow(11.0)
    assert not breaker.allow(15.99)
    assert breaker.allow(16.0)                 # the first probe was never answered


def test_a_disabled_circuit_never_opens() -> None:
    breaker = CircuitBreaker(rejections=0, window_s=10.0, cooldown_s=5.0)
    assert not any(breaker.on_rejection(float(t)) for t in range(100))
    assert breaker.allow(100.0)
