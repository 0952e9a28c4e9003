"""The journal's busts, corrections and external fills (SQLite on disk): a version-1 journal
gains them by migration, each amendment is journaled once, and every reader sees the
executions in effect."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from actors import journal as journal_module
from actors.journal import GOVERNOR_WRITER, KEEPER_WRITER, READER, Journal, JournalError
from core.amendments import AmendedFills
from messages import OrderCancelled, OrderFilled, OrderStatus, Side, SubmitOrder
from messages.orders import FillBusted, FillCorrected

pytestmark = pytest.mark.timeout(30)

D = Decimal


def fill(fill_id: str, quantity: str, price: str, *, order: str = "o-1", ts_ns: int = 0) -> OrderFilled:
    """A partial fill (the order keeps working)."""
    return OrderFilled(client_order_id=order, venue="fix", fill_id=fill_id, symbol="ES", side=Side.BUY,
                       quantity=D(quantity), price=D(price), leaves_quantity=D(5), ts_ns=ts_ns)


def bust(fill_id: str, bust_id: str, order: str = "o-1") -> FillBusted:
    return FillBusted(client_order_id=order, venue="fix", fill_id=fill_id, bust_id=bust_id, symbol="ES",
                      side=Side.BUY, quantity=D(1), price=D(1), cumulative_quantity=D(0))


def test_a_version_one_journal_gains_external_fills_and_amendments(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    for statement in journal_module._SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("INSERT INTO fills VALUES ('fix', 'F1', 'C1', 'ES', 'buy', '10', '100', '0', 'V1', '0', 1, 2)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Journal(path, writer=KEEPER_WRITER) as journal:
        [record] = journal.fill_records()
        assert (record.fill.fill_id, record.fill.inferred, record.external) == ("F1", False, False)
        assert journal.amendments() == []
    db = sqlite3.connect(path)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    columns = {row[1] for row in db.execute("PRAGMA table_info(fills)")}
    db.close()
    assert "fill_amendments" in tables and {"inferred", "external"} <= columns
    Journal(path, writer=READER).close()


def test_amendments_are_journaled_once_and_every_reader_sees_the_executions_in_effect(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with Journal(path, writer=GOVERNOR_WRITER) as governor:
        governor.record_order(SubmitOrder(client_order_id="o-1", venue="fix", symbol="ES", side=Side.BUY,
                                          quantity=D(25), source="test"))
    with Journal(path, writer=KEEPER_WRITER) as journal:
        f1, f2 = fill("F1", "10", "100", ts_ns=1_000), fill("F2", "10", "110", ts_ns=2_000)
        assert journal.record_fill(f1, D(0)) and journal.record_fill(f2, D(0))
        assert journal.knows_order("fix", "o-1") and not journal.knows_order("zmq", "o-1")

        book = AmendedFills([f1, f2])
        busted = book.amend(bust("F2", "X1"))
        assert journal.record_amendment(bust("F2", "X1"), busted, D("-5"))
        assert not journal.record_amendment(bust("F2", "X1"), busted, D("-5"))   # the same report again
        correction = FillCorrected(client_order_id="o-1", venue="fix", fill_id="F1", correction_id="C1",
                                   symbol="ES", side=Side.BUY, quantity=D(8), price=D(101),
                                   cumulative_quantity=D(8))
        corrected = book.amend(correction)
        assert journal.record_amendment(correction, corrected, D(0))
        assert journal.has_amendment("fix", "C1") and not journal.has_amendment("zmq", "C1")

        assert [(f.fill_id, f.quantity, f.price) for f in journal.fills()] == [("C1", D(8), D(101))]
        assert [r.fill.fill_id for r in journal.fill_records(amended=False)] == ["F1", "F2"]
        [order] = journal.orders()
        assert order.filled_quantity == D(8)                       # 10 + 10 - 10 (bust) - 2 (correction)
        assert [o.filled_quantity for o in journal.open_orders()] == [D(8)]
        assert journal.traded_notional_since(0) == D(808)          # 8 x 101
        assert journal.realized_pnl_since(0) == D("-5")
        records = journal.amendment_records()
        assert [(r.applied, r.quantity_delta, r.notional_delta) for r in records] == [
            (True, D(-10), D(-1100)), (True, D(-2), D(-192))]
        assert journal.fill_count() == 2                           # the fills as reported stay


def test_an_expired_order_ends_expired(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with Journal(path, writer=GOVERNOR_WRITER) as governor:
        governor.record_order(SubmitOrder(client_order_id="gtd", venue="fix", symbol="ES", side=Side.BUY,
                                          quantity=D(5), source="test"))
    with Journal(path, writer=KEEPER_WRITER) as journal:
        journal.record_order_event(OrderCancelled(client_order_id="gtd", venue="fix", text="GTD reached",
                                                  expired=True))
        [order] = journal.orders()
        assert (order.status, order.status_text) == (OrderStatus.EXPIRED, "GTD reached")
        assert journal.open_orders() == []
        # a late cancel changes nothing: expired is terminal
        journal.record_order_event(OrderCancelled(client_order_id="gtd", venue="fix"))
        assert journal.orders()[0].status is OrderStatus.EXPIRED


def test_the_governor_cannot_write_amendments(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite3", writer=GOVERNOR_WRITER) as governor, \
            pytest.raises(JournalError, match="fill_amendments"):
        governor.record_amendment(bust("F1", "X1"), AmendedFills().amend(bust("F1", "X1")), D(0))
