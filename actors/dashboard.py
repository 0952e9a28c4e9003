"""The dashboard: state snapshots out, authenticated operator commands in, over ZeroMQ.

Two sockets in the state directory, owner-only (the directory is 0700, the socket files
0600): ``dashboard.pub`` publishes the status document (``messages.status``) every
``publish_interval_s``, and ``control.sock`` answers JSON requests ``{"token", "verb",
"operator", "reason"}`` (``ControlRequest``) with a ``ControlReply``. A request without the
credential kept in ``control.token`` (0600), or with a wrong one, is refused and written to
the governance log; so is an unknown verb, a malformed or oversized request, or one of
the wrong shape. Every accepted command is audited there too.

Who sent a command is taken from the operating system, not from the request: ZeroMQ reads
the peer credentials of every ipc connection (``SO_PEERCRED``) and hands them over as the
message's ``Peer-Address`` property, ``<host>:<uid>:<gid>:<pid>``. The uid is looked up in
the password database; the client's own ``operator`` field is recorded as "claimed".

The control socket is a ROUTER, so no frame sequence can put it in a state where it must
not send (a REP socket raises EFSM after a multi-frame request and the thread died of it).
It is served by one thread the actor owns. That thread is outside the actor system, so it
may ``ask`` the governor, the position keeper and the failsafe for their state; the actor
itself only tells, and keeps what arrives on the bus (alerts, connector health, order
counts). The thread beats a ``ControlHealth`` every turn; the service's health check reads
it (``control_health``), and a thread that ends for good fails the actor, so the
supervisor restarts it with a fresh socket.
"""

from __future__ import annotations

import errno
import hmac
import os
import pwd
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import pykka
import zmq
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.errors import TradeguardError
from actors.log_budget import LogBudget, one_line, printable
from actors.order_entry.client_verbs import CLIENT_VERBS, handle_client_request
from messages import (
    ConnectorDown,
    ConnectorUp,
    FailsafeReport,
    FlattenRequested,
    GetFailsafeState,
    GetOrderCounts,
    GetPortfolio,
    GetReconciliations,
    GetRiskState,
    HealthReport,
    MessageError,
    Mode,
    ModeChanged,
    OperatorCommand,
    OperatorVerb,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderTotals,
    SafetyEvent,
    Severity,
    SubmitOrder,
    now_ns,
)
from messages.bounds import Interval
from messages.status import (
    Alert,
    ConnectorHealth,
    ConnectorStatus,
    ControlReply,
    ControlRequest,
    ControlStatus,
    DashboardState,
    FailsafeStatus,
    KeeperPositionStatus,
    OrderCounts,
    PnlStatus,
    PositionStatus,
    RiskStatus,
    StatusDocument,
    VenuePositionStatus,
)
from supervision import SUPERVISION_TOPIC, ChildExited, SupervisedActor, SupervisorGaveUp, bus, registry

TOKEN_FILE = "control.token"
CONTROL_SOCKET = "control.sock"
PUB_SOCKET = "dashboard.pub"
ASK_TIMEOUT_S = 2.0

MAX_REQUEST_BYTES = 64 * 1024
"""A request body larger than this is refused unread (a real one is a few hundred bytes)."""
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""ZeroMQ drops the connection of a peer that sends a larger frame (ZMQ_MAXMSGSIZE)."""
MAX_FRAMES = 16
"""Frames of one message kept for routing; the rest are counted and dropped."""
REQUESTS_PER_TURN = 100
"""Requests served before the loop publishes and beats again."""
CONTROL_STALE_AFTER_S = 15.0
"""The serving loop is unhealthy when it has not turned for this long (a status request
asks four actors, each for up to ``ASK_TIMEOUT_S``)."""
SOCKET_CHECK_S = 1.0
"""How often the loop checks that its socket file is still in place."""

_T = TypeVar("_T")


def control_endpoint(state_dir: Path) -> str:
    """The control socket's ZeroMQ address."""
    return f"ipc://{Path(state_dir) / CONTROL_SOCKET}"


def pub_endpoint(state_dir: Path) -> str:
    """The snapshot socket's ZeroMQ address."""
    return f"ipc://{Path(state_dir) / PUB_SOCKET}"


def ensure_token(state_dir: Path) -> str:
    """The control credential, created (owner-only) on first use."""
    path = Path(state_dir) / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    return path.read_text().strip()


