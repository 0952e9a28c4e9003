"""The position keeper and its journal: position arithmetic, P&L, the session boundary,
journaling, duplicate fills, marks and reconciliation."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import topics
from actors.errors import JournalError
from actors.journal import GOVERNOR_WRITER, KEEPER_WRITER, TABLE_OWNERS, Journal
from actors.position_keeper import (
    GetPortfolio,
    GetReconciliations,
    KeeperConfig,
    PositionKeeper,
    apply_fill,
    session_start_ns,
)
from messages import (
    FAILSAFE_SOURCE,
    ConnectorDown,
    ConnectorUp,
    Mode,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    PortfolioSnapshot,
    Quote,
    QuoteBatch,
    Reconciliation,
    RejectReason,
    RequestPositions,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    VenuePosition,
    VenuePositions,
)
from supervision import NO_BACKOFF, ChildSpec, Tree, bus, registry
from tests.recorder import Recorder

D = Decimal
KEEPER = "position_keeper"


def ns(text: str) -> int:
    """An ISO time (UTC) in nanoseconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def fill(fill_id: str, side: Side, quantity: str, price: str, *, symbol: str = "ES", venue: str = "paper",
         ts_ns: int = 0, order: str = "") -> OrderFilled:
    """A complete fill of an order (``order`` defaults to one order per fill)."""
    return OrderFilled(
        client_order_id=order or f"o-{fill_id}", venue=venue, fill_id=fill_id, symbol=symbol, side=side,
        quantity=D(quantity), price=D(price), leaves_quantity=D(0), ts_ns=ts_ns,
    )


def written_ahead(state_dir: Path, *fills: OrderFilled) -> None:
    """Journal the orders of ``fills`` as the governor writes them ahead of sending (a fill
    of an order the journal never held is external activity)."""
    with Journal(state_dir / "journal.sqlite3", writer=GOVERNOR_WRITER) as journal:
        for f in fills:
            journal.record_order(SubmitOrder(client_order_id=f.client_order_id, venue=f.venue,
                                             symbol=f.symbol, side=f.side, quantity=f.quantity,
                                             source="test"))


def publish_sent(state_dir: Path, f: OrderFilled) -> None:
    """A fill of an order tradeguard sent: written ahead, then published."""
    written_ahead(state_dir, f)
    bus.publish(topics.ORDERS, f)


def start_keeper(state_dir: Path, clock: Any = None, **config: Any) -> Tree:
    """The keeper under a root supervisor, as the application runs it."""
    kwargs = {} if clock is None else {"clock": clock}
    spec = ChildSpec(KEEPER, PositionKeeper, args=(KeeperConfig(**config), state_dir), kwargs=kwargs)
    tree = Tree([spec], backoff=NO_BACKOFF, name=f"root-{id(spec)}")
    tree.start(timeout_s=5)
    return tree


def ask(message: Any) -> Any:
    ref = registry.lookup(KEEPER)
    assert ref is not None, "position keeper is not running"
    return ref.ask(message, timeout=2)


def position(snapshot: PortfolioSnapshot, symbol: str, venue: str = "paper") -> Any:
    found = [p for p in snapshot.positions if p.symbol == symbol and p.venue == venue]
    return found[0] if found else None


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder.spawn("recorder", [topics.PORTFOLIO, topics.SAFETY])


def wait_fills(recorder: Recorder, count: int, after: int = 0) -> PortfolioSnapshot:
    """The first snapshot published with ``count`` fills in the journal."""
    snapshot: PortfolioSnapshot = recorder.wait_for(
        lambda m: isinstance(m, PortfolioSnapshot) and m.fills == count, after=after
    )
    return snapshot


# ---- position arithmetic ------------------------------------------------------------

B, S = D(1), D(-1)

