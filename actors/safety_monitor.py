"""The safety monitor: anomaly checks on market data and executions.

Each check is a pure function or a small class holding the state it needs, so it can be
tested without actors. ``SafetyChecks`` wires them into dispatch tables (quote rules run
over every ``QuoteBatch``, fill rules over every new fill, timed rules on every tick) and
passes their findings through a cool-down, so a persisting condition raises one event per
(kind, venue, symbol) per ``cooldown_s`` (a finding more severe than the last one raised for
its key always goes through). ``SafetyMonitor`` is the actor: it feeds the bus topics to
``SafetyChecks`` and publishes the resulting ``SafetyEvent``s on ``SAFETY``.

The quote path is the hot one. Rules loop over a batch themselves (no call per quote),
keep their state in dicts per venue and symbol, compare in ``Decimal`` without dividing,
and allocate nothing per quote beyond ``Decimal`` results; a finding (and its text) is
built only when a check trips.

Sequence gaps are detected by the connectors, which raise their own ``sequence_gap``
events; the monitor counts them from the ``gaps`` counter of each ``HealthReport``.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Protocol

import msgspec
from loguru import logger
from msgspec import Meta

from actors import topics
from messages import (
    CancelAllDone,
    HealthReport,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    Quote,
    QuoteBatch,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    now_ns,
)
from messages.bounds import Duration, Interval, Name, OffDuration, Tally, decimal_range
from supervision import SupervisedActor, TimerHandle, bus, scheduler

NEGATIVE_PRICE = "negative_price"
"""A quote or trade priced below zero (CRITICAL)."""
ZERO_PRICE = "zero_price"
"""A quote or trade priced at zero (CRITICAL)."""
CROSSED_MARKET = "crossed_market"
"""Bid above ask (WARNING; CRITICAL when it persists)."""
PRICE_SPIKE = "price_spike"
"""A mid that jumped against the previous mid (WARNING)."""
TIME_GAP = "time_gap"
"""Too long between two quotes of one symbol (WARNING)."""
WIDE_SPREAD = "wide_spread"
"""A spread far above its running normal (WARNING)."""
SLIPPAGE = "slippage"
"""A fill far worse than its reference price (WARNING)."""
OVERFILL = "overfill"
"""More filled than ordered (CRITICAL)."""
VENUE_REJECTIONS = "venue_rejections"
"""Too many venue rejections in a window (CRITICAL)."""
FEED_STALE = "feed_stale"
"""No market data from a venue for too long (WARNING)."""

ZERO = Decimal(0)
_ROUND_PLACES = 6
_NS_PER_S = 1_000_000_000


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
    """Raise WARNING ``crossed_market`` for a quote whose bid is above its ask (bid equal to
    ask, a locked market, is not crossed), CRITICAL once the crossing persists."""
    crossed_persist_s: OffDuration | None = 2.0
    """A symbol still crossed more than this many seconds (monitor clock) after it crossed
    is CRITICAL; checked on each crossed quote and on every tick, so a feed that stops
    while crossed is caught too."""
    crossed_persist_quotes: Tally | None = 10
    """The N-th consecutive crossed quote of a symbol is CRITICAL."""
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
    (reason ``venue``; tradeguard's own pre-trade rejections do not count) within
    ``rejection_window_s``."""
    rejection_window_s: Duration = 60.0
    """Window of the venue rejection count, seconds (inclusive: rejections exactly this far
    apart are within it)."""
    feed_stale_s: OffDuration | None = 10.0
    """Raise WARNING ``feed_stale`` when a watched venue has sent no market data for more
    than this many seconds: checked on every tick (monitor clock), and on every
    ``HealthReport`` from the age of its ``last_message_ns``. A venue is watched once it
    has sent a batch, or from the start when listed in ``watched_venues``."""
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


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """What a check found, before the cool-down decides whether it is raised."""

    kind: str
    """Kind of the event it would raise."""
    severity: Severity
    """Severity of that event."""
    venue: str
    """Venue concerned."""
    symbol: str = ""
    """Symbol concerned, when any."""
    value: Decimal | None = None
    """The measured value that tripped the check."""
    detail: str = ""
    """Human-readable detail."""


