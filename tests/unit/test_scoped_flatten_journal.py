"""The journal and a source-scoped flatten: its closing orders (source ``flatten:<source>``)
are journaled by the position keeper like the failsafe's, so their fills are not external,
and they count in the source's positions (a restarted source sees its share closed)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from actors.errors import JournalError
from actors.journal import GOVERNOR_WRITER, KEEPER_WRITER, Journal
from core.flatten import closing_source
from messages import OrderFilled, Side, SubmitOrder


def order(coid: str, side: Side, quantity: int, source: str) -> SubmitOrder:
    return SubmitOrder(client_order_id=coid, venue="paper", symbol="AAPL", side=side,
                       quantity=Decimal(quantity), source=source, reduce_only=source != "fix:S")


def fill(o: SubmitOrder) -> OrderFilled:
    return OrderFilled(client_order_id=o.client_order_id, venue="paper", fill_id=f"x-{o.client_order_id}",
                       symbol="AAPL", side=o.side, quantity=o.quantity, price=Decimal(100),
                       leaves_quantity=Decimal(0))


def test_closing_orders_are_journaled_by_the_keeper_and_net_the_sources_position(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    bought = order("s-1", Side.BUY, 10, "fix:S")
    closing = order("fs-1", Side.SELL, 10, closing_source("fix:S"))
    with Journal(path, writer=GOVERNOR_WRITER) as governor:
        assert governor.record_order(bought)
    with Journal(path, writer=KEEPER_WRITER) as keeper:
        assert keeper.record_order(closing)
        with pytest.raises(JournalError):  # the keeper still writes no one else's orders
            keeper.record_order(order("other-1", Side.BUY, 1, "fix:T"))
        for o in (bought, closing):
            assert keeper.knows_order("paper", o.client_order_id)  # so its fill is not external
            assert keeper.record_fill(fill(o), Decimal(0))
        positions, fills = keeper.source_positions("fix:S")
        assert positions == {("paper", "AAPL"): Decimal(0)} and fills == 2
        assert keeper.source_positions("fix:T") == ({}, 0)
