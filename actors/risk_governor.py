"""The risk governor: the actor shell over the mode machine and the pre-trade checks.

Every order from a strategy or an operator comes here. An order that passes
``core.checks.PreTradeChecks`` is written ahead to the journal, published on ``submitted``
(the position keeper journals its events) and then told to its connector; one that fails
is answered with ``OrderRejected`` carrying the check's reason code. The mode is decided by
``core.modes.ModeMachine`` (a new WARNING incident degrades, a new venue outage is counted;
CRITICAL events, too many incidents in a window, a venue outage past ``max_outage_s``, the
connectors supervisor giving up, the daily loss limit and an operator flatten latch FAILSAFE
until an operator resets it once the venues are confirmed flat); this actor journals, logs
and publishes each transition it returns. Signals are grouped into incidents by
``core.incidents.IncidentBook`` (one degradation per incident), and each venue's trading
state (ACTIVE, REDUCING, HALTED) is ``core.venues.VenueBook``'s. Venue rejections feed one
``core.rejections.CircuitBreaker`` per venue.

A restart never upgrades the mode: every incident is journaled (``incidents``) as it opens
and closes, and a governor restarted within the running process (its generation above 0)
starts from what ``core.restart.restoration`` makes of the journal (the mode, the
degradations in the window, the open incidents, each venue's outage and mismatch) instead
of STARTUP -> READY. A restart of a core actor (this one included) is itself an incident:
a WARNING, listed in the status (``core_restarts``) and counted as one degradation while
trading. The first start in a process starts afresh as it always did (READY, or FAILSAFE
when the journal holds the latch) and marks the start of the run in the journal.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from loguru import logger

from actors import topics
from actors.errors import JournalError, RiskError
from actors.journal import GOVERNOR_WRITER, Journal
from actors.log_budget import LogBudget
from core.checks import Desk, Limits, PreTradeChecks
from core.exposure import Exposure
from core.incidents import (
    CORE_RESTART,
    RECONCILIATION_MISMATCH,
    VENUE_DOWN,
    Incident,
    IncidentBook,
    IncidentKey,
)
from core.modes import TRADING_MODES, ForbiddenTransition, ModeChange, ModeMachine, ModeRules
from core.pnl import session_start_ns
from core.rejections import CircuitBreaker, is_venue_rejection
from core.restart import (
    CORE_ACTORS,
    OPERATOR_PAUSE,
    SERVICE_START,
    IncidentRecord,
    JournalFacts,
    RestartEvent,
    RestartLedger,
    restoration,
)
from core.venues import VenueBook, VenueChange
from messages import (
    ConnectorDown,
    ConnectorUp,
    EnterFailsafe,
    Escalation,
    FailsafeReport,
    FlattenRequested,
    GetRiskState,
    Mode,
    ModeChanged,
    OperatorCommand,
    OperatorVerb,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PortfolioSnapshot,
    QuoteBatch,
    Reconciliation,
    RejectReason,
    SafetyEvent,
    Severity,
    Shutdown,
    SubmitOrder,
    now_ns,
)
from messages.bounds import Amount, Duration, Tally, decimal_range
from messages.orders import FillBusted, FillCorrected
from supervision import (
    SUPERVISION_TOPIC,
    ChildExited,
    ChildStarted,
    SupervisedActor,
    SupervisorGaveUp,
    TimerHandle,
    bus,
    registry,
    scheduler,
)

__all__ = ["EnterFailsafe", "GetRiskState", "RiskConfig", "RiskGovernor", "Shutdown", "Tick"]


JOURNAL_WAIT_S = 0.5
"""Longest the governor waits for the journal's write lock before refusing an order."""


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Pre-trade limits and mode rules. A limit of 0 disables that check."""

    max_order_quantity: Amount = Decimal(1000)
    """Largest quantity of one order."""
    max_order_notional: Amount = Decimal(250_000)
    """Largest quantity x price of one order (price: the limit, else the last mid)."""
    max_position: Amount = Decimal(2000)
    """Largest absolute position per venue and symbol, counting working orders."""
    max_open_positions: Tally = 10
    """Most non-flat (venue, symbol) positions at once."""
    max_daily_notional: Amount = Decimal(5_000_000)
    """Most notional traded in one session, counting working orders."""
    daily_loss_limit: Amount = Decimal(10_000)
    """Daily P&L (realized + unrealized) at or below minus this triggers FAILSAFE."""
    max_orders_per_s: Tally = 50
    """Most orders accepted by the governor in any one-second window."""
    price_band_pct: Annotated[Decimal, decimal_range(ge=0, le=1000)] = Decimal(5)
    """Limit and stop prices more than this far (percent) from the last mid are refused."""
    degradations_to_failsafe: Tally = 3
    """Degradations within ``degradation_window_s`` that trigger FAILSAFE."""
    degradation_window_s: Duration = 300.0
    """Window for counting degradations."""
    recover_after_s: Duration = 10.0
    """DEGRADED returns to LIVE after this long with no new incident, the venues ready
    (``live_when``) and none unreconciled."""
    live_when: Literal["any", "all"] = "any"
    """READY goes LIVE (and LIVE stays LIVE) when ``any`` venue, or ``all`` of them, are
    connected and reconciled; the others are HALTED and refuse their orders."""
    max_outage_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0
    """A venue that was up and stays down longer than this escalates to FAILSAFE; 0 never.
    A shorter outage halts only that venue and counts as one incident."""
    incident_quiet_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 30.0
    """An incident without a recovery signal of its own (a price spike, slippage, ...)
    closes after this long without being raised again; while open it counts once and keeps
    its venue REDUCING."""
    circuit_rejections: Tally = 5
    """Venue rejections within ``circuit_window_s`` that open a venue's circuit breaker."""
    circuit_window_s: Duration = 60.0
    """Window for counting venue rejections."""
    circuit_cooldown_s: Duration = 30.0
    """How long an open circuit refuses orders before it lets one through (HALF_OPEN)."""


