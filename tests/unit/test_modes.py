"""The risk governor's trading modes: the transition table, journaling and publishing, and
the rules that move the mode (degradations, recovery, escalation, the FAILSAFE latch)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.errors import RiskError
from actors.risk_governor import RiskGovernor, Shutdown, Tick
from core.modes import TRANSITIONS
from messages import (
    MODE_TRANSITIONS,
    ConnectorDown,
    ConnectorUp,
    Escalation,
    FailsafeReport,
    FlattenRequested,
    Mode,
    ModeChanged,
    OperatorVerb,
    PositionState,
    Reconciliation,
    RejectReason,
    SafetyEvent,
    Severity,
)
from supervision import (
    NO_BACKOFF,
    SUPERVISION_TOPIC,
    ChildExited,
    ChildSpec,
    ChildStarted,
    SupervisorGaveUp,
    Tree,
    bus,
)
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.unit.test_risk_checks import UNLIMITED, VENUE, VENUES, Clock, Harness, limits, order


def mode_log(state_dir: Path) -> list[tuple[str, str, str]]:
    """The journal's mode_log, read over a connection of our own."""
    with closing(sqlite3.connect(state_dir / "journal.sqlite3")) as db:
        rows = db.execute("SELECT previous, current, reason FROM mode_log ORDER BY id").fetchall()
    return [(str(p), str(c), str(r)) for p, c, r in rows]


def published(recorder: Recorder) -> list[tuple[str, str, str]]:
    return [(str(m.previous), str(m.current), m.reason) for m in recorder.messages(ModeChanged)]


def assert_journal_matches_bus(gov: Harness) -> list[tuple[str, str, str]]:
    """Every transition journaled was published, in the same order, and nothing else."""
    rows = mode_log(gov.state_dir)
    wait_for(lambda: len(published(gov.bus)) >= len(rows), what="every ModeChanged delivered")
    assert published(gov.bus) == rows
    return rows


