"""The risk governor restarted by its supervisor (a new generation, the same process and
journal) comes back as it was: the mode, the degradations in the window, the open incidents,
each venue's outage clock and mismatch; and the restart is itself an alert, counted once.
A new process (a new tree) starts afresh, as it always did. The clock is a fake one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from actors import topics
from actors.journal import Journal
from actors.risk_governor import RiskGovernor
from messages import ConnectorDown, ConnectorUp, Mode, OperatorVerb, Reconciliation, RejectReason, now_ns
from supervision import NO_BACKOFF, SUPERVISION_TOPIC, ChildSpec, ChildStarted, Tree
from tests.unit.test_risk_checks import UNLIMITED, VENUE, VENUES, Clock, Harness, limits, order


@pytest.fixture
def governor(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def start(config: object = UNLIMITED, clock: Clock | None = None) -> Harness:
        harness = Harness(tmp_path, config, clock or Clock())  # type: ignore[arg-type]
        made.append(harness)
        return harness

    yield start
    for harness in made:
        harness.tree.stop(timeout_s=5)


def incident_rows(state_dir: Path) -> list[tuple[str, str, str, int, int]]:
    """(kind, venue, symbol, open, counted) of every journaled incident, oldest first."""
    with closing(sqlite3.connect(state_dir / "journal.sqlite3")) as db:
        rows = db.execute("SELECT kind, venue, symbol, closed_ns = 0, counted FROM incidents ORDER BY id")
        return [(str(k), str(v), str(s), int(o), int(c)) for k, v, s, o, c in rows.fetchall()]


def new_process(gov: Harness) -> None:
    """The service stops and starts again: a new tree, whose governor is a first start."""
    gov.tree.stop(timeout_s=5)
    spec = ChildSpec(name="risk_governor", actor_class=RiskGovernor, args=(gov.config, gov.state_dir, VENUES),
                     kwargs={"clock": gov.clock, "tick_s": 3600.0})
    gov.tree = Tree([spec], name=f"root-{id(gov)}-again", backoff=NO_BACKOFF, intensity=10)
    gov.tree.start(timeout_s=5)


def test_a_governor_restarted_while_degraded_comes_back_degraded_with_its_incidents(
        governor: Callable[..., Harness]) -> None:
    gov = governor(limits(degradations_to_failsafe=5, recover_after_s=10.0, incident_quiet_s=60.0))
    gov.live()
    gov.warning("price_spike")
    assert gov.mode() is Mode.DEGRADED
    assert gov.submit(order("buy", "10")) is RejectReason.REDUCE_ONLY     # adds exposure: refused

    gov.restart()

    state = gov.state()
    assert state["mode"] == "DEGRADED"
    assert state["open_incidents"] == [f"price_spike {VENUE}"]
    assert state["degradations_in_window"] == 2                     # the spike and the restart
    assert len(state["core_restarts"]) == 1 and "risk_governor" in state["core_restarts"][0]
    assert state["core_restarts_total"] == 1
    # the same finding again is the same incident: nothing more is counted
    gov.warning("price_spike")
    assert gov.state()["degradations_in_window"] == 2
    # connected and reconciled again, it stays DEGRADED until the quiet time has passed
    gov.connector_up()
    gov.tick()
    assert gov.mode() is Mode.DEGRADED
    assert gov.submit(order("buy", "10")) is RejectReason.REDUCE_ONLY
    gov.clock.advance(10.0)
    gov.tick()
    assert gov.mode() is Mode.LIVE
    assert incident_rows(gov.state_dir) == [
        ("service_start", "", "", 0, 0), ("price_spike", VENUE, "", 1, 1),
        ("core_restart", "", "risk_governor", 0, 1)]


def test_the_restart_that_fills_the_window_escalates(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(degradations_to_failsafe=3, incident_quiet_s=60.0))
    gov.live()
    gov.warning("price_spike")
    gov.warning("wide_spread")
    assert gov.state()["degradations_in_window"] == 2
    mark = len(gov.flatten_requests())

    gov.restart()

    assert gov.mode() is Mode.FAILSAFE
    assert gov.flatten_requests(after=mark)


def test_a_venue_outage_keeps_its_clock_across_a_restart(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(max_outage_s=30.0, degradations_to_failsafe=0))
    gov.live()
    gov.publish(topics.CONNECTORS, ConnectorDown(name=VENUE, reason="session lost"))

    gov.restart()

    state = gov.state()
    assert state["venue_states"][VENUE] == "HALTED" and state["open_incidents"] == [f"venue_down {VENUE}"]
    assert VENUE in state["venue_outages_s"]
    assert state["mode"] == "DEGRADED"               # its only venue down: DEGRADED, and so it stays
    gov.clock.advance(29.0)
    gov.tick()
    assert gov.mode() is Mode.DEGRADED
    gov.clock.advance(2.0)                           # past max_outage_s since the outage began
    gov.tick()
    assert gov.mode() is Mode.FAILSAFE


def test_a_venue_whose_last_reconciliation_mismatched_stays_halted_after_a_restart(
        governor: Callable[..., Harness]) -> None:
    gov = governor(limits(degradations_to_failsafe=0))
    gov.live()
    mismatch = Reconciliation(venue=VENUE, reconciled=False, mismatches=("AAPL: journal 0, venue 7",),
                              ts_ns=now_ns())
    with Journal(gov.state_dir / "journal.sqlite3") as journal:   # as the position keeper does
        journal.record_reconciliation(mismatch)
    gov.publish(topics.PORTFOLIO, mismatch)
    assert gov.state()["venue_states"][VENUE] == "HALTED"

    gov.restart()
    gov.publish(topics.CONNECTORS, ConnectorDown(name=VENUE, reason="connector stopped", lost=False))
    gov.publish(topics.CONNECTORS, ConnectorUp(name=VENUE))   # the restarted connector: no reconciliation yet

    state = gov.state()
    assert state["venue_states"][VENUE] == "HALTED"
    assert state["venue_reasons"][VENUE] == "reconciliation mismatch"
    assert state["mode"] == "DEGRADED"              # its only venue halted
    assert gov.submit(order("sell", "1", reduce_only=True)) is RejectReason.VENUE_HALTED
    gov.publish(topics.PORTFOLIO, Reconciliation(venue=VENUE, reconciled=True, ts_ns=now_ns()))
    assert gov.state()["venue_states"][VENUE] == "ACTIVE"
    gov.clock.advance(gov.config.recover_after_s)
    gov.tick()
    assert gov.mode() is Mode.LIVE


def test_a_failsafe_restart_is_an_alert_counted_once(governor: Callable[..., Harness]) -> None:
    gov = governor(limits(incident_quiet_s=60.0))
    gov.live()
    started = ChildStarted(supervisor="root", name="failsafe", generation=1)
    gov.publish(SUPERVISION_TOPIC, started)
    gov.publish(SUPERVISION_TOPIC, started)           # the same notice again: one restart
    state = gov.state()
    assert state["mode"] == "LIVE"                    # an alert and a count, not a degradation of the mode
    assert state["degradations_in_window"] == 1 and state["core_restarts_total"] == 1
    assert "failsafe" in state["core_restarts"][0]
    # the safety monitor, after it in the tree, restarts along: recorded, not counted again
    gov.publish(SUPERVISION_TOPIC, ChildStarted(supervisor="root", name="safety_monitor", generation=1))
    state = gov.state()
    assert state["degradations_in_window"] == 1 and state["core_restarts_total"] == 2
    assert "along" in state["core_restarts"][1]
    # a later crash of its own counts
    gov.clock.advance(61.0)
    gov.publish(SUPERVISION_TOPIC, ChildStarted(supervisor="root", name="safety_monitor", generation=2))
    state = gov.state()
    assert state["degradations_in_window"] == 2 and state["core_restarts_total"] == 3


def test_a_new_process_starts_afresh_and_closes_what_the_last_run_left_open(
        governor: Callable[..., Harness]) -> None:
    gov = governor(limits(incident_quiet_s=60.0))
    gov.live()
    gov.warning("price_spike")
    assert gov.mode() is Mode.DEGRADED

    new_process(gov)
    gov.connector_up()

    state = gov.state()
    assert state["mode"] == "LIVE" and state["open_incidents"] == [] and state["core_restarts"] == []
    assert [row[3] for row in incident_rows(gov.state_dir)] == [0, 0, 0]   # nothing left open
    # and a restart after that restores this run only
    gov.restart()
    assert gov.state()["open_incidents"] == []



def test_an_operator_pause_survives_a_restart_and_a_resume_is_not_undone(
        governor: Callable[..., Harness]) -> None:
    gov = governor()
    gov.live()
    assert gov.operator(OperatorVerb.PAUSE).startswith("paused")

    gov.restart()
    gov.live()
    assert gov.state()["paused"] is True
    assert gov.submit(order("buy", "1")) is RejectReason.PAUSED

    assert gov.operator(OperatorVerb.RESUME) == "resumed"
    gov.restart()
    gov.live()
    assert gov.state()["paused"] is False
    assert gov.submit(order("buy", "1")) is None
