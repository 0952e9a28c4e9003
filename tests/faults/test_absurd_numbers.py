"""An absurd but finite number from a venue (``1e999999999``: every sum or product of it
raises ``decimal.Overflow``) is counted and logged as malformed where it enters; the
service keeps running, in the same mode, and keeps trading.

The whole service runs (governor, keeper, failsafe, safety monitor, dashboard) with a
ZeroMQ and a FIX connector (then an IB connector) against real venues on loopback; the
venues send the poison on their real sockets: quotes and fills over ZeroMQ, an execution
report and a market data snapshot over a FIX session, price ticks from the fake TWS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import quickfix as fix
from loguru import logger

from actors import topics
from actors.position_keeper import GetPortfolio
from actors.risk_governor import GetRiskState
from messages import HealthReport, OrderFilled, QuoteBatch, Side, SubmitOrder
from messages.fix_spec import Tag, utc_timestamp
from supervision import SUPERVISION_TOPIC, ChildExited, registry
from tests.connectors.test_ibkr_connector import write_to_sessions
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.system.processes import free_port
from tradeguard.app import Service
from tradeguard.control import ControlError, send_command
from tradeguard.settings import parse_settings
from venues.engine import EngineConfig, EngineRunner, VenueEngine
from venues.fix_venue import FixVenue
from venues.tws_venue import TwsVenue
from venues.zmq_venue import ZmqVenue

POISON = "1e999999999"
"""Finite, and past any arithmetic: ``Decimal(POISON) + 1`` raises ``decimal.Overflow``."""

HUGE_DIGITS = "9" * 2000
"""A plain run of digits: valid FIX for a price field, absurd for tradeguard."""


class Venues:
    """A ZeroMQ venue and a FIX venue, their engines stepping in the background."""

    def __init__(self, state_dir: Path) -> None:
        self.zmq_engine = VenueEngine("zsim", EngineConfig(depth=Decimal(100)))
        self.fix_engine = VenueEngine("fsim", EngineConfig(depth=Decimal(100)))
        self.zmq = ZmqVenue(self.zmq_engine, heartbeat_s=0.2)
        self.fix_port = free_port()
        self.fix = FixVenue(self.fix_engine, self.fix_port, state_dir / "fix-venue")
        self.runners = [EngineRunner(self.zmq_engine, 0.05), EngineRunner(self.fix_engine, 0.05)]

    def start(self) -> None:
        self.zmq.start()
        self.fix.start()
        for runner in self.runners:
            runner.start()

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop()
        self.fix.stop()
        self.zmq.stop()


@pytest.fixture
def venues(tmp_path: Path) -> Iterator[Venues]:
    running = Venues(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every log record (with its exception) the service writes during the test."""
    lines: list[str] = []
    lock = threading.Lock()

    def sink(message: Any) -> None:
        with lock:
            lines.append(str(message))

    sink_id = logger.add(sink, level="DEBUG", format="{level} {message} {extra}\n{exception}")
    try:
        yield lines
    finally:
        logger.remove(sink_id)


def settings_for(venues: Venues) -> Any:
    return parse_settings({
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 20.0},
        "risk": {"max_orders_per_s": 1000},
        "failsafe": {"round_timeout_s": 0.5},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "backoff_jitter_s": 0.01},
        "connectors": [
            {"name": "zmq", "kind": "zmq", "symbols": ["AAPL", "MSFT"], "health_interval_s": 0.1,
             "market_endpoint": venues.zmq.market_endpoint, "order_endpoint": venues.zmq.order_endpoint},
            {"name": "fix", "kind": "fix", "symbols": ["AAPL", "MSFT"], "health_interval_s": 0.1,
             "port": venues.fix_port, "connect_timeout_s": 5.0},
        ],
        "strategies": [],
    }, environ={})


def health(recorder: Recorder, name: str) -> HealthReport:
    """The connector's last health report (an empty one before the first)."""
    reports = [h for h in recorder.messages(HealthReport) if h.name == name]
    last: HealthReport = reports[-1] if reports else HealthReport(name=name, connected=False)
    return last


def zmq_quote(session: str, symbol: str, **values: Any) -> list[bytes]:
    frame = {"type": "quote", "session": session, "seq": 1, "symbol": symbol, "bid": "100",
             "ask": "101", "bid_size": "1", "ask_size": "1", "ts_ns": 1}
    raw = json.dumps({**frame, **{k: "@@" + k for k in values}})
    for key, token in values.items():
        raw = raw.replace(f'"@@{key}"', token)
    return [symbol.encode(), raw.encode()]


def zmq_fill(price_token: str) -> bytes:
    frame = {"type": "filled", "client_order_id": "ghost", "fill_id": "poison-1", "symbol": "AAPL",
             "side": "buy", "quantity": "1", "price": "@@price", "leaves": "0", "venue_order_id": "x",
             "ts_ns": 1}
    return json.dumps(frame).replace('"@@price"', price_token).encode()


