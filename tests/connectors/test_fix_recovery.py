"""FIX recovery against the real FixVenue acceptor over loopback: order status (35=H) at
every logon, inferred fills, session and business rejects, trade busts and corrections.

The venue recovers by the standard (no trade replay on AF); where the test says so it also
gap-fills the execution reports a ResendRequest asks for, so fills made while the session
is down reach the connector only through the order status.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import quickfix as fix

from actors import topics
from actors.connectors.fix import FixConfig
from actors.journal import Journal
from messages import (
    ConnectorDown,
    ConnectorUp,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
)
from messages.orders import FillBusted, FillCorrected
from supervision import Tree, bus
from tests.connectors.test_fix_connector import (
    ACCOUNT,
    NAME,
    Inbox,
    coid_is,
    engine,
    inbox,
    latest_health,
    make_config,
    order,
    resting,
    start_tree,
    tell,
)
from tests.helpers import wait_for
from venues.engine import VenueEngine
from venues.fix_venue import FIX42, FIX44, FixBehaviour, FixVenue, free_port

__all__ = ["engine", "inbox"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(120)


class Pair:
    """A running venue and a supervised connector, the venue's session droppable at will."""

    def __init__(self, engine: VenueEngine, state_dir: Path, behaviour: FixBehaviour,
                 begin_string: str = FIX44, **config: Any) -> None:
        self.engine = engine
        self.state_dir = state_dir
        self.port = free_port()
        self.venue = FixVenue(engine, self.port, state_dir / "venue", behaviour=behaviour,
                              begin_string=begin_string)
        self.venue.start()
        self.config = self.make_config(begin_string=begin_string, **config)
        self.tree: Tree | None = start_tree(self.config, state_dir)

    def make_config(self, **config: Any) -> FixConfig:
        # A second or so before each reconnect: room to trade while the session is down.
        settings: dict[str, Any] = {"reconnect_initial_s": 1.0, "reconnect_max_s": 2.0,
                                    "reconnect_jitter_s": 0.01, **config}
        return make_config(self.port, **settings)

    def drop_session(self) -> None:
        """The venue drops the connection (it keeps running and keeps trading)."""
        session = fix.Session.lookupSession(self.venue.session_id)
        assert session is not None
        session.disconnect()
        wait_for(lambda: not self.venue.logged_on(), what="venue sees the session go")

    def stop(self) -> None:
        if self.tree is not None:
            self.tree.stop()
            self.tree = None
        self.venue.stop()


@pytest.fixture
def safety(inbox: Inbox) -> Inbox:
    bus.subscribe(topics.SAFETY, "recorder")
    return inbox


@pytest.fixture
def pairs() -> Iterator[list[Pair]]:
    running: list[Pair] = []
    try:
        yield running
    finally:
        for pair in reversed(running):
            pair.stop()


def start(pairs: list[Pair], engine: VenueEngine, tmp_path: Path, inbox: Inbox,
          behaviour: FixBehaviour, **config: Any) -> Pair:
    pair = Pair(engine, tmp_path, behaviour, **config)
    pairs.append(pair)
    inbox.wait(ConnectorUp, timeout_s=10)
    return pair


def reconnect(pair: Pair, inbox: Inbox, trade_while_down: bool = False) -> int:
    """Drop the session, optionally step the engine while it is down, wait for the next
    logon; returns the inbox mark taken before the drop."""
    mark = inbox.mark()
    pair.drop_session()
    if trade_while_down:
        pair.engine.step()
        assert not pair.venue.logged_on(), "the connector came back before the trade"
    wait_for(lambda: inbox.since(mark, ConnectorUp), 15, what="connector up again")
    return mark


def inferred(inbox: Inbox, coid: str) -> list[OrderFilled]:
    return inbox.all(OrderFilled, lambda f: f.client_order_id == coid and f.inferred)


# ---- fills missed while the session is down ----------------------------------------------------


