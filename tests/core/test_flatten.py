"""The failsafe's rounds as a plan: what to send for what the venue reports, and when a
venue is flat (no position and the mass cancel confirmed, as the venue reports them)."""

from __future__ import annotations

from decimal import Decimal as D

from core.flatten import FlattenPlan, VenueState
from messages import (
    FAILSAFE_SOURCE,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    RejectReason,
    Side,
    VenuePosition,
    VenuePositions,
)


def positions(venue: str, request_id: str, **held: str) -> VenuePositions:
    return VenuePositions(venue=venue, request_id=request_id, positions=tuple(
        VenuePosition(venue=venue, symbol=symbol, quantity=D(q)) for symbol, q in held.items()))


def filled(venue: str, client_order_id: str, leaves: str = "0") -> OrderFilled:
    return OrderFilled(client_order_id=client_order_id, venue=venue, fill_id=f"f-{client_order_id}-{leaves}",
                       symbol="ES", side=Side.SELL, quantity=D(1), price=D(1), leaves_quantity=D(leaves))


def test_close_what_the_venue_reports_then_flat_when_it_confirms() -> None:
    plan = FlattenPlan("inc", ["fix"], max_attempts=3)
    start = plan.next_round("fix")
    assert start is not None and start.request_id == "fs-inc-fix-1"
    orders = plan.on_positions(positions("fix", start.request_id, ES="5", NQ="-2"), created_ns=7)
    assert orders is not None
    assert [(o.symbol, o.side, o.quantity, o.order_type, o.reduce_only, o.source) for o in orders] == [
        ("ES", Side.SELL, D(5), OrderType.MARKET, True, FAILSAFE_SOURCE),
        ("NQ", Side.BUY, D(2), OrderType.MARKET, True, FAILSAFE_SOURCE),
    ]
    assert plan.states() == {"fix": VenueState.CLOSING}
    assert not plan.on_order_done(filled("fix", orders[0].client_order_id, leaves="1"))   # partial
    assert not plan.on_order_done(filled("fix", orders[0].client_order_id))
    rejected = OrderRejected(client_order_id=orders[1].client_order_id, venue="fix",
                             reason=RejectReason.VENUE)
    assert plan.on_order_done(rejected)                       # the last one: re-read the venue
    again = plan.next_round("fix")
    assert again is not None and again.round == 2
    assert plan.on_positions(positions("fix", again.request_id), created_ns=8) == ()
    assert plan.states() == {"fix": VenueState.WAITING} and not plan.finished()   # cancel not confirmed
    assert plan.on_cancel_done("fix", again.request_id)
    assert plan.finished() and plan.flat() and plan.rounds == 2


def test_answers_of_another_round_are_ignored() -> None:
    plan = FlattenPlan("inc", ["fix"], max_attempts=3)
    first = plan.next_round("fix")
    assert first is not None
    second = plan.next_round("fix")
    assert second is not None
    assert plan.on_positions(positions("fix", first.request_id), created_ns=0) is None
    assert not plan.on_cancel_done("fix", first.request_id)
    assert plan.on_cancel_done("fix", second.request_id) is False   # no position report yet
    assert plan.on_positions(positions("fix", second.request_id), created_ns=0) == ()
    assert plan.flat()


def test_a_refused_mass_cancel_is_never_flat_and_attempts_run_out() -> None:
    plan = FlattenPlan("inc", ["fix"], max_attempts=2)
    for round_number in (1, 2):
        start = plan.next_round("fix")
        assert start is not None
        plan.on_positions(positions("fix", start.request_id), created_ns=0)   # flat, but no confirmation
        assert plan.on_round_timeout("fix", round_number)
    assert plan.next_round("fix") is None
    assert plan.states() == {"fix": VenueState.EXHAUSTED} and plan.finished() and not plan.flat()
    assert plan.on_connector_up("fix", running=False)           # attempts start again
    assert plan.next_round("fix") is not None


def test_a_down_venue_spends_no_attempt_and_is_retried_when_back() -> None:
    plan = FlattenPlan("inc", ["fix", "ibkr"], max_attempts=1)
    assert plan.next_round("fix") is not None
    plan.venue_down("fix")
    assert plan.runs["fix"].round == 0 and plan.states()["fix"] is VenueState.DOWN
    assert not plan.finished()                                   # ibkr is still pending
    ibkr = plan.next_round("ibkr")
    assert ibkr is not None
    plan.on_cancel_done("ibkr", ibkr.request_id)
    plan.on_positions(positions("ibkr", ibkr.request_id), created_ns=0)
    assert plan.finished() and not plan.flat()                   # fix down: not flat
    assert plan.on_connector_up("fix", running=False)
    start = plan.next_round("fix")
    assert start is not None and start.round == 1


def test_stale_timeouts_and_foreign_orders_change_nothing() -> None:
    plan = FlattenPlan("inc", ["fix"], max_attempts=3)
    start = plan.next_round("fix")
    assert start is not None
    assert not plan.on_round_timeout("fix", 7)
    assert not plan.on_order_done(OrderCancelled(client_order_id="someone-else", venue="fix"))
    assert not plan.on_connector_up("nowhere", running=True)
    assert plan.on_connector_up("fix", running=True)            # a round under way when it restarted
