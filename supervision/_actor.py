"""The base of every supervised actor.

Pykka's hooks do not by themselves tell anybody that an actor died: an exception in a
told message calls ``on_failure``, a normal stop calls ``on_stop``, and an exception in
``on_start`` calls neither. ``SupervisedActor`` turns each of these exits into exactly one
``ChildExited`` notice to its supervisor, and runs ``teardown`` exactly once on every path,
so sockets and threads never leak across restarts.

Subclasses override ``setup``, ``teardown`` and ``handlers`` instead of Pykka's hooks.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pykka
from loguru import logger

from supervision._messages import ChildExited, ChildStarted, Ping, Pong
from supervision._registry import registry


@dataclass(frozen=True)
class ChildContext:
    """What a child knows about its place in the tree."""

    name: str
    """The child's name."""
    generation: int = 0
    """0 for the first start, +1 for every restart."""
    supervisor: str = ""
    """Name of the supervisor; empty for a root or an unsupervised actor."""
    supervisor_ref: pykka.ActorRef[Any] | None = None
    """Where the child's notices go (the supervisor outlives its children)."""


_starting = threading.local()


def _set_starting_context(context: ChildContext | None) -> None:
    _starting.context = context


Handler = Callable[[Any], Any]


class SupervisedActor(pykka.ThreadingActor):
    """A Pykka actor that reports its own start and exit to its supervisor."""

    announce_started: bool = True
    """Send ``ChildStarted`` as soon as ``setup`` returns (supervisors announce later)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        context = getattr(_starting, "context", None)
        self.context: ChildContext = context or ChildContext(name=type(self).__name__)
        self._exit_notified = False
        self._torn_down = False
        self._handler_table: dict[type, Handler] | None = None
        self.unhandled = 0
        """Messages received that no handler wanted."""
        if context is not None:
            # Register before the actor's thread runs setup(): whatever setup announces
            # (a ConnectorUp, say) may be answered by a message to this name at once.
            registry.register(context.name, self.actor_ref, context.generation)

    @property
    def name(self) -> str:
        """The actor's name in the tree."""
        return self.context.name

    # ---- hooks for subclasses -------------------------------------------------------

    def setup(self) -> None:
        """Acquire resources; raising here is a failed start (restarted with backoff)."""

    def teardown(self) -> None:
        """Release resources; runs exactly once on every exit path."""

    def handlers(self) -> dict[type, Handler]:
        """Message type to handler, for messages delivered by ``tell`` or ``ask``."""
        return {}

    # ---- Pykka hooks ----------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self.setup()
        except Exception as exc:
            self._teardown_once()
            self._notify_exit(abnormal=True, reason=f"start failed: {type(exc).__name__}: {exc}")
            raise
        if self.announce_started:
            self.notify_started()

    def on_stop(self) -> None:
        # Called for a requested stop, and by Pykka when a BaseException escapes a handler
        # (it then stops every actor): the exception being handled tells the two apart.
        failure = sys.exc_info()[1]
        if failure is not None:
            registry.fatal.set()
        self._teardown_once()
        if failure is None:
            self._notify_exit(abnormal=False, reason="stopped")
        else:
            self._notify_exit(abnormal=True, reason=f"{type(failure).__name__}: {failure}")

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._teardown_once()
        kind = exception_type.__name__ if exception_type else "failure"
        self._notify_exit(abnormal=True, reason=f"{kind}: {exception_value}")

    def on_receive(self, message: Any) -> Any:
        if self._handler_table is None:
            self._handler_table = self.handlers()
        handler = self._handler_table.get(type(message))
        if handler is not None:
            return handler(message)
        if isinstance(message, Ping):
            self._tell_supervisor(
                Pong(name=self.name, generation=self.context.generation, seq=message.seq)
            )
            return None
        # Bus topics carry more kinds than each subscriber wants: the rest are dropped.
        self.unhandled += 1
        return None

    # ---- notices --------------------------------------------------------------------

    def notify_started(self) -> None:
        """Tell the supervisor this child is up."""
        self._tell_supervisor(
            ChildStarted(
                supervisor=self.context.supervisor,
                name=self.name,
                generation=self.context.generation,
            )
        )

    def _notify_exit(self, *, abnormal: bool, reason: str) -> None:
        if self._exit_notified:
            return
        self._exit_notified = True
        self._tell_supervisor(
            ChildExited(
                supervisor=self.context.supervisor,
                name=self.name,
                generation=self.context.generation,
                abnormal=abnormal,
                reason=reason,
            )
        )

    def _tell_supervisor(self, message: Any) -> None:
        ref = self.context.supervisor_ref
        if ref is None:
            return
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            logger.bind(channel="main", actor=self.name).debug("supervisor gone; notice dropped")

    def _teardown_once(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        try:
            self.teardown()
        except Exception:
            logger.bind(channel="main", actor=self.name).exception("teardown failed")
