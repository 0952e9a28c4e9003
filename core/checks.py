"""The pre-trade checks: an ordered list of small check objects, each with its reason code.

``PreTradeChecks.run`` takes an order and the ``Desk`` (what the governor knows: mode,
venues, exposure, circuits, the time) and returns the first failure as a ``Refusal``, or
None when the order may go. The order of the lists is the order of the checks:

1. ``IDENTITY`` for every order: well-formed, known venue, known symbol, unused client
   order id, and in FAILSAFE only the failsafe's own orders.
2. The failsafe's own orders then only need to be reduce-only; nothing else applies.
3. The trading checks, built from the limits (a limit of 0 leaves its check out):
   trading mode, pause, a paused source or venue (``ScopePaused``), venue up, venue not
   HALTED (``core.venues``), reduce-only, DEGRADED
   reduces only, venue not REDUCING unless the order reduces, order rate, order quantity,
   price band, a market to price the order, order notional, position, open
   positions, daily notional, daily loss, circuit breaker.

A check returns the refusal's text, or None. Checks only read, except the order-rate
window (pruned as time passes; ``note_passed`` counts a passed order) and the circuit
breaker (which lets one probe through when half open): both come late, so they act only
on an order every earlier check passed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple, Protocol

from core.exposure import Exposure
from core.modes import TRADING_MODES, ModeMachine
from core.rejections import CircuitBreaker
from core.venues import TradingState, VenueBook
from messages import FAILSAFE_SOURCE, Mode, OrderType, RejectReason, Side, SubmitOrder, TimeInForce

ZERO = Decimal(0)


class Refusal(NamedTuple):
    """Why an order is refused."""

    reason: RejectReason
    """Reason code."""
    text: str
    """In words."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The numbers of the pre-trade checks; 0 disables a check."""

    max_order_quantity: Decimal = ZERO
    max_order_notional: Decimal = ZERO
    max_position: Decimal = ZERO
    max_open_positions: int = 0
    max_daily_notional: Decimal = ZERO
    daily_loss_limit: Decimal = ZERO
    max_orders_per_s: int = 0
    price_band_pct: Decimal = ZERO


@dataclass(slots=True)
class Desk:
    """What the checks read: the governor's state at the moment of the check."""

    venues: Mapping[str, tuple[str, ...]]
    """Configured venues and their symbols (empty: any symbol)."""
    exposure: Exposure
    """Positions, working orders, mids, traded notional."""
    modes: ModeMachine
    """The mode machine."""
    circuits: Mapping[str, CircuitBreaker]
    """Circuit breaker per venue."""
    up: set[str] = field(default_factory=set)
    """Venues whose connector is up."""
    client_ids: set[str] = field(default_factory=set)
    """Every client order id already used."""
    paused: bool = False
    """True while an operator paused trading."""
    paused_sources: set[str] = field(default_factory=set)
    """Order sources an operator paused (``pause --source``, a source-scoped flatten)."""
    paused_venues: set[str] = field(default_factory=set)
    """Venues an operator paused (``pause --venue``, a venue-scoped flatten)."""
    now: float = 0.0
    """Monotonic seconds: the time of the check."""
    venue_book: VenueBook | None = None
    """Per-venue trading states; None: no per-venue check."""


class OrderView:
    """What several trading checks derive from an order, computed once."""

    __slots__ = ("key", "mid", "notional", "position", "price", "reduces")

    def __init__(self, order: SubmitOrder, desk: Desk) -> None:
        exposure = desk.exposure
        self.key = (order.venue, order.symbol)
        self.position = exposure.position(self.key)
        self.reduces = exposure.reduces(order)
        self.mid = exposure.mid(self.key)
        self.price = order.limit_price or self.mid
        self.notional = None if self.price is None else order.quantity * self.price


class IdentityCheck(Protocol):
    """A check that applies to every order."""

    reason: RejectReason

    def __call__(self, order: SubmitOrder, desk: Desk) -> str | None:
        """The refusal's text, or None."""
        ...


