""""Flat" and "reconciled" against venues that behave like real ones: the whole service in
this process, the simulated FIX and ZeroMQ venues on loopback with their misbehaviour
switches. A refused or unanswered mass cancel falls back to cancels one by one and the
venue is reported flat only once it has no working order and no position; closing orders
refused for a while back off; a venue down during a flatten spends no attempt and is
flattened when it returns; a fill the venue never delivered shows as a reconciliation
mismatch in status, re-checked periodically."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import topics
from actors.risk_governor import GetRiskState
from messages import (
    CancelAllDone,
    FailsafeReport,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    Reconciliation,
    Side,
    SubmitOrder,
    TimeInForce,
)
from supervision import registry
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.processes import free_port
from tradeguard.app import Service
from tradeguard.control import send_command
from tradeguard.settings import Settings, parse_settings
from venues.engine import EngineConfig, EngineRunner, VenueEngine
from venues.fix_venue import FixBehaviour, FixVenue
from venues.zmq_venue import ZmqBehaviour, ZmqVenue

FIX_ACCOUNT = "TRADEGUARD"   # the FIX venue trades for the counterparty's comp id
ZMQ_ACCOUNT = "zmq"

pytestmark = pytest.mark.timeout(120)


def settings_for(connector: dict[str, Any], **sections: Any) -> Settings:
    data: dict[str, Any] = {
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 15.0},
        "risk": {"max_orders_per_s": 1000, "recover_after_s": 0.5},
        "failsafe": {"round_timeout_s": 1.0, "cancel_timeout_s": 0.3, "backoff_initial_s": 0.2,
                     "backoff_max_s": 1.0, "max_attempts": 4, "recheck_interval_s": 1.0},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.3, "backoff_jitter_s": 0.01,
                        "connectors_intensity": 200, "root_intensity": 20},
        "connectors": [{"symbols": ["AAPL"], "health_interval_s": 0.2, **connector}],
        "strategies": [],
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_settings(data, environ={})


@pytest.fixture
def engine() -> Iterator[VenueEngine]:
    engine = VenueEngine("sim", EngineConfig(depth=Decimal(100), seed=5))
    runner = EngineRunner(engine, interval_s=0.02)
    runner.start()
    yield engine
    runner.stop()


@pytest.fixture
def stoppers() -> Iterator[list[Callable[[], object]]]:
    """Venues a test starts, stopped after the service (tests ask for this fixture before
    ``service``, so it is torn down after it: a venue stopped first would leave the
    connector restarting while the service stops)."""
    things: list[Callable[[], object]] = []
    yield things
    for stop in reversed(things):
        stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", [topics.FAILSAFE, topics.ORDERS, topics.PORTFOLIO])


def start_fix(engine: VenueEngine, state_dir: Path, port: int, behaviour: FixBehaviour,
              stoppers: list[Callable[[], object]]) -> FixVenue:
    venue = FixVenue(engine, port, state_dir, behaviour=behaviour)
    venue.start()
    stoppers.append(venue.stop)
    return venue


def fix_connector(port: int) -> dict[str, Any]:
    return {"name": "fix", "kind": "fix", "port": port, "heartbeat_s": 1, "connect_timeout_s": 2.0}


def live(svc: Service) -> None:
    wait_for(lambda: (svc.ask("risk_governor", GetRiskState()) or {}).get("mode") == "LIVE", timeout_s=20,
             what="the governor LIVE")


def submit(order: SubmitOrder) -> None:
    assert registry.tell("risk_governor", order)


def open_position_and_resting_order(engine: VenueEngine, account: str, venue: str) -> None:
    """Long 10 AAPL bought through the guard, and a buy resting far below the market."""
    wait_for(lambda: engine.quote("AAPL") is not None, what="a quote")
    quote = engine.quote("AAPL")
    assert quote is not None
    submit(SubmitOrder(client_order_id="t-open", venue=venue, symbol="AAPL", side=Side.BUY,
                       quantity=Decimal(10), order_type=OrderType.LIMIT,
                       limit_price=(quote.ask * Decimal("1.02")).quantize(Decimal("0.01")),
                       time_in_force=TimeInForce.IOC, source="test"))
    wait_for(lambda: positions(engine, account) == {"AAPL": Decimal(10)}, timeout_s=10,
             what=f"long 10 AAPL (venue executions: {engine.executions(account)})")
    submit(SubmitOrder(client_order_id="t-rest", venue=venue, symbol="AAPL", side=Side.BUY,
                       quantity=Decimal(5), order_type=OrderType.LIMIT,
                       limit_price=(quote.bid * Decimal("0.98")).quantize(Decimal("0.01")),
                       time_in_force=TimeInForce.GTC, source="test"))
    wait_for(lambda: [w.order.client_order_id for w in engine.open_orders(account)] == ["t-rest"],
             timeout_s=10, what="the buy resting at the venue")


def positions(engine: VenueEngine, account: str) -> dict[str, Decimal]:
    return {p.symbol: p.quantity for p in engine.positions(account) if p.quantity}


def incident_actions(report: FailsafeReport) -> list[str]:
    document = json.loads(Path(report.incident_path).read_text())
    return [a["action"] for a in document["actions"]]


def flat_report(recorder: Recorder, timeout_s: float = 30.0, after: int = 0) -> FailsafeReport:
    report: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport) and m.flat,
                                               timeout_s=timeout_s, after=after)
    return report


def assert_flat_at_the_venue(engine: VenueEngine, account: str) -> None:
    assert positions(engine, account) == {}
    assert engine.open_orders(account) == []


# ---- flat means flat at the venue ---------------------------------------------------------------


@pytest.mark.parametrize("mass_cancel", ["refuse", "ignore"])
def test_fix_mass_cancel_refused_or_unanswered_falls_back_to_cancels_one_by_one(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path, mass_cancel: str,
) -> None:
    port = free_port()
    start_fix(engine, tmp_path / "venue", port, FixBehaviour.standard(mass_cancel=mass_cancel), stoppers)
    svc = service(settings_for(fix_connector(port)))
    live(svc)
    open_position_and_resting_order(engine, FIX_ACCOUNT, "fix")

    send_command(svc.state_dir, "flatten", reason=f"mass cancel {mass_cancel}")
    report = flat_report(recorder)
    # Reported flat only once the venue itself has neither the position nor the resting order.
    assert_flat_at_the_venue(engine, FIX_ACCOUNT)
    actions = incident_actions(report)
    assert "mass_cancel_unconfirmed" in actions and "cancel_sent" in actions
    assert "cancel_all_done" not in actions                     # the venue never confirmed one
    document = json.loads(Path(report.incident_path).read_text())
    cancelled = [a for a in document["actions"] if a["action"] == "cancel_sent"]
    assert {a["order"] for a in cancelled} == {"t-rest"}


def test_zmq_cancel_all_refused_falls_back_to_cancels_one_by_one(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder,
) -> None:
    venue = ZmqVenue(engine, heartbeat_s=0.1, behaviour=ZmqBehaviour(cancel_all="refuse"))
    venue.start()
    stoppers.append(venue.stop)
    svc = service(settings_for({
        "name": "zmq", "kind": "zmq", "market_endpoint": venue.market_endpoint,
        "order_endpoint": venue.order_endpoint, "stale_after_s": 1.0, "ping_interval_s": 0.2,
    }))
    live(svc)
    open_position_and_resting_order(engine, ZMQ_ACCOUNT, "zmq")

    send_command(svc.state_dir, "flatten", reason="cancel_all refused")
    report = flat_report(recorder)
    assert_flat_at_the_venue(engine, ZMQ_ACCOUNT)
    actions = incident_actions(report)
    assert "mass_cancel_unconfirmed" in actions and "cancel_sent" in actions
    assert "cancel_all_done" not in actions


def test_closing_orders_refused_for_a_while_back_off_and_end_flat(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path,
) -> None:
    port = free_port()
    start_fix(engine, tmp_path / "venue", port, FixBehaviour.standard(), stoppers)
    svc = service(settings_for(fix_connector(port), failsafe={"max_attempts": 5, "backoff_initial_s": 0.2,
                                                                "backoff_max_s": 2.0}))
    live(svc)
    open_position_and_resting_order(engine, FIX_ACCOUNT, "fix")

    kind = engine.config
    engine.config = msgspec.structs.replace(kind, reject_rate=1.0)   # the venue refuses every order
    mark = recorder.count()
    send_command(svc.state_dir, "flatten", reason="venue refusing orders")

    def refused() -> list[OrderRejected]:
        return [m for m in recorder.messages()[mark:]
                if isinstance(m, OrderRejected) and m.client_order_id.startswith("fs-")]

    # Three rounds' closing orders refused (with pauses of 0.2 s and 0.4 s between them, the
    # refusals last longer than half a second): without the pauses every attempt would be gone.
    wait_for(lambda: len(refused()) >= 3, timeout_s=15, what="three closing orders refused")
    engine.config = kind                                         # the venue takes orders again
    report = flat_report(recorder, after=mark)
    assert not [m for m in recorder.messages()[mark:] if isinstance(m, FailsafeReport) and not m.flat]
    spread = (refused()[-1].ts_ns - refused()[0].ts_ns) / 1e9
    assert spread >= 0.5, spread
    report = flat_report(recorder, after=mark)
    assert_flat_at_the_venue(engine, FIX_ACCOUNT)
    assert 2 <= report.attempts <= 5
    document = json.loads(Path(report.incident_path).read_text())
    starts = [a["ts_ns"] for a in document["actions"] if a["action"] == "cancel_all_and_read_positions"]
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(starts)]
    assert len(gaps) >= 3 and gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps   # paused, doubling


def test_a_venue_down_during_the_flatten_spends_no_attempt_and_is_flattened_when_back(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path,
) -> None:
    port = free_port()
    venue = start_fix(engine, tmp_path / "venue", port, FixBehaviour.standard(), stoppers)
    svc = service(settings_for(fix_connector(port), failsafe={"max_attempts": 2}))
    live(svc)
    open_position_and_resting_order(engine, FIX_ACCOUNT, "fix")

    venue.stop()                                                 # the venue goes away
    wait_for(lambda: not send_command(svc.state_dir, "status")["connectors"][0]["connected"],
             timeout_s=15, what="the connector seen down")
    send_command(svc.state_dir, "flatten", reason="venue outage")
    first: FailsafeReport = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=15)
    assert not first.flat and "fix: down" in first.detail
    # Far longer than two rounds' worth of timeouts: no attempt may be spent meanwhile.
    wait_for(lambda: send_command(svc.state_dir, "status")["failsafe"]["venues"].get("fix") == "down",
             timeout_s=5, what="the venue still down in the failsafe's view")
    mark = recorder.count()
    with pytest.raises(AssertionError):
        recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=3.0, after=mark)
    assert positions(engine, FIX_ACCOUNT) == {"AAPL": Decimal(10)}

    start_fix(engine, tmp_path / "venue", port, FixBehaviour.standard(), stoppers)   # back
    report = flat_report(recorder, after=mark)
    assert_flat_at_the_venue(engine, FIX_ACCOUNT)
    assert report.attempts <= 2


# ---- reconciliation ------------------------------------------------------------------------------


def test_a_fill_the_venue_never_delivered_is_a_mismatch_shown_in_status_and_rechecked(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path,
) -> None:
    port = free_port()
    behaviour = FixBehaviour.standard(resend_fills=False)        # no resend of missed executions
    venue = start_fix(engine, tmp_path / "venue", port, behaviour, stoppers)
    svc = service(settings_for(fix_connector(port), keeper={"reconcile_interval_s": 0.5},
                               risk={"degradations_to_failsafe": 100}))
    live(svc)

    def row() -> dict[str, Any]:
        connectors = send_command(svc.state_dir, "status")["connectors"]
        return dict(next(c for c in connectors if c["name"] == "fix"))

    wait_for(lambda: row()["reconciled"] is True, timeout_s=15, what="fix reconciled")
    venue.stop()
    wait_for(lambda: not row()["connected"], timeout_s=15, what="the connector seen down")
    wait_for(lambda: engine.quote("AAPL") is not None, what="a quote")
    venue.foreign_fill("AAPL", Side.BUY, Decimal(7))            # traded from elsewhere meanwhile
    start_fix(engine, tmp_path / "venue", port, behaviour, stoppers)

    mismatch = wait_for(lambda: (r := row())["connected"] and r["reconciled"] is False and r, timeout_s=20,
                        what="fix unreconciled")
    assert isinstance(mismatch, dict)
    assert mismatch["mismatches"] == ["AAPL: journal 0, venue 7"]
    since = mismatch["reconciled_since_ns"]
    assert since is not None and since <= mismatch["reconciled_ns"]
    # The comparison runs again on its own (no reconnect): same difference, same "since".
    later = wait_for(lambda: (r := row())["reconciled_ns"] > mismatch["reconciled_ns"] + 400_000_000 and r,
                     timeout_s=10, what="a periodic comparison")
    assert isinstance(later, dict)
    assert later["reconciled"] is False and later["reconciled_since_ns"] == since
    assert later["mismatches"] == ["AAPL: journal 0, venue 7"]
    unreconciled = [m for m in recorder.messages(Reconciliation) if not m.reconciled]
    assert len(unreconciled) >= 2 and all(m.mismatches == ("AAPL: journal 0, venue 7",) for m in unreconciled)


def test_a_stop_during_a_flatten_never_cancels_the_closing_orders(
    engine: VenueEngine, stoppers: list[Callable[[], object]], recorder: Recorder, tmp_path: Path,
) -> None:
    port = free_port()
    start_fix(engine, tmp_path / "venue", port, FixBehaviour.standard(), stoppers)
    settings = settings_for(fix_connector(port),
                            service={"on_shutdown": "cancel", "shutdown_timeout_s": 10.0})
    svc = Service(settings, tmp_path / "state")
    svc.start()
    try:
        live(svc)
        open_position_and_resting_order(engine, FIX_ACCOUNT, "fix")
        submitted = Recorder.spawn("submitted", [topics.SUBMITTED])
        engine.config = msgspec.structs.replace(engine.config, latency_ms=400)   # orders act late
        send_command(svc.state_dir, "flatten", reason="then a stop")
        submitted.wait_for(lambda m: isinstance(m, SubmitOrder) and m.client_order_id.startswith("fs-"),
                           timeout_s=10)                         # a closing order is on its way
    finally:
        svc.stop()                                               # on_shutdown = "cancel", mid-run
    # The shutdown's own mass cancel was not sent (it would have cancelled the closing orders)...
    assert not [m for m in recorder.messages(CancelAllDone) if m.request_id == "shutdown"]
    assert not [m for m in recorder.messages(OrderCancelled) if m.client_order_id.startswith("fs-")]
    assert [m for m in recorder.messages(OrderFilled) if m.client_order_id.startswith("fs-")]
    # ...and the run either finished or was written down as interrupted.
    documents = [json.loads(p.read_text()) for p in sorted((tmp_path / "state" / "incidents").glob("*.json"))]
    assert documents and (documents[-1]["flat"] or documents[-1]["interrupted"])
