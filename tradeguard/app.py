"""The application: builds the supervision tree of ARCHITECTURE §2 from settings, starts it
behind the start barrier, watches its health and stops it with the shutdown policy."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import pykka
from loguru import logger

from actors.connectors.plugins import connector_class
from actors.dashboard import Dashboard
from actors.errors import JournalError, TradeguardError
from actors.failsafe import Failsafe, GetFailsafeState
from actors.journal import Journal
from actors.order_entry import CLIENT_API_ACTOR, FIX_GATEWAY_ACTOR
from actors.order_entry.api import ClientApi
from actors.order_entry.fix_gateway import FixGateway
from actors.position_keeper import GetPortfolio, PositionKeeper
from actors.risk_governor import GetRiskState, RiskGovernor, Shutdown
from actors.safety_monitor import SafetyMonitor
from actors.strategies import strategy_class
from messages import CancelAll, FlattenRequested, Mode, now_ns
from supervision import (
    Backoff,
    ChildSpec,
    Restart,
    Strategy,
    SupervisionError,
    Supervisor,
    Tree,
    registry,
)
from tradeguard import systemd
from tradeguard.control import send_command
from tradeguard.settings import Settings
from venues.paper import stop_paper_venues

log = logger.bind(channel="main")

LOCK_FILE = "tradeguard.lock"
"""Held (``flock``) by the one running instance of a state directory; holds its pid."""


class StateDirError(TradeguardError):
    """The state directory cannot be used: it cannot be created or written to."""


class StateDirLocked(StateDirError):
    """Another running instance holds the state directory."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "another process (its pid is not written yet)"
        super().__init__(f"state directory {state_dir} is in use by {holder}; "
                         f"one instance per state directory")
        self.pid = pid


