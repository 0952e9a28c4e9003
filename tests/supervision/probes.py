"""Test actors and helpers for the supervision tests: a probe child whose faults are injected
by message or by constructor argument, a journal of what the probes did, and a recorder
that collects what supervisors publish on the bus."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from supervision import (
    SUPERVISION_TOPIC,
    ChildInfo,
    ChildSpec,
    Ping,
    SupervisedActor,
    Tree,
    bus,
    registry,
)
from supervision._actor import Handler
from tests.helpers import wait_for

StartTree = Callable[..., Tree]
"""The ``start_tree`` fixture: start a ``Tree`` (arguments as for ``Tree``), stopped after the test."""

# ---- shared records -------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing a probe did."""

    kind: str
    """``setup`` (setup entered), ``start`` (setup succeeded), ``teardown`` or ``ping``."""
    name: str
    """The probe's name in the tree."""
    generation: int
    """The probe's generation."""
    at: float
    """``time.monotonic()`` when it happened."""
    thread: threading.Thread
    """The thread the probe ran in."""


class Journal:
    """What probes did, in order, shared between probes and the test (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def add(self, kind: str, name: str, generation: int) -> None:
        """Record one event from the calling probe's thread."""
        with self._lock:
            self._events.append(Event(kind, name, generation, time.monotonic(), threading.current_thread()))

    def mark(self) -> int:
        """A position in the journal; pass it to ``since`` to see only later events."""
        with self._lock:
            return len(self._events)

    def since(self, mark: int = 0, kind: str | None = None) -> list[Event]:
        """Events after ``mark``, optionally only of one kind."""
        with self._lock:
            events = self._events[mark:]
        return [e for e in events if kind is None or e.kind == kind]

    def names(self, kind: str, mark: int = 0) -> list[str]:
        """Names of the probes that did ``kind`` after ``mark``, in order."""
        return [e.name for e in self.since(mark, kind)]

    def last(self, kind: str, name: str) -> Event:
        """The latest ``kind`` event of probe ``name``."""
        matching = [e for e in self.since(0, kind) if e.name == name]
        assert matching, f"no {kind} event for {name}"
        return matching[-1]


class Countdown:
    """Says yes to the first ``n`` calls of ``take``, then no (thread-safe)."""

    def __init__(self, n: int) -> None:
        self._lock = threading.Lock()
        self.remaining = n

    def take(self) -> bool:
        """True while faults remain to be injected."""
        with self._lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            return True


# ---- messages a probe understands -------------------------------------------------------


@dataclass(frozen=True)
class Echo:
    """Ask: answers (name, generation)."""


@dataclass(frozen=True)
class Crash:
    """Tell: raise an exception in the handler."""


@dataclass(frozen=True)
class StopSelf:
    """Tell: stop normally (``self.stop()``)."""


@dataclass(frozen=True)
class Vanish:
    """Tell: stop without sending the exit notice (a death nobody reports)."""


@dataclass(frozen=True)
class Block:
    """Tell: block the handler on ``event`` (a hang)."""

    event: threading.Event
    entered: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class RaiseSystemExit:
    """Tell: raise ``SystemExit`` (a ``BaseException``)."""


@dataclass(frozen=True)
class RaiseKeyboardInterrupt:
    """Ask or tell: raise ``KeyboardInterrupt`` (a ``BaseException``)."""


@dataclass(frozen=True)
class Note:
    """Tell: journal ``note:<tag>`` (shows whether a queued message ever ran)."""

    tag: str


@dataclass(frozen=True)
class BlockThenReach:
    """Tell: block on ``event`` (a hang), then try to reach others through the registry
    and the bus, recording each outcome in ``outcomes``."""

    event: threading.Event
    entered: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    outcomes: dict[str, object] = field(default_factory=dict)


