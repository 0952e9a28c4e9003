"""The failsafe end to end: the whole service on the paper venue, with the sample strategy
trading, is flattened at the venue by an operator command or a CRITICAL safety event, and
stays flat; the incident is written down; a resting order cannot re-open a position; a
venue that is down is flattened when it comes back."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
from collections.abc import Callable
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.risk_governor import GetRiskState
from messages import (
    FAILSAFE_SOURCE,
    FailsafeReport,
    Mode,
    ModeChanged,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    RejectReason,
    Side,
    SubmitOrder,
    TimeInForce,
)
from supervision import SUPERVISION_TOPIC, registry
from tests.helpers import wait_for
from tests.recorder import Recorder
from tradeguard.app import Service
from tradeguard.control import send_command
from tradeguard.settings import Settings, parse_settings
from venues.paper import PaperVenue, paper_venue

ACCOUNT = "PAPER-1"
VENUE = "paper"
STRATEGY = "sample"


def fast_settings(*, strategy: bool = True, engine: dict[str, Any] | None = None,
                  **sections: Any) -> Settings:
    """The paper venue and the sample strategy at test speed, with small backoffs;
    ``sections`` (``risk={...}`` ...) are merged over the defaults below."""
    connector: dict[str, Any] = {"name": VENUE, "kind": "paper", "symbols": ["AAPL", "MSFT"],
                                 "quote_interval_s": 0.02, "persist": False, "health_interval_s": 0.2}
    if engine is not None:
        connector["engine"] = engine
    data: dict[str, Any] = {
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 10.0},
        "risk": {"max_orders_per_s": 1000, "recover_after_s": 0.5},
        "failsafe": {"round_timeout_s": 0.5},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "backoff_jitter_s": 0.01,
                        "connectors_intensity": 50, "root_intensity": 20},
        "connectors": [connector],
        "strategies": [{"name": STRATEGY, "venue": VENUE, "symbols": ["AAPL", "MSFT"], "interval_s": 0.02,
                        "quantity": "10", "max_position": "50", "limit_ratio": 0.3}] if strategy else [],
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_settings(data, environ={})


TOPICS = [topics.ORDERS, topics.SUBMITTED, topics.MODE, topics.FAILSAFE, topics.SAFETY, SUPERVISION_TOPIC]


@pytest.fixture
def recorder() -> Recorder:
    """Everything that matters, recorded from before the service starts."""
    return Recorder.spawn("recorder", TOPICS)


# ---- helpers ---------------------------------------------------------------------------------


def venue() -> PaperVenue:
    """The service's paper venue (the process has one per name)."""
    return paper_venue(VENUE)


def venue_positions() -> dict[str, Decimal]:
    return {p.symbol: p.quantity for p in venue().engine.positions(ACCOUNT)}


def journal_fills(state_dir: Path) -> set[str]:
    with closing(sqlite3.connect(state_dir / "journal.sqlite3")) as db:
        return {row[0] for row in db.execute("SELECT fill_id FROM fills WHERE venue = ?", (VENUE,))}


def venue_fills() -> set[str]:
    return {f.fill_id for f in venue().engine.executions(ACCOUNT)}


def assert_no_fill_lost(state_dir: Path) -> None:
    """Every execution the venue made is in the journal, and nothing else is."""
    wait_for(lambda: journal_fills(state_dir) == venue_fills(), timeout_s=5,
             what="journal fills == venue executions")
    assert venue_fills()


def mode_index(recorder: Recorder, mode: Mode, after: int = 0) -> int:
    """Index in the recording of the first change into ``mode`` (from ``after`` on)."""
    changed = recorder.wait_for(lambda m: isinstance(m, ModeChanged) and m.current is mode,
                                timeout_s=5, after=after)
    return recorder.messages().index(changed)


def assert_nothing_but_the_failsafe_passed_after(recorder: Recorder, index: int) -> None:
    """No order other than the failsafe's went to a venue after ``index`` (the governor
    publishes every order it passes on SUBMITTED, in order with its mode changes)."""
    passed = [m for m in recorder.messages()[index:]
              if isinstance(m, SubmitOrder) and m.source != FAILSAFE_SOURCE]
    assert passed == []


def strategy_keeps_being_refused(recorder: Recorder, after: int, count: int = 5) -> None:
    """The strategy goes on sending; each order is refused with MODE."""
    def refused() -> list[Any]:
        return [m for m in recorder.messages()[after:] if isinstance(m, OrderRejected)
                and m.source == STRATEGY]

    wait_for(lambda: len(refused()) >= count, timeout_s=5, what=f"{count} refusals of the strategy")
    assert {m.reason for m in refused()} == {RejectReason.MODE}


