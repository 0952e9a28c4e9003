"""The safety checks: anomaly rules on market data and executions, wired behind one
cool-down.

Each check is a pure function or a small class holding the state it needs. ``SafetyChecks``
wires them into dispatch tables (quote rules run over every ``QuoteBatch``, fill rules over
every new fill, timed rules on every tick) and passes their findings through a cool-down,
so a persisting condition raises one event per (kind, venue, symbol) per ``cooldown_s`` (a
finding more severe than the last one raised for its key always goes through). The
safety monitor actor feeds it the bus and publishes what it returns.

The quote path is the hot one. Rules loop over a batch themselves (no call per quote),
keep their state in dicts per venue and symbol, compare in ``Decimal`` without dividing,
and allocate nothing per quote beyond ``Decimal`` results; a finding (and its text) is
built only when a check trips.

Time is passed in: a monotonic clock (seconds) times the rules, a wall clock
(nanoseconds) stamps the events; both are given to ``SafetyChecks``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, Protocol

import msgspec

from core.exposure import valid_mid
from core.rejections import RejectionLoop, is_venue_rejection
from messages import (
    HealthReport,
    OrderFilled,
    OrderRejected,
    OrderType,
    Quote,
    QuoteBatch,
    SafetyEvent,
    SafetyStats,
    Severity,
    Side,
    SubmitOrder,
)

NEGATIVE_PRICE = "negative_price"
"""A quote or trade priced below zero (CRITICAL)."""
ZERO_PRICE = "zero_price"
"""A quote or trade priced at zero (CRITICAL)."""
CROSSED_MARKET = "crossed_market"
"""Bid above ask past a grace period (WARNING; CRITICAL when it persists)."""
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


class SafetyRules(Protocol):
    """The thresholds ``SafetyChecks`` reads (the safety monitor's configuration; see
    ``actors.safety_monitor.SafetyConfig`` for what each means)."""

    @property
    def check_prices(self) -> bool: ...
    @property
    def check_crossed(self) -> bool: ...
    @property
    def crossed_grace_ms(self) -> float: ...
    @property
    def crossed_persist_s(self) -> float | None: ...
    @property
    def crossed_persist_quotes(self) -> int | None: ...
    @property
    def spike_threshold(self) -> Decimal | None: ...
    @property
    def time_gap_s(self) -> float | None: ...
    @property
    def spread_multiple(self) -> Decimal | None: ...
    @property
    def spread_alpha(self) -> Decimal: ...
    @property
    def spread_warmup_quotes(self) -> int: ...
    @property
    def slippage_threshold(self) -> Decimal | None: ...
    @property
    def check_overfill(self) -> bool: ...
    @property
    def max_tracked_orders(self) -> int: ...
    @property
    def max_venue_rejections(self) -> int | None: ...
    @property
    def rejection_window_s(self) -> float: ...
    @property
    def feed_stale_s(self) -> float | None: ...
    @property
    def watched_venues(self) -> tuple[str, ...]: ...
    @property
    def cooldown_s(self) -> float: ...


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
    __slots__ = ("count", "escalated", "since", "warned")

    def __init__(self, since: float) -> None:
        self.since = since
        self.count = 1
        self.warned = False
        self.escalated = False


class CrossedRule:
    """Bid above ask. Nothing within ``grace_s`` of the crossing (a book between two
    updates); WARNING once it lasts longer; CRITICAL once it persists for more than
    ``persist_s`` seconds, or for ``persist_quotes`` consecutive quotes past the grace. A
    quote that is not crossed ends it."""

    def __init__(self, persist_s: float | None, persist_quotes: int | None, grace_s: float = 0.0) -> None:
        self._persist_s = persist_s or None
        self._persist_quotes = persist_quotes or None
        self._grace_s = grace_s
        self._crossed: dict[str, dict[str, _Crossing]] = {}

    def check(self, venue: str, quotes: Sequence[Quote], now: float, recv_ns: int = 0) -> list[Finding]:
        """Findings for the crossed quotes of a batch."""
        crossed: dict[str, _Crossing] = _venue_state(self._crossed, venue)
        found: list[Finding] = []
        for q in quotes:
            if q.bid > q.ask:
                finding = self._on_crossed(crossed, venue, q, now)
                if finding is not None:
                    found.append(finding)
            elif crossed:
                crossed.pop(q.symbol, None)
        return found

    def check_time(self, now: float) -> list[Finding]:
        """For every crossing without a new quote: WARNING once it outlived the grace,
        CRITICAL once it outlived ``persist_s``."""
        found: list[Finding] = []
        for venue, crossed in self._crossed.items():
            for symbol, crossing in crossed.items():
                lasted = now - crossing.since
                if crossing.escalated or (self._grace_s and lasted <= self._grace_s):
                    continue
                if self._persist_s is not None and lasted > self._persist_s:
                    crossing.escalated = crossing.warned = True
                    found.append(Finding(
                        kind=CROSSED_MARKET, severity=Severity.CRITICAL, venue=venue, symbol=symbol,
                        detail=f"crossed for {lasted:.3f}s with no new quote",
                    ))
                elif not crossing.warned:
                    crossing.warned = True
                    found.append(Finding(
                        kind=CROSSED_MARKET, severity=Severity.WARNING, venue=venue, symbol=symbol,
                        detail=f"crossed for {lasted:.3f}s (grace {self._grace_s:.3f}s) with no new quote",
                    ))
        return found

    @property
    def timed(self) -> bool:
        """True when the rule has something to judge on a timer (a grace or ``persist_s``)."""
        return self._persist_s is not None or self._grace_s > 0

    def is_crossed(self, venue: str, symbol: str) -> bool:
        """True while the last quote of ``symbol`` at ``venue`` was crossed."""
        return symbol in self._crossed.get(venue, {})

    def _on_crossed(self, crossed: dict[str, _Crossing], venue: str, q: Quote, now: float) -> Finding | None:
        crossing = crossed.get(q.symbol)
        if crossing is None:
            crossing = crossed[q.symbol] = _Crossing(now)
        else:
            crossing.count += 1
        lasted = now - crossing.since
        if self._grace_s and lasted <= self._grace_s:
            return None  # within the grace: a book between two updates
        if not crossing.warned:
            crossing.warned = True
            crossing.count = 1  # the consecutive quotes count from the end of the grace
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
        """Mid of the last quote of ``symbol`` at ``venue``; None without one, or when it was
        not a valid quote (``core.exposure.valid_mid``: crossed, say)."""
        q = self._quotes.get(venue, {}).get(symbol)
        return None if q is None else valid_mid(q)


class FeedStaleRule:
    """A watched venue that has sent no market data for more than ``stale_s`` seconds: one
    WARNING per silence (a quiet market is one incident, not a finding per cool-down),
    raised again only after market data came back and stopped again."""

    def __init__(self, stale_s: float, watched: Iterable[str] = (), now: float = 0.0) -> None:
        self._stale_s = stale_s
        self._stale_ns = int(stale_s * _NS_PER_S)
        self._last: dict[str, float] = dict.fromkeys(watched, now)
        self._raised: set[str] = set()

    def note(self, venue: str, now: float) -> None:
        """``venue`` sent market data at ``now`` (monitor clock)."""
        self._last[venue] = now
        if self._raised:
            self._raised.discard(venue)

    def is_stale(self, venue: str) -> bool:
        """True while the silence of ``venue`` has been raised and no data came since."""
        return venue in self._raised

    def check(self, now: float) -> list[Finding]:
        """A WARNING for every watched venue that fell silent for too long."""
        found: list[Finding] = []
        for venue, last in self._last.items():
            silent = now - last
            if silent > self._stale_s and venue not in self._raised:
                self._raised.add(venue)
                found.append(Finding(
                    kind=FEED_STALE, severity=Severity.WARNING, venue=venue, value=_seconds(silent),
                    detail=f"no market data for {silent:.3f}s",
                ))
        return found

    def on_health(self, report: HealthReport, now_ns: int) -> Finding | None:
        """A WARNING when a watched venue's connector last heard from it too long ago (by the
        report's time, else ``now_ns``, wall clock); none while its silence is already
        raised."""
        if report.name not in self._last or not report.last_message_ns or report.name in self._raised:
            return None
        age_ns = (report.ts_ns or now_ns) - report.last_message_ns
        if age_ns <= self._stale_ns:
            return None
        self._raised.add(report.name)
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

    def restore(self, order: SubmitOrder, fills: Iterable[OrderFilled]) -> TrackedOrder:
        """Track ``order`` again after a restart, with the fills it already had (a fill
        delivered again later is then not counted twice). A market order's reference (the
        mid when it was sent) is not known any more: its slippage is not judged."""
        tracked = self.on_submit(order, None)
        for fill in fills:
            self.on_fill(fill)
        return tracked


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
    """A rejection loop at one venue: CRITICAL. What counts and the window are
    ``core.rejections`` (the policy the risk governor's circuit breaker uses too): every
    rejection of an order that was sent to the venue, whatever the venue's reason, except a
    connector refusing because its session is down."""

    def __init__(self, max_count: int, window_s: float) -> None:
        self._loop = RejectionLoop(max_count, window_s)

    def on_rejected(self, rejected: OrderRejected, now: float, *, sent: bool) -> Finding | None:
        """Count a rejection; ``sent``: the order was seen going to the venue."""
        if not is_venue_rejection(rejected, sent):
            return None
        count = self._loop.on_rejection(rejected.venue, now)
        if not count:
            return None
        return Finding(
            kind=VENUE_REJECTIONS, severity=Severity.CRITICAL, venue=rejected.venue,
            symbol=rejected.symbol, value=Decimal(count),
            detail=(f"{count} venue rejections within {self._loop.span(rejected.venue):.3f}s; "
                    f"last: {rejected.reason}: {rejected.text}"),
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


class SafetyChecks:
    """Every check, wired to the messages it reads, behind one cool-down; no actors, no bus.

    ``check(message)`` takes any message the monitor subscribes to and returns the safety
    events to raise; ``on_tick()`` runs the timed checks. The rules are chosen once from the
    configuration: a disabled check is not in any table and costs nothing.
    """

    def __init__(self, config: SafetyRules, clock: Callable[[], float], wall_ns: Callable[[], int]) -> None:
        """``clock``: monotonic seconds, times the rules; ``wall_ns``: wall clock
        nanoseconds, stamps the events."""
        self.config = config
        self._clock = clock
        self._wall_ns = wall_ns
        self._cooldown = Cooldown(config.cooldown_s)
        self.crossed = CrossedRule(config.crossed_persist_s, config.crossed_persist_quotes,
                                   config.crossed_grace_ms / 1000)
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
        if config.check_crossed and self.crossed.timed:
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
        self.last_verdict_ns = self._wall_ns()
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
        sent = self.orders.get(rejected.client_order_id) is not None
        finding = self.rejections.on_rejected(rejected, now, sent=sent)
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
        finding = self.feed.on_health(report, self._wall_ns())
        return [] if finding is None else [finding]

    def _admit(self, findings: list[Finding], now: float) -> list[SafetyEvent]:
        events: list[SafetyEvent] = []
        ts = self._wall_ns()
        for f in findings:
            if self._cooldown.admit(f, now):
                self.raised[f.kind] += 1
                events.append(SafetyEvent(kind=f.kind, severity=f.severity, detail=f.detail, venue=f.venue,
                                          symbol=f.symbol, value=f.value, ts_ns=ts))
            else:
                self.suppressed[f.kind] += 1
        return events
