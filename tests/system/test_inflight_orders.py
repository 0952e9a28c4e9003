"""Every order reaches exactly one terminal state: an order lost in flight at a FIX, ZeroMQ
or IB venue (real sessions over loopback) ends within ``inflight_timeout_s x
(inflight_retries + 1)`` plus slack, by the venue's answer to the status queries
("unknown order": rejected) or, when the venue never answers them, by the policy
(cancelled "lost in flight"); its journal row is terminal, the governor no longer counts it
as working, and a WARNING is raised. An order the venue answers late is resolved by the
answer, not by the policy."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.risk_governor import GetRiskState
from messages import (
    OrderCancelled,
    OrderRejected,
    OrderType,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    TimeInForce,
    VenuePositions,
)
from supervision import registry
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.processes import free_port
from tradeguard.app import Service
from tradeguard.settings import Settings, parse_settings
from venues.engine import EngineConfig, EngineRunner, VenueEngine
from venues.fix_venue import FixBehaviour, FixVenue
from venues.paper import paper_venue
from venues.tws_behaviour import TwsBehaviour
from venues.tws_venue import TwsVenue
from venues.zmq_venue import ZmqBehaviour, ZmqVenue

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 0.5
RETRIES = 2
SLACK_S = 8.0  # a loaded machine; the bound itself is timeout x (retries + 1) = 1.5 s
VENUE = "v"
ACCOUNTS = {"fix": "TRADEGUARD", "zmq": "zmq", "ibkr": "DU000001"}


@dataclass
class Running:
    """A simulated venue on loopback and the connector settings that reach it."""

    kind: str
    connector: dict[str, Any]
    dropped: Callable[[], list[str]]
    status_ignored: Callable[[], int]


def make_engine(latency_ms: int = 0) -> VenueEngine:
    return VenueEngine("sim", EngineConfig(symbols={"AAPL": Decimal("190")}, volatility_bps=Decimal(0),
                                           depth=Decimal(100), seed=5, latency_ms=latency_ms))


@pytest.fixture
def stoppers() -> Iterator[list[Callable[[], object]]]:
    """Venues and runners a test starts, stopped after the service (asked for before
    ``service``, so torn down after it)."""
    things: list[Callable[[], object]] = []
    yield things
    for stop in reversed(things):
        stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", [topics.ORDERS, topics.SAFETY, topics.POSITIONS])


def start_venue(kind: str, engine: VenueEngine, state_dir: Path, stoppers: list[Callable[[], object]],
                *, drop: bool, answer_status: bool = True) -> Running:
    runner = EngineRunner(engine, interval_s=0.02)
    runner.start()
    stoppers.append(runner.stop)
    common: dict[str, Any] = {"name": VENUE, "kind": kind, "inflight_timeout_s": TIMEOUT_S,
                              "inflight_retries": RETRIES, "health_interval_s": 0.2}
    if kind == "fix":
        port = free_port()
        fix_venue = FixVenue(engine, port, state_dir, behaviour=FixBehaviour.standard(
            drop_rate=1.0 if drop else 0.0, answer_status=answer_status))
        fix_venue.start()
        stoppers.append(fix_venue.stop)
        return Running(kind, {**common, "port": port, "heartbeat_s": 1, "connect_timeout_s": 3.0},
                       lambda: list(fix_venue.dropped),
                       lambda: fix_venue.misbehaviours.get("status_ignored", 0))
    if kind == "zmq":
        zmq_venue = ZmqVenue(engine, heartbeat_s=0.1, behaviour=ZmqBehaviour(
            drop_rate=1.0 if drop else 0.0, answer_status=answer_status))
        zmq_venue.start()
        stoppers.append(zmq_venue.stop)
        return Running(kind, {**common, "market_endpoint": zmq_venue.market_endpoint,
                              "order_endpoint": zmq_venue.order_endpoint, "connect_timeout_s": 2.0},
                       lambda: list(zmq_venue.dropped),
                       lambda: zmq_venue.misbehaviours.get("status_ignored", 0))
    assert kind == "ibkr"
    tws = TwsVenue(engine, behaviour=TwsBehaviour(drop_order_rate=1.0 if drop else 0.0,
                                                  ignore_completed_orders=not answer_status))
    tws.start()
    stoppers.append(tws.stop)
    # IB requests go one at a time: a status query whose completed-orders request is never
    # answered holds the next one back until it times out (below the in-flight timeout).
    return Running(kind, {**common, "port": tws.port, "client_id": 7, "connect_timeout_s": 3.0,
                          "request_timeout_s": TIMEOUT_S * 0.8},
                   lambda: [f"order {order_id}" for _, order_id in tws.dropped_orders],
                   lambda: tws.completed_orders_ignored)


def settings_for(connector: dict[str, Any]) -> Settings:
    return parse_settings({
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 15.0},
        "risk": {"max_orders_per_s": 1000, "recover_after_s": 0.5},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.3, "backoff_jitter_s": 0.01,
                        "connectors_intensity": 200, "root_intensity": 20},
        "connectors": [{"symbols": ["AAPL"], **connector}],
        "strategies": [],
    }, environ={})


def risk_state(svc: Service) -> dict[str, Any]:
    state = svc.ask("risk_governor", GetRiskState())
    assert isinstance(state, dict)
    return state


def buy(engine: VenueEngine, coid: str) -> None:
    """A marketable limit buy (it fills at once wherever it arrives)."""
    wait_for(lambda: engine.quote("AAPL") is not None, what="a quote")
    quote = engine.quote("AAPL")
    assert quote is not None
    assert registry.tell("risk_governor", SubmitOrder(
        client_order_id=coid, venue=VENUE, symbol="AAPL", side=Side.BUY, quantity=Decimal(3),
        order_type=OrderType.LIMIT, limit_price=(quote.ask * Decimal("1.01")).quantize(Decimal("0.01")),
        time_in_force=TimeInForce.DAY, source="test"))


def journal_row(state_dir: Path, coid: str) -> tuple[str, str] | None:
    with closing(sqlite3.connect(state_dir / "journal.sqlite3")) as db:
        row = db.execute("SELECT status, status_text FROM orders WHERE client_order_id = ?",
                         (coid,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def start(kind: str, engine: VenueEngine, tmp_path: Path, stoppers: list[Callable[[], object]],
          service: Callable[..., Service], **venue: Any) -> tuple[Running, Service]:
    running = start_venue(kind, engine, tmp_path / "venue", stoppers, **venue)
    svc = service(settings_for(running.connector))
    wait_for(lambda: risk_state(svc).get("mode") == "LIVE", timeout_s=30, what="the governor LIVE")
    return running, svc


def ended(recorder: Recorder, coid: str) -> list[OrderRejected | OrderCancelled]:
    return [m for m in recorder.messages() if isinstance(m, (OrderRejected, OrderCancelled))
            and m.client_order_id == coid]


# ---- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "answer_status"), [
    ("fix", True), ("fix", False), ("zmq", True), ("zmq", False), ("ibkr", True), ("ibkr", False),
])
def test_an_order_dropped_in_flight_ends_once_journal_and_governor_follow(
    stoppers: list[Callable[[], object]], service: Callable[..., Service], recorder: Recorder,
    tmp_path: Path, kind: str, answer_status: bool,
) -> None:
    engine = make_engine()
    running, svc = start(kind, engine, tmp_path, stoppers, service, drop=True, answer_status=answer_status)
    buy(engine, "lost-1")
    sent = time.monotonic()
    wait_for(lambda: len(running.dropped()) == 1, timeout_s=10, what="the order dropped at the venue")

    end = wait_for(lambda: ended(recorder, "lost-1"), timeout_s=TIMEOUT_S * (RETRIES + 1) + SLACK_S,
                   what="the order's terminal event")
    took = time.monotonic() - sent
    assert isinstance(end, list)
    [event] = end
    if answer_status:
        # The venue's answer to the first query ("unknown order") ends it: rejected.
        assert isinstance(event, OrderRejected), event
        assert "unknown" in event.text or "never reached" in event.text
        alert_kind, status = "order_lost", "rejected"
    else:
        # No answer to any query: the policy ends it after the retries, not before.
        assert isinstance(event, OrderCancelled), event
        assert event.text.startswith(f"lost in flight: no answer to {RETRIES} status queries")
        assert took >= TIMEOUT_S * (RETRIES + 1) * 0.9
        assert running.status_ignored() == RETRIES  # the queries reached the venue
        alert_kind, status = "order_lost_in_flight", "cancelled"
        # The venue is reconciled at once: its positions were asked for and reported.
        recorder.wait_for(lambda m: isinstance(m, VenuePositions) and m.request_id == "inflight-lost-1",
                          timeout_s=5)
    alert = recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.kind == alert_kind, timeout_s=5)
    assert alert.severity is Severity.WARNING and alert.venue == VENUE and "lost-1" in alert.detail

    row = wait_for(lambda: (r := journal_row(svc.state_dir, "lost-1")) and r[0] != "pending" and r,
                   timeout_s=5, what="the journal row terminal")
    assert isinstance(row, tuple) and row[0] == status and row[1] == event.text
    wait_for(lambda: risk_state(svc)["working_orders"] == 0, timeout_s=5,
             what="the governor no longer counting the order")
    # Exactly one terminal state, whatever arrives later (the cancel the policy sent, a
    # reconnect's status queries): nothing more is said of the order.
    time.sleep(TIMEOUT_S * 2)  # room for a second, wrong, resolution to show up
    assert len(ended(recorder, "lost-1")) == 1
    assert engine.positions(ACCOUNTS[kind]) == []


@pytest.mark.parametrize("kind", ["fix", "zmq", "ibkr"])
def test_an_order_the_venue_answers_late_is_resolved_by_the_answer(
    stoppers: list[Callable[[], object]], service: Callable[..., Service], recorder: Recorder,
    tmp_path: Path, kind: str,
) -> None:
    # The engine takes 1.2 s to put an order on the book: the first status queries find it
    # received and pending, and its acknowledgement and fill come after the timeout.
    engine = make_engine(latency_ms=1200)
    running, svc = start(kind, engine, tmp_path, stoppers, service, drop=False)
    buy(engine, "late-1")
    row = wait_for(lambda: (r := journal_row(svc.state_dir, "late-1")) and r[0] == "filled" and r,
                   timeout_s=15, what="the order filled in the journal")
    assert isinstance(row, tuple)
    assert ended(recorder, "late-1") == []
    assert not [m for m in recorder.messages(SafetyEvent) if m.kind.startswith("order_lost")]
    assert {p.symbol: p.quantity for p in engine.positions(ACCOUNTS[kind])} == {"AAPL": Decimal(3)}
    wait_for(lambda: risk_state(svc)["working_orders"] == 0, timeout_s=5, what="nothing working")
    assert running.dropped() == []


def test_a_paper_order_waiting_out_the_engine_latency_is_not_given_up(
    service: Callable[..., Service], recorder: Recorder,
) -> None:
    # The paper engine holds the order 1.2 s: the status queries find it received (not at
    # the book yet), which is no answer; the acknowledgement and the fill resolve it.
    svc = service(settings_for({
        "name": VENUE, "kind": "paper", "persist": False, "quote_interval_s": 0.02,
        "inflight_timeout_s": TIMEOUT_S, "inflight_retries": 6,
        "engine": {"symbols": {"AAPL": "190"}, "volatility_bps": "0", "latency_ms": 1200},
    }))
    wait_for(lambda: risk_state(svc).get("mode") == "LIVE", timeout_s=30, what="the governor LIVE")
    engine = paper_venue(VENUE).engine
    buy(engine, "late-paper")
    sent = time.monotonic()
    row = wait_for(lambda: (r := journal_row(svc.state_dir, "late-paper")) and r[0] == "filled" and r,
                   timeout_s=15, what="the order filled in the journal")
    assert isinstance(row, tuple)
    assert time.monotonic() - sent > TIMEOUT_S  # queried at least once before the answer
    assert ended(recorder, "late-paper") == []
    assert not [m for m in recorder.messages(SafetyEvent) if m.kind.startswith("order_lost")]
    assert {p.symbol: p.quantity for p in engine.positions("PAPER-1")} == {"AAPL": Decimal(3)}


@pytest.mark.parametrize("kind", ["zmq", "ibkr"])
def test_an_order_left_pending_by_a_stopped_process_is_resolved_after_the_restart(
    stoppers: list[Callable[[], object]], service: Callable[..., Service], recorder: Recorder,
    tmp_path: Path, kind: str,
) -> None:
    engine = make_engine()
    running = start_venue(kind, engine, tmp_path / "venue", stoppers, drop=True)
    patient = {**running.connector, "inflight_timeout_s": 600.0}  # nothing resolves it in this life
    first = service(settings_for(patient))
    wait_for(lambda: risk_state(first).get("mode") == "LIVE", timeout_s=30, what="the governor LIVE")
    buy(engine, "lost-r")
    wait_for(lambda: len(running.dropped()) == 1, timeout_s=10, what="the order dropped at the venue")
    wait_for(lambda: journal_row(first.state_dir, "lost-r") is not None, what="the order journaled")
    first.stop()
    assert journal_row(first.state_dir, "lost-r") == ("pending", "")

    second = service(settings_for(running.connector))  # same state directory, a new process
    row = wait_for(lambda: (r := journal_row(second.state_dir, "lost-r")) and r[0] != "pending" and r,
                   timeout_s=TIMEOUT_S * (RETRIES + 1) + SLACK_S, what="the journal row terminal")
    assert isinstance(row, tuple) and row[0] == "rejected" and "never reached the venue" in row[1]
    assert len(ended(recorder, "lost-r")) == 1
