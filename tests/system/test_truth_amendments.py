"""Trade busts, corrections and fills from elsewhere against the simulated FIX venue over
quickfix on loopback, the whole service in this process: the journal ends equal to the
venue's positions, the venue is unreconciled (and the mode not LIVE) until the venue's
position report agrees again, and a repeated report counts once."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.journal import Journal
from actors.position_keeper import GetPortfolio
from messages import (
    Mode,
    ModeChanged,
    OrderFilled,
    OrderType,
    Reconciliation,
    SafetyEvent,
    Side,
    SubmitOrder,
    TimeInForce,
)
from messages.orders import FillBusted, FillCorrected
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.processes import free_port
from tests.system.test_truth_flatten import (
    FIX_ACCOUNT,
    engine,
    fix_connector,
    live,
    positions,
    settings_for,
    start_fix,
    stoppers,
    submit,
)
from tradeguard.app import Service
from venues.engine import VenueEngine
from venues.fix_venue import FixBehaviour, FixVenue

__all__ = ["engine", "stoppers"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(120)

D = Decimal


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", [topics.ORDERS, topics.PORTFOLIO, topics.SAFETY, topics.MODE])


def journal_positions(svc: Service) -> dict[str, Decimal]:
    """Net quantity per symbol of the fills in effect in the journal on disk."""
    net: dict[str, Decimal] = {}
    with Journal(svc.state_dir / "journal.sqlite3") as journal:
        for fill in journal.fills():
            net[fill.symbol] = net.get(fill.symbol, D(0)) + fill.signed_quantity
    return {s: q for s, q in net.items() if q}


def keeper_positions(svc: Service) -> dict[str, Decimal]:
    snapshot = svc.ask("position_keeper", GetPortfolio())
    assert snapshot is not None
    return {p.symbol: p.quantity for p in snapshot.positions if p.venue == "fix" and p.quantity}


def buy(engine: VenueEngine, coid: str, quantity: int) -> OrderFilled:
    """Buy through the guard (an IOC limit through the ask); the venue's execution."""
    wait_for(lambda: engine.quote("AAPL") is not None, what="a quote")
    quote = engine.quote("AAPL")
    assert quote is not None
    count = len(engine.executions(FIX_ACCOUNT))
    submit(SubmitOrder(client_order_id=coid, venue="fix", symbol="AAPL", side=Side.BUY, quantity=D(quantity),
                       order_type=OrderType.LIMIT, limit_price=(quote.ask * D("1.02")).quantize(D("0.01")),
                       time_in_force=TimeInForce.IOC, source="test"))
    wait_for(lambda: len(engine.executions(FIX_ACCOUNT)) > count, timeout_s=10, what=f"{coid} executed")
    return engine.executions(FIX_ACCOUNT)[-1]


def never_live_between(recorder: Recorder, start_ns: int, end_ns: int) -> None:
    """No transition to LIVE from ``start_ns`` to ``end_ns`` (wall clock)."""
    to_live = [m for m in recorder.messages(ModeChanged)
               if m.current is Mode.LIVE and start_ns <= m.ts_ns <= end_ns]
    assert not to_live, to_live


def mode(svc: Service) -> str:
    from actors.risk_governor import GetRiskState
    state = svc.ask("risk_governor", GetRiskState())
    return "" if state is None else str(state["mode"])


def start_service(engine: VenueEngine, tmp_path: Path, stoppers: list[Callable[[], object]],
                  service: Callable[..., Service], **risk: Any) -> tuple[FixVenue, Service]:
    port = free_port()
    venue = start_fix(engine, tmp_path / "venue", port, FixBehaviour.standard(), stoppers)
    svc = service(settings_for(fix_connector(port), keeper={"reconcile_interval_s": 30.0},
                               risk={"degradations_to_failsafe": 100, "recover_after_s": 0.5, **risk}))
    live(svc)
    return venue, svc