POSITION_CASES = [
    # name, (qty, avg), signed fill qty, price, -> (qty, avg, realized)
    ("open long", (D(0), D(0)), D(10), D(100), (D(10), D(100), D(0))),
    ("add long", (D(10), D(100)), D(10), D(110), (D(20), D(105), D(0))),
    ("reduce long at a gain", (D(20), D(105)), D(-5), D(115), (D(15), D(105), D(50))),
    ("reduce long at a loss", (D(20), D(105)), D(-5), D(100), (D(15), D(105), D(-25))),
    ("close long", (D(15), D(105)), D(-15), D(104), (D(0), D(0), D(-15))),
    ("flip long to short", (D(10), D(100)), D(-15), D(90), (D(-5), D(90), D(-100))),
    ("open short", (D(0), D(0)), D(-4), D(50), (D(-4), D(50), D(0))),
    ("add short", (D(-4), D(50)), D(-4), D(60), (D(-8), D(55), D(0))),
    ("cover short at a gain", (D(-8), D(55)), D(3), D(45), (D(-5), D(55), D(30))),
    ("cover short at a loss", (D(-8), D(55)), D(3), D(65), (D(-5), D(55), D(-30))),
    ("close short", (D(-5), D(55)), D(5), D(50), (D(0), D(0), D(25))),
    ("flip short to long", (D(-5), D(55)), D(7), D(52), (D(2), D(52), D(15))),
    ("fractional quantities", (D("0.5"), D("30000")), D("0.25"), D("30600"), (D("0.75"), D("30200"), D(0))),
]


@pytest.mark.parametrize(("name", "start", "traded", "price", "expected"), POSITION_CASES,
                         ids=[c[0] for c in POSITION_CASES])
def test_position_arithmetic(name: str, start: tuple[Decimal, Decimal], traded: Decimal, price: Decimal,
                             expected: tuple[Decimal, Decimal, Decimal]) -> None:
    effect = apply_fill(start[0], start[1], traded, price)
    assert (effect.quantity, effect.average_price, effect.realized_pnl) == expected
    assert all(isinstance(v, Decimal) for v in effect)


def test_a_sequence_of_fills_realizes_the_round_trip_pnl() -> None:
    qty, avg, realized = D(0), D(0), D(0)
    # buy 3 @ 10.10, buy 1 @ 10.30, sell 4 @ 10.40: +0.30*3 + 0.10 = 1.00 exactly, no float drift
    for traded, price in ((D(3), D("10.10")), (D(1), D("10.30")), (D(-4), D("10.40"))):
        qty, avg, pnl = apply_fill(qty, avg, traded, price)
        realized += pnl
    assert (qty, avg) == (D(0), D(0))
    assert realized == D("1.00")


@pytest.mark.parametrize(("now", "boundary", "start"), [
    ("2024-03-01T12:00:00", "00:00", "2024-03-01T00:00:00"),
    ("2024-03-01T00:00:00", "00:00", "2024-03-01T00:00:00"),
    ("2024-03-01T21:59:59", "22:00", "2024-02-29T22:00:00"),
    ("2024-03-01T22:00:00", "22:00", "2024-03-01T22:00:00"),
    ("2024-03-01T23:30:00", "22:00", "2024-03-01T22:00:00"),
])
def test_session_start(now: str, boundary: str, start: str) -> None:
    assert session_start_ns(ns(now) + 123, boundary) == ns(start)


@pytest.mark.parametrize("bad", ["24:00", "7:00", "07:60", "0700", "", "ab:cd"])
def test_config_refuses_a_bad_session_boundary(bad: str) -> None:
    with pytest.raises(ValueError, match="session_boundary"):
        KeeperConfig(session_boundary=bad)


# ---- the keeper -------------------------------------------------------------------------


def test_fill_is_in_the_sqlite_file_when_the_snapshot_is_published(
    tmp_path: Path, recorder: Recorder
) -> None:
    start_keeper(tmp_path)
    bus.publish(topics.ORDERS, fill("f1", Side.BUY, "2", "101.25"))
    snapshot = wait_fills(recorder, 1)

    assert position(snapshot, "ES").quantity == D(2)
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        rows = db.execute("SELECT venue, fill_id, side, quantity, price, realized_pnl FROM fills").fetchall()
    assert rows == [("paper", "f1", "buy", "2", "101.25", "0")]


def test_keeper_pnl_in_snapshots(tmp_path: Path, recorder: Recorder) -> None:
    start_keeper(tmp_path)
    for f in (fill("f1", Side.BUY, "10", "100"), fill("f2", Side.SELL, "4", "103"),
              fill("f3", Side.SELL, "2", "50", symbol="NQ")):
        bus.publish(topics.ORDERS, f)
    snapshot = wait_fills(recorder, 3)

    es, nq = position(snapshot, "ES"), position(snapshot, "NQ")
    assert (es.quantity, es.average_price, es.realized_pnl) == (D(6), D(100), D(12))
    assert (nq.quantity, nq.average_price, nq.realized_pnl) == (D(-2), D(50), D(0))
    assert snapshot.realized_pnl == D(12)
    assert snapshot.daily_realized_pnl == D(12)
    assert snapshot.daily_traded_notional == D(1000 + 412 + 100)
    assert ask(GetPortfolio()).positions == snapshot.positions


