"""The failsafe: cancel everything and flatten every position at the venue.

Latched and idempotent. The rounds are ``core.flatten.FlattenPlan``: for each venue,
mass-cancel and read the positions the venue reports; send a reduce-only market order
closing each one; when those orders are done (or the round times out) back off and read
the venue again; repeat until the venue reports no position and no working order (the
mass cancel confirmed, or every working order cancelled one by one when it was not), or
the attempts are spent; then re-check slowly. A venue whose connector is down spends no
attempt and is retried when it comes back (connectors keep restarting under FAILSAFE).

This actor keeps the orders working at each venue (``core.lifecycle.WorkingOrders``, from
the journal's acknowledged orders at start, every order passed to a connector and every
venue event), sends what the plan says, arms
one timer for the plan's next deadline, keeps the timeline, and, whenever the outcome
changes, writes an incident report (JSON and a readable summary) to the state directory
and publishes it. The closing orders go straight to the connectors, so the procedure
does not depend on the governor. Stopping never cancels the closing orders; a run cut
short by a stop is written down as interrupted.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.errors import JournalError
from actors.journal import READER, Journal
from core.flatten import BUSY, Command, FlattenPlan, FlattenPolicy
from core.lifecycle import WorkingOrders
from messages import (
    FAILSAFE_SOURCE,
    CancelAllDone,
    CancelOrder,
    ConnectorDown,
    ConnectorUp,
    EnterFailsafe,
    FailsafeReport,
    FlattenRequested,
    GetFailsafeState,
    Mode,
    ModeChanged,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    SafetyEvent,
    SubmitOrder,
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
    """How hard and how fast the failsafe tries (the rounds are ``core.flatten``)."""

    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 5
    """Closing rounds per venue before the run reports the venue not flat (1..100; rounds
    while the venue's connector is down do not count)."""
    round_timeout_s: Annotated[float, Meta(ge=0.05, le=300.0)] = 3.0
    """How long a round waits for the venue's answers and its closing orders (0.05..300)."""
    cancel_timeout_s: Annotated[float, Meta(ge=0.01, le=300.0)] = 1.0
    """How long a round waits for the mass cancel's confirmation before it cancels the
    working orders one by one (0.01..300; capped at ``round_timeout_s``)."""
    backoff_initial_s: Annotated[float, Meta(ge=0.01, le=60.0)] = 0.25
    """Pause after a round that did not end flat; doubles each round (0.01..60)."""
    backoff_max_s: Annotated[float, Meta(ge=0.01, le=600.0)] = 5.0
    """Longest pause between two rounds (at least ``backoff_initial_s``, at most 600)."""
    recheck_interval_s: Annotated[float, Meta(ge=1.0, le=3600.0)] = 30.0
    """After the attempts are spent, how often a venue is re-checked (1..3600)."""
    timeline_size: Annotated[int, Meta(ge=10, le=100_000)] = 200
    """Events kept for the incident report's timeline (10..100000)."""

    def __post_init__(self) -> None:
        def within(name: str, low: float, high: float) -> None:
            value = getattr(self, name)
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"{name}: expected {low}..{high}, got {value}")

        within("max_attempts", 1, 100)
        within("round_timeout_s", 0.05, 300)
        within("cancel_timeout_s", 0.01, 300)
        within("backoff_initial_s", 0.01, 60)
        within("backoff_max_s", self.backoff_initial_s, 600)
        within("recheck_interval_s", 1, 3600)
        within("timeline_size", 10, 100_000)

    def policy(self) -> FlattenPolicy:
        """The rounds' policy."""
        return FlattenPolicy(
            max_attempts=self.max_attempts, round_timeout_s=self.round_timeout_s,
            cancel_timeout_s=self.cancel_timeout_s, backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s, recheck_interval_s=self.recheck_interval_s,
        )


class _Wake(msgspec.Struct, frozen=True):
    token: int


