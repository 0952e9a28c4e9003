"""The venue's durable state: the SQLite store, amendments at the engine, and SIGKILL.

A venue with a store commits every order event before it reports it; these tests reopen
the file from a second engine (as a restarted venue would) and kill real processes with
SIGKILL in the middle of a stream of orders.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest
import zmq

from messages import OrderEvent, OrderFilled, OrderStatus, OrderType, Side
from messages import zmq_wire as wire
from tests.system.processes import free_port
from tests.venues.test_engine import ACCOUNT, OTHER, make_engine, order, position
from venues import EngineConfig, VenueEngine
from venues.engine import TradeAmended
from venues.paper import PaperVenue
from venues.store import store_path_for

ROOT = Path(__file__).resolve().parents[2]
D = Decimal


def _busy(engine: VenueEngine) -> None:
    """Fills, a partial, resting orders, a cancel, and a second account."""
    engine.submit(ACCOUNT, order("m1", quantity="250"))  # 100 now, 150 left working
    engine.step()  # 100 more
    engine.submit(ACCOUNT, order("l1", side=Side.SELL, order_type=OrderType.LIMIT, limit="120"))
    engine.submit(ACCOUNT, order("s1", side=Side.SELL, order_type=OrderType.STOP, stop="80"))
    engine.submit(ACCOUNT, order("c1", order_type=OrderType.LIMIT, limit="1"))
    engine.cancel(ACCOUNT, "c1")
    engine.submit(OTHER, order("o1", side=Side.SELL, symbol="MSFT", quantity="7"))


def _same_state(a: VenueEngine, b: VenueEngine) -> None:
    for account in (ACCOUNT, OTHER):
        assert b.positions(account) == a.positions(account)
        assert b.open_orders(account) == a.open_orders(account)
        assert b.executions(account) == a.executions(account)
        assert b.realized_pnl(account) == a.realized_pnl(account)
    for coid in ("m1", "l1", "s1", "c1", "ext"):
        assert b.order_status(ACCOUNT, coid) == a.order_status(ACCOUNT, coid)


def test_every_event_is_in_the_store_before_anybody_hears_of_it(tmp_path: Path) -> None:
    path = tmp_path / "venue.sqlite3"
    engine, _ = make_engine()
    engine.persist(path)
    seen_in_store: list[bool] = []

    def check(account: str, event: OrderEvent) -> None:
        # a second reader sees the fill committed when the listener hears of it
        if isinstance(event, OrderFilled):
            with sqlite3.connect(path) as db:
                ids = {row[0] for row in db.execute("SELECT fill_id FROM fills")}
            seen_in_store.append(event.fill_id in ids)

    engine.add_order_listener(check)
    _busy(engine)
    assert seen_in_store and all(seen_in_store)

    reopened, _ = make_engine()
    reopened.persist(path)  # a second process on the same file reads what was committed
    _same_state(engine, reopened)
    reopened.close_store()
    engine.close_store()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_a_new_store_takes_the_engine_state_and_a_used_one_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "venue.sqlite3"
    engine, _ = make_engine()
    _busy(engine)
    engine.persist(path)  # empty store: the current state is written
    engine.close_store()

    fresh, _ = make_engine()
    fresh.submit(ACCOUNT, order("other"))  # replaced by what the store holds
    fresh.persist(path)
    _same_state(engine, fresh)
    assert fresh.order_status(ACCOUNT, "other") is None
    # the restored venue goes on: the partial order finishes, ids keep increasing
    fresh.step()
    assert fresh.order_status(ACCOUNT, "m1").status is OrderStatus.FILLED  # type: ignore[union-attr]
    ids = [int(f.fill_id.split("-")[1]) for f in fresh.executions(ACCOUNT)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    fresh.close_store()

    again, _ = make_engine()
    again.persist(path)
    _same_state(fresh, again)
    again.close_store()


def test_busts_corrections_and_fills_from_elsewhere_change_positions_and_persist(
    tmp_path: Path,
) -> None:
    path = tmp_path / "venue.sqlite3"
    engine, rec = make_engine()
    amendments: list[TradeAmended] = []
    engine.add_amendment_listener(amendments.append)
    engine.persist(path)
    engine.submit(ACCOUNT, order("b1", quantity="10"))  # 10 @ 100.01
    engine.submit(ACCOUNT, order("b2", quantity="5"))  # 5 @ 100.01
    first, second = engine.executions(ACCOUNT)
    assert position(engine) == D(15)

    busted = engine.bust(ACCOUNT, first.fill_id)
    assert busted.corrected is None and busted.original == first
    assert position(engine) == D(5)
    assert [f.fill_id for f in engine.executions(ACCOUNT)] == [second.fill_id]
    status = engine.order_status(ACCOUNT, "b1")
    assert status is not None and status.filled == D(0)

    corrected = engine.correct(ACCOUNT, second.fill_id, price=D("101.00"), quantity=D(4))
    assert corrected.corrected is not None
    assert corrected.corrected.fill_id not in (first.fill_id, second.fill_id)
    assert [(p.quantity, p.average_price) for p in engine.positions(ACCOUNT)] == [
        (D(4), D("101.00"))]
    status = engine.order_status(ACCOUNT, "b2")
    assert status is not None and (status.filled, status.average_price) == (D(4), D("101.00"))

    foreign = engine.external_fill(ACCOUNT, "AAPL", Side.SELL, D(4), D("102"))
    assert foreign.client_order_id.startswith("EXT-")
    assert position(engine) == D(0)
    assert rec.fills()[-1] == foreign  # reported like any fill
    assert [a.original.fill_id for a in amendments] == [first.fill_id, second.fill_id]

    with pytest.raises(ValueError, match="fill_id"):
        engine.bust(ACCOUNT, first.fill_id)  # already busted
    with pytest.raises(ValueError, match="quantity"):
        engine.correct(ACCOUNT, corrected.corrected.fill_id, quantity=D(5))

    engine.close_store()
    restored, _ = make_engine()
    restored.persist(path)
    assert restored.positions(ACCOUNT) == engine.positions(ACCOUNT) == []
    assert restored.executions(ACCOUNT) == engine.executions(ACCOUNT)
    assert restored.order_status(ACCOUNT, foreign.client_order_id) is not None
    restored.close_store()


def test_a_file_that_is_not_a_store_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "venue.sqlite3"
    path.write_bytes(b"not a database, just text" * 100)
    engine, _ = make_engine()
    with pytest.raises(ValueError, match=r"venue\.sqlite3"):
        engine.persist(path)
    assert not engine.persistent


def test_paper_venue_carries_an_older_json_state_into_its_store(tmp_path: Path) -> None:
    state = tmp_path / "paper-x.json"
    old, _ = make_engine()
    _busy(old)
    old.save(state)
    config = old.config
    venue = PaperVenue("sim", config, state_path=state)
    try:
        assert store_path_for(state).exists()
        _same_state(old, venue.engine)
    finally:
        venue.stop()
    again = PaperVenue("sim", config, state_path=state)
    try:
        _same_state(old, again.engine)
    finally:
        again.stop()


# ---- SIGKILL in the middle of a stream of orders, real processes ---------------------------

_PAPER_SCRIPT = textwrap.dedent("""
    import sys
    from decimal import Decimal
    from pathlib import Path
    from messages import OrderFilled, Side, SubmitOrder
    from venues import EngineConfig
    from venues.paper import PaperVenue

    venue = PaperVenue("sim", EngineConfig(depth=Decimal(10**9)), state_path=Path(sys.argv[1]))

    def report(account, event):
        if isinstance(event, OrderFilled):
            print(event.fill_id, event.quantity, flush=True)

    venue.engine.add_order_listener(report)
    venue.start()
    n = 0
    while True:  # until killed
        n += 1
        side = Side.BUY if n % 3 else Side.SELL
        venue.engine.submit("PAPER", SubmitOrder(client_order_id=f"o{n}", venue="sim",
                            symbol="AAPL", side=side, quantity=Decimal(n % 7 + 1)))
