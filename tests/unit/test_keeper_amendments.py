"""The position keeper on trade busts and corrections, fills for orders it never sent, and
inferred fills: journaled once (a repeat and a restart change nothing), applied to the
positions and P&L, and the venue unreconciled until its positions agree again."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from actors import topics
from actors.journal import Journal
from actors.position_keeper import GetPortfolio
from messages import (
    FAILSAFE_SOURCE,
    OrderFilled,
    PortfolioSnapshot,
    Reconciliation,
    SafetyEvent,
    Severity,
    Side,
    VenuePosition,
    VenuePositions,
)
from messages.orders import FillBusted, FillCorrected
from supervision import Tree, bus
from tests.recorder import Recorder
from tests.unit.test_position_keeper import ask, fill, position, start_keeper, written_ahead

D = Decimal

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder.spawn("recorder", [topics.PORTFOLIO, topics.SAFETY])


def bust_of(f: OrderFilled, bust_id: str) -> FillBusted:
    return FillBusted(client_order_id=f.client_order_id, venue=f.venue, fill_id=f.fill_id, bust_id=bust_id,
                      symbol=f.symbol, side=f.side, quantity=f.quantity, price=f.price,
                      cumulative_quantity=D(0), text="trade busted")


def correction_of(f: OrderFilled, correction_id: str, quantity: str, price: str) -> FillCorrected:
    return FillCorrected(client_order_id=f.client_order_id, venue=f.venue, fill_id=f.fill_id,
                         correction_id=correction_id, symbol=f.symbol, side=f.side, quantity=D(quantity),
                         price=D(price), cumulative_quantity=D(quantity), text="trade corrected")


def sent(state_dir: Path, *fills: OrderFilled) -> None:
    written_ahead(state_dir, *fills)
    for f in fills:
        bus.publish(topics.ORDERS, f)


def snapshot_where(recorder: Recorder, predicate: object, after: int = 0) -> PortfolioSnapshot:
    found: PortfolioSnapshot = recorder.wait_for(
        lambda m: isinstance(m, PortfolioSnapshot) and predicate(m), after=after)  # type: ignore[operator]
    return found


def es(snapshot: PortfolioSnapshot, venue: str = "paper") -> tuple[Decimal, Decimal, Decimal]:
    p = position(snapshot, "ES", venue)
    return (D(0), D(0), D(0)) if p is None else (p.quantity, p.average_price, p.realized_pnl)


def reconciliations(recorder: Recorder, after: int = 0) -> list[Reconciliation]:
    return [m for m in recorder.messages(Reconciliation)][after:]


def amendment_rows(state_dir: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(state_dir / "journal.sqlite3")
    try:
        return db.execute("SELECT venue, amendment_id, kind, fill_id, applied, quantity_delta, realized_pnl"
                          " FROM fill_amendments ORDER BY rowid").fetchall()
    finally:
        db.close()


def test_a_bust_removes_the_trade_and_its_pnl_once_across_repeats_and_a_restart(
    tmp_path: Path, recorder: Recorder
) -> None:
    tree = start_keeper(tmp_path)
    f1 = fill("f1", Side.BUY, "10", "100")
    f2 = fill("f2", Side.SELL, "4", "110")
    sent(tmp_path, f1, f2)
    snapshot_where(recorder, lambda s: s.fills == 2 and es(s) == (D(6), D(100), D(40)))

    mark = recorder.count()
    bus.publish(topics.ORDERS, bust_of(f2, "X1"))
    after = snapshot_where(recorder, lambda s: es(s)[0] == D(10), after=mark)
    assert es(after) == (D(10), D(100), D(0))          # as if f2 never traded: its +40 is gone
    assert after.realized_pnl == 0 and after.daily_realized_pnl == 0
    assert after.daily_traded_notional == D(1000)      # 10 x 100; the busted 440 no longer counts
    unreconciled: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and not m.reconciled, after=mark)
    assert unreconciled.venue == "paper" and len(unreconciled.mismatches) == 1
    assert "f2" in unreconciled.mismatches[0] and "busted" in unreconciled.mismatches[0]

    # the venue reports the same bust again (a resend): nothing changes
    bus.publish(topics.ORDERS, bust_of(f2, "X1"))
    assert es(ask(GetPortfolio())) == (D(10), D(100), D(0))
    assert amendment_rows(tmp_path) == [("paper", "X1", "bust", "f2", 1, "-4", "-40")]
    with Journal(tmp_path / "journal.sqlite3") as journal:
        assert [f.fill_id for f in journal.fills()] == ["f1"]                  # in effect
        assert [r.fill.fill_id for r in journal.fill_records(amended=False)] == ["f1", "f2"]
        assert journal.realized_pnl_since(0) == 0
        filled = {r.order.client_order_id: r.filled_quantity for r in journal.orders()}
        assert filled == {"o-f1": 10, "o-f2": 0}

    # a restart replays the bust: same position, and a third report still changes nothing
    tree.stop()
    start_keeper(tmp_path)
    assert es(ask(GetPortfolio())) == (D(10), D(100), D(0))
    assert ask(GetPortfolio()).daily_realized_pnl == 0
    bus.publish(topics.ORDERS, bust_of(f2, "X1"))
    assert es(ask(GetPortfolio())) == (D(10), D(100), D(0))
    assert len(amendment_rows(tmp_path)) == 1


def test_the_venue_stays_unreconciled_until_its_positions_agree(tmp_path: Path, recorder: Recorder) -> None:
    start_keeper(tmp_path, mismatch_confirmations=3)
    f1 = fill("f1", Side.BUY, "10", "100")
    sent(tmp_path, f1)
    report = VenuePositions(venue="paper",
                            positions=(VenuePosition(venue="paper", symbol="ES", quantity=D(10)),))
    bus.publish(topics.POSITIONS, report)
    recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.reconciled)

    mark = recorder.count()
    bus.publish(topics.ORDERS, correction_of(f1, "C1", "8", "101"))
    bad: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert not bad.reconciled and "corrected from 10 at 100 to 8 at 101" in bad.mismatches[0]
    # the venue's report still shows the old quantity (on its way): unreconciled, no new alert yet
    bus.publish(topics.POSITIONS, report)
    assert ask(GetPortfolio()) is not None                    # the report was handled
    assert not [m for m in recorder.messages(SafetyEvent)[0:] if m.kind == "reconciliation_mismatch"]
    assert [r.reconciled for r in reconciliations(recorder)][-1] is False
    # the venue agrees: reconciled again
    bus.publish(topics.POSITIONS, msgspec.structs.replace(
        report, positions=(VenuePosition(venue="paper", symbol="ES", quantity=D(8)),)))
    good: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.reconciled,
                                             after=mark)
    assert good.mismatches == () and good.since_ns >= bad.ts_ns
    snapshot = ask(GetPortfolio())
    assert es(snapshot) == (D(8), D(101), D(0))
    with Journal(tmp_path / "journal.sqlite3") as journal:
        [effective] = journal.fills()
        assert (effective.fill_id, effective.quantity, effective.price) == ("C1", D(8), D(101))
        assert [r.reconciled for r in journal.reconciliations()] == [True, False, True]


def test_a_fill_for_an_order_never_sent_is_journaled_as_external_with_a_warning(
    tmp_path: Path, recorder: Recorder
) -> None:
    start_keeper(tmp_path)
    ours = fill("f1", Side.BUY, "10", "100")
    sent(tmp_path, ours)
    foreign = OrderFilled(client_order_id="EXT-77", venue="paper", fill_id="V-9", symbol="ES", side=Side.BUY,
                          quantity=D(7), price=D(101), leaves_quantity=D(0), venue_order_id="77")
    mark = recorder.count()
    bus.publish(topics.ORDERS, foreign)
    warning: SafetyEvent = recorder.wait_for(lambda m: isinstance(m, SafetyEvent), after=mark)
    assert (warning.kind, warning.severity, warning.venue, warning.symbol) == (
        "external_fill", Severity.WARNING, "paper", "ES")
    assert all(ident in warning.detail for ident in ("V-9", "EXT-77", "77"))
    bad: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert not bad.reconciled and "external fill V-9" in bad.mismatches[0]
    assert es(ask(GetPortfolio()))[0] == D(17)               # the venue's position has it: so does ours
    with Journal(tmp_path / "journal.sqlite3") as journal:
        records = {r.fill.fill_id: r for r in journal.fill_records()}
        assert (records["f1"].external, records["V-9"].external) == (False, True)
        assert (records["V-9"].fill.client_order_id, records["V-9"].fill.venue_order_id) == ("EXT-77", "77")
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", positions=(
        VenuePosition(venue="paper", symbol="ES", quantity=D(17)),)))
    recorder.wait_for(lambda m: isinstance(m, Reconciliation) and m.reconciled, after=mark)
    # the same execution delivered again (a resync) is no second warning
    bus.publish(topics.ORDERS, foreign)
    assert ask(GetPortfolio()).fills == 2
    assert len([m for m in recorder.messages(SafetyEvent) if m.kind == "external_fill"]) == 1


def test_a_fill_of_a_failsafe_order_the_journal_missed_is_the_failsafes_not_external(
    tmp_path: Path, recorder: Recorder
) -> None:
    """The keeper was restarting when the failsafe sent a closing order (its SUBMITTED was
    lost): the fill is recognised by the failsafe's id shape and journaled as its order."""
    start_keeper(tmp_path)
    coid = "fs-20261129T201500-123456-paper-2-0"
    closing = OrderFilled(client_order_id=coid, venue="paper", fill_id="V-1", symbol="ES", side=Side.SELL,
                          quantity=D(4), price=D(99), leaves_quantity=D(0))
    other = coid.replace("paper", "other")
    lookalike = msgspec.structs.replace(closing, client_order_id=other, fill_id="V-2")
    mark = recorder.count()
    bus.publish(topics.ORDERS, closing)
    bus.publish(topics.ORDERS, lookalike)   # the shape, but another venue's: external
    warning: SafetyEvent = recorder.wait_for(lambda m: isinstance(m, SafetyEvent), after=mark)
    assert warning.kind == "external_fill" and "V-2" in warning.detail
    assert ask(GetPortfolio()).fills == 2
    assert [m.detail for m in recorder.messages(SafetyEvent) if m.kind == "external_fill"] == [warning.detail]
    with Journal(tmp_path / "journal.sqlite3") as journal:
        records = {r.fill.fill_id: r for r in journal.fill_records()}
        assert (records["V-1"].external, records["V-2"].external) == (False, True)
        [order] = [r.order for r in journal.orders() if r.order.client_order_id == coid]
        assert order.source == FAILSAFE_SOURCE and order.reduce_only and order.quantity == D(4)


