"""IB recovery and open-order reconciliation end to end: the whole service in this process,
trading through the IBKR connector with the fake TWS over TCP, the link running through a
stallable relay (``tests/fault_proxy.py``).

While the link is dead the venue goes on: a resting order fills, another is cancelled at
the venue, one never reached it. After the link heals the journal equals the venue (fills,
positions), every order has exactly one end, nothing is left working, and the venue
reconciles. An order cancelled at the venue behind the service's back (no word to any
client) makes the venue unreconciled and keeps the mode from LIVE until the order's end
reaches the journal.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.journal import READER, Journal
from actors.risk_governor import GetRiskState
from messages import (
    ConnectorDown,
    ConnectorUp,
    GetPortfolio,
    GetReconciliations,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderStatus,
    OrderType,
    PortfolioSnapshot,
    Reconciliation,
    RejectReason,
    Side,
    SubmitOrder,
    TimeInForce,
)
from supervision import registry
from tests.fault_proxy import FaultProxy
from tests.helpers import wait_for
from tests.recorder import Recorder
from tradeguard.app import Service
from tradeguard.settings import Settings, parse_settings
from venues.engine import EngineConfig, EngineRunner, VenueEngine
from venues.tws_venue import TwsVenue

pytestmark = pytest.mark.timeout(120)

ACCOUNT = "DU000001"
VENUE = "ib"
MID = Decimal(190)


def settings(port: int) -> Settings:
    """The IBKR connector through the relay at test speed: a dead link is noticed within a
    second; reconciliation every half second, an order settled after 0.3 s."""
    data: dict[str, Any] = {
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 15.0},
        "risk": {"max_orders_per_s": 1000, "recover_after_s": 0.3},
        "keeper": {"reconcile_interval_s": 0.5, "mismatch_recheck_s": 0.1, "order_settle_s": 0.3},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "backoff_jitter_s": 0.01,
                        "connectors_intensity": 50, "root_intensity": 20},
        "connectors": [{
            "name": VENUE, "kind": "ibkr", "symbols": ["AAPL"], "port": port, "client_id": 17,
            "connect_timeout_s": 3.0, "request_timeout_s": 2.0, "health_interval_s": 0.2,
            "probe_interval_s": 0.1, "probe_timeout_s": 0.3, "stale_after_s": 1.0,
            "reconnect_initial_s": 0.05, "reconnect_max_s": 0.3,
        }],
        "strategies": [],
    }
    return parse_settings(data, environ={})


class Rig:
    """The fake TWS on its engine (stepping in a thread), the relay in front of it, and the
    service connected through the relay."""

    def __init__(self, engine: VenueEngine, tws: TwsVenue, proxy: FaultProxy, svc: Service,
                 recorder: Recorder) -> None:
        self.engine, self.tws, self.proxy, self.svc, self.recorder = engine, tws, proxy, svc, recorder

    @property
    def journal_path(self) -> Path:
        return self.svc.state_dir / "journal.sqlite3"

    def submit(self, coid: str, side: Side, quantity: int, limit: Decimal,
               time_in_force: TimeInForce = TimeInForce.GTC) -> None:
        assert registry.tell("risk_governor", SubmitOrder(
            client_order_id=coid, venue=VENUE, symbol="AAPL", side=side, quantity=Decimal(quantity),
            order_type=OrderType.LIMIT, limit_price=limit, time_in_force=time_in_force, source="test"))

    def mode(self) -> str | None:
        state = self.svc.ask("risk_governor", GetRiskState())
        return None if state is None else str(state["mode"])

    def reconciliation(self) -> Reconciliation | None:
        found: dict[str, Reconciliation] | None = self.svc.ask("position_keeper", GetReconciliations())
        return None if found is None else found.get(VENUE)

    def journal_fills(self) -> set[str]:
        with Journal(self.journal_path, writer=READER) as journal:
            return {f.fill_id for f in journal.fills() if f.venue == VENUE}

    def venue_fills(self) -> set[str]:
        return {f.fill_id for f in self.engine.executions(ACCOUNT)}

    def statuses(self) -> dict[str, OrderStatus]:
        with Journal(self.journal_path, writer=READER) as journal:
            return {r.order.client_order_id: r.status for r in journal.orders()}

    def journal_positions(self) -> dict[str, Decimal]:
        snapshot: PortfolioSnapshot | None = self.svc.ask("position_keeper", GetPortfolio())
        assert snapshot is not None
        return {p.symbol: p.quantity for p in snapshot.positions if p.venue == VENUE and p.quantity}

    def venue_positions(self) -> dict[str, Decimal]:
        return {p.symbol: p.quantity for p in self.engine.positions(ACCOUNT) if p.quantity}

    def cut_link(self) -> int:
        """Stall the relay until the connector declares the session dead; the recording
        index from which the outage counts."""
        mark = self.recorder.count()
        self.proxy.stall()
        self.recorder.wait_for(lambda m: isinstance(m, ConnectorDown) and m.name == VENUE,
                               timeout_s=10, after=mark)
        return mark

    def heal_link(self) -> int:
        mark = self.recorder.count()
        self.proxy.heal()
        self.recorder.wait_for(lambda m: isinstance(m, ConnectorUp) and m.name == VENUE,
                               timeout_s=20, after=mark)
        return mark

    def ends_of(self, coid: str, after: int = 0) -> list[Any]:
        return [m for m in self.recorder.messages()[after:]
                if isinstance(m, (OrderCancelled, OrderRejected)) and m.client_order_id == coid]


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    latency_ms = getattr(request, "param", 0)   # the engine's latency, when a test asks
    engine = VenueEngine("tws", EngineConfig(symbols={"AAPL": MID}, depth=Decimal(100),
                                             latency_ms=latency_ms))
    engine.step()
    runner = EngineRunner(engine, interval_s=0.05)
    tws = TwsVenue(engine)
    tws.start()
    proxy = FaultProxy(tws.port).start()
    recorder = Recorder.spawn("recorder", [topics.ORDERS, topics.CONNECTORS, topics.PORTFOLIO])
    runner.start()
    rig = Rig(engine, tws, proxy, Service(settings(proxy.port), tmp_path / "state"), recorder)
    try:
        rig.svc.start()
        wait_for(lambda: rig.mode() == "LIVE", timeout_s=20, what="the service LIVE on the IB venue")
        yield rig
    finally:
        rig.svc.stop()   # the one running now (a test may have started another)
        proxy.heal()
        proxy.stop()
        runner.stop()
        tws.stop()


def test_what_the_venue_did_while_the_link_was_dead_reaches_the_journal_once(rig: Rig) -> None:
    engine, tws = rig.engine, rig.tws
    rig.submit("rest-buy", Side.BUY, 5, MID - Decimal(2))        # fills once the market falls
    rig.submit("rest-sell", Side.SELL, 3, MID + Decimal(5))      # cancelled at the venue
    for coid in ("rest-buy", "rest-sell"):
        rig.recorder.wait_for(lambda m, c=coid: isinstance(m, OrderAccepted) and m.client_order_id == c)
    tws.drop_next_orders(1)
    rig.submit("lost", Side.BUY, 2, MID - Decimal(4))            # never reaches the venue
    wait_for(lambda: len(tws.dropped_orders) == 1, what="the order lost in flight")

    rig.cut_link()
    engine.set_mid("AAPL", MID - Decimal(3))                     # the resting buy fills ...
    wait_for(lambda: any(f.client_order_id == "rest-buy" for f in engine.executions(ACCOUNT)),
             what="the resting buy filled at the venue")
    tws.cancel_at_venue("rest-sell", "cancelled by the exchange")  # ... the sell is cancelled
    wait_for(lambda: engine.open_orders(ACCOUNT) == [], what="nothing working at the venue")
    assert not any(isinstance(m, OrderCancelled) for m in rig.recorder.messages()[-50:]
                   if getattr(m, "client_order_id", "") == "rest-sell")

    healed = rig.heal_link()
    wait_for(lambda: rig.journal_fills() == rig.venue_fills(), timeout_s=10,
             what="journal fills == venue executions")
    wait_for(lambda: rig.statuses() == {"rest-buy": OrderStatus.FILLED, "rest-sell": OrderStatus.CANCELLED,
                                        "lost": OrderStatus.REJECTED},
             timeout_s=10, what="every order ended in the journal as it ended at the venue")
    assert rig.journal_positions() == rig.venue_positions() == {"AAPL": Decimal(5)}
    [cancelled] = rig.ends_of("rest-sell", healed)
    assert isinstance(cancelled, OrderCancelled) and "Cancelled" in cancelled.text
    [rejected] = rig.ends_of("lost", healed)
    assert isinstance(rejected, OrderRejected) and rejected.reason is RejectReason.VENUE
    assert "never reached the venue" in rejected.text
    wait_for(lambda: (r := rig.reconciliation()) is not None and r.reconciled
             and r.venue_open_orders == () and r.keeper_open_orders == () and r.ts_ns > 0,
             timeout_s=10, what="the venue reconciled, orders compared, nothing working")
    wait_for(lambda: rig.mode() == "LIVE", timeout_s=10, what="LIVE again")

    # Another outage: nothing is delivered twice, no order ends twice.
    fills_before = rig.journal_fills()
    rig.cut_link()
    again = rig.heal_link()
    wait_for(lambda: (r := rig.reconciliation()) is not None and r.reconciled and r.ts_ns > 0,
             timeout_s=10, what="reconciled after the second outage")
    assert rig.journal_fills() == fills_before
    for coid in ("rest-buy", "rest-sell", "lost"):
        assert rig.ends_of(coid, again) == []
    with Journal(rig.journal_path, writer=READER) as journal:
        assert [type(e).__name__ for e in journal.order_events("rest-sell")].count("OrderCancelled") == 1
        assert [type(e).__name__ for e in journal.order_events("lost")].count("OrderRejected") == 1
        assert journal.open_orders() == []


def test_an_order_cancelled_behind_the_services_back_keeps_it_from_live(rig: Rig) -> None:
    rig.submit("quiet", Side.SELL, 4, MID + Decimal(5))
    rig.recorder.wait_for(lambda m: isinstance(m, OrderAccepted) and m.client_order_id == "quiet")
    wait_for(lambda: (r := rig.reconciliation()) is not None and r.reconciled
             and r.venue_open_orders == ("quiet",), timeout_s=10, what="the order compared, working")

    rig.tws.cancel_at_venue("quiet", "lost by the venue", silent=True)   # no client hears of it
    wait_for(lambda: rig.engine.open_orders(ACCOUNT) == [], what="the order no longer working")
    wait_for(lambda: (r := rig.reconciliation()) is not None and not r.reconciled, timeout_s=10,
             what="the venue unreconciled")
    recon = rig.reconciliation()
    assert recon is not None
    assert recon.order_mismatches == ("order quiet: working in the journal, not at the venue",)
    wait_for(lambda: rig.mode() not in ("LIVE", None), timeout_s=10, what="out of LIVE")
    assert rig.statuses()["quiet"] is OrderStatus.ACCEPTED       # the journal still holds it working
    for _ in range(3):   # it stays so: each periodic comparison finds it again
        mark = rig.recorder.count()
        rig.recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.venue == VENUE, after=mark)
        assert rig.mode() != "LIVE" and rig.reconciliation() is not None
        assert not rig.reconciliation().reconciled  # type: ignore[union-attr]

    # Resolved: after a reconnect the connector learns from the completed orders that it
    # was cancelled; its end reaches the journal and the venue reconciles.
    rig.cut_link()
    healed = rig.heal_link()
    wait_for(lambda: rig.statuses()["quiet"] is OrderStatus.CANCELLED, what="cancelled in the journal")
    [ended] = rig.ends_of("quiet", healed)
    assert isinstance(ended, OrderCancelled)
    wait_for(lambda: (r := rig.reconciliation()) is not None and r.reconciled, timeout_s=10,
             what="reconciled once the end is journaled")
    wait_for(lambda: rig.mode() == "LIVE", timeout_s=10, what="LIVE again")


def test_an_order_that_ended_while_the_service_was_stopped_ends_in_the_journal(
        rig: Rig, tmp_path: Path) -> None:
    """The process stops while an order works; IB cancels it meanwhile; the next start
    reads the journal's open orders and ends it from IB's completed orders."""
    rig.submit("across", Side.SELL, 2, MID + Decimal(5))
    rig.recorder.wait_for(lambda m: isinstance(m, OrderAccepted) and m.client_order_id == "across")
    rig.submit("filled-meanwhile", Side.BUY, 1, MID - Decimal(2))
    rig.recorder.wait_for(lambda m: isinstance(m, OrderAccepted) and m.client_order_id == "filled-meanwhile")
    rig.svc.stop()
    rig.tws.cancel_at_venue("across", "cancelled while the service was stopped")
    rig.engine.set_mid("AAPL", MID - Decimal(3))
    wait_for(lambda: rig.engine.open_orders(ACCOUNT) == [], what="nothing working at the venue")

    rig.svc = Service(settings(rig.proxy.port), tmp_path / "state")
    rig.svc.start()
    wait_for(lambda: rig.statuses() == {"across": OrderStatus.CANCELLED,
                                        "filled-meanwhile": OrderStatus.FILLED},
             timeout_s=15, what="both orders ended in the journal as at the venue")
    assert rig.journal_fills() == rig.venue_fills()
    wait_for(lambda: (r := rig.reconciliation()) is not None and r.reconciled
             and r.venue_open_orders == (), timeout_s=10, what="reconciled after the restart")
    assert rig.journal_positions() == rig.venue_positions() == {"AAPL": Decimal(1)}
    wait_for(lambda: rig.mode() == "LIVE", timeout_s=10, what="LIVE after the restart")


@pytest.mark.parametrize("rig", [1500], indirect=True)
def test_an_ioc_cancelled_at_the_venue_while_the_link_was_dead_ends_once(rig: Rig) -> None:
    """The venue takes 1.5 s to work an order: an IOC sent just before the link dies is
    cancelled there while the connector cannot hear it (TWS's words stuck in the dead link)."""
    rig.submit("ioc", Side.BUY, 3, MID - Decimal(2), TimeInForce.IOC)     # below the ask: no fill
    wait_for(lambda: rig.statuses().get("ioc") is OrderStatus.PENDING, what="the IOC journaled")
    wait_for(lambda: "ioc" in rig.tws._by_coid, what="the IOC received by the venue")
    rig.cut_link()
    wait_for(lambda: rig.tws._by_coid.get("ioc") is not None and rig.tws._by_coid["ioc"].is_done,
             timeout_s=10, what="the IOC done at the venue")
    assert rig.ends_of("ioc") == []
    healed = rig.heal_link()
    wait_for(lambda: rig.statuses()["ioc"] is OrderStatus.CANCELLED, timeout_s=10,
             what="the IOC cancelled in the journal")
    [ended] = rig.ends_of("ioc", healed)
    assert isinstance(ended, OrderCancelled)
    wait_for(lambda: (r := rig.reconciliation()) is not None and r.reconciled and r.venue_open_orders == (),
             timeout_s=10, what="reconciled, nothing working")
    assert rig.journal_fills() == rig.venue_fills() == set()
