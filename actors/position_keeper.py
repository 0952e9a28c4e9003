"""The position keeper: journal, positions, P&L and reconciliation with the venues.

Every fill is committed to the journal before it changes a position, with ``INSERT OR
IGNORE`` on (venue, fill id): a fill delivered twice (a connector resynchronising after a
restart) is applied once. On start the keeper replays the journal's fills in order, so a
restarted keeper holds exactly the positions it held before.

The arithmetic (positions, average price, realized P&L, the session boundary) is
``core.pnl``; this actor journals, replays, marks, publishes and schedules. Open positions
are marked to the last valid mid per (venue, symbol) (``core.exposure.is_valid_quote``);
unrealized P&L is computed only when a snapshot is made.

The keeper's journal writes fills, order events (with the order status they imply) and
reconciliations; the order rows themselves are written ahead by the risk governor, except
the failsafe's closing orders, which the keeper journals from ``submitted``.

The keeper publishes a ``PortfolioSnapshot`` on PORTFOLIO after every applied fill and, as
marks move, at most every ``publish_interval_s``.

Reconciliation (``core.reconcile``): every ``VenuePositions`` -- the connector's own after
each (re)connect, each failsafe round's, and the keeper's periodic request, sent to every
connected venue ``reconcile_interval_s`` after its last comparison -- is compared with the
journal's positions for that venue. The ``Reconciliation`` (with the differences and since
when the venue is reconciled or not) goes out on PORTFOLIO and is journaled; a
new disagreement (or a change in the differences) also raises a ``reconciliation_mismatch``
safety event, once: the same differences found again raise nothing new. A mismatch stays
until a later comparison agrees.

When the report lists the venue's working orders (``VenuePositions.open_orders``), they are
compared with the orders the journal holds working there (pending, accepted, partially
filled): an order working on one side only is a difference, under the same confirmation
rule as positions. An order whose journal state changed within ``order_settle_s`` of the
report is left out of that comparison (the venue's list may not show the change yet), and
so is one the venue has not acknowledged yet unless ``compare_unacknowledged``.

Trade busts and corrections (``FillBusted`` / ``FillCorrected``, ``core.amendments``) are
journaled once each (``fill_amendments``, keyed by the venue's id of the amendment; a
repeat, or a replay after a restart, changes nothing) and applied by rebuilding the
position from the executions in effect, so a bust takes back its quantity and the P&L it
realized (the change is booked on the day of the amendment). A fill of an order the
journal does not hold for that venue is external activity: journaled with ``external``
set and the venue's ids, applied, logged and raised as a WARNING (``external_fill``). Both
make the venue unreconciled at once (``ReconcileState.mark_unreconciled``: a
``Reconciliation`` that is not reconciled, journaled and published) and ask the venue for
its positions; it is reconciled again when they agree with the journal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.errors import JournalError
from actors.journal import KEEPER_WRITER, Journal
from core.amendments import AmendedFills, Amendment, amendment_id, describe, rebuild_position
from core.exposure import is_valid_quote, mid_of
from core.flatten import attributed_close, looks_like_failsafe_order, sent_by_failsafe
from core.pnl import (
    DAY_NS,
    DailyTotals,
    FillEffect,
    Position,
    apply_fill,
    next_session_ns,
    parse_boundary,
    session_start_ns,
)
from core.reconcile import (
    ReconcileSchedule,
    ReconcileState,
    compare,
    order_differences,
    prune_changes,
    unsettled_orders,
)
from messages import (
    FAILSAFE_SOURCE,
    CancelAllDone,
    ConnectorDown,
    ConnectorUp,
    GetOrderCounts,
    GetPortfolio,
    GetReconciliations,
    GetSourceBook,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    OrderTotals,
    OrderType,
    PortfolioSnapshot,
    PositionState,
    Quote,
    QuoteBatch,
    Reconciliation,
    RequestPositions,
    SafetyEvent,
    Severity,
    SourceBook,
    SourceOrder,
    SourcePosition,
    SubmitOrder,
    VenuePositions,
    now_ns,
)
from messages.bounds import FileName
from messages.orders import FillBusted, FillCorrected
from supervision import SupervisedActor, TimerHandle, bus, registry, scheduler

__all__ = [
    "DAY_NS", "FillEffect", "GetPortfolio", "GetReconciliations", "KeeperConfig", "Position",
    "PositionKeeper", "apply_fill", "mid_of", "parse_boundary", "session_start_ns",
]

ZERO = Decimal(0)

Clock = Callable[[], int]
"""Wall clock in nanoseconds."""


class KeeperConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of the position keeper."""

    session_boundary: Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "00:00"
    """Time of day, ``HH:MM`` UTC, at which the trading day (and daily P&L) starts."""
    publish_interval_s: Annotated[float, Meta(ge=0.0, le=3600.0)] = 0.25
    """Least time between two snapshots published because marks moved (fills publish at once)."""
    journal_name: FileName = "journal.sqlite3"
    """File name of the journal inside the state directory."""
    journal_busy_timeout_s: Annotated[float, Meta(ge=0.001, le=3600.0)] = 5.0
    """How long a journal write waits for another writer before it fails (and the keeper
    crashes, to be restarted and replay the journal)."""
    reconcile_interval_s: Annotated[float, Meta(ge=0.1, le=3600.0)] = 30.0
    """How often each connected venue's positions are compared with the journal (besides
    after every reconnect and failsafe round); 0.1..3600 seconds."""
    mismatch_confirmations: Annotated[int, Meta(ge=1, le=20)] = 3
    """Comparisons in a row that must disagree before a reconciled venue is a mismatch (a
    fill on its way to the journal makes one comparison disagree); 1 confirms at once."""
    mismatch_recheck_s: Annotated[float, Meta(ge=0.05, le=60.0)] = 0.5
    """How soon the venue is asked again after a comparison that disagreed."""
    order_settle_s: Annotated[float, Meta(ge=0.0, le=60.0)] = 2.0
    """An order whose journal state changed less than this long before a venue's report
    (submitted, acknowledged, filled, ended) is left out of that report's comparison of
    working orders: the venue's list may not show the change yet. 0..60 seconds."""
    compare_unacknowledged: bool = False
    """Compare the orders the venue has not acknowledged yet (journal status pending) with
    its working orders too. Off: such an order is left out of the comparison until the
    venue acknowledges or ends it (an order lost in flight is then not a reconciliation
    difference: the connector's recovery, or an order status query, ends it)."""

    def __post_init__(self) -> None:
        parse_boundary(self.session_boundary)
        if self.publish_interval_s < 0:
            raise ValueError(f"publish_interval_s: must not be negative, got {self.publish_interval_s}")
        if not self.journal_name or "/" in self.journal_name:
            raise ValueError(f"journal_name: must be a plain file name, got {self.journal_name!r}")
        if self.journal_busy_timeout_s <= 0:
            raise ValueError(f"journal_busy_timeout_s: must be positive, got {self.journal_busy_timeout_s}")
        if not math.isfinite(self.reconcile_interval_s) or not 0.1 <= self.reconcile_interval_s <= 3600:
            raise ValueError(f"reconcile_interval_s: expected 0.1..3600 seconds, "
                             f"got {self.reconcile_interval_s}")