@pytest.fixture
def governor(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def start(config: Any = UNLIMITED, clock: Clock | None = None) -> Harness:
        harness = Harness(tmp_path, config, clock or Clock())
        made.append(harness)
        return harness

    yield start
    for harness in made:
        harness.tree.stop(timeout_s=5)


# ---- the transition table ------------------------------------------------------------------


@pytest.mark.parametrize("target", list(Mode))
@pytest.mark.parametrize("source", list(Mode))
def test_every_transition_of_the_table(tmp_path: Path, source: Mode, target: Mode) -> None:
    recorder = Recorder.spawn("recorder", [topics.MODE])
    governor = RiskGovernor(UNLIMITED, tmp_path, VENUES, tick_s=3600.0)  # driven directly
    governor.setup()
    recorder.wait_for(lambda m: isinstance(m, ModeChanged))   # its start: STARTUP -> READY
    try:
        governor.mode = source          # where this case starts
        before = mode_log(tmp_path)
        mark = recorder.count()
        if target in TRANSITIONS[source]:
            governor.transition(target, "case")
            assert governor.mode is target
            assert mode_log(tmp_path) == [*before, (source, target, "case")]
            changed = recorder.wait_for(lambda m: isinstance(m, ModeChanged), after=mark)
            assert (changed.previous, changed.current, changed.reason) == (source, target, "case")
        else:
            with pytest.raises(RiskError):
                governor.transition(target, "case")
            assert governor.mode is source
            assert mode_log(tmp_path) == before
            bus.publish(topics.MODE, "barrier")   # after anything the governor published
            recorder.wait_for(lambda m: m == "barrier", after=mark)
            assert not [m for m in recorder.messages()[mark:] if isinstance(m, ModeChanged)]
    finally:
        governor.teardown()


def test_the_table_is_the_design() -> None:
    """The governor's table is the design's plus the latch's two ways into FAILSAFE: restored
    at start (STARTUP) and an emergency before trading (READY); and DEGRADED restored after a
    restart of the governor (STARTUP -> DEGRADED)."""
    assert {m: set(t) for m, t in TRANSITIONS.items()} == {
        Mode.STARTUP: {Mode.READY, Mode.DEGRADED, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.READY: {Mode.LIVE, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.LIVE: {Mode.DEGRADED, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.DEGRADED: {Mode.LIVE, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.FAILSAFE: {Mode.READY, Mode.SHUTDOWN},
        Mode.SHUTDOWN: set(),
    }
    assert {m: set(t) for m, t in MODE_TRANSITIONS.items()} == {
        Mode.STARTUP: {Mode.READY, Mode.SHUTDOWN},
        Mode.READY: {Mode.LIVE, Mode.SHUTDOWN},
        Mode.LIVE: {Mode.DEGRADED, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.DEGRADED: {Mode.LIVE, Mode.FAILSAFE, Mode.SHUTDOWN},
        Mode.FAILSAFE: {Mode.READY, Mode.SHUTDOWN},
        Mode.SHUTDOWN: set(),
    }


def test_a_life_through_every_mode_is_journaled_and_published(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(limits(recover_after_s=10.0), clock)
    gov.live()
    gov.warning()
    clock.advance(10.0)
    gov.ref.ask(Tick(), timeout=2)
    gov.operator(OperatorVerb.FLATTEN)
    gov.publish(topics.FAILSAFE, FailsafeReport(flat=True, attempts=1))
    assert gov.operator(OperatorVerb.RESET).startswith("reset")
    gov.ref.ask(Shutdown(reason="stopping"), timeout=2)
    rows = assert_journal_matches_bus(gov)
    assert [(p, c) for p, c, _ in rows] == [
        ("STARTUP", "READY"), ("READY", "LIVE"), ("LIVE", "DEGRADED"), ("DEGRADED", "LIVE"),
        ("LIVE", "FAILSAFE"), ("FAILSAFE", "READY"), ("READY", "LIVE"), ("LIVE", "SHUTDOWN"),
    ]


# ---- degradations --------------------------------------------------------------------------


def test_degradations_within_the_window_reach_failsafe(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(limits(degradations_to_failsafe=3, degradation_window_s=60.0), clock)
    gov.live()
    gov.warning()
    assert gov.mode() is Mode.DEGRADED
    clock.at(30.0)
    gov.publish(SUPERVISION_TOPIC, ChildExited(supervisor="connectors", name=VENUE, generation=0,
                                               abnormal=True, reason="session lost"))
    assert gov.mode() is Mode.DEGRADED
    assert gov.flatten_requests() == []
    clock.at(60.0)                  # the first is exactly 60 s old: still in the window
    gov.warning("wide_spread")      # (a stale feed now would be part of the outage)
    assert gov.mode() is Mode.FAILSAFE
    request = gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested))
    assert "3 degradations" in request.reason
    assert gov.submit(order()) is RejectReason.MODE
    assert_journal_matches_bus(gov)


def test_degradations_that_left_the_window_do_not_count(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(limits(degradations_to_failsafe=3, degradation_window_s=60.0), clock)
    gov.live()
    gov.warning("price_spike")      # distinct incidents: each kind is one
    clock.at(30.0)
    gov.warning("wide_spread")
    clock.at(60.01)                 # the first left the window
    gov.warning("slippage")
    assert gov.mode() is Mode.DEGRADED
    assert gov.state()["degradations_in_window"] == 2
    clock.at(61.0)
    gov.warning("time_gap")
    assert gov.mode() is Mode.FAILSAFE


def test_a_reconciliation_mismatch_is_one_degradation(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(degradations_to_failsafe=2))
    gov.live()
    # what the position keeper publishes for one mismatch: the Reconciliation and its event
    gov.publish(topics.PORTFOLIO, Reconciliation(
        venue=VENUE, reconciled=False, mismatches=("AAPL: journal 0, venue 5",),
        venue_positions=(PositionState(venue=VENUE, symbol="AAPL", quantity=D(5), average_price=D(100)),)))
    gov.publish(topics.SAFETY, SafetyEvent(kind="reconciliation_mismatch", severity=Severity.WARNING,
                                           venue=VENUE, symbol="AAPL", detail="AAPL: journal 0, venue 5"))
    assert gov.mode() is Mode.DEGRADED
    assert gov.state()["degradations_in_window"] == 1
    gov.warning()
    assert gov.mode() is Mode.FAILSAFE


def test_info_events_and_degradations_before_live_change_nothing(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(degradations_to_failsafe=1))
    gov.warning()                   # READY: nothing trades yet
    assert gov.mode() is Mode.READY
    gov.live()
    gov.publish(topics.SAFETY, SafetyEvent(kind="note", severity=Severity.INFO))
    assert gov.mode() is Mode.LIVE


def test_a_critical_event_is_failsafe_at_once(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    gov.publish(topics.SAFETY, SafetyEvent(kind="negative_price", severity=Severity.CRITICAL, venue=VENUE,
                                           symbol="AAPL", detail="bid -1"))
    assert gov.mode() is Mode.FAILSAFE
    request = gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested))
    assert "negative_price" in request.reason and request.source == "safety_monitor"


# ---- recovery --------------------------------------------------------------------------------


def test_degraded_returns_to_live_after_a_quiet_period(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(limits(recover_after_s=10.0), clock)
    gov.live()
    gov.warning()
    clock.at(9.99)
    gov.ref.ask(Tick(), timeout=2)
    assert gov.mode() is Mode.DEGRADED
    clock.at(5.0)
    gov.warning("wide_spread")      # a new incident restarts the quiet period
    clock.at(14.99)
    gov.ref.ask(Tick(), timeout=2)
    assert gov.mode() is Mode.DEGRADED
    clock.at(15.0)
    gov.ref.ask(Tick(), timeout=2)
    assert gov.mode() is Mode.LIVE
    assert assert_journal_matches_bus(gov)[-1][:2] == ("DEGRADED", "LIVE")


def test_no_recovery_while_a_connector_is_down(governor: Callable[..., Harness]) -> None:
    clock = Clock()
    gov = governor(limits(recover_after_s=10.0), clock)
    gov.live()
    gov.warning()
    gov.publish(topics.CONNECTORS, ConnectorDown(name=VENUE))
    clock.at(100.0)
    gov.ref.ask(Tick(), timeout=2)
    assert gov.mode() is Mode.DEGRADED
    gov.connector_up()
    gov.ref.ask(Tick(), timeout=2)
    assert gov.mode() is Mode.LIVE


def test_the_governors_own_timer_runs_the_recovery(tmp_path: Path) -> None:
    clock = Clock()
    recorder = Recorder.spawn("recorder", [topics.MODE])
    spec = ChildSpec(name="risk_governor", actor_class=RiskGovernor,
                     args=(limits(recover_after_s=10.0), tmp_path, VENUES),
                     kwargs={"clock": clock, "tick_s": 0.02})
    tree = Tree([spec], backoff=NO_BACKOFF)
    tree.start(timeout_s=5)
    try:
        bus.publish(topics.CONNECTORS, ConnectorUp(name=VENUE))
        bus.publish(topics.PORTFOLIO, Reconciliation(venue=VENUE, reconciled=True))
        recorder.wait_for(lambda m: isinstance(m, ModeChanged) and m.current is Mode.LIVE)
        bus.publish(topics.SAFETY, SafetyEvent(kind="price_spike", severity=Severity.WARNING))
        recorder.wait_for(lambda m: isinstance(m, ModeChanged) and m.current is Mode.DEGRADED)
        clock.at(10.0)
        recorder.wait_for(lambda m: isinstance(m, ModeChanged) and m.current is Mode.LIVE
                          and m.previous is Mode.DEGRADED, timeout_s=3)
    finally:
        tree.stop(timeout_s=5)


# ---- escalation ------------------------------------------------------------------------------


def test_connectors_supervisor_giving_up_is_failsafe(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    gov.publish(SUPERVISION_TOPIC, SupervisorGaveUp(supervisor="strategies", reason="too many restarts"))
    assert gov.mode() is Mode.LIVE              # only the connectors' supervisor matters here
    gov.publish(SUPERVISION_TOPIC, SupervisorGaveUp(supervisor="connectors", reason="11 restarts"))
    assert gov.mode() is Mode.FAILSAFE
    request = gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested))
    assert "connectors supervisor gave up" in request.reason
    assert mode_log(gov.state_dir)[-1][:2] == ("LIVE", "FAILSAFE")


def test_an_escalation_before_anything_trades_still_latches_failsafe(
    governor: Callable[..., Harness],
) -> None:
    gov = governor()
    gov.publish(SUPERVISION_TOPIC, Escalation(source="root", reason="beyond repair"))
    assert gov.mode() is Mode.FAILSAFE
    gov.connector_up()
    assert gov.mode() is Mode.FAILSAFE
    assert mode_log(gov.state_dir)[-1][:2] == ("READY", "FAILSAFE")


# ---- the FAILSAFE latch -----------------------------------------------------------------------


def test_a_stop_while_failsafe_keeps_the_latch_for_the_next_start(
    governor: Callable[..., Harness],
) -> None:
    gov = governor()
    gov.live()
    gov.operator(OperatorVerb.FLATTEN)
    gov.ref.ask(Shutdown(reason="service stopping"), timeout=2)
    assert mode_log(gov.state_dir)[-1][:2] == ("FAILSAFE", "SHUTDOWN")

    gov.restart()
    gov.connector_up()
    assert gov.mode() is Mode.FAILSAFE
    assert gov.submit(order()) is RejectReason.MODE


def test_a_stop_after_a_reset_starts_unlatched(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    gov.operator(OperatorVerb.FLATTEN)
    gov.publish(topics.FAILSAFE, FailsafeReport(flat=True, attempts=1))
    assert gov.operator(OperatorVerb.RESET).startswith("reset")
    gov.ref.ask(Shutdown(reason="service stopping"), timeout=2)

    new_process(gov)
    gov.connector_up()
    assert gov.mode() is Mode.LIVE


def new_process(gov: Harness) -> None:
    """The service stops and starts again: a new tree, whose governor is a first start (an
    actor restart within the running process restores instead, see test_restart_restore)."""
    gov.tree.stop(timeout_s=5)
    spec = ChildSpec(name="risk_governor", actor_class=RiskGovernor, args=(gov.config, gov.state_dir, VENUES),
                     kwargs={"clock": gov.clock, "tick_s": 3600.0})
    gov.tree = Tree([spec], name=f"root-{id(gov)}-again", backoff=NO_BACKOFF, intensity=10)
    gov.tree.start(timeout_s=5)


def test_failsafe_is_latched_across_a_restart_and_reset_needs_a_flat_report(
    governor: Callable[..., Harness],
) -> None:
    gov = governor()
    gov.live()
    gov.operator(OperatorVerb.FLATTEN)
    assert gov.mode() is Mode.FAILSAFE
    gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested) and m.source == "operator")
    mark = gov.failsafe.count()

    gov.restart()
    gov.connector_up()
    assert gov.mode() is Mode.FAILSAFE         # restored, and connectors coming up change nothing
    assert mode_log(gov.state_dir)[-1][:2] == ("STARTUP", "FAILSAFE")
    # the restored governor has the venues checked again before anybody may reset
    gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested), after=mark)
    assert gov.submit(order()) is RejectReason.MODE

    assert gov.operator(OperatorVerb.RESET).startswith("refused")
    gov.publish(topics.FAILSAFE, FailsafeReport(flat=False, attempts=5, detail="paper: exhausted"))
    assert gov.operator(OperatorVerb.RESET).startswith("refused")
    assert gov.mode() is Mode.FAILSAFE
    gov.publish(topics.FAILSAFE, FailsafeReport(flat=True, attempts=1, detail="paper: flat"))
    assert gov.operator(OperatorVerb.RESET).startswith("reset")
    assert gov.mode() is Mode.LIVE             # READY, and every connector is up
    gov.quote("AAPL", "100")
    assert gov.submit(order()) is None
    assert [(p, c) for p, c, _ in mode_log(gov.state_dir)][-3:] == [
        ("STARTUP", "FAILSAFE"), ("FAILSAFE", "READY"), ("READY", "LIVE")]


def test_reset_outside_failsafe_does_nothing(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    assert gov.operator(OperatorVerb.RESET).startswith("nothing to reset")
    assert gov.mode() is Mode.LIVE


def test_a_restarted_failsafe_is_asked_to_flatten_again_until_flat(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    gov.operator(OperatorVerb.FLATTEN)
    gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested))
    started = ChildStarted(supervisor="root", name="failsafe", generation=1)
    mark = gov.failsafe.count()
    gov.publish(SUPERVISION_TOPIC, started)
    gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested), after=mark)
    gov.publish(topics.FAILSAFE, FailsafeReport(flat=True, attempts=1))
    mark = gov.failsafe.count()
    gov.publish(SUPERVISION_TOPIC, started)
    assert gov.flatten_requests(after=mark) == []


def test_failsafe_holds_when_the_journal_cannot_record_it(governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    with closing(sqlite3.connect(gov.state_dir / "journal.sqlite3", isolation_level=None)) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON mode_log "
                   "BEGIN SELECT RAISE(ABORT, 'disk failure'); END")
    gov.publish(topics.SAFETY, SafetyEvent(kind="overfill", severity=Severity.CRITICAL, venue=VENUE))
    assert gov.mode() is Mode.FAILSAFE          # in memory, though not on disk
    gov.failsafe.wait_for(lambda m: isinstance(m, FlattenRequested))
    assert gov.submit(order()) is RejectReason.MODE
    assert mode_log(gov.state_dir)[-1][:2] == ("READY", "LIVE")
