"""The risk governor with three venues: per-venue trading states, incidents counted once,
outage escalation.

The governor runs as an actor under a one-child tree with an injected clock; the test plays
the connectors (recorders registered under the venue names, and their notices on the bus),
the position keeper (``Reconciliation``) and the safety monitor (``SafetyEvent``). An order
that passes is seen arriving at its venue's recorder, a refusal as ``OrderRejected``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import topics
from actors.risk_governor import GetRiskState, RiskConfig, RiskGovernor, Tick
from messages import (
    ConnectorDown,
    ConnectorUp,
    FlattenRequested,
    Mode,
    OrderFilled,
    OrderRejected,
    Quote,
    QuoteBatch,
    Reconciliation,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
)
from supervision import (
    NO_BACKOFF,
    SUPERVISION_TOPIC,
    ChildExited,
    ChildSpec,
    SupervisorGaveUp,
    Tree,
    bus,
    registry,
)
from tests.helpers import wait_for
from tests.recorder import Recorder

D = Decimal
R = RejectReason
NAMES = ("zmq", "fix", "ib")
VENUES: dict[str, tuple[str, ...]] = {name: ("AAPL", "MSFT") for name in NAMES}
CONFIG = RiskConfig(
    max_order_quantity=D(0), max_order_notional=D(0), max_position=D(0), max_open_positions=0,
    max_daily_notional=D(0), daily_loss_limit=D(0), max_orders_per_s=0, price_band_pct=D(0),
    circuit_rejections=0, degradations_to_failsafe=3, degradation_window_s=300.0, recover_after_s=10.0,
    max_outage_s=300.0, incident_quiet_s=30.0,
)
_ids = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Desk:
    """The governor and the parts the test plays."""

    def __init__(self, state_dir: Path, config: RiskConfig) -> None:
        self.clock = Clock()
        self.venues = {name: Recorder.spawn(name) for name in NAMES}
        self.failsafe = Recorder.spawn("failsafe")
        self.bus = Recorder.spawn("observer", [topics.ORDERS])
        spec = ChildSpec(name="risk_governor", actor_class=RiskGovernor, args=(config, state_dir, VENUES),
                         kwargs={"clock": self.clock, "tick_s": 3600.0})
        self.tree = Tree([spec], name=f"root-{id(self)}", backoff=NO_BACKOFF, intensity=10)
        self.tree.start(timeout_s=5)

    def state(self) -> dict[str, Any]:
        ref = registry.lookup("risk_governor")
        assert ref is not None
        state: dict[str, Any] = ref.ask(GetRiskState(), timeout=2)
        return state

    def mode(self) -> Mode:
        return Mode(self.state()["mode"])

    def states(self) -> dict[str, str]:
        states: dict[str, str] = self.state()["venue_states"]
        return states

    def publish(self, topic: str, message: Any) -> None:
        bus.publish(topic, message)
        self.state()

    def tick(self, at: float | None = None) -> None:
        if at is not None:
            self.clock.now = 1000.0 + at
        ref = registry.lookup("risk_governor")
        assert ref is not None
        ref.tell(Tick())
        self.state()

    # ---- the other parts ----------------------------------------------------------------

    def up(self, name: str, reconciled: bool | None = True) -> None:
        self.publish(topics.CONNECTORS, ConnectorUp(name=name))
        if reconciled is not None:
            self.reconcile(name, reconciled)
        self.quote(name)

    def reconcile(self, name: str, matched: bool = True) -> None:
        mismatches = () if matched else ("AAPL: journal 0, venue 5",)
        self.publish(topics.PORTFOLIO, Reconciliation(venue=name, reconciled=matched, mismatches=mismatches))

    def down(self, name: str, restarts: int = 1) -> None:
        """The connector loses its session, then fails ``restarts - 1`` restarts."""
        self.publish(topics.CONNECTORS, ConnectorDown(name=name, reason="session lost"))
        for generation in range(restarts):
            exited = ChildExited(supervisor="connectors", name=name, generation=generation,
                                 abnormal=True, reason="connection refused")
            self.publish(SUPERVISION_TOPIC, exited)

    def quote(self, name: str, bid: str = "100", ask: str = "100.02", symbol: str = "AAPL") -> None:
        quotes = tuple(Quote(venue=name, symbol=s, bid=D(bid), ask=D(ask), bid_size=D(1), ask_size=D(1))
                       for s in ((symbol,) if symbol != "AAPL" else ("AAPL", "MSFT")))
        self.publish(topics.MARKET, QuoteBatch(venue=name, quotes=quotes))

    def warning(self, kind: str, venue: str, symbol: str = "") -> None:
        event = SafetyEvent(kind=kind, severity=Severity.WARNING, venue=venue, symbol=symbol, detail="test")
        self.publish(topics.SAFETY, event)

    def fill(self, venue: str, side: str, quantity: str) -> None:
        self.publish(topics.ORDERS, OrderFilled(client_order_id=f"x-{next(_ids)}", venue=venue,
                                                fill_id=f"f-{next(_ids)}", symbol="AAPL", side=Side(side),
                                                quantity=D(quantity), price=D(100), leaves_quantity=D(0)))

    def submit(self, venue: str, side: str = "buy", quantity: str = "1") -> RejectReason | None:
        """None when the order reached its venue, else the refusal's reason."""
        new = SubmitOrder(client_order_id=f"o-{next(_ids)}", venue=venue, symbol="AAPL", side=Side(side),
                          quantity=D(quantity), source="strategy")
        arrived, refused = self.venues[venue].count(), self.bus.count()
        registry.tell("risk_governor", new)

        def outcome() -> list[Any]:
            got = [m for m in self.venues[venue].messages()[arrived:]
                   if isinstance(m, SubmitOrder) and m.client_order_id == new.client_order_id]
            return got + [m for m in self.bus.messages()[refused:]
                          if isinstance(m, OrderRejected) and m.client_order_id == new.client_order_id]

        wait_for(outcome, timeout_s=3, what=f"the outcome of {new.client_order_id}")
        (result,) = outcome()
        return None if isinstance(result, SubmitOrder) else result.reason

    def flattens(self) -> list[FlattenRequested]:
        self.state()
        return [m for m in self.failsafe.messages() if isinstance(m, FlattenRequested)]


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Any]:
    made: list[Desk] = []

    def start(**fields: Any) -> Desk:
        made.append(Desk(tmp_path, msgspec.structs.replace(CONFIG, **fields)))
        return made[-1]

    yield start
    for d in made:
        d.tree.stop(timeout_s=5)