def trading_has_started(minimum: int = 1) -> None:
    wait_for(lambda: len(venue_fills()) >= minimum and venue_positions(), timeout_s=5,
             what="the strategy holding positions at the venue")


def hold_a_position() -> None:
    """Buy 7 AAPL next to the strategy, which trades in tens: AAPL is never flat after."""
    buy_now("hold-7", "7")
    wait_for(lambda: any(f.client_order_id == "hold-7" for f in venue().engine.executions(ACCOUNT)),
             what="the 7 AAPL bought")


def incident(state_dir: Path) -> tuple[dict[str, Any], str]:
    """The (single) incident report: the JSON document and the readable summary."""
    reports = sorted((state_dir / "incidents").glob("incident-*.json"))
    assert len(reports) == 1, reports
    text = reports[0].with_suffix(".txt").read_text()
    return json.loads(reports[0].read_text()), text


def governor_mode(svc: Service) -> str | None:
    state = svc.ask("risk_governor", GetRiskState())
    return None if state is None else str(state["mode"])


def submit(order: SubmitOrder) -> None:
    """Send an order as a strategy would: to the governor."""
    assert registry.tell("risk_governor", order)


def buy_now(client_order_id: str, quantity: str, symbol: str = "AAPL") -> None:
    """A marketable immediate-or-cancel buy (priced by its limit, so the governor needs no
    mid of its own yet)."""
    quote = venue().engine.quote(symbol)
    assert quote is not None
    submit(SubmitOrder(client_order_id=client_order_id, venue=VENUE, symbol=symbol, side=Side.BUY,
                       quantity=Decimal(quantity), order_type=OrderType.LIMIT,
                       limit_price=(quote.ask * Decimal("1.01")).quantize(Decimal("0.01")),
                       time_in_force=TimeInForce.IOC,
                       source="test"))


# ---- the tests -----------------------------------------------------------------------------------


def test_operator_flatten_leaves_the_venue_flat_and_nothing_trades_after(
    service: Callable[..., Service], recorder: Recorder, tmp_path: Path,
) -> None:
    svc = service()
    trading_has_started(minimum=3)

    answer = send_command(svc.state_dir, "flatten", reason="system test", operator="tester")
    assert "FAILSAFE" in answer
    failsafe_at = mode_index(recorder, Mode.FAILSAFE)
    report: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
    assert report.flat, report.detail
    assert venue_positions() == {}
    assert venue().engine.open_orders(ACCOUNT) == []

    executions = len(venue_fills())
    strategy_keeps_being_refused(recorder, failsafe_at)
    assert_nothing_but_the_failsafe_passed_after(recorder, failsafe_at)
    assert len(venue_fills()) == executions            # nothing traded since
    assert venue_positions() == {}
    assert_no_fill_lost(svc.state_dir)
    assert send_command(svc.state_dir, "status")["mode"] == "FAILSAFE"

    document, text = incident(svc.state_dir)
    assert document["flat"] is True
    # The operator is who the operating system says sent the command, not the claimed "tester".
    operator = pwd.getpwuid(os.getuid()).pw_name
    assert document["trigger"]["source"] == "operator" and f"by {operator}" in document["trigger"]["reason"]
    kinds = [entry["kind"] for entry in document["timeline"]]
    assert "mode" in kinds and "flatten_requested" in kinds
    assert any("LIVE -> FAILSAFE" in entry["text"] for entry in document["timeline"])
    assert document["venues"][VENUE]["state"] == "flat"
    actions = [a["action"] for a in document["actions"]]
    assert actions[0] == "cancel_all_and_read_positions" and "closing_orders_sent" in actions
    assert "FLAT at every venue" in text and "timeline" in text and "operator" in text