class _PublishDue(msgspec.Struct, frozen=True):
    pass


class _SessionRollover(msgspec.Struct, frozen=True):
    pass


class _ReconcileDue(msgspec.Struct, frozen=True):
    token: int


class PositionKeeper(SupervisedActor):
    """Journals orders and fills, keeps positions and P&L, reconciles with the venues."""

    def __init__(self, config: KeeperConfig, state_dir: Path, *, clock: Clock = now_ns) -> None:
        """``clock`` (wall clock ns) decides the session and stamps journal rows; tests
        inject one to cross the session boundary deterministically."""
        super().__init__()
        self.config = config
        self.state_dir = Path(state_dir)
        self.journal_path = self.state_dir / config.journal_name
        self._clock = clock
        self._log = logger.bind(channel="main", actor=topics.POSITION_KEEPER)
        self._journal: Journal | None = None
        self._positions: dict[tuple[str, str], Position] = {}
        self._open: dict[str, set[str]] = {}
        """Symbols with a non-flat position, per venue (decides whether quotes matter)."""
        self._marks: dict[str, dict[str, Quote]] = {}
        """Last usable quote per venue and symbol; the mid is taken only when publishing."""
        self._fills = 0
        self._day = DailyTotals()
        self._reconciliations: dict[str, Reconciliation] = {}
        self._marks_dirty = False
        self._last_publish = 0.0
        self._publish_timer: TimerHandle | None = None
        self._rollover_timer: TimerHandle | None = None
        self._standing = ReconcileState(confirmations=config.mismatch_confirmations)
        self._schedule = ReconcileSchedule(config.reconcile_interval_s)
        self._connected: set[str] = set()
        self._reconcile_timer: TimerHandle | None = None
        self._reconcile_token = 0
        self._requests = 0
        self._order_changes: dict[str, int] = {}
        """When each order's journal state last changed (keeper clock ns), kept while it is
        recent enough to leave the order out of a comparison of working orders."""
        self._corrections: set[tuple[str, str]] = set()
        """(venue, correction id) of every journaled correction."""
        self._early: set[tuple[str, str]] = set()
        """(venue, fill id) of executions a journaled bust or correction named before the
        execution itself reached the journal."""

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        self._journal = Journal(self.journal_path, busy_timeout_s=self.config.journal_busy_timeout_s,
                                writer=KEEPER_WRITER)
        self._replay()
        for topic in (topics.ORDERS, topics.SUBMITTED, topics.MARKET, topics.POSITIONS, topics.CONNECTORS):
            bus.subscribe(topic, self.name)
        self._schedule_rollover()
        self._publish()

    def teardown(self) -> None:
        for timer in (self._publish_timer, self._rollover_timer, self._reconcile_timer):
            if timer is not None:
                timer.cancel()
        if self._journal is not None:
            journal, self._journal = self._journal, None
            journal.close()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            OrderFilled: self._on_fill,
            FillBusted: self._on_amendment,
            FillCorrected: self._on_amendment,
            QuoteBatch: self._on_quotes,
            SubmitOrder: self._on_submitted,
            OrderAccepted: self._on_order_event,
            OrderRejected: self._on_order_event,
            OrderCancelled: self._on_order_event,
            CancelAllDone: self._on_order_event,
            VenuePositions: self._on_venue_positions,
            ConnectorUp: self._on_connector_up,
            ConnectorDown: self._on_connector_down,
            _ReconcileDue: self._on_reconcile_due,
            GetPortfolio: lambda _m: self.snapshot(),
            GetReconciliations: lambda _m: dict(self._reconciliations),
            GetOrderCounts: self._order_counts,
            GetSourceBook: self._on_source_book,
            _PublishDue: self._on_publish_due,
            _SessionRollover: self._on_session_rollover,
        }

    @property
    def journal(self) -> Journal:
        """The keeper's journal (open between setup and teardown; actor thread only)."""
        if self._journal is None:
            raise RuntimeError("the position keeper's journal is not open")
        return self._journal

    def _replay(self) -> None:
        started = time.perf_counter()
        records = self.journal.fill_records()  # in effect: busts and corrections applied
        for record in records:
            fill = record.fill
            effect = self._effect(fill)
            self._apply(fill, effect)
        self._fills = self.journal.fill_count()
        amendments = self.journal.amendment_records()
        self._early = {(r.amendment.venue, r.amendment.fill_id) for r in amendments
                       if not r.applied and not self.journal.has_fill(r.amendment.venue, r.amendment.fill_id)}
        self._corrections = {(r.amendment.venue, r.amendment.correction_id) for r in amendments
                             if isinstance(r.amendment, FillCorrected)}
        self._roll_session(force=True)
        self._log.bind(fills=self._fills, positions=len(self._open_positions())).info(
            f"journal replayed: {self._fills} fills in {time.perf_counter() - started:.3f}s"
        )

    # ---- fills ------------------------------------------------------------------------

    def _on_fill(self, fill: OrderFilled) -> None:
        self._roll_session()  # before the insert: a new session re-reads the journal
        if (fill.venue, fill.fill_id) in self._early:
            self._on_amended_fill(fill)
            return
        if self._corrections and (fill.venue, fill.fill_id) in self._corrections:
            # The corrected execution reported again under the correction's id (IB's
            # executions after a reconnect report the latest revision): already in effect.
            self._log.bind(venue=fill.venue, fill_id=fill.fill_id).debug("corrected execution ignored")
            return
        external = self._is_external(fill)
        effect = self._effect(fill)
        recorded_ns = self._clock()
        if not self.journal.record_fill(fill, effect.realized_pnl, recorded_ns, external=external):
            self._log.bind(venue=fill.venue, fill_id=fill.fill_id).debug("duplicate fill ignored")
            return
        self._fills += 1
        self._note_order_change(fill.client_order_id)
        self._apply(fill, effect)
        if (fill.ts_ns or recorded_ns) >= self._day.start_ns:
            self._count_today(fill, effect.realized_pnl)
        if external:
            self._on_external(fill)
        self._publish()

    def _is_external(self, fill: OrderFilled) -> bool:
        """True for a fill of an order the journal does not hold. A failsafe closing order
        the journal missed (the keeper was restarting when the failsafe sent it: its
        SUBMITTED was lost) is recognised by its id, journaled from the fill as the
        failsafe's (a WARNING says so) and is not external."""
        if fill.client_order_id and self.journal.knows_order(fill.venue, fill.client_order_id):
            return False
        if not looks_like_failsafe_order(fill.client_order_id, fill.venue):
            return True
        order = SubmitOrder(
            client_order_id=fill.client_order_id, venue=fill.venue, symbol=fill.symbol, side=fill.side,
            quantity=fill.quantity + fill.leaves_quantity, order_type=OrderType.MARKET, reduce_only=True,
            source=FAILSAFE_SOURCE, created_ns=fill.ts_ns or self._clock(),
        )
        self.journal.record_order(order)
        self._log.bind(venue=fill.venue, client_order_id=fill.client_order_id).warning(
            f"failsafe order {fill.client_order_id} at {fill.venue} was not journaled when sent; "
            "journaled from its fill")
        return False

    def _on_external(self, fill: OrderFilled) -> None:
        """A fill (journaled, applied) of an order the journal never held: activity on the
        account from elsewhere. A WARNING, and the venue unreconciled until its positions
        agree with the journal again."""
        detail = (f"external fill {fill.fill_id} at {fill.venue}: {fill.side} {fill.quantity} {fill.symbol} "
                  f"at {fill.price}, order {fill.client_order_id or '(no ClOrdID)'} / venue order "
                  f"{fill.venue_order_id or '(none)'}, not sent by tradeguard")
        self._log.bind(venue=fill.venue, fill_id=fill.fill_id, client_order_id=fill.client_order_id,
                       venue_order_id=fill.venue_order_id, symbol=fill.symbol).warning(detail)
        bus.publish(topics.SAFETY, SafetyEvent(
            kind="external_fill", severity=Severity.WARNING, venue=fill.venue, symbol=fill.symbol,
            detail=detail, ts_ns=self._clock(),
        ))
        self._mark_unreconciled(fill.venue, detail)

    # ---- trade busts and corrections ----------------------------------------------------

    def _amended_book(self, venue: str, extra: OrderFilled | None = None) -> AmendedFills:
        """``venue``'s executions as reported (and ``extra``), with its journaled amendments."""
        fills = [r.fill for r in self.journal.fill_records(amended=False, venue=venue)]
        if extra is not None:
            fills.append(extra)
        return AmendedFills(fills, self.journal.amendments(venue))

    def _replace_position(self, venue: str, symbol: str, book: AmendedFills) -> Decimal:
        """Rebuild one position from the executions in effect; the realized P&L it changed."""
        key = (venue, symbol)
        rebuilt = rebuild_position(venue, symbol, book.fills(venue, symbol))
        previous = self._positions.get(key)
        change = rebuilt.realized_pnl - (previous.realized_pnl if previous is not None else ZERO)
        self._positions[key] = rebuilt
        held = self._open.setdefault(venue, set())
        if rebuilt.quantity:
            held.add(symbol)
        else:
            held.discard(symbol)
        return change

    def _on_amendment(self, amendment: Amendment) -> None:
        """A trade bust or correction: journaled once (by the venue's id of it), applied to
        the position it amends (rebuilt from the executions in effect, so the P&L the
        amended trade realized goes with it), a WARNING in the log, and the venue
        unreconciled until its positions agree with the journal again."""
        venue, ident = amendment.venue, amendment_id(amendment)
        log = self._log.bind(venue=venue, amendment_id=ident, fill_id=amendment.fill_id,
                             client_order_id=amendment.client_order_id)
        if self.journal.has_amendment(venue, ident):
            log.info(f"trade amendment {ident} at {venue} already applied; the repeat changes nothing")
            return
        self._roll_session()
        book = self._amended_book(venue)
        applied = book.amend(amendment)
        realized = ZERO
        if applied.before is not None:
            symbol = applied.before.symbol
            previous = self._positions.get((venue, symbol))
            rebuilt = rebuild_position(venue, symbol, book.fills(venue, symbol))
            realized = rebuilt.realized_pnl - (previous.realized_pnl if previous is not None else ZERO)
        if not self.journal.record_amendment(amendment, applied, realized, self._clock()):
            log.info(f"trade amendment {ident} at {venue} already applied; the repeat changes nothing")
            return
        detail = describe(amendment, applied)
        if isinstance(amendment, FillCorrected):
            self._corrections.add((venue, amendment.correction_id))
        if applied.before is None:
            if not self.journal.has_fill(venue, amendment.fill_id):
                self._early.add((venue, amendment.fill_id))
        else:
            before = applied.before
            self._replace_position(venue, before.symbol, book)
            if (before.ts_ns or self._clock()) >= self._day.start_ns:
                self._day.notional = max(self._day.notional + applied.notional_delta, ZERO)
            self._day.realized += realized
            self._day.traded.add((venue, before.symbol))
            detail += f"; realized P&L {realized:+}"
        log.warning(f"{venue}: {detail}")
        self._mark_unreconciled(venue, detail)
        self._publish()

    def _on_amended_fill(self, fill: OrderFilled) -> None:
        """An execution reaching the journal after a bust or correction of it: journaled as
        reported, the position rebuilt from what is in effect (the amendment applies)."""
        book = self._amended_book(fill.venue, extra=fill)
        previous = self._positions.get((fill.venue, fill.symbol))
        rebuilt = rebuild_position(fill.venue, fill.symbol, book.fills(fill.venue, fill.symbol))
        realized = rebuilt.realized_pnl - (previous.realized_pnl if previous is not None else ZERO)
        external = self._is_external(fill)
        if not self.journal.record_fill(fill, realized, self._clock(), external=external):
            return
        self._early.discard((fill.venue, fill.fill_id))
        self._fills += 1
        self._replace_position(fill.venue, fill.symbol, book)
        self._day.realized += realized
        self._day.traded.add((fill.venue, fill.symbol))
        self._log.bind(venue=fill.venue, fill_id=fill.fill_id).warning(
            f"fill {fill.fill_id} at {fill.venue} arrived after its bust or correction; applied as amended")
        self._mark_unreconciled(fill.venue, f"fill {fill.fill_id} arrived after its bust or correction")
        self._publish()

    def _mark_unreconciled(self, venue: str, reason: str) -> None:
        """``venue`` is unreconciled until a comparison with its positions agrees: published
        and journaled as a ``Reconciliation`` (the governor halts the venue and keeps the mode
        from LIVE), and the venue asked for its positions soon."""
        ts = self._clock()
        standing = self._standing.mark_unreconciled(venue, reason, ts)
        marks = self._marks.get(venue, {})
        ours = {p.symbol: p for p in self._open_positions() if p.venue == venue}
        reconciliation = Reconciliation(
            venue=venue, reconciled=False,
            keeper_positions=tuple(ours[s].state(marks.get(s)) for s in sorted(ours)),
            mismatches=standing.differences, ts_ns=ts, since_ns=standing.since_ns,
        )
        self.journal.record_reconciliation(reconciliation)
        self._reconciliations[venue] = reconciliation
        bus.publish(topics.PORTFOLIO, reconciliation)
        if venue in self._connected:
            self._schedule.due_at[venue] = time.monotonic() + self.config.mismatch_recheck_s
            self._arm_reconcile()

    def _effect(self, fill: OrderFilled) -> FillEffect:
        position = self._positions.get((fill.venue, fill.symbol))
        if position is None:
            return apply_fill(ZERO, ZERO, fill.signed_quantity, fill.price)
        return apply_fill(position.quantity, position.average_price, fill.signed_quantity, fill.price)

    def _apply(self, fill: OrderFilled, effect: FillEffect) -> None:
        key = (fill.venue, fill.symbol)
        position = self._positions.get(key)
        if position is None:
            position = self._positions[key] = Position(venue=fill.venue, symbol=fill.symbol)
        position.apply(effect)
        held = self._open.setdefault(fill.venue, set())
        if effect.quantity:
            held.add(fill.symbol)
        else:
            held.discard(fill.symbol)

    def _count_today(self, fill: OrderFilled, realized: Decimal) -> None:
        self._day.count(fill.venue, fill.symbol, fill.quantity, fill.price, realized)

    # ---- the trading session ------------------------------------------------------------

    def _roll_session(self, *, force: bool = False) -> None:
        """Move the daily totals to the session containing now, if it changed."""
        now = self._clock()
        if not force and self._day.contains(now):
            return
        start = session_start_ns(now, self.config.session_boundary)
        self._day.restart(start)
        for record in self.journal.fill_records(since_ns=start, amended=False):
            self._count_today(record.fill, record.realized_pnl)
        # Busts and corrections book their P&L change on the day they are journaled, and
        # change the notional of the day their execution happened.
        for amended in self.journal.amendment_records(since_ns=start):
            self._day.realized += amended.realized_pnl
            if amended.applied:
                self._day.traded.add((amended.amendment.venue, amended.amendment.symbol))
        self._day.notional = self.journal.traded_notional_since(start)

    def _schedule_rollover(self) -> None:
        now = self._clock()
        next_start = next_session_ns(now, self.config.session_boundary)
        self._rollover_timer = scheduler.call_later((next_start - now) / 1e9 + 0.001,
                                                    self._teller(_SessionRollover()))

    def _on_session_rollover(self, _message: _SessionRollover) -> None:
        self._roll_session()
        self._publish()
        self._schedule_rollover()

    # ---- marks and snapshots ------------------------------------------------------------

    def _on_quotes(self, batch: QuoteBatch) -> None:
        marks = self._marks.get(batch.venue)
        if marks is None:
            marks = self._marks[batch.venue] = {}
        for quote in batch.quotes:
            if is_valid_quote(quote):  # a one-sided, crossed or broken quote is no mark
                marks[quote.symbol] = quote
        if self._open.get(batch.venue):
            self._marks_dirty = True
            self._publish_soon()

    def _publish_soon(self) -> None:
        if self._publish_timer is not None:
            return
        wait_s = self._last_publish + self.config.publish_interval_s - time.monotonic()
        if wait_s <= 0:
            self._publish()
        else:
            self._publish_timer = scheduler.call_later(wait_s, self._teller(_PublishDue()))

    def _on_publish_due(self, _message: _PublishDue) -> None:
        self._publish_timer = None
        if self._marks_dirty:
            self._publish()

    def _publish(self) -> None:
        self._marks_dirty = False
        self._last_publish = time.monotonic()
        bus.publish(topics.PORTFOLIO, self.snapshot())

    def snapshot(self) -> PortfolioSnapshot:
        """Every open position (and every flat one traded this session), marked, with P&L."""
        self._roll_session()
        states: list[PositionState] = []
        realized = unrealized = ZERO
        for key, position in self._positions.items():
            realized += position.realized_pnl
            if not position.quantity and key not in self._day.traded:
                continue
            state = position.state(self._marks.get(position.venue, {}).get(position.symbol))
            unrealized += state.unrealized_pnl
            states.append(state)
        return PortfolioSnapshot(
            positions=tuple(states), realized_pnl=realized, unrealized_pnl=unrealized,
            daily_realized_pnl=self._day.realized, daily_pnl=self._day.realized + unrealized,
            daily_traded_notional=self._day.notional, fills=self._fills, ts_ns=self._clock(),
        )

    def _open_positions(self) -> list[Position]:
        return [p for p in self._positions.values() if p.quantity]

    # ---- orders -------------------------------------------------------------------------

    def _on_submitted(self, order: SubmitOrder) -> None:
        self._note_order_change(order.client_order_id)
        # The governor wrote its orders ahead; the failsafe's closing orders (a scoped
        # flatten's too) are ours to journal (the failsafe depends on neither the governor
        # nor the journal).
        if sent_by_failsafe(order.source):
            self.journal.record_order(order, self._clock())

    def _on_order_event(self, event: OrderAccepted | OrderRejected | OrderCancelled | CancelAllDone) -> None:
        self.journal.record_order_event(event, self._clock())
        if not isinstance(event, CancelAllDone):
            self._note_order_change(event.client_order_id)

    def _order_counts(self, request: GetOrderCounts) -> OrderTotals | None:
        """Order traffic from the journal; None (no answer) when the journal cannot be read."""
        try:
            return OrderTotals(**self.journal.order_counts(request.since_ns))
        except JournalError as exc:
            self._log.error(f"order counts not read from the journal: {exc}")
            return None

    def _on_source_book(self, request: GetSourceBook) -> None:
        """Tell one source (a strategy that starts) its positions and working orders, from the
        journal; nothing is told when the journal cannot be read (the source asks again)."""
        try:
            positions, fills = self.journal.source_positions(request.source)
            working = tuple(
                SourceOrder(order=record.order, status=record.status, filled_quantity=record.filled_quantity,
                            fill_ids=tuple(self.journal.order_fill_ids(record.order.venue,
                                                                       record.order.client_order_id)))
                for record in self.journal.open_orders() if record.order.source == request.source
            )
        except JournalError as exc:
            self._log.error(f"book of {request.source} not read from the journal: {exc}")
            return
        shares = {key: self._share(key, net) for key, net in positions.items()}
        book = SourceBook(
            source=request.source, request_id=request.request_id, fills=fills, working=working,
            positions=tuple(SourcePosition(venue=venue, symbol=symbol, quantity=quantity)
                            for (venue, symbol), quantity in sorted(shares.items()) if quantity),
            ts_ns=self._clock(),
        )
        registry.tell(request.reply_to, book)

    def _share(self, key: tuple[str, str], net: Decimal) -> Decimal:
        """A source's share of the position at ``key``: the net of its own fills, capped by
        the position held now and nothing when that is flat or on the other side -- the
        attribution rule of a scoped flatten (``core.flatten.attributed_close``). So a source
        whose position the failsafe (or another flatten) closed learns that it holds none."""
        held = self._positions.get(key)
        return -attributed_close(net, held.quantity if held is not None else Decimal(0))

    # ---- reconciliation -----------------------------------------------------------------

    def _on_connector_up(self, event: ConnectorUp) -> None:
        # Its resync delivers positions at once; the period starts from that comparison.
        self._connected.add(event.name)
        self._schedule.compared(event.name, time.monotonic())
        self._recheck_pending(event.name)
        self._arm_reconcile()

    def _on_connector_down(self, event: ConnectorDown) -> None:
        self._connected.discard(event.name)
        self._schedule.forget(event.name)
        self._arm_reconcile()

    def _arm_reconcile(self) -> None:
        if self._reconcile_timer is not None:
            self._reconcile_timer.cancel()
            self._reconcile_timer = None
        due = self._schedule.next_due()
        if due is None:
            return
        self._reconcile_token += 1
        self._reconcile_timer = scheduler.call_later(max(due - time.monotonic(), 0.0),
                                                     self._teller(_ReconcileDue(self._reconcile_token)))

    def _on_reconcile_due(self, due: _ReconcileDue) -> None:
        if due.token != self._reconcile_token:
            return
        for venue in self._schedule.due(sorted(self._connected), time.monotonic()):
            self._requests += 1
            request = RequestPositions(venue=venue, request_id=f"reconcile-{self._requests}")
            if not registry.tell(venue, request):
                self._connected.discard(venue)
                self._schedule.forget(venue)
        self._arm_reconcile()

    def _on_venue_positions(self, report: VenuePositions) -> None:
        venue = report.venue
        ours = {p.symbol: p for p in self._open_positions() if p.venue == venue}
        ts = self._clock()
        journal_working, unsettled = (self._working_orders(venue, ts) if report.open_orders is not None
                                      else (set(), frozenset()))
        comparison = compare(venue, {s: p.quantity for s, p in ours.items()}, report.positions,
                             journal_working, report.open_orders, unsettled)
        mismatches = list(comparison.differences)
        standing = self._standing.record(comparison, ts)
        if standing.pending:
            # Not confirmed yet (a fill may be on its way): ask again soon, change nothing.
            self._log.bind(venue=venue, mismatches=mismatches).debug(
                f"positions at {venue} disagree ({standing.streak}x); asking again")
            if venue in self._connected:
                self._schedule.due_at[venue] = time.monotonic() + self.config.mismatch_recheck_s
                self._arm_reconcile()
            return
        if venue in self._connected:
            self._schedule.compared(venue, time.monotonic())
            self._arm_reconcile()
        marks = self._marks.get(venue, {})
        reconciliation = Reconciliation(
            venue=venue,
            reconciled=comparison.reconciled,
            venue_positions=tuple(
                PositionState(venue=venue, symbol=v.symbol, quantity=v.quantity,
                              average_price=v.average_price)
                for v in report.positions
            ),
            keeper_positions=tuple(ours[s].state(marks.get(s)) for s in sorted(ours)),
            mismatches=tuple(mismatches),
            ts_ns=ts,
            since_ns=standing.since_ns,
            venue_open_orders=(None if report.open_orders is None
                               else tuple(sorted(report.open_orders))),
            keeper_open_orders=tuple(sorted(journal_working)) if report.open_orders is not None else (),
            order_mismatches=order_differences(mismatches),
        )
        self.journal.record_reconciliation(reconciliation)
        self._reconciliations[venue] = reconciliation
        bus.publish(topics.PORTFOLIO, reconciliation)
        if standing.new_mismatch:
            # One incident per mismatch: a periodic comparison finding the same differences
            # again publishes the Reconciliation (status) but raises nothing new.
            self._log.bind(venue=venue, mismatches=mismatches).warning(f"reconciliation mismatch at {venue}")
            bus.publish(
                topics.SAFETY,
                SafetyEvent(
                    kind="reconciliation_mismatch", severity=Severity.WARNING, venue=venue,
                    symbol=mismatches[0].split(":", 1)[0] if len(mismatches) == 1 else "",
                    detail="; ".join(mismatches), ts_ns=ts,
                ),
            )

    # ---- working orders (reconciliation) ------------------------------------------------

    def _recheck_pending(self, venue: str) -> None:
        """A report that came before the venue's ConnectorUp (a resync delivers its report
        first) and disagreed is asked again soon, not a whole period later."""
        standing = self._standing.venues.get(venue)
        if standing is not None and standing.pending:
            self._schedule.due_at[venue] = time.monotonic() + self.config.mismatch_recheck_s

    def _note_order_change(self, client_order_id: str) -> None:
        """The journal state of an order changed now (see ``order_settle_s``)."""
        now = self._clock()
        self._order_changes[client_order_id] = now
        if len(self._order_changes) > 1024:
            prune_changes(self._order_changes, now, int(self.config.order_settle_s * 1e9))

    def _working_orders(self, venue: str, now: int) -> tuple[set[str], frozenset[str]]:
        """The client order ids the journal holds working at ``venue``, and the orders too
        recently changed to compare at ``now``."""
        settle_ns = int(self.config.order_settle_s * 1e9)
        prune_changes(self._order_changes, now, settle_ns)
        records = [record for record in self.journal.open_orders() if record.order.venue == venue]
        working = {record.order.client_order_id for record in records}
        skipped = unsettled_orders(self._order_changes, now, settle_ns)
        if not self.config.compare_unacknowledged:
            skipped |= {record.order.client_order_id for record in records
                        if record.status is OrderStatus.PENDING}
        return working, skipped

    # ---- helpers --------------------------------------------------------------------------

    def _teller(self, message: Any) -> Callable[[], None]:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(message)
            except Exception:  # the keeper stopped in the meantime
                pass

        return tell
