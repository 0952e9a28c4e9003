"""Name registry and publish/subscribe bus.

Actors never keep references to siblings: a restart changes the ``ActorRef``. They address
each other by name, and the registry resolves a name to the current generation's ref. A
message for a name that is down is a dead letter: counted and logged, never raised.

Each registration carries a token unique in the process (``supervision._fence``); removing
a registration by token is a no-op once the name points at a newer one. A thread whose
generation was given up on (its fence is closed) is refused: it cannot register, look up,
tell or publish any more.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pykka
from loguru import logger

from supervision._fence import caller_fenced, new_token


class Registry:
    """Maps names to the current ``ActorRef`` and generation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, tuple[pykka.ActorRef[Any], int, int]] = {}
        self.dead_letters: Counter[str] = Counter()
        """Dead letters per target name."""
        self.refused = 0
        """Calls refused because the caller's generation was given up on (fenced)."""

    def register(self, name: str, ref: pykka.ActorRef[Any], generation: int = 0,
                 *, token: int | None = None) -> int:
        """Point ``name`` at ``ref`` (replacing any older registration); returns the
        registration's token (a new one unless given), or 0 when refused: the caller is
        fenced, or ``name`` already holds a newer token."""
        if caller_fenced():
            self._refuse("register", name)
            return 0
        token = new_token() if token is None else token
        with self._lock:
            current = self._refs.get(name)
            if current is not None and current[2] > token:
                return 0
            self._refs[name] = (ref, generation, token)
        return token

    def unregister(self, name: str, generation: int | None = None, *, token: int | None = None) -> None:
        """Forget ``name``; with ``generation`` or ``token``, only if that registration is
        still the current one (otherwise a no-op: the name has moved on)."""
        with self._lock:
            current = self._refs.get(name)
            if current is None:
                return
            if generation is not None and current[1] != generation:
                return
            if token is not None and current[2] != token:
                return
            del self._refs[name]

    def lookup(self, name: str) -> pykka.ActorRef[Any] | None:
        """The live ref registered under ``name``, or None (also for a fenced caller)."""
        if caller_fenced():
            self._refuse("lookup", name)
            return None
        entry = self._refs.get(name)
        if entry is None or not entry[0].is_alive():
            return None
        return entry[0]

    def token(self, name: str) -> int | None:
        """Token of the registration under ``name``, or None."""
        entry = self._refs.get(name)
        return None if entry is None else entry[2]

    def generation(self, name: str) -> int | None:
        """Generation registered under ``name``, or None."""
        entry = self._refs.get(name)
        return None if entry is None else entry[1]

    def names(self) -> list[str]:
        """Every registered name."""
        with self._lock:
            return list(self._refs)

    def tell(self, name: str, message: Any) -> bool:
        """Send ``message`` to ``name``; False (and a dead letter) when it is down, or
        when the caller is fenced."""
        if caller_fenced():
            self._refuse("tell", name)
            self.dead_letter(name, message)
            return False
        entry = self._refs.get(name)
        if entry is not None:
            try:
                entry[0].tell(message)
                return True
            except pykka.ActorDeadError:
                pass
        self.dead_letter(name, message)
        return False

    def dead_letter(self, name: str, message: Any) -> None:
        """Count and log a message that could not be delivered."""
        self.dead_letters[name] += 1
        logger.bind(channel="main", target=name, message_type=type(message).__name__).debug(
            "dead letter"
        )

    def _refuse(self, what: str, name: str) -> None:
        self.refused += 1
        logger.bind(channel="main", target=name).warning(f"{what} by a fenced generation refused")

    def total_dead_letters(self) -> int:
        """Dead letters counted since the last reset."""
        return sum(self.dead_letters.values())

    def reset(self) -> None:
        """Forget every name and counter (tests, and a fresh tree)."""
        with self._lock:
            self._refs.clear()
            self.dead_letters.clear()
            self.refused = 0


class Bus:
    """Topic-based publish/subscribe over registry names."""

    def __init__(self, names: Registry) -> None:
        self._names = names
        self._lock = threading.Lock()
        self._topics: dict[str, tuple[str, ...]] = {}

    def subscribe(self, topic: str, name: str) -> None:
        """Deliver what is published on ``topic`` to the actor named ``name`` (refused for
        a fenced caller)."""
        if caller_fenced():
            self._names._refuse("subscribe", name)
            return
        with self._lock:
            current = self._topics.get(topic, ())
            if name not in current:
                self._topics[topic] = (*current, name)

    def unsubscribe(self, topic: str, name: str) -> None:
        """Stop delivering ``topic`` to ``name``."""
        with self._lock:
            current = self._topics.get(topic, ())
            self._topics[topic] = tuple(n for n in current if n != name)

    def subscribers(self, topic: str) -> tuple[str, ...]:
        """Names subscribed to ``topic``."""
        return self._topics.get(topic, ())

    def publish(self, topic: str, message: Any) -> int:
        """Tell every subscriber of ``topic``; returns how many got it. A subscriber that is
        down gets a dead letter (its subscription stays: it comes back after a restart).
        Nothing is delivered for a fenced caller."""
        if caller_fenced():
            self._names._refuse("publish", topic)
            return 0
        delivered = 0
        for name in self._topics.get(topic, ()):
            delivered += self._names.tell(name, message)
        return delivered

    def reset(self) -> None:
        """Forget every subscription."""
        with self._lock:
            self._topics.clear()


registry = Registry()
"""The process-wide name registry."""

bus = Bus(registry)
"""The process-wide bus."""
