"""The position keeper's answer to ``GetSourceBook``: one source's positions and working
orders, from the journal on disk, attributed by the source of each order."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors import topics
from actors.journal import GOVERNOR_WRITER, Journal
from actors.position_keeper import KeeperConfig, PositionKeeper
from messages import (
    FAILSAFE_SOURCE,
    GetSourceBook,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderStatus,
    Side,
    SourceBook,
    SubmitOrder,
)
from supervision import NO_BACKOFF, ChildSpec, Tree, bus, registry
from tests.recorder import Recorder

D = Decimal


def order(cid: str, source: str, side: Side, quantity: str, symbol: str = "AAPL",
          venue: str = "paper") -> SubmitOrder:
    return SubmitOrder(client_order_id=cid, venue=venue, symbol=symbol, side=side, quantity=D(quantity),
                       source=source)


def fill(cid: str, fill_id: str, side: Side, quantity: str, leaves: str, symbol: str = "AAPL",
         venue: str = "paper") -> OrderFilled:
    return OrderFilled(client_order_id=cid, venue=venue, fill_id=fill_id, symbol=symbol, side=side,
                       quantity=D(quantity), price=D(100), leaves_quantity=D(leaves))


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[Path]:
    """A journal written as the governor and the keeper write it, then a keeper on it."""
    path = tmp_path / "journal.sqlite3"
    with Journal(path, writer=GOVERNOR_WRITER) as governor:
        for o in (order("s-1", "s", Side.BUY, "10"), order("s-2", "s", Side.SELL, "4"),
                  order("s-3", "s", Side.BUY, "10"), order("s-4", "s", Side.BUY, "5", symbol="MSFT"),
                  order("s-5", "s", Side.BUY, "3", venue="fix"),
                  order("t-1", "t", Side.BUY, "7"), order("s-6", "s", Side.BUY, "2")):
            governor.record_order(o)
    tree = Tree([ChildSpec(topics.POSITION_KEEPER, PositionKeeper, args=(KeeperConfig(), tmp_path))],
                backoff=NO_BACKOFF, name="book-root")
    tree.start(timeout_s=5)
    for message in (fill("s-1", "f1", Side.BUY, "10", "0"), fill("s-2", "f2", Side.SELL, "4", "0"),
                    OrderAccepted(client_order_id="s-3", venue="paper", symbol="AAPL"),
                    fill("s-3", "f3", Side.BUY, "6", "4"),
                    fill("s-4", "f4", Side.BUY, "5", "0", symbol="MSFT"),
                    fill("s-5", "f5", Side.BUY, "3", "0", venue="fix"),
                    fill("t-1", "f6", Side.BUY, "7", "0"),
                    OrderCancelled(client_order_id="s-6", venue="paper", symbol="AAPL")):
        bus.publish(topics.ORDERS, message)
    # The failsafe's closing order (journaled by the keeper from SUBMITTED) and its fill.
    bus.publish(topics.SUBMITTED, order("fs-1", FAILSAFE_SOURCE, Side.SELL, "12"))
    bus.publish(topics.ORDERS, fill("fs-1", "f7", Side.SELL, "12", "0"))
    try:
        yield tmp_path
    finally:
        tree.stop(timeout_s=5)


def book(source: str) -> SourceBook:
    """Ask as a strategy does (tell, the answer told back); the keeper's mailbox holds the
    events published above before this request."""
    answers = Recorder.spawn(f"asker-{source}")
    assert registry.tell(topics.POSITION_KEEPER, GetSourceBook(source=source, reply_to=answers.name,
                                                                request_id="r1"))
    answer: SourceBook = answers.wait_for(lambda m: isinstance(m, SourceBook), timeout_s=5)
    return answer


def test_a_source_gets_what_its_own_orders_built_and_its_working_orders(keeper: Path) -> None:
    got = book("s")
    assert got.source == "s" and got.request_id == "r1"
    # s's own fills built 12 AAPL on paper, but the failsafe sold 12 of the 19 held there:
    # a share is capped by what is held now (7), the rule of a scoped flatten.
    assert {(p.venue, p.symbol): p.quantity for p in got.positions} == {
        ("paper", "AAPL"): D(7), ("paper", "MSFT"): D(5), ("fix", "AAPL"): D(3)}
    [working] = got.working
    assert working.order.client_order_id == "s-3" and working.status is OrderStatus.PARTIALLY_FILLED
    assert working.filled_quantity == D(6) and working.fill_ids == ("f3",)
    assert got.fills == 5


def test_other_sources_and_the_failsafe_are_their_own(keeper: Path) -> None:
    assert {(p.symbol, p.quantity) for p in book("t").positions} == {("AAPL", D(7))}
    # the failsafe's net (-12) is on the other side of what is held (+7): no share
    assert book(FAILSAFE_SOURCE).positions == ()
    nobody = book("nobody")
    assert nobody.positions == () and nobody.working == () and nobody.fills == 0


def test_a_source_the_failsafe_flattened_learns_it_holds_nothing(keeper: Path) -> None:
    """After a flatten the venue is flat: a strategy starting then (or restarted) must not
    believe it still holds what its own fills built."""
    bus.publish(topics.SUBMITTED, order("fs-2", FAILSAFE_SOURCE, Side.SELL, "7"))
    bus.publish(topics.ORDERS, fill("fs-2", "f8", Side.SELL, "7", "0"))
    assert {(p.venue, p.symbol): p.quantity for p in book("s").positions} == {
        ("paper", "MSFT"): D(5), ("fix", "AAPL"): D(3)}
    assert book("t").positions == ()