def _fraction(value: Decimal) -> Decimal:
    return round(value, _ROUND_PLACES)


# ---- market data rules -------------------------------------------------------------------


def check_prices(batch: QuoteBatch) -> list[Finding]:
    """Quotes and trades of ``batch`` priced at or below zero, CRITICAL."""
    found: list[Finding] = []
    for q in batch.quotes:
        if q.bid <= ZERO or q.ask <= ZERO:
            found.append(_bad_price(batch.venue, q.symbol, min(q.bid, q.ask),
                                    f"quote bid {q.bid} ask {q.ask}"))
    for t in batch.trades:
        if t.price <= ZERO:
            found.append(_bad_price(batch.venue, t.symbol, t.price, f"trade at {t.price}"))
    return found


def _bad_price(venue: str, symbol: str, price: Decimal, detail: str) -> Finding:
    kind = NEGATIVE_PRICE if price < ZERO else ZERO_PRICE
    return Finding(kind=kind, severity=Severity.CRITICAL, venue=venue, symbol=symbol, value=price,
                   detail=detail)


def valid_quotes(quotes: Sequence[Quote]) -> tuple[Quote, ...]:
    """The quotes whose bid and ask are both above zero."""
    return tuple(q for q in quotes if q.bid > ZERO and q.ask > ZERO)


class QuoteRule(Protocol):
    """A check over the (validly priced) quotes of one batch, keeping its own state."""

    def check(self, venue: str, quotes: Sequence[Quote], now: float, recv_ns: int = 0) -> list[Finding]:
        """Findings for ``quotes`` of ``venue``; ``now`` is the monitor clock, seconds;
        ``recv_ns`` the batch's receive time."""
        ...


def _venue_state(states: dict[str, dict[str, Any]], venue: str) -> dict[str, Any]:
    state = states.get(venue)
    if state is None:
        state = states[venue] = {}
    return state