def test_duplicate_fill_is_applied_once_also_across_a_restart(tmp_path: Path, recorder: Recorder) -> None:
    tree = start_keeper(tmp_path)
    first = fill("f1", Side.BUY, "5", "100")
    bus.publish(topics.ORDERS, first)
    bus.publish(topics.ORDERS, first)
    bus.publish(topics.ORDERS, fill("f2", Side.BUY, "1", "100"))
    snapshot = wait_fills(recorder, 2)
    assert position(snapshot, "ES").quantity == D(6)
    assert ask(GetPortfolio()).fills == 2
    tree.stop()

    mark = recorder.count()
    start_keeper(tmp_path)
    replayed = wait_fills(recorder, 2, after=mark)
    assert position(replayed, "ES").quantity == D(6)
    # a connector resynchronising after the restart delivers both fills again, then a new one
    for f in (first, fill("f2", Side.BUY, "1", "100"), fill("f3", Side.SELL, "6", "101")):
        bus.publish(topics.ORDERS, f)
    snapshot = wait_fills(recorder, 3, after=mark)
    es = position(snapshot, "ES")
    assert (es.quantity, es.realized_pnl) == (D(0), D(6))
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM fills").fetchone()[0] == 3


def test_same_fill_id_at_two_venues_is_two_fills(tmp_path: Path, recorder: Recorder) -> None:
    start_keeper(tmp_path)
    bus.publish(topics.ORDERS, fill("1", Side.BUY, "1", "10", venue="paper"))
    bus.publish(topics.ORDERS, fill("1", Side.BUY, "1", "10", venue="zmq"))
    snapshot = wait_fills(recorder, 2)
    assert position(snapshot, "ES", "paper").quantity == position(snapshot, "ES", "zmq").quantity == D(1)


def test_daily_pnl_across_the_session_boundary(tmp_path: Path, recorder: Recorder) -> None:
    clock = FakeClock(ns("2024-03-01T21:30:00"))
    tree = start_keeper(tmp_path, clock, session_boundary="22:00")
    bus.publish(topics.ORDERS, fill("f1", Side.BUY, "10", "100"))
    bus.publish(topics.ORDERS, fill("f2", Side.SELL, "5", "110"))
    before = wait_fills(recorder, 2)
    assert (before.realized_pnl, before.daily_realized_pnl) == (D(50), D(50))
    assert before.daily_traded_notional == D(1550)

    clock.now = ns("2024-03-01T22:00:01")  # a new session: nothing traded in it yet
    rolled = ask(GetPortfolio())
    assert (rolled.realized_pnl, rolled.daily_realized_pnl, rolled.daily_traded_notional) == (D(50), 0, 0)
    assert position(rolled, "ES").quantity == D(5)

    # the venue executed this one before the boundary: it belongs to the old session
    bus.publish(topics.ORDERS, fill("f3", Side.SELL, "1", "120", ts_ns=ns("2024-03-01T21:59:59")))
    bus.publish(topics.ORDERS, fill("f4", Side.SELL, "4", "90"))
    after = wait_fills(recorder, 4)
    assert after.realized_pnl == D(50 + 20 - 40)
    assert after.daily_realized_pnl == D(-40)
    assert after.daily_traded_notional == D(360)
    assert position(after, "ES").quantity == 0  # flat but traded today: still listed

    tree.stop()
    mark = recorder.count()
    start_keeper(tmp_path, clock, session_boundary="22:00")
    replayed = wait_fills(recorder, 4, after=mark)
    assert (replayed.realized_pnl, replayed.daily_realized_pnl) == (D(30), D(-40))

    clock.now = ns("2024-03-02T22:00:00")
    next_day = ask(GetPortfolio())
    assert (next_day.daily_realized_pnl, next_day.positions) == (0, ())

    clock.now = ns("2024-03-03T22:00:00")  # the first thing in this session is a fill
    bus.publish(topics.ORDERS, fill("f5", Side.BUY, "2", "10"))
    fresh = wait_fills(recorder, 5, after=mark)
    assert (fresh.daily_realized_pnl, fresh.daily_traded_notional) == (D(0), D(20))


