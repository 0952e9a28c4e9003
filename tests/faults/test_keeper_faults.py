"""The position keeper under faults: a crash and a supervised restart, a journal write that
fails, a process killed with SIGKILL, a journal dropped without being closed."""

from __future__ import annotations

import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from actors import topics
from actors.journal import Journal
from actors.position_keeper import GetPortfolio, KeeperConfig, PositionKeeper, apply_fill
from messages import OrderFilled, PortfolioSnapshot, Side
from supervision import (
    NO_BACKOFF,
    SUPERVISION_TOPIC,
    ChildExited,
    ChildSpec,
    ChildStarted,
    Tree,
    bus,
    registry,
)
from tests.recorder import Recorder

D = Decimal
KEEPER = "position_keeper"
ROOT = Path(__file__).resolve().parents[2]


def numbered_fill(i: int) -> OrderFilled:
    """Fill number ``i`` of a deterministic stream that trades both ways across two symbols."""
    return OrderFilled(
        client_order_id=f"o-{i}", venue="paper", fill_id=f"f{i}", symbol="ES" if i % 4 else "NQ",
        side=Side.SELL if i % 3 == 0 else Side.BUY, quantity=D(i % 5 + 1), price=D(100 + i % 7) + D("0.25"),
        leaves_quantity=D(0),
    )


def expected_positions(fills: list[OrderFilled]) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """(quantity, average price, realized P&L) per symbol after ``fills``, applied once each."""
    book: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    for f in fills:
        qty, avg, realized = book.get(f.symbol, (D(0), D(0), D(0)))
        effect = apply_fill(qty, avg, f.signed_quantity, f.price)
        book[f.symbol] = (effect.quantity, effect.average_price, realized + effect.realized_pnl)
    return book


def held(snapshot: PortfolioSnapshot) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    return {p.symbol: (p.quantity, p.average_price, p.realized_pnl) for p in snapshot.positions}


def start_keeper(state_dir: Path, **config: Any) -> Tree:
    spec = ChildSpec(KEEPER, PositionKeeper, args=(KeeperConfig(**config), state_dir))
    tree = Tree([spec], backoff=NO_BACKOFF, intensity=5, name=f"root-{id(spec)}")
    tree.start(timeout_s=5)
    return tree


def portfolio() -> PortfolioSnapshot:
    ref = registry.lookup(KEEPER)
    assert ref is not None, "position keeper is not running"
    return cast(PortfolioSnapshot, ref.ask(GetPortfolio(), timeout=2))


def journal_fill_ids(state_dir: Path) -> list[str]:
    with sqlite3.connect(state_dir / "journal.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT fill_id FROM fills ORDER BY rowid")]


def take_write_lock(db: sqlite3.Connection, timeout_s: float = 5.0) -> None:
    """Begin a write transaction as soon as the journal's writer lets go (SQLite's own busy
    wait backs off with sleeps and would lose every race against a busy writer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder.spawn("recorder", [topics.PORTFOLIO, SUPERVISION_TOPIC])


def test_supervised_restart_after_a_failed_journal_write_loses_and_doubles_nothing(
    tmp_path: Path, recorder: Recorder
) -> None:
    start_keeper(tmp_path, journal_busy_timeout_s=0.2)
    stream = [numbered_fill(i) for i in range(1, 13)]
    for f in stream[:8]:
        bus.publish(topics.ORDERS, f)
    recorder.wait_for(lambda m: isinstance(m, PortfolioSnapshot) and m.fills == 8)
    before = held(portfolio())
    assert before == expected_positions(stream[:8])

    # Another writer holds the journal: the next fill cannot be committed, so the keeper
    # must not apply it; it crashes instead and its supervisor restarts it.
    blocker = sqlite3.connect(tmp_path / "journal.sqlite3", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        bus.publish(topics.ORDERS, stream[8])
        crash: ChildExited = recorder.wait_for(lambda m: isinstance(m, ChildExited) and m.name == KEEPER)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert crash.abnormal and "JournalError" in crash.reason and "locked" in crash.reason
    recorder.wait_for(lambda m: isinstance(m, ChildStarted) and m.name == KEEPER and m.generation == 1)

    restarted = portfolio()
    assert held(restarted) == before  # rebuilt from the journal, the failed fill not applied
    assert restarted.fills == 8

    # The connectors restart after the keeper and resynchronise: every fill comes again.
    mark = recorder.count()
    for f in stream:
        bus.publish(topics.ORDERS, f)
    recorder.wait_for(lambda m: isinstance(m, PortfolioSnapshot) and m.fills == 12, after=mark)
    final = portfolio()
    assert held(final) == expected_positions(stream)
    assert final.fills == 12
    assert journal_fill_ids(tmp_path) == [f.fill_id for f in stream]


def test_crash_in_the_middle_of_a_stream_replays_every_committed_fill(
    tmp_path: Path, recorder: Recorder
) -> None:
    start_keeper(tmp_path, journal_busy_timeout_s=0.2)
    stream = [numbered_fill(i) for i in range(1, 1001)]
    blocker = sqlite3.connect(tmp_path / "journal.sqlite3", isolation_level=None, timeout=0)
    try:
        for f in stream:
            bus.publish(topics.ORDERS, f)
        recorder.wait_for(lambda m: isinstance(m, PortfolioSnapshot) and m.fills >= 60)
        take_write_lock(blocker)  # between two of the keeper's commits: its next one fails
        recorder.wait_for(lambda m: isinstance(m, ChildExited) and m.name == KEEPER)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    recorder.wait_for(lambda m: isinstance(m, ChildStarted) and m.name == KEEPER and m.generation == 1)

    committed = journal_fill_ids(tmp_path)
    assert committed == [f.fill_id for f in stream[: len(committed)]]  # a prefix: nothing skipped
    assert 60 <= len(committed) < len(stream)
    assert held(portfolio()) == expected_positions(stream[: len(committed)])

    mark = recorder.count()
    for f in stream:  # resync: everything again, then the rest
        bus.publish(topics.ORDERS, f)
    recorder.wait_for(lambda m: isinstance(m, PortfolioSnapshot) and m.fills == 1000,
                      after=mark, timeout_s=20)
    assert held(portfolio()) == expected_positions(stream)
    assert journal_fill_ids(tmp_path) == [f.fill_id for f in stream]


_KILLED_PROCESS = r"""
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from loguru import logger

