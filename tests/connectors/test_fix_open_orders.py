"""The FIX connector lists the venue's working orders with every positions report: an
OrderMassStatusRequest (35=AF) sent before the RequestForPositions, answered by
ExecutionReports (ExecType=I) that carry its MassStatusReqID, against the simulated FIX
venue over quickfix on loopback (FIX 4.4, and 4.2 with the extension types)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from messages import ConnectorUp, OrderAccepted, OrderCancelled, RequestPositions, VenuePositions
from tests.connectors.test_fix_connector import (  # noqa: F401 - fixtures
    ACCOUNT,
    NAME,
    Inbox,
    Session,
    coid_is,
    engine,
    inbox,
    resting,
    tell,
)
from venues.engine import VenueEngine
from venues.fix_venue import FIX42, FIX44


@pytest.fixture(params=[FIX44, FIX42])
def versioned(request: pytest.FixtureRequest, engine: VenueEngine, inbox: Inbox,  # noqa: F811
              tmp_path: Path) -> Iterator[Session]:
    running = Session(engine, tmp_path, begin_string=request.param)
    try:
        inbox.wait(ConnectorUp)
        yield running
    finally:
        running.stop()


def report(request_id: str, box: Inbox) -> VenuePositions:
    tell(RequestPositions(venue=NAME, request_id=request_id))
    [answer] = box.wait(VenuePositions, lambda m: m.request_id == request_id)
    return answer


def test_positions_reports_list_the_working_orders(
        versioned: Session, engine: VenueEngine, inbox: Inbox) -> None:  # noqa: F811
    assert report("none", inbox).open_orders == ()              # nothing works: an empty list
    for coid in ("rest-1", "rest-2"):
        tell(resting(coid))
        inbox.wait(OrderAccepted, coid_is(coid))
    assert report("two", inbox).open_orders == ("rest-1", "rest-2")
    engine.cancel(ACCOUNT, "rest-1")                            # ended at the venue
    inbox.wait(OrderCancelled, coid_is("rest-1"))
    assert report("one", inbox).open_orders == ("rest-2",)
    # The listings acknowledged nothing twice.
    assert len(inbox.all(OrderAccepted, coid_is("rest-2"))) == 1