def test_marks_from_quote_batches_change_unrealized_pnl(tmp_path: Path, recorder: Recorder) -> None:
    start_keeper(tmp_path, publish_interval_s=0.02)
    bus.publish(topics.ORDERS, fill("f1", Side.BUY, "10", "100"))
    bus.publish(topics.ORDERS, fill("f2", Side.SELL, "3", "20", symbol="NQ"))
    opened = wait_fills(recorder, 2)
    assert opened.unrealized_pnl == 0 and position(opened, "ES").mark_price is None

    def quote(symbol: str, bid: str, ask: str) -> Quote:
        return Quote(venue="paper", symbol=symbol, bid=D(bid), ask=D(ask), bid_size=D(1), ask_size=D(1))

    mark = recorder.count()
    bus.publish(topics.MARKET, QuoteBatch(venue="paper", quotes=(
        quote("ES", "101", "103"), quote("ES", "104", "106"), quote("NQ", "21", "22"), quote("CL", "1", "2"),
    )))
    marked = recorder.wait_for(
        lambda m: isinstance(m, PortfolioSnapshot) and m.unrealized_pnl != 0, after=mark
    )
    es, nq = position(marked, "ES"), position(marked, "NQ")
    assert (es.mark_price, es.unrealized_pnl) == (D(105), D(50))  # the last quote of the batch counts
    assert (nq.mark_price, nq.unrealized_pnl) == (D("21.5"), D("-4.5"))
    assert marked.unrealized_pnl == D("45.5")
    assert marked.daily_pnl == D("45.5")

    mark = recorder.count()
    bus.publish(topics.MARKET, QuoteBatch(venue="paper", quotes=(quote("ES", "94", "96"),)))
    moved = recorder.wait_for(
        lambda m: isinstance(m, PortfolioSnapshot) and position(m, "ES").unrealized_pnl == D(-50), after=mark
    )
    assert moved.unrealized_pnl == D("-54.5")


def test_quotes_for_another_venue_do_not_mark(tmp_path: Path, recorder: Recorder) -> None:
    start_keeper(tmp_path, publish_interval_s=0)
    bus.publish(topics.ORDERS, fill("f1", Side.BUY, "1", "100"))
    wait_fills(recorder, 1)
    bus.publish(topics.MARKET, QuoteBatch(venue="zmq", quotes=(
        Quote(venue="zmq", symbol="ES", bid=D(200), ask=D(202), bid_size=D(1), ask_size=D(1)),)))
    bus.publish(topics.MARKET, QuoteBatch(venue="paper", quotes=(
        Quote(venue="paper", symbol="ES", bid=D(0), ask=D(202), bid_size=D(1), ask_size=D(1)),)))
    bus.publish(topics.ORDERS, fill("f2", Side.BUY, "1", "100"))  # a fill publishes at once
    snapshot = wait_fills(recorder, 2)
    assert position(snapshot, "ES").mark_price is None
    assert snapshot.unrealized_pnl == 0


def test_reconciliation(tmp_path: Path, recorder: Recorder) -> None:
    start_keeper(tmp_path)
    publish_sent(tmp_path, fill("f1", Side.BUY, "10", "100"))
    publish_sent(tmp_path, fill("f2", Side.SELL, "2", "50", symbol="NQ"))
    wait_fills(recorder, 2)

    agree = VenuePositions(venue="paper", positions=(
        VenuePosition(venue="paper", symbol="NQ", quantity=D("-2.0"), average_price=D(50)),
        VenuePosition(venue="paper", symbol="ES", quantity=D(10), average_price=D(100)),
        VenuePosition(venue="paper", symbol="CL", quantity=D(0)),
    ))
    bus.publish(topics.POSITIONS, agree)
    ok: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation))
    assert ok.reconciled and ok.mismatches == ()
    assert {p.symbol for p in ok.keeper_positions} == {"ES", "NQ"}

    mark = recorder.count()
    disagree = VenuePositions(venue="paper", positions=(
        VenuePosition(venue="paper", symbol="ES", quantity=D(7)),
        VenuePosition(venue="paper", symbol="CL", quantity=D(1)),
    ))
    for _ in range(3):  # a mismatch is confirmed by three disagreeing reports in a row
        bus.publish(topics.POSITIONS, disagree)
    bad: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert not bad.reconciled
    assert bad.mismatches == ("CL: journal 0, venue 1", "ES: journal 10, venue 7", "NQ: journal -2, venue 0")
    event: SafetyEvent = recorder.wait_for(lambda m: isinstance(m, SafetyEvent), after=mark)
    assert (event.kind, event.severity, event.venue) == ("reconciliation_mismatch", Severity.WARNING, "paper")
    assert "ES: journal 10, venue 7" in event.detail

    bus.publish(topics.POSITIONS, VenuePositions(venue="zmq"))  # flat here, flat there
    flat: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and m.venue == "zmq", after=mark
    )
    assert flat.reconciled
    assert len(recorder.messages(SafetyEvent)) == 1
    last = ask(GetReconciliations())
    assert (last["paper"], last["zmq"]) == (bad, flat)
    with Journal(tmp_path / "journal.sqlite3") as journal:
        assert [r.reconciled for r in journal.reconciliations()] == [True, False, True]


