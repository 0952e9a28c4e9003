"""The failsafe shell against a stand-in venue: "flat" needs the venue to report no
position *and* no working order (the mass cancel confirmed, or every working order
cancelled one by one), in the same round."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.errors import JournalError
from actors.failsafe import Failsafe, FailsafeConfig
from actors.journal import READER, Journal
from messages import (
    CancelAll,
    CancelAllDone,
    CancelOrder,
    FailsafeReport,
    FlattenRequested,
    OrderAccepted,
    OrderCancelled,
    RequestPositions,
    Side,
    SubmitOrder,
    VenuePositions,
)
from supervision import NO_BACKOFF, ChildSpec, Tree, bus, registry
from tests.recorder import Recorder

VENUE = "standin"


class StandInVenue(Recorder):
    """Answers every position request with "flat"; confirms a mass cancel only when
    ``confirms``; cancels an order asked one by one only when ``cancels``. One order
    ("resting") works there from the start."""

    confirms = True
    cancels = True

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, CancelAll) and self.confirms:
            bus.publish(topics.ORDERS, OrderCancelled(client_order_id="resting", venue=VENUE))
            bus.publish(topics.ORDERS, CancelAllDone(venue=VENUE, request_id=message.request_id))
        if isinstance(message, CancelOrder) and self.cancels:
            bus.publish(topics.ORDERS, OrderCancelled(client_order_id=message.client_order_id, venue=VENUE))
        if isinstance(message, RequestPositions):
            bus.publish(topics.POSITIONS, VenuePositions(venue=VENUE, request_id=message.request_id))
        return super().on_receive(message)


class RefusingVenue(StandInVenue):
    """Refuses mass cancels but cancels orders one by one."""

    confirms = False


class StuckVenue(StandInVenue):
    """Cancels nothing."""

    confirms = False
    cancels = False


@pytest.fixture
def failsafe(tmp_path: Path) -> Iterator[Tree]:
    spec = ChildSpec(name="failsafe", actor_class=Failsafe,
                     args=(FailsafeConfig(max_attempts=2, round_timeout_s=0.2, cancel_timeout_s=0.05,
                                          backoff_initial_s=0.05), tmp_path, (VENUE,)))
    tree = Tree([spec], name="root-failsafe", backoff=NO_BACKOFF, intensity=10)
    tree.start(timeout_s=5)
    yield tree
    tree.stop(timeout_s=5)


@pytest.mark.parametrize(("venue", "flat"),
                         [(StandInVenue, True), (RefusingVenue, True), (StuckVenue, False)])
def test_flat_only_when_the_venue_reports_no_working_orders(
    failsafe: Tree, venue: type[StandInVenue], flat: bool,
) -> None:
    stand_in = venue.spawn(VENUE)
    bus.publish(topics.ORDERS, OrderAccepted(client_order_id="resting", venue=VENUE, symbol="ES"))
    reports = Recorder.spawn("reports", [topics.FAILSAFE])
    registry.tell("failsafe", FlattenRequested(reason="test", source="test"))
    report: FailsafeReport = reports.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
    assert report.flat is flat, report.detail
    # Refused: every attempt spent re-reading the venue, never reported flat.
    assert (report.attempts, report.detail) == ((1, f"{VENUE}: flat") if flat else (2, f"{VENUE}: exhausted"))
    cancels = [m.client_order_id for m in stand_in.messages() if isinstance(m, CancelOrder)]
    assert ("resting" in cancels) is (venue is not StandInVenue)   # one by one only when unconfirmed


def test_a_restarted_failsafe_knows_the_orders_the_journal_holds_working(tmp_path: Path) -> None:
    """Acknowledged and not done in the journal: cancelled one by one when the venue refuses
    its mass cancel; never acknowledged (lost in flight): not waited for."""
    journal_path = tmp_path / "journal.sqlite3"
    with Journal(journal_path) as journal:
        for coid in ("old-rest", "lost", "done"):
            journal.record_order(SubmitOrder(client_order_id=coid, venue=VENUE, symbol="ES", side=Side.BUY,
                                             quantity=Decimal(1), source="sample"))
        journal.record_order_event(OrderAccepted(client_order_id="old-rest", venue=VENUE, symbol="ES"))
        journal.record_order_event(OrderAccepted(client_order_id="done", venue=VENUE, symbol="ES"))
        journal.record_order_event(OrderCancelled(client_order_id="done", venue=VENUE))
    with Journal(journal_path, writer=READER) as reader, pytest.raises(JournalError):
        reader.record_order_event(OrderCancelled(client_order_id="x", venue=VENUE))   # reads only
    stand_in = RefusingVenue.spawn(VENUE)
    spec = ChildSpec(name="failsafe", actor_class=Failsafe,
                     args=(FailsafeConfig(max_attempts=2, round_timeout_s=0.2, cancel_timeout_s=0.05,
                                          backoff_initial_s=0.05), tmp_path, (VENUE,)),
                     kwargs={"journal_path": journal_path})
    tree = Tree([spec], name="root-failsafe-journal", backoff=NO_BACKOFF, intensity=10)
    tree.start(timeout_s=5)
    try:
        reports = Recorder.spawn("reports", [topics.FAILSAFE])
        registry.tell("failsafe", FlattenRequested(reason="test", source="test"))
        report: FailsafeReport = reports.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
        assert report.flat, report.detail
        cancels = {m.client_order_id for m in stand_in.messages() if isinstance(m, CancelOrder)}
        assert cancels == {"old-rest"}
    finally:
        tree.stop(timeout_s=5)
