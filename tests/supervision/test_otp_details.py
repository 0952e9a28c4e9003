"""OTP's details: temporary siblings are terminated (not restarted) under one_for_all and
rest_for_one; a transient child whose teardown fails on a self-stop exits abnormally;
``Tree.stop`` past its timeout raises ``SupervisionError``; the restart log and the timer
queue stay bounded over thousands of crash cycles."""

from __future__ import annotations

import gc
import logging
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from supervision import (
    NO_BACKOFF,
    RESTART_LOG_LIMIT,
    ChildSpec,
    Restart,
    Strategy,
    SupervisedActor,
    SupervisionError,
    registry,
    scheduler,
)
from tests.helpers import wait_for
from tests.supervision.probes import Crash, Journal, StartTree, StopSelf, child, probe, wait_generation


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_temporary_siblings_are_terminated_and_not_restarted(start_tree: StartTree,
                                                             strategy: Strategy) -> None:
    journal = Journal()
    tree = start_tree(
        [probe("a", journal), probe("temp", journal, restart=Restart.TEMPORARY), probe("c", journal)],
        strategy=strategy, backoff=NO_BACKOFF, poll_s=0.05,
    )
    mark = journal.mark()

    registry.tell("a", Crash())

    wait_generation(tree, "a", 1)
    wait_generation(tree, "c", 1)
    assert ("temp", 0) in [(e.name, e.generation) for e in journal.since(mark, "teardown")]
    assert child(tree, "temp").state == "stopped"
    assert registry.lookup("temp") is None
    assert "temp" not in journal.names("start", mark)
    assert tree.healthy()


def test_transient_child_whose_teardown_fails_on_a_self_stop_is_restarted(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal, restart=Restart.TRANSIENT, fail_teardown=True)],
                      backoff=NO_BACKOFF, poll_s=0.05)

    registry.tell("worker", StopSelf())

    row = wait_generation(tree, "worker", 1)
    assert "teardown failed" in row.last_exit_reason


def test_transient_child_stopping_cleanly_stays_stopped(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("worker", journal, restart=Restart.TRANSIENT), probe("other", journal)],
                      backoff=NO_BACKOFF, poll_s=0.05)
    registry.tell("worker", StopSelf())
    wait_for(lambda: child(tree, "worker").state == "stopped", timeout_s=2.0, what="the worker stopped")
    assert child(tree, "worker").generation == 0


def test_tree_stop_past_its_timeout_raises_supervision_error(start_tree: StartTree) -> None:
    journal = Journal()
    tree = start_tree([probe("slow", journal, teardown_s=1.5, shutdown_timeout_s=5.0)],
                      backoff=NO_BACKOFF, poll_s=0.05)
    began = time.monotonic()
    with pytest.raises(SupervisionError, match=r"did not stop within 0\.3s"):
        tree.stop(timeout_s=0.3)
    assert time.monotonic() - began < 1.4


class _Cycling(SupervisedActor):
    """Crashes on ``Crash``; announces each start to the test."""

    started = threading.Condition()
    generation: ClassVar[int] = -1

    def setup(self) -> None:
        with _Cycling.started:
            _Cycling.generation = self.context.generation
            _Cycling.started.notify_all()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {Crash: self._crash}

    def _crash(self, _message: Crash) -> None:
        raise RuntimeError("crash cycle")


def _cycle(n: int, first: int) -> int:
    for generation in range(first, first + n):
        registry.tell("cycling", Crash())
        with _Cycling.started:
            assert _Cycling.started.wait_for(lambda g=generation: _Cycling.generation > g, timeout=10.0)
    return first + n


@pytest.mark.timeout(240)
def test_five_thousand_crash_cycles_do_not_grow_the_kernel(start_tree: StartTree,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _Cycling.generation = -1
    tree = start_tree([ChildSpec(name="cycling", actor_class=_Cycling, start_timeout_s=30.0)],
                      intensity=10**9, period_s=0.01, backoff=NO_BACKOFF, poll_s=0.05)
    generation = _cycle(1_000, 0)  # warm up: every structure reaches its steady size
    # Pykka logs each crash with its traceback; the test's log capture would keep them all.
    monkeypatch.setattr(logging.getLogger("pykka"), "disabled", True)
    gc.collect()
    tracemalloc.start()

    def kernel() -> tracemalloc.Snapshot:
        gc.collect()
        return tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/supervision/*")])

    try:
        # Two windows of 2,000 cycles: the first may still fill bounded structures (the
        # restart log's entries, the timer queue up to its compaction point, which other
        # tests' timers share); the second must not grow: a leak of even 16 bytes a cycle
        # would show as 32 KiB there.
        start = kernel()
        generation = _cycle(2_000, generation)
        middle = kernel()
        generation = _cycle(2_000, generation)
        end = kernel()
    finally:
        tracemalloc.stop()
    first = sum(stat.size_diff for stat in middle.compare_to(start, "filename"))
    second = sum(stat.size_diff for stat in end.compare_to(middle, "filename"))

    assert generation == 5_000
    assert len(tree.restart_log()) == RESTART_LOG_LIMIT
    # Each restart left a cancelled start deadline due in 30 s: the queue dropped them.
    assert scheduler.queued() < 4 * scheduler.COMPACT_ABOVE
    assert first < 128 * 1024, f"the kernel's memory grew by {first} bytes over 2,000 crash cycles"
    assert second < 32 * 1024, (f"the kernel's memory grew by {second} bytes over the second 2,000 crash "
                                f"cycles (after {first} over the first)")
    wait_generation(tree, "cycling", 5_000)
    assert tree.healthy()

