"""P&L arithmetic and the session boundary, with times passed in."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from core.pnl import (
    DAY_NS,
    DailyTotals,
    Position,
    apply_fill,
    next_session_ns,
    parse_boundary,
    session_start_ns,
)
from messages import Quote


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


@pytest.mark.parametrize(("quantity", "average", "traded", "price", "expected"), [
    ("0", "0", "10", "100", ("10", "100", "0")),          # open
    ("10", "100", "10", "110", ("20", "105", "0")),       # add: the average moves
    ("10", "100", "-4", "110", ("6", "100", "40")),       # reduce: realize at the average
    ("10", "100", "-10", "90", ("0", "0", "-100")),       # close: the average resets
    ("10", "100", "-15", "90", ("-5", "90", "-100")),     # cross: the rest opens at the price
    ("-10", "100", "4", "90", ("-6", "100", "40")),       # a short gains when the price falls
])
def test_apply_fill(quantity: str, average: str, traded: str, price: str,
                    expected: tuple[str, str, str]) -> None:
    effect = apply_fill(D(quantity), D(average), D(traded), D(price))
    assert (effect.quantity, effect.average_price, effect.realized_pnl) == tuple(D(e) for e in expected)


def test_position_marks_to_the_mid() -> None:
    position = Position(venue="v", symbol="S")
    position.apply(apply_fill(D(0), D(0), D(10), D(100)))
    state = position.state(Quote(venue="v", symbol="S", bid=D(101), ask=D(103), bid_size=D(1), ask_size=D(1)))
    assert (state.mark_price, state.unrealized_pnl) == (D(102), D(20))
    assert position.state(None).unrealized_pnl == 0


@pytest.mark.parametrize(("now", "boundary", "start"), [
    ("2026-03-02T12:00:00", "00:00", "2026-03-02T00:00:00"),
    ("2026-03-02T21:59:59", "22:00", "2026-03-01T22:00:00"),
    ("2026-03-02T22:00:00", "22:00", "2026-03-02T22:00:00"),    # the boundary itself starts a session
])
def test_session_boundary(now: str, boundary: str, start: str) -> None:
    assert session_start_ns(ns(now), boundary) == ns(start)
    assert next_session_ns(ns(now), boundary) == ns(start) + DAY_NS


@pytest.mark.parametrize("bad", ["24:00", "7:00", "07:60", "0700", ""])
def test_a_bad_boundary_names_the_field(bad: str) -> None:
    with pytest.raises(ValueError, match="session_boundary"):
        parse_boundary(bad)


def test_daily_totals_roll_with_the_session() -> None:
    day = DailyTotals()
    day.restart(ns("2026-03-02T00:00:00"))
    day.count("v", "S", D(-2), D(50), D(7))
    assert (day.realized, day.notional, day.traded) == (D(7), D(100), {("v", "S")})
    assert day.contains(ns("2026-03-02T23:59:59")) and not day.contains(ns("2026-03-03T00:00:00"))
    day.restart(ns("2026-03-03T00:00:00"))
    assert (day.realized, day.notional, day.traded) == (D(0), D(0), set())
