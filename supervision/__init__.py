"""The supervision kernel: supervisors, child specs, restart strategies, backoff, the name
registry and the publish/subscribe bus. It knows nothing about trading."""

from __future__ import annotations

from supervision._actor import ChildContext, FatalError, SupervisedActor
from supervision._fence import Fence, TreeFate, bind_fence, current_fence, new_token
from supervision._messages import (
    SUPERVISION_TOPIC,
    ChildAbandoned,
    ChildExited,
    ChildInfo,
    ChildRestarting,
    ChildStarted,
    ChildState,
    Ping,
    Pong,
    SupervisorGaveUp,
    SupervisorStatus,
    TreeHealth,
)
from supervision._registry import Bus, Registry, bus, registry
from supervision._scheduler import Scheduler, TimerHandle, scheduler
from supervision._spec import NO_BACKOFF, Backoff, ChildSpec, Restart, Strategy
from supervision._supervisor import (
    RESTART_LOG_LIMIT,
    GetSupervisorStatus,
    HealthCheck,
    ListChildren,
    RequestStop,
    RestartLog,
    SupervisionError,
    Supervisor,
    SupervisorGaveUpError,
)
from supervision._tree import Tree

__all__ = [
    "NO_BACKOFF",
    "RESTART_LOG_LIMIT",
    "SUPERVISION_TOPIC",
    "Backoff",
    "Bus",
    "ChildAbandoned",
    "ChildContext",
    "ChildExited",
    "ChildInfo",
    "ChildRestarting",
    "ChildSpec",
    "ChildStarted",
    "ChildState",
    "FatalError",
    "Fence",
    "GetSupervisorStatus",
    "HealthCheck",
    "ListChildren",
    "Ping",
    "Pong",
    "Registry",
    "RequestStop",
    "Restart",
    "RestartLog",
    "Scheduler",
    "Strategy",
    "SupervisedActor",
    "SupervisionError",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorGaveUpError",
    "SupervisorStatus",
    "TimerHandle",
    "Tree",
    "TreeFate",
    "TreeHealth",
    "bind_fence",
    "bus",
    "current_fence",
    "new_token",
    "registry",
    "scheduler",
]
