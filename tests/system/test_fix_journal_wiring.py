"""The FIX connector reads the position keeper's journal at start without being told: an
order the journal holds as working at the FIX venue is asked about (OrderStatusRequest)
after a restart, even with a journal file name of the operator's choosing."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from actors.journal import Journal
from messages import OrderAccepted, OrderStatus, Side, SubmitOrder
from tests.helpers import wait_for
from tests.system.processes import free_port
from tests.system.test_truth_flatten import engine, fix_connector, live, settings_for, start_fix, stoppers
from tradeguard.app import Service
from venues.engine import VenueEngine
from venues.fix_venue import FixBehaviour

__all__ = ["engine", "stoppers"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(120)


def test_an_order_left_working_in_a_renamed_journal_is_resolved_at_the_fix_venue_after_a_start(
    engine: VenueEngine, stoppers: list[Callable[[], object]], service: Callable[..., Service],
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    # A previous run sent this order and heard it accepted; the venue never had it (lost).
    with Journal(state / "book.sqlite3") as journal:
        journal.record_order(SubmitOrder(client_order_id="left-1", venue="fix", symbol="AAPL", side=Side.BUY,
                                         quantity=Decimal(3), source="test"))
        journal.record_order_event(OrderAccepted(client_order_id="left-1", venue="fix", symbol="AAPL"))
    port = free_port()
    start_fix(engine, tmp_path / "venue", port, FixBehaviour.standard(), stoppers)
    svc = service(settings_for(fix_connector(port), keeper={"journal_name": "book.sqlite3"}))
    live(svc)

    def status() -> tuple[OrderStatus, str]:
        with Journal(state / "book.sqlite3") as journal:
            [record] = [r for r in journal.orders() if r.order.client_order_id == "left-1"]
        return record.status, record.status_text

    wait_for(lambda: status()[0] is OrderStatus.REJECTED, timeout_s=15,
             what=f"the lost order resolved (journal: {status()})")
    assert "unknown to the venue" in status()[1]