@pytest.mark.parametrize("begin_string", [FIX44, FIX42])
def test_fills_while_down_without_resend_are_inferred_once_over_two_reconnects(
    begin_string: str, engine: VenueEngine, safety: Inbox, tmp_path: Path, pairs: list[Pair]
) -> None:
    inbox = safety
    pair = start(pairs, engine, tmp_path, inbox, FixBehaviour(resend_fills=False),
                 begin_string=begin_string)
    engine.step()
    tell(order("big", "250", "MSFT"))  # 100 per step at the touch: 100 now, 100, then 50
    [first] = inbox.wait(OrderFilled, coid_is("big"))
    assert (first.quantity, first.leaves_quantity, first.inferred) == (100, 150, False)

    # The venue drops the session, trades 100 more, and gap-fills that report at logon.
    mark = reconnect(pair, inbox, trade_while_down=True)
    [fill] = wait_for(lambda: inferred(inbox, "big"), 10, what="inferred fill")
    executions = [f for f in engine.executions(ACCOUNT) if f.client_order_id == "big"]
    assert len(executions) == 2  # the venue traded while the session was down
    missed = executions[1]
    assert fill.fill_id == "inferred:big:200" and fill.fill_id != missed.fill_id
    assert (fill.quantity, fill.leaves_quantity, fill.side) == (missed.quantity, 50, Side.BUY)
    assert fill.price == missed.price  # derived from AvgPx and the fill already published
    wait_for(lambda: [a for a in inbox.since(mark, OrderAccepted) if a.client_order_id == "big"],
             10, what="the order still working")
    assert [f.fill_id for f in inbox.since(mark, OrderFilled)] == [fill.fill_id]

    # A second reconnect asks again (the order still works): nothing counted twice.
    mark = reconnect(pair, inbox)
    wait_for(lambda: [a for a in inbox.since(mark, OrderAccepted) if a.client_order_id == "big"],
             10, what="order status after the second logon")
    assert inbox.since(mark, OrderFilled) == []

    # The rest trades with the session up: a real fill, and the order is complete.
    engine.step()
    fills = inbox.wait(OrderFilled, coid_is("big"), count=3)
    assert [(f.quantity, f.inferred) for f in fills] == [(100, False), (100, True), (50, False)]
    assert sum(f.quantity for f in fills) == sum(f.quantity for f in engine.executions(ACCOUNT))
    assert sum(f.quantity * f.price for f in fills) == sum(
        f.quantity * f.price for f in engine.executions(ACCOUNT))
    wait_for(lambda: latest_health(inbox).fills == 3, what="fills counted")
    assert latest_health(inbox).malformed == 0 and pair.venue.callback_errors == 0


def test_after_a_restart_the_journal_s_open_orders_are_queried(
    engine: VenueEngine, inbox: Inbox, tmp_path: Path, pairs: list[Pair]
) -> None:
    pair = start(pairs, engine, tmp_path, inbox, FixBehaviour(resend_fills=False))
    engine.step()
    submitted = order("big", "250", "MSFT")
    tell(submitted)
    [first] = inbox.wait(OrderFilled, coid_is("big"))
    with Journal(tmp_path / "journal.sqlite3") as journal:  # as the keeper would have it
        journal.record_order(submitted)
        journal.record_fill(first, Decimal(0))
    assert pair.tree is not None
    pair.tree.stop()  # the process ends
    pair.tree = None
    wait_for(lambda: not pair.venue.logged_on(), what="session gone")
    engine.step()  # 100 more while nobody is connected

    mark = inbox.mark()
    pair.tree = start_tree(pair.config, tmp_path)  # a new process, same state directory
    [fill] = wait_for(lambda: inferred(inbox, "big"), 10, what="inferred fill after restart")
    missed = [f for f in engine.executions(ACCOUNT) if f.client_order_id == "big"][1]
    assert (fill.fill_id, fill.quantity, fill.price) == ("inferred:big:200", 100, missed.price)
    assert [f.fill_id for f in inbox.since(mark, OrderFilled)] == [fill.fill_id]


