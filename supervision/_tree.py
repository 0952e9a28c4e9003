"""Starting, querying and stopping a supervision tree from outside the actor system."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pykka

from supervision._fence import Fence, TreeFate
from supervision._messages import ChildInfo, SupervisorStatus, TreeHealth
from supervision._registry import registry
from supervision._spec import Backoff, ChildSpec, Strategy
from supervision._supervisor import (
    GetSupervisorStatus,
    ListChildren,
    RequestStop,
    RestartLog,
    SupervisionError,
    Supervisor,
)


class Tree:
    """A root supervisor with a blocking ``start`` (the start barrier) and ``stop``.

    ``start`` returns only once every permanent child of every supervisor runs; ``health``
    judges the tree from outside it (readiness, crash loops, a fatal ``BaseException``).
    ``on_escalation`` is called at most once per tree.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        name: str = "root",
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period_s: float = 5.0,
        backoff: Backoff | None = None,
        poll_s: float = 0.5,
        on_escalation: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self._started = threading.Event()
        self._kwargs: dict[str, Any] = {
            "strategy": strategy,
            "intensity": intensity,
            "period_s": period_s,
            "backoff": backoff,
            "poll_s": poll_s,
            "name": name,
            "on_escalation": on_escalation,
            "on_started": self._started.set,
        }
        self._children = list(children)
        self.ref: pykka.ActorRef[Any] | None = None
        self.fate = TreeFate()
        """Declared by a ``BaseException`` anywhere in the tree (a new one at every start)."""
        self.fence = Fence()
        """The root's fence: closed when the tree is left behind by ``stop``."""

    def start(self, timeout_s: float = 30.0, *, require_running: bool = True) -> None:
        """Start the root and wait until the start barrier passed *and* every permanent
        child of every supervisor is running; ``SupervisionError`` (naming what is not
        running and why) when that does not hold within ``timeout_s``, when the root gives
        up, or when the tree meets a fatal ``BaseException``.

        ``require_running=False`` returns once the barrier passed, even with children
        failing their start and waiting to be restarted (``health()`` then says so): for
        a test that watches those failures."""
        self.fate, self.fence = TreeFate(), Fence()
        self._started.clear()
        self.ref = Supervisor.start(self._children, **self._kwargs, fate=self.fate, fence=self.fence)
        deadline = time.monotonic() + timeout_s
        health: TreeHealth | None = None
        while True:
            if self.fate.is_set():
                raise SupervisionError(f"tree {self.name} failed while starting: {self.fate.reason}")
            if not self.ref.is_alive():
                raise SupervisionError(f"tree {self.name} gave up while starting")
            if self._started.is_set() and not require_running:
                return
            if self._started.is_set():
                health = self.health(timeout_s=max(0.1, min(2.0, deadline - time.monotonic())))
                if health.ready:
                    return
            if time.monotonic() >= deadline:
                why = "; ".join(health.problems) if health is not None else "the start barrier did not pass"
                raise SupervisionError(f"tree {self.name} did not start within {timeout_s}s: {why}")
            self._started.wait(0.02)
            if health is not None:
                time.sleep(0.02)  # outside the actor system: polling the children's states

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every child in reverse order, then the root; ``SupervisionError`` when the
        root does not stop within ``timeout_s`` (it is then fenced and left behind)."""
        if self.ref is None:
            return
        deadline = time.monotonic() + timeout_s
        try:
            self.ref.ask(RequestStop(), timeout=timeout_s)
            self.ref.stop(block=True, timeout=max(0.0, deadline - time.monotonic()))
        except pykka.ActorDeadError:
            pass
        except pykka.Timeout as exc:
            self.fence.close(f"tree {self.name} did not stop within {timeout_s}s")
            pykka.ActorRegistry.unregister(self.ref)
            raise SupervisionError(f"tree {self.name} did not stop within {timeout_s}s; "
                                   "its actors are fenced and left behind") from exc

    def is_alive(self) -> bool:
        """True while the root actor runs."""
        return self.ref is not None and self.ref.is_alive()

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """``health().healthy``: every supervisor answers in time and runs, every permanent
        child runs, nothing crash-loops, and no ``BaseException`` ended the tree."""
        return self.health(timeout_s).healthy

    def health(self, timeout_s: float = 1.0) -> TreeHealth:
        """Ask every supervisor of the tree, top down, for its status (each may take up to
        ``timeout_s`` to answer)."""
        if self.fate.is_set():
            return TreeHealth(ready=False, crash_looping=(), problems=(f"fatal: {self.fate.reason}",),
                              fatal=self.fate.reason)
        if self.ref is None:
            return TreeHealth(ready=False, crash_looping=(), problems=("not started",))
        problems: list[str] = []  # each one makes the tree not ready
        looping: list[str] = []
        loops: list[str] = []
        pending: list[tuple[str, pykka.ActorRef[Any] | None]] = [(self.name, self.ref)]
        while pending:
            name, ref = pending.pop(0)
            if ref is None:
                problems.append(f"supervisor {name} is not registered")
                continue
            try:
                status = ref.ask(GetSupervisorStatus(), timeout=timeout_s)
            except pykka.Timeout:
                problems.append(f"supervisor {name} did not answer within {timeout_s}s")
                continue
            except pykka.ActorDeadError:
                problems.append(f"supervisor {name} is not running")
                continue
            assert isinstance(status, SupervisorStatus)
            if not status.running:
                problems.append(f"supervisor {name} is stopping or gave up")
            problems.extend(f"{name}/{row}" for row in status.not_running)
            if status.crash_looping:
                looping.append(name)
                loops.append(
                    f"{name} is crash-looping: {status.restarts_in_period} restarts within "
                    f"{status.period_s}s (intensity {status.intensity}); last {status.last_restarted}"
                )
            pending.extend((child, registry.lookup(child)) for child in status.supervisors)
        return TreeHealth(ready=not problems, crash_looping=tuple(looping),
                          problems=(*problems, *loops))

    def children(self, supervisor: str | None = None, timeout_s: float = 2.0) -> list[ChildInfo]:
        """The children of ``supervisor`` (the root by default)."""
        ref = self._supervisor_ref(supervisor)
        return cast("list[ChildInfo]", ref.ask(ListChildren(), timeout=timeout_s))

    def restart_log(
        self, supervisor: str | None = None, timeout_s: float = 2.0
    ) -> list[tuple[str, int, float]]:
        """Every restart ``supervisor`` scheduled, as (child, attempt, delay_s)."""
        ref = self._supervisor_ref(supervisor)
        return cast("list[tuple[str, int, float]]", ref.ask(RestartLog(), timeout=timeout_s))

    def _supervisor_ref(self, supervisor: str | None) -> pykka.ActorRef[Any]:
        ref = self.ref if supervisor is None else registry.lookup(supervisor)
        if ref is None:
            raise SupervisionError(f"supervisor {supervisor or self.name} is not running")
        return ref
