"""Child specifications, restart types, strategies and the backoff policy."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pykka
import tenacity


class Restart(enum.StrEnum):
    """When a child is restarted after it exits."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """Only after an abnormal exit."""
    TEMPORARY = "temporary"
    """Never."""


class Strategy(enum.StrEnum):
    """Which children are restarted when one exits."""

    ONE_FOR_ONE = "one_for_one"
    """Only the one that exited."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped (in reverse order) and all are started again."""
    REST_FOR_ONE = "rest_for_one"
    """The one that exited and every child started after it."""


@dataclass(frozen=True)
class ChildSpec:
    """How a supervisor starts and treats one child."""

    name: str
    """Unique name; the child is reachable by it through the registry."""
    actor_class: type[pykka.Actor]
    """The actor class (a ``SupervisedActor`` or a ``Supervisor``)."""
    args: tuple[Any, ...] = ()
    """Positional arguments for the constructor."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for the constructor."""
    restart: Restart = Restart.PERMANENT
    """Restart type."""
    shutdown_timeout_s: float = 5.0
    """How long the child may take to stop before it is abandoned."""
    start_timeout_s: float = 10.0
    """How long the child may take to start before the start counts as failed."""
    heartbeat_s: float | None = None
    """Opt-in heartbeat period; a child that does not answer within ``heartbeat_timeout_s``
    is treated as hung: abandoned and replaced."""
    heartbeat_timeout_s: float = 2.0
    """How long a heartbeat may go unanswered."""


@dataclass(frozen=True)
class Backoff:
    """Delay between restarts: exponential, jittered, capped, reset after a stable period."""

    initial_s: float = 0.1
    """Delay before the first restart (before jitter)."""
    maximum_s: float = 30.0
    """Cap on any delay."""
    multiplier: float = 2.0
    """Growth per consecutive attempt."""
    jitter_s: float = 0.1
    """Uniform random jitter added, up to this many seconds (still capped)."""
    reset_after_s: float = 30.0
    """A child up this long before it exits starts again from ``initial_s``."""

    def wait(self) -> tenacity.wait.wait_base:
        """The tenacity wait object that computes the delays."""
        exponential = tenacity.wait_exponential(
            multiplier=self.initial_s, max=self.maximum_s, exp_base=self.multiplier
        )
        return exponential + tenacity.wait_random(0, self.jitter_s)

    def delay(self, attempt: int) -> float:
        """Delay before restart attempt ``attempt`` (1-based)."""
        if self.maximum_s <= 0:
            return 0.0
        state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        return min(float(self.wait()(state)), self.maximum_s)


NO_BACKOFF = Backoff(initial_s=0.0, maximum_s=0.0, jitter_s=0.0)
"""Restart at once."""
