"""The Supervisor actor: OTP's supervisor semantics with Akka-style backoff, on Pykka.

A supervisor never blocks waiting for a child to start: a child tells ``ChildStarted``
when its setup is done, and the next child of the start barrier is started only then. A
restart is a timer that tells the supervisor, so it keeps answering during backoff.
Stopping is the only blocking step: children are stopped in reverse order, each given
its shutdown timeout, and one that overruns is abandoned.

A ``BaseException`` in any actor of a tree is fatal to that tree (not to the process):
the actor declares it on the tree's ``TreeFate``, the root calls its escalation handler at
once from that thread (naming the exception and the actor), no supervisor restarts
anything from then on, and the root stops its children in reverse order, each within its
shutdown timeout (a hung one is abandoned), then itself. Nothing waits on Pykka's
stop-all, which would wait forever for a hung actor.

Every generation has a fence (``supervision._fence``): drained when its supervisor asks it
to stop, so queued messages become dead letters, and closed once it stopped or was
abandoned, so a thread that wakes up later can no longer reach the registry or the bus.
Registration tokens are unique in the process, so an old generation (or an old
supervisor's late clean-up) can never unregister a newer one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pykka
from loguru import logger

from supervision._actor import ChildContext, Handler, SupervisedActor, _set_starting_context
from supervision._fence import Fence, TreeFate, new_token
from supervision._messages import (
    SUPERVISION_TOPIC,
    ChildAbandoned,
    ChildExited,
    ChildInfo,
    ChildRestarting,
    ChildStarted,
    ChildState,
    KernelMessage,
    Ping,
    Pong,
    SupervisorGaveUp,
    SupervisorStatus,
)
from supervision._registry import bus, registry
from supervision._scheduler import TimerHandle, scheduler
from supervision._spec import Backoff, ChildSpec, Restart, Strategy


class SupervisionError(Exception):
    """Base of the kernel's errors."""


class SupervisorGaveUpError(SupervisionError):
    """Raised inside a supervisor that exceeded its restart intensity, so it exits
    abnormally and its own supervisor sees a failed child."""


class ListChildren(KernelMessage, frozen=True, kw_only=True):
    """Ask: the supervisor's children with state, generation, restarts, last exit."""


class RestartLog(KernelMessage, frozen=True, kw_only=True):
    """Ask: every restart the supervisor scheduled, as (name, attempt, delay_s)."""


class HealthCheck(KernelMessage, frozen=True, kw_only=True):
    """Ask: True while the supervisor is running and has not given up."""


class GetSupervisorStatus(KernelMessage, frozen=True, kw_only=True):
    """Ask: the supervisor's ``SupervisorStatus``."""


RESTART_LOG_LIMIT = 1_000
"""Restarts kept in a supervisor's restart log (the oldest are forgotten)."""


class _Fatal(KernelMessage, frozen=True, kw_only=True):
    reason: str


class _Poll(KernelMessage, frozen=True, kw_only=True):
    pass


class _RestartDue(KernelMessage, frozen=True, kw_only=True):
    owner: str
    names: tuple[str, ...]
    token: int


class RequestStop(KernelMessage, frozen=True, kw_only=True):
    """Ask: mark the coming stop as requested, so a root does not escalate it."""


class _StartDeadline(KernelMessage, frozen=True, kw_only=True):
    name: str
    generation: int


class _HeartbeatDue(KernelMessage, frozen=True, kw_only=True):
    name: str
    generation: int


class _HeartbeatDeadline(KernelMessage, frozen=True, kw_only=True):
    name: str
    generation: int
    seq: int


