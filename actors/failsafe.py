"""The failsafe: cancel everything and flatten every position at the venue.

Latched and idempotent. The rounds are ``core.flatten.FlattenPlan``: for each venue,
mass-cancel and read the positions the venue reports; send a reduce-only market order
closing each one; when those orders are done (or the round times out) read the venue
again; repeat until the venue reports no position and confirms the mass cancel, or the
attempts are spent. A venue whose connector is down is retried when it comes back
(connectors keep restarting under FAILSAFE). This actor sends what the plan says, times
the rounds, keeps the timeline, and, when the run is over, writes an incident report (JSON
and a readable summary) to the state directory and publishes the outcome. The closing
orders go straight to the connectors, so the procedure does not depend on the governor.
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
from core.flatten import FlattenPlan, RoundStart, VenueState
from messages import (
    FAILSAFE_SOURCE,
    CancelAll,
    CancelAllDone,
    ConnectorDown,
    ConnectorUp,
    EnterFailsafe,
    FailsafeReport,
    FlattenRequested,
    GetFailsafeState,
    Mode,
    ModeChanged,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    RequestPositions,
    SafetyEvent,
    VenuePosition,
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

__all__ = ["Failsafe", "FailsafeConfig", "GetFailsafeState"]


class FailsafeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How hard the failsafe tries."""

    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 5
    """Closing rounds per venue before the run reports the venue not flat."""
    round_timeout_s: Annotated[float, Meta(ge=0.01, le=3600.0)] = 3.0
    """How long a round waits for the venue's answers before it re-reads the venue."""
    timeline_size: Annotated[int, Meta(ge=1, le=1_000_000)] = 200
    """Events kept for the incident report's timeline."""


