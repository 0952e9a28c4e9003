"""An IB execution correction (a later revision of the execId) against the fake TWS over
TCP, the whole service in this process: the journal applies it as a correction, not as a
second fill, also when the corrected execution is reported again after a reconnect."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from actors import topics
from actors.journal import Journal
from actors.position_keeper import GetPortfolio
from messages import OrderType, Reconciliation, SafetyEvent, Side, SubmitOrder, TimeInForce
from messages.orders import FillCorrected
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.test_truth_flatten import live, settings_for, submit
from tradeguard.app import Service
from venues.engine import EngineConfig, VenueEngine
from venues.tws_venue import TwsVenue

pytestmark = pytest.mark.timeout(120)

D = Decimal


@pytest.fixture
def tws() -> Iterator[TwsVenue]:
    engine = VenueEngine("tws", EngineConfig(symbols={"AAPL": D("190")}, volatility_bps=D(0), depth=D(100)))
    engine.step()
    venue = TwsVenue(engine)
    venue.start()
    yield venue
    venue.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", [topics.ORDERS, topics.PORTFOLIO, topics.SAFETY, topics.CONNECTORS])


def ib_connector(port: int) -> dict[str, Any]:
    return {"name": "ib", "kind": "ibkr", "port": port, "client_id": 7, "connect_timeout_s": 3.0,
            "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5}


def journal_position(svc: Service) -> tuple[Decimal, Decimal]:
    """Net quantity and notional of the fills in effect in the journal."""
    quantity = notional = D(0)
    with Journal(svc.state_dir / "journal.sqlite3") as journal:
        for fill in journal.fills():
            quantity += fill.signed_quantity
            notional += fill.signed_quantity * fill.price
    return quantity, notional


def test_a_corrected_ib_execution_is_applied_once_across_a_reconnect(
    tws: TwsVenue, service: Callable[..., Service], recorder: Recorder,
) -> None:
    svc = service(settings_for(ib_connector(tws.port), keeper={"reconcile_interval_s": 30.0},
                               risk={"degradations_to_failsafe": 100, "recover_after_s": 0.5}))
    live(svc)
    engine = tws.engine
    quote = engine.quote("AAPL")
    assert quote is not None
    submit(SubmitOrder(client_order_id="ib-buy-1", venue="ib", symbol="AAPL", side=Side.BUY, quantity=D(10),
                       order_type=OrderType.LIMIT, limit_price=(quote.ask * D("1.01")).quantize(D("0.01")),
                       time_in_force=TimeInForce.DAY, source="test"))
    wait_for(lambda: journal_position(svc)[0] == D(10), timeout_s=15, what="the fill in the journal")
    [execution] = engine.executions(tws.account)

    mark = recorder.count()
    corrected_id = tws.correct_execution(execution.fill_id, execution.price + D("0.05"))
    correction: FillCorrected = recorder.wait_for(lambda m: isinstance(m, FillCorrected), timeout_s=10,
                                                  after=mark)
    assert (correction.fill_id, correction.correction_id) == (execution.fill_id, corrected_id)
    recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.kind == "trade_correction", after=mark)
    recorder.wait_for(lambda m: isinstance(m, Reconciliation) and not m.reconciled, timeout_s=10, after=mark)
    recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15, after=mark)
    expected = (D(10), D(10) * (execution.price + D("0.05")))
    assert journal_position(svc) == expected

    # The session drops; the reconnect's executions report the latest revision only.
    mark = recorder.count()
    tws.disconnect_client(7)
    from messages import ConnectorUp
    recorder.wait_for(lambda m: isinstance(m, ConnectorUp) and m.name == "ib", timeout_s=20, after=mark)
    recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15, after=mark)
    assert journal_position(svc) == expected
    snapshot = svc.ask("position_keeper", GetPortfolio())
    [position] = [p for p in snapshot.positions if p.venue == "ib"]
    assert (position.quantity, position.average_price) == (D(10), execution.price + D("0.05"))
    with Journal(svc.state_dir / "journal.sqlite3") as journal:
        assert len(journal.amendments("ib")) == 1
        assert [f.fill_id for f in journal.fills()] == [corrected_id]

    # A new process: its connector has never seen the first revision, and the venue reports
    # the corrected one only. Still one execution of 10 at the corrected price, no overfill.
    svc.stop()
    mark = recorder.count()
    again = service(settings_for(ib_connector(tws.port), keeper={"reconcile_interval_s": 30.0},
                                 risk={"degradations_to_failsafe": 100, "recover_after_s": 0.5}))
    live(again)
    recorder.wait_for(lambda m: isinstance(m, FillCorrected), timeout_s=10, after=mark)
    snapshot = again.ask("position_keeper", GetPortfolio())
    [position] = [p for p in snapshot.positions if p.venue == "ib"]
    assert (position.quantity, position.average_price) == (D(10), execution.price + D("0.05"))
    assert journal_position(again) == expected
    assert not [m for m in recorder.messages(SafetyEvent) if m.kind == "overfill"]
    with Journal(again.state_dir / "journal.sqlite3") as journal:
        assert len(journal.amendments("ib")) == 1


@pytest.mark.parametrize("master", [True, False], ids=["master-client-live", "other-client-after-reconnect"])
def test_an_execution_from_elsewhere_on_the_ib_account_is_journaled_as_external(
    master: bool, service: Callable[..., Service], recorder: Recorder,
) -> None:
    from messages import ConnectorUp
    from venues.tws_behaviour import TwsBehaviour

    engine = VenueEngine("tws", EngineConfig(symbols={"AAPL": D("190")}, volatility_bps=D(0), depth=D(100)))
    engine.step()
    tws = TwsVenue(engine, behaviour=TwsBehaviour(master_client_id=7 if master else None))
    tws.start()
    try:
        svc = service(settings_for(ib_connector(tws.port), keeper={"reconcile_interval_s": 30.0},
                                   risk={"degradations_to_failsafe": 100, "recover_after_s": 0.5}))
        live(svc)
        mark = recorder.count()
        engine_id = tws.external_fill("AAPL", Side.SELL, D(7))   # a desk trades the account
        if not master:
            # A client that is not the master hears of it through the executions it asks
            # for after a reconnect.
            wait_for(lambda: engine.positions(tws.account), what="the venue's position")
            tws.disconnect_client(7)
            recorder.wait_for(lambda m: isinstance(m, ConnectorUp) and m.name == "ib", timeout_s=20,
                              after=mark)
        warning: SafetyEvent = recorder.wait_for(
            lambda m: isinstance(m, SafetyEvent) and m.kind == "external_fill", timeout_s=15, after=mark)
        recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.reconciled, timeout_s=15,
                          after=recorder.messages().index(warning))
        assert journal_position(svc)[0] == D(-7)
        with Journal(svc.state_dir / "journal.sqlite3") as journal:
            [external] = [r.fill for r in journal.fill_records() if r.external]
        assert external.fill_id in warning.detail and external.client_order_id in warning.detail
        assert engine_id in external.client_order_id or external.client_order_id.startswith("ib-")
        svc.stop()
    finally:
        tws.stop()