@dataclass
class _Child:
    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None = None
    generation: int = -1
    state: ChildState = ChildState.STOPPED
    restarts: int = 0
    attempt: int = 0
    last_exit_reason: str = ""
    started_at: float = 0.0
    ping_seq: int = 0
    pong_seq: int = 0
    restart_token: int = 0
    token: int = 0
    fence: Fence | None = None
    silent_since: float | None = None
    timers: list[TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class Supervisor(SupervisedActor):
    """Starts, watches and restarts its children.

    ``on_escalation`` is for a root supervisor: it is called (in the supervisor's thread)
    when the root gives up or is stopped without being asked. ``on_started`` is called
    once, when the first start barrier completes.
    """

    announce_started = False

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 3,
        period_s: float = 5.0,
        backoff: Backoff | None = None,
        poll_s: float = 0.5,
        name: str = "root",
        on_escalation: Callable[[str], None] | None = None,
        on_started: Callable[[], None] | None = None,
        fate: TreeFate | None = None,
        fence: Fence | None = None,
    ) -> None:
        super().__init__()
        if self.context.supervisor_ref is None:
            # A root: ``fate`` and ``fence`` let its owner (a ``Tree``) see them.
            self.context = ChildContext(name=name, fate=fate or TreeFate(), fence=fence or Fence())
            self.context.fate.listen(self._on_fate_declared)
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise SupervisionError(f"duplicate child names in {self.name}: {names}")
        self.strategy = strategy
        self.intensity = intensity
        self.period_s = period_s
        self.backoff = backoff or Backoff()
        self.poll_s = poll_s
        self._on_escalation = on_escalation
        self._on_started = on_started
        self._children: dict[str, _Child] = {spec.name: _Child(spec) for spec in children}
        self._order: list[str] = names
        self._barrier: list[str] = []
        self._initial_barrier = True
        self._restart_times: list[float] = []
        self._restart_log: deque[tuple[str, int, float]] = deque(maxlen=RESTART_LOG_LIMIT)
        self._last_restarted = ""
        self._stopping = False
        self._gave_up = False
        self._escalated = False
        self._escalation_lock = threading.Lock()
        self._poll_timer: TimerHandle | None = None
        self._log = logger.bind(channel="main", supervisor=self.name)

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        if self.context.supervisor_ref is None:
            registry.register(self.name, self.actor_ref, 0, token=self.context.token)
        self._barrier = list(self._order)
        self._advance_barrier()
        self._schedule_poll()

    def teardown(self) -> None:
        self._stopping = True
        if self._poll_timer is not None:
            self._poll_timer.cancel()
        self._stop_children(list(reversed(self._order)))
        if self.context.supervisor_ref is None:
            registry.unregister(self.name, token=self.context.token)

    def on_stop(self) -> None:
        unexpected = not self._stopping and self.context.supervisor_ref is None
        super().on_stop()
        if unexpected and not self._gave_up:
            # Only a root can be stopped behind its back: Pykka's stop-all after a
            # BaseException, or a stray stop(). Nobody above it would notice.
            self._escalate("root supervisor stopped without a stop request")

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        root = self.context.supervisor_ref is None
        super().on_failure(exception_type, exception_value, traceback)
        if root and not self._gave_up:
            self._escalate(f"root supervisor failed: {exception_value!r}")

    def handlers(self) -> dict[type, Handler]:
        return {
            ChildStarted: self._on_child_started,
            ChildExited: self._on_child_exited,
            Pong: self._on_pong,
            _Poll: self._on_poll,
            _RestartDue: self._on_restart_due,
            _StartDeadline: self._on_start_deadline,
            _HeartbeatDue: self._on_heartbeat_due,
            _HeartbeatDeadline: self._on_heartbeat_deadline,
            ListChildren: self._on_list_children,
            RestartLog: lambda _m: list(self._restart_log),
            HealthCheck: lambda _m: self._running(),
            GetSupervisorStatus: self._on_status,
            RequestStop: self._on_request_stop,
            _Fatal: self._on_fatal,
        }

    def _running(self) -> bool:
        return not self._gave_up and not self._stopping and not self.context.fate.is_set()

    def _on_request_stop(self, _message: RequestStop) -> bool:
        self._stopping = True
        return True

    # ---- starting -------------------------------------------------------------------

    def _advance_barrier(self) -> None:
        while self._barrier and not self._stopping:
            child = self._children[self._barrier[0]]
            if child.state is ChildState.RUNNING:
                self._barrier.pop(0)
                continue
            if child.state is ChildState.STARTING:
                return  # wait for its ChildStarted or ChildExited
            if self._start(child):
                return
            # the start failed at once: _child_down took it off the barrier
        if not self._barrier and self._initial_barrier and not self._stopping:
            self._initial_barrier = False
            self.notify_started()
            if self._on_started is not None:
                self._on_started()

    def _start(self, child: _Child) -> bool:
        """Start ``child``; False when it failed at once (its exit is already handled)."""
        spec = child.spec
        child.cancel_timers()
        child.silent_since = None
        child.generation += 1
        child.token = new_token()
        child.fence = Fence(parent=self.context.fence)
        child.ping_seq = child.pong_seq = 0
        context = ChildContext(
            name=spec.name,
            generation=child.generation,
            supervisor=self.name,
            supervisor_ref=self.actor_ref,
            token=child.token,
            fence=child.fence,
            fate=self.context.fate,
        )
        _set_starting_context(context)
        try:
            child.ref = spec.actor_class.start(*spec.args, **dict(spec.kwargs))
        except Exception as exc:
            _set_starting_context(None)
            child.ref = None
            child.state = ChildState.STARTING
            self._child_down(child, abnormal=True, reason=f"constructor failed: {exc!r}")
            return False
        _set_starting_context(None)
        registry.register(spec.name, child.ref, child.generation, token=child.token)
        child.state = ChildState.STARTING
        deadline = _StartDeadline(name=spec.name, generation=child.generation)
        self._after(child, spec.start_timeout_s, deadline)
        return True

    def _on_child_started(self, notice: ChildStarted) -> None:
        child = self._children.get(notice.name)
        if child is None or notice.generation != child.generation or child.state is not ChildState.STARTING:
            return
        child.cancel_timers()
        child.state = ChildState.RUNNING
        child.started_at = time.monotonic()
        bus.publish(SUPERVISION_TOPIC, notice)
        if child.spec.heartbeat_s:
            beat = _HeartbeatDue(name=notice.name, generation=child.generation)
            self._after(child, child.spec.heartbeat_s, beat)
        self._advance_barrier()

    def _on_start_deadline(self, due: _StartDeadline) -> None:
        child = self._children.get(due.name)
        if child is None or due.generation != child.generation or child.state is not ChildState.STARTING:
            return
        self._abandon(child, f"did not start within {child.spec.start_timeout_s}s")
        self._advance_barrier()

    # ---- exits and restarts -----------------------------------------------------------

    def _on_child_exited(self, notice: ChildExited) -> None:
        child = self._children.get(notice.name)
        if child is None or notice.generation != child.generation:
            return  # a late notice from an old generation
        if child.state not in (ChildState.STARTING, ChildState.RUNNING) or self._stopping:
            return
        self._child_down(child, abnormal=notice.abnormal, reason=notice.reason)
        self._advance_barrier()

    def _child_down(self, child: _Child, *, abnormal: bool, reason: str) -> None:
        name = child.spec.name
        was_up_s = time.monotonic() - child.started_at if child.state is ChildState.RUNNING else 0.0
        child.cancel_timers()
        child.state = ChildState.STOPPED
        child.last_exit_reason = reason
        if child.fence is not None:
            child.fence.close(f"exited: {reason}")
        registry.unregister(name, token=child.token)
        self._log.bind(child=name, generation=child.generation, abnormal=abnormal).log(
            "WARNING" if abnormal else "INFO", f"child {name} exited: {reason}"
        )
        bus.publish(
            SUPERVISION_TOPIC,
            ChildExited(supervisor=self.name, name=name, generation=child.generation,
                        abnormal=abnormal, reason=reason),
        )
        if self.context.fate.is_set():
            # A BaseException ended the tree: it is going down, nothing is restarted.
            self._drop_from_barrier([name])
            return
        if not self._should_restart(child.spec, abnormal):
            self._drop_from_barrier([name])
            return
        now = time.monotonic()
        self._restart_times = [t for t in self._restart_times if now - t <= self.period_s]
        self._restart_times.append(now)
        if len(self._restart_times) > self.intensity:
            self._give_up(
                f"{len(self._restart_times)} restarts within {self.period_s}s "
                f"(intensity {self.intensity}); last: {name}: {reason}"
            )
            return
        child.attempt = 1 if was_up_s >= self.backoff.reset_after_s else child.attempt + 1
        delay = self.backoff.delay(child.attempt)
        affected = self._restart_group(name)
        # Temporary siblings are stopped with the others, never started again.
        group = [n for n in affected if n == name or self._children[n].spec.restart != Restart.TEMPORARY]
        self._stop_children([n for n in reversed(affected) if n != name])
        self._drop_from_barrier(affected)
        token = child.restart_token = child.restart_token + 1
        for member in group:
            self._children[member].state = ChildState.BACKOFF
        self._restart_log.append((name, child.attempt, delay))
        self._last_restarted = name
        bus.publish(
            SUPERVISION_TOPIC,
            ChildRestarting(supervisor=self.name, name=name, delay_s=delay, attempt=child.attempt),
        )
        due = _RestartDue(owner=name, names=tuple(group), token=token)
        child.timers.append(scheduler.call_later(delay, self._teller(due)))

    def _should_restart(self, spec: ChildSpec, abnormal: bool) -> bool:
        if spec.restart == Restart.PERMANENT:
            return True
        return spec.restart == Restart.TRANSIENT and abnormal

    def _restart_group(self, name: str) -> list[str]:
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [name]
        index = self._order.index(name)
        return list(self._order if self.strategy is Strategy.ONE_FOR_ALL else self._order[index:])

    def _on_restart_due(self, due: _RestartDue) -> None:
        if self._stopping or self._gave_up or self.context.fate.is_set():
            return
        if self._children[due.owner].restart_token != due.token:
            return  # superseded by a later restart
        for name in due.names:
            child = self._children[name]
            if child.state is ChildState.BACKOFF:
                child.restarts += 1
                if name not in self._barrier:
                    self._barrier.append(name)
        self._barrier.sort(key=self._order.index)
        self._advance_barrier()

    def _drop_from_barrier(self, names: Sequence[str]) -> None:
        self._barrier = [n for n in self._barrier if n not in names]

    def _give_up(self, reason: str) -> None:
        self._gave_up = True
        self._log.error(f"supervisor {self.name} gives up: {reason}")
        self._stopping = True
        self._stop_children(list(reversed(self._order)))
        bus.publish(SUPERVISION_TOPIC, SupervisorGaveUp(supervisor=self.name, reason=reason))
        if self.context.supervisor_ref is not None:
            raise SupervisorGaveUpError(reason)
        self._escalate(reason)
        self.actor_ref.tell(pykka.messages._ActorStop())  # stop after this handler

    def _escalate(self, reason: str) -> None:
        """Call the escalation handler, once for the life of this root (any thread)."""
        with self._escalation_lock:
            if self._escalated:
                return
            self._escalated = True
        if self._on_escalation is None:
            self._log.critical(f"root supervisor {self.name} escalates with no handler: {reason}")
            return
        try:
            self._on_escalation(reason)
        except Exception:
            self._log.exception("escalation handler failed")

    # ---- stopping -------------------------------------------------------------------

    def _stop_children(self, names: Sequence[str]) -> None:
        for name in names:
            child = self._children[name]
            child.cancel_timers()
            if child.ref is None or child.state in (ChildState.STOPPED, ChildState.ABANDONED):
                if child.state is not ChildState.ABANDONED:
                    child.state = ChildState.STOPPED
                continue
            ref, child.state = child.ref, ChildState.STOPPED
            if child.fence is not None:
                child.fence.drain("stopped by its supervisor")
            try:
                ref.stop(block=False).get(timeout=child.spec.shutdown_timeout_s)
            except pykka.Timeout:
                self._abandon(child, f"did not stop within {child.spec.shutdown_timeout_s}s", restart=False)
            except pykka.ActorDeadError:
                pass
            if child.fence is not None:
                child.fence.close("stopped by its supervisor")
            registry.unregister(name, token=child.token)

    def _abandon(self, child: _Child, reason: str, *, restart: bool = True) -> None:
        """Give up on a thread that cannot be killed: forget it and (maybe) replace it."""
        ref = child.ref
        if child.fence is not None:
            child.fence.close(f"abandoned: {reason}")
        if ref is not None:
            pykka.ActorRegistry.unregister(ref)
            try:
                ref.tell(pykka.messages._ActorStop())  # runs if it ever wakes
            except pykka.ActorDeadError:
                pass
        registry.unregister(child.spec.name, token=child.token)
        self._log.bind(child=child.spec.name).error(f"child {child.spec.name} abandoned: {reason}")
        bus.publish(
            SUPERVISION_TOPIC,
            ChildAbandoned(supervisor=self.name, name=child.spec.name,
                           generation=child.generation, reason=reason),
        )
        if restart:
            self._child_down(child, abnormal=True, reason=f"abandoned: {reason}")
        else:
            child.state = ChildState.ABANDONED

    # ---- watching -------------------------------------------------------------------

    def _schedule_poll(self) -> None:
        if self.poll_s > 0 and not self._stopping:
            self._poll_timer = scheduler.call_later(self.poll_s, self._teller(_Poll()))

    def _on_poll(self, _message: _Poll) -> None:
        now = time.monotonic()
        for name in self._order:
            child = self._children[name]
            if child.state not in (ChildState.STARTING, ChildState.RUNNING) or child.ref is None \
                    or child.ref.is_alive():
                child.silent_since = None
                continue
            # Pykka marks an actor stopped before its on_stop runs: a slow teardown is not
            # yet a silent death. Without a notice within the shutdown timeout, it is one.
            if child.silent_since is None:
                child.silent_since = now
            elif now - child.silent_since >= child.spec.shutdown_timeout_s:
                child.silent_since = None
                self._child_down(child, abnormal=True, reason="died without notice")
        self._advance_barrier()
        self._schedule_poll()

    def _on_heartbeat_due(self, due: _HeartbeatDue) -> None:
        child = self._children.get(due.name)
        if child is None or child.generation != due.generation or child.state is not ChildState.RUNNING:
            return
        assert child.ref is not None and child.spec.heartbeat_s is not None
        child.ping_seq += 1
        try:
            child.ref.tell(Ping(seq=child.ping_seq))
        except pykka.ActorDeadError:
            return  # the poll will see it
        self._after(child, child.spec.heartbeat_timeout_s,
                    _HeartbeatDeadline(name=due.name, generation=due.generation, seq=child.ping_seq))
        self._after(child, child.spec.heartbeat_s, due)

    def _on_pong(self, pong: Pong) -> None:
        child = self._children.get(pong.name)
        if child is not None and pong.generation == child.generation:
            child.pong_seq = max(child.pong_seq, pong.seq)

    def _on_heartbeat_deadline(self, due: _HeartbeatDeadline) -> None:
        child = self._children.get(due.name)
        if child is None or child.generation != due.generation or child.state is not ChildState.RUNNING:
            return
        if child.pong_seq < due.seq:
            self._abandon(child, f"hung: no heartbeat answer within {child.spec.heartbeat_timeout_s}s")
            self._advance_barrier()

    # ---- a fatal tree -----------------------------------------------------------------

    def _on_fate_declared(self, reason: str) -> None:
        """A root's listener on its tree's fate, in the thread that met the exception."""
        self._escalate(f"fatal: {reason}")
        self._teller(_Fatal(reason=reason))()

    def _on_fatal(self, message: _Fatal) -> None:
        if self._stopping:
            return
        self._log.critical(f"tree {self.name} is going down: {message.reason}")
        self._stopping = True
        if self._poll_timer is not None:
            self._poll_timer.cancel()
        self._stop_children(list(reversed(self._order)))
        self.actor_ref.tell(pykka.messages._ActorStop())  # stop after this handler

    # ---- queries --------------------------------------------------------------------

    def _on_status(self, _message: GetSupervisorStatus) -> SupervisorStatus:
        now = time.monotonic()
        recent = sum(1 for t in self._restart_times if now - t <= self.period_s)
        not_running = tuple(
            f"{name} ({child.state}): {child.last_exit_reason or 'not started yet'}"
            for name, child in self._children.items()
            if child.spec.restart == Restart.PERMANENT and child.state is not ChildState.RUNNING
        )
        supervisors = tuple(
            name for name, child in self._children.items()
            if child.state is ChildState.RUNNING and issubclass(child.spec.actor_class, Supervisor)
        )
        return SupervisorStatus(
            supervisor=self.name, running=self._running(), not_running=not_running,
            supervisors=supervisors, restarts_in_period=recent, intensity=self.intensity,
            period_s=self.period_s, crash_looping=recent * 2 > self.intensity,
            last_restarted=self._last_restarted,
        )

    def _on_list_children(self, _message: ListChildren) -> list[ChildInfo]:
        return [
            ChildInfo(
                name=name,
                state=child.state,
                generation=max(child.generation, 0),
                restarts=child.restarts,
                last_exit_reason=child.last_exit_reason,
                restart_type=str(child.spec.restart),
                is_supervisor=issubclass(child.spec.actor_class, Supervisor),
            )
            for name, child in self._children.items()
        ]

    # ---- helpers --------------------------------------------------------------------

    def _after(self, child: _Child, delay_s: float, message: KernelMessage) -> None:
        now = time.monotonic()
        child.timers = [t for t in child.timers if not t.cancelled and t.due > now]
        child.timers.append(scheduler.call_later(delay_s, self._teller(message)))

    def _teller(self, message: KernelMessage) -> Callable[[], None]:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                pass

        return tell
