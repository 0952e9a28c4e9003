"""The failsafe: cancel everything and flatten every position at the venue.

Latched and idempotent. For each venue, in rounds: mass-cancel and read the positions the
venue reports; send a reduce-only market order closing each one; when those orders are
done (or the round times out) read the venue again; repeat until the venue reports flat
or the attempts are spent. A venue whose connector is down is retried when it comes back
(connectors keep restarting under FAILSAFE). The closing orders go straight to the
connectors, so the procedure does not depend on the governor being alive. When every
venue is flat, or the attempts are spent, an incident report (JSON and a readable
summary) is written to the state directory and the outcome is published.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.risk_governor import EnterFailsafe
from messages import (
    FAILSAFE_SOURCE,
    CancelAll,
    CancelAllDone,
    ConnectorUp,
    FailsafeReport,
    FlattenRequested,
    Mode,
    ModeChanged,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    RequestPositions,
    SafetyEvent,
    Side,
    SubmitOrder,
    VenuePositions,
    now_ns,
    to_builtins,
)
from supervision import (
    SUPERVISION_TOPIC,
    ChildExited,
    SupervisedActor,
    SupervisorGaveUp,
    TimerHandle,
    bus,
    registry,
    scheduler,
)


class FailsafeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How hard the failsafe tries."""

    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 5
    """Closing rounds per venue before the run reports the venue not flat."""
    round_timeout_s: Annotated[float, Meta(ge=0.01, le=3600.0)] = 3.0
    """How long a round waits for the venue's answers before it re-reads the venue."""
    timeline_size: Annotated[int, Meta(ge=1, le=1_000_000)] = 200
    """Events kept for the incident report's timeline."""


class GetFailsafeState(msgspec.Struct, frozen=True):
    """Ask: the failsafe's state as a dict."""


class _RoundTimeout(msgspec.Struct, frozen=True):
    venue: str
    round: int


class _VenueRun:
    """Where one venue is in the procedure."""

    def __init__(self) -> None:
        self.round = 0
        self.request_id = ""
        self.state = "pending"  # pending | waiting | closing | flat | down | exhausted
        self.closing: set[str] = set()
        self.last_positions: list[dict[str, str]] = []
        self.timer: TimerHandle | None = None