class TradingCheck(Protocol):
    """A check on a strategy's order."""

    reason: RejectReason

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        """The refusal's text, or None."""
        ...


# ---- identity checks ---------------------------------------------------------------------


def _positive(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and value > 0


def malformed(order: SubmitOrder) -> str | None:
    """Why ``order`` is not a well-formed order, or None. The struct validates itself when
    built or decoded; this also holds for one that was not (the governor must survive it)."""
    for name in ("client_order_id", "venue", "symbol"):
        value = getattr(order, name, None)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string, got {value!r}"
    if not isinstance(order.source, str):
        return f"source must be a string, got {order.source!r}"
    kinds: tuple[tuple[str, type], ...] = (("side", Side), ("order_type", OrderType),
                                            ("time_in_force", TimeInForce))
    for name, kind in kinds:
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


class WellFormed:
    """Every field present and sensible."""

    reason: RejectReason = RejectReason.MALFORMED

    def __call__(self, order: SubmitOrder, desk: Desk) -> str | None:
        return malformed(order)


class KnownVenue:
    """The venue is configured."""

    reason: RejectReason = RejectReason.UNKNOWN_VENUE

    def __call__(self, order: SubmitOrder, desk: Desk) -> str | None:
        return None if order.venue in desk.venues else f"unknown venue {order.venue!r}"


class KnownSymbol:
    """The symbol is listed for the venue (a venue listing none takes any)."""

    reason: RejectReason = RejectReason.UNKNOWN_SYMBOL

    def __call__(self, order: SubmitOrder, desk: Desk) -> str | None:
        listed = desk.venues[order.venue]
        if listed and order.symbol not in listed:
            return f"unknown symbol {order.symbol!r} at {order.venue}"
        return None


class UnusedId:
    """The client order id was never used."""

    reason: RejectReason = RejectReason.DUPLICATE_ID

    def __call__(self, order: SubmitOrder, desk: Desk) -> str | None:
        coid = order.client_order_id
        if coid in desk.client_ids or coid in desk.exposure.working:
            return f"client order id {coid} already used"
        return None


class FailsafeOnly:
    """In FAILSAFE only the failsafe's own orders pass."""

    reason: RejectReason = RejectReason.MODE

    def __call__(self, order: SubmitOrder, desk: Desk) -> str | None:
        if desk.modes.mode is Mode.FAILSAFE and order.source != FAILSAFE_SOURCE:
            return "FAILSAFE: only the failsafe's own orders pass"
        return None


class FailsafeReduceOnly:
    """The failsafe's orders must be reduce-only (the venue enforces it)."""

    reason: RejectReason = RejectReason.REDUCE_ONLY

    def __call__(self, order: SubmitOrder, desk: Desk) -> str | None:
        return None if order.reduce_only else "the failsafe's orders must be reduce-only"


# ---- trading checks ------------------------------------------------------------------------


class TradingMode:
    """Strategies trade in LIVE and DEGRADED only."""

    reason: RejectReason = RejectReason.MODE

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        mode = desk.modes.mode
        return None if mode in TRADING_MODES else f"not trading in mode {mode}"


class NotPaused:
    """An operator's pause refuses every new order."""

    reason: RejectReason = RejectReason.PAUSED

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        return "trading is paused by an operator" if desk.paused else None


def scope_paused(order: SubmitOrder, paused_sources: set[str] | frozenset[str],
                 paused_venues: set[str] | frozenset[str]) -> str | None:
    """Why ``order`` is refused by a scoped pause (its source or its venue paused), or None."""
    if order.source in paused_sources:
        return f"source {order.source} is paused by an operator"
    if order.venue in paused_venues:
        return f"venue {order.venue} is paused by an operator"
    return None


class ScopePaused:
    """An operator's pause of one source or one venue refuses that source's new orders, or
    every new order to that venue, until resumed."""

    reason: RejectReason = RejectReason.PAUSED

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        return scope_paused(order, desk.paused_sources, desk.paused_venues)


class VenueUp:
    """The venue's connector is connected."""

    reason: RejectReason = RejectReason.VENUE_DOWN

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        return None if order.venue in desk.up else f"connector {order.venue} is not connected"


class VenueTrading:
    """The venue's trading state: HALTED refuses every order, REDUCING every order that
    would not reduce a position (``core.venues``)."""

    reason: RejectReason = RejectReason.VENUE_HALTED

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        book = desk.venue_book
        if book is None:
            return None
        state = book.state(order.venue)
        if state is TradingState.HALTED:
            return f"venue {order.venue} is HALTED: {book.venues[order.venue].reason}"
        return None


class VenueReducing:
    """A REDUCING venue takes only orders that reduce a position."""

    reason: RejectReason = RejectReason.VENUE_REDUCING

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        book = desk.venue_book
        if book is None or view.reduces or book.state(order.venue) is not TradingState.REDUCING:
            return None
        why = book.venues[order.venue].reason
        return f"venue {order.venue} is REDUCING ({why}): only orders that reduce pass"


class ReduceOnly:
    """A reduce-only order must reduce."""

    reason: RejectReason = RejectReason.REDUCE_ONLY

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        if order.reduce_only and not view.reduces:
            return "reduce-only order would not reduce the position"
        return None


class DegradedReducesOnly:
    """In DEGRADED only orders that reduce a position pass."""

    reason: RejectReason = RejectReason.REDUCE_ONLY

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        if desk.modes.mode is Mode.DEGRADED and not view.reduces:
            return "DEGRADED: only orders that reduce a position pass"
        return None


class OrderRate:
    """At most ``limit`` orders passed in any one-second window."""

    reason: RejectReason = RejectReason.RATE_LIMIT

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: deque[float] = deque()

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        times, now = self._times, desk.now
        while times and now - times[0] >= 1.0:
            times.popleft()
        if len(times) >= self.limit:
            return f"more than {self.limit} orders in one second"
        return None

    def note(self, now: float) -> None:
        """An order passed at ``now``."""
        self._times.append(now)


class MaxQuantity:
    """Quantity of one order."""

    reason: RejectReason = RejectReason.MAX_QUANTITY

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        if order.quantity > self.limit:
            return f"quantity {order.quantity} above {self.limit}"
        return None


class PriceBand:
    """Limit and stop prices within ``pct`` percent of the last mid (unchecked without one)."""

    reason: RejectReason = RejectReason.PRICE_BAND

    def __init__(self, pct: Decimal) -> None:
        self.pct = pct

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        mid = view.mid
        if mid is None:
            return None
        for label, price in (("limit", order.limit_price), ("stop", order.stop_price)):
            if price is not None:
                off_pct = abs(price - mid) / mid * 100
                if off_pct > self.pct:
                    return f"{label} price {price} is {off_pct:.2f}% from mid {mid} (band {self.pct}%)"
        return None


class Priced:
    """A price for the order: its limit, else the last mid."""

    reason: RejectReason = RejectReason.NO_MARKET

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        if view.price is None:
            return f"no market for {order.symbol} at {order.venue} to price the order"
        return None


class MaxNotional:
    """Quantity x price of one order."""

    reason: RejectReason = RejectReason.MAX_NOTIONAL

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        if view.notional is not None and view.notional > self.limit:
            return f"notional {view.notional} above {self.limit}"
        return None


class MaxPosition:
    """Absolute position per venue and symbol, in the worst case: every working order on the
    order's side fills, none on the other side. An order that reduces always passes."""

    reason: RejectReason = RejectReason.MAX_POSITION

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        exposure = view.position + desk.exposure.working_on_side(view.key, order.side) + order.signed_quantity
        if abs(exposure) > self.limit and not view.reduces:
            return f"position could reach {exposure} (max {self.limit})"
        return None


class MaxOpenPositions:
    """Non-flat (venue, symbol) pairs, counting those being opened by working orders."""

    reason: RejectReason = RejectReason.MAX_OPEN_POSITIONS

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        if view.position != 0 or desk.exposure.has_working(view.key):
            return None
        open_keys = desk.exposure.open_keys()
        if len(open_keys) >= self.limit:
            return f"{len(open_keys)} positions open or being opened (max {self.limit})"
        return None


class MaxDailyNotional:
    """Notional traded this session, counting working orders and this one."""

    reason: RejectReason = RejectReason.MAX_DAILY_NOTIONAL

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        exposure = desk.exposure
        traded = exposure.traded_notional() + exposure.working_notional() + (view.notional or ZERO)
        if traded > self.limit:
            return f"daily notional would reach {traded} (max {self.limit})"
        return None


class DailyLoss:
    """Daily P&L above minus the loss limit (at or below it also triggers FAILSAFE)."""

    reason: RejectReason = RejectReason.DAILY_LOSS

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        pnl = desk.exposure.portfolio.daily_pnl
        if pnl <= -self.limit:
            return f"daily P&L {pnl} at or below -{self.limit}"
        return None


class CircuitClosed:
    """The venue's circuit breaker lets the order through (one probe when half open)."""

    reason: RejectReason = RejectReason.CIRCUIT_OPEN

    def __call__(self, order: SubmitOrder, view: OrderView, desk: Desk) -> str | None:
        circuit = desk.circuits.get(order.venue)
        if circuit is not None and not circuit.allow(desk.now):
            return f"circuit breaker for {order.venue} is {circuit.state}"
        return None


IDENTITY: tuple[IdentityCheck, ...] = (WellFormed(), KnownVenue(), KnownSymbol(), UnusedId(), FailsafeOnly())
"""Checks every order meets, in order."""

FAILSAFE_ORDERS: tuple[IdentityCheck, ...] = (FailsafeReduceOnly(),)
"""What the failsafe's own orders must meet besides ``IDENTITY``."""


class PreTradeChecks:
    """Every pre-trade check, in order, built from ``limits``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rate = OrderRate(limits.max_orders_per_s) if limits.max_orders_per_s > 0 else None
        trading: list[TradingCheck] = [
            TradingMode(), NotPaused(), ScopePaused(), VenueUp(), VenueTrading(), ReduceOnly(),
            DegradedReducesOnly(), VenueReducing(),
        ]
        if self.rate is not None:
            trading.append(self.rate)
        if limits.max_order_quantity > 0:
            trading.append(MaxQuantity(limits.max_order_quantity))
        if limits.price_band_pct > 0:
            trading.append(PriceBand(limits.price_band_pct))
        trading.append(Priced())
        if limits.max_order_notional > 0:
            trading.append(MaxNotional(limits.max_order_notional))
        if limits.max_position > 0:
            trading.append(MaxPosition(limits.max_position))
        if limits.max_open_positions > 0:
            trading.append(MaxOpenPositions(limits.max_open_positions))
        if limits.max_daily_notional > 0:
            trading.append(MaxDailyNotional(limits.max_daily_notional))
        if limits.daily_loss_limit > 0:
            trading.append(DailyLoss(limits.daily_loss_limit))
        trading.append(CircuitClosed())
        self.identity: Sequence[IdentityCheck] = IDENTITY
        """Checks for every order."""
        self.failsafe: Sequence[IdentityCheck] = FAILSAFE_ORDERS
        """Further checks for the failsafe's orders."""
        self.trading: Sequence[TradingCheck] = tuple(trading)
        """Further checks for a strategy's order, in order."""

    def run(self, order: SubmitOrder, desk: Desk) -> Refusal | None:
        """The first check ``order`` fails, or None."""
        for check in self.identity:
            text = check(order, desk)
            if text is not None:
                return Refusal(check.reason, text)
        if order.source == FAILSAFE_SOURCE:
            for check in self.failsafe:
                text = check(order, desk)
                if text is not None:
                    return Refusal(check.reason, text)
            return None
        view = OrderView(order, desk)
        for trading_check in self.trading:
            text = trading_check(order, view, desk)
            if text is not None:
                return Refusal(trading_check.reason, text)
        return None

    def note_passed(self, now: float) -> None:
        """An order passed every check at ``now`` and was sent (counts in the order rate)."""
        if self.rate is not None:
            self.rate.note(now)
