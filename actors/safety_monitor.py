"""The safety monitor: the actor shell over ``core.safety``.

The checks themselves (pure rules behind one cool-down) are ``core.safety.SafetyChecks``;
``SafetyMonitor`` feeds them the bus topics, publishes the resulting ``SafetyEvent``s on
``SAFETY`` and runs the timed checks on a timer. ``SafetyConfig`` holds the thresholds.

Sequence gaps are detected by the connectors, which raise their own ``sequence_gap``
events; the monitor counts them from the ``gaps`` counter of each ``HealthReport``.
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
from actors.journal import READER, Journal
from core.safety import (
    CROSSED_MARKET,
    FEED_STALE,
    NEGATIVE_PRICE,
    OVERFILL,
    PRICE_SPIKE,
    SLIPPAGE,
    TIME_GAP,
    VENUE_REJECTIONS,
    WIDE_SPREAD,
    ZERO_PRICE,
    Cooldown,
    CrossedRule,
    FeedStaleRule,
    FillRule,
    Finding,
    LastQuotes,
    OrderTracker,
    QuoteRule,
    RejectionRule,
    SpikeRule,
    SpreadRule,
    TimeGapRule,
    TrackedOrder,
    adverse_slippage,
    check_overfill,
    check_prices,
    check_slippage,
    reference_price,
    valid_quotes,
)
from core.safety import SafetyChecks as _SafetyChecks
from messages import (
    CancelAllDone,
    GetSafetyStats,
    HealthReport,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    QuoteBatch,
    SafetyEvent,
    SafetyStats,
    SubmitOrder,
)
from messages.bounds import Duration, Interval, Name, OffDuration, Tally, decimal_range
from supervision import SupervisedActor, TimerHandle, bus, scheduler

__all__ = [
    "CROSSED_MARKET",
    "FEED_STALE",
    "NEGATIVE_PRICE",
    "OVERFILL",
    "PRICE_SPIKE",
    "SLIPPAGE",
    "TIME_GAP",
    "VENUE_REJECTIONS",
    "WIDE_SPREAD",
    "ZERO_PRICE",
    "Cooldown",
    "CrossedRule",
    "FeedStaleRule",
    "FillRule",
    "Finding",
    "GetSafetyStats",
    "LastQuotes",
    "OrderTracker",
    "QuoteRule",
    "RejectionRule",
    "SafetyChecks",
    "SafetyConfig",
    "SafetyMonitor",
    "SafetyStats",
    "SpikeRule",
    "SpreadRule",
    "TimeGapRule",
    "TrackedOrder",
    "adverse_slippage",
    "check_overfill",
    "check_prices",
    "check_slippage",
    "reference_price",
    "valid_quotes",
]

ZERO = Decimal(0)

RELEARN_DONE_ORDERS_S = 3600.0
"""A restarted monitor tracks again the working orders, and those done within this long (an
overfill comes for an order that looks filled)."""


class SafetyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the safety monitor's checks.

    Boundaries: a ratio or a duration trips its check only when the measured value is
    strictly above the threshold (a move of exactly 20 % against ``spike_threshold = 0.20``
    passes, 20.01 % trips; a gap of exactly 30 s passes). A count trips when it is reached
    (the 5th venue rejection against ``max_venue_rejections = 5``, the 10th consecutive
    crossed quote against ``crossed_persist_quotes = 10``). A threshold of 0 or None
    disables its check; plain on/off checks have a boolean.
    """

    check_prices: bool = True
    """Raise CRITICAL ``negative_price`` / ``zero_price`` for a quote (bid or ask) or a trade
    priced below or at zero. Such quotes are never fed to the other checks, even when this
    is off."""
    check_crossed: bool = True
    """Raise WARNING ``crossed_market`` for a book whose bid stays above its ask past
    ``crossed_grace_ms`` (bid equal to ask, a locked market, is not crossed), CRITICAL once
    the crossing persists."""
    crossed_grace_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] = 300.0
    """A crossed book is judged only once it has stayed crossed for more than this many
    milliseconds (a book caught between two updates is not an anomaly): WARNING then,
    CRITICAL once ``crossed_persist_s`` or ``crossed_persist_quotes`` is reached. 0 judges
    every crossed quote at once."""
    crossed_persist_s: OffDuration | None = 2.0
    """A symbol still crossed more than this many seconds (monitor clock) after it crossed
    is CRITICAL; checked on each crossed quote and on every tick, so a feed that stops
    while crossed is caught too."""
    crossed_persist_quotes: Tally | None = 10
    """The N-th consecutive crossed quote of a symbol after the grace is CRITICAL."""
    spike_threshold: Annotated[Decimal, decimal_range(ge=0, le=100)] | None = Decimal("0.20")
    """Raise WARNING ``price_spike`` when a mid moves, either way, by more than this fraction
    of the previous mid of the same venue and symbol (0.20 = 20 %)."""
    time_gap_s: OffDuration | None = 30.0
    """Raise WARNING ``time_gap`` when two consecutive quotes of a symbol are more than this
    many seconds apart by their venue timestamps (the batch's ``recv_ns`` stands in for a
    quote without one; a quote with neither is not timed)."""
    spread_multiple: Annotated[Decimal, decimal_range(ge=0, le=1_000_000)] | None = Decimal(10)
    """Raise WARNING ``wide_spread`` when a spread is more than this multiple of the symbol's
    running normal spread. An abnormal spread is not folded into the normal."""
    spread_alpha: Annotated[Decimal, decimal_range(gt=0, le=1)] = Decimal("0.05")
    """Weight of the newest spread in the running normal (an exponentially weighted mean);
    above 0, at most 1."""
    spread_warmup_quotes: Tally = 20
    """Spreads folded into a symbol's normal before its spread check starts (the first
    quote seeds the normal)."""
    slippage_threshold: Annotated[Decimal, decimal_range(ge=0, le=100)] | None = Decimal("0.05")
    """Raise WARNING ``slippage`` when a fill is worse than its reference price by more
    than this fraction of it (0.05 = 5 %); only the adverse direction counts (a buy filled
    above, a sell below). The reference is the mid at submission for a market order, the
    limit price for limit and stop-limit orders, the stop price for stop orders."""
    check_overfill: bool = True
    """Raise CRITICAL ``overfill`` when the fills of an order (cumulative over partial
    fills, each venue fill id counted once) exceed its quantity."""
    max_tracked_orders: Annotated[int, Meta(ge=1, le=10_000_000)] = 100_000
    """Submitted orders remembered for the fill checks; the oldest are forgotten first."""
    max_venue_rejections: Tally | None = 5
    """Raise CRITICAL ``venue_rejections`` when this many orders are rejected by one venue
    (whatever reason the venue gives; tradeguard's own pre-trade rejections and a connector
    refusing while its session is down do not count) within ``rejection_window_s``."""
    rejection_window_s: Duration = 60.0
    """Window of the venue rejection count, seconds (inclusive: rejections exactly this far
    apart are within it)."""
    feed_stale_s: OffDuration | None = 10.0
    """Raise WARNING ``feed_stale`` when a watched venue has sent no market data for more
    than this many seconds: checked on every tick (monitor clock), and on every
    ``HealthReport`` from the age of its ``last_message_ns``. A venue is watched once it
    has sent a batch, or from the start when listed in ``watched_venues``. One WARNING per
    silence: raised again only after market data came back and stopped again."""
    watched_venues: tuple[Name, ...] = ()
    """Venues expected to send market data from the start."""
    tick_interval_s: Interval = 1.0
    """How often the timed checks (stale feeds, persisting crossed markets) run."""
    cooldown_s: OffDuration = 5.0
    """Findings of one (kind, venue, symbol) are raised at most once per this many seconds,
    unless more severe than the last one raised; 0 raises every finding."""

    def __post_init__(self) -> None:
        for name in ("crossed_persist_s", "time_gap_s", "feed_stale_s", "spike_threshold",
                     "spread_multiple", "slippage_threshold", "cooldown_s"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name}: must not be negative, got {value}")
        for name in ("crossed_persist_quotes", "max_venue_rejections", "spread_warmup_quotes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: must not be negative, got {value}")
        if not ZERO < self.spread_alpha <= 1:
            raise ValueError(f"spread_alpha: must be above 0 and at most 1, got {self.spread_alpha}")
        if self.max_tracked_orders < 1:
            raise ValueError(f"max_tracked_orders: must be positive, got {self.max_tracked_orders}")
        if self.rejection_window_s <= 0:
            raise ValueError(f"rejection_window_s: must be positive, got {self.rejection_window_s}")
        if self.tick_interval_s <= 0:
            raise ValueError(f"tick_interval_s: must be positive, got {self.tick_interval_s}")