def test_orders_and_their_events_are_journaled(tmp_path: Path, recorder: Recorder) -> None:
    """The governor writes its orders ahead; the keeper journals the failsafe's (from
    SUBMITTED), every order event, and the status each event implies."""
    start_keeper(tmp_path)
    order = SubmitOrder(client_order_id="c1", venue="paper", symbol="ES", side=Side.BUY, quantity=D(5),
                        source="sample", created_ns=7)
    other = SubmitOrder(client_order_id="c2", venue="paper", symbol="ES", side=Side.SELL, quantity=D(1),
                        source=FAILSAFE_SOURCE, reduce_only=True)
    stray = SubmitOrder(client_order_id="c3", venue="paper", symbol="ES", side=Side.SELL, quantity=D(1),
                        source="sample")
    with Journal(tmp_path / "journal.sqlite3", writer=GOVERNOR_WRITER) as governor_journal:
        assert governor_journal.record_order(order)   # written ahead, as the governor does
    bus.publish(topics.SUBMITTED, order)   # already journaled: nothing more
    bus.publish(topics.SUBMITTED, other)   # the failsafe's: the keeper journals it
    bus.publish(topics.SUBMITTED, stray)   # a strategy order the governor did not write: not the keeper's
    bus.publish(topics.ORDERS,
                OrderAccepted(client_order_id="c1", venue="paper", symbol="ES", venue_order_id="v1"))
    bus.publish(topics.ORDERS, OrderCancelled(client_order_id="c2", venue="paper", text="user"))
    bus.publish(topics.ORDERS, OrderAccepted(client_order_id="c2", venue="paper", symbol="ES"))  # late
    bus.publish(topics.ORDERS, msgspec.structs.replace(fill("f1", Side.BUY, "2", "100", order="c1"),
                                                       leaves_quantity=D(3)))   # 2 of 5
    wait_fills(recorder, 1)

    with Journal(tmp_path / "journal.sqlite3") as journal:
        records = {r.order.client_order_id: r for r in journal.orders()}
        assert journal.client_order_ids() == {"c1", "c2"}   # c3 never passed the governor
        assert [type(e).__name__ for e in journal.order_events("c2")] == ["OrderCancelled", "OrderAccepted"]
    assert records["c1"].order == order
    assert (records["c1"].status, records["c1"].filled_quantity) == (OrderStatus.PARTIALLY_FILLED, D(2))
    assert records["c1"].venue_order_id == "v1"
    assert (records["c2"].status, records["c2"].status_text) == (OrderStatus.CANCELLED, "user")


# ---- the journal on its own ---------------------------------------------------------------


def test_each_table_has_one_writer(tmp_path: Path) -> None:
    """A writer that does not own a table is refused before anything is written."""
    path = tmp_path / "j.sqlite3"
    order = SubmitOrder(client_order_id="w1", venue="paper", symbol="ES", side=Side.BUY, quantity=D(1))
    assert set(TABLE_OWNERS) >= {"orders", "mode_log", "fills", "order_events", "reconciliations"}
    with Journal(path, writer=KEEPER_WRITER) as keeper, Journal(path, writer=GOVERNOR_WRITER) as governor:
        with pytest.raises(JournalError, match="mode_log is written by risk_governor"):
            keeper.record_mode(Mode.STARTUP, Mode.READY, "x", 1)
        with pytest.raises(JournalError, match="orders is written by risk_governor"):
            keeper.record_order(order)
        with pytest.raises(JournalError, match="fills is written by position_keeper"):
            governor.record_fill(fill("g1", Side.BUY, "1", "10"), D(0))
        with pytest.raises(JournalError, match="reconciliations is written by position_keeper"):
            governor.record_reconciliation(Reconciliation(venue="paper", reconciled=True))
        assert governor.record_order(order)
        assert keeper.record_fill(fill("k1", Side.BUY, "1", "10", order="w1"), D(0))
        # The failsafe's closing orders are the one kind of order row the keeper writes.
        assert keeper.record_order(msgspec.structs.replace(order, client_order_id="fs-1",
                                                           source=FAILSAFE_SOURCE, reduce_only=True))
        assert governor.fill_count() == 1 and keeper.client_order_ids() == {"w1", "fs-1"}
    with pytest.raises(JournalError, match="unknown writer"):
        Journal(path, writer="dashboard")