def test_an_inferred_fill_is_journaled_as_inferred(tmp_path: Path, recorder: Recorder) -> None:
    start_keeper(tmp_path)
    inferred = msgspec.structs.replace(fill("inferred:o-1:10", Side.BUY, "10", "100", order="o-1"),
                                       inferred=True)
    sent(tmp_path, inferred, fill("f2", Side.BUY, "1", "100"))
    snapshot_where(recorder, lambda s: s.fills == 2)
    with Journal(tmp_path / "journal.sqlite3") as journal:
        flags = [(f.fill_id, f.inferred) for f in journal.fills()]
        assert flags == [("inferred:o-1:10", True), ("f2", False)]
    assert not recorder.messages(SafetyEvent)


def test_a_bust_that_comes_before_its_execution_applies_when_the_execution_comes(
    tmp_path: Path, recorder: Recorder
) -> None:
    tree: Tree = start_keeper(tmp_path)
    f1 = fill("f1", Side.BUY, "10", "100")
    f2 = fill("f2", Side.BUY, "5", "100")
    written_ahead(tmp_path, f1, f2)
    bus.publish(topics.ORDERS, f1)
    bus.publish(topics.ORDERS, bust_of(f2, "X1"))            # f2 not journaled yet
    bus.publish(topics.ORDERS, f2)
    snapshot_where(recorder, lambda s: s.fills == 2)
    assert es(ask(GetPortfolio()))[0] == D(10)
    tree.stop()
    start_keeper(tmp_path)
    assert es(ask(GetPortfolio()))[0] == D(10)


def test_the_corrected_execution_reported_again_under_its_new_id_is_not_a_second_fill(
    tmp_path: Path, recorder: Recorder
) -> None:
    tree = start_keeper(tmp_path)
    f1 = fill("f1", Side.BUY, "10", "100")
    sent(tmp_path, f1)
    bus.publish(topics.ORDERS, correction_of(f1, "f1.02", "10", "101"))
    snapshot_where(recorder, lambda s: es(s) == (D(10), D(101), D(0)))
    again = msgspec.structs.replace(f1, fill_id="f1.02", price=D(101))
    bus.publish(topics.ORDERS, again)                        # e.g. IB's executions after a reconnect
    assert es(ask(GetPortfolio())) == (D(10), D(101), D(0))
    tree.stop()
    start_keeper(tmp_path)
    bus.publish(topics.ORDERS, again)
    snapshot = ask(GetPortfolio())
    assert es(snapshot) == (D(10), D(101), D(0)) and snapshot.fills == 1