class Tick(msgspec.Struct, frozen=True):
    """Tell: run the timed rules now (DEGRADED -> LIVE recovery). The governor's own timer
    sends one every ``tick_s``."""


class RiskGovernor(SupervisedActor):
    """The shell: subscribes, hands each message to the core objects, journals and publishes
    what they decide, and schedules the timed rules."""

    def __init__(
        self,
        config: RiskConfig,
        state_dir: Path,
        venues: dict[str, tuple[str, ...]],
        journal_name: str = "journal.sqlite3",
        clock: Callable[[], float] = time.monotonic,
        *,
        session_boundary: str = "00:00",
        tick_s: float = 1.0,
    ) -> None:
        """``clock`` (monotonic seconds) times the rate limit, the degradation window, the
        recovery and the circuit breakers; ``session_boundary`` (``HH:MM`` UTC, the position
        keeper's) starts the trading day whose notional and P&L are read back from the journal
        on a restart; ``tick_s`` is the period of the timed rules."""
        super().__init__()
        self.config = config
        self.venues = venues
        self.clock = clock
        self.session_boundary = session_boundary
        self.tick_s = tick_s
        self._journal_path = Path(state_dir) / journal_name
        self._journal: Journal | None = None
        self.log = logger.bind(channel="governance")
        self.modes = ModeMachine(ModeRules(
            degradations_to_failsafe=config.degradations_to_failsafe,
            degradation_window_s=config.degradation_window_s,
            recover_after_s=config.recover_after_s,
        ))
        self.exposure = Exposure()
        self._circuits = {
            venue: CircuitBreaker(config.circuit_rejections, config.circuit_window_s,
                                  config.circuit_cooldown_s)
            for venue in venues
        }
        self.venue_book = VenueBook(tuple(venues), max_outage_s=config.max_outage_s,
                                    live_when=config.live_when)
        self.incidents = IncidentBook(config.incident_quiet_s)
        self._watch_quotes: set[str] = set()
        """Venues with an incident that quotes clear (a stale feed, a crossed book)."""
        self.desk = Desk(venues=venues, exposure=self.exposure, modes=self.modes, circuits=self._circuits,
                         venue_book=self.venue_book)
        self.checks = PreTradeChecks(Limits(
            max_order_quantity=config.max_order_quantity, max_order_notional=config.max_order_notional,
            max_position=config.max_position, max_open_positions=config.max_open_positions,
            max_daily_notional=config.max_daily_notional, daily_loss_limit=config.daily_loss_limit,
            max_orders_per_s=config.max_orders_per_s, price_band_pct=config.price_band_pct,
        ))
        self._own_rejections: dict[int, OrderRejected] = {}
        """Rejections this governor published, until they come back on ORDERS (by identity)."""
        self.counts = {"checked": 0, "passed": 0, "rejected": 0}
        self._refusal_log = LogBudget(burst=5, window_s=10.0)
        self._tick: TimerHandle | None = None
        self._run_marker = 0
        """The journal row that marks the start of this run (``core.restart``)."""
        self.restarts = RestartLedger()
        """The core actor restarts recorded in this run."""
        self._restart_alerts: deque[str] = deque(maxlen=20)
        """The latest core actor restarts in words, for status."""
        self._pause_row = 0
        """The journal row open while an operator has paused trading."""

    # ---- the state the status and the tests read --------------------------------------

    @property
    def mode(self) -> Mode:
        """The current trading mode."""
        return self.modes.mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        self.modes.mode = value

    @property
    def paused(self) -> bool:
        """True while an operator paused trading."""
        return self.desk.paused

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        for topic in (topics.MARKET, topics.ORDERS, topics.SAFETY, topics.CONNECTORS,
                      topics.PORTFOLIO, topics.FAILSAFE, SUPERVISION_TOPIC):
            bus.subscribe(topic, self.name)
        # A short busy timeout: an order the journal cannot take at once is refused rather
        # than left waiting behind another writer.
        self._journal = Journal(self._journal_path, busy_timeout_s=JOURNAL_WAIT_S, writer=GOVERNOR_WRITER)
        self.desk.client_ids = self._journal.client_order_ids()
        for fill in self._journal.fills():
            self.exposure.apply_fill(fill)
        # Until the position keeper publishes again, the day so far comes from the journal.
        session = session_start_ns(now_ns(), self.session_boundary)
        realized = self._journal.realized_pnl_since(session)
        self.exposure.portfolio = PortfolioSnapshot(
            daily_realized_pnl=realized, daily_pnl=realized,
            daily_traded_notional=self._journal.traded_notional_since(session), fills=self.exposure.fills,
        )
        history = self._journal.mode_history(limit=1)
        change = self._start_mode(history[-1] if history else None)
        self._made(change)
        if change.current is Mode.FAILSAFE:
            self._request_flatten(change.reason)
        self._record_own_restart(history[-1] if history else None)
        self._schedule_tick()

    def teardown(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self._journal is not None:
            self._journal.close()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            SubmitOrder: self._on_submit,
            QuoteBatch: self._on_quotes,
            OrderAccepted: self._on_accepted,
            OrderRejected: self._on_rejected,
            OrderFilled: self._on_filled,
            FillBusted: self.exposure.on_amendment,
            FillCorrected: self.exposure.on_amendment,
            OrderCancelled: self._on_cancelled,
            SafetyEvent: self._on_safety,
            ConnectorUp: self._on_connector_up,
            ConnectorDown: self._on_connector_down,
            ChildExited: self._on_child_exited,
            ChildStarted: self._on_child_started,
            SupervisorGaveUp: self._on_gave_up,
            PortfolioSnapshot: self._on_portfolio,
            Reconciliation: self._on_reconciliation,
            FailsafeReport: self._on_failsafe_report,
            OperatorCommand: self._on_operator,
            EnterFailsafe: lambda m: self.enter_failsafe(m.reason, source="failsafe", notify=False),
            Escalation: lambda m: self.enter_failsafe(f"escalation from {m.source}: {m.reason}",
                                                      source=m.source),
            Shutdown: self._on_shutdown,
            GetRiskState: lambda _m: self.state(),
            Tick: self._on_tick,
        }

    # ---- modes: the machine decides, the shell journals, logs and publishes ------------

    def transition(self, target: Mode, reason: str) -> None:
        """Move to ``target``; raises ``RiskError`` for a transition the table forbids."""
        try:
            change = self.modes.transition(target, reason)
        except ForbiddenTransition as exc:
            raise RiskError(str(exc)) from None
        self._made(change)

    def _made(self, change: ModeChange | None) -> None:
        """Journal, log and publish a transition the machine made, then its follow-up
        (READY -> LIVE when every venue is already up)."""
        if change is None:
            return
        previous, target, reason = change.previous, change.current, change.reason
        ts = now_ns()
        if self._journal is not None:
            try:
                self._journal.record_mode(previous, target, reason, ts)
            except JournalError as exc:
                # A transition is never lost because the disk failed: above all not FAILSAFE.
                self.log.critical(f"mode {previous} -> {target} could not be journaled: {exc}")
        level = "CRITICAL" if target is Mode.FAILSAFE else "WARNING" if target is Mode.DEGRADED else "INFO"
        self.log.bind(previous=str(previous), current=str(target)).log(
            level, f"mode {previous} -> {target}: {reason}"
        )
        bus.publish(topics.MODE, ModeChanged(previous=previous, current=target, reason=reason, ts_ns=ts))
        self._made(self.modes.venues_up(self.venue_book.ready(), self._ready_text()))

    def _ready_text(self) -> str:
        open_ = [name for name, state in self.venue_book.states().items() if state != "HALTED"]
        return f"venues trading ({self.config.live_when}): {', '.join(open_)}"

    def _venue_changed(self, change: VenueChange | None) -> None:
        """Log a venue's new state, then what it means for the global mode."""
        if change is not None:
            level = "WARNING" if change.current != "ACTIVE" else "INFO"
            self.log.bind(venue=change.venue, previous=str(change.previous), current=str(change.current)).log(
                level, f"venue {change.venue} {change.previous} -> {change.current}: {change.reason}")
        if self.venue_book.ready():
            self._made(self.modes.venues_up(True, self._ready_text()))
        else:
            self._made(self.modes.venues_lost(f"no longer trading on {self.config.live_when} venue(s)"))

    def _refresh_findings(self, venue: str) -> None:
        """Hand the venue's open safety incidents to the venue book (REDUCING while any)."""
        if self.incidents.watches_quotes(venue):
            self._watch_quotes.add(venue)
        else:
            self._watch_quotes.discard(venue)
        self._venue_changed(self.venue_book.set_findings(venue, self.incidents.findings(venue)))

    def incident(self, key: IncidentKey, reason: str, *, enter: bool = True) -> bool:
        """One signal of an incident: a new one is one degradation (``enter=False``: counted
        without leaving LIVE); a signal of an open one changes nothing. True when new."""
        opened = self.incidents.signal(key, self.clock(), reason)
        if opened is None:
            self.log.debug(f"incident continues: {reason}")
            return False
        counted = self.modes.mode in TRADING_MODES
        self.degrade(reason, enter=enter)
        self._journal_incident(opened, counted=counted)
        return True

    def degrade(self, reason: str, *, enter: bool = True) -> None:
        """Count a degradation (the machine's degradation rule)."""
        outcome = self.modes.degrade(reason, self.clock(), enter=enter)
        if outcome.escalate:
            self.enter_failsafe(outcome.escalate, source=self.name)
        elif outcome.noted:
            self.log.warning(f"degradation while DEGRADED: {reason}")
        self._made(outcome.change)

    def enter_failsafe(self, reason: str, *, source: str, notify: bool = True,
                       rerun: bool = False) -> None:
        """Latch FAILSAFE and start the flatten procedure (``notify``). Once latched, a
        further trigger only re-runs the procedure when asked to (``rerun``: an operator)."""
        entry = self.modes.enter_failsafe(reason, notify=notify, rerun=rerun)
        if entry.already and notify:
            self.log.warning(f"already FAILSAFE; further trigger: {reason}")
        self._made(entry.change)
        if entry.flatten:
            self._request_flatten(reason, source=source)

    def _request_flatten(self, reason: str, *, source: str = topics.RISK_GOVERNOR) -> None:
        registry.tell(topics.FAILSAFE_ACTOR, FlattenRequested(reason=reason, source=source, ts_ns=now_ns()))

    # ---- orders -----------------------------------------------------------------------

    def _on_submit(self, order: SubmitOrder) -> OrderRejected | None:
        self.counts["checked"] += 1
        try:
            rejection = self.check(order)
        except Exception as exc:  # a malformed order must not take the governor down
            self.log.exception("pre-trade check failed")
            rejection = RejectReason.MALFORMED, f"order could not be checked: {type(exc).__name__}: {exc}"
        if rejection is not None:
            reason, text = rejection
            self.counts["rejected"] += 1
            event = self._reject(order, reason, text)
            # Refusals a whole state causes (paused, FAILSAFE) are counted, not written one
            # by one: they would bury the operator audit trail in the governance log.
            if reason not in (RejectReason.MODE, RejectReason.PAUSED) or self._refusal_log.allow(
                    self.clock(), f"order refusals ({reason})"):
                self.log.bind(client_order_id=str(order.client_order_id), reason=str(reason)).info(
                    f"order refused: {text}"
                )
            if reason is RejectReason.DAILY_LOSS:
                self.enter_failsafe(text, source=self.name)
            return event
        # Write ahead: the order is on disk before any venue can see it, so a process killed
        # right after sending never leaves the venue with an order the journal lacks.
        try:
            assert self._journal is not None
            self._journal.record_order(order)
        except (JournalError, AssertionError) as exc:
            self.log.critical(f"order refused: the journal cannot record it: {exc}")
            return self._reject(order, RejectReason.JOURNAL, f"the journal cannot record the order: {exc}")
        self.counts["passed"] += 1
        self.desk.client_ids.add(order.client_order_id)
        self.checks.note_passed(self.desk.now)
        self.exposure.add_order(order)
        bus.publish(topics.SUBMITTED, order)
        if not registry.tell(order.venue, order):
            self.exposure.drop_working(order.client_order_id)
            return self._reject(order, RejectReason.VENUE_DOWN, f"connector {order.venue} is down")
        return None

    def check(self, order: SubmitOrder) -> tuple[RejectReason, str] | None:
        """Every pre-trade check, in order; the first failure is the answer."""
        self.desk.now = self.clock()
        return self.checks.run(order, self.desk)

    def _reject(self, order: SubmitOrder, reason: RejectReason, text: str) -> OrderRejected:
        """Publish the refusal of ``order`` on ORDERS (every field made safe to encode)."""
        def text_of(value: object) -> str:
            return value if isinstance(value, str) else repr(value)

        event = OrderRejected(client_order_id=text_of(order.client_order_id), venue=text_of(order.venue),
                              reason=reason, text=text, symbol=text_of(order.symbol),
                              source=text_of(order.source), ts_ns=now_ns())
        if len(self._own_rejections) > 10_000:  # nobody subscribed to ORDERS to echo them back
            self._own_rejections.clear()
        self._own_rejections[id(event)] = event
        bus.publish(topics.ORDERS, event)
        return event

    # ---- what happens ---------------------------------------------------------------

    def _on_quotes(self, batch: QuoteBatch) -> None:
        self.exposure.on_quotes(batch.venue, batch.quotes)
        if batch.venue in self._watch_quotes:
            self._quotes_recovery(batch)

    def _quotes_recovery(self, batch: QuoteBatch) -> None:
        """Fresh quotes end a stale-feed incident; an uncrossed quote ends its symbol's
        crossed-book incident."""
        closed = self.incidents.on_quotes(batch)
        if closed:
            for incident in closed:
                self.log.info(f"incident cleared: {incident.describe()} "
                              f"after {self.clock() - incident.opened:.3f}s, {incident.signals} signal(s)")
            self._refresh_findings(batch.venue)

    def _on_filled(self, fill: OrderFilled) -> None:
        if not self.exposure.on_fill(fill):
            return
        circuit = self._circuits.get(fill.venue)
        if circuit is not None:
            circuit.on_success()

    def _on_accepted(self, event: OrderAccepted) -> None:
        circuit = self._circuits.get(event.venue)
        if circuit is not None:
            circuit.on_success()

    def _on_rejected(self, event: OrderRejected) -> None:
        if self._own_rejections.pop(id(event), None) is event:
            return  # our own refusal coming back: it must not touch an order of the same id
        self.exposure.drop_working(event.client_order_id)
        # Anything else on ORDERS comes from a connector: the order was sent.
        if is_venue_rejection(event, sent=True):
            circuit = self._circuits.get(event.venue)
            if circuit is not None and circuit.on_rejection(self.clock()):
                self.log.warning(f"circuit breaker for {event.venue} opened after venue rejections")

    def _on_cancelled(self, event: OrderCancelled) -> None:
        self.exposure.drop_working(event.client_order_id)

    def _on_safety(self, event: SafetyEvent) -> None:
        where = f" {event.venue}/{event.symbol}" if event.venue else ""
        reason = f"{event.severity.name} {event.kind}{where}: {event.detail}"
        if event.severity >= Severity.CRITICAL:
            self.enter_failsafe(reason, source=topics.SAFETY_MONITOR)
        elif event.severity >= Severity.WARNING:
            # A reconciliation mismatch degrades here, once per incident; a venue's feed
            # going stale while its connector is down is part of that outage.
            self.incident(self.incidents.key_for(event.kind, event.venue, event.symbol), reason)
            if event.venue in self.venue_book.venues:
                self._refresh_findings(event.venue)

    def _on_connector_up(self, event: ConnectorUp) -> None:
        if event.name not in self.venues:
            return
        self.desk.up.add(event.name)
        for incident in self.incidents.clear(VENUE_DOWN, event.name):
            self.log.info(f"venue {event.name} back after {self.clock() - incident.opened:.3f}s "
                          f"({incident.signals} down signal(s), one incident)")
        self._venue_changed(self.venue_book.on_up(event.name))

    def _on_connector_down(self, event: ConnectorDown) -> None:
        # A lost session is an incident of the venue's; a connector stopping is not (its own
        # crash comes as an abnormal ChildExited, a stop the tree ordered is no incident).
        if event.name in self.venues:
            self._venue_down(event.name, f"connector {event.name} down: {event.reason}",
                             incident=event.lost)

    def _on_child_exited(self, event: ChildExited) -> None:
        if event.name in self.venues:
            self._venue_down(event.name, f"connector {event.name} down: {event.reason}",
                             incident=event.abnormal)

    def _venue_down(self, venue: str, reason: str, *, incident: bool) -> None:
        """The venue is down: HALTED, in an outage (``max_outage_s``), and the mode leaves
        LIVE only when the venues are no longer ready. ``incident``: the outage counts, once
        however many restarts it takes."""
        self.desk.up.discard(venue)
        self._venue_changed(self.venue_book.on_down(venue, self.clock()))
        if incident:
            self.incident(IncidentKey(VENUE_DOWN, venue), reason, enter=False)

    def _on_child_started(self, event: ChildStarted) -> None:
        self._on_core_started(event)
        if event.name == topics.FAILSAFE_ACTOR and self.modes.latched and not self.modes.failsafe_flat:
            # A restarted failsafe has forgotten its run: the venues are not confirmed flat yet.
            self._request_flatten("the failsafe restarted before the venues were confirmed flat")

    def _on_gave_up(self, event: SupervisorGaveUp) -> None:
        if event.supervisor == topics.CONNECTORS_SUPERVISOR:
            self.enter_failsafe(f"connectors supervisor gave up: {event.reason}", source="supervision")

    def _on_portfolio(self, snapshot: PortfolioSnapshot) -> None:
        self.exposure.on_portfolio(snapshot)
        limit = self.config.daily_loss_limit
        if limit > 0 and snapshot.daily_pnl <= -limit and self.mode in (Mode.LIVE, Mode.DEGRADED):
            self.enter_failsafe(f"daily loss limit: P&L {snapshot.daily_pnl} <= -{limit}", source=self.name)

    def _on_reconciliation(self, event: Reconciliation) -> None:
        # The keeper raises a WARNING SafetyEvent for the same mismatch, which degrades;
        # degrading here too would count one mismatch twice. The venue halts until a
        # reconciliation matches.
        if event.venue not in self.venues:
            return
        if not event.reconciled:
            self.log.warning(f"reconciliation mismatch at {event.venue}: {'; '.join(event.mismatches)}")
        else:
            for incident in self.incidents.clear(RECONCILIATION_MISMATCH, event.venue):
                self.log.info(f"incident cleared: {incident.describe()}: the venue reconciles")
        self._venue_changed(self.venue_book.on_reconciliation(event.venue, event.reconciled))

    def _on_failsafe_report(self, report: FailsafeReport) -> None:
        self.modes.on_failsafe_report(report.flat)

    def _on_operator(self, command: OperatorCommand) -> str:
        self.log.bind(operator=command.operator, verb=str(command.verb)).warning(
            f"operator {command.operator}: {command.verb} {command.reason}".rstrip()
        )
        verb = command.verb
        if verb is OperatorVerb.PAUSE:
            self.desk.paused = True
            return "paused: new orders are refused"
        if verb is OperatorVerb.RESUME:
            self.desk.paused = False
            return "resumed"
        if verb is OperatorVerb.FLATTEN:
            self.enter_failsafe(f"operator flatten by {command.operator}: {command.reason}".rstrip(": "),
                                source="operator", rerun=True)
            return "FAILSAFE: flattening every venue"
        if verb is OperatorVerb.RESET:
            reset = self.modes.reset(command.operator)
            if reset.change is None:
                return reset.refusal
            self._made(reset.change)
            return f"reset: mode is {self.mode}"
        return str(self.mode)

    def _on_shutdown(self, command: Shutdown) -> str:
        self._made(self.modes.shutdown(command.reason))
        return str(self.mode)

    def _on_tick(self, _tick: Tick) -> None:
        summary = self._refusal_log.summary(self.clock())
        if summary is not None:
            self.log.info(f"order refused: {summary}")
        now = self.clock()
        expired = self.incidents.expire(now)
        for venue in {i.key.venue for i in expired if i.key.venue in self.venue_book.venues}:
            self._refresh_findings(venue)
        for venue, lasted in self.venue_book.overdue(now):
            limit = self.config.max_outage_s
            self.enter_failsafe(f"venue {venue} down for {lasted:.1f}s (max_outage_s = {limit})",
                                source=self.name)
        blocking = self.venue_book.blocking_recovery()
        self._made(self.modes.recover(now, self.venue_book.ready() and not blocking))
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        if self._tick is not None:
            self._tick.cancel()  # a Tick told from outside must not start a second chain
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(Tick())
            except Exception:
                pass

        self._tick = scheduler.call_later(self.tick_s, tell)

    def state(self) -> dict[str, Any]:
        """Mode, pause, circuits and counters, for status."""
        return {
            "mode": str(self.mode),
            "paused": self.paused,
            "connectors_up": sorted(self.desk.up),
            "circuits": {venue: str(c.state) for venue, c in self._circuits.items()},
            "working_orders": len(self.exposure.working),
            "degradations_in_window": self.modes.degradations_in_window,
            "failsafe_flat": self.modes.failsafe_flat,
            "live_when": self.config.live_when,
            "venue_states": {name: str(state) for name, state in self.venue_book.states().items()},
            "venue_reasons": dict(self.venue_book.reasons()),
            "venue_outages_s": {name: round(lasted, 3) for name in self.venues
                                if (lasted := self.venue_book.outage_s(name, self.clock())) is not None},
            "open_incidents": [i.describe() for i in self.incidents.open()],
            "incidents_opened": self.incidents.opened_total,
            **self.counts,
            **self._restart_status(),
        }

    # ---- restarts: the journal's incidents, and what a restarted governor restores -------

    def on_receive(self, message: Any) -> Any:
        paused = self.desk.paused
        try:
            return super().on_receive(message)
        finally:
            self._journal_closed_incidents()
            if self.desk.paused != paused:
                self._journal_pause(self.desk.paused)

    def _start_mode(self, last: ModeChanged | None) -> ModeChange:
        """The first start in a process starts afresh (``ModeMachine.start``) and marks the
        run in the journal; a restart restores (``_restore``)."""
        if self.context.generation > 0:
            return self._restore(last)
        assert self._journal is not None
        now = now_ns()
        try:
            stale = self._journal.close_incidents(now)
            self._run_marker = self._journal.record_incident(
                SERVICE_START, "", "", "the service started", now, counted=False, closed_ns=now)
            if stale:
                self.log.info(f"{stale} incident(s) left open by the previous run closed: "
                              f"a new run starts afresh")
        except JournalError as exc:
            self.log.critical(f"the start of the run could not be journaled: {exc}")
        return self.modes.start(last)

    def _journal_facts(self, last: ModeChanged | None) -> JournalFacts:
        assert self._journal is not None
        marker = self._journal.last_incident_of(SERVICE_START)
        self._run_marker, started_ns = marker if marker is not None else (0, 0)
        records = [IncidentRecord(ref=i, kind=k, venue=v, symbol=sym, reason=r, opened_ns=o, closed_ns=c,
                                  counted=n)
                   for i, k, v, sym, r, o, c, n in self._journal.incident_rows(self._run_marker)]
        return JournalFacts(last_mode=last, incidents=records, run_started_ns=started_ns,
                            modes=self._journal.mode_history(limit=500),
                            reconciled=self._journal.last_reconciled_since(started_ns))

    def _restore(self, last: ModeChanged | None) -> ModeChange:
        """A restart within the running process: the mode, the degradation window, the open
        incidents and the venues' facts as the journal has them (``core.restart``)."""
        why = f"{self.name} restarted (generation {self.context.generation})"
        try:
            facts = self._journal_facts(last)
        except JournalError as exc:
            # Without the journal's incidents, the safe side: what the mode log says, and
            # the venues HALTED until they reconcile (as they are anyway after a restart).
            self.log.critical(f"{why}: the incidents could not be read from the journal: {exc}")
            facts = JournalFacts(last_mode=last)
        plan = restoration(facts, self.venues, now=self.clock(), now_wall_ns=now_ns(),
                           window_s=self.config.degradation_window_s)
        self.incidents.restore(plan.incidents, plan.opened_total)
        restarts = [r for r in facts.incidents if r.kind == CORE_RESTART]
        self.restarts.load(r.symbol for r in restarts)
        self._restart_alerts.extend(self._restart_text(r.symbol, r.reason, r.opened_ns) for r in restarts)
        for venue, memory in plan.venues.items():
            self.venue_book.restore(venue, ever_up=memory.ever_up, down_since=memory.down_since,
                                    mismatch=memory.mismatch)
            if self.incidents.watches_quotes(venue):
                self._watch_quotes.add(venue)
            self.venue_book.set_findings(venue, self.incidents.findings(venue))
        if plan.paused:
            self.desk.paused = True
            self._pause_row = plan.pause_ref
        self.log.bind(generation=self.context.generation).warning(f"{why}: restoring: {plan.describe()}")
        return self.modes.restore(last, plan.degradations, plan.last_degradation, why=why)

    def _record_own_restart(self, last: ModeChanged | None) -> None:
        """After a restart: record the core actors restarted (this one, and the position
        keeper when its restart is what restarted this one) as one incident; those after
        this one in the tree restart along with it (``core.restart.RestartLedger``)."""
        if self.context.generation <= 0:
            return
        generations = {self.name: self.context.generation}
        for name in CORE_ACTORS[:CORE_ACTORS.index(topics.RISK_GOVERNOR)]:
            generations[name] = registry.generation(name) or 0
        trading = last is not None and last.current in TRADING_MODES
        self._record_restarts(self.restarts.own_start(self.name, generations, self.clock()), trading=trading)

    def _on_core_started(self, event: ChildStarted) -> None:
        """A core actor after this one (re)started: record a restart not recorded yet."""
        if event.name not in CORE_ACTORS or event.name == self.name or event.generation <= 0:
            return
        self._record_restarts(self.restarts.started(event.name, event.generation, self.clock()),
                              trading=self.mode in TRADING_MODES)

    def _record_restarts(self, event: RestartEvent | None, *, trading: bool) -> None:
        """Journal, log and count a restart of core actors: one incident, counted as one
        degradation while trading (not when it restarted along with an earlier one)."""
        if event is None:
            return
        reason = event.reason
        now = now_ns()
        outcome = None
        incident = None
        if not event.along:
            incident = self.incidents.note(IncidentKey(CORE_RESTART, "", event.first), self.clock(), reason)
            outcome = self.modes.degrade_restart(reason, self.clock(), trading=trading)
        counted = outcome is not None and bool(outcome.escalate or outcome.noted)
        for index, (name, text) in enumerate(event.texts()):
            self._restart_alerts.append(self._restart_text(name, text, now))
            if self._journal is None:
                continue
            try:
                row = self._journal.record_incident(CORE_RESTART, "", name, text, now,
                                                   counted=counted and index == 0, closed_ns=now)
                if incident is not None and index == 0:
                    incident.ref = row
            except JournalError as exc:
                self.log.critical(f"the restart of {name} could not be journaled: {exc}")
        self.log.bind(actors=[name for name, _ in event.restarted], counted=counted).warning(
            f"{reason}: an alert" + ("; counted as a degradation" if counted else ""))
        if outcome is not None and outcome.escalate:
            self.enter_failsafe(outcome.escalate, source=self.name)

    @staticmethod
    def _restart_text(name: str, reason: str, ts_ns: int) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ns / 1e9))
        return f"{stamp} {name}: {reason}"

    def _restart_status(self) -> dict[str, Any]:
        return {"core_restarts": list(self._restart_alerts), "core_restarts_total": self.restarts.total}

    def _journal_incident(self, incident: Incident, *, counted: bool) -> None:
        """Journal an incident that opened (a restarted governor restores it)."""
        if self._journal is None:
            return
        try:
            incident.ref = self._journal.record_incident(
                incident.key.kind, incident.key.venue, incident.key.symbol, incident.reason, now_ns(),
                counted=counted)
        except JournalError as exc:
            self.log.critical(f"incident {incident.describe()} could not be journaled: {exc}")

    def _journal_pause(self, paused: bool) -> None:
        """Journal an operator's pause (open) or resume (closed): a restarted governor
        stays paused."""
        if self._journal is None:
            return
        now = now_ns()
        try:
            if paused:
                self._pause_row = self._journal.record_incident(
                    OPERATOR_PAUSE, "", "", "trading paused by an operator", now, counted=False)
            elif self._pause_row:
                self._journal.close_incidents(now, [self._pause_row])
                self._pause_row = 0
        except JournalError as exc:
            self.log.critical(f"the operator {'pause' if paused else 'resume'} could not be journaled: {exc}")

    def _journal_closed_incidents(self) -> None:
        closed = [i.ref for i in self.incidents.take_closed() if i.ref]
        if not closed or self._journal is None or self._journal.closed:
            return
        try:
            self._journal.close_incidents(now_ns(), closed)
        except JournalError as exc:
            self.log.critical(f"{len(closed)} closed incident(s) could not be journaled: {exc}")