def read_token(state_dir: Path) -> str:
    """The control credential of a running service (raises OSError when unreadable)."""
    return (Path(state_dir) / TOKEN_FILE).read_text().strip()


def _num(value: Decimal) -> str:
    """A decimal for people: at most 8 places, no trailing zeros, no exponent."""
    text = format(value.quantize(_PLACES) if value.is_finite() else value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


_PLACES = Decimal("1e-8")


# ---- who is asking ---------------------------------------------------------------------


@dataclass(frozen=True)
class PeerIdentity:
    """Who is at the other end of a local connection, as the operating system says."""

    uid: int | None
    """The peer process's user id; None when the system did not say."""
    gid: int | None = None
    """Its group id."""
    pid: int | None = None
    """Its process id."""
    user: str | None = None
    """The user name of ``uid`` from the password database."""

    @property
    def name(self) -> str:
        """The name to act under: the user name, ``uid:N`` without one, ``unknown``."""
        if self.user:
            return self.user
        return f"uid:{self.uid}" if self.uid is not None else "unknown"

    def describe(self) -> str:
        """For the audit line: the identity and how it was established."""
        if self.uid is None:
            return "identity=unknown (the system gave no peer credentials)"
        return f"identity=uid:{self.uid}({self.user or '?'}) via SO_PEERCRED pid={self.pid}"


def peer_identity(peer_address: str | None) -> PeerIdentity:
    """The identity in ZeroMQ's ``Peer-Address`` of an ipc connection, which libzmq fills
    from ``SO_PEERCRED`` as ``<host>:<uid>:<gid>:<pid>``."""
    if not peer_address:
        return PeerIdentity(uid=None)
    parts = peer_address.rsplit(":", 3)
    if len(parts) != 4:
        return PeerIdentity(uid=None)
    try:  # BSD and macOS (LOCAL_PEERCRED) leave the pid empty
        uid, gid = int(parts[1]), int(parts[2])
        pid = int(parts[3]) if parts[3] else None
    except ValueError:
        return PeerIdentity(uid=None)
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    return PeerIdentity(uid=uid, gid=gid, pid=pid, user=user)


# ---- the serving loop's health ---------------------------------------------------------


class ControlHealth:
    """The control channel's health, as the serving thread reports it.

    Healthy means: a serving thread runs, it turned within ``stale_after_s`` and its
    socket file is the one it bound. Thread-safe: the serving thread writes, the service's
    health check (``healthy``) reads."""

    def __init__(self, stale_after_s: float = CONTROL_STALE_AFTER_S) -> None:
        self.stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._last_beat: float | None = None
        self._socket_ok = False
        self._running = False
        self._run = 0
        self.reason = "the control channel has not started"
        """Why it is unhealthy (the last cause), for people."""
        self.served = 0
        """Requests answered."""
        self.refused = 0
        """Requests refused."""

    def started(self, now: float) -> int:
        """A serving thread runs with a freshly bound socket; returns its run number."""
        with self._lock:
            self._running, self._socket_ok, self._last_beat = True, True, now
            self.reason = ""
            self._run += 1
            return self._run

    def beat(self, now: float, socket_ok: bool = True, run: int | None = None) -> None:
        """The serving loop turned; ``socket_ok`` says whether its socket file is in place.
        A beat from an older run (a thread being replaced) is ignored."""
        with self._lock:
            if run is not None and run != self._run:
                return
            self._last_beat = now
            self._socket_ok = socket_ok
            if not socket_ok:
                self.reason = "the control socket file is missing or not ours"

    def stopped(self, reason: str, run: int | None = None) -> None:
        """The serving thread ended (one of an older run changes nothing)."""
        with self._lock:
            if run is not None and run != self._run:
                return
            self._running = False
            self.reason = reason

    def healthy(self, now: float | None = None) -> bool:
        """True while the serving thread runs, turns and owns its socket file."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return (self._running and self._socket_ok and self._last_beat is not None
                    and now - self._last_beat < self.stale_after_s)


_health_lock = threading.Lock()
_healths: dict[Path, ControlHealth] = {}


def control_health(state_dir: Path) -> ControlHealth:
    """The ``ControlHealth`` of the control channel of ``state_dir`` in this process (the
    same object across restarts of the dashboard actor)."""
    key = Path(state_dir).resolve()
    with _health_lock:
        return _healths.setdefault(key, ControlHealth())


class DashboardConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The dashboard actor and the control channel."""

    publish_interval_s: Interval = 0.5
    """How often a state snapshot is published."""
    alerts: Annotated[int, Meta(ge=1, le=100_000)] = 50
    """Alerts kept."""


class GetDashboardState(msgspec.Struct, frozen=True):
    """Ask: what the dashboard actor collected from the bus (a ``DashboardState``)."""


class _ControlLost(msgspec.Struct, frozen=True):
    """Tell (from the serving thread): the control channel ended for good."""

    reason: str


class ControlChannelError(TradeguardError):
    """The control channel could not go on; the dashboard fails so it is restarted."""


class Dashboard(SupervisedActor):
    """Collects state from the bus; serves the snapshot and control sockets."""

    def __init__(self, config: DashboardConfig, state_dir: Path, venues: tuple[str, ...],
                 health_check: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.config = config
        self.state_dir = Path(state_dir)
        self.venues = tuple(venues)
        self._health_check = health_check
        self.log = logger.bind(channel="governance")
        self._alerts: deque[Alert] = deque(maxlen=config.alerts)
        self._health: dict[str, HealthReport] = {}
        self._up: dict[str, bool] = {venue: False for venue in venues}
        self._orders = {"submitted": 0, "filled": 0, "rejected": 0, "cancelled": 0, "fills": 0}
        self._started_ns = now_ns()
        self._mode = str(Mode.STARTUP)
        self._serving = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = ""
        self.health = control_health(self.state_dir)
        self._refusal_budget = LogBudget(burst=20, window_s=10.0)
        self._socket_inode: int | None = None

    @property
    def refused(self) -> int:
        """Control requests refused (this process)."""
        return self.health.refused

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self._token = ensure_token(self.state_dir)
        for topic in (topics.MODE, topics.SAFETY, topics.HEALTH, topics.CONNECTORS, topics.ORDERS,
                      topics.SUBMITTED, topics.FAILSAFE, SUPERVISION_TOPIC):
            bus.subscribe(topic, self.name)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        control = context.socket(zmq.ROUTER)
        publisher = context.socket(zmq.PUB)
        for sock in (control, publisher):
            sock.setsockopt(zmq.LINGER, 0)
        control.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        control.setsockopt(zmq.RCVHWM, 1000)
        control.setsockopt(zmq.SNDHWM, 1000)
        try:
            for name in (CONTROL_SOCKET, PUB_SOCKET):
                (self.state_dir / name).unlink(missing_ok=True)
            self._bind_control(control)
            publisher.bind(pub_endpoint(self.state_dir))
            os.chmod(self.state_dir / PUB_SOCKET, 0o600)
        except Exception:
            control.close()
            publisher.close()
            raise
        self._serving.set()
        run = self.health.started(time.monotonic())
        self._thread = threading.Thread(target=self._serve, args=(control, publisher, run),
                                        name="dashboard-control", daemon=True)
        self._thread.start()

    def _bind_control(self, control: zmq.Socket[bytes]) -> None:
        control.bind(control_endpoint(self.state_dir))
        path = self.state_dir / CONTROL_SOCKET
        os.chmod(path, 0o600)
        self._socket_inode = path.stat().st_ino

    def teardown(self) -> None:
        self._serving.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            ModeChanged: self._on_mode,
            SafetyEvent: self._on_safety,
            HealthReport: self._on_health,
            ConnectorUp: lambda m: self._up.__setitem__(m.name, True),
            ConnectorDown: lambda m: self._up.__setitem__(m.name, False),
            SubmitOrder: lambda _m: self._count("submitted"),
            OrderFilled: self._on_fill,
            OrderRejected: lambda _m: self._count("rejected"),
            OrderCancelled: lambda _m: self._count("cancelled"),
            FailsafeReport: self._on_failsafe,
            ChildExited: self._on_child_exited,
            SupervisorGaveUp: lambda m: self._alert("CRITICAL", "supervisor_gave_up",
                                                    f"{m.supervisor}: {m.reason}"),
            GetDashboardState: lambda _m: self._state(),
            _ControlLost: self._on_control_lost,
        }

    # ---- what the bus says ----------------------------------------------------------

    def _count(self, key: str) -> None:
        self._orders[key] += 1

    def _on_fill(self, fill: OrderFilled) -> None:
        self._orders["fills"] += 1
        if fill.leaves_quantity == 0:
            self._orders["filled"] += 1

    def _alert(self, severity: str, kind: str, text: str) -> None:
        self._alerts.append(Alert(ts_ns=now_ns(), severity=severity, kind=kind, text=text))

    def _on_mode(self, event: ModeChanged) -> None:
        self._mode = str(event.current)
        severity = {Mode.FAILSAFE: "CRITICAL", Mode.DEGRADED: "WARNING"}.get(event.current, "INFO")
        self._alert(severity, "mode", f"{event.previous} -> {event.current}: {event.reason}")

    def _on_safety(self, event: SafetyEvent) -> None:
        if event.severity >= Severity.WARNING:
            where = f"{event.venue}/{event.symbol} " if event.venue else ""
            self._alert(event.severity.name, event.kind, f"{where}{event.detail}")

    def _on_health(self, report: HealthReport) -> None:
        self._health[report.name] = report
        self._up[report.name] = report.connected

    def _on_failsafe(self, report: FailsafeReport) -> None:
        self._alert("CRITICAL", "failsafe", ("flat" if report.flat else "NOT FLAT") + f": {report.detail}")

    def _on_child_exited(self, event: ChildExited) -> None:
        if event.abnormal:
            self._alert("WARNING", "actor_exited", f"{event.supervisor}/{event.name}: {event.reason}")

    def _on_control_lost(self, message: _ControlLost) -> None:
        raise ControlChannelError(f"the control channel ended: {message.reason}")

    def _state(self) -> DashboardState:
        rows = []
        for venue in self.venues:
            report = self._health.get(venue)
            connected = self._up.get(venue, False)
            if report is None:
                rows.append(ConnectorHealth(name=venue, connected=connected))
                continue
            rows.append(ConnectorHealth(
                name=venue, connected=connected, latency_ms=report.latency_ms,
                messages_in=report.messages_in, messages_out=report.messages_out, drops=report.drops,
                errors=report.errors, malformed=report.malformed, gaps=report.gaps, fills=report.fills,
                last_message_ns=report.last_message_ns,
            ))
        return DashboardState(mode=self._mode, alerts=list(self._alerts),
                              orders=OrderCounts(**self._orders), connectors=rows)

    # ---- the sockets (server thread, outside the actor) ---------------------------------

    def _serve(self, control: zmq.Socket[bytes], publisher: zmq.Socket[bytes], run: int) -> None:
        poller = zmq.Poller()
        poller.register(control, zmq.POLLIN)
        next_publish = time.monotonic()
        next_check = time.monotonic() + SOCKET_CHECK_S
        socket_ok = True
        reason = "stopped"
        main_log = logger.bind(channel="main")
        try:
            while self._serving.is_set():
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + SOCKET_CHECK_S
                    socket_ok = self._check_socket_file(control)
                self.health.beat(now, socket_ok, run)
                summary = self._refusal_budget.summary(now)
                if summary is not None:
                    self.log.error(f"control command refused: {summary}")
                timeout_ms = max(0.0, (next_publish - now) * 1000)
                try:
                    ready = dict(poller.poll(int(min(timeout_ms, 100))))
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if ready.get(control):
                    for _ in range(REQUESTS_PER_TURN):
                        if not self._serve_one(control):
                            break
                if time.monotonic() >= next_publish:
                    next_publish = time.monotonic() + self.config.publish_interval_s
                    try:
                        publisher.send(msgspec.json.encode(self.status()), zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                    except Exception:
                        main_log.exception("snapshot failed")
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            main_log.exception("the control channel failed")
        finally:
            self.health.stopped(f"the control channel {reason}", run)
            control.close(linger=0)
            publisher.close(linger=0)
            self._unlink_own_socket()
            (self.state_dir / PUB_SOCKET).unlink(missing_ok=True)
            if self._serving.is_set():  # ended by itself: fail the actor, it is restarted
                try:
                    self.actor_ref.tell(_ControlLost(reason=reason))
                except pykka.ActorDeadError:
                    pass

    def _check_socket_file(self, control: zmq.Socket[bytes]) -> bool:
        """True when ``control.sock`` is the file this socket bound. A deleted one is bound
        again; one that another process bound is left alone and reported."""
        path = self.state_dir / CONTROL_SOCKET
        try:
            inode: int | None = path.stat().st_ino
        except FileNotFoundError:
            inode = None
        if inode is not None and inode == self._socket_inode:
            return True
        if inode is not None:
            return False  # someone else's socket now: do not take it over
        self.log.error(f"the control socket {path} was deleted; binding it again")
        try:
            try:
                control.unbind(control_endpoint(self.state_dir))
            except zmq.ZMQError:
                pass
            self._bind_control(control)
        except (zmq.ZMQError, OSError) as exc:
            self.log.error(f"the control socket could not be bound again: {exc}")
            return False
        return True

    def _unlink_own_socket(self) -> None:
        path = self.state_dir / CONTROL_SOCKET
        try:
            if path.stat().st_ino == self._socket_inode:
                path.unlink()
        except FileNotFoundError:
            pass

    def _serve_one(self, control: zmq.Socket[bytes]) -> bool:
        """Read one whole message (any shape) and answer it; False when none was waiting."""
        frames: list[zmq.Frame] = []
        count = 0
        while True:
            try:
                frame = control.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if count == 0:
                    return False
                break  # a message arrives whole, so this does not happen; be safe anyway
            count += 1
            if len(frames) < MAX_FRAMES:
                frames.append(frame)
            if not frame.more:
                break
        envelope, body = _split_envelope(frames)
        peer = None
        try:
            peer = frames[-1].get("Peer-Address") if frames else None
        except zmq.ZMQError:
            peer = None
        identity = peer_identity(peer if isinstance(peer, str) else None)
        try:
            reply = self._handle(body, count - len(envelope), identity)
        except Exception as exc:  # one bad request must not end the channel
            logger.bind(channel="main").exception("control request failed")
            reply = ControlReply(ok=False, error=f"internal error: {type(exc).__name__}")
        try:
            data = msgspec.json.encode(reply)
        except Exception as exc:
            logger.bind(channel="main").exception("control reply could not be encoded")
            data = msgspec.json.encode(ControlReply(ok=False, error=f"internal error: {type(exc).__name__}"))
        self.health.served += 1
        try:
            control.send_multipart([*envelope, data], zmq.NOBLOCK)
        except zmq.Again:
            pass  # the peer does not read its answers: dropped, never waited for
        except zmq.ZMQError as exc:
            if exc.errno not in (errno.EHOSTUNREACH, errno.EAGAIN):
                raise
        return True

    def _handle(self, body: list[zmq.Frame], body_frames: int, identity: PeerIdentity) -> ControlReply:
        if body_frames != 1 or len(body) != 1:
            shape = "empty" if body_frames <= 0 else f"{body_frames} frames"
            return self._refuse(f"malformed request: {shape} (a request is one frame)", identity,
                                detail=printable(b"".join(bytes(f.buffer[:64]) for f in body[:4])))
        raw = body[0].buffer
        if len(raw) > MAX_REQUEST_BYTES:
            return self._refuse(f"request too large ({len(raw)} bytes, at most {MAX_REQUEST_BYTES})",
                                identity, detail=printable(bytes(raw[:200])))
        try:
            request = msgspec.json.decode(raw, type=ControlRequest)
        except RecursionError:
            return self._refuse("malformed request: nested too deeply", identity)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError) as exc:
            return self._refuse("malformed request", identity, detail=printable(str(exc)))
        claimed = request.operator
        token = (request.token or "").encode("utf-8", "surrogatepass")
        if request.token is None or not hmac.compare_digest(token, self._token.encode()):
            return self._refuse("missing or wrong credential", identity, verb=request.verb, claimed=claimed)
        if request.verb in CLIENT_VERBS:
            return self._client_request(bytes(raw), request.verb, identity)
        try:
            verb = OperatorVerb(request.verb or "")
        except ValueError:
            return self._refuse("unknown verb", identity, verb=request.verb, claimed=claimed,
                                error=f"unknown verb {printable(request.verb)}")
        if verb is OperatorVerb.STATUS:
            return ControlReply(ok=True, result=self.status())
        # The reason travels on to the governor, which logs it: one bounded line only.
        try:
            command = OperatorCommand(verb=verb, operator=identity.name,
                                      reason=one_line(request.reason or ""), ts_ns=now_ns(),
                                      scope_venue=one_line(request.venue or ""),
                                      scope_source=one_line(request.source or ""))
        except MessageError as exc:  # e.g. a reason that is not valid Unicode
            return self._refuse("malformed request", identity, verb=request.verb, claimed=claimed,
                                detail=printable(str(exc)))
        scope = _scope_text(command)
        audit = f"operator command accepted: {verb}{scope} by {identity.name} {identity.describe()}"
        if claimed is not None and claimed != identity.user:
            audit += f" claimed={printable(claimed)}"
        if request.reason:
            audit += f" reason={printable(request.reason)}"
        self.log.bind(verb=str(verb), operator=identity.name, uid=identity.uid).warning(audit)
        return ControlReply(ok=True, result=self._command(command))

    def _client_request(self, raw: bytes, verb: str, identity: PeerIdentity) -> ControlReply:
        """A client API request (``actors.order_entry.client_verbs``), audited like a command."""
        ok, answer = handle_client_request(raw, identity.name, self._ask)
        outcome = "ok" if ok else f"refused: {printable(answer)}"
        self.log.bind(verb=verb, operator=identity.name, uid=identity.uid).info(
            f"client request {verb} by {identity.name} {identity.describe()}: {outcome}")
        return ControlReply(ok=ok, result=answer if ok else None, error=None if ok else answer)

    def _refuse(self, why: str, identity: PeerIdentity, *, verb: str | None = None,
                claimed: str | None = None, detail: str | None = None,
                error: str | None = None) -> ControlReply:
        """Count and log a refusal (escaped, truncated, under a budget); the reply."""
        self.health.refused += 1
        if self._refusal_budget.allow(time.monotonic(), why.split(" (")[0]):
            line = f"control command refused: {why}"
            if verb is not None:
                line += f" verb={printable(verb)}"
            if claimed is not None:
                line += f" claimed={printable(claimed)}"
            if detail is not None:
                line += f" detail={detail}"
            line += f" {identity.describe()}"
            self.log.bind(uid=identity.uid).error(line)
        if error is None:
            error = f"refused: {why}" if "credential" in why else why
        return ControlReply(ok=False, error=error)

    def _command(self, command: OperatorCommand) -> str:
        governor = registry.lookup("risk_governor")
        if governor is not None:
            try:
                return str(governor.ask(command, timeout=ASK_TIMEOUT_S))
            except (pykka.Timeout, pykka.ActorDeadError) as exc:
                if command.verb is not OperatorVerb.FLATTEN:
                    return f"failed: the risk governor did not answer ({type(exc).__name__})"
        if command.verb is OperatorVerb.FLATTEN:
            # Never let a flatten depend on the governor: go to the failsafe directly.
            scoped = bool(command.scope_venue or command.scope_source)
            registry.tell("failsafe", FlattenRequested(
                reason=f"operator flatten{_scope_text(command)} by {command.operator}", source="operator",
                scope_venue=command.scope_venue, scope_source=command.scope_source, ts_ns=now_ns()))
            if scoped:
                return (f"flattening{_scope_text(command)}: sent straight to the failsafe "
                        "(the governor is down, so the scope is not paused)")
            return "FAILSAFE: flatten sent straight to the failsafe (the governor is down)"
        return "failed: the risk governor is down"

    def _ask(self, name: str, message: Any) -> Any:
        ref = registry.lookup(name)
        if ref is None:
            return None
        try:
            return ref.ask(message, timeout=ASK_TIMEOUT_S)
        except (pykka.Timeout, pykka.ActorDeadError):
            return None

    def _ask_as(self, name: str, message: Any, kind: type[_T]) -> _T | None:
        """Ask, and read the reply (a dict or a record) as ``kind``; None when there is no
        answer or it does not fit (logged)."""
        reply = self._ask(name, message)
        if reply is None:
            return None
        try:
            return msgspec.convert(msgspec.to_builtins(reply), kind)
        except (msgspec.ValidationError, TypeError) as exc:
            logger.bind(channel="main").error(f"{name} answered {type(message).__name__} "
                                              f"with something unreadable: {exc}")
            return None

    def _order_counts(self, mine: DashboardState | None) -> OrderCounts:
        counts = mine.orders if mine is not None else OrderCounts()
        totals = self._ask("position_keeper", GetOrderCounts(since_ns=self._started_ns))
        return _journal_counts(counts, totals)

    def status(self) -> StatusDocument:
        """The full status document (``tradeguard status --json``)."""
        mine = self._ask(self.name, GetDashboardState())
        if not isinstance(mine, DashboardState):
            mine = None
        risk = self._ask_as("risk_governor", GetRiskState(), RiskStatus)
        portfolio = self._ask("position_keeper", GetPortfolio())
        reconciliations = self._ask("position_keeper", GetReconciliations()) or {}
        failsafe = self._ask_as("failsafe", GetFailsafeState(), FailsafeStatus)
        positions: list[PositionStatus] = []
        pnl: PnlStatus | None = None
        if portfolio is not None:
            positions = [
                PositionStatus(venue=p.venue, symbol=p.symbol, quantity=_num(p.quantity),
                               average_price=_num(p.average_price),
                               unrealized_pnl=_num(p.unrealized_pnl), realized_pnl=_num(p.realized_pnl))
                for p in portfolio.positions if p.quantity != 0
            ]
            pnl = PnlStatus(realized=_num(portfolio.realized_pnl), unrealized=_num(portfolio.unrealized_pnl),
                            daily=_num(portfolio.daily_pnl),
                            daily_traded_notional=_num(portfolio.daily_traded_notional))
        health_rows = mine.connectors if mine is not None else [ConnectorHealth(name=v) for v in self.venues]
        connectors = []
        for row in health_rows:
            recon = reconciliations.get(row.name)
            fields = msgspec.structs.asdict(row)
            if row.latency_ms is None and risk is not None:
                # No health report yet, and the dashboard (started last) missed the
                # ConnectorUp: the governor heard it.
                fields["connected"] = row.name in risk.connectors_up
            if recon is not None:
                fields.update(
                    reconciled=recon.reconciled, reconciled_ns=recon.ts_ns,
                    reconciled_since_ns=recon.since_ns or None,
                    venue_positions=[VenuePositionStatus(symbol=p.symbol, quantity=_num(p.quantity),
                                                         average_price=_num(p.average_price))
                                     for p in recon.venue_positions],
                    keeper_positions=[KeeperPositionStatus(symbol=p.symbol, quantity=_num(p.quantity))
                                      for p in recon.keeper_positions],
                    mismatches=[str(m) for m in recon.mismatches],
                    open_orders_compared=recon.venue_open_orders is not None,
                    venue_open_orders=list(recon.venue_open_orders or ()),
                    keeper_open_orders=list(recon.keeper_open_orders),
                    order_mismatches=list(recon.order_mismatches),
                )
            connectors.append(ConnectorStatus(**fields))
        mode = risk.mode if risk is not None else (mine.mode if mine is not None else "UNKNOWN")
        return StatusDocument(
            mode=mode,
            paused=risk.paused if risk is not None else None,
            healthy=self._health_check() if self._health_check is not None else None,
            positions=positions,
            pnl=pnl,
            connectors=connectors,
            orders=self._order_counts(mine),
            risk=risk,
            failsafe=failsafe,
            alerts=list(mine.alerts[-10:]) if mine is not None else [],
            ts_ns=now_ns(),
            control=ControlStatus(healthy=self.health.healthy(), served=self.health.served,
                                  refused=self.health.refused),
        )


def _scope_text(command: OperatorCommand) -> str:
    """`` venue=X`` / `` source=Y`` for the audit line and answers; empty when unscoped."""
    text = ""
    if command.scope_venue:
        text += f" venue={printable(command.scope_venue)}"
    if command.scope_source:
        text += f" source={printable(command.scope_source)}"
    return text


def _journal_counts(counts: OrderCounts, totals: Any) -> OrderCounts:
    """``counts`` with submitted, filled, cancelled and fills from the journal (a resync
    never counts twice there); rejections stay the bus count (pre-trade refusals are not
    journaled, and a resync repeats no rejection)."""
    if not isinstance(totals, OrderTotals):
        return counts
    return msgspec.structs.replace(counts, submitted=totals.submitted, filled=totals.filled,
                                   cancelled=totals.cancelled, fills=totals.fills)


def _split_envelope(frames: list[zmq.Frame]) -> tuple[list[bytes], list[zmq.Frame]]:
    """A ROUTER message as (routing envelope, body): the envelope is the routing id and,
    from a REQ peer, everything up to the empty delimiter frame."""
    if not frames:
        return [], []
    for index, frame in enumerate(frames[1:], start=1):
        if len(frame.buffer) == 0:
            return [bytes(f.buffer) for f in frames[: index + 1]], frames[index + 1:]
    return [bytes(frames[0].buffer)], frames[1:]