class SafetyChecks(_SafetyChecks):
    """``core.safety.SafetyChecks`` on the process's clocks unless given others."""

    def __init__(self, config: SafetyConfig, clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        super().__init__(config, clock, wall_ns)


# ---- the actor -----------------------------------------------------------------------------


class _Tick(msgspec.Struct, frozen=True):
    pass


def _ignore(_message: Any) -> None:
    return None


class SafetyMonitor(SupervisedActor):
    """Runs the safety checks on what the bus carries and publishes ``SafetyEvent``s on
    ``SAFETY``.

    Subscribes to ``MARKET``, ``ORDERS``, ``SUBMITTED`` and ``HEALTH``; runs the timed
    checks every ``tick_interval_s``; answers ``GetSafetyStats``. ``check_quotes`` may also
    be called directly on a monitor that was never started (benchmarks).
    """

    def __init__(self, config: SafetyConfig, state_dir: Path | None = None,
                 clock: Callable[[], float] = time.monotonic, *, journal_path: Path | None = None) -> None:
        """``journal_path``: the journal a restarted monitor reads (never writes) the orders
        still working from, to go on checking their fills."""
        super().__init__()
        self.config = config
        self.state_dir = None if state_dir is None else Path(state_dir)
        """Accepted like every actor's; the monitor keeps no files."""
        self.journal_path = journal_path
        self.checks = SafetyChecks(config, clock)
        self.log = logger.bind(channel="safety")
        self._timer: TimerHandle | None = None

    @property
    def last_verdict_ns(self) -> int:
        """When the checks of the last quote batch finished, wall clock nanoseconds."""
        return self.checks.last_verdict_ns

    def setup(self) -> None:
        for topic in (topics.MARKET, topics.ORDERS, topics.SUBMITTED, topics.HEALTH):
            bus.subscribe(topic, self.name)
        if self.checks.needs_tick:
            self._schedule_tick()
        self._announce_restart()

    def _announce_restart(self) -> None:
        """A restart within the running process is an alert: the checks' running state
        starts afresh. The findings already raised stay open as incidents in the governor,
        which records the restart; the venues' states are the governor's and are kept."""
        if self.context.generation <= 0:
            return
        relearned = self._relearn_orders()
        self.log.bind(generation=self.context.generation).warning(
            f"safety monitor restarted (generation {self.context.generation}): normal spreads, last "
            f"mids and cool-downs start afresh; {relearned} recent order(s) tracked again from the "
            f"journal for the overfill check")

    def _relearn_orders(self) -> int:
        """Track again the orders the journal holds as working or done lately, with their
        fills: a fill after the restart still counts against what the order had filled."""
        if self.journal_path is None or not Path(self.journal_path).exists():
            return 0
        since = time.time_ns() - int(RELEARN_DONE_ORDERS_S * 1e9)
        try:
            with Journal(self.journal_path, writer=READER) as journal:
                orders = journal.orders_for_checks(since, self.config.max_tracked_orders)
                fills = journal.fills_of([o.client_order_id for o in orders])
        except JournalError as exc:
            self.log.warning(f"safety monitor: working orders not read from the journal: {exc}")
            return 0
        by_order: dict[str, list[OrderFilled]] = {}
        for fill in fills:
            by_order.setdefault(fill.client_order_id, []).append(fill)
        for order in orders:
            self.checks.orders.restore(order, by_order.get(order.client_order_id, ()))
        return len(orders)

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            QuoteBatch: self.check_quotes,
            SubmitOrder: self._on_message,
            OrderFilled: self._on_message,
            OrderRejected: self._on_message,
            HealthReport: self._on_message,
            OrderAccepted: _ignore,
            OrderCancelled: _ignore,
            CancelAllDone: _ignore,
            GetSafetyStats: lambda _ask: self.checks.stats(),
            _Tick: self._on_tick,
        }

    def check_quotes(self, batch: QuoteBatch) -> list[SafetyEvent]:
        """Check ``batch``, publish what it raises, and return it."""
        events = self.checks.on_quotes(batch)
        if events:
            self._publish(events)
        return events

    def _on_message(self, message: Any) -> None:
        events = self.checks.check(message)
        if events:
            self._publish(events)

    def _on_tick(self, _tick: _Tick) -> None:
        try:
            events = self.checks.on_tick()
            if events:
                self._publish(events)
        finally:
            self._schedule_tick()

    def _publish(self, events: list[SafetyEvent]) -> None:
        for event in events:
            self.log.bind(kind=event.kind, venue=event.venue, symbol=event.symbol,
                          value=None if event.value is None else str(event.value)).log(
                event.severity.name, f"{event.kind} {event.venue} {event.symbol}: {event.detail}")
            bus.publish(topics.SAFETY, event)

    def _schedule_tick(self) -> None:
        ref = self.actor_ref

        def tick() -> None:
            try:
                ref.tell(_Tick())
            except Exception:  # the monitor stopped; its next generation schedules its own
                pass

        self._timer = scheduler.call_later(self.config.tick_interval_s, tick)
