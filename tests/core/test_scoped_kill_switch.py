"""The scoped kill switch in core/, on a fake clock: a paused source or venue is refused by
the pre-trade checks; a source-scoped flatten cancels only that source's orders and closes
only its attributed share of each venue position, never flipping it."""

from __future__ import annotations

from decimal import Decimal as D

from core.checks import scope_paused
from core.flatten import (
    FlattenPolicy,
    SourceFlattenPlan,
    VenueState,
    attributed_close,
    closing_source,
    source_nets,
)
from messages import (
    CancelAll,
    CancelOrder,
    OrderCancelled,
    OrderFilled,
    OrderType,
    RejectReason,
    RequestPositions,
    Side,
    SubmitOrder,
    VenuePosition,
    VenuePositions,
)
from tests.core.test_checks import desk, order, reason

POLICY = FlattenPolicy(max_attempts=3, round_timeout_s=3.0, cancel_timeout_s=1.0,
                       backoff_initial_s=0.5, backoff_max_s=4.0, recheck_interval_s=30.0)


def test_a_paused_source_or_venue_is_refused_and_others_trade() -> None:
    checks, table = desk(max_order_quantity="100")
    table.paused_sources.add("fix:STRAT1")
    assert reason(checks, table, order(source="fix:STRAT1")) is RejectReason.PAUSED
    assert reason(checks, table, order(source="fix:STRAT2")) is None
    table.paused_sources.clear()
    assert reason(checks, table, order(source="fix:STRAT1")) is None  # resumed
    table.paused_venues.add(order().venue)
    assert reason(checks, table, order(source="fix:STRAT2")) is RejectReason.PAUSED
    assert scope_paused(order(source="x"), {"x"}, set()) == "source x is paused by an operator"


def test_attributed_close_never_flips_and_never_closes_more_than_the_source_opened() -> None:
    assert attributed_close(D(10), D(25)) == D(-10)    # the source's 10 of a long 25
    assert attributed_close(D(10), D(4)) == D(-4)      # capped by what the venue holds
    assert attributed_close(D(-6), D(-20)) == D(6)     # a short share is bought back
    assert attributed_close(D(10), D(-5)) == 0         # the venue is short: never flipped
    assert attributed_close(D(10), D(0)) == 0
    assert attributed_close(D(0), D(7)) == 0


def fill(coid: str, side: Side, quantity: str, venue: str = "paper", symbol: str = "AAPL") -> OrderFilled:
    return OrderFilled(client_order_id=coid, venue=venue, fill_id=f"x-{coid}-{quantity}", symbol=symbol,
                       side=side, quantity=D(quantity), price=D(100), leaves_quantity=D(0))


def test_source_nets_count_the_sources_fills_and_its_closing_orders() -> None:
    sources = {"a1": "fix:A", "a2": "fix:A", "b1": "fix:B", "c1": closing_source("fix:A")}
    fills = [fill("a1", Side.BUY, "10"), fill("b1", Side.BUY, "5"), fill("a2", Side.SELL, "3"),
             fill("a1", Side.BUY, "2", venue="fix"), fill("c1", Side.SELL, "4")]
    assert source_nets("fix:A", sources, fills) == {("paper", "AAPL"): D(3), ("fix", "AAPL"): D(2)}
    assert source_nets("fix:A", sources, fills, exclude={"c1"})[("paper", "AAPL")] == D(7)
    assert source_nets("fix:B", sources, fills) == {("paper", "AAPL"): D(5)}


def test_a_source_flatten_cancels_its_orders_one_by_one_and_closes_only_its_share() -> None:
    working = {"paper": {"a-rest"}}
    nets = {"paper": {"AAPL": D(10), "MSFT": D(-3)}}
    plan = SourceFlattenPlan("s1", "fix:A", ["paper"], POLICY, lambda v: frozenset(working.get(v, set())),
                             lambda v: nets.get(v, {}))
    sent = plan.start(now=0.0)
    assert not any(isinstance(c, CancelAll) for _, c in sent)  # never a mass cancel
    assert [c.client_order_id for _, c in sent if isinstance(c, CancelOrder)] == ["a-rest"]
    (rid,) = {c.request_id for _, c in sent if isinstance(c, RequestPositions)}
    # The venue: long 25 AAPL (10 of them the source's), short 2 MSFT (the source sold 3).
    report = VenuePositions(venue="paper", request_id=rid, positions=(
        VenuePosition(venue="paper", symbol="AAPL", quantity=D(25)),
        VenuePosition(venue="paper", symbol="MSFT", quantity=D(-2))))
    orders = plan.on_positions(report, now_ns=1)
    assert orders is not None
    closing = [o for _, o in orders if isinstance(o, SubmitOrder)]
    assert [(o.symbol, o.side, o.quantity, o.order_type, o.reduce_only, o.source) for o in closing] == [
        ("AAPL", Side.SELL, D(10), OrderType.MARKET, True, "flatten:fix:A"),
        ("MSFT", Side.BUY, D(2), OrderType.MARKET, True, "flatten:fix:A"),
    ]
    # The closing orders fill; the source's own order is cancelled.
    working["paper"].clear()
    plan.on_order_event(OrderCancelled(client_order_id="a-rest", venue="paper"), now=0.1)
    for o in closing:
        plan.on_order_event(fill(o.client_order_id, o.side, str(o.quantity), symbol=o.symbol), now=0.2)
    nets["paper"] = {"AAPL": D(0), "MSFT": D(-1)}  # 1 MSFT was beyond what the venue held
    assert plan.states() == {"paper": VenueState.BACKOFF}
    again = plan.due(0.2)
    (rid2,) = {c.request_id for _, c in again if isinstance(c, RequestPositions)}
    done = plan.on_positions(VenuePositions(venue="paper", request_id=rid2, positions=(
        VenuePosition(venue="paper", symbol="AAPL", quantity=D(15)),)), now_ns=2)
    assert done == []  # the other source's 15 AAPL stays; the venue is flat in MSFT: nothing to buy
    assert plan.outcome() is True


def test_a_source_order_that_trades_during_the_round_makes_the_venue_read_again() -> None:
    working: set[str] = {"a-rest"}
    nets: dict[str, D] = {}
    plan = SourceFlattenPlan("s2", "fix:A", ["paper"], POLICY, lambda v: frozenset(working),
                             lambda v: dict(nets))
    sent = plan.start(now=0.0)
    (rid,) = {c.request_id for _, c in sent if isinstance(c, RequestPositions)}
    assert plan.on_positions(VenuePositions(venue="paper", request_id=rid), now_ns=1) == []
    # The cancel lost the race: the order filled.
    working.clear()
    nets["AAPL"] = D(4)
    plan.source_filled("paper", now=0.3)
    assert plan.outcome() is None and plan.states() == {"paper": VenueState.BACKOFF}
    again = plan.due(0.3)
    (rid2,) = {c.request_id for _, c in again if isinstance(c, RequestPositions)}
    orders = plan.on_positions(VenuePositions(venue="paper", request_id=rid2, positions=(
        VenuePosition(venue="paper", symbol="AAPL", quantity=D(4)),)), now_ns=2)
    assert orders is not None and [o.quantity for _, o in orders if isinstance(o, SubmitOrder)] == [D(4)]
