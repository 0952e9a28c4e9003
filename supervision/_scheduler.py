"""One timer thread for the whole process.

Handlers never sleep: they schedule. A restart after backoff, a liveness poll and a
heartbeat deadline are all a call scheduled here that tells an actor a message.

A cancelled call stays in the queue until it is due; when cancelled calls outnumber the
live ones (and there are more than a few), the queue is rebuilt without them, so a child
crashing in a loop cannot grow it without bound.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from loguru import logger


class TimerHandle:
    """A scheduled call; ``cancel()`` stops it from running."""

    __slots__ = ("_owner", "cancelled", "due", "fn")

    def __init__(self, due: float, fn: Callable[[], None], owner: Scheduler | None = None) -> None:
        self.due = due
        self.fn = fn
        self.cancelled = False
        self._owner = owner

    def cancel(self) -> None:
        """Do not run the call (no effect if it already ran)."""
        if self.cancelled:
            return
        self.cancelled = True
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._cancelled_one()


class Scheduler:
    """Runs calls at monotonic deadlines on a single daemon thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._cancelled = 0

    COMPACT_ABOVE = 64
    """Cancelled calls tolerated in the queue before it may be rebuilt."""

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> TimerHandle:
        """Run ``fn`` on the timer thread after ``delay_s`` seconds."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay_s), fn, self)
        with self._cond:
            heapq.heappush(self._heap, (handle.due, next(self._counter), handle))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tg-timers", daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def pending(self) -> int:
        """Calls not yet run or cancelled."""
        with self._cond:
            return sum(1 for _, _, h in self._heap if not h.cancelled)

    def queued(self) -> int:
        """Entries in the queue, cancelled ones included (what memory holds)."""
        with self._cond:
            return len(self._heap)

    def _cancelled_one(self) -> None:
        with self._cond:
            self._cancelled += 1
            if self._cancelled > self.COMPACT_ABOVE and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, _, handle = heapq.heappop(self._heap)
                if handle.cancelled:
                    self._cancelled = max(0, self._cancelled - 1)
                    continue
                handle._owner = None  # cancelling it from now on is a no-op for the count
            try:
                handle.fn()
            except Exception:  # a timer must never kill the timer thread
                logger.bind(channel="main").exception("scheduled call failed")


scheduler = Scheduler()
"""The process-wide scheduler."""
