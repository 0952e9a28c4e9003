"""Log lines under a budget, and text made safe to put in one.

A flood of identical refusals (orders while paused or in FAILSAFE, garbage on the control
socket) must not bury the operator audit trail that shares the governance log. A
``LogBudget`` lets the first ``burst`` events of a window through, counts the rest, and
hands back a one-line summary when the window closes. It keeps no clock: the caller passes
the time, so it is tested without one.

``printable`` turns any outside text into one bounded, escaped line: a newline in a
reason cannot forge a second log line, and a 10 MB verb is not written whole.
"""

from __future__ import annotations

import json
from collections import Counter

PRINTABLE_LIMIT = 200
"""Characters of outside text kept in a log line."""


def printable(value: object, limit: int = PRINTABLE_LIMIT) -> str:
    """``value`` as a quoted, escaped, single-line string of bounded length.

    Control characters, newlines, quotes, non-ASCII characters and lone surrogates come out
    escaped (JSON string syntax); anything longer than ``limit`` characters is cut and says
    how long it was."""
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        text = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
        total = len(raw)
        unit = "bytes"
    else:
        total = len(text)
        unit = "chars"
    cut = text[:limit]
    quoted = json.dumps(cut, ensure_ascii=True)
    if total > limit:
        quoted += f"...({total} {unit})"
    return quoted


def one_line(text: str, limit: int = 500) -> str:
    """``text`` cut to ``limit`` characters with line breaks and control characters escaped
    (no quotes added): safe to pass on to code that logs it as it is."""
    cut = text[:limit]
    escaped = "".join(ch if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF
                      else json.dumps(ch)[1:-1] for ch in cut)
    return escaped + (f"...({len(text)} chars)" if len(text) > limit else "")


class LogBudget:
    """Lets ``burst`` events per ``window_s`` through; counts the rest, by kind."""

    def __init__(self, burst: int = 20, window_s: float = 10.0) -> None:
        if burst < 0 or not window_s > 0:
            raise ValueError("burst must be >= 0 and window_s > 0")
        self.burst = burst
        self.window_s = window_s
        self._window_start: float | None = None
        self._written = 0
        self._suppressed: Counter[str] = Counter()
        self.total_suppressed = 0
        """Events suppressed since the budget was made."""

    def allow(self, now: float, kind: str = "") -> bool:
        """True when this event may be logged; otherwise it is counted under ``kind``.
        Call ``summary`` (with the same clock) to collect the counts of a closed window."""
        expired = self._window_start is None or now - self._window_start >= self.window_s
        if expired and not self._suppressed:
            self._window_start = now
            self._written = 0
        if self._written < self.burst:
            self._written += 1
            return True
        self._suppressed[kind] += 1
        self.total_suppressed += 1
        return False

    def summary(self, now: float) -> str | None:
        """Once the window in which events were suppressed has closed: one line saying how
        many of each kind were not written (and a new window starts); else None."""
        if not self._suppressed or self._window_start is None:
            return None
        if now - self._window_start < self.window_s:
            return None
        parts = ", ".join(f"{count} {kind or 'events'}" for kind, count in sorted(self._suppressed.items()))
        elapsed = now - self._window_start
        self._suppressed.clear()
        self._window_start = now
        self._written = 0
        return f"{parts} not logged one by one in the last {elapsed:.0f}s"
