"""The backstop behind the boundary checks: should a poison value ever get past them, the
core actors crash on it again after every restart; once the root gives up, the FAILSAFE
latch is in the journal, so the next start comes up latched and flattens the venue. Never
a silent exit with positions open."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import topics
from actors.position_keeper import GetPortfolio
from actors.risk_governor import GetRiskState
from messages import Mode, Quote, QuoteBatch, Side
from supervision import bus, registry
from tests.helpers import wait_for
from tests.system.test_failsafe_paper import ACCOUNT, VENUE, buy_now, venue, venue_positions
from tradeguard.app import Service
from tradeguard.settings import Settings, parse_settings

POISON = Decimal("1e999999999")
"""Finite, and past any arithmetic: a mid of it raises ``decimal.Overflow``."""


def settings() -> Settings:
    """The paper venue, persisted in the state directory (it outlives the first service),
    a root that gives up after 3 restarts, and no strategy."""
    return parse_settings({
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 10.0},
        "risk": {"max_orders_per_s": 1000},
        "failsafe": {"round_timeout_s": 0.5},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "backoff_jitter_s": 0.01,
                        "root_intensity": 3, "root_period_s": 120.0},
        "connectors": [{"name": VENUE, "kind": "paper", "symbols": ["AAPL", "MSFT"],
                        "quote_interval_s": 0.02, "persist": True, "health_interval_s": 0.2}],
        "strategies": [],
    }, environ={})


def poisoned_batch() -> QuoteBatch:
    """A batch whose quote has an absurd bid, as a bug past the boundary checks would let
    through: built valid, then overwritten behind the checks' back."""
    quote = Quote(venue=VENUE, symbol="AAPL", bid=Decimal(100), ask=Decimal(101),
                  bid_size=Decimal(1), ask_size=Decimal(1))
    msgspec.structs.force_setattr(quote, "bid", POISON)
    return QuoteBatch(venue=VENUE, quotes=(quote,))


def journaled_modes(state_dir: Path) -> list[tuple[str, str, str]]:
    with closing(sqlite3.connect(state_dir / "journal.sqlite3")) as db:
        return list(db.execute("SELECT previous, current, reason FROM mode_log ORDER BY id"))


def mode_of(service: Service) -> Any:
    return (service.ask("risk_governor", GetRiskState()) or {}).get("mode")


@pytest.mark.timeout(120)
def test_a_poison_that_crash_loops_the_core_latches_failsafe_and_the_next_start_flattens(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    first = Service(settings(), state_dir)
    try:
        first.start()
        wait_for(lambda: mode_of(first) == "LIVE", 10.0, what="LIVE")
        buy_now("hold-7", "7")
        wait_for(lambda: venue_positions().get("AAPL") == Decimal(7), 10.0, what="7 AAPL held at the venue")
        wait_for(lambda: any(p.quantity == 7 for p in first.ask("position_keeper", GetPortfolio()).positions),
                 10.0, what="the fill journaled")

        # The poison goes to every market data subscriber again and again, as a venue would
        # resend it, until the root gives up.
        for _ in range(200):
            if first.escalated.wait(0.1):
                break
            if registry.lookup("risk_governor") is not None:
                bus.publish(topics.MARKET, poisoned_batch())
        assert first.escalated.is_set(), "the root never gave up"
        assert "risk_governor" in first.escalation_reason or "restarts" in first.escalation_reason
    finally:
        first.stop()

    # The latch is in the journal: the last transition is into FAILSAFE, naming the cause
    # (the core actors' restarts counted as degradations may have latched it first).
    modes = journaled_modes(state_dir)
    last = modes[-1]
    assert last[1] == str(Mode.FAILSAFE), modes
    assert "the supervision tree gave up" in last[2] or "restarted" in last[2], last

    # The next start (systemd restarting the service) comes up latched and flattens the
    # position the first one left open (the paper venue's account was saved with it).
    second = Service(settings(), state_dir)
    try:
        second.start()
        assert mode_of(second) == "FAILSAFE"
        wait_for(lambda: not venue_positions(), 20.0, what="the venue flattened by the failsafe")
        sold = [f for f in venue().engine.executions(ACCOUNT) if f.side is Side.SELL]
        assert sum(f.quantity for f in sold if f.symbol == "AAPL") == Decimal(7)
        assert mode_of(second) == "FAILSAFE"  # latched until an operator reset
    finally:
        second.stop()


def test_the_latch_is_journaled_once_and_a_failing_journal_does_not_stop_the_escalation(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    service = Service(settings(), state_dir)  # never started: the handler alone
    service._on_escalation("4 restarts within 120s")
    service._on_escalation("root supervisor stopped without a stop request")
    assert [m[:2] for m in journaled_modes(state_dir)] == [("STARTUP", "FAILSAFE")]
    assert service.escalated.is_set()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "journal.sqlite3").mkdir()  # no journal can be opened there
    other = Service(settings(), broken)
    other._on_escalation("gave up")
    assert other.escalated.is_set() and other.escalation_reason == "gave up"
