"""A silent FIX session takes no orders; late acknowledgements are flagged; a resting order
carries an ExpireTime the venue honours. The FIX connector against the simulated FIX venue
over loopback TCP, through a relay that can stall the link (sockets open, no byte either
way)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import quickfix as fix

from actors import topics
from actors.connectors.fix import FixConfig, FixConnector
from messages import (
    ConnectorDown,
    ConnectorUp,
    OrderFilled,
    OrderRejected,
    OrderType,
    RejectReason,
    SafetyEvent,
    Side,
    SubmitOrder,
    TimeInForce,
    VenuePositions,
)
from messages.fix_spec import GTD, Tag, utc_timestamp
from supervision import SUPERVISION_TOPIC, Backoff, ChildExited, ChildSpec, Tree, registry
from tests.fault_proxy import FaultProxy
from tests.helpers import wait_for
from tests.recorder import Recorder
from venues.engine import EngineConfig, VenueEngine
from venues.fix_venue import FixVenue, expired_on_arrival, free_port

pytestmark = pytest.mark.timeout(120)

NAME = "fix-stale"
ACCOUNT = "TRADEGUARD"
TOPICS = (topics.ORDERS, topics.POSITIONS, topics.CONNECTORS, topics.SAFETY, SUPERVISION_TOPIC)
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 0.5
OVERDUE_S = PROBE_INTERVAL_S + PROBE_TIMEOUT_S
"""After this long without an answer (from the stall's start at the latest) a probe is
overdue and no order may be written."""
SLACK_S = 0.5
"""Scheduling slack on a loaded machine: an order sent within this of the overdue moment
may go either way."""


@pytest.fixture
def engine() -> VenueEngine:
    engine = VenueEngine("fixsim", EngineConfig(symbols={"AAPL": Decimal("190")},
                                                volatility_bps=Decimal(0), depth=Decimal(100)))
    engine.step()
    return engine


@pytest.fixture
def venue(engine: VenueEngine, tmp_path: Path) -> Iterator[FixVenue]:
    front = FixVenue(engine, free_port(), tmp_path / "venue")
    front.start()
    yield front
    front.stop()


@pytest.fixture
def proxy(venue: FixVenue) -> Iterator[FaultProxy]:
    with FaultProxy(venue.port) as relay:
        yield relay


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", TOPICS)


def of(kind: type, **expected: Any) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, kind) and all(getattr(m, k) == v for k, v in expected.items())


def send(message: Any) -> None:
    assert registry.tell(NAME, message), "the connector is not registered"


def order(coid: str, *, limit: bool = False) -> SubmitOrder:
    """One share of AAPL; ``limit``: a marketable resting limit order (it fills at once)."""
    if limit:
        return SubmitOrder(client_order_id=coid, venue=NAME, symbol="AAPL", side=Side.BUY,
                           quantity=Decimal(1), order_type=OrderType.LIMIT,
                           limit_price=Decimal(250), source="test")
    return SubmitOrder(client_order_id=coid, venue=NAME, symbol="AAPL", side=Side.BUY,
                       quantity=Decimal(1), source="test")


def pace_until(moment: float) -> None:
    """Wait until ``moment`` (monotonic): the rhythm of a strategy sending orders."""
    threading.Event().wait(max(0.0, moment - time.monotonic()))


def at_venue(engine: VenueEngine) -> set[str]:
    """Client order ids of every order the venue executed or still works."""
    return ({f.client_order_id for f in engine.executions(ACCOUNT)}
            | {o.order.client_order_id for o in engine.open_orders(ACCOUNT)})


def late_flags(recorder: Recorder) -> dict[str, SafetyEvent]:
    return {e.detail.split()[1]: e for e in recorder.messages(SafetyEvent) if e.kind == "late_execution"}


@contextmanager
def trading(recorder: Recorder, tmp_path: Path, port: int, **overrides: Any) -> Iterator[Tree]:
    settings: dict[str, Any] = {
        "name": NAME, "port": port, "symbols": (), "connect_timeout_s": 3.0,
        "heartbeat_s": 30,  # quickfix's own heartbeat timeout stays out of the way
        "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5,
        "probe_interval_s": PROBE_INTERVAL_S, "probe_timeout_s": PROBE_TIMEOUT_S, **overrides,
    }  # fmt: skip
    spec = ChildSpec(name=NAME, actor_class=FixConnector, args=(FixConfig(**settings), tmp_path))
    tree = Tree([spec], name="connectors", intensity=50, period_s=10.0,
                backoff=Backoff(initial_s=0.05, maximum_s=0.2, jitter_s=0.01), poll_s=0.1)
    tree.start(timeout_s=10)
    try:
        recorder.wait_for(of(ConnectorUp, name=NAME), timeout_s=10)
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10)  # resync done
        send(order("warm-up"))
        recorder.wait_for(of(OrderFilled, client_order_id="warm-up"))
        yield tree
    finally:
        tree.stop()


def test_a_stall_longer_than_stale_after_refuses_orders_resets_and_reconnects(
    proxy: FaultProxy, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """The link stalls for 12 s while an order is sent every second: orders sent once the
    TestRequest is overdue are refused at once and never reach the venue; the few sent
    before may reach it late, each flagged; the dead session is reset (SO_LINGER 0), and
    the connector reconnects when the link heals."""
    stall_s, stale_after_s = 12.0, 5.0
    with trading(recorder, tmp_path, proxy.port, stale_after_s=stale_after_s, late_ack_warn_s=2.0):
        mark = recorder.count()
        sent: dict[str, float] = {}
        proxy.stall()
        stalled_at, stalled_wall_ns = time.monotonic(), time.time_ns()
        for i in range(int(stall_s)):
            pace_until(stalled_at + i + 0.2)
            coid = f"stalled-{i}"
            sent[coid] = time.monotonic() - stalled_at
            send(order(coid))
        pace_until(stalled_at + stall_s)
        down = recorder.wait_for(of(ConnectorDown, name=NAME), after=mark)
        assert "TestRequest" in down.reason
        silent_s = (down.ts_ns - stalled_wall_ns) / 1e9  # the last answer came at most a probe before
        assert stale_after_s - PROBE_INTERVAL_S - 0.1 <= silent_s <= stale_after_s + 3, silent_s
        healed = recorder.count()
        proxy.heal()
        recorder.wait_for(of(ConnectorUp, name=NAME), timeout_s=30, after=healed)
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10, after=healed)
        send(order("after"))
        recorder.wait_for(of(OrderFilled, client_order_id="after"), timeout_s=10)

        venue_orders = at_venue(engine)
        # Every order at the venue is acknowledged to the connector (resend or status).
        for coid in venue_orders & set(sent):
            recorder.wait_for(of(OrderFilled, client_order_id=coid), timeout_s=10)
        flags = late_flags(recorder)
        refused = {m.client_order_id: m for m in recorder.messages(OrderRejected)}
        for coid, offset in sent.items():
            if offset > OVERDUE_S + SLACK_S:
                assert coid not in venue_orders, f"{coid} sent {offset:.1f}s into the stall reached the venue"
                assert coid in refused and refused[coid].reason is RejectReason.VENUE_DOWN, coid
                assert "stale" in refused[coid].text or "not logged on" in refused[coid].text
            if coid in venue_orders:
                assert offset <= OVERDUE_S + SLACK_S
                assert coid in flags, f"{coid} reached the venue late without a warning"
                delay = flags[coid].value
                assert delay is not None and delay > 2
        assert sum(offset > OVERDUE_S + SLACK_S for offset in sent.values()) >= 8
        assert "warm-up" not in flags and "after" not in flags
        # The dead session was closed abortively (a reset, not an orderly close).
        assert proxy.client_ends.get(0) == "reset", proxy.client_ends
        assert recorder.messages(ChildExited) == []  # reconnected inside, never restarted


def test_a_short_stall_refuses_new_orders_and_the_venue_refuses_the_expired_one(
    proxy: FaultProxy, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """A stall shorter than ``stale_after_s``: the session survives. A resting limit order
    written just before the stall carries an ExpireTime 1 s ahead; it reaches the venue
    3.5 s later and the venue refuses it (too late to enter). An order sent once the probe
    is overdue is refused while the link is still silent; after the stall orders go
    through again, a late market order (no expiry) flagged late."""
    with trading(recorder, tmp_path, proxy.port, stale_after_s=30.0, late_ack_warn_s=1.0,
                 order_expiry_s=1.0):
        mark = recorder.count()
        proxy.stall()
        stalled_at = time.monotonic()
        send(order("expiring", limit=True))  # written into the silent link, good for 1 s
        send(order("in-flight"))  # a market order: no expiry in FIX
        pace_until(stalled_at + OVERDUE_S + SLACK_S)
        send(order("overdue", limit=True))
        refused = recorder.wait_for(of(OrderRejected, client_order_id="overdue"), after=mark)
        assert proxy.stalled  # refused while the link is silent, not when it heals
        assert refused.reason is RejectReason.VENUE_DOWN and "stale" in refused.text
        pace_until(stalled_at + 3.5)
        proxy.heal()

        expired = recorder.wait_for(of(OrderRejected, client_order_id="expiring"), timeout_s=10)
        assert expired.reason is RejectReason.VENUE and "ExpireTime" in expired.text
        assert "OrdRejReason 4" in expired.text  # too late to enter
        recorder.wait_for(of(OrderFilled, client_order_id="in-flight"), timeout_s=10)
        flag = recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.kind == "late_execution",
                                 after=mark)
        assert "in-flight" in flag.detail and flag.value is not None and flag.value >= 2

        def goes_through() -> bool:
            coid = f"healed-{time.monotonic_ns()}"
            send(order(coid, limit=True))
            answer = recorder.wait_for(lambda m: isinstance(m, (OrderFilled, OrderRejected))
                                       and m.client_order_id == coid)
            return isinstance(answer, OrderFilled)

        wait_for(goes_through, timeout_s=10, interval_s=0.2, what="orders fill once the probe answers")
        assert "expiring" not in at_venue(engine) and "overdue" not in at_venue(engine)
        assert recorder.messages(ConnectorDown) == []  # stale is not down: the session lived
        assert set(late_flags(recorder)) == {"in-flight"}


def _new_order(tif: str | None, expire: str | None) -> fix.Message:
    message = fix.Message()
    message.getHeader().setField(Tag.MSG_TYPE, "D")
    if tif is not None:
        message.setField(Tag.TIME_IN_FORCE, tif)
    if expire is not None:
        message.setField(Tag.EXPIRE_TIME, expire)
    return message


def test_the_venue_refuses_a_gtd_order_whose_expire_time_has_passed() -> None:
    now = time.time_ns()
    assert expired_on_arrival(_new_order(GTD, utc_timestamp(now + 2_000_000_000)), now) == ""
    assert "passed" in expired_on_arrival(_new_order(GTD, utc_timestamp(now - 1_000_000)), now)
    assert expired_on_arrival(_new_order("0", utc_timestamp(now - 10**9)), now) == ""  # DAY: no expiry
    assert expired_on_arrival(_new_order(None, None), now) == ""
    with pytest.raises(ValueError, match="ExpireTime"):
        expired_on_arrival(_new_order(GTD, None), now)
    with pytest.raises(ValueError, match="UTCTimestamp"):
        expired_on_arrival(_new_order(GTD, "tomorrow"), now)


def test_resting_limit_orders_carry_gtd_and_an_expire_time(
    venue: FixVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """With ``order_expiry_s`` the venue receives TimeInForce GTD and ExpireTime; a market
    order and an IOC order keep their own time in force."""
    with trading(recorder, tmp_path, venue.port, order_expiry_s=30.0):
        resting = SubmitOrder(client_order_id="resting", venue=NAME, symbol="AAPL", side=Side.BUY,
                              quantity=Decimal(1), order_type=OrderType.LIMIT,
                              limit_price=Decimal(100), time_in_force=TimeInForce.DAY, source="test")
        send(resting)
        wait_for(lambda: "resting" in at_venue(engine), timeout_s=5, what="the resting order works")
        log = (tmp_path / "venue").rglob("*messages*")
        text = "".join(path.read_text(errors="replace") for path in log if path.is_file())
        line = next(m for m in text.split("\n") if "11=resting\x01" in m and "35=D\x01" in m)
        assert "\x0159=6\x01" in line and "\x01126=" in line
        market = next(m for m in text.split("\n") if "11=warm-up\x01" in m and "35=D\x01" in m)
        assert "\x01126=" not in market


def test_a_resting_gtd_order_expires_at_the_venue_at_its_expire_time(
    venue: FixVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """The venue takes a working GTD order off the book once its ExpireTime passes and
    reports it expired (ExecType C); the connector ends the order."""
    with trading(recorder, tmp_path, venue.port, order_expiry_s=1.5):
        mark = recorder.count()
        send(SubmitOrder(client_order_id="short-lived", venue=NAME, symbol="AAPL", side=Side.BUY,
                         quantity=Decimal(1), order_type=OrderType.LIMIT, limit_price=Decimal(100),
                         time_in_force=TimeInForce.GTC, source="test"))
        wait_for(lambda: "short-lived" in at_venue(engine), timeout_s=5, what="the order works")
        sent = time.monotonic()

        def expired() -> bool:
            engine.step()
            return not any(o.order.client_order_id == "short-lived" for o in engine.open_orders(ACCOUNT))

        wait_for(expired, timeout_s=10, interval_s=0.1, what="the venue expires the order")
        assert time.monotonic() - sent >= 1.0  # not before its ExpireTime
        ended = recorder.wait_for(lambda m: getattr(m, "client_order_id", None) == "short-lived"
                                  and not isinstance(m, (OrderFilled, SafetyEvent))
                                  and type(m).__name__ != "OrderAccepted", after=mark)
        assert "expire" in ended.text.lower()
        assert "short-lived" not in {f.client_order_id for f in engine.executions(ACCOUNT)}


@pytest.mark.parametrize("begin_string", ["FIX.4.2", "FIXT.1.1"])
def test_gtd_orders_pass_every_begin_string(begin_string: str, engine: VenueEngine, recorder: Recorder,
                                            tmp_path: Path) -> None:
    """The data dictionaries of FIX 4.2 and 5.0 SP2 take TimeInForce GTD and ExpireTime."""
    front = FixVenue(engine, free_port(), tmp_path / "venue", begin_string=begin_string)
    front.start()
    try:
        with trading(recorder, tmp_path, front.port, begin_string=begin_string, order_expiry_s=30.0):
            send(SubmitOrder(client_order_id="gtd", venue=NAME, symbol="AAPL", side=Side.BUY,
                             quantity=Decimal(1), order_type=OrderType.LIMIT, limit_price=Decimal(100),
                             source="test"))
            wait_for(lambda: "gtd" in at_venue(engine), timeout_s=5, what="the GTD order works")
            assert not [m for m in recorder.messages(OrderRejected) if m.client_order_id == "gtd"]
    finally:
        front.stop()
