"""Reconciliation as pure code: the journal against a venue's own reports, the standing
(reconciled or not, and since when), and when each venue is next due."""

from __future__ import annotations

from decimal import Decimal as D

from core.reconcile import (
    ReconcileSchedule,
    ReconcileState,
    compare,
    order_differences,
    prune_changes,
    unsettled_orders,
)
from messages import VenuePosition


def reported(**held: str) -> list[VenuePosition]:
    return [VenuePosition(venue="fix", symbol=symbol, quantity=D(q)) for symbol, q in held.items()]


def test_positions_that_agree_are_reconciled_whatever_the_notation() -> None:
    result = compare("fix", {"ES": D(10), "NQ": D(-2)}, reported(ES="10.0", NQ="-2", CL="0"))
    assert result.reconciled and result.differences == () and not result.orders_compared


def test_every_disagreeing_symbol_is_one_line() -> None:
    result = compare("fix", {"ES": D(10), "NQ": D(-2)}, reported(ES="7", CL="1"))
    assert not result.reconciled
    assert result.differences == ("CL: journal 0, venue 1", "ES: journal 10, venue 7",
                                  "NQ: journal -2, venue 0")


def test_several_lines_for_one_symbol_are_summed() -> None:
    lines = reported(ES="4") + reported(ES="6")
    assert compare("fix", {"ES": D(10)}, lines).reconciled


def test_open_orders_are_compared_when_the_venue_lists_them() -> None:
    result = compare("fix", {}, [], journal_working={"a", "b"}, venue_working={"b", "c"})
    assert result.orders_compared
    assert result.differences == ("order a: working in the journal, not at the venue",
                                  "order c: working at the venue, not in the journal")
    assert compare("fix", {}, [], journal_working={"a"}, venue_working=None).reconciled


def test_standing_keeps_since_when_it_holds() -> None:
    state = ReconcileState()
    assert state.record(compare("fix", {}, []), now_ns=100).since_ns == 100
    assert state.record(compare("fix", {}, []), now_ns=200).since_ns == 100     # still reconciled
    bad = state.record(compare("fix", {}, reported(ES="1")), now_ns=300)
    assert (bad.reconciled, bad.since_ns, bad.last_ns, bad.new_mismatch) == (False, 300, 300, True)
    same = state.record(compare("fix", {}, reported(ES="1")), now_ns=400)
    assert (same.since_ns, same.new_mismatch) == (300, False)           # the same incident
    other = state.record(compare("fix", {}, reported(ES="2")), now_ns=450)
    assert (other.since_ns, other.new_mismatch) == (300, True)          # the differences changed
    good = state.record(compare("fix", {"ES": D(1)}, reported(ES="1")), now_ns=500)
    assert (good.reconciled, good.since_ns, good.differences) == (True, 500, ())


def test_schedule_is_due_an_interval_after_the_last_comparison() -> None:
    schedule = ReconcileSchedule(interval_s=30.0)
    assert schedule.due(["fix", "zmq"], now=0.0) == ["fix", "zmq"]       # never compared: due now
    schedule.compared("fix", now=10.0)                                   # a reconnect's comparison
    assert schedule.due(["fix", "zmq"], now=29.0) == []
    assert schedule.due(["fix", "zmq"], now=30.0) == ["zmq"]
    assert schedule.due(["fix", "zmq"], now=40.0) == ["fix"]
    assert schedule.next_due() == 60.0
    schedule.forget("zmq")
    assert schedule.next_due() == 70.0


def test_orders_whose_journal_state_just_changed_are_not_compared() -> None:
    # "new" was submitted 0.2 s before the report (maybe not at the venue yet); "gone" ended
    # in the journal 0.1 s before it (the venue may still list it); "old" settled long ago.
    changed = {"new": 9_800, "gone": 9_900, "old": 1_000}
    unsettled = unsettled_orders(changed, compared_ns=10_000, settle_ns=1_000)
    assert unsettled == {"new", "gone"}
    result = compare("fix", {}, [], journal_working={"new", "old"}, venue_working={"gone", "old"},
                     unsettled=unsettled)
    assert result.reconciled and result.orders_compared
    # Once settled, the same disagreement is a difference.
    later = unsettled_orders(changed, compared_ns=12_000, settle_ns=1_000)
    result = compare("fix", {}, [], journal_working={"new", "old"}, venue_working={"gone", "old"},
                     unsettled=later)
    assert result.differences == ("order new: working in the journal, not at the venue",
                                  "order gone: working at the venue, not in the journal")
    assert order_differences(("ES: journal 1, venue 0", *result.differences)) == result.differences
    prune_changes(changed, now_ns=12_000, settle_ns=1_000)
    assert changed == {}


def test_an_order_ended_at_the_venue_unseen_is_a_mismatch_once_confirmed() -> None:
    state = ReconcileState(confirmations=3)
    assert state.record(compare("fix", {}, [], {"a"}, {"a"}), now_ns=1).reconciled
    for ts in (2, 3):
        standing = state.record(compare("fix", {}, [], {"a"}, set()), now_ns=ts)
        assert standing.pending and standing.reconciled
    standing = state.record(compare("fix", {}, [], {"a"}, set()), now_ns=4)
    assert not standing.pending and standing.reconciled is False and standing.new_mismatch
    assert standing.differences == ("order a: working in the journal, not at the venue",)
    # The order's end reaches the journal: the next comparison agrees.
    assert state.record(compare("fix", {}, [], set(), set()), now_ns=5).reconciled
