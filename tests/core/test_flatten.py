"""The failsafe's rounds as a plan, on a fake clock: what to send for what the venue
reports, and when a venue is flat (no position and no working order, as the venue reports
them); refused mass cancels fall back to cancels one by one; rounds back off; rounds while
down spend nothing; spent attempts turn into slow re-checks."""

from __future__ import annotations

from decimal import Decimal as D

from core.flatten import Command, FlattenPlan, FlattenPolicy, VenueState
from core.lifecycle import WorkingOrders
from messages import (
    FAILSAFE_SOURCE,
    CancelAll,
    CancelOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    RejectReason,
    RequestPositions,
    Side,
    SubmitOrder,
    VenuePosition,
    VenuePositions,
)

POLICY = FlattenPolicy(max_attempts=3, round_timeout_s=3.0, cancel_timeout_s=1.0,
                       backoff_initial_s=0.5, backoff_max_s=4.0, recheck_interval_s=30.0)


def plan_for(*venues: str, policy: FlattenPolicy = POLICY,
             working: WorkingOrders | None = None) -> tuple[FlattenPlan, WorkingOrders]:
    book = working or WorkingOrders()
    return FlattenPlan("inc", venues, policy, book.working), book


def positions(venue: str, request_id: str, **held: str) -> VenuePositions:
    return VenuePositions(venue=venue, request_id=request_id, positions=tuple(
        VenuePosition(venue=venue, symbol=symbol, quantity=D(q)) for symbol, q in held.items()))


def filled(venue: str, client_order_id: str, leaves: str = "0") -> OrderFilled:
    return OrderFilled(client_order_id=client_order_id, venue=venue, fill_id=f"f-{client_order_id}-{leaves}",
                       symbol="ES", side=Side.SELL, quantity=D(1), price=D(1), leaves_quantity=D(leaves))


def request_id(sent: list[tuple[str, Command]], venue: str) -> str:
    (rid,) = {c.request_id for v, c in sent if v == venue and isinstance(c, RequestPositions)}
    return rid


def test_close_what_the_venue_reports_then_flat_when_it_confirms() -> None:
    plan, _ = plan_for("fix")
    sent = plan.start(now=0.0)
    assert [type(c) for _, c in sent] == [CancelAll, RequestPositions]
    rid = request_id(sent, "fix")
    orders = plan.on_positions(positions("fix", rid, ES="5", NQ="-2"), now_ns=7)
    assert orders is not None
    assert [(o.symbol, o.side, o.quantity, o.order_type, o.reduce_only, o.source)
            for _, o in orders if isinstance(o, SubmitOrder)] == [
        ("ES", Side.SELL, D(5), OrderType.MARKET, True, FAILSAFE_SOURCE),
        ("NQ", Side.BUY, D(2), OrderType.MARKET, True, FAILSAFE_SOURCE),
    ]
    ids = [o.client_order_id for _, o in orders if isinstance(o, SubmitOrder)]
    assert plan.states() == {"fix": VenueState.CLOSING}
    plan.on_order_event(filled("fix", ids[0], leaves="1"), now=0.1)           # partial: still closing
    plan.on_order_event(filled("fix", ids[0]), now=0.2)
    assert plan.states() == {"fix": VenueState.CLOSING}
    refused = OrderRejected(client_order_id=ids[1], venue="fix", reason=RejectReason.VENUE)
    plan.on_order_event(refused, now=0.3)
    assert plan.states() == {"fix": VenueState.BACKOFF}                       # the round ended
    assert plan.next_wakeup() == 0.3 + 0.5
    assert plan.due(0.5) == []                                               # still backing off
    again = plan.due(0.8)
    rid2 = request_id(again, "fix")
    assert plan.on_positions(positions("fix", rid2), now_ns=8) == []
    assert plan.states() == {"fix": VenueState.WAITING} and plan.outcome() is None   # cancel unconfirmed
    assert plan.on_cancel_done("fix", rid2)
    assert plan.outcome() is True and plan.rounds == 2


