"""Session staleness, late acknowledgements and order expiry with a fake clock."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.staleness import (
    LateAcks,
    Liveness,
    SessionProbe,
    expire_time_ns,
    late_detail,
    takes_gtd,
)
from messages import OrderType, Side, SubmitOrder, TimeInForce


def probe(now: float = 100.0) -> SessionProbe:
    return SessionProbe(interval_s=1.0, timeout_s=0.5, dead_after_s=5.0, now=now)


def test_a_session_answering_every_probe_stays_live() -> None:
    session = probe()
    now = 100.0
    for _ in range(50):
        assert session.probe_due(now)
        session.sent(now)
        assert not session.probe_due(now + 0.99)
        now += 0.2
        session.answered(now)
        now += 0.8
        assert session.state(now) is Liveness.LIVE and session.takes_orders(now)


def test_silence_is_stale_once_a_probe_is_overdue_then_dead() -> None:
    session = probe()
    assert session.state(101.5) is Liveness.LIVE  # exactly interval + timeout: not yet
    assert session.state(101.5001) is Liveness.STALE
    assert not session.takes_orders(101.6)
    assert session.state(104.99) is Liveness.STALE
    assert session.state(105.0) is Liveness.DEAD
    assert session.silent_s(103.0) == pytest.approx(3.0)


def test_the_start_of_a_staleness_is_noted_once_and_an_answer_ends_it() -> None:
    session = probe()
    assert not session.note(101.0)
    assert session.note(102.0)
    assert not session.note(103.0)  # the same silence
    assert session.stale_since == 102.0
    assert session.answered(104.0) == pytest.approx(2.0)
    assert session.state(104.1) is Liveness.LIVE and session.stale_since is None
    assert session.answered(104.5) is None  # was not stale


def test_a_late_answer_never_moves_the_last_answer_back() -> None:
    session = probe()
    session.answered(110.0)
    session.answered(109.0)  # an answer stamped earlier, handled later
    assert session.last_answer == 110.0


def test_restart_makes_a_new_session_live_with_a_probe_due() -> None:
    session = probe()
    session.sent(100.0)
    assert session.state(120.0) is Liveness.DEAD
    session.restart(120.0)
    assert session.state(120.0) is Liveness.LIVE and session.probe_due(120.0)


@pytest.mark.parametrize(("interval", "timeout", "dead"), [(0, 1, 1), (1, 0, 1), (1, 1, 0), (1, -1, 5)])
def test_nonsense_settings_are_refused(interval: float, timeout: float, dead: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SessionProbe(interval_s=interval, timeout_s=timeout, dead_after_s=dead, now=0.0)


@given(silence=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_stale_is_exactly_silence_beyond_the_overdue_bound(silence: float) -> None:
    session = probe(0.0)
    state = session.state(silence)
    assert (state is Liveness.LIVE) == (silence <= 1.5)
    assert (state is Liveness.DEAD) == (silence >= 5.0)


def test_late_acknowledgements_are_flagged_once_with_their_delay() -> None:
    acks = LateAcks(warn_after_s=2.0)
    acks.sent("a", 1_000_000_000)
    acks.sent("b", 1_000_000_000)
    assert acks.acknowledged("a", 2_500_000_000) is None  # 1.5 s: in time
    assert acks.acknowledged("b", 4_000_000_000) == pytest.approx(3.0)
    assert acks.acknowledged("b", 9_000_000_000) is None  # only the first counts
    assert acks.acknowledged("never-sent", 9_000_000_000) is None
    assert late_detail("b", 3.0).split()[1] == "b"


def test_late_acks_forget_refused_orders_and_stay_bounded() -> None:
    acks = LateAcks(warn_after_s=1.0, limit=3)
    for i in range(5):
        acks.sent(f"o{i}", 0)
    assert len(acks) == 3 and "o0" not in acks and "o4" in acks
    acks.forget("o4")
    assert acks.acknowledged("o4", 10**12) is None
    with pytest.raises(ValueError, match="warn_after_s"):
        LateAcks(warn_after_s=0)


def test_expiry_is_the_horizon_after_the_sending_or_none() -> None:
    assert expire_time_ns(1_000, 0) is None
    assert expire_time_ns(1_000_000_000, 2.5) == 3_500_000_000
    with pytest.raises(ValueError, match="horizon_s"):
        expire_time_ns(0, -1)


def _order(order_type: OrderType, tif: TimeInForce) -> SubmitOrder:
    limit = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    stop = order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    return SubmitOrder(client_order_id="x", venue="v", symbol="AAPL", side=Side.BUY,
                       quantity=Decimal(1), order_type=order_type,
                       limit_price=Decimal(1) if limit else None,
                       stop_price=Decimal(1) if stop else None, time_in_force=tif)


@pytest.mark.parametrize(("order_type", "tif", "expected"), [
    (OrderType.LIMIT, TimeInForce.DAY, True),
    (OrderType.LIMIT, TimeInForce.GTC, True),
    (OrderType.STOP_LIMIT, TimeInForce.DAY, True),
    (OrderType.LIMIT, TimeInForce.IOC, False),
    (OrderType.LIMIT, TimeInForce.FOK, False),
    (OrderType.MARKET, TimeInForce.DAY, False),
    (OrderType.STOP, TimeInForce.GTC, False),
])
def test_gtd_goes_to_resting_limit_orders(order_type: OrderType, tif: TimeInForce, expected: bool) -> None:
    assert takes_gtd(_order(order_type, tif)) is expected
