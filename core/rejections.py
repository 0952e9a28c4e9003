"""Rejection loops: what counts as a venue rejection, the sliding count of them, and the
circuit breaker built on it.

One policy, used by both the safety monitor (its CRITICAL ``venue_rejections`` rule) and
the risk governor (its per-venue circuit breaker): a *venue rejection* is the refusal of an
order that was sent to the venue, whatever reason the venue gave (an "unknown symbol"
answered fifty times in a row is a loop as much as fifty plain refusals). tradeguard's own
pre-trade refusals never count (the order never reached a venue), and neither does a
connector refusing an order because its session is down (``venue_down``: the outage has
rules of its own).

Time is passed in (monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from messages import OrderRejected, RejectReason

NOT_FROM_VENUE: frozenset[RejectReason] = frozenset({RejectReason.VENUE_DOWN})
"""Reasons a connector gives without the venue having answered."""


def is_venue_rejection(rejected: OrderRejected, sent: bool) -> bool:
    """True when ``rejected`` is a venue's refusal: the order was ``sent`` to the venue (the
    caller knows: it saw the order pass) and the reason is one the venue gave."""
    return sent and rejected.reason not in NOT_FROM_VENUE


class RejectionWindow:
    """Venue rejections at one venue within the last ``window_s`` seconds (inclusive:
    rejections exactly ``window_s`` apart are within it)."""

    __slots__ = ("_times", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def record(self, now: float) -> int:
        """Count a rejection at ``now``; how many are in the window, it included."""
        times = self._times
        times.append(now)
        while now - times[0] > self.window_s:
            times.popleft()
        return len(times)

    def span(self) -> float:
        """Seconds between the oldest and the newest rejection in the window."""
        return self._times[-1] - self._times[0] if self._times else 0.0

    def clear(self) -> None:
        """Forget every rejection."""
        self._times.clear()


class RejectionLoop:
    """``limit`` venue rejections at one venue within ``window_s`` seconds is a loop.
    A ``limit`` of 0 disables it."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, RejectionWindow] = {}

    def on_rejection(self, venue: str, now: float) -> int:
        """Count a venue rejection; the count in the window when it makes a loop, else 0."""
        if self.limit <= 0:
            return 0
        window = self._windows.get(venue)
        if window is None:
            window = self._windows[venue] = RejectionWindow(self.window_s)
        count = window.record(now)
        return count if count >= self.limit else 0

    def span(self, venue: str) -> float:
        """Seconds spanned by ``venue``'s rejections in the window."""
        window = self._windows.get(venue)
        return 0.0 if window is None else window.span()

    def clear(self, venue: str) -> None:
        """Start ``venue``'s count again."""
        window = self._windows.get(venue)
        if window is not None:
            window.clear()


class CircuitState(StrEnum):
    """Where a venue's circuit breaker is."""

    CLOSED = "CLOSED"
    """Orders pass."""
    OPEN = "OPEN"
    """Orders are refused until the cool-down ends."""
    HALF_OPEN = "HALF_OPEN"
    """One probe order passes; its acceptance closes the circuit, its rejection reopens it."""


class CircuitBreaker:
    """CLOSED -> OPEN on a rejection loop -> HALF_OPEN after ``cooldown_s``, where one order
    is let through: its acceptance (or fill) closes the circuit, its rejection reopens it. If
    the venue never answers the probe (the session dropped), another goes after a further
    cool-down."""

    def __init__(self, rejections: int, window_s: float, cooldown_s: float) -> None:
        self.rejections = rejections
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.state = CircuitState.CLOSED
        self._window = RejectionWindow(window_s)
        self._opened_at = 0.0
        self._probe_at: float | None = None

    def allow(self, now: float) -> bool:
        """May an order go to the venue now? (Lets the HALF_OPEN probe through.)"""
        if self.state is CircuitState.OPEN and now - self._opened_at >= self.cooldown_s:
            self.state, self._probe_at = CircuitState.HALF_OPEN, None
        if self.state is CircuitState.OPEN:
            return False
        if self.state is CircuitState.HALF_OPEN:
            if self._probe_at is not None and now - self._probe_at < self.cooldown_s:
                return False
            self._probe_at = now
        return True

    def on_rejection(self, now: float) -> bool:
        """A venue rejection at ``now``; True when it opened a circuit that was not open."""
        if self.rejections <= 0:
            return False
        if self.state is CircuitState.HALF_OPEN:
            self.state, self._opened_at = CircuitState.OPEN, now
            return True
        if self._window.record(now) >= self.rejections:
            # While OPEN, rejections of orders sent before it opened may open it afresh.
            opened = self.state is not CircuitState.OPEN
            self.state, self._opened_at = CircuitState.OPEN, now
            self._window.clear()
            return opened
        return False

    def on_success(self) -> None:
        """An acceptance or a fill at the venue."""
        if self.state is CircuitState.HALF_OPEN:
            self.state = CircuitState.CLOSED