def test_live_once_one_venue_is_connected_and_reconciled(desk: Any) -> None:
    d = desk()
    d.publish(topics.CONNECTORS, ConnectorUp(name="zmq"))
    assert d.mode() is Mode.READY and d.states()["zmq"] == "HALTED"     # not reconciled yet
    d.reconcile("zmq")
    assert d.mode() is Mode.LIVE
    assert d.states() == {"zmq": "ACTIVE", "fix": "HALTED", "ib": "HALTED"}
    d.quote("zmq")
    assert d.submit("zmq") is None
    assert d.submit("fix") is R.VENUE_DOWN
    d.publish(topics.CONNECTORS, ConnectorUp(name="fix"))
    assert d.submit("fix") is R.VENUE_HALTED                           # up, not reconciled


def test_live_when_all_waits_for_every_venue(desk: Any) -> None:
    d = desk(live_when="all")
    d.up("zmq")
    d.up("fix")
    assert d.mode() is Mode.READY
    d.up("ib")
    assert d.mode() is Mode.LIVE
    d.down("fix")
    assert d.mode() is Mode.DEGRADED


def test_an_outage_with_many_restarts_is_one_incident_and_the_others_trade(desk: Any) -> None:
    d = desk()
    for name in NAMES:
        d.up(name)
    assert d.mode() is Mode.LIVE
    d.down("fix", restarts=12)                                          # twelve failed restarts
    state = d.state()
    assert state["mode"] == "LIVE" and not d.flattens()
    assert state["degradations_in_window"] == 1 and state["open_incidents"] == ["venue_down fix"]
    assert d.states() == {"zmq": "ACTIVE", "fix": "HALTED", "ib": "ACTIVE"}
    assert d.submit("fix") is R.VENUE_DOWN
    assert d.submit("zmq") is None and d.submit("ib") is None
    d.warning("feed_stale", "fix")                                      # its feed, stale: the same outage
    assert d.state()["degradations_in_window"] == 1 and d.mode() is Mode.LIVE
    d.up("fix", reconciled=None)
    assert d.submit("fix") is R.VENUE_HALTED and d.state()["open_incidents"] == []
    d.reconcile("fix")
    assert d.submit("fix") is None and d.states()["fix"] == "ACTIVE"
    d.down("fix", restarts=2)                                           # a second outage: a second incident
    assert d.state()["degradations_in_window"] == 2


def test_an_outage_past_max_outage_s_is_failsafe(desk: Any) -> None:
    d = desk(max_outage_s=30.0)
    for name in NAMES:
        d.up(name)
    d.clock.now = 1000.0
    d.down("ib", restarts=3)
    d.tick(at=30.0)
    assert d.mode() is Mode.LIVE and d.state()["venue_outages_s"] == {"ib": 30.0}
    d.tick(at=30.5)
    assert d.mode() is Mode.FAILSAFE
    (request,) = d.flattens()
    assert "venue ib down for 30.5s" in request.reason and "max_outage_s" in request.reason