class Failsafe(SupervisedActor):
    """Runs the flatten procedure of ARCHITECTURE §5."""

    def __init__(self, config: FailsafeConfig, state_dir: Path, venues: tuple[str, ...],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.config = config
        self.state_dir = Path(state_dir)
        self.venues = tuple(venues)
        self.clock = clock
        self.log = logger.bind(channel="safety")
        self.latched = False
        self.running = False
        self._incident = ""
        self._trigger: FlattenRequested | None = None
        self._started_ns = 0
        self._runs: dict[str, _VenueRun] = {}
        self._timeline: deque[dict[str, Any]] = deque(maxlen=config.timeline_size)
        self._actions: list[dict[str, Any]] = []
        self.last_report: FailsafeReport | None = None

    def setup(self) -> None:
        for topic in (topics.POSITIONS, topics.ORDERS, topics.CONNECTORS, topics.SAFETY,
                      topics.MODE, SUPERVISION_TOPIC):
            bus.subscribe(topic, self.name)

    def teardown(self) -> None:
        for run in self._runs.values():
            if run.timer is not None:
                run.timer.cancel()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            FlattenRequested: self._on_flatten,
            VenuePositions: self._on_positions,
            CancelAllDone: lambda m: self._note("cancel_all_done", venue=m.venue),
            OrderFilled: self._on_fill,
            OrderRejected: self._on_order_done,
            OrderCancelled: self._on_order_done,
            ConnectorUp: self._on_connector_up,
            SafetyEvent: lambda m: self._remember("safety", f"{m.severity.name} {m.kind} "
                                                  f"{m.venue}/{m.symbol}: {m.detail}"),
            ModeChanged: self._on_mode,
            ChildExited: lambda m: self._remember(
                "child_exited", f"{m.supervisor}/{m.name} gen {m.generation}: {m.reason}"),
            SupervisorGaveUp: lambda m: self._remember("gave_up", f"{m.supervisor}: {m.reason}"),
            _RoundTimeout: self._on_round_timeout,
            GetFailsafeState: lambda _m: self.state(),
        }

    # ---- the procedure ----------------------------------------------------------------

    def _on_flatten(self, request: FlattenRequested) -> None:
        self._remember("flatten_requested", f"{request.source}: {request.reason}")
        if self.running:
            return
        if not self.latched:
            self.latched = True
            # The governor may have sent this, or may be down: telling it is idempotent.
            registry.tell("risk_governor", EnterFailsafe(reason=request.reason))
        self.running = True
        self._trigger = request
        self._started_ns = now_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._incident = f"{stamp}-{self._started_ns % 1_000_000:06d}"
        self._actions = []
        self._runs = {venue: _VenueRun() for venue in self.venues}
        self.log.critical(f"FAILSAFE: flattening every venue ({request.source}: {request.reason})")
        for venue in self.venues:
            self._start_round(venue)
        self._check_done()

    def _start_round(self, venue: str) -> None:
        run = self._runs[venue]
        if run.timer is not None:
            run.timer.cancel()
        if run.round >= self.config.max_attempts:
            run.state = "exhausted"
            self._note("attempts_spent", venue=venue, rounds=run.round)
            self._check_done()
            return
        run.round += 1
        run.request_id = f"fs-{self._incident}-{venue}-{run.round}"
        run.closing.clear()
        delivered = registry.tell(venue, CancelAll(venue=venue, source=FAILSAFE_SOURCE,
                                                   request_id=run.request_id))
        delivered = delivered and registry.tell(
            venue, RequestPositions(venue=venue, request_id=run.request_id))
        if not delivered:
            run.state = "down"
            run.round -= 1
            self._note("venue_down", venue=venue)
            self._check_done()
            return
        run.state = "waiting"
        self._note("cancel_all_and_read_positions", venue=venue, round=run.round)
        run.timer = self._after(self.config.round_timeout_s, _RoundTimeout(venue=venue, round=run.round))

    def _on_positions(self, report: VenuePositions) -> None:
        run = self._runs.get(report.venue)
        if not self.running or run is None or report.request_id != run.request_id or run.state != "waiting":
            return
        open_positions = [p for p in report.positions if p.quantity != 0]
        run.last_positions = [
            {"symbol": p.symbol, "quantity": str(p.quantity), "average_price": str(p.average_price)}
            for p in report.positions
        ]
        self._note("venue_positions", venue=report.venue, round=run.round, positions=run.last_positions)
        if not open_positions:
            run.state = "flat"
            if run.timer is not None:
                run.timer.cancel()
            self._check_done()
            return
        run.state = "closing"
        for n, position in enumerate(open_positions):
            order = SubmitOrder(
                client_order_id=f"{run.request_id}-{n}",
                venue=report.venue,
                symbol=position.symbol,
                side=Side.SELL if position.quantity > 0 else Side.BUY,
                quantity=abs(position.quantity),
                order_type=OrderType.MARKET,
                reduce_only=True,
                source=FAILSAFE_SOURCE,
                created_ns=now_ns(),
            )
            run.closing.add(order.client_order_id)
            bus.publish(topics.SUBMITTED, order)
            if not registry.tell(report.venue, order):
                run.closing.discard(order.client_order_id)
                run.state = "down"
                self._note("venue_down", venue=report.venue)
                return
        self._note("closing_orders_sent", venue=report.venue, round=run.round, count=len(open_positions))

    def _on_fill(self, fill: OrderFilled) -> None:
        if fill.leaves_quantity > 0:
            return
        self._on_order_done(fill)

    def _on_order_done(self, event: OrderFilled | OrderRejected | OrderCancelled) -> None:
        run = self._runs.get(event.venue)
        if not self.running or run is None or event.client_order_id not in run.closing:
            return
        run.closing.discard(event.client_order_id)
        if isinstance(event, OrderRejected):
            self._note("closing_order_rejected", venue=event.venue, order=event.client_order_id,
                       text=event.text)
        if not run.closing and run.state == "closing":
            self._start_round(event.venue)  # re-read the venue: flat, or another round

    def _on_round_timeout(self, timeout: _RoundTimeout) -> None:
        run = self._runs.get(timeout.venue)
        if self.running and run is not None and run.round == timeout.round \
                and run.state in ("waiting", "closing"):
            self._note("round_timeout", venue=timeout.venue, round=timeout.round)
            self._start_round(timeout.venue)

    def _on_connector_up(self, event: ConnectorUp) -> None:
        self._remember("connector_up", f"{event.name} generation {event.generation}")
        run = self._runs.get(event.name)
        if not self.latched or run is None:
            return
        if run.state in ("down", "exhausted") or (self.running and run.state in ("waiting", "closing")):
            if not self.running:
                self.running = True
            if run.state == "exhausted":
                run.round = 0
            self._start_round(event.name)

    def _on_mode(self, event: ModeChanged) -> None:
        self._remember("mode", f"{event.previous} -> {event.current}: {event.reason}")
        if event.previous is Mode.FAILSAFE and event.current is Mode.READY:
            self.latched = False
            self.running = False
            self._runs = {}
            self.log.warning("failsafe unlatched by an operator reset")

    def _check_done(self) -> None:
        if not self.running:
            return
        states = {venue: run.state for venue, run in self._runs.items()}
        if any(state in ("waiting", "closing") for state in states.values()):
            return
        flat = all(state == "flat" for state in states.values())
        if not flat and any(state == "pending" for state in states.values()):
            return
        self.running = False
        try:
            path: Path | str = self._write_incident(flat, states)
        except OSError as exc:
            # The outcome must still go out (and the alert be raised) when the disk fails.
            self.log.critical(f"FAILSAFE: the incident report could not be written: {exc}")
            path = ""
        rounds = max((run.round for run in self._runs.values()), default=0)
        detail = ", ".join(f"{venue}: {state}" for venue, state in states.items()) or "no venues"
        report = FailsafeReport(flat=flat, attempts=rounds, incident_path=str(path),
                                detail=detail, ts_ns=now_ns())
        self.last_report = report
        if flat:
            self.log.critical(f"FAILSAFE: every venue reports flat ({detail}); report {path}")
        else:
            self.log.critical(f"FAILSAFE: NOT FLAT ({detail}); retrying venues as they return; report {path}")
        bus.publish(topics.FAILSAFE, report)

    # ---- records --------------------------------------------------------------------

    def _remember(self, kind: str, text: str) -> None:
        self._timeline.append({"ts_ns": now_ns(), "kind": kind, "text": text})

    def _note(self, action: str, **fields: Any) -> None:
        entry = {"ts_ns": now_ns(), "action": action, **fields}
        self._actions.append(entry)
        self.log.bind(action=action).info(f"failsafe {action} {fields}")

    def _write_incident(self, flat: bool, states: dict[str, str]) -> Path:
        directory = self.state_dir / "incidents"
        directory.mkdir(parents=True, exist_ok=True)
        base = directory / f"incident-{self._incident}"
        trigger = to_builtins(self._trigger) if self._trigger is not None else None
        document = {
            "incident": self._incident,
            "trigger": trigger,
            "started_ns": self._started_ns,
            "finished_ns": now_ns(),
            "flat": flat,
            "venues": {
                venue: {"state": run.state, "rounds": run.round, "last_positions": run.last_positions}
                for venue, run in self._runs.items()
            },
            "timeline": list(self._timeline),
            "actions": self._actions,
        }
        tmp = base.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(document, indent=2, default=str))
        tmp.replace(base.with_suffix(".json"))
        base.with_suffix(".txt").write_text(self._summary(document, states))
        return base.with_suffix(".json")

    @staticmethod
    def _summary(document: dict[str, Any], states: dict[str, str]) -> str:
        def stamp(ns: int) -> str:
            millis = ns % 1_000_000_000 // 1_000_000
            return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9)) + f".{millis:03d}Z"

        trigger = document["trigger"] or {}
        lines = [
            f"tradeguard incident {document['incident']}",
            f"outcome:  {'FLAT at every venue' if document['flat'] else 'NOT FLAT'}",
            f"trigger:  {trigger.get('source', '?')}: {trigger.get('reason', '?')}",
            f"started:  {stamp(document['started_ns'])}",
            f"finished: {stamp(document['finished_ns'])}",
            "",
            "venues:",
        ]
        for venue, info in document["venues"].items():
            lines.append(f"  {venue}: {states.get(venue)} after {info['rounds']} round(s); "
                         f"last reported {info['last_positions'] or 'flat'}")
        lines += ["", "timeline (events that led here):"]
        lines += [f"  {stamp(e['ts_ns'])}  {e['kind']:<18} {e['text']}" for e in document["timeline"]]
        lines += ["", "actions:"]
        lines += [
            f"  {stamp(a['ts_ns'])}  {a['action']:<30} "
            + " ".join(f"{k}={v}" for k, v in a.items() if k not in ("ts_ns", "action"))
            for a in document["actions"]
        ]
        return "\n".join(lines) + "\n"

    def _after(self, delay_s: float, message: Any) -> TimerHandle:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(message)
            except Exception:
                pass

        return scheduler.call_later(delay_s, tell)

    def state(self) -> dict[str, Any]:
        """Latch, run and last report, for status."""
        return {
            "latched": self.latched,
            "running": self.running,
            "incident": self._incident,
            "venues": {venue: run.state for venue, run in self._runs.items()},
            "last_report": to_builtins(self.last_report) if self.last_report else None,
        }
