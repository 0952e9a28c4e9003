"""The failsafe shell against a stand-in venue: "flat" needs the venue to report no
position *and* to confirm the mass cancel (no working orders), in the same round."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import topics
from actors.failsafe import Failsafe, FailsafeConfig
from messages import (
    CancelAll,
    CancelAllDone,
    FailsafeReport,
    FlattenRequested,
    RequestPositions,
    VenuePositions,
)
from supervision import NO_BACKOFF, ChildSpec, Tree, bus, registry
from tests.recorder import Recorder

VENUE = "standin"


class StandInVenue(Recorder):
    """Answers every position request with "flat"; confirms a mass cancel only when
    ``confirms`` (a venue that refuses mass cancels never does)."""

    confirms = True

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, CancelAll) and self.confirms:
            bus.publish(topics.ORDERS, CancelAllDone(venue=VENUE, request_id=message.request_id))
        if isinstance(message, RequestPositions):
            bus.publish(topics.POSITIONS, VenuePositions(venue=VENUE, request_id=message.request_id))
        return super().on_receive(message)


class RefusingVenue(StandInVenue):
    confirms = False


@pytest.fixture
def failsafe(tmp_path: Path) -> Iterator[Tree]:
    spec = ChildSpec(name="failsafe", actor_class=Failsafe,
                     args=(FailsafeConfig(max_attempts=2, round_timeout_s=0.2), tmp_path, (VENUE,)))
    tree = Tree([spec], name="root-failsafe", backoff=NO_BACKOFF, intensity=10)
    tree.start(timeout_s=5)
    yield tree
    tree.stop(timeout_s=5)


@pytest.mark.parametrize(("venue", "flat"), [(StandInVenue, True), (RefusingVenue, False)])
def test_flat_only_when_the_venue_confirms_no_working_orders(
    failsafe: Tree, venue: type[StandInVenue], flat: bool,
) -> None:
    venue.spawn(VENUE)
    reports = Recorder.spawn("reports", [topics.FAILSAFE])
    registry.tell("failsafe", FlattenRequested(reason="test", source="test"))
    report: FailsafeReport = reports.wait_for(lambda m: isinstance(m, FailsafeReport), timeout_s=10)
    assert report.flat is flat, report.detail
    # Refused: every attempt spent re-reading the venue, never reported flat.
    assert (report.attempts, report.detail) == ((1, f"{VENUE}: flat") if flat else (2, f"{VENUE}: exhausted"))