def fix_fill(px: str) -> fix.Message:
    message = fix.Message()
    message.getHeader().setField(Tag.MSG_TYPE, "8")
    for tag, value in ((Tag.ORDER_ID, "1"), (Tag.CL_ORD_ID, "ghost"), (Tag.EXEC_ID, "poison-2"),
                       (Tag.EXEC_TYPE, "F"), (Tag.ORD_STATUS, "2"), (Tag.SYMBOL, "AAPL"), (Tag.SIDE, "1"),
                       (Tag.LAST_QTY, "1"), (Tag.LAST_PX, px), (Tag.LEAVES_QTY, "0"), (Tag.CUM_QTY, "1"),
                       (Tag.AVG_PX, px), (Tag.TRANSACT_TIME, utc_timestamp())):
        message.setField(tag, value)
    return message


def fix_snapshot(px: str) -> fix.Message:
    message = fix.Message()
    message.getHeader().setField(Tag.MSG_TYPE, "W")
    message.setField(Tag.SYMBOL, "MSFT")
    for entry_type, price in (("0", px), ("1", px)):
        group = fix.Group(Tag.NO_MD_ENTRIES, Tag.MD_ENTRY_TYPE)
        group.setField(Tag.MD_ENTRY_TYPE, entry_type)
        group.setField(Tag.MD_ENTRY_PX, price)
        group.setField(Tag.MD_ENTRY_SIZE, "5")
        message.addGroup(group)
    return message


@pytest.mark.timeout(120)
def test_absurd_numbers_from_zmq_and_fix_venues_are_malformed_and_the_service_trades_on(
    venues: Venues, tmp_path: Path, log_lines: list[str]
) -> None:
    recorder = Recorder.spawn("poison-recorder", [topics.HEALTH, topics.ORDERS, topics.MARKET,
                                                  SUPERVISION_TOPIC])
    service = Service(settings_for(venues), tmp_path / "state")
    try:
        service.start()
        wait_for(lambda: (service.ask("risk_governor", GetRiskState()) or {}).get("mode") == "LIVE",
                 20.0, what="LIVE with both connectors up")
        wait_for(lambda: health(recorder, "zmq").messages_in > 0 and health(recorder, "fix").connected,
                 10.0, what="health from both connectors")
        # LIVE needs one venue only: the poison goes out once market data flows from both
        # (a ZeroMQ subscriber that has not joined yet would never see it).
        for venue in ("zmq", "fix"):
            recorder.wait_for(lambda m, v=venue: isinstance(m, QuoteBatch) and m.venue == v, timeout_s=10.0)
        before = {name: health(recorder, name).malformed for name in ("zmq", "fix")}
        mark = recorder.count()

        # ZeroMQ: quotes with the poison as a string and as a bare JSON number, a fill with it.
        venues.zmq.publish_raw(zmq_quote(venues.zmq.session, "AAPL", bid=f'"{POISON}"'))
        venues.zmq.publish_raw(zmq_quote(venues.zmq.session, "MSFT", ask=POISON))
        venues.zmq.publish_raw(zmq_quote(venues.zmq.session, "AAPL", bid_size=f'"-{POISON}"'))
        venues.zmq._enqueue("event", zmq_fill(f'"{POISON}"'))  # on the order channel, as the venue sends
        venues.zmq._enqueue("event", zmq_fill(POISON))
        # FIX: an execution report and a snapshot whose prices are 2,000 digits long.
        assert venues.fix.send(fix_fill(HUGE_DIGITS))
        assert venues.fix.send(fix_snapshot(HUGE_DIGITS))

        wait_for(lambda: health(recorder, "zmq").malformed >= before["zmq"] + 5, 10.0,
                 what="5 malformed ZeroMQ frames counted")
        wait_for(lambda: health(recorder, "fix").malformed >= before["fix"] + 2, 10.0,
                 what="2 malformed FIX messages counted")

        # Market data goes on from both venues, for the symbols the poison named too.
        for venue, symbol in (("zmq", "AAPL"), ("zmq", "MSFT"), ("fix", "MSFT")):
            recorder.wait_for(lambda m, v=venue, s=symbol: isinstance(m, QuoteBatch) and m.venue == v
                              and any(q.symbol == s for q in m.quotes), timeout_s=10.0, after=mark)
        # The service stays up, in the same mode, and trades on both venues.
        for venue in ("zmq", "fix"):
            coid = f"after-poison-{venue}"
            registry.tell("risk_governor", SubmitOrder(client_order_id=coid, venue=venue, symbol="AAPL",
                                                       side=Side.BUY, quantity=Decimal(1), source="test"))
            recorder.wait_for(lambda m, c=coid: isinstance(m, OrderFilled) and m.client_order_id == c,
                              timeout_s=15.0)
        assert service.healthy()
        assert (service.ask("risk_governor", GetRiskState()) or {}).get("mode") == "LIVE"
        portfolio = service.ask("position_keeper", GetPortfolio())
        assert portfolio is not None
        assert {(p.venue, p.quantity) for p in portfolio.positions if p.symbol == "AAPL"} == {
            ("zmq", Decimal(1)), ("fix", Decimal(1))}
        assert all(f.fill_id not in ("poison-1", "poison-2") for f in recorder.messages(OrderFilled))
        assert recorder.messages(ChildExited) == []  # no actor died, none was restarted
        text = "".join(log_lines)
        assert "Overflow" not in text and "InvalidOperation" not in text
        assert "magnitude must be below" in text  # the malformed message is logged, naming why
    finally:
        service.stop()