def test_the_connectors_supervisor_giving_up_is_failsafe(desk: Any) -> None:
    d = desk()
    d.up("zmq")
    d.publish(SUPERVISION_TOPIC, SupervisorGaveUp(supervisor="connectors", reason="21 restarts in 60s"))
    assert d.mode() is Mode.FAILSAFE


def test_a_quiet_market_re_raised_is_one_degradation_and_its_venue_reduces(desk: Any) -> None:
    d = desk()
    for name in NAMES:
        d.up(name)
    d.fill("ib", "buy", "5")
    for second in range(0, 60, 5):                                      # re-raised every cool-down
        d.clock.now = 1000.0 + second
        d.warning("feed_stale", "ib")
    state = d.state()
    assert state["mode"] == "DEGRADED" and state["degradations_in_window"] == 1 and not d.flattens()
    assert d.states()["ib"] == "REDUCING"
    d.tick(at=70.0)                                                     # quiet for 10 s: LIVE again
    assert d.mode() is Mode.LIVE and d.states()["ib"] == "REDUCING"
    assert d.submit("ib", "buy") is R.VENUE_REDUCING
    assert d.submit("ib", "sell", "5") is None                          # reduces
    assert d.submit("zmq", "buy") is None
    d.quote("ib")                                                       # quotes again: the incident clears
    assert d.states()["ib"] == "ACTIVE" and d.state()["open_incidents"] == []
    d.warning("feed_stale", "ib")                                       # a new silence: a new incident
    assert d.state()["degradations_in_window"] == 2


def test_a_crossed_book_is_one_incident_until_an_uncrossed_quote(desk: Any) -> None:
    d = desk()
    for name in NAMES:
        d.up(name)
    d.warning("crossed_market", "zmq", "MSFT")
    d.warning("crossed_market", "zmq", "MSFT")
    assert d.state()["degradations_in_window"] == 1
    d.quote("zmq", bid="101", ask="100", symbol="MSFT")                # still crossed
    assert d.state()["open_incidents"] == ["crossed_market zmq/MSFT"]
    d.quote("zmq", bid="100", ask="100.02", symbol="MSFT")
    assert d.state()["open_incidents"] == []
    d.warning("crossed_market", "zmq", "MSFT")
    assert d.state()["degradations_in_window"] == 2


def test_no_return_to_live_while_a_venue_is_unreconciled(desk: Any) -> None:
    d = desk()
    for name in NAMES:
        d.up(name)
    d.reconcile("ib", matched=False)
    d.warning("reconciliation_mismatch", "ib", "AAPL")
    assert d.mode() is Mode.DEGRADED and d.states()["ib"] == "HALTED"
    assert d.submit("ib", "sell") is R.VENUE_HALTED
    d.tick(at=100.0)
    assert d.mode() is Mode.DEGRADED                                    # quiet, but ib is unreconciled
    d.reconcile("ib", matched=True)
    assert d.state()["open_incidents"] == []
    d.tick(at=101.0)
    assert d.mode() is Mode.LIVE and d.states()["ib"] == "ACTIVE"


def test_a_transient_finding_closes_after_the_quiet_time(desk: Any) -> None:
    d = desk(incident_quiet_s=30.0)
    for name in NAMES:
        d.up(name)
    d.clock.now = 1000.0
    d.warning("price_spike", "zmq", "AAPL")
    d.clock.now = 1020.0
    d.warning("price_spike", "zmq", "AAPL")                             # the same spike condition
    assert d.state()["degradations_in_window"] == 1 and d.states()["zmq"] == "REDUCING"
    d.tick(at=49.9)
    assert d.states()["zmq"] == "REDUCING"
    d.tick(at=50.0)
    assert d.states()["zmq"] == "ACTIVE" and d.mode() is Mode.LIVE
    d.warning("price_spike", "zmq", "AAPL")
    assert d.state()["degradations_in_window"] == 2


def test_distinct_incidents_still_reach_failsafe(desk: Any) -> None:
    d = desk()
    for name in NAMES:
        d.up(name)
    d.down("fix", restarts=5)
    d.warning("price_spike", "zmq", "AAPL")
    assert not d.flattens()
    d.warning("feed_stale", "ib")
    assert d.mode() is Mode.FAILSAFE
    (request,) = d.flattens()
    assert request.reason.startswith("3 degradations")


@pytest.mark.parametrize(("field", "value"), [("max_outage_s", -1.0), ("incident_quiet_s", -0.5),
                                              ("live_when", "most"), ("max_outage_s", 1e9)])
def test_bad_settings_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert({field: value}, RiskConfig)