class StateLock:
    """The exclusive lock of one state directory, for the life of the running service.

    ``acquire`` creates the directory (owner only), proves it writable, and takes an
    ``flock`` on its lock file, which then holds our pid. The kernel drops the lock when
    the process ends, however it ends (SIGKILL included), so a stale lock file never
    blocks a restart. Two services on one directory would both trade one account and
    fight over its control socket and journal; the second is refused instead.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock; raises ``StateDirLocked`` naming the holder's pid, or
        ``StateDirError`` when the directory cannot be created or written."""
        where = self.state_dir
        try:
            where.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"state directory {where}: cannot create it: {_why(exc)}") from exc
        if not where.is_dir():
            raise StateDirError(f"state directory {where}: not a directory")
        try:
            probe, probe_path = tempfile.mkstemp(prefix=".write-probe-", dir=where)
            os.close(probe)
            os.unlink(probe_path)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirError(f"state directory {where}: not writable: {_why(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateDirLocked(where, self._wait_for_holder()) from exc
            raise StateDirError(f"state directory {where}: cannot lock {LOCK_FILE}: {_why(exc)}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def holder(self) -> int | None:
        """The pid written in the lock file, if any."""
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _wait_for_holder(self, within_s: float = 1.0) -> int | None:
        # The holder writes its pid just after it takes the lock: give it a moment.
        deadline = time.monotonic() + within_s
        while (pid := self.holder()) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return pid

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with a new holder)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _reading_keeper_journal(config: Any, journal_name: str) -> Any:
    """A connector that reads the journal at start (its ``journal`` setting: the FIX
    connector learns the open orders to query) reads the position keeper's
    (``keeper.journal_name``), unless its own section names another file."""
    if not isinstance(config, msgspec.Struct):
        return config
    field = next((f for f in msgspec.structs.fields(config) if f.name == "journal"), None)
    current: object = getattr(config, field.name) if field is not None else None
    if field is None or current != field.default:
        return config
    return msgspec.structs.replace(config, journal=journal_name)


def build_tree(settings: Settings, state_dir: Path, *, on_escalation: Any = None,
               health_check: Any = None) -> Tree:
    """The tree: keeper, governor, failsafe, safety monitor, connectors, strategies,
    dashboard; rest_for_one at the root, one_for_one below."""
    sup = settings.supervision
    backoff = Backoff(initial_s=sup.backoff_initial_s, maximum_s=sup.backoff_max_s,
                      multiplier=sup.backoff_multiplier, jitter_s=sup.backoff_jitter_s,
                      reset_after_s=sup.reset_after_s)
    beat: dict[str, Any] = {"heartbeat_s": sup.heartbeat_s, "heartbeat_timeout_s": sup.heartbeat_timeout_s}
    venues = settings.venues()
    names = tuple(venues)
    connectors = [
        ChildSpec(name=c.name, actor_class=connector_class(c.kind),
                  args=(_reading_keeper_journal(c, settings.keeper.journal_name), state_dir),
                  start_timeout_s=c.connect_timeout_s + 10.0)
        for c in settings.connector_configs()
    ]
    strategies = [
        ChildSpec(name=s.name, actor_class=strategy_class(s.kind), args=(s,), restart=Restart.PERMANENT)
        for s in settings.strategy_configs()
    ]
    order_entry = []
    if settings.order_entry.api:
        order_entry.append(ChildSpec(name=CLIENT_API_ACTOR, actor_class=ClientApi, args=(state_dir,)))
    if settings.order_entry.fix is not None:
        order_entry.append(ChildSpec(name=FIX_GATEWAY_ACTOR, actor_class=FixGateway,
                                     args=(settings.order_entry.fix, state_dir, venues)))
    children = [
        ChildSpec(name="position_keeper", actor_class=PositionKeeper,
                  args=(settings.keeper, state_dir), **beat),
        ChildSpec(name="risk_governor", actor_class=RiskGovernor,
                  args=(settings.risk, state_dir, venues),
                  kwargs={"journal_name": settings.keeper.journal_name,
                          "session_boundary": settings.keeper.session_boundary}, **beat),
        ChildSpec(name="failsafe", actor_class=Failsafe,
                  args=(settings.failsafe, state_dir, names),
                  kwargs={"journal_path": state_dir / settings.keeper.journal_name}, **beat),
        ChildSpec(name="safety_monitor", actor_class=SafetyMonitor,
                  args=(settings.safety, state_dir),
                  kwargs={"journal_path": state_dir / settings.keeper.journal_name}, **beat),
        ChildSpec(name="connectors", actor_class=Supervisor, args=(connectors,),
                  kwargs={"strategy": Strategy.ONE_FOR_ONE, "intensity": sup.connectors_intensity,
                          "period_s": sup.connectors_period_s, "backoff": backoff},
                  shutdown_timeout_s=15.0),
        ChildSpec(name="strategies", actor_class=Supervisor, args=(strategies,),
                  kwargs={"strategy": Strategy.ONE_FOR_ONE, "backoff": backoff},
                  shutdown_timeout_s=10.0),
        *([ChildSpec(name="order_entry", actor_class=Supervisor, args=(order_entry,),
                     kwargs={"strategy": Strategy.ONE_FOR_ONE, "backoff": backoff},
                     shutdown_timeout_s=10.0)] if order_entry else []),
        ChildSpec(name="dashboard", actor_class=Dashboard,
                  args=(settings.dashboard, state_dir, names),
                  kwargs={"health_check": health_check}),
    ]
    return Tree(children, name="root", strategy=Strategy.REST_FOR_ONE,
                intensity=sup.root_intensity, period_s=sup.root_period_s, backoff=backoff,
                on_escalation=on_escalation)


class Service:
    """One running tradeguard: the tree plus what the process does around it."""

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.escalated = threading.Event()
        self.escalation_reason = ""
        self._probe_lock = threading.Lock()
        self._control_ok = False
        self._control_checked = 0.0
        # The status the dashboard serves reports the tree's health: that it is answering
        # already shows its socket does (and probing it from its own thread would deadlock).
        self.tree = build_tree(settings, self.state_dir, on_escalation=self._on_escalation,
                               health_check=self.tree_healthy)

    def _on_escalation(self, reason: str) -> None:
        self.escalation_reason = reason
        log.critical(f"the supervision tree gave up: {reason}")
        self._latch_failsafe(reason)
        self.escalated.set()

    def _latch_failsafe(self, reason: str) -> None:
        """Journal the FAILSAFE latch: the tree that would flatten is gone, so the next start
        comes up latched and flattens (positions may be open; trading must not resume)."""
        try:
            with Journal(self.state_dir / self.settings.keeper.journal_name) as journal:
                last = journal.last_mode()
                if last is not Mode.FAILSAFE:
                    journal.record_mode(last or Mode.STARTUP, Mode.FAILSAFE,
                                        f"the supervision tree gave up: {reason}", now_ns())
            log.critical("FAILSAFE latched in the journal: the next start flattens")
        except JournalError as exc:
            log.critical(f"the FAILSAFE latch could not be journaled: {exc}")

    def start(self) -> None:
        """Start the tree; returns once every permanent child runs and the control socket
        answers (what READY=1 promises), else raises ``SupervisionError``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        timeout_s = self.settings.service.start_timeout_s
        deadline = time.monotonic() + timeout_s
        self.tree.start(timeout_s=timeout_s)
        while not self.control_answers(max_age_s=0.0):
            if time.monotonic() >= deadline:
                raise SupervisionError(f"the control socket did not answer within {timeout_s}s")
            time.sleep(0.05)  # outside the actor system: the process's own start sequence
        log.info(f"tradeguard started (state {self.state_dir})")

    def healthy(self) -> bool:
        """What the watchdog is fed on: not escalated, every permanent child running,
        nothing crash-looping (``Tree.health``), and the control socket answers."""
        return self.tree_healthy() and self.control_answers()

    def tree_healthy(self) -> bool:
        """Not escalated, and ``Tree.health`` says healthy: every permanent child runs,
        nothing crash-loops, no ``BaseException`` ended the tree."""
        return not self.escalated.is_set() and self.tree.healthy(timeout_s=1.0)

    def control_answers(self, max_age_s: float = 0.5) -> bool:
        """The operator control socket answers a status request (a result at most
        ``max_age_s`` old is reused). Called while another probe is under way, it returns
        the last result rather than wait."""
        if not self._probe_lock.acquire(blocking=False):
            return self._control_ok
        try:
            if time.monotonic() - self._control_checked > max_age_s:
                try:
                    send_command(self.state_dir, "status", timeout_s=2.0)
                    self._control_ok = True
                except Exception:  # any failure to get an answer is "does not answer"
                    self._control_ok = False
                self._control_checked = time.monotonic()
            return self._control_ok
        finally:
            self._probe_lock.release()

    def ask(self, name: str, message: Any, timeout_s: float = 2.0) -> Any:
        """Ask an actor by name from outside the actor system; None when it is down."""
        ref = registry.lookup(name)
        if ref is None:
            return None
        try:
            return ref.ask(message, timeout=timeout_s)
        except (pykka.Timeout, pykka.ActorDeadError):
            return None

    def status_line(self) -> str:
        """A short status for systemd: mode, connectors up, open positions."""
        risk = self.ask("risk_governor", GetRiskState()) or {}
        portfolio = self.ask("position_keeper", GetPortfolio())
        open_positions = sum(1 for p in portfolio.positions if p.quantity != 0) if portfolio else 0
        up = len(risk.get("connectors_up", []))
        return (f"mode {risk.get('mode', '?')}, connectors up {up}/{len(self.settings.venues())}, "
                f"open positions {open_positions}")

    def stop(self, policy: str | None = None) -> None:
        """Stop with the shutdown policy: leave, cancel every working order, or flatten."""
        policy = policy or self.settings.service.on_shutdown
        deadline = time.monotonic() + self.settings.service.shutdown_timeout_s
        try:
            if policy == "flatten":
                self._flatten_before_stop(deadline)
            elif policy == "cancel" and (self.ask("failsafe", GetFailsafeState()) or {}).get("running"):
                # A mass cancel now would cancel the failsafe's closing orders: its rounds under
                # way finish first (up to the deadline); a run cut short is written down by the
                # failsafe as interrupted.
                log.warning("shutdown cancel skipped: a failsafe run is under way")
                self._wait_for_failsafe(deadline, 0)
            elif policy == "cancel":
                for venue in self.settings.venues():
                    self.ask(venue, CancelAll(venue=venue, source="shutdown", request_id="shutdown"))
            self.ask("risk_governor", Shutdown(reason=f"service stopping (on_shutdown={policy})"))
        finally:
            remaining = max(5.0, deadline - time.monotonic())
            systemd.extend_timeout(2 * remaining + 5.0)  # the stop asks, then waits, each up to this
            try:
                self.tree.stop(timeout_s=remaining)
            except SupervisionError as exc:
                # Its actors are fenced and run on daemon threads: the process still exits.
                log.critical(f"the supervision tree did not stop cleanly: {exc}")
            stop_paper_venues()
            log.info("tradeguard stopped")

    def _flatten_before_stop(self, deadline: float) -> None:
        if not self.tree.is_alive():
            log.critical("shutdown flatten impossible: the supervision tree is not running")
            return
        systemd.extend_timeout(max(1.0, deadline - time.monotonic()) + 5.0)
        asked_ns = now_ns()
        registry.tell("failsafe", FlattenRequested(reason="shutdown with on_shutdown=flatten",
                                                   source="shutdown", ts_ns=asked_ns))
        if not self._wait_for_failsafe(deadline, asked_ns):
            log.critical("shutdown flatten did not finish before the shutdown timeout")

    def _wait_for_failsafe(self, deadline: float, since_ns: int) -> bool:
        """Wait until the failsafe reports an outcome made at or after ``since_ns`` (with 0:
        until no round of its run is under way); False at the deadline."""
        next_extend = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            state = self.ask("failsafe", GetFailsafeState()) or {}
            report = state.get("last_report") or {}
            if (report.get("ts_ns", 0) >= since_ns > 0) if since_ns else not state.get("rounds_under_way"):
                log.info(f"shutdown: the failsafe run ended: {report.get('detail')}")
                return True
            if time.monotonic() >= next_extend:
                # Keep systemd's stop timeout ahead of us while the flatten runs.
                next_extend = time.monotonic() + 1.0
                systemd.extend_timeout(5.0)
            time.sleep(0.1)  # outside the actor system: the process's own stop sequence
        return False
