"""The risk governor: owner of the trading mode and of every pre-trade check.

Every order from a strategy or an operator comes here. An order that passes is published
on ``submitted`` (the position keeper journals it) and then told to its connector; one
that fails is answered with ``OrderRejected`` carrying a reason code. The governor also
decides the mode: WARNING safety events, connector crashes and reconciliation mismatches
degrade; CRITICAL events, too many degradations in a window, the connectors supervisor
giving up, the daily loss limit and an operator flatten put it into FAILSAFE, which is
latched until an operator resets it once the venues are confirmed flat.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
from loguru import logger

from actors import topics
from actors.errors import JournalError, RiskError
from actors.journal import Journal
from actors.log_budget import LogBudget
from actors.position_keeper import session_start_ns
from messages import (
    FAILSAFE_SOURCE,
    MODE_TRANSITIONS,
    ConnectorDown,
    ConnectorUp,
    Escalation,
    FailsafeReport,
    FlattenRequested,
    Mode,
    ModeChanged,
    OperatorCommand,
    OperatorVerb,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    PortfolioSnapshot,
    QuoteBatch,
    Reconciliation,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    TimeInForce,
    now_ns,
)
from messages.bounds import Amount, Duration, Tally, decimal_range
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

ZERO = Decimal(0)


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
    """DEGRADED returns to LIVE after this long with no degradation and every connector up."""
    circuit_rejections: Tally = 5
    """Venue rejections within ``circuit_window_s`` that open a venue's circuit breaker."""
    circuit_window_s: Duration = 60.0
    """Window for counting venue rejections."""
    circuit_cooldown_s: Duration = 30.0
    """How long an open circuit refuses orders before it lets one through (HALF_OPEN)."""


class GetRiskState(msgspec.Struct, frozen=True):
    """Ask: the governor's state as a dict (mode, paused, circuits, counters)."""


class EnterFailsafe(msgspec.Struct, frozen=True):
    """Tell: go to FAILSAFE (sent by the failsafe when it was triggered directly)."""

    reason: str


class Shutdown(msgspec.Struct, frozen=True):
    """Ask: go to SHUTDOWN (the service is stopping)."""

    reason: str = "service stopping"


class Tick(msgspec.Struct, frozen=True):
    """Tell: run the timed rules now (DEGRADED -> LIVE recovery). The governor's own timer
    sends one every ``tick_s``."""


class _WorkingTotals:
    """The working orders of one (venue, symbol): how many, and their signed quantities
    summed by side (``bought`` >= 0, ``sold`` <= 0)."""

    __slots__ = ("bought", "orders", "sold")

    def __init__(self) -> None:
        self.orders = 0
        self.bought = ZERO
        self.sold = ZERO

    def add(self, quantity: Decimal) -> None:
        """A working order of signed ``quantity``."""
        self.orders += 1
        if quantity > 0:
            self.bought += quantity
        else:
            self.sold += quantity

    def remove(self, quantity: Decimal) -> None:
        """A working order of signed ``quantity`` is no longer working."""
        self.orders -= 1
        if not self.orders:
            self.bought = self.sold = ZERO
        elif quantity > 0:
            self.bought -= quantity
        else:
            self.sold -= quantity


class CircuitBreaker:
    """CLOSED -> OPEN after too many venue rejections -> HALF_OPEN after a cool-down, where
    one order is let through: its acceptance closes the circuit, its rejection reopens it."""

    def __init__(self, rejections: int, window_s: float, cooldown_s: float) -> None:
        self.rejections = rejections
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.state = "CLOSED"
        self._times: deque[float] = deque()
        self._opened_at = 0.0
        self._probe_at: float | None = None

    def allow(self, now: float) -> bool:
        """May an order go to the venue now? In HALF_OPEN one probe is let through; if the
        venue never answers it (the session dropped), another goes after a further cool-down."""
        if self.state == "OPEN" and now - self._opened_at >= self.cooldown_s:
            self.state, self._probe_at = "HALF_OPEN", None
        if self.state == "OPEN":
            return False
        if self.state == "HALF_OPEN":
            if self._probe_at is not None and now - self._probe_at < self.cooldown_s:
                return False
            self._probe_at = now
        return True

    def on_rejection(self, now: float) -> None:
        """A venue rejection."""
        if self.rejections <= 0:
            return
        if self.state == "HALF_OPEN":
            self.state, self._opened_at = "OPEN", now
            return
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) >= self.rejections:
            self.state, self._opened_at = "OPEN", now
            self._times.clear()

    def on_success(self) -> None:
        """An acceptance or fill."""
        if self.state == "HALF_OPEN":
            self.state = "CLOSED"