class Failsafe(SupervisedActor):
    """Runs the flatten procedure of ARCHITECTURE §6."""

    def __init__(self, config: FailsafeConfig, state_dir: Path, venues: tuple[str, ...],
                 clock: Callable[[], float] = time.monotonic, journal_path: Path | None = None) -> None:
        """``journal_path``: the journal, read once at start for the orders it knows
        acknowledged and not done (the failsafe works without it)."""
        super().__init__()
        self.journal_path = journal_path
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
        self._working = WorkingOrders()
        self._down: set[str] = set()
        """Venues whose connector is known to be down (gone since its last ConnectorUp)."""
        self._up_generation: dict[str, int] = {}
        self._timer: TimerHandle | None = None
        self._wake_token = 0
        self._reported: bool | None = None
        self._timeline: deque[dict[str, Any]] = deque(maxlen=config.timeline_size)
        self._actions: list[dict[str, Any]] = []
        self.last_report: FailsafeReport | None = None

    def setup(self) -> None:
        for topic in (topics.POSITIONS, topics.ORDERS, topics.SUBMITTED, topics.CONNECTORS,
                      topics.SAFETY, topics.MODE, SUPERVISION_TOPIC):
            bus.subscribe(topic, self.name)
        self._learn_working_orders()
        self._announce_restart()

    def _announce_restart(self) -> None:
        """A restart within the running process is an alert: the run under way (if any) was
        forgotten; the governor, which records the restart as an incident, asks for the
        procedure again while FAILSAFE is latched and the venues are not confirmed flat."""
        if self.context.generation > 0:
            self.log.bind(generation=self.context.generation).warning(
                f"failsafe restarted (generation {self.context.generation}): any run under way "
                f"was forgotten; it runs again when asked while FAILSAFE is latched")

    def _learn_working_orders(self) -> None:
        """The orders the journal holds acknowledged by their venue and not done: working
        there as far as anyone knows (a restarted failsafe, or a restarted process whose
        venues do not report open orders on reconnect). Orders never acknowledged are left
        out: one lost in flight long ago must not block "flat" for ever."""
        if self.journal_path is None or not self.journal_path.exists():
            return
        try:
            with Journal(self.journal_path, writer=READER) as journal:
                records = journal.open_orders()
        except JournalError as exc:
            self.log.warning(f"failsafe: working orders not read from the journal: {exc}")
            return
        for record in records:
            if record.status is not OrderStatus.PENDING and record.order.venue in self.venues:
                self._working.apply(OrderAccepted(client_order_id=record.order.client_order_id,
                                                  venue=record.order.venue, symbol=record.order.symbol))

    def teardown(self) -> None:
        # Never cancels the closing orders: they are the point of the run. An unfinished
        # run is written down so the incident is not lost with the process.
        self._cancel_timer()
        if self.running and self._plan is not None:
            self._note("interrupted", venue="", detail="the failsafe stopped during a run")
            try:
                path = self._write_incident(False, {v: str(s) for v, s in self._plan.states().items()},
                                            interrupted=True)
                self.log.critical(f"FAILSAFE: run interrupted before every venue was flat; report {path}")
            except OSError as exc:
                self.log.critical(f"FAILSAFE: run interrupted; the incident report failed: {exc}")

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            FlattenRequested: self._on_flatten,
            VenuePositions: self._on_positions,
            CancelAllDone: self._on_cancel_done,
            SubmitOrder: self._on_submitted,
            OrderAccepted: self._on_order_event,
            OrderFilled: self._on_order_event,
            OrderRejected: self._on_order_event,
            OrderCancelled: self._on_order_event,
            ConnectorUp: self._on_connector_up,
            ConnectorDown: self._on_connector_down,
            SafetyEvent: lambda m: self._remember("safety", f"{m.severity.name} {m.kind} "
                                                  f"{m.venue}/{m.symbol}: {m.detail}"),
            ModeChanged: self._on_mode,
            ChildExited: self._on_child_exited,
            SupervisorGaveUp: lambda m: self._remember("gave_up", f"{m.supervisor}: {m.reason}"),
            _Wake: self._on_wake,
            GetFailsafeState: lambda _m: self.state(),
        }

    # ---- the procedure: the plan decides, the shell sends ---------------------------------

    def _on_flatten(self, request: FlattenRequested) -> None:
        self._remember("flatten_requested", f"{request.source}: {request.reason}")
        if self.running and (self._plan is None or self._plan.outcome() is None):
            return  # a run is under way and has no outcome yet
        if not self.latched:
            self.latched = True
            # The governor may have sent this, or may be down: telling it is idempotent.
            registry.tell(topics.RISK_GOVERNOR, EnterFailsafe(reason=request.reason))
        self.running = True
        self._reported = None
        self._trigger = request
        self._started_ns = now_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._incident = f"{stamp}-{self._started_ns % 1_000_000:06d}"
        self._actions = []
        self._plan = FlattenPlan(self._incident, self.venues, self.config.policy(), self._working.working)
        self.log.critical(f"FAILSAFE: flattening every venue ({request.source}: {request.reason})")
        self._send(self._plan.start(self.clock()))
        self._after_change()

    def _send(self, commands: list[tuple[str, Command]]) -> None:
        plan = self._plan
        down: set[str] = set()
        closing: list[str] = []
        for venue, command in commands:
            if plan is None or venue in down:
                continue
            if venue in self._down:   # a starting connector would take the command and lose it
                down.add(venue)
                plan.delivery_failed(venue)
                continue
            if isinstance(command, SubmitOrder):
                self._working.sent(venue, command.client_order_id)
                bus.publish(topics.SUBMITTED, command)
            if not registry.tell(venue, command):
                down.add(venue)
                plan.delivery_failed(venue)
            elif isinstance(command, SubmitOrder):
                closing.append(f"{command.side} {command.quantity} {command.symbol}")
            elif isinstance(command, CancelOrder):
                self._note("cancel_sent", venue=venue, order=command.client_order_id)
        if closing:
            self._note("closing_orders_sent", venue=commands[0][0], count=len(closing), orders=closing)

    def _after_change(self) -> None:
        """Take the plan's notes, re-arm the timer, publish a new outcome."""
        plan = self._plan
        if plan is None:
            return
        for note in plan.take_notes():
            self._note(note.action, venue=note.venue, detail=note.detail)
        self._arm(plan.next_wakeup())
        outcome = plan.outcome()
        if outcome is not None and outcome != self._reported:
            self._report(outcome)

    def _arm(self, at: float | None) -> None:
        self._cancel_timer()
        if at is None:
            return
        self._wake_token += 1
        self._timer = self._after(max(at - self.clock(), 0.0), _Wake(self._wake_token))

    def _on_wake(self, wake: _Wake) -> None:
        if wake.token != self._wake_token or self._plan is None:
            return
        self._send(self._plan.due(self.clock()))
        self._after_change()

    def _on_submitted(self, order: SubmitOrder) -> None:
        if order.source != FAILSAFE_SOURCE:  # our own were tracked when sent
            self._working.sent(order.venue, order.client_order_id)

    def _on_cancel_done(self, done: CancelAllDone) -> None:
        self._note("cancel_all_done", venue=done.venue)
        if self._plan is not None:
            self._plan.on_cancel_done(done.venue, done.request_id)
            self._after_change()

    def _on_positions(self, report: VenuePositions) -> None:
        plan = self._plan
        if plan is None:
            return
        orders = plan.on_positions(report, now_ns())
        if orders is None:
            return
        run = plan.runs[report.venue]
        self._note("venue_positions", venue=report.venue, round=run.round,
                   positions=_positions(run.last_positions))
        self._send(orders)
        self._after_change()

    def _on_order_event(self, event: OrderAccepted | OrderFilled | OrderRejected | OrderCancelled) -> None:
        self._working.apply(event)
        if self._plan is not None:
            self._plan.on_order_event(event, self.clock())
            self._after_change()

    def _on_connector_up(self, event: ConnectorUp) -> None:
        self._remember("connector_up", f"{event.name} generation {event.generation}")
        self._down.discard(event.name)
        self._up_generation[event.name] = event.generation
        if self.latched and self._plan is not None:
            self._send(self._plan.on_connector_up(event.name, self.clock()))
            self.running = True
            self._after_change()

    def _on_child_exited(self, event: ChildExited) -> None:
        self._remember("child_exited",
                       f"{event.supervisor}/{event.name} gen {event.generation}: {event.reason}")
        if event.name in self.venues and event.generation >= self._up_generation.get(event.name, -1):
            self._connector_gone(event.name)   # (a late notice of an older generation is not news)

    def _on_connector_down(self, event: ConnectorDown) -> None:
        self._remember("connector_down", event.name)
        self._connector_gone(event.name)

    def _connector_gone(self, venue: str) -> None:
        self._down.add(venue)
        if self._plan is not None:
            self._plan.on_connector_down(venue)
            self._after_change()

    def _on_mode(self, event: ModeChanged) -> None:
        self._remember("mode", f"{event.previous} -> {event.current}: {event.reason}")
        if event.previous is Mode.FAILSAFE and event.current is Mode.READY:
            self.latched = False
            self.running = False
            self._cancel_timer()
            self._plan = None
            self.log.warning("failsafe unlatched by an operator reset")

    def _report(self, flat: bool) -> None:
        plan = self._plan
        if plan is None:
            return
        self._reported = flat
        # A flat outcome ends the run; a NOT FLAT one keeps re-checking (running stays
        # true for the venues still down or out of attempts).
        self.running = not flat
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
            self.log.critical(f"FAILSAFE: NOT FLAT ({detail}); re-checking every "
                              f"{self.config.recheck_interval_s}s and retrying venues as they return; "
                              f"report {path}")
        bus.publish(topics.FAILSAFE, report)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- records --------------------------------------------------------------------

    def _remember(self, kind: str, text: str) -> None:
        self._timeline.append({"ts_ns": now_ns(), "kind": kind, "text": text})

    def _note(self, action: str, **fields: Any) -> None:
        entry = {"ts_ns": now_ns(), "action": action, **fields}
        self._actions.append(entry)
        self.log.bind(action=action).info(f"failsafe {action} {fields}")

    def _write_incident(self, flat: bool, states: dict[str, str], *, interrupted: bool = False) -> Path:
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
            "interrupted": interrupted,
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
            f"outcome:  {'FLAT at every venue' if document['flat'] else 'NOT FLAT'}"
            + (" (interrupted: the service stopped during the run)" if document.get("interrupted") else ""),
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
            "rounds_under_way": (sorted(v for v, s in self._plan.states().items() if s in BUSY)
                                 if self._plan is not None else []),
        }


def _positions(positions: tuple[VenuePosition, ...]) -> list[dict[str, str]]:
    """Venue positions as the incident report writes them."""
    return [{"symbol": p.symbol, "quantity": str(p.quantity), "average_price": str(p.average_price)}
            for p in positions]