# ---- the fake TWS (IB's wire protocol) ----------------------------------------------------------


@pytest.mark.timeout(120)
def test_absurd_ticks_from_the_fake_tws_are_malformed_and_the_service_trades_on(
    tmp_path: Path, log_lines: list[str]
) -> None:
    engine = VenueEngine("tws", EngineConfig(symbols={"AAPL": Decimal("190"), "MSFT": Decimal("410")},
                                             volatility_bps=Decimal(0), depth=Decimal(100)))
    engine.step()
    tws = TwsVenue(engine)
    tws.start()
    recorder = Recorder.spawn("poison-recorder", [topics.HEALTH, topics.ORDERS, topics.MARKET,
                                                  SUPERVISION_TOPIC])
    service = Service(parse_settings({
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 20.0},
        "risk": {"max_orders_per_s": 1000},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "backoff_jitter_s": 0.01},
        "connectors": [{"name": "ib", "kind": "ibkr", "symbols": ["AAPL", "MSFT"], "port": tws.port,
                        "health_interval_s": 0.1, "connect_timeout_s": 5.0}],
        "strategies": [],
    }, environ={}), tmp_path / "state")
    try:
        service.start()
        wait_for(lambda: (service.ask("risk_governor", GetRiskState()) or {}).get("mode") == "LIVE",
                 20.0, what="LIVE with the IB connector up")
        recorder.wait_for(lambda m: isinstance(m, QuoteBatch) and m.venue == "ib", timeout_s=10.0)
        before = health(recorder, "ib").malformed
        mark = recorder.count()

        def poison(market_data: dict[int, str]) -> list[list[object]]:
            (req,) = [r for r, symbol in market_data.items() if symbol == "AAPL"]
            return [
                [1, 6, req, 1, "1e300", 100, 0],  # bid: a float, finite, absurd
                [1, 6, req, 2, "1.7976931348623157e308", 100, 0],  # ask: the largest float
                [1, 6, req, 4, "1e300", 5, 0],  # a trade print at an absurd price
            ]

        write_to_sessions(tws, poison)
        wait_for(lambda: health(recorder, "ib").malformed >= before + 2, 10.0,
                 what="the absurd quote and trade counted malformed")
        absurd = [q for b in recorder.messages(QuoteBatch)[mark:] if b.venue == "ib"
                  for q in (*b.quotes, *b.trades) if getattr(q, "bid", getattr(q, "price", 0)) > 10**6]
        assert absurd == []

        engine.set_mid("AAPL", Decimal("195"))
        engine.step()  # both sides quoted again: AAPL is sane again
        recorder.wait_for(lambda m: isinstance(m, QuoteBatch) and m.venue == "ib"
                          and any(q.symbol == "AAPL" and q.bid < 200 for q in m.quotes),
                          timeout_s=10.0, after=mark)
        registry.tell("risk_governor", SubmitOrder(client_order_id="after-poison-ib", venue="ib",
                                                   symbol="AAPL", side=Side.BUY, quantity=Decimal(1),
                                                   source="test"))
        recorder.wait_for(lambda m: isinstance(m, OrderFilled) and m.client_order_id == "after-poison-ib",
                          timeout_s=15.0)
        assert service.healthy()
        assert (service.ask("risk_governor", GetRiskState()) or {}).get("mode") == "LIVE"
        assert recorder.messages(ChildExited) == []
        text = "".join(log_lines)
        assert "Overflow" not in text and "InvalidOperation" not in text
        assert "magnitude must be below" in text
    finally:
        service.stop()
        tws.stop()


# ---- the control socket ---------------------------------------------------------------------------


def test_a_command_whose_text_is_not_unicode_is_refused_and_the_control_socket_answers_on(
    service: Callable[..., Service], tmp_path: Path
) -> None:
    """JSON's escapes can spell a lone surrogate (``"\\ud800"``); such a reason or operator
    name is no text a log, the journal or the wire could take: the command is refused."""
    running = service()
    state = tmp_path / "state"
    wait_for(lambda: (running.ask("risk_governor", GetRiskState()) or {}).get("mode") == "LIVE", 10.0,
             what="LIVE")
    with pytest.raises(ControlError):
        send_command(state, "pause", reason="lunch \ud800")
    with pytest.raises(ControlError):
        send_command(state, "pause", reason="lunch", operator="\udfffmallory")
    status = send_command(state, "status")
    assert status["paused"] is False and status["mode"] == "LIVE"
    send_command(state, "pause", reason="lunch \U0001f37d", operator="alice")  # valid text passes
    assert send_command(state, "status")["paused"] is True
    assert running.healthy()
