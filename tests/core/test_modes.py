"""The mode machine on its own: the table, the latch, the degradation rule, the reset rule.
Time is a number the test passes in."""

from __future__ import annotations

import pytest

from core.modes import TRANSITIONS, ForbiddenTransition, ModeMachine, ModeRules, latched_in
from messages import MODE_TRANSITIONS, Mode, ModeChanged


def live(rules: ModeRules | None = None) -> ModeMachine:
    machine = ModeMachine(rules or ModeRules(degradations_to_failsafe=3, degradation_window_s=60.0,
                                             recover_after_s=10.0))
    machine.start(None)
    assert machine.venues_up(True) is not None
    assert machine.mode is Mode.LIVE
    return machine


@pytest.mark.parametrize("target", list(Mode))
@pytest.mark.parametrize("source", list(Mode))
def test_every_transition_is_validated_against_the_one_table(source: Mode, target: Mode) -> None:
    machine = ModeMachine(mode=source)
    if target in TRANSITIONS[source]:
        change = machine.transition(target, "case")
        assert (change.previous, change.current, machine.mode) == (source, target, target)
    else:
        with pytest.raises(ForbiddenTransition):
            machine.transition(target, "case")
        assert machine.mode is source


def test_the_table_is_the_designed_one_plus_the_latch_and_restore_edges() -> None:
    extra = {(a, b) for a, targets in TRANSITIONS.items() for b in targets} - {
        (a, b) for a, targets in MODE_TRANSITIONS.items() for b in targets}
    # STARTUP -> DEGRADED: a governor restarted while DEGRADED comes back DEGRADED
    assert extra == {(Mode.STARTUP, Mode.FAILSAFE), (Mode.READY, Mode.FAILSAFE),
                     (Mode.STARTUP, Mode.DEGRADED)}
    assert all(Mode.FAILSAFE in TRANSITIONS[m] for m in Mode if m not in (Mode.FAILSAFE, Mode.SHUTDOWN))
    assert TRANSITIONS[Mode.FAILSAFE] == {Mode.READY, Mode.SHUTDOWN}


@pytest.mark.parametrize(("last", "latched"), [
    (None, False),
    (ModeChanged(previous=Mode.LIVE, current=Mode.FAILSAFE), True),
    (ModeChanged(previous=Mode.FAILSAFE, current=Mode.SHUTDOWN), True),
    (ModeChanged(previous=Mode.LIVE, current=Mode.SHUTDOWN), False),
    (ModeChanged(previous=Mode.FAILSAFE, current=Mode.READY), False),
])
def test_the_latch_survives_a_restart(last: ModeChanged | None, latched: bool) -> None:
    assert latched_in(last) is latched
    machine = ModeMachine()
    change = machine.start(last)
    assert change.previous is Mode.STARTUP
    assert machine.latched is latched
    assert machine.mode is (Mode.FAILSAFE if latched else Mode.READY)
    went_live = machine.venues_up(True)       # READY goes LIVE with every venue up; FAILSAFE never
    assert (went_live is None) is latched


def test_degradations_within_the_window_latch_failsafe() -> None:
    machine = live()
    first = machine.degrade("spike", now=100.0)
    assert first.change is not None and machine.mode is Mode.DEGRADED
    assert machine.degrade("gap", now=130.0).noted
    outcome = machine.degrade("stale", now=160.0)      # third within 60 s (inclusive)
    assert outcome.escalate.startswith("3 degradations within 60.0s; last: stale")
    assert machine.mode is Mode.DEGRADED              # the caller enters FAILSAFE
    entry = machine.enter_failsafe(outcome.escalate)
    assert entry.change is not None and entry.flatten and machine.latched


def test_degradations_outside_the_window_do_not_add_up() -> None:
    machine = live()
    machine.degrade("a", now=0.0)
    machine.degrade("b", now=30.0)
    assert not machine.degrade("c", now=60.01 + 30.0).escalate   # "a" and "b" left the window
    assert machine.degradations_in_window == 1


def test_recovery_needs_quiet_time_and_every_venue() -> None:
    machine = live()
    machine.degrade("spike", now=100.0)
    assert machine.recover(109.99, ready=True) is None
    assert machine.recover(110.0, ready=False) is None
    change = machine.recover(110.0, ready=True)
    assert change is not None and machine.mode is Mode.LIVE


def test_degradations_outside_trading_are_ignored() -> None:
    machine = ModeMachine()
    machine.start(None)
    outcome = machine.degrade("early", now=1.0)
    assert (outcome.change, outcome.escalate, outcome.noted, machine.mode) == (None, "", False, Mode.READY)


def test_failsafe_latches_once_and_reruns_only_on_request() -> None:
    machine = ModeMachine()
    machine.start(None)                               # READY: an emergency before trading
    assert machine.enter_failsafe("operator").change is not None
    again = machine.enter_failsafe("again")
    assert (again.change, again.flatten, again.already) == (None, False, True)
    assert machine.enter_failsafe("operator flatten", rerun=True).flatten
    assert not machine.enter_failsafe("quiet", notify=False, rerun=True).flatten


def test_reset_only_once_every_venue_was_reported_flat() -> None:
    machine = live()
    assert machine.reset("ops").refusal == "nothing to reset: mode is LIVE"
    machine.enter_failsafe("critical")
    assert machine.reset("ops").refusal == "refused: the venues are not confirmed flat yet"
    machine.on_failsafe_report(True)
    machine.enter_failsafe("re-trigger")              # already latched: flat stays known
    reset = machine.reset("ops")
    assert reset.change is not None and machine.mode is Mode.READY and machine.degradations_in_window == 0


def test_a_new_latch_forgets_an_earlier_flat_report() -> None:
    machine = live()
    machine.on_failsafe_report(True)
    machine.enter_failsafe("critical")
    assert not machine.failsafe_flat
    assert machine.reset("ops").change is None


def test_shutdown_from_anywhere_and_nothing_after() -> None:
    for mode in Mode:
        machine = ModeMachine(mode=mode)
        change = machine.shutdown("stop")
        assert machine.mode is Mode.SHUTDOWN and (change is None) is (mode is Mode.SHUTDOWN)
        assert machine.enter_failsafe("late").change is None


def test_an_outage_is_counted_without_leaving_live() -> None:
    machine = live()
    outcome = machine.degrade("venue fix down", 0.0, enter=False)
    assert outcome.change is None and outcome.noted and machine.mode is Mode.LIVE
    assert machine.degradations_in_window == 1
    machine.degrade("venue zmq down", 1.0, enter=False)
    third = machine.degrade("venue ib down", 2.0, enter=False)       # distinct incidents still escalate
    assert third.escalate.startswith("3 degradations")


def test_losing_the_venues_leaves_live_without_counting() -> None:
    machine = live()
    change = machine.venues_lost("no venue trading")
    assert change is not None and machine.mode is Mode.DEGRADED
    assert machine.degradations_in_window == 0
    assert machine.venues_lost("again") is None
    assert machine.recover(1000.0, ready=False) is None
    assert machine.recover(1000.0, ready=True) is not None and machine.mode is Mode.LIVE