from actors import topics
from actors.position_keeper import GetPortfolio, KeeperConfig, PositionKeeper
from supervision import NO_BACKOFF, ChildSpec, Tree, bus, registry
from tests.faults.test_keeper_faults import numbered_fill

logger.remove()
acknowledged, total = int(sys.argv[3]), int(sys.argv[4])
tree = Tree([ChildSpec("position_keeper", PositionKeeper, args=(KeeperConfig(), Path(sys.argv[2])))],
            backoff=NO_BACKOFF)
tree.start(timeout_s=10)
keeper = registry.lookup("position_keeper")
for i in range(1, acknowledged + 1):
    bus.publish(topics.ORDERS, numbered_fill(i))
    if keeper.ask(GetPortfolio(), timeout=5).fills != i:  # the mailbox is FIFO: fill i is done
        sys.exit(3)
print("acknowledged", acknowledged, flush=True)
for i in range(acknowledged + 1, total + 1):
    bus.publish(topics.ORDERS, numbered_fill(i))
    if i == acknowledged + 50:
        print("streaming", flush=True)
sys.stdin.read()  # until killed
"""


def _wait_output(proc: subprocess.Popen[bytes], line: str, seen: bytearray, timeout_s: float) -> None:
    """Read the process's stdout (unbuffered) into ``seen`` until ``line`` has been printed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while f"{line}\n".encode() not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise AssertionError(f"the keeper process printed no {line!r} within {timeout_s}s: {seen!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"the keeper process ended before printing {line!r}: {seen!r}")
            seen += chunk


def test_sigkill_loses_no_acknowledged_fill(tmp_path: Path, recorder: Recorder) -> None:
    acknowledged, total = 30, 3000
    with (tmp_path / "stderr.txt").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_PROCESS, str(ROOT), str(tmp_path), str(acknowledged), str(total)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
        )
        seen = bytearray()
        try:
            _wait_output(proc, f"acknowledged {acknowledged}", seen, 20)
            _wait_output(proc, "streaming", seen, 10)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    stream = [numbered_fill(i) for i in range(1, total + 1)]
    committed = journal_fill_ids(tmp_path)
    assert acknowledged <= len(committed) < total  # killed while it was writing
    assert committed == [f.fill_id for f in stream[: len(committed)]]

    start_keeper(tmp_path)
    replayed = recorder.wait_for(lambda m: isinstance(m, PortfolioSnapshot))
    assert replayed.fills == len(committed)
    assert held(replayed) == expected_positions(stream[: len(committed)])


def test_journal_dropped_without_close_keeps_every_fill(tmp_path: Path, recorder: Recorder) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    stream = [numbered_fill(i) for i in range(1, 21)]
    book: dict[str, tuple[Decimal, Decimal]] = {}
    for f in stream:
        qty, avg = book.get(f.symbol, (D(0), D(0)))
        effect = apply_fill(qty, avg, f.signed_quantity, f.price)
        assert journal.record_fill(f, effect.realized_pnl)
        book[f.symbol] = (effect.quantity, effect.average_price)
    # Abandoned, never closed or checkpointed: the commits are only in the WAL file.
    assert (tmp_path / "journal.sqlite3-wal").stat().st_size > 0

    start_keeper(tmp_path)
    replayed = recorder.wait_for(lambda m: isinstance(m, PortfolioSnapshot))
    assert replayed.fills == 20
    assert held(replayed) == expected_positions(stream)
    realized = sum((r for _, _, r in expected_positions(stream).values()), D(0))
    assert replayed.realized_pnl == realized
    assert journal.fill_count() == 20  # the abandoned writer is still there, untouched

