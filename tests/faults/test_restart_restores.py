"""A crash never upgrades the mode: core actors made to fail while the service, trading on
the paper venue, is DEGRADED or holds a venue HALTED. Their supervisor restarts them (and,
rest_for_one, every sibling after them); the mode, the incidents and the venue's state come
back as they were, never LIVE by default, and the restart is an alert in the status.

The failures are real abnormal exits, as in ``test_kill_actors``: a message the actor
cannot handle, or the journal refusing the position keeper's write. The anomalies are the
venue's own: a price spike in its feed (the safety monitor raises it), a trade the venue
busts without telling anybody (the position keeper finds the mismatch).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from messages import GetRiskState, Mode, ModeChanged, OrderFilled
from supervision import registry
from tests.faults.test_kill_actors import fail, restored
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.test_failsafe_paper import (
    ACCOUNT,
    TOPICS,
    VENUE,
    fast_settings,
    trading_has_started,
    venue,
)
from tradeguard.app import Service
from tradeguard.control import send_command
from tradeguard.settings import Settings

pytestmark = pytest.mark.timeout(120)


def settings() -> Settings:
    # A quiet time long enough that nothing recovers during a test: whatever the mode is
    # after the restart, it is the restored one.
    return fast_settings(
        keeper={"journal_busy_timeout_s": 0.2, "reconcile_interval_s": 0.2, "mismatch_recheck_s": 0.05},
        risk={"recover_after_s": 60.0, "incident_quiet_s": 120.0, "degradations_to_failsafe": 10},
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", TOPICS)


def risk(svc: Service) -> dict[str, Any]:
    state = svc.ask("risk_governor", GetRiskState())
    return dict(state) if state else {}


def status_risk(svc: Service) -> dict[str, Any]:
    """The ``risk`` section of ``tradeguard status --json`` (retried while the dashboard,
    restarted along with the others, comes back)."""
    found: list[dict[str, Any]] = []

    def answered() -> bool:
        try:
            document = send_command(svc.state_dir, "status", timeout_s=1.0)
        except Exception:
            return False
        if not document.get("risk"):
            return False
        found.append(document["risk"])
        return True

    wait_for(answered, timeout_s=10, interval_s=0.05, what="the status document")
    return found[-1]


def journaled_restarts(state_dir: Path) -> list[tuple[str, int]]:
    """(actor, counted) of the core actor restarts in the journal."""
    with closing(sqlite3.connect(state_dir / "journal.sqlite3")) as db:
        rows = db.execute("SELECT symbol, counted FROM incidents WHERE kind = 'core_restart' ORDER BY id")
        return [(str(s), int(c)) for s, c in rows.fetchall()]


def modes_after(recorder: Recorder, mark: int) -> list[tuple[Mode, Mode]]:
    return [(m.previous, m.current) for m in recorder.messages()[mark:] if isinstance(m, ModeChanged)]


def watch(svc: Service, seconds: float) -> list[dict[str, Any]]:
    """The governor's state, polled for ``seconds`` (each answer a barrier of its own)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = risk(svc)
        if state:
            seen.append(state)
        time.sleep(0.05)
    return seen


def degraded_by_a_spike(svc: Service) -> None:
    """The venue's AAPL mid jumps 30 %: the safety monitor raises a WARNING price spike,
    which degrades."""
    venue().engine.inject("spike", "AAPL")
    wait_for(lambda: risk(svc).get("mode") == "DEGRADED", timeout_s=10, what="DEGRADED by the spike")
    assert f"price_spike {VENUE}/AAPL" in risk(svc)["open_incidents"]


def halted_by_a_mismatch(svc: Service) -> None:
    """The venue busts one of the strategy's fills and tells nobody: its positions no
    longer match the journal's, the keeper confirms the mismatch, the venue halts."""
    fills: list[OrderFilled] = [f for f in venue().engine.executions(ACCOUNT) if f.symbol == "AAPL"]
    assert fills
    venue().engine.bust(ACCOUNT, fills[-1].fill_id)
    wait_for(lambda: risk(svc).get("venue_reasons", {}).get(VENUE) == "reconciliation mismatch",
             timeout_s=10, what="the venue HALTED on the mismatch")
    wait_for(lambda: risk(svc).get("mode") == "DEGRADED", timeout_s=5, what="DEGRADED by the mismatch")


# ---- the tests -----------------------------------------------------------------------------------


