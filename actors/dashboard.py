"""The dashboard: state snapshots out, authenticated operator commands in, over ZeroMQ.

Two sockets in the state directory, owner-only (the directory is 0700, the socket files
0600): ``dashboard.pub`` publishes a JSON state snapshot every ``publish_interval_s``, and
``control.sock`` answers JSON requests ``{"token", "verb", "operator", "reason"}``. A
request without the credential kept in ``control.token`` (0600), or with a wrong one, is
refused and written to the governance log; so is an unknown verb. Every accepted command
is audited there too.

The sockets are served by one thread the actor owns. That thread is outside the actor
system, so it may ``ask`` the governor, the position keeper and the failsafe for their
state; the actor itself only tells, and keeps what arrives on the bus (alerts, connector
health, order counts).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pykka
import zmq
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.failsafe import GetFailsafeState
from actors.position_keeper import GetPortfolio, GetReconciliations
from actors.risk_governor import GetRiskState
from messages import (
    ConnectorDown,
    ConnectorUp,
    FailsafeReport,
    FlattenRequested,
    HealthReport,
    Mode,
    ModeChanged,
    OperatorCommand,
    OperatorVerb,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    SafetyEvent,
    Severity,
    SubmitOrder,
    now_ns,
    to_builtins,
)
from messages.bounds import Interval
from supervision import SUPERVISION_TOPIC, ChildExited, SupervisedActor, SupervisorGaveUp, bus, registry

TOKEN_FILE = "control.token"
CONTROL_SOCKET = "control.sock"
PUB_SOCKET = "dashboard.pub"
ASK_TIMEOUT_S = 2.0


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


class DashboardConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The dashboard actor and the control channel."""

    publish_interval_s: Interval = 0.5
    """How often a state snapshot is published."""
    alerts: Annotated[int, Meta(ge=1, le=100_000)] = 50
    """Alerts kept."""


