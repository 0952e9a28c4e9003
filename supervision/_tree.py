"""Starting, querying and stopping a supervision tree from outside the actor system."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pykka

from supervision._messages import ChildInfo
from supervision._registry import registry
from supervision._spec import Backoff, ChildSpec, Strategy
from supervision._supervisor import (
    HealthCheck,
    ListChildren,
    RequestStop,
    RestartLog,
    SupervisionError,
    Supervisor,
)


class Tree:
    """A root supervisor with a blocking ``start`` (the start barrier) and ``stop``."""

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

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the root and wait until every child has passed the start barrier (each
        child started, or failed and was scheduled for restart)."""
        self.ref = Supervisor.start(self._children, **self._kwargs)
        deadline = time.monotonic() + timeout_s
        while not self._started.wait(0.05):
            if not self.ref.is_alive():
                raise SupervisionError(f"tree {self.name} gave up while starting")
            if time.monotonic() >= deadline:
                raise SupervisionError(f"tree {self.name} did not start within {timeout_s}s")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every child in reverse order, then the root."""
        if self.ref is None:
            return
        try:
            self.ref.ask(RequestStop(), timeout=timeout_s)
            self.ref.stop(block=True, timeout=timeout_s)
        except pykka.ActorDeadError:
            pass

    def is_alive(self) -> bool:
        """True while the root actor runs."""
        return self.ref is not None and self.ref.is_alive()

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """True when the root answers a health check in time and has not given up."""
        if self.ref is None:
            return False
        try:
            return bool(self.ref.ask(HealthCheck(), timeout=timeout_s))
        except (pykka.ActorDeadError, pykka.Timeout):
            return False

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