class RiskGovernor(SupervisedActor):
    """Owns the mode machine and runs the pre-trade checks."""

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
        self.mode = Mode.STARTUP
        self.paused = False
        self.log = logger.bind(channel="governance")
        self._up: set[str] = set()
        self._mids: dict[tuple[str, str], Decimal] = {}
        self._positions: dict[tuple[str, str], Decimal] = {}
        self._working: dict[str, tuple[str, str, Decimal]] = {}
        self._working_totals: dict[tuple[str, str], _WorkingTotals] = {}
        """Per (venue, symbol): the working orders summed by side, kept with ``_working`` by
        ``_set_working`` and ``_drop_working`` so no check walks every working order."""
        self._client_ids: set[str] = set()
        self._fill_ids: set[tuple[str, str]] = set()
        self._unreported: deque[tuple[int, Decimal]] = deque()
        """(fill number, notional) of fills the last PortfolioSnapshot does not count yet."""
        self._unreported_notional = ZERO
        """The sum of the notionals in ``_unreported``."""
        self._own_rejections: dict[int, OrderRejected] = {}
        """Rejections this governor published, until they come back on ORDERS (by identity)."""
        self._order_times: deque[float] = deque()
        self._degradations: deque[float] = deque()
        self._last_degradation = 0.0
        self._portfolio = PortfolioSnapshot()
        self._failsafe_flat = False
        self._circuits = {
            venue: CircuitBreaker(config.circuit_rejections, config.circuit_window_s,
                                  config.circuit_cooldown_s)
            for venue in venues
        }
        self.counts = {"checked": 0, "passed": 0, "rejected": 0}
        self._refusal_log = LogBudget(burst=5, window_s=10.0)
        self._tick: TimerHandle | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        for topic in (topics.MARKET, topics.ORDERS, topics.SAFETY, topics.CONNECTORS,
                      topics.PORTFOLIO, topics.FAILSAFE, SUPERVISION_TOPIC):
            bus.subscribe(topic, self.name)
        # A short busy timeout: an order the journal cannot take at once is refused rather
        # than left waiting behind another writer.
        self._journal = Journal(self._journal_path, busy_timeout_s=JOURNAL_WAIT_S)
        self._client_ids = self._journal.client_order_ids()
        for fill in self._journal.fills():
            self._apply_fill(fill)
        # Until the position keeper publishes again, the day so far comes from the journal.
        session = session_start_ns(now_ns(), self.session_boundary)
        realized = self._journal.realized_pnl_since(session)
        self._portfolio = PortfolioSnapshot(
            daily_realized_pnl=realized, daily_pnl=realized,
            daily_traded_notional=self._journal.traded_notional_since(session), fills=len(self._fill_ids),
        )
        history = self._journal.mode_history(limit=1)
        # FAILSAFE -> SHUTDOWN (a stop while latched) still leaves the latch set.
        last = history[-1] if history else None
        if last is not None and (last.current is Mode.FAILSAFE or (
                last.current is Mode.SHUTDOWN and last.previous is Mode.FAILSAFE)):
            # The latch survives a restart: only an operator reset leaves FAILSAFE, and only
            # once the failsafe has confirmed (again) that every venue is flat.
            reason = "restored: FAILSAFE is latched until an operator reset"
            self._set_mode(Mode.FAILSAFE, reason, validate=False)
            self._request_flatten(reason)
        else:
            self._set_mode(Mode.READY, "started")
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

    # ---- modes ----------------------------------------------------------------------

    def transition(self, target: Mode, reason: str) -> None:
        """Move to ``target``; raises ``RiskError`` for a transition the design forbids."""
        if target not in MODE_TRANSITIONS[self.mode]:
            raise RiskError(f"mode transition {self.mode} -> {target} is not allowed ({reason})")
        self._set_mode(target, reason)

    def _set_mode(self, target: Mode, reason: str, *, validate: bool = True) -> None:
        previous = self.mode
        if validate and target not in MODE_TRANSITIONS[previous]:
            raise RiskError(f"mode transition {previous} -> {target} is not allowed ({reason})")
        self.mode = target
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
        if target is Mode.READY and self._all_up():
            self._set_mode(Mode.LIVE, "every connector is up")

    def _all_up(self) -> bool:
        return bool(self.venues) and all(v in self._up for v in self.venues)

    def degrade(self, reason: str) -> None:
        """Count a degradation; DEGRADED from LIVE, FAILSAFE when too many in the window."""
        if self.mode not in (Mode.LIVE, Mode.DEGRADED):
            return
        now = self.clock()
        self._last_degradation = now
        self._degradations.append(now)
        while self._degradations and now - self._degradations[0] > self.config.degradation_window_s:
            self._degradations.popleft()
        limit = self.config.degradations_to_failsafe
        if limit > 0 and len(self._degradations) >= limit:
            self.enter_failsafe(
                f"{len(self._degradations)} degradations within {self.config.degradation_window_s}s; "
                f"last: {reason}", source=self.name,
            )
            return
        if self.mode is Mode.LIVE:
            self.transition(Mode.DEGRADED, reason)
        else:
            self.log.warning(f"degradation while DEGRADED: {reason}")

    def enter_failsafe(self, reason: str, *, source: str, notify: bool = True,
                       rerun: bool = False) -> None:
        """Latch FAILSAFE and start the flatten procedure (``notify``). Once latched, a
        further trigger only re-runs the procedure when asked to (``rerun``: an operator)."""
        if self.mode is Mode.SHUTDOWN:
            return
        newly = self.mode is not Mode.FAILSAFE
        if newly:
            # FAILSAFE is reachable from LIVE and DEGRADED; from STARTUP or READY (nothing
            # trades there yet) an emergency still latches it rather than being ignored.
            self._set_mode(Mode.FAILSAFE, reason, validate=self.mode in (Mode.LIVE, Mode.DEGRADED))
            self._failsafe_flat = False
        elif notify:
            self.log.warning(f"already FAILSAFE; further trigger: {reason}")
        if notify and (newly or rerun):
            self._request_flatten(reason, source=source)

    def _request_flatten(self, reason: str, *, source: str = "risk_governor") -> None:
        registry.tell("failsafe", FlattenRequested(reason=reason, source=source, ts_ns=now_ns()))

    # ---- pre-trade checks -----------------------------------------------------------

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
        self._client_ids.add(order.client_order_id)
        self._order_times.append(self.clock())
        self._set_working(order.client_order_id, (order.venue, order.symbol, order.signed_quantity))
        bus.publish(topics.SUBMITTED, order)
        if not registry.tell(order.venue, order):
            self._drop_working(order.client_order_id)
            return self._reject(order, RejectReason.VENUE_DOWN, f"connector {order.venue} is down")
        return None

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

    def check(self, order: SubmitOrder) -> tuple[RejectReason, str] | None:
        """Every pre-trade check, in order; the first failure is the answer."""
        cfg = self.config
        malformed = _malformed(order)
        if malformed is not None:
            return RejectReason.MALFORMED, malformed
        key = (order.venue, order.symbol)
        if order.venue not in self.venues:
            return RejectReason.UNKNOWN_VENUE, f"unknown venue {order.venue!r}"
        if self.venues[order.venue] and order.symbol not in self.venues[order.venue]:
            return RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {order.symbol!r} at {order.venue}"
        if order.client_order_id in self._client_ids or order.client_order_id in self._working:
            return RejectReason.DUPLICATE_ID, f"client order id {order.client_order_id} already used"
        failsafe = order.source == FAILSAFE_SOURCE
        if self.mode is Mode.FAILSAFE and not failsafe:
            return RejectReason.MODE, "FAILSAFE: only the failsafe's own orders pass"
        if failsafe:
            if not order.reduce_only:
                return RejectReason.REDUCE_ONLY, "the failsafe's orders must be reduce-only"
            return None
        if self.mode not in (Mode.LIVE, Mode.DEGRADED):
            return RejectReason.MODE, f"not trading in mode {self.mode}"
        if self.paused:
            return RejectReason.PAUSED, "trading is paused by an operator"
        if order.venue not in self._up:
            return RejectReason.VENUE_DOWN, f"connector {order.venue} is not connected"
        position = self._positions.get(key, ZERO)
        reduces = position != 0 and (position > 0) != (order.side.sign > 0) \
            and order.quantity <= abs(position) - self._working_reducing(key, position)
        if order.reduce_only and not reduces:
            return RejectReason.REDUCE_ONLY, "reduce-only order would not reduce the position"
        if self.mode is Mode.DEGRADED and not reduces:
            return RejectReason.REDUCE_ONLY, "DEGRADED: only orders that reduce a position pass"
        now = self.clock()
        while self._order_times and now - self._order_times[0] >= 1.0:
            self._order_times.popleft()
        if cfg.max_orders_per_s > 0 and len(self._order_times) >= cfg.max_orders_per_s:
            return RejectReason.RATE_LIMIT, f"more than {cfg.max_orders_per_s} orders in one second"
        if cfg.max_order_quantity > 0 and order.quantity > cfg.max_order_quantity:
            return RejectReason.MAX_QUANTITY, f"quantity {order.quantity} above {cfg.max_order_quantity}"
        mid = self._mids.get(key)
        for label, price in (("limit", order.limit_price), ("stop", order.stop_price)):
            if price is not None and mid is not None and cfg.price_band_pct > 0:
                off_pct = abs(price - mid) / mid * 100
                if off_pct > cfg.price_band_pct:
                    return RejectReason.PRICE_BAND, (
                        f"{label} price {price} is {off_pct:.2f}% from mid {mid} "
                        f"(band {cfg.price_band_pct}%)"
                    )
        price = order.limit_price or mid
        if price is None:
            return RejectReason.NO_MARKET, f"no market for {order.symbol} at {order.venue} to price the order"
        notional = order.quantity * price
        if cfg.max_order_notional > 0 and notional > cfg.max_order_notional:
            return RejectReason.MAX_NOTIONAL, f"notional {notional} above {cfg.max_order_notional}"
        # Worst case: every working order on the order's side fills, none on the other side.
        exposure = position + self._working_on_side(key, order.side) + order.signed_quantity
        if cfg.max_position > 0 and abs(exposure) > cfg.max_position and not reduces:
            return RejectReason.MAX_POSITION, f"position could reach {exposure} (max {cfg.max_position})"
        if cfg.max_open_positions > 0 and position == 0 and key not in self._working_keys():
            open_keys = self._working_keys() | {k for k, q in self._positions.items() if q != 0}
            if len(open_keys) >= cfg.max_open_positions:
                return RejectReason.MAX_OPEN_POSITIONS, (
                    f"{len(open_keys)} positions open or being opened (max {cfg.max_open_positions})"
                )
        if cfg.max_daily_notional > 0:
            traded = (self._portfolio.daily_traded_notional + self._unreported_notional
                      + self._working_notional() + notional)
            if traded > cfg.max_daily_notional:
                return RejectReason.MAX_DAILY_NOTIONAL, (
                    f"daily notional would reach {traded} (max {cfg.max_daily_notional})"
                )
        if cfg.daily_loss_limit > 0 and self._portfolio.daily_pnl <= -cfg.daily_loss_limit:
            return RejectReason.DAILY_LOSS, (
                f"daily P&L {self._portfolio.daily_pnl} at or below -{cfg.daily_loss_limit}"
            )
        circuit = self._circuits.get(order.venue)
        if circuit is not None and not circuit.allow(now):
            return RejectReason.CIRCUIT_OPEN, f"circuit breaker for {order.venue} is {circuit.state}"
        return None

    def _set_working(self, client_order_id: str, entry: tuple[str, str, Decimal]) -> None:
        """Record (or update) a working order and its per-symbol totals."""
        self._drop_working(client_order_id)
        self._working[client_order_id] = entry
        venue, symbol, quantity = entry
        totals = self._working_totals.get((venue, symbol))
        if totals is None:
            totals = self._working_totals[(venue, symbol)] = _WorkingTotals()
        totals.add(quantity)

    def _drop_working(self, client_order_id: str) -> None:
        """Forget a working order (no effect when it is not working)."""
        entry = self._working.pop(client_order_id, None)
        if entry is None:
            return
        venue, symbol, quantity = entry
        totals = self._working_totals[(venue, symbol)]
        totals.remove(quantity)
        if not totals.orders:
            del self._working_totals[(venue, symbol)]

    def _working_on_side(self, key: tuple[str, str], side: Side) -> Decimal:
        """Signed quantity of the working orders for ``key`` on ``side``."""
        totals = self._working_totals.get(key)
        if totals is None:
            return ZERO
        return totals.bought if side is Side.BUY else totals.sold

    def _working_keys(self) -> set[tuple[str, str]]:
        return set(self._working_totals)

    def _working_reducing(self, key: tuple[str, str], position: Decimal) -> Decimal:
        """Quantity already working against ``position`` (so two reducing orders cannot flip it)."""
        totals = self._working_totals.get(key)
        if totals is None:
            return ZERO
        return -totals.sold if position > 0 else totals.bought

    def _working_notional(self) -> Decimal:
        total = ZERO
        for key, totals in self._working_totals.items():
            mid = self._mids.get(key)
            if mid is not None:
                total += (totals.bought - totals.sold) * mid
        return total

    # ---- what happens ---------------------------------------------------------------

    def _on_quotes(self, batch: QuoteBatch) -> None:
        mids = self._mids
        for quote in batch.quotes:
            if quote.bid > 0 and quote.ask >= quote.bid:
                mids[(batch.venue, quote.symbol)] = (quote.bid + quote.ask) / 2

    def _apply_fill(self, fill: OrderFilled) -> bool:
        key = (fill.venue, fill.fill_id)
        if key in self._fill_ids:
            return False
        self._fill_ids.add(key)
        pos_key = (fill.venue, fill.symbol)
        self._positions[pos_key] = self._positions.get(pos_key, ZERO) + fill.signed_quantity
        return True

    def _on_filled(self, fill: OrderFilled) -> None:
        if not self._apply_fill(fill):
            return
        # Counted in the daily notional until a PortfolioSnapshot includes it: the order
        # stops counting as working now, the keeper's snapshot comes a moment later.
        notional = abs(fill.quantity * fill.price)
        self._unreported.append((len(self._fill_ids), notional))
        self._unreported_notional += notional
        working = self._working.get(fill.client_order_id)
        if working is not None:
            if fill.leaves_quantity <= 0:
                self._drop_working(fill.client_order_id)
            else:
                venue, symbol, qty = working
                sign = 1 if qty > 0 else -1
                self._set_working(fill.client_order_id, (venue, symbol, fill.leaves_quantity * sign))
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
        self._drop_working(event.client_order_id)
        if event.reason is RejectReason.VENUE:
            circuit = self._circuits.get(event.venue)
            if circuit is not None:
                before = circuit.state
                circuit.on_rejection(self.clock())
                if circuit.state == "OPEN" and before != "OPEN":
                    self.log.warning(f"circuit breaker for {event.venue} opened after venue rejections")

    def _on_cancelled(self, event: OrderCancelled) -> None:
        self._drop_working(event.client_order_id)

    def _on_safety(self, event: SafetyEvent) -> None:
        where = f" {event.venue}/{event.symbol}" if event.venue else ""
        reason = f"{event.severity.name} {event.kind}{where}: {event.detail}"
        if event.severity >= Severity.CRITICAL:
            self.enter_failsafe(reason, source="safety_monitor")
        elif event.severity >= Severity.WARNING:
            self.degrade(reason)  # a reconciliation mismatch degrades here, once

    def _on_connector_up(self, event: ConnectorUp) -> None:
        if event.name not in self.venues:
            return
        self._up.add(event.name)
        if self.mode is Mode.READY and self._all_up():
            self.transition(Mode.LIVE, "every connector is up")

    def _on_connector_down(self, event: ConnectorDown) -> None:
        self._up.discard(event.name)

    def _on_child_exited(self, event: ChildExited) -> None:
        if event.name in self.venues:
            self._up.discard(event.name)
            if event.abnormal:
                self.degrade(f"connector {event.name} down: {event.reason}")

    def _on_child_started(self, event: ChildStarted) -> None:
        if event.name == "failsafe" and self.mode is Mode.FAILSAFE and not self._failsafe_flat:
            # A restarted failsafe has forgotten its run: the venues are not confirmed flat yet.
            self._request_flatten("the failsafe restarted before the venues were confirmed flat")

    def _on_gave_up(self, event: SupervisorGaveUp) -> None:
        if event.supervisor == "connectors":
            self.enter_failsafe(f"connectors supervisor gave up: {event.reason}", source="supervision")

    def _on_portfolio(self, snapshot: PortfolioSnapshot) -> None:
        self._portfolio = snapshot
        while self._unreported and self._unreported[0][0] <= snapshot.fills:
            self._unreported_notional -= self._unreported.popleft()[1]
        if not self._unreported:
            self._unreported_notional = ZERO
        limit = self.config.daily_loss_limit
        if limit > 0 and snapshot.daily_pnl <= -limit and self.mode in (Mode.LIVE, Mode.DEGRADED):
            self.enter_failsafe(f"daily loss limit: P&L {snapshot.daily_pnl} <= -{limit}", source=self.name)

    def _on_reconciliation(self, event: Reconciliation) -> None:
        # The keeper raises a WARNING SafetyEvent for the same mismatch, which degrades;
        # degrading here too would count one mismatch twice.
        if not event.reconciled:
            self.log.warning(f"reconciliation mismatch at {event.venue}: {'; '.join(event.mismatches)}")

    def _on_failsafe_report(self, report: FailsafeReport) -> None:
        self._failsafe_flat = report.flat

    def _on_operator(self, command: OperatorCommand) -> str:
        self.log.bind(operator=command.operator, verb=str(command.verb)).warning(
            f"operator {command.operator}: {command.verb} {command.reason}".rstrip()
        )
        verb = command.verb
        if verb is OperatorVerb.PAUSE:
            self.paused = True
            return "paused: new orders are refused"
        if verb is OperatorVerb.RESUME:
            self.paused = False
            return "resumed"
        if verb is OperatorVerb.FLATTEN:
            self.enter_failsafe(f"operator flatten by {command.operator}: {command.reason}".rstrip(": "),
                                source="operator", rerun=True)
            return "FAILSAFE: flattening every venue"
        if verb is OperatorVerb.RESET:
            if self.mode is not Mode.FAILSAFE:
                return f"nothing to reset: mode is {self.mode}"
            if not self._failsafe_flat:
                return "refused: the venues are not confirmed flat yet"
            self._degradations.clear()
            self.transition(Mode.READY, f"operator reset by {command.operator}")
            return f"reset: mode is {self.mode}"
        return str(self.mode)

    def _on_shutdown(self, command: Shutdown) -> str:
        if self.mode is not Mode.SHUTDOWN:
            self._set_mode(Mode.SHUTDOWN, command.reason, validate=False)
        return str(self.mode)

    def _on_tick(self, _tick: Tick) -> None:
        summary = self._refusal_log.summary(self.clock())
        if summary is not None:
            self.log.info(f"order refused: {summary}")
        if (self.mode is Mode.DEGRADED and self._all_up()
                and self.clock() - self._last_degradation >= self.config.recover_after_s):
            self.transition(Mode.LIVE, f"no degradation for {self.config.recover_after_s}s")
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
            "connectors_up": sorted(self._up),
            "circuits": {venue: c.state for venue, c in self._circuits.items()},
            "working_orders": len(self._working),
            "degradations_in_window": len(self._degradations),
            "failsafe_flat": self._failsafe_flat,
            **self.counts,
        }


def _positive(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and value > 0


def _malformed(order: SubmitOrder) -> str | None:
    """Why ``order`` is not a well-formed order, or None. The struct validates itself when
    built or decoded; this also holds for one that was not (the governor must survive it)."""
    for name in ("client_order_id", "venue", "symbol"):
        value = getattr(order, name, None)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string, got {value!r}"
    if not isinstance(order.source, str):
        return f"source must be a string, got {order.source!r}"
    for name, kind in (("side", Side), ("order_type", OrderType), ("time_in_force", TimeInForce)):
        if not isinstance(getattr(order, name, None), kind):
            return f"{name} must be a {kind.__name__}, got {getattr(order, name, None)!r}"
    if not _positive(order.quantity):
        return f"quantity must be a positive finite number, got {order.quantity}"
    for name in ("limit_price", "stop_price"):
        value = getattr(order, name)
        if value is not None and not _positive(value):
            return f"{name} must be a positive finite number, got {value}"
    if order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and order.limit_price is None:
        return f"a {order.order_type} order needs a limit price"
    if order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and order.stop_price is None:
        return f"a {order.order_type} order needs a stop price"
    if not isinstance(order.reduce_only, bool):
        return f"reduce_only must be a bool, got {order.reduce_only!r}"
    return None
