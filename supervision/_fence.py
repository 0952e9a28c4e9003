"""Fences and tree fate: what keeps a generation that was given up on from acting, and what
makes a ``BaseException`` in one actor the end of its whole tree.

A ``Fence`` belongs to one generation of one child. Its supervisor *drains* it when it asks
the child to stop (every message still queued is dropped as a dead letter; the child's
``teardown`` may still publish its last words) and *closes* it once the child stopped, or
was abandoned because it did not stop, answer or start in time. From then on, the actor's
thread can no longer register, look up, tell or publish: the registry and the bus refuse
it. A fence has a parent (the supervisor's own fence), so closing a supervisor's fence
closes every generation below it at once.

Registration tokens come from one counter for the whole process: a token is never reused,
so a late clean-up by an old generation (or an old supervisor) can never remove a newer
registration.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from loguru import logger

_tokens = itertools.count(1)
_tokens_lock = threading.Lock()


def new_token() -> int:
    """A registration token never handed out before in this process."""
    with _tokens_lock:
        return next(_tokens)


class Fence:
    """Per-generation fence: open, draining (stop requested) or closed (given up on)."""

    __slots__ = ("_closed", "_draining", "_parent", "reason")

    def __init__(self, parent: Fence | None = None) -> None:
        self._parent = parent
        self._draining = False
        self._closed = False
        self.reason = ""
        """Why the fence was closed (or drained); empty while open."""

    def drain(self, reason: str) -> None:
        """Stop is under way: handle no further message."""
        if not self._draining:
            self.reason = self.reason or reason
            self._draining = True

    def close(self, reason: str) -> None:
        """Given up on: handle nothing, reach nobody."""
        if not self._closed:
            self.reason = self.reason or reason
            self._draining = True
            self._closed = True

    def is_draining(self) -> bool:
        """True once no further message may be handled (draining or closed, here or above)."""
        fence: Fence | None = self
        while fence is not None:
            if fence._draining:
                return True
            fence = fence._parent
        return False

    def is_closed(self) -> bool:
        """True once this generation (or one above it) was given up on."""
        fence: Fence | None = self
        while fence is not None:
            if fence._closed:
                return True
            fence = fence._parent
        return False


_current = threading.local()


def bind_fence(fence: Fence | None) -> None:
    """Make ``fence`` the calling thread's: the registry and the bus refuse this thread
    once it is closed. An actor binds its own in its thread; a thread an actor owns (an
    I/O reader, say) may bind the actor's fence too."""
    _current.fence = fence


def current_fence() -> Fence | None:
    """The fence bound to the calling thread, if any."""
    fence: Fence | None = getattr(_current, "fence", None)
    return fence


def caller_fenced() -> bool:
    """True when the calling thread belongs to a generation that was given up on."""
    fence: Fence | None = getattr(_current, "fence", None)
    return fence is not None and fence.is_closed()


class TreeFate:
    """Whether a tree met a ``BaseException``: shared by every actor of one tree.

    ``declare`` is called from the thread where it happened; the first call wins, sets
    ``reason`` and calls every listener in that same thread (the root's listener escalates
    at once, so nothing hung elsewhere can delay it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._listeners: list[Callable[[str], None]] = []
        self.reason = ""
        """What happened and where; empty while the tree is not fatal."""

    def is_set(self) -> bool:
        """True once a ``BaseException`` was declared."""
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Wait until declared; False after ``timeout_s``."""
        return self._event.wait(timeout_s)

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` when the fate is declared."""
        with self._lock:
            self._listeners.append(listener)

    def declare(self, reason: str) -> bool:
        """Mark the tree fatal; False when it already was (the first reason is kept)."""
        with self._lock:
            if self._event.is_set():
                return False
            self.reason = reason
            self._event.set()
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(reason)
            except Exception:  # a listener must not keep the others from hearing it
                logger.bind(channel="main").exception("tree fate listener failed")
        return True
