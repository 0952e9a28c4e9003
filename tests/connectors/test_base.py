"""The connector base: connection attempts with backoff, an outage as one incident, a
fenced hand-off from old sessions, and a crash of the actor left to its supervisor.

The venue here is a flag in the test (``FakeVenue``): the connector's own protocol is
not what these tests are about; every real connector meets the same rules against its
real venue in tests/contract."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors import topics
from actors.connectors._io import SessionLink, SessionLost, SessionUp
from actors.connectors.base import Connector, ConnectorConfig
from actors.errors import ConnectorError
from messages import (
    CancelOrder,
    ConnectorDown,
    ConnectorUp,
    HealthReport,
    OrderFilled,
    OrderRejected,
    RejectReason,
    Side,
    SubmitOrder,
)
from supervision import SUPERVISION_TOPIC, Backoff, ChildExited, ChildSpec, Tree, registry
from tests.helpers import wait_for
from tests.recorder import Recorder

NAME = "fake"


class FakeVenue:
    """Whether the venue answers, and what the connector did to it."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.attempts: list[float] = []
        self.links: list[SessionLink] = []
        self.submitted: list[SubmitOrder] = []


VENUES: dict[str, FakeVenue] = {}


class FakeConnector(Connector):
    """Connects at once when the venue is up; refuses at once when it is not."""

    def connect(self) -> None:
        venue = VENUES[self.name]
        venue.attempts.append(time.monotonic())
        if not venue.up.is_set():
            raise ConnectorError("connection refused", venue=self.name)
        venue.links.append(self.link)
        self.link.up()

    def disconnect(self) -> None:
        pass

    def resync(self) -> None:
        pass

    def subscribe(self, symbols: Sequence[str]) -> None:
        pass

    def submit(self, order: SubmitOrder) -> None:
        if order.symbol == "CRASH":
            raise RuntimeError("a bug in the connector")
        VENUES[self.name].submitted.append(order)

    def cancel(self, order: CancelOrder) -> None:
        pass

    def cancel_all(self, request_id: str) -> None:
        pass

    def request_positions(self, request_id: str) -> None:
        pass


def config(**overrides: Any) -> ConnectorConfig:
    settings: dict[str, Any] = {"name": NAME, "kind": "fake", "health_interval_s": 0.05,
                                "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2,
                                "reconnect_jitter_s": 0.0, **overrides}
    return ConnectorConfig(**settings)


@pytest.fixture
def venue() -> Iterator[FakeVenue]:
    VENUES[NAME] = FakeVenue()
    yield VENUES[NAME]
    VENUES.pop(NAME, None)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder.spawn("recorder", [topics.CONNECTORS, topics.HEALTH, topics.ORDERS, SUPERVISION_TOPIC])


def start(cfg: ConnectorConfig, tmp_path: Path) -> Tree:
    spec = ChildSpec(name=NAME, actor_class=FakeConnector, args=(cfg, tmp_path))
    tree = Tree([spec], name="connectors", intensity=10, period_s=10.0,
                backoff=Backoff(initial_s=0.05, maximum_s=0.1, jitter_s=0.0), poll_s=0.1)
    tree.start(timeout_s=10)
    return tree


def order(coid: str, symbol: str = "AAPL") -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue=NAME, symbol=symbol, side=Side.BUY,
                       quantity=Decimal(1), source="test")


def test_attempts_back_off_exponentially_up_to_the_cap(venue: FakeVenue, recorder: Recorder,
                                                       tmp_path: Path) -> None:
    tree = start(config(reconnect_initial_s=0.1, reconnect_multiplier=2.0, reconnect_max_s=0.4), tmp_path)
    try:
        wait_for(lambda: len(venue.attempts) >= 6, timeout_s=10, what="six attempts")
        gaps = [b - a for a, b in zip(venue.attempts, venue.attempts[1:], strict=False)][:5]
        # 0.1, 0.2, 0.4 (the cap), 0.4, 0.4: never sooner (a loaded machine only makes them later)
        for gap, least in zip(gaps, (0.1, 0.2, 0.4, 0.4, 0.4), strict=True):
            assert gap >= least * 0.95, gaps
        down = recorder.messages(ConnectorDown)
        assert len(down) == 1 and "connection refused" in down[0].reason  # one outage
        health = recorder.wait_for(lambda m: isinstance(m, HealthReport) and m.name == NAME)
        assert health.connected is False
        assert registry.generation(NAME) == 0
    finally:
        tree.stop()


