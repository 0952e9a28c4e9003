"""The base of every supervised actor.

Pykka's hooks do not by themselves tell anybody that an actor died: an exception in a
told message calls ``on_failure``, a normal stop calls ``on_stop``, and an exception in
``on_start`` calls neither. ``SupervisedActor`` turns each of these exits into exactly one
``ChildExited`` notice to its supervisor, and runs ``teardown`` exactly once on every path,
so sockets and threads never leak across restarts.

Subclasses override ``setup``, ``teardown`` and ``handlers`` instead of Pykka's hooks.

Fences: once the supervisor drains or closes this generation's fence (it asked the child
to stop, or gave up on it), every message still queued is dropped as a dead letter, not
handled. A ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``, ...) raised by
``setup``, a handler or ``teardown`` is never a quiet failure: it is reported as an
abnormal exit and declared fatal to the whole tree, whose root escalates at once. Pykka's
own reaction to it (stopping every actor, which waits forever on a hung one) is not used.

Actor threads are daemon threads: a generation that was abandoned because it hung can
never keep the process from exiting.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pykka
from loguru import logger

from supervision._fence import Fence, TreeFate, bind_fence, new_token
from supervision._messages import ChildExited, ChildStarted, Ping, Pong
from supervision._registry import registry


@dataclass(frozen=True)
class ChildContext:
    """What a child knows about its place in the tree."""

    name: str
    """The child's name."""
    generation: int = 0
    """0 for the first start, +1 for every restart (counted per supervisor instance)."""
    supervisor: str = ""
    """Name of the supervisor; empty for a root or an unsupervised actor."""
    supervisor_ref: pykka.ActorRef[Any] | None = None
    """Where the child's notices go (the supervisor outlives its children)."""
    token: int = field(default_factory=new_token)
    """Registration token: unique in the process, never reused."""
    fence: Fence = field(default_factory=Fence)
    """This generation's fence (its parent is the supervisor's fence)."""
    fate: TreeFate = field(default_factory=TreeFate)
    """The tree's fate, shared by every actor of the tree."""


class FatalError(Exception):
    """Raised in place of a ``BaseException`` that an actor met, once it was declared fatal
    to the tree, so that Pykka stops this one actor and nothing else."""


_starting = threading.local()


def _set_starting_context(context: ChildContext | None) -> None:
    _starting.context = context


Handler = Callable[[Any], Any]


class SupervisedActor(pykka.ThreadingActor):
    """A Pykka actor that reports its own start and exit to its supervisor."""

    announce_started: bool = True
    """Send ``ChildStarted`` as soon as ``setup`` returns (supervisors announce later)."""

    use_daemon_thread = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        context = getattr(_starting, "context", None)
        self.context: ChildContext = context or ChildContext(name=type(self).__name__)
        self._exit_notified = False
        self._torn_down = False
        self._abnormal_reason = ""
        self._handler_table: dict[type, Handler] | None = None
        self.unhandled = 0
        """Messages received that no handler wanted."""
        self.fenced_drops = 0
        """Messages dropped because this generation's fence was drained or closed."""
        if context is not None:
            # Register before the actor's thread runs setup(): whatever setup announces
            # (a ConnectorUp, say) may be answered by a message to this name at once.
            registry.register(context.name, self.actor_ref, context.generation, token=context.token)

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
        bind_fence(self.context.fence)
        try:
            self.setup()
        except Exception as exc:
            self._teardown_once()
            self._notify_exit(abnormal=True, reason=f"start failed: {type(exc).__name__}: {exc}")
            raise
        except BaseException as exc:
            # Pykka would let this end the thread with the actor still marked alive.
            reason = self._declare_fatal(exc, "setup")
            self._teardown_once()
            self._notify_exit(abnormal=True, reason=f"start failed: {reason}")
            raise FatalError(reason) from exc
        if self.announce_started:
            self.notify_started()

    def on_stop(self) -> None:
        # Called for a requested stop, and by Pykka when a BaseException escaped somewhere
        # the kernel does not catch it (a proxy call): the exception being handled tells
        # the two apart.
        failure = sys.exc_info()[1]
        if failure is not None and not isinstance(failure, Exception):
            self._declare_fatal(failure, "a call")
        self._teardown_once()
        if failure is not None:
            self._notify_exit(abnormal=True, reason=f"{type(failure).__name__}: {failure}")
        elif self._abnormal_reason:
            self._notify_exit(abnormal=True, reason=self._abnormal_reason)
        else:
            self._notify_exit(abnormal=False, reason="stopped")

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
        if self.context.fence.is_draining():
            # Stopped or given up on by its supervisor: a replacement owns the name now.
            self.fenced_drops += 1
            registry.dead_letter(self.name, message)
            return None
        if self._handler_table is None:
            self._handler_table = self.handlers()
        handler = self._handler_table.get(type(message))
        if handler is not None:
            try:
                return handler(message)
            except Exception:
                raise
            except BaseException as exc:
                reason = self._declare_fatal(exc, f"handling {type(message).__name__}")
                self._abnormal_reason = reason
                self.context.fence.drain(reason)
                self.stop()  # also when asked, where Pykka hands an exception to the caller
                raise FatalError(reason) from exc
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

    def _declare_fatal(self, exc: BaseException, where: str) -> str:
        """Declare ``exc`` fatal to the tree; returns the reason (naming it and this actor)."""
        reason = f"{type(exc).__name__}: {exc} in {self.name} ({where})"
        logger.bind(channel="main", actor=self.name).critical(f"fatal: {reason}")
        self.context.fate.declare(reason)
        return reason

    def _teardown_once(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        try:
            self.teardown()
        except Exception as exc:
            # The exit is abnormal even when the stop was asked for: a transient child
            # whose resources could not be released is restarted.
            self._abnormal_reason = f"teardown failed: {type(exc).__name__}: {exc}"
            logger.bind(channel="main", actor=self.name).exception("teardown failed")
        except BaseException as exc:  # never quiet: fatal to the tree
            self._abnormal_reason = self._declare_fatal(exc, "teardown")