def test_journal_api(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as journal:
        assert journal.last_mode() is None
        journal.record_mode(Mode.STARTUP, Mode.READY, "started", 1)
        journal.record_mode(Mode.READY, Mode.LIVE, "operator", 2)
        assert journal.record_fill(fill("a", Side.BUY, "2", "10", ts_ns=100), D(0), recorded_ns=105)
        assert journal.record_fill(fill("b", Side.SELL, "1", "12"), D(2), recorded_ns=300)
        assert not journal.record_fill(fill("a", Side.BUY, "2", "10"), D(0))
        journal.set_meta("k", "v")
    with Journal(path) as journal:  # everything survives a reopen
        assert journal.last_mode() is Mode.LIVE
        assert [m.current for m in journal.mode_history()] == [Mode.READY, Mode.LIVE]
        assert [f.fill_id for f in journal.fills()] == ["a", "b"]
        assert journal.fills()[0] == fill("a", Side.BUY, "2", "10", ts_ns=100)
        assert journal.has_fill("paper", "b") and not journal.has_fill("zmq", "b")
        assert journal.traded_notional_since(0) == D(32)
        assert journal.traded_notional_since(200) == D(12)  # b had no venue time: journal time counts
        assert journal.realized_pnl_since(101) == D(2)
        assert journal.fill_count() == 2 and journal.get_meta("k") == "v"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_journal_refuses_use_from_another_thread(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    errors: list[BaseException] = []

    def use() -> None:
        try:
            journal.fill_count()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(5)
    assert len(errors) == 1 and isinstance(errors[0], JournalError)
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.fill_count()


def test_journal_that_cannot_be_opened_raises_journal_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not an sqlite file, not at all" * 100)
    with pytest.raises(JournalError, match="cannot open"):
        Journal(tmp_path / "not-a-db")


def test_connected_venues_are_reconciled_periodically(tmp_path: Path, recorder: Recorder) -> None:
    """Every connected venue is asked for its positions each ``reconcile_interval_s``; the
    comparison says since when the venue is reconciled or not; a venue down is not asked."""
    asked = Recorder.spawn("fix")   # stands in for the connector named "fix"
    start_keeper(tmp_path, reconcile_interval_s=0.2, mismatch_confirmations=1)
    publish_sent(tmp_path, fill("f1", Side.BUY, "3", "100", venue="fix"))
    wait_fills(recorder, 1)
    bus.publish(topics.CONNECTORS, ConnectorUp(name="fix", generation=1))
    first = asked.wait_for(lambda m: isinstance(m, RequestPositions), timeout_s=5)
    bus.publish(topics.POSITIONS, VenuePositions(venue="fix", request_id=first.request_id, positions=(
        VenuePosition(venue="fix", symbol="ES", quantity=D(5)),)))   # 2 more than the journal holds
    bad: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation))
    assert not bad.reconciled and bad.mismatches == ("ES: journal 3, venue 5",) and bad.since_ns == bad.ts_ns
    mark = asked.count()
    second = asked.wait_for(lambda m: isinstance(m, RequestPositions), timeout_s=5, after=mark)
    assert second.request_id != first.request_id
    bus.publish(topics.POSITIONS, VenuePositions(venue="fix", request_id=second.request_id, positions=(
        VenuePosition(venue="fix", symbol="ES", quantity=D(5)),)))
    again: Reconciliation = recorder.wait_for(
        lambda m: isinstance(m, Reconciliation) and m.ts_ns > bad.ts_ns)
    assert not again.reconciled and again.since_ns == bad.since_ns   # unreconciled since the first
    assert len(recorder.messages(SafetyEvent)) == 1                   # one mismatch, raised once
    bus.publish(topics.CONNECTORS, ConnectorDown(name="fix"))
    ask(GetPortfolio())                                                 # the keeper read its mailbox
    quiet = asked.count()
    with pytest.raises(AssertionError):                                 # four periods without a request
        asked.wait_for(lambda m: isinstance(m, RequestPositions), timeout_s=0.8, after=quiet)


