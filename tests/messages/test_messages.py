"""Behaviour of the message records themselves: enums, derived values, validation at
construction, and the trading-mode transition table."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import msgspec
import pytest

from messages import (
    DONE_STATES,
    MODE_TRANSITIONS,
    Bar,
    Book,
    BookLevel,
    Mode,
    OrderFilled,
    OrderStatus,
    OrderType,
    Quote,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    VenuePosition,
)
from tests.messages.samples import QUOTE, SAMPLES

# ---- enums ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "done"),
    [
        (OrderStatus.PENDING, False),
        (OrderStatus.ACCEPTED, False),
        (OrderStatus.PARTIALLY_FILLED, False),
        (OrderStatus.FILLED, True),
        (OrderStatus.CANCELLED, True),
        (OrderStatus.REJECTED, True),
        (OrderStatus.EXPIRED, True),
    ],
)
def test_order_status_is_done(status: OrderStatus, done: bool) -> None:
    assert status.is_done() is done


def test_done_states_cover_exactly_the_terminal_statuses() -> None:
    assert {s for s in OrderStatus if s.is_done()} == DONE_STATES
    assert len(OrderStatus) == 7  # a new status must be classified here


def test_side_sign_and_opposite() -> None:
    assert Side.BUY.sign == 1
    assert Side.SELL.sign == -1
    assert Side.BUY.opposite is Side.SELL
    assert Side.SELL.opposite is Side.BUY
    assert {s.sign for s in Side} == {1, -1}


def test_severity_orders_worst_last() -> None:
    assert max(Severity.INFO, Severity.CRITICAL, Severity.WARNING) is Severity.CRITICAL
    assert Severity.INFO < Severity.WARNING < Severity.CRITICAL


# ---- derived values -----------------------------------------------------------------------


def test_quote_mid_and_spread_are_exact_decimals() -> None:
    quote = Quote(venue="v", symbol="S", bid=Decimal("1.10"), ask=Decimal("1.15"),
                  bid_size=Decimal(1), ask_size=Decimal(1))
    assert quote.mid == Decimal("1.125")
    assert quote.spread == Decimal("0.05")
    assert isinstance(quote.mid, Decimal) and isinstance(quote.spread, Decimal)


def test_crossed_quote_has_negative_spread() -> None:
    crossed = msgspec.structs.replace(QUOTE, bid=Decimal("101"), ask=Decimal("100"))
    assert crossed.spread == Decimal("-1")
    assert crossed.mid == Decimal("100.5")


def test_signed_quantities_and_partial_fill() -> None:
    fill = SAMPLES[OrderFilled]
    assert isinstance(fill, OrderFilled)
    assert fill.side is Side.SELL and fill.signed_quantity == -fill.quantity
    assert fill.is_partial
    done = msgspec.structs.replace(fill, side=Side.BUY, leaves_quantity=Decimal(0))
    assert done.signed_quantity == fill.quantity
    assert not done.is_partial
    order = SubmitOrder(client_order_id="c", venue="v", symbol="S", side=Side.SELL, quantity=Decimal("2"))
    assert order.signed_quantity == Decimal("-2")


# ---- validation at construction ----------------------------------------------------------


def _order(**changes: object) -> SubmitOrder:
    fields: dict[str, object] = {
        "client_order_id": "c", "venue": "v", "symbol": "S", "side": Side.BUY, "quantity": Decimal("1"),
    }
    fields.update(changes)
    return SubmitOrder(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity": Decimal("-1")}, "quantity"),
        ({"quantity": Decimal("NaN")}, "quantity"),
        ({"order_type": OrderType.LIMIT}, "limit_price"),
        ({"order_type": OrderType.STOP_LIMIT, "stop_price": Decimal("1")}, "limit_price"),
        ({"order_type": OrderType.STOP}, "stop_price"),
        ({"order_type": OrderType.LIMIT, "limit_price": Decimal("Infinity")}, "limit_price"),
        ({"symbol": ""}, "symbol"),
    ],
)
def test_invalid_order_cannot_be_built(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _order(**changes)


def test_valid_limit_and_stop_orders_can_be_built() -> None:
    assert _order(order_type=OrderType.LIMIT, limit_price=Decimal("10")).limit_price == Decimal("10")
    stop_limit = _order(order_type=OrderType.STOP_LIMIT, limit_price=Decimal("10"), stop_price=Decimal("11"))
    assert stop_limit.stop_price == Decimal("11")


def test_other_records_validate_at_construction() -> None:
    with pytest.raises(ValueError, match="bid"):
        msgspec.structs.replace(QUOTE, bid=Decimal("NaN"))
    with pytest.raises(ValueError, match="size"):
        BookLevel(price=Decimal("1"), size=Decimal("-1"))
    with pytest.raises(ValueError, match="bids"):
        six = tuple(BookLevel(price=Decimal(p), size=Decimal(1)) for p in range(6))
        Book(venue="v", symbol="S", bids=six)
    with pytest.raises(ValueError, match="low"):
        Bar(venue="v", symbol="S", start_ns=0, interval_s=60, open=Decimal(1), high=Decimal(1),
            low=Decimal(2), close=Decimal(1), volume=Decimal(0))
    with pytest.raises(ValueError, match="interval_s"):
        Bar(venue="v", symbol="S", start_ns=0, interval_s=0, open=Decimal(1), high=Decimal(1),
            low=Decimal(1), close=Decimal(1), volume=Decimal(0))
    with pytest.raises(ValueError, match="kind"):
        SafetyEvent(kind="", severity=Severity.INFO)
    with pytest.raises(ValueError, match="average_price"):
        VenuePosition(venue="v", symbol="S", quantity=Decimal("-1"), average_price=Decimal("-5"))
    # A short position is a negative quantity, not an error.
    assert VenuePosition(venue="v", symbol="S", quantity=Decimal("-3")).quantity == Decimal("-3")


@pytest.mark.parametrize("sample", list(SAMPLES.values()), ids=lambda m: type(m).__name__)
def test_messages_are_immutable(sample: object) -> None:
    first_field = msgspec.structs.fields(sample)[0].name  # type: ignore[arg-type]
    with pytest.raises((AttributeError, TypeError, dataclasses.FrozenInstanceError)):
        setattr(sample, first_field, getattr(sample, first_field))


# ---- trading modes ------------------------------------------------------------------------


def test_mode_transitions_cover_every_mode() -> None:
    assert set(MODE_TRANSITIONS) == set(Mode)
    for targets in MODE_TRANSITIONS.values():
        assert targets <= set(Mode)


def test_mode_transitions_are_as_designed() -> None:
    designed = {
        Mode.STARTUP: {Mode.READY, Mode.SHUTDOWN},
        Mode.READY: {Mode.LIVE, Mode.SHUTDOWN},
        Mode.LIVE: {Mode.DEGRADED, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.DEGRADED: {Mode.LIVE, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.FAILSAFE: {Mode.READY, Mode.SHUTDOWN},
        Mode.SHUTDOWN: set(),
    }
    assert designed == MODE_TRANSITIONS


def test_every_mode_can_reach_shutdown_and_shutdown_is_final() -> None:
    for mode in Mode:
        if mode is not Mode.SHUTDOWN:
            assert Mode.SHUTDOWN in MODE_TRANSITIONS[mode]
        assert mode not in MODE_TRANSITIONS[mode], f"{mode} -> {mode} is not a transition"
    assert MODE_TRANSITIONS[Mode.SHUTDOWN] == frozenset()


def test_failsafe_is_left_only_through_ready_or_shutdown() -> None:
    # Never straight back to LIVE: an operator reset goes through READY.
    assert MODE_TRANSITIONS[Mode.FAILSAFE] == {Mode.READY, Mode.SHUTDOWN}
    assert Mode.LIVE not in MODE_TRANSITIONS[Mode.FAILSAFE]


def test_every_mode_is_reachable_from_startup() -> None:
    seen, frontier = {Mode.STARTUP}, [Mode.STARTUP]
    while frontier:
        for target in MODE_TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(Mode)
