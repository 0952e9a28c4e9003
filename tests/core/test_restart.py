"""What a restart of a core actor restores, on its own: the journal's facts merged into the
mode machine, the incident book and the venue book. Times are numbers the test passes in
(monotonic seconds, wall clock nanoseconds)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.incidents import CORE_RESTART, FEED_STALE, VENUE_DOWN, IncidentBook, IncidentKey
from core.modes import ModeMachine, ModeRules
from core.restart import (
    OPERATOR_PAUSE,
    IncidentRecord,
    JournalFacts,
    RestartLedger,
    last_reset_ns,
    monotonic_of,
    new_restarts,
    restoration,
)
from core.safety import OrderTracker, check_overfill
from core.venues import TradingState, VenueBook
from messages import Mode, ModeChanged, OrderFilled, OrderType, Side, SubmitOrder

D = Decimal
S = 1_000_000_000
"""One second in nanoseconds."""
WALL = 1_800_000_000 * S
"""Now, wall clock."""
NOW = 5_000.0
"""Now, monotonic."""
RULES = ModeRules(degradations_to_failsafe=3, degradation_window_s=300.0, recover_after_s=10.0)


def changed(previous: Mode, current: Mode, ts_ns: int = 0) -> ModeChanged:
    return ModeChanged(previous=previous, current=current, reason="case", ts_ns=ts_ns)


def record(ref: int, kind: str, venue: str = "", symbol: str = "", *, age_s: float, closed: bool = False,
           counted: bool = True) -> IncidentRecord:
    opened = WALL - int(age_s * S)
    return IncidentRecord(ref=ref, kind=kind, venue=venue, symbol=symbol, reason=f"{kind} case",
                          opened_ns=opened, closed_ns=opened + S if closed else 0, counted=counted)


# ---- the machine -------------------------------------------------------------------------------


@pytest.mark.parametrize(("last", "expected"), [
    (None, Mode.READY),
    (changed(Mode.STARTUP, Mode.READY), Mode.READY),
    (changed(Mode.READY, Mode.LIVE), Mode.READY),              # never LIVE by default
    (changed(Mode.LIVE, Mode.DEGRADED), Mode.DEGRADED),
    (changed(Mode.DEGRADED, Mode.FAILSAFE), Mode.FAILSAFE),
    (changed(Mode.FAILSAFE, Mode.SHUTDOWN), Mode.FAILSAFE),    # the latch holds
    (changed(Mode.LIVE, Mode.SHUTDOWN), Mode.SHUTDOWN),        # stopping stays stopping
])
def test_a_restored_machine_is_never_more_permissive_than_the_journal_says(
        last: ModeChanged | None, expected: Mode) -> None:
    machine = ModeMachine(RULES)
    change = machine.restore(last, why="governor restarted")
    assert (change.previous, change.current, machine.mode) == (Mode.STARTUP, expected, expected)
    assert "governor restarted" in change.reason


def test_a_restored_degraded_keeps_counting_towards_failsafe_and_recovers_only_after_the_quiet_time() -> None:
    machine = ModeMachine(RULES)
    machine.restore(changed(Mode.LIVE, Mode.DEGRADED), degradations=[NOW - 20.0], last_degradation=NOW - 20.0)
    assert machine.degradations_in_window == 1
    # the restart itself counts once: the window holds two now
    assert machine.degrade_restart("governor restarted", NOW, trading=True).noted
    assert machine.degradations_in_window == 2
    assert machine.recover(NOW + 9.9, ready=True) is None          # quiet time runs from the restart
    outcome = machine.degrade("another incident", NOW + 5.0)
    assert outcome.escalate and "3 degradations" in outcome.escalate


def test_a_restart_counts_when_trading_was_under_way_even_while_restored_ready() -> None:
    machine = ModeMachine(RULES)
    machine.restore(changed(Mode.READY, Mode.LIVE), degradations=[NOW - 1.0, NOW - 2.0])
    assert machine.mode is Mode.READY
    assert machine.degrade_restart("keeper restarted", NOW, trading=True).escalate
    idle = ModeMachine(RULES)
    idle.restore(changed(Mode.STARTUP, Mode.READY))
    assert not idle.degrade_restart("keeper restarted", NOW, trading=False).noted
    assert idle.degradations_in_window == 0


def test_without_a_restore_the_machine_would_have_forgotten() -> None:
    """The control case: a fresh start after the same journal goes READY with nothing counted."""
    machine = ModeMachine(RULES)
    assert machine.start(changed(Mode.LIVE, Mode.DEGRADED)).current is Mode.READY
    assert machine.degradations_in_window == 0


# ---- merging the journal's facts -----------------------------------------------------------------


def test_the_window_holds_the_counted_incidents_since_the_last_reset_and_within_the_window() -> None:
    facts = JournalFacts(
        last_mode=changed(Mode.LIVE, Mode.DEGRADED),
        incidents=[
            record(1, "price_spike", "fix", "AAPL", age_s=400.0, closed=True),   # out of the window
            record(2, "price_spike", "fix", "MSFT", age_s=250.0, closed=True),   # before the reset
            record(3, FEED_STALE, "zmq", age_s=100.0),                           # open, counted
            record(4, VENUE_DOWN, "ib", age_s=30.0, counted=False),              # open, not counted
            record(5, CORE_RESTART, "", "failsafe", age_s=10.0, closed=True),    # a restart, counted
        ],
        modes=[changed(Mode.FAILSAFE, Mode.READY, WALL - 200 * S)],
        reconciled={"fix": True, "zmq": False},
    )
    plan = restoration(facts, ("fix", "zmq", "ib", "paper"), now=NOW, now_wall_ns=WALL, window_s=300.0)
    assert plan.degradations == pytest.approx((NOW - 100.0, NOW - 10.0))
    assert plan.last_degradation == pytest.approx(NOW - 10.0)
    assert {i.key for i in plan.incidents} == {IncidentKey(FEED_STALE, "zmq"), IncidentKey(VENUE_DOWN, "ib")}
    assert {i.key.kind: i.ref for i in plan.incidents} == {FEED_STALE: 3, VENUE_DOWN: 4}
    assert plan.opened_total == 5
    venues = plan.venues
    assert venues["fix"].ever_up and not venues["fix"].mismatch and venues["fix"].down_since is None
    assert venues["zmq"].mismatch and venues["zmq"].ever_up
    assert venues["ib"].ever_up and venues["ib"].down_since == pytest.approx(NOW - 30.0)
    assert not venues["paper"].ever_up and venues["paper"].down_since is None
    assert "venues held: zmq, ib" in plan.describe()


def test_times_from_the_journal_are_turned_into_the_monotonic_clock_by_their_age() -> None:
    assert monotonic_of(WALL - 3 * S, WALL, NOW) == pytest.approx(NOW - 3.0)
    assert monotonic_of(WALL + 3 * S, WALL, NOW) == NOW          # never in the future
    assert last_reset_ns([changed(Mode.FAILSAFE, Mode.READY, 5), changed(Mode.FAILSAFE, Mode.READY, 9),
                          changed(Mode.READY, Mode.LIVE, 12)], since_ns=6) == 9
    assert last_reset_ns([changed(Mode.FAILSAFE, Mode.READY, 5)], since_ns=6) == 0


def test_new_restarts_are_those_above_what_is_recorded_in_start_order() -> None:
    assert new_restarts({"risk_governor": 2, "position_keeper": 1}, {"risk_governor": 1}) == [
        ("position_keeper", 1), ("risk_governor", 1)]
    assert new_restarts({"risk_governor": 1}, {"risk_governor": 1}) == []
    assert new_restarts({"dashboard": 3}, {}) == []      # not a core actor


# ---- the books ----------------------------------------------------------------------------------


def test_restored_incidents_count_nothing_again_and_closed_ones_are_handed_over_once() -> None:
    book = IncidentBook(quiet_s=30.0)
    plan = restoration(JournalFacts(last_mode=None, incidents=[record(7, FEED_STALE, "zmq", age_s=5.0)]),
                       ("zmq",), now=NOW, now_wall_ns=WALL, window_s=300.0)
    book.restore(plan.incidents, plan.opened_total)
    assert book.signal(IncidentKey(FEED_STALE, "zmq"), NOW + 1.0, "stale again") is None   # continues
    assert book.opened_total == 1
    closed = book.clear(FEED_STALE, "zmq")
    assert [i.ref for i in closed] == [7]
    assert [i.ref for i in book.take_closed()] == [7] and book.take_closed() == []
    restart = book.note(IncidentKey(CORE_RESTART, "", "risk_governor"), NOW, "restarted")
    assert book.opened_total == 2 and restart.key not in book and book.findings("") == []


def test_a_restored_outage_keeps_its_clock_and_a_restored_mismatch_halts_until_one_matches() -> None:
    book = VenueBook(("ib", "fix", "zmq"), max_outage_s=60.0)
    book.restore("ib", ever_up=True, down_since=NOW - 50.0, mismatch=False)
    book.restore("fix", ever_up=True, down_since=None, mismatch=True)
    book.restore("zmq", ever_up=True, down_since=None, mismatch=False)
    assert set(book.states().values()) == {TradingState.HALTED}
    # the outage started before the restart: overdue 60 s after it started, not after the restart
    assert book.overdue(NOW + 5.0) == []
    assert [v for v, _ in book.overdue(NOW + 10.5)] == ["ib"]
    # fix reconnects: still HALTED on its mismatch until a reconciliation matches
    book.on_up("fix")
    assert book.state("fix") is TradingState.HALTED and "fix" in book.blocking_recovery()
    book.on_reconciliation("fix", True)
    assert book.state("fix") is TradingState.ACTIVE
    # zmq was up before: its connector failing to come back starts an outage
    book.on_down("zmq", NOW + 1.0)
    assert book.outage_s("zmq", NOW + 3.0) == pytest.approx(2.0)


def test_a_venue_never_up_in_this_run_starts_no_outage_after_a_restart() -> None:
    book = VenueBook(("paper",), max_outage_s=60.0)
    book.restore("paper", ever_up=False, down_since=None, mismatch=False)
    book.on_down("paper", NOW)
    assert book.outage_s("paper", NOW + 100.0) is None


def test_a_mismatch_is_not_forgotten_by_a_new_session_before_it_reconciles() -> None:
    book = VenueBook(("fix",))
    book.restore("fix", ever_up=True, down_since=None, mismatch=True)
    book.on_up("fix")
    book.on_down("fix", NOW)
    book.on_up("fix")
    assert book.state("fix") is TradingState.HALTED
    assert book.reasons()["fix"] == "reconciliation mismatch"


def test_an_open_operator_pause_is_restored_and_is_no_incident() -> None:
    facts = JournalFacts(last_mode=changed(Mode.READY, Mode.LIVE), incidents=[
        record(1, OPERATOR_PAUSE, age_s=50.0, closed=True, counted=False),   # paused, resumed
        record(2, OPERATOR_PAUSE, age_s=20.0, counted=False),                # paused again
    ])
    plan = restoration(facts, ("fix",), now=NOW, now_wall_ns=WALL, window_s=300.0)
    assert plan.paused and plan.pause_ref == 2
    assert plan.incidents == () and plan.opened_total == 0 and plan.degradations == ()
    resumed = JournalFacts(last_mode=None, incidents=[record(1, OPERATOR_PAUSE, age_s=5.0, closed=True,
                                                             counted=False)])
    assert not restoration(resumed, (), now=NOW, now_wall_ns=WALL, window_s=300.0).paused


def order(coid: str) -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue="paper", symbol="AAPL", side=Side.BUY, quantity=D(10),
                       order_type=OrderType.LIMIT, limit_price=D(100), source="strategy")


def fill(coid: str, fill_id: str, quantity: str) -> OrderFilled:
    return OrderFilled(client_order_id=coid, venue="paper", fill_id=fill_id, symbol="AAPL", side=Side.BUY,
                       quantity=D(quantity), price=D(100), leaves_quantity=D(0))


def test_the_tracker_restores_an_order_with_its_fills() -> None:
    tracker = OrderTracker()
    tracked = tracker.restore(order("o-1"),
                              [fill("o-1", "a", "4"), fill("o-1", "a", "4"), fill("o-1", "b", "6")])
    assert tracked.filled == D(10) and tracked.fill_ids == ("a", "b")
    assert tracker.on_fill(fill("o-1", "b", "6")) is None                 # delivered again
    extra = fill("o-1", "c", "1")
    again = tracker.on_fill(extra)
    assert again is not None
    finding = check_overfill(again, extra)
    assert finding is not None and finding.value == D(11)


# ---- the restart ledger ------------------------------------------------------------------------


def test_a_keeper_crash_restarts_everything_after_it_and_is_one_event() -> None:
    ledger = RestartLedger(along_s=60.0)
    event = ledger.own_start("risk_governor", {"position_keeper": 1, "risk_governor": 1}, now=NOW)
    assert event is not None and not event.along and event.first == "position_keeper"
    assert event.reason == "core actor position_keeper restarted (with risk_governor)"
    assert [name for name, _ in event.texts()] == ["position_keeper", "risk_governor"]
    along = ledger.started("failsafe", 1, now=NOW + 1.0)
    assert along is not None and along.along
    assert ledger.started("failsafe", 1, now=NOW + 1.5) is None            # the same notice again
    assert ledger.total == 3


def test_a_restart_of_its_own_after_the_along_window_counts_again() -> None:
    ledger = RestartLedger(along_s=60.0)
    first = ledger.started("failsafe", 1, now=NOW)
    assert first is not None and not first.along
    along = ledger.started("safety_monitor", 1, now=NOW + 59.0)
    assert along is not None and along.along
    late = ledger.started("safety_monitor", 2, now=NOW + 200.0)
    assert late is not None and not late.along


def test_a_ledger_rebuilt_from_the_journal_records_nothing_twice() -> None:
    ledger = RestartLedger()
    ledger.load(["risk_governor", "failsafe"])
    assert ledger.own_start("risk_governor", {"risk_governor": 1, "position_keeper": 0}, now=NOW) is None
    again = ledger.own_start("risk_governor", {"risk_governor": 2, "position_keeper": 0}, now=NOW)
    assert again is not None and again.restarted == (("risk_governor", 1),)
    assert ledger.started("dashboard", 4, now=NOW) is None                 # not a core actor