def test_the_order_rows_status_column_follows_the_lifecycle(tmp_path: Path, recorder: Recorder) -> None:
    """Read straight from the file (as any tool would): accepted, partially filled, filled,
    cancelled, rejected; a late event never moves a terminal row."""
    start_keeper(tmp_path)
    orders = {coid: SubmitOrder(client_order_id=coid, venue="paper", symbol="ES", side=Side.BUY,
                                quantity=D(5), source="sample") for coid in ("a", "p", "f", "c", "r")}
    with Journal(tmp_path / "journal.sqlite3", writer=GOVERNOR_WRITER) as governor_journal:
        for order in orders.values():
            governor_journal.record_order(order)
    for coid in ("a", "p", "f", "c"):
        bus.publish(topics.ORDERS, OrderAccepted(client_order_id=coid, venue="paper", symbol="ES"))
    partial = msgspec.structs.replace(fill("fp", Side.BUY, "2", "100", order="p"), leaves_quantity=D(3))
    bus.publish(topics.ORDERS, partial)
    bus.publish(topics.ORDERS, fill("ff1", Side.BUY, "5", "100", order="f"))
    bus.publish(topics.ORDERS, OrderAccepted(client_order_id="f", venue="paper", symbol="ES"))   # late
    bus.publish(topics.ORDERS, OrderCancelled(client_order_id="c", venue="paper", text="user"))
    bus.publish(topics.ORDERS, fill("fc", Side.BUY, "1", "100", order="c"))    # a fill racing the cancel
    bus.publish(topics.ORDERS, OrderRejected(client_order_id="r", venue="paper", reason=RejectReason.VENUE,
                                             text="no"))
    bus.publish(topics.ORDERS, fill("fend", Side.BUY, "1", "100", order="zz"))  # a marker: last in
    wait_fills(recorder, 4)
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    try:
        rows = dict(db.execute("SELECT client_order_id, status FROM orders").fetchall())
    finally:
        db.close()
    assert rows == {"a": "accepted", "p": "partially_filled", "f": "filled", "c": "cancelled",
                    "r": "rejected"}


def test_a_disagreement_that_clears_at_the_next_report_is_no_mismatch(tmp_path: Path,
                                                                     recorder: Recorder) -> None:
    """A fill the venue made that is still on its way to the journal makes one report
    disagree; the next one agrees: no Reconciliation says MISMATCH and nothing is raised."""
    start_keeper(tmp_path)
    publish_sent(tmp_path, fill("f1", Side.BUY, "10", "100"))
    wait_fills(recorder, 1)
    mark = recorder.count()
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", positions=(
        VenuePosition(venue="paper", symbol="ES", quantity=D(12)),)))      # a fill in flight
    publish_sent(tmp_path, fill("f2", Side.BUY, "2", "100"))
    wait_fills(recorder, 2)
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", positions=(
        VenuePosition(venue="paper", symbol="ES", quantity=D(12)),)))
    ok: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert ok.reconciled and ok.mismatches == ()
    assert [m for m in recorder.messages()[mark:] if isinstance(m, Reconciliation) and not m.reconciled] == []
    assert recorder.messages(SafetyEvent) == []


def test_a_disagreement_is_asked_again_soon_and_confirmed_by_three_reports(tmp_path: Path,
                                                                         recorder: Recorder) -> None:
    """A connected venue whose report disagrees is asked again after ``mismatch_recheck_s``
    (not a whole period later); the third disagreeing report in a row is the mismatch."""
    asked = Recorder.spawn("fix")   # stands in for the connector named "fix"
    start_keeper(tmp_path, reconcile_interval_s=30.0, mismatch_recheck_s=0.05)
    publish_sent(tmp_path, fill("f1", Side.BUY, "3", "100", venue="fix"))
    wait_fills(recorder, 1)
    bus.publish(topics.CONNECTORS, ConnectorUp(name="fix", generation=1))
    report = VenuePositions(venue="fix", positions=(VenuePosition(venue="fix", symbol="ES", quantity=D(5)),))
    bus.publish(topics.POSITIONS, report)          # the connector's resync after connecting
    mark = 0
    for _ in range(2):   # asked again within a fraction of a second, not after 30 s
        request = asked.wait_for(lambda m: isinstance(m, RequestPositions), timeout_s=2, after=mark)
        mark = asked.messages().index(request) + 1
        assert recorder.messages(Reconciliation) == []          # nothing said before it is confirmed
        bus.publish(topics.POSITIONS, msgspec.structs.replace(report, request_id=request.request_id))
    bad: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation))
    assert not bad.reconciled and bad.mismatches == ("ES: journal 3, venue 5",)
    # the incident follows the Reconciliation on another topic: wait for it, then it is the only one
    recorder.wait_for(lambda m: isinstance(m, SafetyEvent), timeout_s=5)
    assert len(recorder.messages(SafetyEvent)) == 1