def test_bust_and_correction_leave_the_journal_equal_to_the_venue_and_the_mode_not_live_until_reconciled(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path,
) -> None:
    venue, svc = start_service(engine, tmp_path, stoppers, service)
    first = buy(engine, "am-1", 10)
    second = buy(engine, "am-2", 5)
    wait_for(lambda: keeper_positions(svc) == {"AAPL": D(15)}, timeout_s=10, what="long 15 in the keeper")

    # The venue busts the first trade: ExecType=H.
    mark = recorder.count()
    venue.bust(first.fill_id)
    assert positions(engine, FIX_ACCOUNT) == {"AAPL": D(5)}
    unreconciled: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and not m.reconciled, timeout_s=10, after=mark)
    assert any("busted" in line for line in unreconciled.mismatches), unreconciled
    assert mode(svc) != "LIVE"
    recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.kind == "trade_bust", after=mark)
    reconciled: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15, after=mark)
    assert journal_positions(svc) == keeper_positions(svc) == positions(engine, FIX_ACCOUNT) == {"AAPL": D(5)}
    live(svc)
    never_live_between(recorder, unreconciled.ts_ns, reconciled.ts_ns)

    # Then corrects the second trade's quantity: ExecType=G.
    mark = recorder.count()
    venue.correct(second.fill_id, quantity=D(3))
    corrected: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and not m.reconciled, timeout_s=10, after=mark)
    assert any("corrected" in line for line in corrected.mismatches), corrected
    again: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15, after=mark)
    assert journal_positions(svc) == keeper_positions(svc) == positions(engine, FIX_ACCOUNT) == {"AAPL": D(3)}
    live(svc)
    never_live_between(recorder, corrected.ts_ns, again.ts_ns)

    # The journal holds each amendment once, with the venue's ids.
    with Journal(svc.state_dir / "journal.sqlite3") as journal:
        amendments = journal.amendments("fix")
    assert [(type(a), a.fill_id) for a in amendments] == [(FillBusted, first.fill_id),
                                                          (FillCorrected, second.fill_id)]
    assert [m for m in recorder.messages(FillBusted)] and [m for m in recorder.messages(FillCorrected)]


def test_a_fill_for_an_order_never_sent_is_journaled_as_external_and_unreconciles_the_venue(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path,
) -> None:
    venue, svc = start_service(engine, tmp_path, stoppers, service)
    buy(engine, "ours-1", 2)
    wait_for(lambda: keeper_positions(svc) == {"AAPL": D(2)}, timeout_s=10, what="long 2 in the keeper")

    mark = recorder.count()
    foreign = venue.foreign_fill("AAPL", Side.SELL, D(7))            # someone else on the account
    warning: SafetyEvent = recorder.wait_for(
        lambda m: isinstance(m, SafetyEvent) and m.kind == "external_fill", timeout_s=10, after=mark)
    assert foreign.fill_id in warning.detail and foreign.client_order_id in warning.detail
    unreconciled: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and not m.reconciled, timeout_s=10, after=mark)
    assert mode(svc) != "LIVE"
    reconciled: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15, after=mark)
    assert journal_positions(svc) == keeper_positions(svc) == positions(engine, FIX_ACCOUNT)
    assert positions(engine, FIX_ACCOUNT) == {"AAPL": D(-5)}
    live(svc)
    never_live_between(recorder, unreconciled.ts_ns, reconciled.ts_ns)
    with Journal(svc.state_dir / "journal.sqlite3") as journal:
        external = [(r.fill.fill_id, r.fill.client_order_id, r.fill.venue_order_id)
                    for r in journal.fill_records() if r.external]
    assert external == [(foreign.fill_id, foreign.client_order_id, foreign.venue_order_id)]


# ---- expired orders -----------------------------------------------------------------------------


def expire_at_venue(venue: FixVenue, coid: str) -> None:
    """The venue ends a resting order because its time in force ran out: ExecutionReport
    ExecType=C, OrdStatus=C over the session (the simulated engine has no session end, so the
    test makes the venue say it), and the engine's book forgets the order (silently: the
    session has said all there is to say)."""
    with venue._lock:
        record = venue._orders.pop(coid)
        record.status = "C"
    venue._send(venue._report(record, "C", text="good-till-date reached"))
    venue.engine.cancel(FIX_ACCOUNT, coid)