def test_critical_safety_event_flattens_the_venue(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service()
    trading_has_started(minimum=3)
    venue().engine.inject("negative", "AAPL")         # a broken quote: CRITICAL for the monitor

    failsafe_at = mode_index(recorder, Mode.FAILSAFE)
    changed = recorder.messages()[failsafe_at]
    assert "negative_price" in changed.reason
    report: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
    assert report.flat, report.detail
    assert venue_positions() == {}
    strategy_keeps_being_refused(recorder, failsafe_at)
    assert_nothing_but_the_failsafe_passed_after(recorder, failsafe_at)
    assert venue_positions() == {}
    assert_no_fill_lost(svc.state_dir)

    document, text = incident(svc.state_dir)
    assert document["trigger"]["source"] == "safety_monitor"
    timeline = document["timeline"]
    assert any(entry["kind"] == "safety" and "negative_price" in entry["text"] for entry in timeline)
    assert "negative_price" in text


def test_a_resting_order_that_would_reopen_a_position_is_cancelled(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service(fast_settings(strategy=False))
    engine = venue().engine
    wait_for(lambda: engine.quote("AAPL") is not None and governor_mode(svc) == "LIVE",
             what="the venue quoting and the governor LIVE")
    buy_now("t-open", "10")
    wait_for(lambda: venue_positions() == {"AAPL": Decimal(10)}, what="long 10 AAPL")
    quote = engine.quote("AAPL")
    assert quote is not None
    below = (quote.bid * Decimal("0.99")).quantize(Decimal("0.01"))
    resting = SubmitOrder(client_order_id="t-rest", venue=VENUE, symbol="AAPL", side=Side.BUY,
                          quantity=Decimal(10), order_type=OrderType.LIMIT, limit_price=below,
                          time_in_force=TimeInForce.GTC, source="test")
    submit(resting)
    wait_for(lambda: engine.open_orders(ACCOUNT), what="the buy resting at the venue")

    send_command(svc.state_dir, "flatten", reason="close everything")
    report: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
    assert report.flat, report.detail
    recorder.wait_for(lambda m: isinstance(m, OrderCancelled) and m.client_order_id == "t-rest")
    assert engine.open_orders(ACCOUNT) == []
    assert venue_positions() == {}

    # the market falls through the old limit: had the order survived, it would re-open a long
    engine.set_mid("AAPL", below - Decimal(1))
    steps = venue().runner.steps
    wait_for(lambda: venue().runner.steps >= steps + 5, what="the market moving on")
    assert venue_positions() == {}
    assert not [m for m in recorder.messages(OrderFilled) if m.client_order_id == "t-rest"]
    assert_no_fill_lost(svc.state_dir)


def test_cancel_then_close_race_ends_flat(service: Callable[..., Service], recorder: Recorder) -> None:
    # Orders and cancels take effect 30 ms late: the mass cancel is still in flight when the
    # positions are read and the closing order is sent, and a resting sell becomes marketable
    # meanwhile. Whatever happens first, the failsafe must end with the venue flat.
    svc = service(fast_settings(strategy=False, engine={"latency_ms": 30}))
    engine = venue().engine
    wait_for(lambda: engine.quote("AAPL") is not None and governor_mode(svc) == "LIVE",
             what="the venue quoting and the governor LIVE")
    buy_now("r-open", "10")
    wait_for(lambda: venue_positions() == {"AAPL": Decimal(10)}, what="long 10 AAPL")
    quote = engine.quote("AAPL")
    assert quote is not None
    above = (quote.ask * Decimal("1.01")).quantize(Decimal("0.01"))
    submit(SubmitOrder(client_order_id="r-rest", venue=VENUE, symbol="AAPL", side=Side.SELL,
                       quantity=Decimal(20), order_type=OrderType.LIMIT, limit_price=above,
                       time_in_force=TimeInForce.GTC, source="test"))
    wait_for(lambda: engine.open_orders(ACCOUNT), what="the sell resting at the venue")

    engine.set_mid("AAPL", above + Decimal(1))       # the next step makes the sell marketable
    send_command(svc.state_dir, "flatten", reason="race")
    report: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
    assert report.flat, report.detail
    assert venue_positions() == {}
    assert engine.open_orders(ACCOUNT) == []
    steps = venue().runner.steps
    wait_for(lambda: venue().runner.steps >= steps + 5, what="the market moving on")
    assert venue_positions() == {}
    assert_no_fill_lost(svc.state_dir)


def test_a_venue_that_is_down_is_flattened_when_it_comes_back(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service()
    trading_has_started(minimum=3)
    hold_a_position()
    mark = recorder.count()
    venue().down = True                               # the venue drops the session
    wait_for(lambda: VENUE not in (svc.ask("risk_governor", GetRiskState()) or {}).get(
        "connectors_up", [VENUE]), what="the connector down")

    send_command(svc.state_dir, "flatten", reason="venue outage")
    failsafe_at = mode_index(recorder, Mode.FAILSAFE, after=mark)
    first: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
    assert not first.flat and f"{VENUE}: down" in first.detail
    assert venue_positions()                          # still open: nobody could reach the venue

    venue().down = False                              # back: the connector reconnects
    second: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport) and m.flat,
                                               timeout_s=10, after=recorder.messages().index(first) + 1)
    assert second.flat
    assert venue_positions() == {}
    assert venue().engine.open_orders(ACCOUNT) == []
    strategy_keeps_being_refused(recorder, failsafe_at)
    assert_nothing_but_the_failsafe_passed_after(recorder, failsafe_at)
    assert_no_fill_lost(svc.state_dir)
