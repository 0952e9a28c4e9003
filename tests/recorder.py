"""A recorder actor for tests: subscribes to bus topics and keeps every message it gets.

    recorder = Recorder.spawn("recorder", [topics.PORTFOLIO, topics.SAFETY])
    snapshot = recorder.wait_for(lambda m: isinstance(m, PortfolioSnapshot) and m.fills == 2)

Start it before the actors it observes, so it misses nothing they publish. The conftest
fixture stops it with every other actor after the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from supervision import ChildContext, Ping, SupervisedActor, bus, registry

T = TypeVar("T")


class Recorder(SupervisedActor):
    """Appends every message it receives to a list; read it from any thread."""

    def __init__(
        self,
        name: str = "recorder",
        topics: Iterable[str] = (),
        created: list[Recorder] | None = None,
    ) -> None:
        """``created``, when given, receives the instance (``spawn`` uses it to hand the
        recorder itself, not only its ref, back to the test)."""
        super().__init__()
        if self.context.supervisor_ref is None:
            self.context = ChildContext(name=name)
        self.topics = tuple(topics)
        self._cond = threading.Condition()
        self._messages: list[Any] = []
        if created is not None:
            created.append(self)

    @classmethod
    def spawn(cls, name: str = "recorder", topics: Iterable[str] = ()) -> Recorder:
        """Start a recorder registered as ``name`` and subscribed to ``topics``; returns it
        once its subscriptions are in place."""
        created: list[Recorder] = []
        ref = cls.start(name, tuple(topics), created)
        ref.ask(_Ready(), timeout=5)
        return created[0]

    # ---- actor side -----------------------------------------------------------------

    def setup(self) -> None:
        if self.context.supervisor_ref is None:
            registry.register(self.name, self.actor_ref, 0)
        for topic in self.topics:
            bus.subscribe(topic, self.name)

    def teardown(self) -> None:
        for topic in self.topics:
            bus.unsubscribe(topic, self.name)
        if self.context.supervisor_ref is None:
            registry.unregister(self.name, 0)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Ready):
            return True
        if isinstance(message, Ping):  # answer a supervisor's heartbeat, do not record it
            return super().on_receive(message)
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()
        return None

    # ---- test side ------------------------------------------------------------------

    def messages(self, kind: type[T] | None = None) -> list[Any]:
        """Every message received so far, oldest first; with ``kind``, only those of it."""
        with self._cond:
            found = list(self._messages)
        if kind is None:
            return found
        return [m for m in found if isinstance(m, kind)]

    def count(self) -> int:
        """How many messages were received so far (a mark for ``wait_for(after=...)``)."""
        with self._cond:
            return len(self._messages)

    def wait_for(
        self, predicate: Callable[[Any], object], timeout_s: float = 5.0, *, after: int = 0
    ) -> Any:
        """The first message (from index ``after`` on) for which ``predicate`` is true,
        waiting up to ``timeout_s``; ``AssertionError`` naming what was seen on timeout."""
        deadline = time.monotonic() + timeout_s
        index = after
        with self._cond:
            while True:
                while index < len(self._messages):
                    message = self._messages[index]
                    index += 1
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [type(m).__name__ for m in self._messages[after:]][-20:]
                    raise AssertionError(
                        f"recorder {self.name}: no matching message within {timeout_s}s; last seen {seen}"
                    )
                self._cond.wait(remaining)


class _Ready:
    """Asked by ``spawn``: answered once setup (the subscriptions) has run."""
