"""Name registry and publish/subscribe bus.

Actors never keep references to siblings: a restart changes the ``ActorRef``. They address
each other by name, and the registry resolves a name to the current generation's ref. A
message for a name that is down is a dead letter: counted and logged, never raised.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pykka
from loguru import logger


class Registry:
    """Maps names to the current ``ActorRef`` and generation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, tuple[pykka.ActorRef[Any], int]] = {}
        self.dead_letters: Counter[str] = Counter()
        """Dead letters per target name."""
        self.fatal = threading.Event()
        """Set when a BaseException escaped an actor: Pykka is stopping every actor, and
        supervisors must not restart anything."""

    def register(self, name: str, ref: pykka.ActorRef[Any], generation: int = 0) -> None:
        """Point ``name`` at ``ref`` (replacing any older generation)."""
        with self._lock:
            self._refs[name] = (ref, generation)

    def unregister(self, name: str, generation: int | None = None) -> None:
        """Forget ``name``; with ``generation``, only if that generation is still current."""
        with self._lock:
            current = self._refs.get(name)
            if current is not None and (generation is None or current[1] == generation):
                del self._refs[name]

    def lookup(self, name: str) -> pykka.ActorRef[Any] | None:
        """The live ref registered under ``name``, or None."""
        entry = self._refs.get(name)
        if entry is None or not entry[0].is_alive():
            return None
        return entry[0]

    def generation(self, name: str) -> int | None:
        """Generation registered under ``name``, or None."""
        entry = self._refs.get(name)
        return None if entry is None else entry[1]

    def names(self) -> list[str]:
        """Every registered name."""
        with self._lock:
            return list(self._refs)

    def tell(self, name: str, message: Any) -> bool:
        """Send ``message`` to ``name``; False (and a dead letter) when it is down."""
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

    def total_dead_letters(self) -> int:
        """Dead letters counted since the last reset."""
        return sum(self.dead_letters.values())

    def reset(self) -> None:
        """Forget every name and counter (tests, and a fresh tree)."""
        with self._lock:
            self._refs.clear()
            self.dead_letters.clear()
            self.fatal.clear()


class Bus:
    """Topic-based publish/subscribe over registry names."""

    def __init__(self, names: Registry) -> None:
        self._names = names
        self._lock = threading.Lock()
        self._topics: dict[str, tuple[str, ...]] = {}

    def subscribe(self, topic: str, name: str) -> None:
        """Deliver what is published on ``topic`` to the actor named ``name``."""
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
        down gets a dead letter (its subscription stays: it comes back after a restart)."""
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