def test_an_outage_is_one_incident_and_ends_with_one_connector_up(
        venue: FakeVenue, recorder: Recorder, tmp_path: Path) -> None:
    venue.up.set()
    tree = start(config(), tmp_path)
    try:
        recorder.wait_for(lambda m: isinstance(m, ConnectorUp))
        venue.up.clear()
        venue.links[-1].lost("venue gone")
        recorder.wait_for(lambda m: isinstance(m, ConnectorDown) and m.reason == "venue gone")
        attempts = len(venue.attempts)
        wait_for(lambda: len(venue.attempts) >= attempts + 4, what="several failed attempts")
        registry.tell(NAME, order("while-down"))
        refused = recorder.wait_for(lambda m: isinstance(m, OrderRejected))
        assert refused.reason is RejectReason.VENUE_DOWN and venue.submitted == []
        venue.up.set()
        recorder.wait_for(lambda m: isinstance(m, ConnectorUp), after=recorder.messages().index(refused))
        assert len(recorder.messages(ConnectorDown)) == 1
        assert [m.generation for m in recorder.messages(ConnectorUp)] == [0, 0]
        assert recorder.messages(ChildExited) == []
        registry.tell(NAME, order("after"))
        wait_for(lambda: [o.client_order_id for o in venue.submitted] == ["after"], what="order sent")
    finally:
        tree.stop()


def test_an_old_session_cannot_reach_the_actor(venue: FakeVenue, recorder: Recorder, tmp_path: Path) -> None:
    venue.up.set()
    tree = start(config(), tmp_path)
    try:
        recorder.wait_for(lambda m: isinstance(m, ConnectorUp))
        old = venue.links[-1]
        old.lost("first session gone")
        wait_for(lambda: len(recorder.messages(ConnectorUp)) == 2, what="reconnected")
        assert old.closed
        late_fill = OrderFilled(client_order_id="ghost", venue=NAME, fill_id="late-1", symbol="AAPL",
                                side=Side.BUY, quantity=Decimal(1), price=Decimal(1),
                                leaves_quantity=Decimal(0))
        assert old.tell(late_fill) is False
        old.lost("a late word")  # already lost once: not told again
        mark = recorder.count()
        venue.links[-1].tell(OrderFilled(client_order_id="real", venue=NAME, fill_id="f-1", symbol="AAPL",
                                         side=Side.BUY, quantity=Decimal(1), price=Decimal(1),
                                         leaves_quantity=Decimal(0)))
        recorder.wait_for(lambda m: isinstance(m, OrderFilled) and m.client_order_id == "real", after=mark)
        assert [m.client_order_id for m in recorder.messages(OrderFilled)] == ["real"]
        assert len(recorder.messages(ConnectorDown)) == 1
        assert recorder.messages(HealthReport)[-1].connected
    finally:
        tree.stop()


def test_a_crash_of_the_actor_is_restarted_by_its_supervisor(
        venue: FakeVenue, recorder: Recorder, tmp_path: Path) -> None:
    venue.up.set()
    tree = start(config(), tmp_path)
    try:
        recorder.wait_for(lambda m: isinstance(m, ConnectorUp))
        registry.tell(NAME, order("boom", symbol="CRASH"))
        crashed = recorder.wait_for(lambda m: isinstance(m, ChildExited) and m.name == NAME)
        assert crashed.abnormal and "a bug in the connector" in crashed.reason
        recorder.wait_for(lambda m: isinstance(m, ConnectorUp) and m.generation == 1)
    finally:
        tree.stop()


def test_a_link_without_an_actor_is_closed_and_a_link_reports_loss_once() -> None:
    assert SessionLink(None, 0).closed
    assert SessionLink(None, 0).tell("anything") is False

    class Inbox(pykka.ThreadingActor):
        def __init__(self, seen: list[Any]) -> None:
            super().__init__()
            self.seen = seen

        def on_receive(self, message: Any) -> None:
            self.seen.append(message)

    seen: list[Any] = []
    ref = Inbox.start(seen)
    counted: list[int] = []
    link = SessionLink(ref, 7, lambda: counted.append(1))
    try:
        assert link.tell("quote")
        link.up()
        link.lost("gone")
        link.lost("gone again")
        wait_for(lambda: len(seen) == 3, what="three messages")
        assert seen == ["quote", SessionUp(7), SessionLost(7, "gone")]
        assert counted == [1]  # only venue messages count as inbound
        link.close()
        assert link.tell("after close") is False
    finally:
        ref.stop()
    dead = SessionLink(ref, 8)
    assert dead.tell("to a stopped actor") is False and dead.closed