""")


def _kill_after(process: subprocess.Popen[str], lines: int, timeout_s: float = 60.0) -> list[str]:
    """Read ``lines`` lines of stdout, then SIGKILL the process mid-stream; return the lines."""
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(seen) < lines:
        assert time.monotonic() < deadline, f"only {len(seen)} lines before the deadline"
        line = process.stdout.readline()
        assert line, f"process ended early: {process.stderr.read() if process.stderr else ''}"
        seen.append(line.split()[0])
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    return seen


def _stored_fills(path: Path, account: str) -> list[str]:
    engine = VenueEngine("sim")
    engine.persist(path)
    try:
        return [f.fill_id for f in engine.executions(account)]
    finally:
        engine.close_store()


@pytest.mark.timeout(120)
def test_paper_venue_killed_with_sigkill_keeps_every_fill_it_reported(tmp_path: Path) -> None:
    state = tmp_path / "venues" / "paper-sim.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", _PAPER_SCRIPT, str(state)], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reported = _kill_after(process, 300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    stored = _stored_fills(store_path_for(state), "PAPER")
    assert set(reported) <= set(stored), set(reported) - set(stored)
    assert stored[: len(reported)] == reported  # in order, nothing lost or reordered
    assert [p.name for p in state.parent.iterdir() if p.name.endswith(".tmp")] == []

    engine = VenueEngine("sim", EngineConfig(depth=D(10**9)))
    engine.persist(store_path_for(state))
    try:  # the position is the sum of the fills the venue kept
        signed = D(0)
        for fill in engine.executions("PAPER"):
            signed += fill.quantity if fill.side is Side.BUY else -fill.quantity
        assert [p.quantity for p in engine.positions("PAPER")] == ([signed] if signed else [])
    finally:
        engine.close_store()


@pytest.mark.timeout(120)
def test_zmq_venue_process_killed_with_sigkill_keeps_every_fill_it_reported(
    tmp_path: Path,
) -> None:
    port = free_port(pair=True)  # orders on port, market data on port + 1
    state_dir = tmp_path / "zmq-state"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "venues.zmq_venue", "--port", str(port), "--state-dir",
         str(state_dir), "--step-interval", "0.01", "--venue-name", "sim"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        assert process.stdout is not None
        assert "zmq venue" in process.stdout.readline()
        dealer.connect(f"tcp://127.0.0.1:{port}")
        reported: list[str] = []
        deadline = time.monotonic() + 60
        sent = 0
        while len(reported) < 200:
            assert time.monotonic() < deadline, f"{len(reported)} fills before the deadline"
            if sent - len(reported) < 20:  # keep a few orders in flight
                sent += 1
                request = wire.NewOrderRequest(client_order_id=f"z{sent}", symbol="AAPL",
                                               side=Side.BUY if sent % 2 else Side.SELL,
                                               quantity=D(1))
                dealer.send(wire.encoder.encode(request))
            if dealer.poll(50):
                frame = wire.order_channel_decoder.decode(dealer.recv())
                if isinstance(frame, wire.FilledEvent):
                    reported.append(frame.fill_id)
        process.send_signal(signal.SIGKILL)  # with orders still in flight
        process.wait(timeout=10)
    finally:
        dealer.close(0)
        context.term()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    stored = _stored_fills(store_path_for(state_dir / "zmq-venue.json"), "zmq")
    assert set(reported) <= set(stored), set(reported) - set(stored)
    assert [p.name for p in state_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_bad_state_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "venues.zmq_venue", "--port", str(free_port()), "--state-dir",
         str(blocker / "sub")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot keep the state" in result.stderr