class Probe(SupervisedActor):
    """A child that journals its life and fails on demand."""

    def __init__(
        self,
        journal: Journal,
        *,
        fail_init: Countdown | None = None,
        fail_setup: Countdown | None = None,
        hang_setup: Countdown | None = None,
        release: threading.Event | None = None,
        teardown_s: float = 0.0,
        exit_setup: Countdown | None = None,
        fail_teardown: bool = False,
    ) -> None:
        super().__init__()
        if fail_init is not None and fail_init.take():
            raise RuntimeError("injected constructor fault")
        self.journal = journal
        self.fail_setup = fail_setup
        self.hang_setup = hang_setup
        self.release = release or threading.Event()
        self.teardown_s = teardown_s
        self.exit_setup = exit_setup
        self.fail_teardown = fail_teardown

    def setup(self) -> None:
        self.journal.add("setup", self.name, self.context.generation)
        if self.fail_setup is not None and self.fail_setup.take():
            raise RuntimeError("injected setup fault")
        if self.exit_setup is not None and self.exit_setup.take():
            raise SystemExit("injected SystemExit in setup")
        if self.hang_setup is not None and self.hang_setup.take():
            self.release.wait(timeout=10.0)  # bounded: a forgotten release cannot hang the suite
        self.journal.add("start", self.name, self.context.generation)

    def teardown(self) -> None:
        if self.teardown_s:
            # A slow release of resources (joining an I/O thread, closing a session).
            threading.Event().wait(self.teardown_s)
        self.journal.add("teardown", self.name, self.context.generation)
        if self.fail_teardown:
            raise RuntimeError("injected teardown fault")

    def handlers(self) -> dict[type, Handler]:
        return {
            Echo: lambda _m: (self.name, self.context.generation),
            Crash: self._crash,
            StopSelf: lambda _m: self.stop(),
            Vanish: self._vanish,
            Block: self._block,
            RaiseSystemExit: self._system_exit,
            RaiseKeyboardInterrupt: self._keyboard_interrupt,
            Note: lambda m: self.journal.add(f"note:{m.tag}", self.name, self.context.generation),
            BlockThenReach: self._block_then_reach,
        }

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            self.journal.add("ping", self.name, self.context.generation)
        return super().on_receive(message)

    def _crash(self, _message: Crash) -> None:
        raise RuntimeError("injected handler fault")

    def _vanish(self, _message: Vanish) -> None:
        self._exit_notified = True  # the notice is "lost": only the liveness poll can tell
        self.stop()

    def _block(self, message: Block) -> None:
        message.entered.set()
        message.event.wait(timeout=10.0)  # bounded: a forgotten release cannot hang the suite

    def _system_exit(self, _message: RaiseSystemExit) -> None:
        raise SystemExit("injected SystemExit")

    def _keyboard_interrupt(self, _message: RaiseKeyboardInterrupt) -> None:
        raise KeyboardInterrupt("injected KeyboardInterrupt")

    def _block_then_reach(self, message: BlockThenReach) -> None:
        message.entered.set()
        message.event.wait(timeout=10.0)  # bounded: a forgotten release cannot hang the suite
        try:
            message.outcomes["tell"] = registry.tell("bystander", Note(tag="from-the-past"))
            message.outcomes["publish"] = bus.publish("news", Note(tag="from-the-past"))
            message.outcomes["lookup"] = registry.lookup("bystander")
            message.outcomes["register"] = registry.register(self.name, self.actor_ref)
        finally:
            message.done.set()


class Recorder(pykka.ThreadingActor):
    """Collects every message it is told (subscribe it to bus topics)."""

    def __init__(self, sink: list[Any], lock: threading.Lock) -> None:
        super().__init__()
        self._sink = sink
        self._lock = lock

    def on_receive(self, message: Any) -> None:
        with self._lock:
            self._sink.append(message)


class Recording:
    """A ``Recorder`` registered as ``name`` and subscribed to ``topic``."""

    def __init__(self, name: str = "recorder", topic: str = SUPERVISION_TOPIC) -> None:
        self._lock = threading.Lock()
        self._sink: list[Any] = []
        self.ref = Recorder.start(self._sink, self._lock)
        registry.register(name, self.ref)
        bus.subscribe(topic, name)

    def messages(self, kind: type | None = None) -> list[Any]:
        """What was received so far, optionally only of one type."""
        with self._lock:
            received = list(self._sink)
        return [m for m in received if kind is None or isinstance(m, kind)]

    def wait(self, kind: type, count: int = 1, timeout_s: float = 2.0) -> list[Any]:
        """Wait until ``count`` messages of type ``kind`` arrived (delivery is asynchronous)."""
        wait_for(lambda: len(self.messages(kind)) >= count, timeout_s=timeout_s, what=f"{count} {kind}")
        return self.messages(kind)


# ---- helpers ----------------------------------------------------------------------------


def probe(name: str, journal: Journal, **kwargs: Any) -> ChildSpec:
    """A ``ChildSpec`` for a probe; ``kwargs`` split between the spec and the probe."""
    spec_fields = {"restart", "shutdown_timeout_s", "start_timeout_s", "heartbeat_s", "heartbeat_timeout_s"}
    spec_kwargs = {k: v for k, v in kwargs.items() if k in spec_fields}
    actor_kwargs = {k: v for k, v in kwargs.items() if k not in spec_fields}
    return ChildSpec(name=name, actor_class=Probe, kwargs={"journal": journal, **actor_kwargs}, **spec_kwargs)


def child(tree: Tree, name: str, supervisor: str | None = None) -> ChildInfo:
    """The listing row of child ``name``."""
    rows = {row.name: row for row in tree.children(supervisor)}
    return rows[name]


def echo(name: str, timeout_s: float = 1.0) -> tuple[str, int]:
    """Ask the actor registered as ``name`` who it is (it must be up)."""
    ref = registry.lookup(name)
    assert ref is not None, f"{name} is not registered"
    name_seen, generation = ref.ask(Echo(), block=True, timeout=timeout_s)
    return str(name_seen), int(generation)


def wait_generation(tree: Tree, name: str, generation: int, supervisor: str | None = None) -> ChildInfo:
    """Wait until child ``name`` runs with ``generation``."""

    def running() -> ChildInfo | None:
        row = child(tree, name, supervisor)
        return row if row.generation == generation and row.state == "running" else None

    row = wait_for(running, timeout_s=2.0, what=f"{name} generation {generation} running")
    assert isinstance(row, ChildInfo)
    return row


_ACTOR_THREAD = re.compile(r"^(Probe|Recorder|Supervisor|[A-Za-z]*Actor)-\d+$")


def actor_threads(ignore: frozenset[threading.Thread] = frozenset()) -> list[threading.Thread]:
    """Live threads that run a Pykka actor loop (by target, or by Pykka's thread name),
    except those in ``ignore`` (threads some earlier test module left behind)."""
    found = []
    for thread in threading.enumerate():
        if thread in ignore:
            continue
        target = getattr(thread, "_target", None)
        owner = getattr(target, "__self__", None)
        if isinstance(owner, pykka.Actor) or _ACTOR_THREAD.match(thread.name):
            found.append(thread)
    return found