def test_an_order_ended_or_lost_while_down_gets_its_terminal_event(
    engine: VenueEngine, safety: Inbox, tmp_path: Path, pairs: list[Pair]
) -> None:
    inbox = safety
    pair = start(pairs, engine, tmp_path, inbox, FixBehaviour(resend_fills=False))
    engine.step()
    tell(resting("rest"))
    inbox.wait(OrderAccepted, coid_is("rest"))
    pair.venue.behaviour = FixBehaviour(resend_fills=False, drop_rate=1.0)
    tell(order("lost", "1"))
    wait_for(lambda: pair.venue.dropped == ["lost"], what="order dropped in flight")

    mark = inbox.mark()
    pair.drop_session()
    engine.cancel(ACCOUNT, "rest")  # cancelled at the venue while the session is down
    assert not pair.venue.logged_on()
    wait_for(lambda: inbox.since(mark, ConnectorUp), 15, what="connector up again")

    [cancelled] = inbox.wait(OrderCancelled, coid_is("rest"), timeout_s=10)
    assert "cancel" in cancelled.text
    [rejected] = inbox.wait(OrderRejected, coid_is("lost"), timeout_s=10)
    assert rejected.reason is RejectReason.VENUE and "unknown to the venue" in rejected.text
    [alert] = inbox.wait(SafetyEvent, lambda e: e.kind == "order_lost")
    assert alert.severity is Severity.WARNING and "lost" in alert.detail and alert.venue == NAME

    # Both ended: the next logon asks about nothing and hears nothing more of them.
    mark = reconnect(pair, inbox)
    assert not [m for m in inbox.since(mark, OrderAccepted)
                if m.client_order_id in ("rest", "lost")]
    assert len(inbox.all(OrderRejected, coid_is("lost"))) == 1
    assert len(inbox.all(OrderCancelled, coid_is("rest"))) == 1


# ---- orders refused before the book --------------------------------------------------------------


def test_session_and_business_rejects_end_the_order_as_rejected(
    engine: VenueEngine, inbox: Inbox, tmp_path: Path, pairs: list[Pair]
) -> None:
    pair = start(pairs, engine, tmp_path, inbox, FixBehaviour(session_reject_rate=1.0))
    engine.step()
    tell(order("by-session", "1"))
    [session_reject] = inbox.wait(OrderRejected, coid_is("by-session"))
    assert session_reject.reason is RejectReason.VENUE
    assert session_reject.text == "session reject: order refused at session level"
    assert session_reject.symbol == "AAPL"

    pair.venue.behaviour = FixBehaviour(business_reject_rate=1.0)
    tell(order("by-business", "1"))
    [business_reject] = inbox.wait(OrderRejected, coid_is("by-business"))
    assert business_reject.text == "BusinessRejectReason 4: order entry not available"

    # Nothing keeps working: after a reconnect neither is reported again.
    mark = reconnect(pair, inbox)
    pair.venue.behaviour = FixBehaviour()
    tell(order("fine", "1"))
    inbox.wait(OrderFilled, coid_is("fine"))
    assert [m for m in inbox.since(mark, OrderAccepted) if m.client_order_id != "fine"] == []
    assert len(inbox.all(OrderRejected)) == 2
    assert engine.executions(ACCOUNT)[-1].client_order_id == "fine"
    assert pair.venue.callback_errors == 0


# ---- busts and corrections ---------------------------------------------------------------------


@pytest.mark.parametrize("begin_string", [FIX44, FIX42])
def test_bust_and_correction_are_published_with_a_warning(
    begin_string: str, engine: VenueEngine, safety: Inbox, tmp_path: Path, pairs: list[Pair]
) -> None:
    inbox = safety
    pair = start(pairs, engine, tmp_path, inbox, FixBehaviour(), begin_string=begin_string)
    engine.step()
    tell(order("b1", "10"))
    [fill] = inbox.wait(OrderFilled, coid_is("b1"))
    pair.venue.bust(fill.fill_id)
    [bust] = inbox.wait(FillBusted)
    assert (bust.client_order_id, bust.venue, bust.fill_id) == ("b1", NAME, fill.fill_id)
    assert (bust.quantity, bust.price, bust.cumulative_quantity) == (10, fill.price, 0)
    assert bust.bust_id and bust.bust_id != fill.fill_id
    [warning] = inbox.wait(SafetyEvent, lambda e: e.kind == "trade_bust")
    assert warning.severity is Severity.WARNING and fill.fill_id in warning.detail

    tell(order("c1", "10", side=Side.SELL))
    [sold] = inbox.wait(OrderFilled, coid_is("c1"))
    better = sold.price - Decimal("0.5")
    pair.venue.correct(sold.fill_id, price=better, quantity=Decimal(8))
    [correction] = inbox.wait(FillCorrected)
    assert (correction.client_order_id, correction.fill_id) == ("c1", sold.fill_id)
    assert (correction.quantity, correction.price, correction.side) == (8, better, Side.SELL)
    assert correction.correction_id and correction.correction_id != sold.fill_id
    assert correction.cumulative_quantity == 8 and correction.average_price == better
    [warning] = inbox.wait(SafetyEvent, lambda e: e.kind == "trade_correction")
    assert warning.severity is Severity.WARNING
    assert inbox.all(ConnectorDown) == [] and latest_health(inbox).malformed == 0