def test_a_governor_killed_while_degraded_comes_back_degraded_with_its_incidents(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service(settings())
    trading_has_started(minimum=3)
    degraded_by_a_spike(svc)
    before = registry.lookup("risk_governor")
    counted_before = risk(svc)["degradations_in_window"]
    mark = recorder.count()

    fail("risk_governor", svc, recorder)
    restored("risk_governor", before, svc)

    wait_for(lambda: VENUE in risk(svc).get("connectors_up", []), timeout_s=10, what="the venue back")
    seen = watch(svc, 2.0)
    assert {s["mode"] for s in seen} == {"DEGRADED"}
    state = seen[-1]
    assert f"price_spike {VENUE}/AAPL" in state["open_incidents"]
    assert state["degradations_in_window"] >= counted_before + 1       # the restart counts too
    assert modes_after(recorder, mark)[0] == (Mode.STARTUP, Mode.DEGRADED)
    assert all(current is not Mode.LIVE for _, current in modes_after(recorder, mark))
    # the restart is an alert in the status, and in the journal
    # the failsafe and the safety monitor restarted along with it: recorded, not counted again
    wait_for(lambda: len(journaled_restarts(svc.state_dir)) == 3, timeout_s=5, what="3 restarts journaled")
    assert journaled_restarts(svc.state_dir) == [("risk_governor", 1), ("failsafe", 0), ("safety_monitor", 0)]
    alerts = status_risk(svc)["core_restarts"]
    assert "risk_governor" in alerts[0] and len(alerts) == 3


def test_a_safety_monitor_killed_while_a_venue_is_halted_comes_back_with_the_venue_halted(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service(settings())
    trading_has_started(minimum=3)
    halted_by_a_mismatch(svc)
    before = registry.lookup("safety_monitor")
    mark = recorder.count()

    fail("safety_monitor", svc, recorder)   # rest_for_one: the connector restarts with it
    restored("safety_monitor", before, svc)

    wait_for(lambda: VENUE in risk(svc).get("connectors_up", []), timeout_s=10, what="the venue back")
    seen = watch(svc, 2.0)                   # a reconciliation every 0.2 s: several after the reconnect
    assert {s["venue_states"][VENUE] for s in seen} == {"HALTED"}
    assert seen[-1]["venue_reasons"][VENUE] == "reconciliation mismatch"
    assert {s["mode"] for s in seen} == {"DEGRADED"}
    assert all(current is not Mode.LIVE for _, current in modes_after(recorder, mark))
    assert journaled_restarts(svc.state_dir) == [("safety_monitor", 1)]
    alerts = status_risk(svc)["core_restarts"]
    assert len(alerts) == 1 and "safety_monitor" in alerts[0]


def test_a_keeper_killed_while_a_venue_is_unreconciled_does_not_report_live(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service(settings())
    trading_has_started(minimum=3)
    halted_by_a_mismatch(svc)
    before = registry.lookup("position_keeper")
    mark = recorder.count()

    fail("position_keeper", svc, recorder)  # rest_for_one: everything after it restarts too
    restored("position_keeper", before, svc)

    wait_for(lambda: VENUE in risk(svc).get("connectors_up", []), timeout_s=10, what="the venue back")
    seen = watch(svc, 2.0)
    assert {s["mode"] for s in seen} == {"DEGRADED"}
    assert {s["venue_states"][VENUE] for s in seen} == {"HALTED"}
    assert all(current is not Mode.LIVE for _, current in modes_after(recorder, mark))
    assert f"reconciliation_mismatch {VENUE}/AAPL" in seen[-1]["open_incidents"]
    # one crash, the keeper's, which took the others with it: counted once
    wait_for(lambda: len(journaled_restarts(svc.state_dir)) == 4, timeout_s=5, what="4 restarts journaled")
    assert journaled_restarts(svc.state_dir) == [
        ("position_keeper", 1), ("risk_governor", 0), ("failsafe", 0), ("safety_monitor", 0)]
    alerts = status_risk(svc)
    assert alerts["core_restarts_total"] == 4
    assert "position_keeper" in alerts["core_restarts"][0]


def test_a_failsafe_killed_while_trading_is_an_alert_counted_once_and_the_mode_stays(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service(settings())
    trading_has_started(minimum=3)
    wait_for(lambda: risk(svc).get("mode") == "LIVE", timeout_s=10, what="LIVE")
    before = registry.lookup("failsafe")
    counted_before = risk(svc)["degradations_in_window"]
    mark = recorder.count()

    fail("failsafe", svc, recorder)
    restored("failsafe", before, svc)

    # the safety monitor, after it in the tree, restarts along with it: recorded, not counted
    wait_for(lambda: risk(svc).get("core_restarts_total") == 2, timeout_s=10, what="the restarts recorded")
    state = risk(svc)
    assert "failsafe" in state["core_restarts"][0]
    assert state["degradations_in_window"] == counted_before + 1
    assert journaled_restarts(svc.state_dir) == [("failsafe", 1), ("safety_monitor", 0)]
    assert "failsafe" in status_risk(svc)["core_restarts"][0]
    # the governor was not restarted: no mode change came from the failsafe's restart
    # (its connector restarts along with it, so the venue may halt for a moment: DEGRADED)
    assert all(current in (Mode.DEGRADED, Mode.LIVE) for _, current in modes_after(recorder, mark))
