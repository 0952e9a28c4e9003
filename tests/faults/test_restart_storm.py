"""A venue gone for good: its connector stays up and disconnected, and once the outage
outlasts ``max_outage_s`` the governor escalates to FAILSAFE; every venue that can still be
reached ends flat."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors import topics
from messages import FailsafeReport, GetRiskState, Mode, ModeChanged, QuoteBatch, Side, SubmitOrder
from supervision import SUPERVISION_TOPIC, SupervisorGaveUp, registry
from tests.helpers import wait_for
from tests.recorder import Recorder
from tradeguard.app import Service
from tradeguard.settings import parse_settings
from venues.engine import EngineConfig, EngineRunner, VenueEngine
from venues.paper import paper_venue, stop_paper_venues
from venues.zmq_venue import DEFAULT_ACCOUNT, ZmqVenue

ENGINE = EngineConfig(symbols={"AAPL": Decimal("190"), "MSFT": Decimal("410")}, seed=5)


@pytest.fixture
def zmq_venue() -> Iterator[ZmqVenue]:
    engine = VenueEngine("zmq", ENGINE)
    runner = EngineRunner(engine, interval_s=0.02)
    runner.start()
    venue = ZmqVenue(engine, heartbeat_s=0.1)
    venue.start()
    try:
        yield venue
    finally:
        venue.stop()
        runner.stop()
        stop_paper_venues()


def test_an_outage_past_max_outage_s_triggers_failsafe_and_reachable_venues_end_flat(
    tmp_path: Path, zmq_venue: ZmqVenue
) -> None:
    market_port, order_port = zmq_venue.market_endpoint, zmq_venue.order_endpoint
    settings = parse_settings({
        "service": {"on_shutdown": "leave"},
        "supervision": {"connectors_intensity": 3, "connectors_period_s": 30.0,
                        "backoff_initial_s": 0.02, "backoff_max_s": 0.1, "backoff_jitter_s": 0.0,
                        "root_intensity": 20},
        "risk": {"degradations_to_failsafe": 0, "max_outage_s": 2.0},
        "connectors": [
            {"name": "paper", "kind": "paper", "symbols": ["AAPL"], "persist": False,
             "quote_interval_s": 0.02},
            {"name": "zmq", "kind": "zmq", "symbols": ["AAPL", "MSFT"], "stale_after_s": 1.0,
             "market_endpoint": market_port, "order_endpoint": order_port, "ping_interval_s": 0.2},
        ],
    }, environ={})
    recorder = Recorder.spawn("recorder", [topics.MODE, topics.FAILSAFE, SUPERVISION_TOPIC])
    market = Recorder.spawn("market", [topics.MARKET])
    service = Service(settings, tmp_path)
    service.start()
    try:
        wait_for(lambda: service.ask("risk_governor", GetRiskState()).get("mode") == "LIVE", timeout_s=15,
                 what="LIVE with both connectors up")
        # Two batches: the first has reached every subscriber (the governor's mids) by the time
        # the second is published.
        first = market.wait_for(lambda m: isinstance(m, QuoteBatch) and m.venue == "zmq"
                                and {q.symbol for q in m.quotes} == {"AAPL", "MSFT"}, timeout_s=10)
        market.wait_for(lambda m: isinstance(m, QuoteBatch) and m.venue == "zmq" and m is not first,
                        timeout_s=10, after=market.messages().index(first) + 1)
        for n, (symbol, side) in enumerate((("AAPL", Side.BUY), ("MSFT", Side.SELL))):
            registry.tell("risk_governor", SubmitOrder(
                client_order_id=f"storm-{n}", venue="zmq", symbol=symbol, side=side,
                quantity=Decimal(5), source="test"))
        wait_for(lambda: len(zmq_venue.engine.positions(DEFAULT_ACCOUNT)) == 2, timeout_s=10,
                 what="two positions at the reachable venue")

        paper_venue("paper").fail("venue gone for good")  # every reconnect now fails

        changed = recorder.wait_for(lambda m: isinstance(m, ModeChanged) and m.current is Mode.FAILSAFE,
                                    timeout_s=20)
        assert "max_outage_s" in changed.reason and "paper" in changed.reason, changed.reason
        # No connector restarted for it: the outage is the connector's own, reconnecting inside.
        assert not [m for m in recorder.messages() if isinstance(m, SupervisorGaveUp)]
        # The reachable venue is flattened; the unreachable one is reported not flat.
        wait_for(lambda: zmq_venue.engine.positions(DEFAULT_ACCOUNT) == [], timeout_s=30,
                 what="the reachable venue flat")
        assert zmq_venue.engine.open_orders(DEFAULT_ACCOUNT) == []
        report = recorder.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=30)
        assert "zmq" in report.detail
        assert service.ask("risk_governor", GetRiskState())["mode"] == "FAILSAFE"
    finally:
        service.stop("leave")