class _Crossing:
    __slots__ = ("count", "escalated", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.count = 1
        self.escalated = False


class CrossedRule:
    """Bid above ask: WARNING, CRITICAL once it persists for more than ``persist_s`` seconds
    or for ``persist_quotes`` consecutive quotes. A quote that is not crossed ends it."""

    def __init__(self, persist_s: float | None, persist_quotes: int | None) -> None:
        self._persist_s = persist_s or None
        self._persist_quotes = persist_quotes or None
        self._crossed: dict[str, dict[str, _Crossing]] = {}

    def check(self, venue: str, quotes: Sequence[Quote], now: float, recv_ns: int = 0) -> list[Finding]:
        """Findings for the crossed quotes of a batch."""
        crossed: dict[str, _Crossing] = _venue_state(self._crossed, venue)
        found: list[Finding] = []
        for q in quotes:
            if q.bid > q.ask:
                found.append(self._on_crossed(crossed, venue, q, now))
            elif crossed:
                crossed.pop(q.symbol, None)
        return found

    def check_time(self, now: float) -> list[Finding]:
        """CRITICAL for every crossing that outlived ``persist_s`` without a new quote."""
        found: list[Finding] = []
        if self._persist_s is None:
            return found
        for venue, crossed in self._crossed.items():
            for symbol, crossing in crossed.items():
                if not crossing.escalated and now - crossing.since > self._persist_s:
                    crossing.escalated = True
                    found.append(Finding(
                        kind=CROSSED_MARKET, severity=Severity.CRITICAL, venue=venue, symbol=symbol,
                        detail=f"crossed for {now - crossing.since:.3f}s with no new quote",
                    ))
        return found

    def is_crossed(self, venue: str, symbol: str) -> bool:
        """True while the last quote of ``symbol`` at ``venue`` was crossed."""
        return symbol in self._crossed.get(venue, {})

    def _on_crossed(self, crossed: dict[str, _Crossing], venue: str, q: Quote, now: float) -> Finding:
        crossing = crossed.get(q.symbol)
        if crossing is None:
            crossing = crossed[q.symbol] = _Crossing(now)
        else:
            crossing.count += 1
        lasted = now - crossing.since
        if not crossing.escalated and (
            (self._persist_quotes is not None and crossing.count >= self._persist_quotes)
            or (self._persist_s is not None and lasted > self._persist_s)
        ):
            crossing.escalated = True
        severity = Severity.CRITICAL if crossing.escalated else Severity.WARNING
        return Finding(
            kind=CROSSED_MARKET, severity=severity, venue=venue, symbol=q.symbol, value=q.ask - q.bid,
            detail=f"bid {q.bid} above ask {q.ask}; {crossing.count} crossed quotes over {lasted:.3f}s",
        )


class SpikeRule:
    """A mid that moved by more than ``threshold`` (a fraction) of the previous mid."""

    def __init__(self, threshold: Decimal) -> None:
        self._threshold = threshold
        self._sums: dict[str, dict[str, Decimal]] = {}
        """Last bid + ask (twice the mid, so no division per quote) per venue and symbol."""

    def check(self, venue: str, quotes: Sequence[Quote], now: float, recv_ns: int = 0) -> list[Finding]:
        """Findings for the quotes of a batch whose mid jumped."""
        sums: dict[str, Decimal] = _venue_state(self._sums, venue)
        threshold = self._threshold
        found: list[Finding] = []
        for q in quotes:
            total = q.bid + q.ask
            previous = sums.get(q.symbol)
            sums[q.symbol] = total
            if previous is not None and abs(total - previous) > previous * threshold:
                move = (total - previous) / previous
                found.append(Finding(
                    kind=PRICE_SPIKE, severity=Severity.WARNING, venue=venue, symbol=q.symbol,
                    value=_fraction(move), detail=f"mid {previous / 2} -> {total / 2} ({move:.2%})",
                ))
        return found


class TimeGapRule:
    """Two consecutive quotes of a symbol more than ``gap_s`` seconds apart (venue time)."""

    def __init__(self, gap_s: float) -> None:
        self._gap_ns = int(gap_s * _NS_PER_S)
        self._last: dict[str, dict[str, int]] = {}

    def check(self, venue: str, quotes: Sequence[Quote], now: float, recv_ns: int = 0) -> list[Finding]:
        """Findings for the quotes of a batch that came after a gap."""
        last: dict[str, int] = _venue_state(self._last, venue)
        limit = self._gap_ns
        found: list[Finding] = []
        for q in quotes:
            ts = q.ts_ns or recv_ns
            if not ts:
                continue
            previous = last.get(q.symbol)
            if previous is None or ts > previous:
                last[q.symbol] = ts
                if previous is not None and ts - previous > limit:
                    gap_s = Decimal(ts - previous) / _NS_PER_S
                    found.append(Finding(
                        kind=TIME_GAP, severity=Severity.WARNING, venue=venue, symbol=q.symbol,
                        value=gap_s, detail=f"{gap_s}s since the previous quote",
                    ))
        return found


class _Spread:
    __slots__ = ("normal", "samples")

    def __init__(self, normal: Decimal) -> None:
        self.normal = normal
        self.samples = 1


class SpreadRule:
    """A spread more than ``multiple`` times its running normal (an exponentially weighted
    mean with weight ``alpha``), once ``warmup`` spreads have been folded in. Crossed
    quotes are left to ``CrossedRule``; abnormal spreads do not move the normal."""

    def __init__(self, multiple: Decimal, alpha: Decimal, warmup: int) -> None:
        self._multiple = multiple
        self._alpha = alpha
        self._warmup = warmup
        self._spreads: dict[str, dict[str, _Spread]] = {}

    def check(self, venue: str, quotes: Sequence[Quote], now: float, recv_ns: int = 0) -> list[Finding]:
        """Findings for the quotes of a batch with an abnormal spread."""
        spreads: dict[str, _Spread] = _venue_state(self._spreads, venue)
        multiple, alpha, warmup = self._multiple, self._alpha, self._warmup
        found: list[Finding] = []
        for q in quotes:
            spread = q.ask - q.bid
            if spread < ZERO:
                continue
            state = spreads.get(q.symbol)
            if state is None:
                spreads[q.symbol] = _Spread(spread)
                continue
            normal = state.normal
            if state.samples >= warmup and normal > ZERO and spread > normal * multiple:
                found.append(Finding(
                    kind=WIDE_SPREAD, severity=Severity.WARNING, venue=venue, symbol=q.symbol,
                    value=spread, detail=f"spread {spread} is {spread / normal:.1f}x its normal {normal:.6g}",
                ))
                continue
            state.normal = normal + alpha * (spread - normal)
            state.samples += 1
        return found

    def normal(self, venue: str, symbol: str) -> Decimal | None:
        """The running normal spread of ``symbol`` at ``venue``, when known."""
        state = self._spreads.get(venue, {}).get(symbol)
        return None if state is None else state.normal


class LastQuotes:
    """The last valid quote per venue and symbol (the reference for market orders)."""

    def __init__(self) -> None:
        self._quotes: dict[str, dict[str, Quote]] = {}

    def update(self, venue: str, quotes: Sequence[Quote]) -> None:
        """Remember the last quote of each symbol in ``quotes``."""
        last: dict[str, Quote] = _venue_state(self._quotes, venue)
        for q in quotes:
            last[q.symbol] = q

    def mid(self, venue: str, symbol: str) -> Decimal | None:
        """Mid of the last quote of ``symbol`` at ``venue``, or None."""
        q = self._quotes.get(venue, {}).get(symbol)
        return None if q is None else q.mid


class FeedStaleRule:
    """A watched venue that has sent no market data for more than ``stale_s`` seconds."""

    def __init__(self, stale_s: float, watched: Iterable[str] = (), now: float = 0.0) -> None:
        self._stale_s = stale_s
        self._stale_ns = int(stale_s * _NS_PER_S)
        self._last: dict[str, float] = dict.fromkeys(watched, now)

    def note(self, venue: str, now: float) -> None:
        """``venue`` sent market data at ``now`` (monitor clock)."""
        self._last[venue] = now

    def check(self, now: float) -> list[Finding]:
        """A WARNING for every watched venue silent for too long."""
        found: list[Finding] = []
        for venue, last in self._last.items():
            silent = now - last
            if silent > self._stale_s:
                found.append(Finding(
                    kind=FEED_STALE, severity=Severity.WARNING, venue=venue, value=_seconds(silent),
                    detail=f"no market data for {silent:.3f}s",
                ))
        return found

    def on_health(self, report: HealthReport) -> Finding | None:
        """A WARNING when a watched venue's connector last heard from it too long ago."""
        if report.name not in self._last or not report.last_message_ns:
            return None
        age_ns = (report.ts_ns or now_ns()) - report.last_message_ns
        if age_ns <= self._stale_ns:
            return None
        silent = Decimal(age_ns) / _NS_PER_S
        return Finding(
            kind=FEED_STALE, severity=Severity.WARNING, venue=report.name, value=silent,
            detail=f"connector heard nothing for {silent}s",
        )


def _seconds(value: float) -> Decimal:
    return round(Decimal(value), _ROUND_PLACES)


# ---- order and execution rules -----------------------------------------------------------


class TrackedOrder:
    """What the fill checks know about one submitted order.

    Up to ``max_tracked_orders`` of these live at once, so each is one object for the
    garbage collector to scan: the fill ids are a tuple of strings, which the collector
    stops tracking (a set would be a second tracked object per order, and every full
    collection, which stalls every actor, would scan them all).
    """

    __slots__ = ("fill_ids", "filled", "quantity", "reference", "side", "symbol", "venue")

    def __init__(self, order: SubmitOrder, reference: Decimal | None) -> None:
        self.venue = order.venue
        self.symbol = order.symbol
        self.side = order.side
        self.quantity = order.quantity
        self.reference = reference
        self.filled = ZERO
        self.fill_ids: tuple[str, ...] = ()


def reference_price(order: SubmitOrder, mid: Decimal | None) -> Decimal | None:
    """The price a fill of ``order`` is judged against: the mid at submission for a market
    order, the limit for limit and stop-limit orders, the stop for stop orders."""
    if order.order_type is OrderType.MARKET:
        return mid
    if order.order_type is OrderType.STOP:
        return order.stop_price
    return order.limit_price


def adverse_slippage(side: Side, reference: Decimal, price: Decimal) -> Decimal:
    """How much worse than ``reference`` a fill at ``price`` is, as a fraction of it:
    positive when adverse (a buy above, a sell below), negative when favourable."""
    return (price - reference) * side.sign / reference


class OrderTracker:
    """Submitted orders and their cumulative fills, bounded to the most recent ones."""

    def __init__(self, max_orders: int = 100_000) -> None:
        self._max = max_orders
        self._orders: OrderedDict[str, TrackedOrder] = OrderedDict()

    def __len__(self) -> int:
        return len(self._orders)

    def on_submit(self, order: SubmitOrder, mid: Decimal | None = None) -> TrackedOrder:
        """Track ``order``; ``mid`` is the market's mid at submission, when known."""
        tracked = TrackedOrder(order, reference_price(order, mid))
        self._orders[order.client_order_id] = tracked
        self._orders.move_to_end(order.client_order_id)
        while len(self._orders) > self._max:
            self._orders.popitem(last=False)
        return tracked

    def on_fill(self, fill: OrderFilled) -> TrackedOrder | None:
        """Apply ``fill``; the order it belongs to, or None for an unknown order or a fill
        already applied (same venue fill id)."""
        tracked = self._orders.get(fill.client_order_id)
        if tracked is None or fill.fill_id in tracked.fill_ids:
            return None
        tracked.fill_ids = (*tracked.fill_ids, fill.fill_id)
        tracked.filled += fill.quantity
        return tracked

    def get(self, client_order_id: str) -> TrackedOrder | None:
        """The tracked order, or None."""
        return self._orders.get(client_order_id)


FillRule = Callable[[TrackedOrder, OrderFilled], Finding | None]
"""A check of one new fill against the order it belongs to (already applied)."""


def check_overfill(order: TrackedOrder, fill: OrderFilled) -> Finding | None:
    """CRITICAL when the order's cumulative fills exceed its quantity."""
    if order.filled <= order.quantity:
        return None
    return Finding(
        kind=OVERFILL, severity=Severity.CRITICAL, venue=fill.venue, symbol=fill.symbol,
        value=order.filled,
        detail=f"order {fill.client_order_id} filled {order.filled} of {order.quantity} "
               f"(fill {fill.fill_id})",
    )


def check_slippage(order: TrackedOrder, fill: OrderFilled, threshold: Decimal) -> Finding | None:
    """WARNING when ``fill`` is worse than the order's reference price by more than
    ``threshold`` (a fraction of the reference)."""
    reference = order.reference
    if reference is None:
        return None
    if (fill.price - reference) * fill.side.sign <= reference * threshold:
        return None
    slippage = adverse_slippage(fill.side, reference, fill.price)
    return Finding(
        kind=SLIPPAGE, severity=Severity.WARNING, venue=fill.venue, symbol=fill.symbol,
        value=_fraction(slippage),
        detail=f"{fill.side} {fill.client_order_id} filled at {fill.price} vs {reference} ({slippage:.2%})",
    )


class RejectionRule:
    """``max_count`` venue rejections at one venue within ``window_s`` seconds: CRITICAL."""

    def __init__(self, max_count: int, window_s: float) -> None:
        self._max = max_count
        self._window_s = window_s
        self._times: dict[str, deque[float]] = {}

    def on_rejected(self, rejected: OrderRejected, now: float) -> Finding | None:
        """Count a rejection; only the venue's own (reason ``venue``) count."""
        if rejected.reason is not RejectReason.VENUE:
            return None
        times = self._times.get(rejected.venue)
        if times is None:
            times = self._times[rejected.venue] = deque(maxlen=self._max)
        times.append(now)
        if len(times) < self._max or now - times[0] > self._window_s:
            return None
        return Finding(
            kind=VENUE_REJECTIONS, severity=Severity.CRITICAL, venue=rejected.venue,
            symbol=rejected.symbol, value=Decimal(self._max),
            detail=f"{self._max} venue rejections within {now - times[0]:.3f}s; last: {rejected.text}",
        )


# ---- the cool-down -------------------------------------------------------------------------


class Cooldown:
    """Lets a finding through at most once per ``cooldown_s`` per (kind, venue, symbol),
    unless it is more severe than the last one let through for that key."""

    def __init__(self, cooldown_s: float) -> None:
        self._cooldown_s = cooldown_s
        self._last: dict[tuple[str, str, str], tuple[float, Severity]] = {}

    def admit(self, finding: Finding, now: float) -> bool:
        """True when ``finding`` should be raised now (and remember it)."""
        if not self._cooldown_s:
            return True
        key = (finding.kind, finding.venue, finding.symbol)
        last = self._last.get(key)
        if last is not None and now - last[0] < self._cooldown_s and finding.severity <= last[1]:
            return False
        self._last[key] = (now, finding.severity)
        return True


# ---- the checks, wired ---------------------------------------------------------------------


class GetSafetyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Ask the safety monitor for its counters; answered with ``SafetyStats``."""


class SafetyStats(msgspec.Struct, frozen=True, kw_only=True):
    """The safety monitor's counters since it started."""

    raised: dict[str, int]
    """Safety events published, per kind."""
    suppressed: dict[str, int]
    """Findings held back by the cool-down, per kind."""
    sequence_gaps: dict[str, int]
    """Sequence gaps reported by connectors (``HealthReport.gaps``), per venue."""
    quotes: int
    """Quotes checked."""
    batches: int
    """Quote batches checked."""
    last_verdict_ns: int
    """When the checks of the last batch finished, wall clock nanoseconds; 0 before any."""


class SafetyChecks:
    """Every check, wired to the messages it reads, behind one cool-down; no actors, no bus.

    ``check(message)`` takes any message the monitor subscribes to and returns the safety
    events to raise; ``on_tick()`` runs the timed checks. The rules are chosen once from the
    configuration: a disabled check is not in any table and costs nothing.
    """

    def __init__(self, config: SafetyConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._cooldown = Cooldown(config.cooldown_s)
        self.crossed = CrossedRule(config.crossed_persist_s, config.crossed_persist_quotes)
        self.last_quotes = LastQuotes() if config.slippage_threshold else None
        self.orders = OrderTracker(config.max_tracked_orders)
        self.feed: FeedStaleRule | None = None
        if config.feed_stale_s:
            self.feed = FeedStaleRule(config.feed_stale_s, config.watched_venues, clock())
        self.rejections: RejectionRule | None = None
        if config.max_venue_rejections:
            self.rejections = RejectionRule(config.max_venue_rejections, config.rejection_window_s)

        quote_rules: list[QuoteRule] = []
        if config.check_crossed:
            quote_rules.append(self.crossed)
        if config.spike_threshold:
            quote_rules.append(SpikeRule(config.spike_threshold))
        if config.time_gap_s:
            quote_rules.append(TimeGapRule(config.time_gap_s))
        if config.spread_multiple:
            quote_rules.append(SpreadRule(config.spread_multiple, config.spread_alpha,
                                          config.spread_warmup_quotes))
        self.quote_rules: tuple[QuoteRule, ...] = tuple(quote_rules)
        """Checks run over the valid quotes of every batch, in order."""

        fill_rules: list[FillRule] = []
        if config.check_overfill:
            fill_rules.append(check_overfill)
        if config.slippage_threshold:
            fill_rules.append(partial(check_slippage, threshold=config.slippage_threshold))
        self.fill_rules: tuple[FillRule, ...] = tuple(fill_rules)
        """Checks run on every new fill of a tracked order."""

        timed_rules: list[Callable[[float], list[Finding]]] = []
        if config.check_crossed and config.crossed_persist_s:
            timed_rules.append(self.crossed.check_time)
        if self.feed is not None:
            timed_rules.append(self.feed.check)
        self.timed_rules: tuple[Callable[[float], list[Finding]], ...] = tuple(timed_rules)
        """Checks run on every tick with the monitor clock."""

        self.dispatch: dict[type, Callable[[Any, float], list[Finding]]] = {
            SubmitOrder: self._on_submit,
            OrderFilled: self._on_fill,
            OrderRejected: self._on_rejected,
            HealthReport: self._on_health,
        }
        """Message type to the handler that finds what is wrong with it (quotes aside)."""

        self.raised: Counter[str] = Counter()
        """Events raised, per kind."""
        self.suppressed: Counter[str] = Counter()
        """Findings held back by the cool-down, per kind."""
        self.sequence_gaps: Counter[str] = Counter()
        """Sequence gaps the connectors reported, per venue."""
        self._gap_counters: dict[str, int] = {}
        self.quotes = 0
        """Quotes checked."""
        self.batches = 0
        """Quote batches checked."""
        self.last_verdict_ns = 0
        """When the checks of the last batch finished, wall clock nanoseconds."""

    @property
    def needs_tick(self) -> bool:
        """True when some check runs on a timer."""
        return bool(self.timed_rules)

    def check(self, message: Any) -> list[SafetyEvent]:
        """The safety events ``message`` raises (none for a message nobody checks)."""
        if type(message) is QuoteBatch:
            return self.on_quotes(message)
        handler = self.dispatch.get(type(message))
        if handler is None:
            return []
        now = self._clock()
        findings = handler(message, now)
        return self._admit(findings, now) if findings else []

    def on_quotes(self, batch: QuoteBatch) -> list[SafetyEvent]:
        """Run every quote check over ``batch``; the events it raises."""
        now = self._clock()
        venue = batch.venue
        quotes: Sequence[Quote] = batch.quotes
        findings = check_prices(batch)
        if findings:
            quotes = valid_quotes(quotes)
            if not self.config.check_prices:
                findings = []
        if self.feed is not None and (quotes or batch.trades):
            self.feed.note(venue, now)
        if self.last_quotes is not None:
            self.last_quotes.update(venue, quotes)
        for rule in self.quote_rules:
            found = rule.check(venue, quotes, now, batch.recv_ns)
            if found:
                findings.extend(found)
        self.quotes += len(batch.quotes)
        self.batches += 1
        events = self._admit(findings, now) if findings else []
        self.last_verdict_ns = time.time_ns()
        return events

    def on_tick(self) -> list[SafetyEvent]:
        """Run the timed checks; the events they raise."""
        now = self._clock()
        findings: list[Finding] = []
        for rule in self.timed_rules:
            findings.extend(rule(now))
        return self._admit(findings, now) if findings else []

    def stats(self) -> SafetyStats:
        """The counters."""
        return SafetyStats(
            raised=dict(self.raised), suppressed=dict(self.suppressed),
            sequence_gaps=dict(self.sequence_gaps), quotes=self.quotes, batches=self.batches,
            last_verdict_ns=self.last_verdict_ns,
        )

    # ---- handlers: message -> findings -----------------------------------------------------

    def _on_submit(self, order: SubmitOrder, now: float) -> list[Finding]:
        mid = None
        if self.last_quotes is not None and order.order_type is OrderType.MARKET:
            mid = self.last_quotes.mid(order.venue, order.symbol)
        self.orders.on_submit(order, mid)
        return []

    def _on_fill(self, fill: OrderFilled, now: float) -> list[Finding]:
        order = self.orders.on_fill(fill)
        if order is None:
            return []
        found: list[Finding] = []
        for rule in self.fill_rules:
            finding = rule(order, fill)
            if finding is not None:
                found.append(finding)
        return found

    def _on_rejected(self, rejected: OrderRejected, now: float) -> list[Finding]:
        if self.rejections is None:
            return []
        finding = self.rejections.on_rejected(rejected, now)
        return [] if finding is None else [finding]

    def _on_health(self, report: HealthReport, now: float) -> list[Finding]:
        previous = self._gap_counters.get(report.name, 0)
        # A connector restart starts its counters again from zero.
        new_gaps = report.gaps - previous if report.gaps >= previous else report.gaps
        if new_gaps:
            self.sequence_gaps[report.name] += new_gaps
        self._gap_counters[report.name] = report.gaps
        if self.feed is None:
            return []
        finding = self.feed.on_health(report)
        return [] if finding is None else [finding]

    def _admit(self, findings: list[Finding], now: float) -> list[SafetyEvent]:
        events: list[SafetyEvent] = []
        ts = now_ns()
        for f in findings:
            if self._cooldown.admit(f, now):
                self.raised[f.kind] += 1
                events.append(SafetyEvent(kind=f.kind, severity=f.severity, detail=f.detail, venue=f.venue,
                                          symbol=f.symbol, value=f.value, ts_ns=ts))
            else:
                self.suppressed[f.kind] += 1
        return events


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
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.config = config
        self.state_dir = None if state_dir is None else Path(state_dir)
        """Accepted like every actor's; the monitor keeps no files."""
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
