"""The safety monitor restarted by its supervisor tracks again, from the journal on disk,
the orders still working or done lately, with their fills: an overfill of an order sent
before the restart is still caught, and a fill delivered again is not counted twice. Its
first start reads nothing (a new process)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors import topics
from actors.journal import Journal
from actors.safety_monitor import SafetyConfig, SafetyMonitor
from messages import OrderFilled, OrderType, SafetyEvent, Severity, Side, SubmitOrder, now_ns
from supervision import ChildSpec, Tree, bus, registry
from tests.helpers import wait_for
from tests.recorder import Recorder
from tests.unit.test_safety_monitor_actor import stats

D = Decimal
VENUE = "paper"


def order(coid: str, quantity: str = "10") -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue=VENUE, symbol="AAPL", side=Side.BUY, quantity=D(quantity),
                       order_type=OrderType.LIMIT, limit_price=D("100"), source="strategy")


def fill(coid: str, fill_id: str, quantity: str, leaves: str = "0") -> OrderFilled:
    return OrderFilled(client_order_id=coid, venue=VENUE, fill_id=fill_id, symbol="AAPL", side=Side.BUY,
                       quantity=D(quantity), price=D("100"), leaves_quantity=D(leaves), ts_ns=now_ns())


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    """A journal holding an order filled 10 of 10 and one filled 4 of 10 (working)."""
    path = tmp_path / "journal.sqlite3"
    with Journal(path) as journal:
        journal.record_order(order("done-1"))
        journal.record_fill(fill("done-1", "f-1", "10"), D(0))
        journal.record_order(order("part-1"))
        journal.record_fill(fill("part-1", "f-2", "4", leaves="6"), D(0))
    return path


@pytest.fixture
def tree(journal_path: Path) -> Iterator[Tree]:
    spec = ChildSpec(name="safety_monitor", actor_class=SafetyMonitor, args=(SafetyConfig(),),
                     kwargs={"journal_path": journal_path})
    tree = Tree([spec], name="test_root")
    tree.start(timeout_s=10)
    yield tree
    tree.stop(timeout_s=10)


def restart() -> None:
    old = registry.lookup("safety_monitor")
    assert old is not None
    old.stop()
    wait_for(lambda: registry.lookup("safety_monitor") not in (None, old), what="a new monitor")


def overfills(recorder: Recorder) -> list[SafetyEvent]:
    return [e for e in recorder.messages(SafetyEvent) if e.kind == "overfill"]


def test_a_restarted_monitor_catches_the_overfill_of_an_order_sent_before(tree: Tree) -> None:
    recorder = Recorder.spawn("recorder", [topics.SAFETY])
    restart()
    bus.publish(topics.ORDERS, fill("done-1", "f-1", "10"))          # delivered again: same fill
    bus.publish(topics.ORDERS, fill("part-1", "f-3", "6"))           # completes it: fine
    stats()
    assert overfills(recorder) == []
    bus.publish(topics.ORDERS, fill("done-1", "f-9", "1"))           # one more than ordered
    event = recorder.wait_for(lambda m: isinstance(m, SafetyEvent) and m.kind == "overfill")
    assert (event.severity, event.value) == (Severity.CRITICAL, D(11))


def test_a_first_start_reads_nothing_from_the_journal(tree: Tree) -> None:
    recorder = Recorder.spawn("recorder", [topics.SAFETY])
    bus.publish(topics.ORDERS, fill("done-1", "f-9", "1"))           # an order this process never sent
    stats()
    assert overfills(recorder) == []