class GetDashboardState(msgspec.Struct, frozen=True):
    """Ask: what the dashboard actor collected from the bus."""


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
        self._alerts: deque[dict[str, Any]] = deque(maxlen=config.alerts)
        self._health: dict[str, dict[str, Any]] = {}
        self._up: dict[str, bool] = {venue: False for venue in venues}
        self._orders = {"submitted": 0, "filled": 0, "rejected": 0, "cancelled": 0, "fills": 0}
        self._mode = str(Mode.STARTUP)
        self._serving = threading.Event()
        self._thread: threading.Thread | None = None
        self._token = ""
        self.refused = 0

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self._token = ensure_token(self.state_dir)
        for topic in (topics.MODE, topics.SAFETY, topics.HEALTH, topics.CONNECTORS, topics.ORDERS,
                      topics.SUBMITTED, topics.FAILSAFE, SUPERVISION_TOPIC):
            bus.subscribe(topic, self.name)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        control = context.socket(zmq.REP)
        publisher = context.socket(zmq.PUB)
        for sock in (control, publisher):
            sock.setsockopt(zmq.LINGER, 0)
        try:
            for name in (CONTROL_SOCKET, PUB_SOCKET):
                (self.state_dir / name).unlink(missing_ok=True)
            control.bind(control_endpoint(self.state_dir))
            publisher.bind(pub_endpoint(self.state_dir))
            for name in (CONTROL_SOCKET, PUB_SOCKET):
                os.chmod(self.state_dir / name, 0o600)
        except Exception:
            control.close()
            publisher.close()
            raise
        self._serving.set()
        self._thread = threading.Thread(target=self._serve, args=(control, publisher),
                                        name="dashboard-control", daemon=True)
        self._thread.start()

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
        }

    # ---- what the bus says ----------------------------------------------------------

    def _count(self, key: str) -> None:
        self._orders[key] += 1

    def _on_fill(self, fill: OrderFilled) -> None:
        self._orders["fills"] += 1
        if fill.leaves_quantity == 0:
            self._orders["filled"] += 1

    def _alert(self, severity: str, kind: str, text: str) -> None:
        self._alerts.append({"ts_ns": now_ns(), "severity": severity, "kind": kind, "text": text})

    def _on_mode(self, event: ModeChanged) -> None:
        self._mode = str(event.current)
        severity = {Mode.FAILSAFE: "CRITICAL", Mode.DEGRADED: "WARNING"}.get(event.current, "INFO")
        self._alert(severity, "mode", f"{event.previous} -> {event.current}: {event.reason}")

    def _on_safety(self, event: SafetyEvent) -> None:
        if event.severity >= Severity.WARNING:
            where = f"{event.venue}/{event.symbol} " if event.venue else ""
            self._alert(event.severity.name, event.kind, f"{where}{event.detail}")

    def _on_health(self, report: HealthReport) -> None:
        self._health[report.name] = to_builtins(report)
        self._up[report.name] = report.connected

    def _on_failsafe(self, report: FailsafeReport) -> None:
        self._alert("CRITICAL", "failsafe", ("flat" if report.flat else "NOT FLAT") + f": {report.detail}")

    def _on_child_exited(self, event: ChildExited) -> None:
        if event.abnormal:
            self._alert("WARNING", "actor_exited", f"{event.supervisor}/{event.name}: {event.reason}")

    def _state(self) -> dict[str, Any]:
        return {
            "mode": self._mode,
            "alerts": list(self._alerts),
            "orders": dict(self._orders),
            "connectors": [
                {"name": venue, "connected": self._up.get(venue, False), **{
                    k: v for k, v in self._health.get(venue, {}).items()
                    if k in ("latency_ms", "messages_in", "messages_out", "drops", "errors",
                             "malformed", "gaps", "fills", "last_message_ns")
                }}
                for venue in self.venues
            ],
        }

    # ---- the sockets (server thread, outside the actor) ---------------------------------

    def _serve(self, control: zmq.Socket[bytes], publisher: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(control, zmq.POLLIN)
        next_publish = time.monotonic()
        try:
            while self._serving.is_set():
                timeout_ms = max(0.0, (next_publish - time.monotonic()) * 1000)
                if dict(poller.poll(int(min(timeout_ms, 100)))).get(control):
                    request = control.recv()
                    try:
                        reply = self._handle_request(request)
                    except Exception as exc:  # one bad request must not end the channel
                        logger.bind(channel="main").exception("control request failed")
                        reply = {"ok": False, "error": f"internal error: {exc}"}
                    control.send(json.dumps(reply, default=str).encode())
                if time.monotonic() >= next_publish:
                    next_publish = time.monotonic() + self.config.publish_interval_s
                    try:
                        publisher.send(json.dumps(self.status(), default=str).encode(), zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                    except Exception:
                        logger.bind(channel="main").exception("snapshot failed")
        finally:
            control.close(linger=0)
            publisher.close(linger=0)
            for name in (CONTROL_SOCKET, PUB_SOCKET):
                (self.state_dir / name).unlink(missing_ok=True)

    def _handle_request(self, raw: bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
        except ValueError as exc:
            self._refuse("malformed request", detail=str(exc))
            return {"ok": False, "error": "malformed request"}
        token = request.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token, self._token):
            self._refuse("missing or wrong credential", verb=str(request.get("verb")),
                         operator=str(request.get("operator")))
            return {"ok": False, "error": "refused: missing or wrong credential"}
        try:
            verb = OperatorVerb(str(request.get("verb")))
        except ValueError:
            self._refuse("unknown verb", verb=str(request.get("verb")))
            return {"ok": False, "error": f"unknown verb {request.get('verb')!r}"}
        if verb is OperatorVerb.STATUS:
            return {"ok": True, "result": self.status()}
        command = OperatorCommand(verb=verb, operator=str(request.get("operator") or "operator"),
                                  reason=str(request.get("reason") or ""), ts_ns=now_ns())
        self.log.bind(verb=str(verb), operator=command.operator).warning(
            f"operator command accepted: {verb} by {command.operator} {command.reason}".rstrip()
        )
        return {"ok": True, "result": self._command(command)}

    def _refuse(self, why: str, **fields: str) -> None:
        self.refused += 1
        self.log.bind(**fields).error(f"control command refused: {why} {fields}")

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
            registry.tell("failsafe", FlattenRequested(reason=f"operator flatten by {command.operator}",
                                                       source="operator", ts_ns=now_ns()))
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

    def status(self) -> dict[str, Any]:
        """The full status document (``tradeguard status --json``)."""
        mine = self._ask(self.name, GetDashboardState()) or {}
        risk = self._ask("risk_governor", GetRiskState()) or {}
        portfolio = self._ask("position_keeper", GetPortfolio())
        reconciliations = self._ask("position_keeper", GetReconciliations()) or {}
        failsafe = self._ask("failsafe", GetFailsafeState())
        positions = []
        pnl: dict[str, Any] = {}
        if portfolio is not None:
            positions = [
                {"venue": p.venue, "symbol": p.symbol, "quantity": _num(p.quantity),
                 "average_price": _num(p.average_price), "unrealized_pnl": _num(p.unrealized_pnl),
                 "realized_pnl": _num(p.realized_pnl)}
                for p in portfolio.positions if p.quantity != 0
            ]
            pnl = {
                "realized": _num(portfolio.realized_pnl),
                "unrealized": _num(portfolio.unrealized_pnl),
                "daily": _num(portfolio.daily_pnl),
                "daily_traded_notional": _num(portfolio.daily_traded_notional),
            }
        connectors = mine.get("connectors", [])
        for row in connectors:
            recon = reconciliations.get(row["name"])
            row["reconciled"] = None if recon is None else recon.reconciled
            row["reconciled_ns"] = None if recon is None else recon.ts_ns
            row["venue_positions"] = [] if recon is None else [
                {"symbol": p.symbol, "quantity": _num(p.quantity), "average_price": _num(p.average_price)}
                for p in recon.venue_positions
            ]
            row["keeper_positions"] = [] if recon is None else [
                {"symbol": p.symbol, "quantity": _num(p.quantity)} for p in recon.keeper_positions
            ]
            row["mismatches"] = [] if recon is None else list(recon.mismatches)
        return {
            "mode": risk.get("mode", mine.get("mode", "UNKNOWN")),
            "paused": risk.get("paused"),
            "healthy": self._health_check() if self._health_check is not None else None,
            "positions": positions,
            "pnl": pnl,
            "connectors": connectors,
            "orders": mine.get("orders", {}),
            "risk": risk,
            "failsafe": failsafe,
            "alerts": mine.get("alerts", [])[-10:],
            "ts_ns": now_ns(),
        }
