"""The hand-off from a connector's I/O thread to its actor.

A connector's session is owned by a thread that is not the actor's: quickfix's own
threads, a ZeroMQ poller, an asyncio loop for ib_insync. That thread decodes what the
venue sends and hands it to the actor by ``tell``; the actor's mailbox serialises every
change of state. ``SessionLink`` is the one way across, made afresh for every connection
attempt:

- ``tell(message)`` hands a decoded venue message to the actor (counted as inbound);
- ``up()`` says the session is open (logged on, first heartbeat, API handshake done);
- ``lost(reason)`` says the session, or the attempt to open it, is gone; only the first
  call of a link counts.

Each link carries the number of the attempt it belongs to, so the actor can tell a late
word from an old session apart from the current one, and once the actor closes a link
(when it disconnects) nothing sent through it reaches the actor any more: a thread that
outlives its session cannot touch the session that replaced it.

``IoThread`` is the thread itself: a daemon thread, started and joined within a bounded
time, whose body may not let an exception escape unnoticed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgspec
import pykka


class SessionUp(msgspec.Struct, frozen=True):
    """The session of connection attempt ``attempt`` is open (I/O thread -> actor)."""

    attempt: int
    """Number of the connection attempt the session belongs to."""


class SessionLost(msgspec.Struct, frozen=True):
    """The session (or the attempt to open it) of ``attempt`` is gone (I/O thread -> actor)."""

    attempt: int
    """Number of the connection attempt the session belonged to."""
    reason: str
    """Why, in words."""


class SessionLink:
    """The I/O side's only way into the actor, for one connection attempt; thread safe."""

    def __init__(self, actor_ref: pykka.ActorRef[Any] | None, attempt: int,
                 on_inbound: Callable[[], None] = lambda: None) -> None:
        """``on_inbound`` runs (in the I/O thread) for every message told, before the tell:
        the connector counts it and notes the time."""
        self._ref = actor_ref
        self.attempt = attempt
        """Number of the connection attempt this link belongs to (0: not connected yet)."""
        self._on_inbound = on_inbound
        self._lock = threading.Lock()
        self._closed = actor_ref is None
        self._lost = False

    @property
    def closed(self) -> bool:
        """True once the actor closed the link (or the actor is gone)."""
        return self._closed

    @property
    def is_lost(self) -> bool:
        """True once ``lost`` was called."""
        return self._lost

    def tell(self, message: Any) -> bool:
        """Hand ``message`` to the actor; False (and nothing sent) once the link is closed."""
        if self._closed:
            return False
        self._on_inbound()
        return self._send(message)

    def up(self) -> None:
        """The session is open."""
        self._send(SessionUp(self.attempt))

    def lost(self, reason: str) -> None:
        """The session is gone; only the first call of a link is told to the actor."""
        with self._lock:
            if self._lost:
                return
            self._lost = True
        self._send(SessionLost(self.attempt, reason))

    def close(self) -> None:
        """Nothing sent through this link reaches the actor any more (actor thread)."""
        self._closed = True

    def _send(self, message: Any) -> bool:
        if self._closed or self._ref is None:
            return False
        try:
            self._ref.tell(message)
        except pykka.ActorDeadError:  # the actor is stopping; its teardown joins the thread
            self._closed = True
            return False
        return True


class IoThread:
    """A daemon thread that owns a venue session; ``join`` is bounded."""

    def __init__(self, name: str, body: Callable[[], None],
                 on_crash: Callable[[BaseException], None]) -> None:
        """``on_crash`` runs in the thread when ``body`` raises (say so through the link)."""
        self._body = body
        self._on_crash = on_crash
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def name(self) -> str:
        """The thread's name."""
        return self._thread.name

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the thread to end; True when it has ended."""
        if self._thread.ident is None:
            return True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._body()
        except Exception as exc:  # the thread's last word goes to the actor, not to stderr
            try:
                self._on_crash(exc)
            except Exception:
                pass