class _RoundTimeout(msgspec.Struct, frozen=True):
    venue: str
    round: int


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
        self._plan: FlattenPlan | None = None
        self._timers: dict[str, TimerHandle] = {}
        self._disconnected: set[str] = set()  # connectors running without their venue session
        self._timeline: deque[dict[str, Any]] = deque(maxlen=config.timeline_size)
        self._actions: list[dict[str, Any]] = []
        self.last_report: FailsafeReport | None = None

    def setup(self) -> None:
        for topic in (topics.POSITIONS, topics.ORDERS, topics.CONNECTORS, topics.SAFETY,
                      topics.MODE, SUPERVISION_TOPIC):
            bus.subscribe(topic, self.name)

    def teardown(self) -> None:
        for timer in self._timers.values():
            timer.cancel()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            FlattenRequested: self._on_flatten,
            VenuePositions: self._on_positions,
            CancelAllDone: self._on_cancel_done,
            OrderFilled: self._on_fill,
            OrderRejected: self._on_order_done,
            OrderCancelled: self._on_order_done,
            ConnectorUp: self._on_connector_up,
            ConnectorDown: self._on_connector_down,
            SafetyEvent: lambda m: self._remember("safety", f"{m.severity.name} {m.kind} "
                                                  f"{m.venue}/{m.symbol}: {m.detail}"),
            ModeChanged: self._on_mode,
            ChildExited: lambda m: self._remember(
                "child_exited", f"{m.supervisor}/{m.name} gen {m.generation}: {m.reason}"),
            SupervisorGaveUp: lambda m: self._remember("gave_up", f"{m.supervisor}: {m.reason}"),
            _RoundTimeout: self._on_round_timeout,
            GetFailsafeState: lambda _m: self.state(),
        }

    # ---- the procedure: the plan decides, the shell sends ---------------------------------

    def _on_flatten(self, request: FlattenRequested) -> None:
        self._remember("flatten_requested", f"{request.source}: {request.reason}")
        if self.running:
            return
        if not self.latched:
            self.latched = True
            # The governor may have sent this, or may be down: telling it is idempotent.
            registry.tell(topics.RISK_GOVERNOR, EnterFailsafe(reason=request.reason))
        self.running = True
        self._trigger = request
        self._started_ns = now_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._incident = f"{stamp}-{self._started_ns % 1_000_000:06d}"
        self._actions = []
        self._cancel_timers()
        self._plan = FlattenPlan(self._incident, self.venues, self.config.max_attempts)
        self.log.critical(f"FAILSAFE: flattening every venue ({request.source}: {request.reason})")
        for venue in self.venues:
            self._start_round(venue)
        self._check_done()

    def _start_round(self, venue: str) -> None:
        plan = self._plan
        if plan is None:
            return
        timer = self._timers.pop(venue, None)
        if timer is not None:
            timer.cancel()
        start = plan.next_round(venue)
        if start is None:
            self._note("attempts_spent", venue=venue, rounds=plan.runs[venue].round)
            self._check_done()
            return
        if not self._send_round(start):
            plan.venue_down(venue)
            self._note("venue_down", venue=venue)
            self._check_done()
            return
        self._note("cancel_all_and_read_positions", venue=venue, round=start.round)
        self._timers[venue] = self._after(self.config.round_timeout_s,
                                          _RoundTimeout(venue=venue, round=start.round))

    def _send_round(self, start: RoundStart) -> bool:
        venue, request_id = start.venue, start.request_id
        if venue in self._disconnected:
            return False
        return registry.tell(venue, CancelAll(venue=venue, source=FAILSAFE_SOURCE, request_id=request_id)) \
            and registry.tell(venue, RequestPositions(venue=venue, request_id=request_id))

    def _on_cancel_done(self, done: CancelAllDone) -> None:
        self._note("cancel_all_done", venue=done.venue)
        if self.running and self._plan is not None and self._plan.on_cancel_done(done.venue, done.request_id):
            self._venue_flat(done.venue)

    def _on_positions(self, report: VenuePositions) -> None:
        plan = self._plan
        if not self.running or plan is None:
            return
        orders = plan.on_positions(report, now_ns())
        if orders is None:
            return
        run = plan.runs[report.venue]
        self._note("venue_positions", venue=report.venue, round=run.round,
                   positions=_positions(run.last_positions))
        if not orders:
            if run.state is VenueState.FLAT:
                self._venue_flat(report.venue)
            return
        for order in orders:
            bus.publish(topics.SUBMITTED, order)
            if not registry.tell(report.venue, order):
                plan.venue_down(report.venue)
                self._note("venue_down", venue=report.venue)
                return
        self._note("closing_orders_sent", venue=report.venue, round=run.round, count=len(orders))

    def _venue_flat(self, venue: str) -> None:
        timer = self._timers.pop(venue, None)
        if timer is not None:
            timer.cancel()
        self._check_done()

    def _on_fill(self, fill: OrderFilled) -> None:
        self._on_order_done(fill)

    def _on_order_done(self, event: OrderFilled | OrderRejected | OrderCancelled) -> None:
        plan = self._plan
        if not self.running or plan is None or not plan.is_closing_order(event.venue, event.client_order_id):
            return
        if isinstance(event, OrderRejected):
            self._note("closing_order_rejected", venue=event.venue, order=event.client_order_id,
                       text=event.text)
        if plan.on_order_done(event):
            self._start_round(event.venue)  # re-read the venue: flat, or another round

    def _on_round_timeout(self, timeout: _RoundTimeout) -> None:
        plan = self._plan
        if self.running and plan is not None and plan.on_round_timeout(timeout.venue, timeout.round):
            self._note("round_timeout", venue=timeout.venue, round=timeout.round)
            self._start_round(timeout.venue)

    def _on_connector_down(self, event: ConnectorDown) -> None:
        """A connector lost its venue (it keeps running and reconnects): a round under way
        there ends as down without spending its attempt; ConnectorUp resumes it."""
        self._remember("connector_down", f"{event.name}: {event.reason}")
        self._disconnected.add(event.name)
        plan = self._plan
        if not self.running or plan is None or event.name not in plan.runs:
            return
        if plan.runs[event.name].state in (VenueState.WAITING, VenueState.CLOSING):
            timer = self._timers.pop(event.name, None)
            if timer is not None:
                timer.cancel()
            plan.venue_down(event.name)
            self._note("venue_down", venue=event.name)
            self._check_done()

    def _on_connector_up(self, event: ConnectorUp) -> None:
        self._disconnected.discard(event.name)
        self._remember("connector_up", f"{event.name} generation {event.generation}")
        plan = self._plan
        if not self.latched or plan is None:
            return
        if plan.on_connector_up(event.name, self.running):
            self.running = True
            self._start_round(event.name)

    def _on_mode(self, event: ModeChanged) -> None:
        self._remember("mode", f"{event.previous} -> {event.current}: {event.reason}")
        if event.previous is Mode.FAILSAFE and event.current is Mode.READY:
            self.latched = False
            self.running = False
            self._cancel_timers()
            self._plan = None
            self.log.warning("failsafe unlatched by an operator reset")

    def _check_done(self) -> None:
        plan = self._plan
        if not self.running or plan is None or not plan.finished():
            return
        self.running = False
        flat = plan.flat()
        states = {venue: str(state) for venue, state in plan.states().items()}
        try:
            path: Path | str = self._write_incident(flat, states)
        except OSError as exc:
            # The outcome must still go out (and the alert be raised) when the disk fails.
            self.log.critical(f"FAILSAFE: the incident report could not be written: {exc}")
            path = ""
        detail = ", ".join(f"{venue}: {state}" for venue, state in states.items()) or "no venues"
        report = FailsafeReport(flat=flat, attempts=plan.rounds, incident_path=str(path),
                                detail=detail, ts_ns=now_ns())
        self.last_report = report
        if flat:
            self.log.critical(f"FAILSAFE: every venue reports flat ({detail}); report {path}")
        else:
            self.log.critical(f"FAILSAFE: NOT FLAT ({detail}); retrying venues as they return; report {path}")
        bus.publish(topics.FAILSAFE, report)

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

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
                venue: {"state": str(run.state), "rounds": run.round,
                        "last_positions": _positions(run.last_positions)}
                for venue, run in (self._plan.runs.items() if self._plan is not None else ())
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
            "venues": ({venue: str(state) for venue, state in self._plan.states().items()}
                       if self._plan is not None else {}),
            "last_report": to_builtins(self.last_report) if self.last_report else None,
        }


def _positions(positions: tuple[VenuePosition, ...]) -> list[dict[str, str]]:
    """Venue positions as the incident report writes them."""
    return [{"symbol": p.symbol, "quantity": str(p.quantity), "average_price": str(p.average_price)}
            for p in positions]
