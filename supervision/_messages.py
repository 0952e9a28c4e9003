"""Messages of the supervision kernel: notices between supervisors and children, and the
events a supervisor publishes on the ``supervision`` topic."""

from __future__ import annotations

import enum

import msgspec

SUPERVISION_TOPIC = "supervision"
"""Bus topic on which every supervisor publishes what happens to its children."""


class ChildState(enum.StrEnum):
    """Where a child is in its life, as its supervisor sees it."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    ABANDONED = "abandoned"


class KernelMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every kernel message."""


class ChildStarted(KernelMessage, frozen=True, kw_only=True):
    """A child finished starting (its setup succeeded); sent by the child to its supervisor
    and published on the supervision topic."""

    supervisor: str
    """Name of the supervisor."""
    name: str
    """Name of the child."""
    generation: int
    """The child's generation (0 for the first start, +1 per restart)."""


class ChildExited(KernelMessage, frozen=True, kw_only=True):
    """A child stopped; sent by the child (or found by the liveness poll) and published."""

    supervisor: str
    """Name of the supervisor."""
    name: str
    """Name of the child."""
    generation: int
    """Generation of the child that exited; a notice from an old generation is ignored."""
    abnormal: bool
    """True for a crash, a failed start, a hang or a death without notice."""
    reason: str = ""
    """Why, in words."""


class ChildRestarting(KernelMessage, frozen=True, kw_only=True):
    """A supervisor scheduled a restart of a child."""

    supervisor: str
    """Name of the supervisor."""
    name: str
    """Name of the child."""
    delay_s: float
    """Backoff before the restart, seconds."""
    attempt: int
    """Consecutive restart attempt (1 after a stable period)."""


class ChildAbandoned(KernelMessage, frozen=True, kw_only=True):
    """A child did not stop in time, or stopped answering heartbeats: its thread is left
    behind (threads cannot be killed), its name unregistered, and it is replaced."""

    supervisor: str
    """Name of the supervisor."""
    name: str
    """Name of the child."""
    generation: int
    """Generation abandoned."""
    reason: str
    """Why, in words."""


class SupervisorGaveUp(KernelMessage, frozen=True, kw_only=True):
    """A supervisor exceeded its restart intensity and stopped its children."""

    supervisor: str
    """Name of the supervisor."""
    reason: str
    """Why, in words."""


class Ping(KernelMessage, frozen=True, kw_only=True):
    """Heartbeat from a supervisor to a child."""

    seq: int
    """Heartbeat number, echoed in the ``Pong``."""


class Pong(KernelMessage, frozen=True, kw_only=True):
    """A child's answer to ``Ping``."""

    name: str
    """Name of the child."""
    generation: int
    """Generation of the child answering."""
    seq: int
    """The ``Ping.seq`` answered."""


class ChildInfo(KernelMessage, frozen=True, kw_only=True):
    """One row of a supervisor's children listing."""

    name: str
    """Name of the child."""
    state: ChildState
    """Where the child is in its life."""
    generation: int
    """Current generation."""
    restarts: int
    """Restarts since the supervisor started."""
    last_exit_reason: str
    """Why the child last exited; empty if it never has."""
    restart_type: str
    """permanent, transient or temporary."""
    is_supervisor: bool
    """True when the child is itself a supervisor."""


class SupervisorStatus(KernelMessage, frozen=True, kw_only=True):
    """A supervisor's answer to ``GetSupervisorStatus``: what health and readiness are
    judged on."""

    supervisor: str
    """Name of the supervisor."""
    running: bool
    """True while it supervises: not stopping, not given up, its tree not fatal."""
    not_running: tuple[str, ...]
    """Permanent children that are not running, each as ``name (state): last exit``."""
    supervisors: tuple[str, ...]
    """Children that are themselves supervisors and are running (to look at in turn)."""
    restarts_in_period: int
    """Restarts within the last ``period_s``."""
    intensity: int
    """Restarts allowed within ``period_s`` before it gives up."""
    period_s: float
    """The intensity window, seconds."""
    crash_looping: bool
    """More than half of ``intensity`` used within the current period."""
    last_restarted: str
    """The child restarted last; empty if none was."""


class TreeHealth(KernelMessage, frozen=True, kw_only=True):
    """The whole tree, judged from outside it (``Tree.health``)."""

    ready: bool
    """Every supervisor runs and every permanent child below the root is running."""
    crash_looping: tuple[str, ...]
    """Supervisors that used more than half their restart intensity in the current period."""
    problems: tuple[str, ...]
    """Why the tree is not ready or not healthy, in words; empty when healthy."""
    fatal: str = ""
    """The ``BaseException`` that ended the tree (what and where); empty if none did."""

    @property
    def healthy(self) -> bool:
        """Ready, not fatal and nothing crash-looping: the condition for feeding a watchdog."""
        return self.ready and not self.crash_looping and not self.fatal
