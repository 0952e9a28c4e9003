"""Every core actor made to fail while the service trades on the paper venue, and again
while it is in FAILSAFE: its supervisor brings it back under the same name, no fill the
venue made is missing from the journal, and no order passes in FAILSAFE. Also a restart
storm of the paper connector past its supervisor's intensity, which must end in FAILSAFE.

Each failure is an abnormal exit (an exception in a told message), never a polite stop:
the journal refuses the position keeper's write, the venue drops the connector's session,
and the other actors are told a message they cannot handle (a quote batch with a missing
quote, a safety event without a severity), as a buggy sibling could send.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import pytest

from actors.dashboard import GetDashboardState
from messages import (
    FailsafeReport,
    GetFailsafeState,
    GetPortfolio,
    GetRiskState,
    GetSafetyStats,
    Mode,
    ModeChanged,
    QuoteBatch,
    SafetyEvent,
)
from supervision import ChildExited, Ping, SupervisorGaveUp, registry
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.test_failsafe_paper import (
    STRATEGY,
    TOPICS,
    VENUE,
    assert_no_fill_lost,
    assert_nothing_but_the_failsafe_passed_after,
    fast_settings,
    governor_mode,
    hold_a_position,
    mode_index,
    strategy_keeps_being_refused,
    trading_has_started,
    venue,
    venue_fills,
    venue_positions,
)
from tradeguard.app import Service
from tradeguard.control import ControlError, send_command
from tradeguard.settings import Settings

QUERIES: dict[str, Any] = {
    "position_keeper": GetPortfolio(),
    "risk_governor": GetRiskState(),
    "failsafe": GetFailsafeState(),
    "safety_monitor": GetSafetyStats(),
    "dashboard": GetDashboardState(),
}
"""What each actor is asked to show it answers (the others answer a Ping)."""

ACTORS = ["position_keeper", "risk_governor", "failsafe", "safety_monitor", VENUE, STRATEGY, "dashboard"]

MISSING_QUOTE = QuoteBatch(venue=VENUE, quotes=(None,))  # type: ignore[arg-type]
"""A batch with a hole where a quote should be (built without validation)."""
NO_SEVERITY = SafetyEvent(kind="corrupt", severity=None)  # type: ignore[arg-type]
"""A safety event without a severity (built without validation)."""


def settings(**sections: Any) -> Settings:
    return fast_settings(keeper={"journal_busy_timeout_s": 0.2}, **sections)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", TOPICS)


# ---- making an actor fail ----------------------------------------------------------------------


def lock_the_journal(svc: Service, recorder: Recorder, mark: int) -> None:
    """Hold the journal's write lock until the keeper's next write fails past its busy
    timeout and the keeper crashes."""
    with closing(sqlite3.connect(svc.state_dir / "journal.sqlite3", isolation_level=None, timeout=0)) as db:
        deadline = time.monotonic() + 5
        while True:  # SQLite's own busy wait sleeps and would lose every race to a busy writer
            try:
                db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:
                assert time.monotonic() < deadline, "could not take the journal's write lock"
        try:
            exited(recorder, "position_keeper", mark)
        finally:
            db.execute("ROLLBACK")


def connectors_up(svc: Service) -> list[str]:
    state = svc.ask("risk_governor", GetRiskState()) or {}
    return list(state.get("connectors_up", []))


def drop_the_session(svc: Service) -> None:
    """The venue goes down under the connector, which reports itself down (it does not
    fail: it reconnects by itself); then the venue comes back."""
    venue().down = True
    try:
        wait_for(lambda: VENUE not in connectors_up(svc), timeout_s=15, what="the connector down")
    finally:
        venue().down = False


def fail(name: str, svc: Service, recorder: Recorder) -> None:
    """Make ``name`` exit abnormally and wait until its supervisor has seen it."""
    mark = recorder.count()
    if name == "position_keeper":
        lock_the_journal(svc, recorder, mark)
    elif name == VENUE:
        drop_the_session(svc)
    else:
        poison = NO_SEVERITY if name in ("failsafe", "dashboard") else MISSING_QUOTE
        assert registry.tell(name, poison)
        exited(recorder, name, mark)


def exited(recorder: Recorder, name: str, mark: int) -> ChildExited:
    notice: ChildExited = recorder.wait_for(
        lambda m: isinstance(m, ChildExited) and m.name == name, timeout_s=15, after=mark)
    assert notice.abnormal, notice.reason
    return notice


def restored(name: str, before: Any, svc: Service) -> None:
    """``name`` resolves to a new actor, and that actor answers (the connector, whose
    session was dropped, is connected again)."""
    if name == VENUE:
        wait_for(lambda: VENUE in connectors_up(svc), timeout_s=10, what="the connector up again")
        return

    def answering() -> bool:
        ref = registry.lookup(name)
        if ref is None or ref is before:
            return False
        ref.ask(QUERIES.get(name, Ping(seq=0)), timeout=2)
        return True

    wait_for(answering, timeout_s=5, what=f"{name} restarted and answering")


def command(svc: Service, verb: str) -> str:
    """An operator command, retried while the control channel is coming back."""
    answer: list[str] = []

    def sent() -> bool:
        try:
            answer.append(str(send_command(svc.state_dir, verb, reason="fault test", timeout_s=1.0)))
        except ControlError:
            return False
        return True

    wait_for(sent, timeout_s=5, interval_s=0.05, what=f"the control channel taking {verb!r}")
    return answer[-1]


def flatten(svc: Service, recorder: Recorder) -> int:
    """Operator flatten; returns where FAILSAFE starts in the recording, once flat."""
    mark = recorder.count()
    assert "FAILSAFE" in command(svc, "flatten")
    failsafe_at = mode_index(recorder, Mode.FAILSAFE, after=mark)
    report: FailsafeReport = recorder.wait_for(
        lambda m: isinstance(m, FailsafeReport) and m.flat, timeout_s=10, after=mark)
    assert report.flat
    assert venue_positions() == {}
    return failsafe_at


# ---- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ACTORS)
def test_an_actor_killed_while_trading_is_restored(
    service: Callable[..., Service], recorder: Recorder, name: str,
) -> None:
    svc = service(settings())
    trading_has_started(minimum=3)
    before = registry.lookup(name)
    assert before is not None

    fail(name, svc, recorder)
    restored(name, before, svc)

    # the service trades again (a connector crash degrades it for a moment)
    wait_for(lambda: governor_mode(svc) == "LIVE", timeout_s=5, what="LIVE again")
    executions = len(venue_fills())
    wait_for(lambda: len(venue_fills()) >= executions + 3, timeout_s=5, what="the strategy trading again")

    assert command(svc, "pause").startswith("paused")
    assert_no_fill_lost(svc.state_dir)

    failsafe_at = flatten(svc, recorder)
    strategy_keeps_being_refused(recorder, failsafe_at)
    assert_nothing_but_the_failsafe_passed_after(recorder, failsafe_at)
    assert_no_fill_lost(svc.state_dir)


@pytest.mark.parametrize("name", ACTORS)
def test_an_actor_killed_in_failsafe_is_restored_and_failsafe_holds(
    service: Callable[..., Service], recorder: Recorder, name: str,
) -> None:
    svc = service(settings())
    trading_has_started(minimum=3)
    failsafe_at = flatten(svc, recorder)
    before = registry.lookup(name)

    fail(name, svc, recorder)
    restored(name, before, svc)

    # latched, even across a governor restart (the keeper's restarts the governor too)
    mode = wait_for(lambda: governor_mode(svc), what="the governor answering")
    assert mode == "FAILSAFE"
    strategy_keeps_being_refused(recorder, recorder.count())
    assert_nothing_but_the_failsafe_passed_after(recorder, failsafe_at)
    assert venue_positions() == {}
    assert_no_fill_lost(svc.state_dir)

    # once the venue is confirmed flat (again, if the governor restarted) an operator may reset
    wait_for(lambda: command(svc, "reset").startswith("reset"), timeout_s=5, interval_s=0.05,
             what="a reset accepted")
    wait_for(lambda: governor_mode(svc) == "LIVE", timeout_s=5, what="LIVE after the reset")
    executions = len(venue_fills())
    wait_for(lambda: len(venue_fills()) > executions, timeout_s=5, what="trading after the reset")


def test_an_outage_of_the_venue_past_max_outage_s_ends_in_failsafe(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    # Degradations alone never trip FAILSAFE here: it must come from the outage outlasting
    # max_outage_s (the connector stays up, disconnected, reconnecting by itself).
    svc = service(settings(risk={"degradations_to_failsafe": 0, "max_outage_s": 1.5}))
    trading_has_started(minimum=3)
    hold_a_position()
    mark = recorder.count()
    venue().down = True                           # every reconnect is refused

    failsafe_at = mode_index(recorder, Mode.FAILSAFE, after=mark)
    changed: ModeChanged = recorder.messages()[failsafe_at]
    assert "max_outage_s" in changed.reason, changed.reason
    assert not [m for m in recorder.messages()[mark:failsafe_at]
                if isinstance(m, SupervisorGaveUp)], "no restart storm: the outage escalated"
    assert venue_positions()                      # the venue is unreachable: still open

    venue().down = False                          # the venue returns: the failsafe finishes
    recorder.wait_for(lambda m: isinstance(m, FailsafeReport) and m.flat, timeout_s=10, after=failsafe_at)
    assert venue_positions() == {}
    assert governor_mode(svc) == "FAILSAFE"
    strategy_keeps_being_refused(recorder, recorder.count())
    assert_nothing_but_the_failsafe_passed_after(recorder, failsafe_at)
    assert_no_fill_lost(svc.state_dir)