def test_answers_of_another_round_are_ignored() -> None:
    plan, _ = plan_for("fix")
    first = request_id(plan.start(0.0), "fix")
    second = request_id(plan.due(3.0) + plan.due(3.5), "fix")                 # timed out, backed off
    assert plan.on_positions(positions("fix", first), now_ns=0) is None
    assert not plan.on_cancel_done("fix", first)
    assert plan.on_cancel_done("fix", second) is False                        # no position report yet
    assert plan.on_positions(positions("fix", second), now_ns=0) == []
    assert plan.flat()


def test_a_refused_mass_cancel_falls_back_to_cancels_one_by_one() -> None:
    book = WorkingOrders()
    book.sent("fix", "resting-1")
    book.apply(OrderAccepted(client_order_id="resting-1", venue="fix", symbol="ES"))
    book.apply(OrderAccepted(client_order_id="from-elsewhere", venue="fix", symbol="NQ"))  # reported working
    book.sent("fix", "done-1")
    book.apply(filled("fix", "done-1"))
    plan, _ = plan_for("fix", working=book)
    rid = request_id(plan.start(0.0), "fix")
    assert plan.on_positions(positions("fix", rid), now_ns=0) == []
    assert plan.outcome() is None                                 # flat positions, orders unknown
    cancels = plan.due(1.0)                                       # the mass cancel went unanswered
    assert sorted((v, c.client_order_id) for v, c in cancels if isinstance(c, CancelOrder)) == [
        ("fix", "from-elsewhere"), ("fix", "resting-1")]
    assert plan.outcome() is None                                 # both still working at the venue
    for coid in ("resting-1", "from-elsewhere"):
        event = OrderCancelled(client_order_id=coid, venue="fix")
        book.apply(event)
        plan.on_order_event(event, now=1.2)
    assert plan.outcome() is True and plan.rounds == 1


def test_an_order_the_venue_never_cancels_is_never_flat_and_attempts_turn_into_rechecks() -> None:
    book = WorkingOrders()
    book.apply(OrderAccepted(client_order_id="stuck", venue="fix", symbol="ES"))
    plan, _ = plan_for("fix", working=book)
    now, rid = 0.0, request_id(plan.start(0.0), "fix")
    for round_number in (1, 2, 3):
        assert plan.runs["fix"].round == round_number
        plan.on_positions(positions("fix", rid), now_ns=0)
        plan.due(now + 1.0)                                       # cancel one by one: nothing happens
        assert plan.outcome() is None
        plan.due(now + 3.0)                                       # the round times out
        if round_number < 3:
            assert plan.states() == {"fix": VenueState.BACKOFF}
            wake = plan.next_wakeup()
            assert wake is not None and wake > now + 3.0
            rid = request_id(plan.due(wake), "fix")
            now = wake
    now += 3.0
    # Attempts spent: the run reports NOT FLAT and re-checks every 30 s.
    assert plan.states() == {"fix": VenueState.EXHAUSTED} and plan.outcome() is False
    wake = plan.next_wakeup()
    assert wake is not None and wake - now == 30.0
    recheck = plan.due(wake)
    assert plan.runs["fix"].round == 3 and plan.states() == {"fix": VenueState.WAITING}
    assert plan.outcome() is False                                # still out of attempts meanwhile
    # The stuck order is finally cancelled: the re-check finds the venue flat.
    book.apply(OrderCancelled(client_order_id="stuck", venue="fix"))
    plan.on_positions(positions("fix", request_id(recheck, "fix")), now_ns=0)
    plan.due(wake + 1.0)
    assert plan.outcome() is True