def test_an_order_the_fix_venue_expires_ends_expired_in_the_journal(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path,
) -> None:
    from actors.risk_governor import GetRiskState
    from messages import OrderCancelled, OrderStatus

    venue, svc = start_service(engine, tmp_path, stoppers, service)
    wait_for(lambda: engine.quote("AAPL") is not None, what="a quote")
    quote = engine.quote("AAPL")
    assert quote is not None
    submit(SubmitOrder(client_order_id="gtd-1", venue="fix", symbol="AAPL", side=Side.BUY, quantity=D(5),
                       order_type=OrderType.LIMIT, limit_price=(quote.bid * D("0.98")).quantize(D("0.01")),
                       time_in_force=TimeInForce.GTC, source="test"))
    wait_for(lambda: [w.order.client_order_id for w in engine.open_orders(FIX_ACCOUNT)] == ["gtd-1"],
             timeout_s=10, what=f"the order resting at the venue (seen: {recorder.messages()})")
    wait_for(lambda: (svc.ask("risk_governor", GetRiskState()) or {}).get("working_orders") == 1,
             timeout_s=10, what="the governor counting it working")

    expire_at_venue(venue, "gtd-1")
    ended: OrderCancelled = recorder.wait_for(
        lambda m: isinstance(m, OrderCancelled) and m.client_order_id == "gtd-1", timeout_s=10)
    assert ended.expired and ended.text == "good-till-date reached"

    def status() -> OrderStatus | None:
        with Journal(svc.state_dir / "journal.sqlite3") as journal:
            return next((r.status for r in journal.orders() if r.order.client_order_id == "gtd-1"), None)

    wait_for(lambda: status() is OrderStatus.EXPIRED, timeout_s=10, what="the journal's order expired")
    with Journal(svc.state_dir / "journal.sqlite3") as journal:
        assert [r.order.client_order_id for r in journal.open_orders()] == []
    wait_for(lambda: (svc.ask("risk_governor", GetRiskState()) or {}).get("working_orders") == 0,
             timeout_s=10, what="the governor no longer counting it")
    assert engine.open_orders(FIX_ACCOUNT) == []


def test_after_a_bust_the_position_limit_counts_what_the_venue_holds(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder, tmp_path: Path,
) -> None:
    venue, svc = start_service(engine, tmp_path, stoppers, service, max_position="10",
                               incident_quiet_s=0.5)         # the bust WARNING: REDUCING for so long
    first = buy(engine, "lim-1", 10)                     # at the limit
    mark = recorder.count()
    venue.bust(first.fill_id)                            # ... and taken back by the venue
    recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15, after=mark)
    live(svc)
    buy(engine, "lim-2", 10)                             # flat again: 10 more is within the limit
    wait_for(lambda: keeper_positions(svc) == positions(engine, FIX_ACCOUNT) == {"AAPL": D(10)},
             timeout_s=10, what="long 10 again")


def test_a_fill_from_elsewhere_at_the_zmq_venue_is_journaled_as_external(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    recorder: Recorder,
) -> None:
    from venues.zmq_venue import ZmqVenue

    venue = ZmqVenue(engine, heartbeat_s=0.1)
    venue.start()
    stoppers.append(venue.stop)
    svc = service(settings_for({
        "name": "zmq", "kind": "zmq", "market_endpoint": venue.market_endpoint,
        "order_endpoint": venue.order_endpoint, "stale_after_s": 1.0, "ping_interval_s": 0.2,
    }, keeper={"reconcile_interval_s": 30.0}, risk={"degradations_to_failsafe": 100, "recover_after_s": 0.5}))
    live(svc)
    wait_for(lambda: engine.quote("AAPL") is not None, what="a quote")
    mark = recorder.count()
    foreign = venue.foreign_fill("AAPL", Side.BUY, D(4))
    warning: SafetyEvent = recorder.wait_for(
        lambda m: isinstance(m, SafetyEvent) and m.kind == "external_fill", timeout_s=10, after=mark)
    assert foreign.fill_id in warning.detail and foreign.client_order_id in warning.detail
    unreconciled: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and not m.reconciled, timeout_s=10, after=mark)
    reconciled: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15, after=mark)
    never_live_between(recorder, unreconciled.ts_ns, reconciled.ts_ns)
    with Journal(svc.state_dir / "journal.sqlite3") as journal:
        assert [(r.fill.fill_id, r.external) for r in journal.fill_records()] == [(foreign.fill_id, True)]
    live(svc)