def test_an_order_working_on_one_side_only_makes_the_venue_unreconciled(tmp_path: Path,
                                                                        recorder: Recorder) -> None:
    """The venue's working orders are compared with the journal's: an order the journal holds
    working that the venue no longer lists (cancelled there unseen) is a mismatch until its
    end reaches the journal; a report that does not list orders compares positions only."""
    start_keeper(tmp_path, mismatch_confirmations=1, order_settle_s=0.0)
    order = SubmitOrder(client_order_id="w1", venue="paper", symbol="ES", side=Side.BUY,
                        quantity=D(1), source=FAILSAFE_SOURCE)
    bus.publish(topics.SUBMITTED, order)                 # journaled pending by the keeper
    bus.publish(topics.ORDERS, OrderAccepted(client_order_id="w1", venue="paper", symbol="ES"))
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", open_orders=("w1",)))
    agreed: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation))
    assert agreed.reconciled and agreed.venue_open_orders == ("w1",) and agreed.keeper_open_orders == ("w1",)
    mark = len(recorder.messages())
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", open_orders=()))
    gone: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert not gone.reconciled
    assert gone.order_mismatches == gone.mismatches == ("order w1: working in the journal, not at the venue",)
    mark = len(recorder.messages())
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper"))   # no order list: positions only
    blind: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert blind.reconciled and blind.venue_open_orders is None
    mark = len(recorder.messages())
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", open_orders=("w1", "x9")))
    stranger: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert stranger.mismatches == ("order x9: working at the venue, not in the journal",)
    bus.publish(topics.ORDERS, OrderCancelled(client_order_id="w1", venue="paper", symbol="ES"))
    mark = len(recorder.messages())
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", open_orders=()))
    resolved: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert resolved.reconciled and resolved.keeper_open_orders == ()


def test_an_order_that_just_changed_is_not_compared_yet(tmp_path: Path, recorder: Recorder) -> None:
    """An order acknowledged a moment before the venue's report may not be on its list yet."""
    start_keeper(tmp_path, mismatch_confirmations=1, order_settle_s=30.0)
    bus.publish(topics.SUBMITTED, SubmitOrder(client_order_id="n1", venue="paper", symbol="ES",
                                              side=Side.BUY, quantity=D(1), source=FAILSAFE_SOURCE))
    bus.publish(topics.ORDERS, OrderAccepted(client_order_id="n1", venue="paper", symbol="ES"))
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", open_orders=()))
    report: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation))
    assert report.reconciled and report.keeper_open_orders == ("n1",)


@pytest.mark.parametrize("compare_unacknowledged", [False, True])
def test_an_order_not_acknowledged_yet_is_compared_only_when_asked(
        tmp_path: Path, recorder: Recorder, compare_unacknowledged: bool) -> None:
    """An order the venue has not acknowledged (lost in flight, say) is left to the recovery
    and the status queries, unless ``compare_unacknowledged``."""
    start_keeper(tmp_path, mismatch_confirmations=1, order_settle_s=0.0,
                 compare_unacknowledged=compare_unacknowledged)
    bus.publish(topics.SUBMITTED, SubmitOrder(client_order_id="p1", venue="paper", symbol="ES",
                                              side=Side.BUY, quantity=D(1), source=FAILSAFE_SOURCE))
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", open_orders=()))
    report: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation))
    assert report.reconciled is not compare_unacknowledged
    mark = len(recorder.messages())
    bus.publish(topics.POSITIONS, VenuePositions(venue="paper", open_orders=("p1",)))  # acceptance lost
    listed: Reconciliation = recorder.wait_for(lambda m: isinstance(m, Reconciliation), after=mark)
    assert listed.reconciled