def test_rounds_back_off_so_refused_closing_orders_do_not_spend_every_attempt_at_once() -> None:
    policy = FlattenPolicy(max_attempts=5, round_timeout_s=0.5, cancel_timeout_s=0.1,
                           backoff_initial_s=0.2, backoff_max_s=5.0)
    plan, _ = plan_for("fix", policy=policy)
    now = 0.0
    sent = plan.start(now)
    starts = [now]
    refusing_until = 1.0
    while plan.outcome() is None and now < 60:
        rid = request_id(sent, "fix")
        plan.on_cancel_done("fix", rid)
        held = {} if now >= refusing_until + 0.01 else {"ES": "3"}
        closing = plan.on_positions(positions("fix", rid, **held), now_ns=0) or []
        for venue, order in closing:                             # the venue refuses at once
            assert isinstance(order, SubmitOrder)
            plan.on_order_event(OrderRejected(client_order_id=order.client_order_id, venue=venue,
                                              reason=RejectReason.VENUE, text="halted"), now=now)
        wake = plan.next_wakeup()
        if wake is None:
            break
        now = wake
        sent = plan.due(now)
        if sent:
            starts.append(now)
    assert plan.outcome() is True
    assert plan.rounds <= 5
    assert starts[1] - starts[0] >= 0.2 and starts[2] - starts[1] >= 0.4      # doubling pauses


def test_a_down_venue_spends_no_attempt_and_is_flattened_when_back() -> None:
    plan, _ = plan_for("fix", "ibkr", policy=FlattenPolicy(max_attempts=1))
    plan.start(0.0)
    plan.delivery_failed("fix")                                   # fix's connector is not running
    assert plan.runs["fix"].round == 0 and plan.states()["fix"] is VenueState.DOWN
    assert plan.outcome() is None                                 # ibkr still in its round
    rid = plan.runs["ibkr"].request_id
    plan.on_cancel_done("ibkr", rid)
    plan.on_positions(positions("ibkr", rid), now_ns=0)
    assert plan.outcome() is False                                # fix down: not flat
    assert plan.next_wakeup() is None                             # nothing timed for a down venue
    sent = plan.on_connector_up("fix", now=10.0)
    assert plan.runs["fix"].round == 1
    rid = request_id(sent, "fix")
    plan.on_cancel_done("fix", rid)
    plan.on_positions(positions("fix", rid), now_ns=0)
    assert plan.outcome() is True


def test_a_connector_lost_during_a_round_refunds_the_attempt() -> None:
    plan, _ = plan_for("fix", policy=FlattenPolicy(max_attempts=1))
    plan.start(0.0)
    plan.on_connector_down("fix")
    assert plan.runs["fix"].round == 0 and plan.states() == {"fix": VenueState.DOWN}
    assert plan.due(100.0) == []                                  # no round while down
    sent = plan.on_connector_up("fix", now=100.0)
    assert plan.runs["fix"].round == 1 and request_id(sent, "fix")


def test_stale_answers_and_foreign_orders_change_nothing() -> None:
    plan, _ = plan_for("fix")
    plan.start(0.0)
    assert not plan.on_order_event(OrderCancelled(client_order_id="someone-else", venue="fix"), now=0.1)
    assert plan.on_connector_up("nowhere", now=0.1) == []
    assert plan.on_positions(positions("nowhere", "x"), now_ns=0) is None
    assert plan.states() == {"fix": VenueState.WAITING}


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = FlattenPolicy(backoff_initial_s=0.25, backoff_max_s=1.0)
    assert [policy.backoff_s(n) for n in (1, 2, 3, 4, 50)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_the_failsafe_order_id_shape_is_recognised_only_for_its_venue() -> None:
    from core.flatten import failsafe_request_id, looks_like_failsafe_order
    coid = f"{failsafe_request_id('20261129T201500-123456', 'ib-main', 3)}-0"
    assert looks_like_failsafe_order(coid, "ib-main")
    assert not looks_like_failsafe_order(coid, "main")       # another venue's name inside
    scoped = f"{failsafe_request_id('source-fix-S1-20261129T201500-123456', 'paper', 1)}-2"
    assert looks_like_failsafe_order(scoped, "paper")
    assert not looks_like_failsafe_order("fs-20261129T201500-123456-ib-main-x-0", "ib-main")
    assert not looks_like_failsafe_order("fs-7-ib-main-3-0", "ib-main")   # no incident stamp
    assert not looks_like_failsafe_order("strategy-1", "ib-main")
    assert not looks_like_failsafe_order("", "ib-main")
