"""A silent IB session takes no orders; late executions are flagged; connectivity codes
halt the venue. The IB connector against the fake TWS over loopback TCP, through a relay
that can stall the link (sockets open, no byte either way)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from messages import (
    ConnectorDown,
    ConnectorUp,
    OrderFilled,
    OrderRejected,
    RejectReason,
    SafetyEvent,
    VenuePositions,
)
from supervision import ChildExited, Tree
from tests.connectors.test_ibkr_connector import (
    ACCOUNT,
    CLIENT_ID,
    NAME,
    TOPICS,
    make_config,
    make_engine,
    of,
    order,
    running_connector,
    send,
)
from tests.fault_proxy import FaultProxy
from tests.helpers import wait_for
from tests.recorder import Recorder
from venues.engine import VenueEngine
from venues.tws_venue import TwsVenue

pytestmark = pytest.mark.timeout(120)

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
    return make_engine()


@pytest.fixture
def venue(engine: VenueEngine) -> Iterator[TwsVenue]:
    tws = TwsVenue(engine)
    tws.start()
    yield tws
    tws.stop()


@pytest.fixture
def proxy(venue: TwsVenue) -> Iterator[FaultProxy]:
    with FaultProxy(venue.port) as relay:
        yield relay


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", TOPICS)


def pace_until(moment: float) -> None:
    """Wait until ``moment`` (monotonic): the rhythm of a strategy sending orders."""
    threading.Event().wait(max(0.0, moment - time.monotonic()))


def at_venue(engine: VenueEngine) -> set[str]:
    """Client order ids of every order the venue executed or still works."""
    return ({f.client_order_id for f in engine.executions(ACCOUNT)}
            | {o.order.client_order_id for o in engine.open_orders(ACCOUNT)})


def late_flags(recorder: Recorder) -> dict[str, SafetyEvent]:
    """The late execution warnings, by the order they name."""
    flags: dict[str, SafetyEvent] = {}
    for event in recorder.messages(SafetyEvent):
        if event.kind == "late_execution":
            coid = event.detail.split()[1]
            flags[coid] = event
    return flags


@contextmanager
def trading(recorder: Recorder, tmp_path: Path, port: int, **overrides: object) -> Iterator[Tree]:
    settings: dict[str, object] = {
        "symbols": (), "probe_interval_s": PROBE_INTERVAL_S, "probe_timeout_s": PROBE_TIMEOUT_S,
        **overrides,
    }
    with running_connector(make_config(port, **settings), tmp_path) as tree:
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10)  # resync done
        send(order("warm-up", quantity=1))  # the contract is looked up once, before the stall
        recorder.wait_for(of(OrderFilled, client_order_id="warm-up"))
        yield tree


def test_a_stall_longer_than_stale_after_refuses_orders_aborts_and_reconnects(
    proxy: FaultProxy, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """The link stalls for 30 s (sockets open, no byte either way) while an order is sent
    every second: orders sent once the probe is overdue are refused at once and never reach
    the venue; the few sent before may reach it late, each flagged; the dead session is
    reset, and the connector reconnects when the link heals."""
    stall_s, stale_after_s = 30.0, 5.0
    with trading(recorder, tmp_path, proxy.port, stale_after_s=stale_after_s,
                 late_ack_warn_s=2.0, connect_timeout_s=2.0, reconnect_max_s=0.5):
        mark = recorder.count()
        sent: dict[str, float] = {}
        proxy.stall()
        stalled_at, stalled_wall_ns = time.monotonic(), time.time_ns()
        for i in range(int(stall_s)):
            pace_until(stalled_at + i + 0.2)
            coid = f"stalled-{i}"
            sent[coid] = time.monotonic() - stalled_at
            send(order(coid, quantity=1))
        pace_until(stalled_at + stall_s)
        down = recorder.wait_for(of(ConnectorDown, name=NAME), after=mark)
        assert "reqCurrentTime" in down.reason
        silent_s = (down.ts_ns - stalled_wall_ns) / 1e9  # the last answer came at most a probe before
        assert stale_after_s - PROBE_INTERVAL_S - 0.1 <= silent_s <= stale_after_s + 3, silent_s
        healed = recorder.count()
        proxy.heal()
        recorder.wait_for(of(ConnectorUp, name=NAME, generation=0), timeout_s=30, after=healed)
        recorder.wait_for(of(VenuePositions, request_id=""), timeout_s=10, after=healed)

        send(order("after", quantity=1))
        recorder.wait_for(of(OrderFilled, client_order_id="after"))

        venue_orders = at_venue(engine)
        flags = late_flags(recorder)
        refused = {m.client_order_id: m for m in recorder.messages(OrderRejected)}
        for coid, offset in sent.items():
            if offset > OVERDUE_S + SLACK_S:
                # Sent after the probe was overdue: refused at once, never written.
                assert coid not in venue_orders, f"{coid} sent {offset:.1f}s into the stall reached the venue"
                assert coid in refused and refused[coid].reason is RejectReason.VENUE_DOWN, coid
            if coid in venue_orders:
                assert offset <= OVERDUE_S + SLACK_S
                assert coid in flags, f"{coid} reached the venue late without a warning"
                assert flags[coid].value is not None and flags[coid].value > 2
        assert "warm-up" not in flags and "after" not in flags
        # The dead session was closed abortively (a reset, not an orderly close).
        assert proxy.client_ends.get(0) == "reset", proxy.client_ends
        assert recorder.messages(ChildExited) == []  # reconnected inside, never restarted


def test_a_short_stall_refuses_new_orders_then_flags_the_late_one(
    proxy: FaultProxy, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    """A stall shorter than ``stale_after_s``: the session survives. The order written just
    before the stall executes late and is flagged; an order sent once the probe is overdue
    is refused while the link is still silent; after the stall orders go through again."""
    with trading(recorder, tmp_path, proxy.port, stale_after_s=30.0, late_ack_warn_s=1.0):
        mark = recorder.count()
        proxy.stall()
        stalled_at = time.monotonic()
        send(order("in-flight", quantity=1))  # written into the silent link
        pace_until(stalled_at + OVERDUE_S + SLACK_S)
        send(order("overdue", quantity=1))
        refused = recorder.wait_for(of(OrderRejected, client_order_id="overdue"), after=mark)
        assert proxy.stalled  # refused while the link is silent, not when it heals
        assert refused.reason is RejectReason.VENUE_DOWN and "stale" in refused.text
        pace_until(stalled_at + 3.5)
        proxy.heal()

        filled = recorder.wait_for(of(OrderFilled, client_order_id="in-flight"), timeout_s=10)
        flag = recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.kind == "late_execution",
                                 after=mark)
        assert "in-flight" in flag.detail and flag.value is not None and flag.value >= 2
        assert filled.client_order_id == "in-flight"

        def goes_through() -> bool:
            coid = f"healed-{time.monotonic_ns()}"
            send(order(coid, quantity=1))
            answer = recorder.wait_for(lambda m: isinstance(m, (OrderFilled, OrderRejected))
                                       and m.client_order_id == coid)
            return isinstance(answer, OrderFilled)

        wait_for(goes_through, timeout_s=10, interval_s=0.2, what="orders fill once the probe answers")
        assert "overdue" not in at_venue(engine)
        assert recorder.messages(ConnectorDown) == []  # stale is not down: the session lived
        assert set(late_flags(recorder)) == {"in-flight"}


@pytest.mark.parametrize(("halt", "restore"), [(1100, 1102), (2110, 1101)])
def test_connectivity_codes_halt_the_venue_until_restored(
    halt: int, restore: int, venue: TwsVenue, engine: VenueEngine, recorder: Recorder, tmp_path: Path
) -> None:
    with trading(recorder, tmp_path, venue.port):
        mark = recorder.count()
        venue.inject_error(halt)
        down = recorder.wait_for(of(ConnectorDown, name=NAME), after=mark)
        assert str(halt) in down.reason
        send(order("halted", quantity=1))
        refused = recorder.wait_for(of(OrderRejected, client_order_id="halted"))
        assert refused.reason is RejectReason.VENUE_DOWN

        venue.inject_error(restore)
        recorder.wait_for(of(ConnectorUp, name=NAME, generation=0), after=mark)
        send(order("restored", quantity=1))
        recorder.wait_for(of(OrderFilled, client_order_id="restored"))
        assert "halted" not in at_venue(engine)
        assert venue.connected_client_ids() == [CLIENT_ID]  # the same session throughout
        assert len(recorder.messages(ConnectorDown)) == 1
        assert recorder.messages(ChildExited) == []
