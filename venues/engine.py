"""The simulated venue: price paths, an order matcher, accounts, anomalies and persistence.

Every venue front (in-process paper, FIX acceptor, ZeroMQ gateway, fake TWS) drives one
``VenueEngine``. The engine is pure Python, thread-safe (one re-entrant lock around all
state) and deterministic from its seed: the same seed gives the same quotes whatever the
order flow, because prices, anomalies and random rejects each draw from their own
``random.Random``.

The market model is deliberately small. Each symbol's mid follows a random walk kept in
units of ticks; the venue shows ``depth`` at the bid and at the ask each step, and orders
take liquidity only from that displayed size, always at the touch. Orders are matched in
arrival order. ``DAY`` and ``GTC`` behave alike (the venue has no session end).

Events are delivered to order listeners in the order they happened, while the lock is
held; a listener may call back into the engine (its own events are queued behind the ones
being delivered). In ``step()`` the quote listeners are called before the order events of
that step, so a fill never reaches a listener ahead of the quote it traded against.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from messages import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    Quote,
    RejectReason,
    Side,
    SubmitOrder,
    TimeInForce,
    VenuePosition,
)
from messages.bounds import PositiveAmount, Probability, Symbol, decimal_range
from venues.store import EngineStore, StoreBatch, StoredState

__all__ = [
    "ANOMALY_KINDS",
    "TRADING_SECONDS_PER_YEAR",
    "AmendmentListener",
    "AnomalyConfig",
    "EngineConfig",
    "EngineRunner",
    "OrderListener",
    "QuoteListener",
    "TradeAmended",
    "VenueEngine",
    "WorkingOrder",
    "step_volatility_bps",
]

_log = logging.getLogger(__name__)

_ZERO = Decimal(0)
_STATE_VERSION = 1

# Venue reject codes, carried at the start of ``OrderRejected.text``.
CODE_UNKNOWN_SYMBOL = "SIM-101"
CODE_DUPLICATE_ID = "SIM-102"
CODE_VENUE_REJECT = "SIM-103"
CODE_FILL_OR_KILL = "SIM-104"
CODE_REDUCE_ONLY = "SIM-105"
CODE_UNKNOWN_ORDER = "SIM-201"

# One-shot anomaly flags, one bit each.
_SPIKE = 1
_CROSSED = 2
_NEGATIVE = 4
_STALL = 8
_ANOMALY_FLAGS: dict[str, int] = {
    "spike": _SPIKE,
    "crossed": _CROSSED,
    "negative": _NEGATIVE,
    "stall": _STALL,
}
ANOMALY_KINDS: frozenset[str] = frozenset(_ANOMALY_FLAGS)
"""The kinds ``VenueEngine.inject`` accepts."""

_CLOCK_SLACK_S = 1e-9
"""A request due within a nanosecond is due now (clocks that add float steps drift by less)."""

# Kinds of delayed requests waiting for ``latency_ms``.
_DELAYED_SUBMIT = 0
_DELAYED_CANCEL = 1
_DELAYED_CANCEL_ALL = 2


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporary files that an earlier process killed while saving ``path`` left."""
    try:
        for stale in path.parent.glob(f"{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    except OSError:
        _log.warning("cannot remove temporary files beside %s", path)


def _check_probability(field: str, value: float) -> None:
    """Raise ``ValueError`` naming ``field`` unless ``value`` is a probability."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{field}: must be within [0, 1], got {value}")


class AnomalyConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How often the venue publishes faulty market data, per step and per symbol."""

    spike_probability: Probability = 0.0
    """Chance that the mid jumps by ``spike_size_pct`` (up or down, at random)."""
    spike_size_pct: Annotated[Decimal, decimal_range(gt=0, le=1000)] = Decimal(30)
    """Size of a spike in percent of the mid."""
    crossed_probability: Probability = 0.0
    """Chance that a quote is published with bid above ask (the book itself stays sane)."""
    negative_probability: Probability = 0.0
    """Chance that a quote is published with a negative bid (the book itself stays sane)."""
    stall_probability: Probability = 0.0
    """Chance that a symbol stops publishing for ``stall_steps`` steps (the market moves on)."""
    stall_steps: Annotated[int, Meta(ge=1, le=1_000_000)] = 50
    """Length of a stall in steps."""

    def __post_init__(self) -> None:
        _check_probability("spike_probability", self.spike_probability)
        _check_probability("crossed_probability", self.crossed_probability)
        _check_probability("negative_probability", self.negative_probability)
        _check_probability("stall_probability", self.stall_probability)
        if not self.spike_size_pct.is_finite() or self.spike_size_pct <= 0:
            raise ValueError(f"spike_size_pct: must be positive, got {self.spike_size_pct}")
        if self.stall_steps < 1:
            raise ValueError(f"stall_steps: must be at least 1, got {self.stall_steps}")


def _default_symbols() -> dict[str, Decimal]:
    """The symbols of the default venue and their starting mids."""
    return {"AAPL": Decimal("190"), "MSFT": Decimal("410"), "EURUSD": Decimal("1.1")}


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that shapes a simulated venue."""

    symbols: dict[Symbol, PositiveAmount] = msgspec.field(default_factory=_default_symbols)
    """Symbols the venue trades, each with its starting mid."""
    seed: int = 7
    """Seed of every random draw; the same seed gives the same quotes."""
    volatility_bps: Annotated[Decimal, decimal_range(ge=0, le=10_000)] = Decimal("0.23")
    """Standard deviation of one step's return, in basis points. The default is a large US
    stock (25 % a year) stepped every 0.05 s: a fraction of a 2-cent spread per step at
    $190 (``step_volatility_bps``)."""
    tick_size: Annotated[Decimal, decimal_range(gt=0, le=1_000_000)] = Decimal("0.01")
    """Price increment; every price the venue shows or trades at is a multiple of it."""
    spread_ticks: Annotated[int, Meta(ge=1, le=1_000_000)] = 2
    """Width of the displayed spread in ticks."""
    depth: PositiveAmount = Decimal(1000)
    """Size shown at the bid and at the ask each step; orders take liquidity from it."""
    latency_ms: Annotated[int, Meta(ge=0, le=60_000)] = 0
    """Orders and cancels take effect this long after they are sent, in ``step()``/``pump()``."""
    reject_rate: Probability = 0.0
    """Probability that the venue refuses a new order."""
    anomalies: AnomalyConfig = AnomalyConfig()
    """Faulty market data to publish."""

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("symbols: at least one symbol is required")
        for symbol, mid in self.symbols.items():
            if not symbol:
                raise ValueError("symbols: a symbol must not be empty")
            if not mid.is_finite() or mid <= 0:
                raise ValueError(f"symbols.{symbol}: starting mid must be positive, got {mid}")
        if not self.volatility_bps.is_finite() or self.volatility_bps < 0:
            raise ValueError(f"volatility_bps: must not be negative, got {self.volatility_bps}")
        if not self.tick_size.is_finite() or self.tick_size <= 0:
            raise ValueError(f"tick_size: must be positive, got {self.tick_size}")
        if self.spread_ticks < 1:
            raise ValueError(f"spread_ticks: must be at least 1, got {self.spread_ticks}")
        if not self.depth.is_finite() or self.depth <= 0:
            raise ValueError(f"depth: must be positive, got {self.depth}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms: must not be negative, got {self.latency_ms}")
        _check_probability("reject_rate", self.reject_rate)


class WorkingOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one order at the venue (working, or done for ``order_status``)."""

    order: SubmitOrder
    """The order as submitted."""
    venue_order_id: str
    """The venue's identifier for the order."""
    filled: Decimal
    """Quantity executed so far."""
    leaves: Decimal
    """Quantity still working."""
    status: OrderStatus
    """``ACCEPTED`` or ``PARTIALLY_FILLED`` while working; ``FILLED`` or ``CANCELLED`` once done."""
    triggered: bool = False
    """For stop and stop-limit orders: the stop price has been touched."""
    average_price: Decimal = Decimal(0)
    """Average price of the executions in effect (zero before the first)."""


class TradeAmended(msgspec.Struct, frozen=True, kw_only=True):
    """The venue took back (bust) or changed (correction) a trade it had reported."""

    account: str
    """The account the trade was on."""
    original: OrderFilled
    """The execution as first reported."""
    corrected: OrderFilled | None
    """The execution that replaces it (a new ``fill_id``); ``None`` when busted."""
    ts_ns: int
    """When the venue amended it, wall clock nanoseconds."""


OrderListener = Callable[[str, OrderEvent], None]
"""Receives ``(account, event)`` for every order event."""

QuoteListener = Callable[[list[Quote]], None]
"""Receives the quotes published by one step (never an empty list; do not mutate it)."""

AmendmentListener = Callable[[TradeAmended], None]
"""Receives every trade bust and correction, in order with the order events."""


class _LiveOrder(msgspec.Struct, kw_only=True):
    """An order working at the venue (mutable; also the persisted form)."""

    account: str
    order: SubmitOrder
    venue_order_id: str
    filled: Decimal
    leaves: Decimal
    status: OrderStatus = OrderStatus.ACCEPTED
    triggered: bool = False


class _Position(msgspec.Struct, kw_only=True):
    """One account's position in one symbol (mutable; also the persisted form)."""

    quantity: Decimal = _ZERO
    average_price: Decimal = _ZERO
    realized: Decimal = _ZERO


class _Account:
    """Everything the venue keeps for one account."""

    __slots__ = ("done", "executions", "order_ids", "positions", "working")

    def __init__(self) -> None:
        self.positions: dict[str, _Position] = {}
        self.working: dict[str, _LiveOrder] = {}
        self.done: dict[str, _LiveOrder] = {}
        """Orders that were accepted and are done (filled or cancelled), for status requests."""
        self.executions: list[OrderFilled] = []
        self.order_ids: set[str] = set()


class _Market:
    """The true book of one symbol, and its publication state."""

    __slots__ = (
        "ask_avail",
        "ask_price",
        "ask_ticks",
        "bid_avail",
        "bid_price",
        "bid_ticks",
        "last_quote",
        "mid",
        "mid_ticks",
        "pending",
        "pinned",
        "seq",
        "stall_left",
        "symbol",
    )

    def __init__(self, symbol: str, mid_ticks: float, depth: Decimal) -> None:
        self.symbol = symbol
        self.mid = mid_ticks
        """Unrounded mid in ticks; the random walk moves it."""
        self.mid_ticks = 0
        self.bid_ticks = 0
        self.ask_ticks = 0
        self.bid_price = _ZERO
        self.ask_price = _ZERO
        self.bid_avail = depth
        self.ask_avail = depth
        self.seq = 0
        self.stall_left = 0
        self.pending = 0
        """One-shot anomaly flags for the next step."""
        self.pinned = False
        """Set by ``set_mid``: the next step publishes the mid without moving it."""
        self.last_quote: Quote | None = None


class _MarketState(msgspec.Struct, kw_only=True):
    mid: Decimal
    seq: int = 0


class _PersistedAccount(msgspec.Struct, kw_only=True):
    positions: dict[str, _Position] = {}
    executions: list[OrderFilled] = []
    order_ids: list[str] = []


class _EngineState(msgspec.Struct, kw_only=True):
    version: int
    venue: str
    next_order_id: int
    next_fill_id: int
    markets: dict[str, _MarketState] = {}
    accounts: dict[str, _PersistedAccount] = {}
    orders: list[_LiveOrder] = []
    done_orders: list[_LiveOrder] = []


_state_encoder = msgspec.json.Encoder(decimal_format="string")
_state_decoder = msgspec.json.Decoder(_EngineState)
_order_decoder = msgspec.json.Decoder(_LiveOrder)
_position_decoder = msgspec.json.Decoder(_Position)
_fill_decoder = msgspec.json.Decoder(OrderFilled)


class VenueEngine:
    """One simulated venue: quotes, matching, positions per account, anomalies, persistence."""

    def __init__(
        self,
        venue: str,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build the venue ``venue`` from ``config``; ``clock`` (seconds) times ``latency_ms``."""
        if not venue:
            raise ValueError("venue: must not be empty")
        self.venue = venue
        self.config = config if config is not None else EngineConfig()
        self.symbols: tuple[str, ...] = tuple(self.config.symbols)
        self._clock = clock
        self._lock = threading.RLock()
        self._order_listeners: tuple[OrderListener, ...] = ()
        self._quote_listeners: tuple[QuoteListener, ...] = ()
        cfg = self.config
        self._tick = cfg.tick_size
        self._half_spread = cfg.spread_ticks // 2
        self._min_mid_ticks = self._half_spread + 1
        self._sigma = float(cfg.volatility_bps) / 10_000.0
        self._latency_s = cfg.latency_ms / 1000.0
        self._spike_factor = float(cfg.anomalies.spike_size_pct) / 100.0
        anomalies = cfg.anomalies
        self._random_anomalies = any(
            (
                anomalies.spike_probability,
                anomalies.crossed_probability,
                anomalies.negative_probability,
                anomalies.stall_probability,
            )
        )
        self._amendment_listeners: tuple[AmendmentListener, ...] = ()
        self._outbox: deque[tuple[str, OrderEvent | TradeAmended]] = deque()
        self._stepping = False
        self._delivering = False
        self._store: EngineStore | None = None
        self._dirty_orders: dict[tuple[str, str], _LiveOrder | None] = {}
        self._dirty_positions: dict[tuple[str, str], _Position] = {}
        self._new_fills: list[tuple[str, OrderFilled]] = []
        self._new_order_ids: list[tuple[str, str]] = []
        self._rewrite = False
        self.store_errors = 0
        """Writes to the store that failed (logged; the next write rewrites the whole state)."""
        self._reset()

    # ----------------------------------------------------------------- listeners

    def add_order_listener(self, listener: OrderListener) -> None:
        """Receive ``(account, event)`` for every order event from now on."""
        with self._lock:
            self._order_listeners = (*self._order_listeners, listener)

    def add_amendment_listener(self, listener: AmendmentListener) -> None:
        """Receive every trade bust and correction from now on."""
        with self._lock:
            self._amendment_listeners = (*self._amendment_listeners, listener)

    def remove_amendment_listener(self, listener: AmendmentListener) -> None:
        """Stop delivering amendments to ``listener`` (no error when it is not registered)."""
        with self._lock:
            self._amendment_listeners = tuple(
                x for x in self._amendment_listeners if x != listener)

    def remove_order_listener(self, listener: OrderListener) -> None:
        """Stop delivering order events to ``listener`` (no error when it is not registered)."""
        with self._lock:
            self._order_listeners = tuple(x for x in self._order_listeners if x != listener)

    def add_quote_listener(self, listener: QuoteListener) -> None:
        """Receive the quotes of every step from now on."""
        with self._lock:
            self._quote_listeners = (*self._quote_listeners, listener)

    def remove_quote_listener(self, listener: QuoteListener) -> None:
        """Stop delivering quotes to ``listener`` (no error when it is not registered)."""
        with self._lock:
            self._quote_listeners = tuple(x for x in self._quote_listeners if x != listener)

    # ----------------------------------------------------------------- market

    def step(self) -> list[Quote]:
        """Advance every price path one step and return the quotes published.

        Then process delayed requests that are due, match working orders against the new
        book, and deliver the quotes (to quote listeners) and then the order events. A
        stalled symbol publishes nothing, so the list can be shorter than ``symbols``.
        """
        with self._lock:
            ts = time.time_ns()
            quotes = self._advance(ts)
            self._pump()
            for market in self._markets.values():
                orders = self._by_symbol[market.symbol]
                if orders:
                    for live in list(orders.values()):
                        self._work(live, market, ts)
            if quotes:
                self._stepping = True  # what a quote listener causes is delivered below
                try:
                    for listener in self._quote_listeners:
                        try:
                            listener(quotes)
                        except Exception:
                            _log.exception("venue %s: quote listener failed", self.venue)
                finally:
                    self._stepping = False
            self._deliver()
            return quotes

    def pump(self) -> None:
        """Process delayed orders and cancels whose latency has elapsed."""
        with self._lock:
            self._pump()
            self._deliver()

    def quote(self, symbol: str) -> Quote | None:
        """The last quote published for ``symbol``; ``None`` before the first or when unknown."""
        with self._lock:
            market = self._markets.get(symbol)
            return market.last_quote if market is not None else None

    def set_mid(self, symbol: str, mid: Decimal) -> None:
        """Move the market: the book is at ``mid`` now and the next step publishes it unmoved.

        Resting orders are matched against the new book at the next step; orders submitted
        from now on trade against it at once.
        """
        with self._lock:
            market = self._market(symbol)
            if not mid.is_finite() or mid <= 0:
                raise ValueError(f"mid: must be positive, got {mid}")
            market.mid = float(mid / self._tick)
            market.pinned = True
            self._reprice(market)

    def inject(self, kind: str, symbol: str) -> None:
        """Publish one anomaly for ``symbol`` on the next step.

        ``kind`` is ``"spike"`` (the mid jumps by ``spike_size_pct``), ``"crossed"`` (bid
        above ask), ``"negative"`` (a negative bid) or ``"stall"`` (nothing published for
        ``stall_steps`` steps).
        """
        flag = _ANOMALY_FLAGS.get(kind)
        if flag is None:
            raise ValueError(f"kind: expected one of {sorted(ANOMALY_KINDS)}, got {kind!r}")
        with self._lock:
            self._market(symbol).pending |= flag

    # ----------------------------------------------------------------- orders

    def submit(self, account: str, order: SubmitOrder) -> None:
        """Place ``order`` for ``account``; the outcome arrives as order events.

        With ``latency_ms == 0`` the events are delivered before this returns; otherwise
        the order takes effect in the first ``step()``/``pump()`` after the latency.
        """
        with self._lock:
            if self._latency_s:
                self._delay(_DELAYED_SUBMIT, account, order)
                return
            self._submit(account, order, time.time_ns())
            self._deliver()

    def cancel(self, account: str, client_order_id: str) -> None:
        """Cancel one working order: ``OrderCancelled``, or ``OrderRejected`` when not working."""
        with self._lock:
            if self._latency_s:
                self._delay(_DELAYED_CANCEL, account, client_order_id)
                return
            self._cancel_one(account, client_order_id, time.time_ns())
            self._deliver()

    def cancel_all(self, account: str) -> int:
        """Cancel every working order of ``account`` and return how many.

        With latency the mass cancel takes effect later; the count returned is then the
        number of orders working when it was requested.
        """
        with self._lock:
            acct = self._accounts.get(account)
            if self._latency_s:
                self._delay(_DELAYED_CANCEL_ALL, account, None)
                return len(acct.working) if acct is not None else 0
            count = self._cancel_every(account, time.time_ns())
            self._deliver()
            return count

    # ----------------------------------------------------------------- accounts

    def positions(self, account: str) -> list[VenuePosition]:
        """The account's non-flat positions, by symbol: signed quantity and average price."""
        with self._lock:
            acct = self._accounts.get(account)
            if acct is None:
                return []
            return [
                VenuePosition(
                    venue=self.venue,
                    symbol=symbol,
                    quantity=pos.quantity,
                    average_price=pos.average_price,
                )
                for symbol, pos in sorted(acct.positions.items())
                if pos.quantity
            ]

    def realized_pnl(self, account: str) -> dict[str, Decimal]:
        """Profit realised by reducing positions, per symbol the account has traded."""
        with self._lock:
            acct = self._accounts.get(account)
            if acct is None:
                return {}
            return {symbol: pos.realized for symbol, pos in sorted(acct.positions.items())}

    def open_orders(self, account: str) -> list[WorkingOrder]:
        """Snapshots of the account's working orders, in arrival order."""
        with self._lock:
            acct = self._accounts.get(account)
            if acct is None:
                return []
            return [
                WorkingOrder(
                    order=live.order,
                    venue_order_id=live.venue_order_id,
                    filled=live.filled,
                    leaves=live.leaves,
                    status=live.status,
                    triggered=live.triggered,
                )
                for live in acct.working.values()
            ]

    def is_pending(self, account: str, client_order_id: str) -> bool:
        """True while the order waits out ``latency_ms`` (received, not at the book yet)."""
        with self._lock:
            return any(kind == _DELAYED_SUBMIT and acct == account and isinstance(arg, SubmitOrder)
                       and arg.client_order_id == client_order_id for _, kind, acct, arg in self._delayed)

    def order_status(self, account: str, client_order_id: str) -> WorkingOrder | None:
        """The order as the venue knows it, working or done; ``None`` when it never accepted it."""
        with self._lock:
            acct = self._accounts.get(account)
            if acct is None:
                return None
            live = acct.working.get(client_order_id) or acct.done.get(client_order_id)
            if live is None:
                return None
            return self._snapshot(acct, live)

    def _snapshot(self, acct: _Account, live: _LiveOrder) -> WorkingOrder:
        coid = live.order.client_order_id
        notional = _ZERO
        quantity = _ZERO
        if live.filled:
            for fill in reversed(acct.executions):
                if fill.client_order_id == coid:
                    notional += fill.quantity * fill.price
                    quantity += fill.quantity
                    if quantity >= live.filled:
                        break
        return WorkingOrder(
            order=live.order,
            venue_order_id=live.venue_order_id,
            filled=live.filled,
            leaves=_ZERO if live.status.is_done() else live.leaves,
            status=live.status,
            triggered=live.triggered,
            average_price=notional / quantity if quantity else _ZERO,
        )

    def bust(self, account: str, fill_id: str) -> TradeAmended:
        """Take back an execution: it leaves the account's executions and its position.

        A working order gets the quantity back (it can trade again); a done order stays
        done with less filled. Listeners get a ``TradeAmended`` with ``corrected=None``.
        Raises ``ValueError`` when the account has no such execution.
        """
        return self._amend(account, fill_id, None, None)

    def correct(self, account: str, fill_id: str, *, price: Decimal | None = None,
                quantity: Decimal | None = None) -> TradeAmended:
        """Change an execution's price and/or quantity (not above the original quantity).

        The corrected execution takes the original's place under a new ``fill_id``; the
        position is recomputed. Raises ``ValueError`` on an unknown execution or a bad value.
        """
        return self._amend(account, fill_id, price, quantity, correct=True)

    def _amend(self, account: str, fill_id: str, price: Decimal | None,
               quantity: Decimal | None, *, correct: bool = False) -> TradeAmended:
        with self._lock:
            acct = self._accounts.get(account)
            index = None
            if acct is not None:
                for i in range(len(acct.executions) - 1, -1, -1):
                    if acct.executions[i].fill_id == fill_id:
                        index = i
                        break
            if acct is None or index is None:
                raise ValueError(f"fill_id: no execution {fill_id!r} on account {account!r}")
            original = acct.executions[index]
            corrected: OrderFilled | None = None
            if correct:
                new_price = original.price if price is None else price
                new_quantity = original.quantity if quantity is None else quantity
                if not new_price.is_finite() or new_price <= 0:
                    raise ValueError(f"price: must be positive, got {new_price}")
                if not new_quantity.is_finite() or not 0 < new_quantity <= original.quantity:
                    raise ValueError(
                        f"quantity: must be within (0, {original.quantity}], got {new_quantity}")
            self._flush_store()  # what happened before goes first
            ts = time.time_ns()
            batch = StoreBatch()
            if correct:
                corrected = msgspec.structs.replace(
                    original, fill_id=f"{self.venue}-{self._next_fill_id}", price=new_price,
                    quantity=new_quantity, ts_ns=ts)
                self._next_fill_id += 1
                acct.executions[index] = corrected
                batch.fills_replaced.append(
                    (original.fill_id, corrected.fill_id, _state_encoder.encode(corrected)))
            else:
                del acct.executions[index]
                batch.fills_removed.append(original.fill_id)
            delta = (corrected.quantity if corrected is not None else _ZERO) - original.quantity
            live = (acct.working.get(original.client_order_id)
                    or acct.done.get(original.client_order_id))
            if live is not None and delta:
                live.filled += delta
                if not live.status.is_done():
                    live.leaves -= delta
                    live.status = (OrderStatus.PARTIALLY_FILLED if live.filled
                                   else OrderStatus.ACCEPTED)
                self._note_order(live)
            self._recompute_position(acct, original.symbol)
            self._note_position(account, original.symbol)
            self._flush_store(batch)
            amendment = TradeAmended(account=account, original=original, corrected=corrected,
                                     ts_ns=ts)
            self._emit(account, amendment)
            if not self._stepping:
                self._deliver()
            return amendment

    def _recompute_position(self, acct: _Account, symbol: str) -> None:
        """Rebuild one position from the executions in effect (after a bust or correction)."""
        scratch = _Account()
        scratch.positions[symbol] = _Position()
        for fill in acct.executions:
            if fill.symbol == symbol:
                self._apply_fill(scratch, symbol, fill.side, fill.quantity, fill.price)
        acct.positions[symbol] = scratch.positions[symbol]

    def external_fill(self, account: str, symbol: str, side: Side, quantity: Decimal,
                      price: Decimal | None = None) -> OrderFilled:
        """A trade on ``account`` from an order nobody connected sent (a desk, another session).

        It is executed at ``price`` (the touch when ``None``) without touching the book,
        recorded as a done order with a venue-made client order id (``EXT-<n>``), and
        reported like any fill. Raises ``ValueError`` on an unknown symbol or a bad value.
        """
        if not quantity.is_finite() or quantity <= 0:
            raise ValueError(f"quantity: must be positive, got {quantity}")
        with self._lock:
            market = self._market(symbol)
            if price is None:
                price = market.ask_price if side is Side.BUY else market.bid_price
            if not price.is_finite() or price <= 0:
                raise ValueError(f"price: must be positive, got {price}")
            ts = time.time_ns()
            venue_order_id = str(self._next_order_id)
            self._next_order_id += 1
            order = SubmitOrder(client_order_id=f"EXT-{venue_order_id}", venue=self.venue,
                                symbol=symbol, side=side, quantity=quantity, source="external",
                                created_ns=ts)
            live = _LiveOrder(account=account, order=order, venue_order_id=venue_order_id,
                              filled=quantity, leaves=_ZERO, status=OrderStatus.FILLED)
            fill = OrderFilled(client_order_id=order.client_order_id, venue=self.venue,
                               fill_id=f"{self.venue}-{self._next_fill_id}", symbol=symbol,
                               side=side, quantity=quantity, price=price, leaves_quantity=_ZERO,
                               venue_order_id=venue_order_id, ts_ns=ts)
            self._next_fill_id += 1
            acct = self._account(account)
            acct.order_ids.add(order.client_order_id)
            self._note_order_id(account, order.client_order_id)
            acct.done[order.client_order_id] = live
            self._note_order(live)
            acct.executions.append(fill)
            self._note_fill(account, fill)
            self._apply_fill(acct, symbol, side, quantity, price)
            self._note_position(account, symbol)
            self._emit(account, fill)
            if not self._stepping:
                self._deliver()
            return fill

    def executions(self, account: str) -> list[OrderFilled]:
        """Every fill of the account, in the order they happened."""
        with self._lock:
            acct = self._accounts.get(account)
            return list(acct.executions) if acct is not None else []

    # ----------------------------------------------------------------- persistence

    def state_bytes(self) -> bytes:
        """JSON of the venue's state: accounts, working orders, executions, ids and mids.

        Delayed requests still in flight and the random generators are not part of it.
        """
        with self._lock:
            state = _EngineState(
                version=_STATE_VERSION,
                venue=self.venue,
                next_order_id=self._next_order_id,
                next_fill_id=self._next_fill_id,
                markets={
                    symbol: _MarketState(mid=market.mid_ticks * self._tick, seq=market.seq)
                    for symbol, market in self._markets.items()
                },
                accounts={
                    name: _PersistedAccount(
                        positions=acct.positions,
                        executions=acct.executions,
                        order_ids=sorted(acct.order_ids),
                    )
                    for name, acct in self._accounts.items()
                },
                orders=[live for acct in self._accounts.values() for live in acct.working.values()],
                done_orders=[live for acct in self._accounts.values() for live in acct.done.values()],
            )
            return _state_encoder.encode(state)

    def load_state(self, data: bytes) -> None:
        """Replace the venue's state with one from ``state_bytes``.

        Mids and sequence numbers of symbols this venue trades are restored; delayed
        requests and pending anomalies are dropped. Raises ``ValueError`` on bad data,
        leaving the state as it was.
        """
        try:
            state = _state_decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValueError(f"engine state: {exc}") from exc
        if state.version != _STATE_VERSION:
            raise ValueError(f"engine state: unsupported version {state.version}")
        with self._lock:
            self._apply_state(state)
            if self._store is not None:
                self._write_all()

    def _apply_state(self, state: _EngineState) -> None:
        """Replace the venue's state with ``state`` (caller holds the lock)."""
        self._reset()
        self._next_order_id = state.next_order_id
        self._next_fill_id = state.next_fill_id
        for symbol, saved in state.markets.items():
            market = self._markets.get(symbol)
            if market is None or not saved.mid.is_finite() or saved.mid <= 0:
                continue
            market.mid = float(saved.mid / self._tick)
            market.seq = saved.seq
            self._reprice(market)
        for name, saved_acct in state.accounts.items():
            acct = self._account(name)
            acct.positions = saved_acct.positions
            acct.executions = saved_acct.executions
            acct.order_ids = set(saved_acct.order_ids)
        for live in (*state.orders, *state.done_orders):
            acct = self._account(live.account)
            coid = live.order.client_order_id
            acct.order_ids.add(coid)
            if live.status.is_done():
                acct.done[coid] = live
            else:
                acct.working[coid] = live
                self._by_symbol.setdefault(live.order.symbol, {})[live.venue_order_id] = live

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically (a temporary file, then a rename).

        A temporary file left by an earlier run killed mid-write is removed first.
        """
        data = self.state_bytes()
        _remove_stale_temporaries(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # ----------------------------------------------------------------- the store

    @property
    def persistent(self) -> bool:
        """True while the engine writes every change to a store."""
        return self._store is not None

    def persist(self, path: Path) -> None:
        """Keep the state in the SQLite store ``path`` from now on.

        A store that already holds a state replaces the engine's; an empty (new) store
        takes the engine's current state (so a state loaded from JSON is carried over).
        From then on every change an order event makes is committed, in one small
        transaction, before the event reaches any listener: a process killed with SIGKILL
        keeps every execution it reported, and each event costs the same however long the
        account's history. Raises ``ValueError`` naming the file when it cannot be used.
        """
        with self._lock:
            if self._store is not None:
                raise RuntimeError(f"venue {self.venue}: already persisting to {self._store.path}")
            store = EngineStore(path)
            try:
                if store.is_empty():
                    self._store = store
                    self._write_all()
                else:
                    self._apply_state(self._decode_stored(store.read(), path))
                    self._store = store
            except BaseException:
                self._store = None
                store.close()
                raise
            _remove_stale_temporaries(path)

    def checkpoint(self) -> None:
        """Write the mids and sequence numbers to the store (the market moves without events)."""
        with self._lock:
            if self._store is None:
                return
            self._flush_store(self._markets_batch())

    def close_store(self) -> None:
        """Checkpoint the market and stop writing to the store (idempotent)."""
        with self._lock:
            store = self._store
            if store is None:
                return
            try:
                self._flush_store(self._markets_batch())
            finally:
                self._store = None
                store.close()

    def _markets_batch(self) -> StoreBatch:
        return StoreBatch(markets=[
            (symbol, str(market.mid_ticks * self._tick), market.seq)
            for symbol, market in self._markets.items()
        ])

    def _meta(self) -> dict[str, str]:
        return {
            "venue": self.venue,
            "next_order_id": str(self._next_order_id),
            "next_fill_id": str(self._next_fill_id),
        }

    def _write_all(self) -> None:
        """Write the whole state to the store, replacing what it held (lock held)."""
        self._rewrite = False
        batch = self._markets_batch()
        batch.replace_all = True
        batch.meta = self._meta()
        for name, acct in self._accounts.items():
            batch.positions.extend(
                (name, symbol, _state_encoder.encode(pos)) for symbol, pos in acct.positions.items()
            )
            batch.fills_added.extend(
                (fill.fill_id, name, _state_encoder.encode(fill)) for fill in acct.executions
            )
            batch.orders_put.extend(
                (name, coid, _state_encoder.encode(live))
                for coid, live in (*acct.working.items(), *acct.done.items())
            )
            batch.order_ids.extend((name, coid) for coid in sorted(acct.order_ids))
        self._dirty_orders.clear()
        self._dirty_positions.clear()
        self._new_fills.clear()
        self._new_order_ids.clear()
        assert self._store is not None
        self._store.write(batch)

    def _decode_stored(self, stored: StoredState, path: Path) -> _EngineState:
        """The engine state a store holds; ``ValueError`` naming ``path`` when it is bad."""
        try:
            meta = stored.meta
            state = _EngineState(
                version=_STATE_VERSION,
                venue=meta["venue"],
                next_order_id=int(meta["next_order_id"]),
                next_fill_id=int(meta["next_fill_id"]),
                markets={s: _MarketState(mid=Decimal(m), seq=q) for s, m, q in stored.markets},
                orders=[_order_decoder.decode(body) for body in stored.orders],
            )
            for account, symbol, body in stored.positions:
                acct = state.accounts.setdefault(account, _PersistedAccount())
                acct.positions[symbol] = _position_decoder.decode(body)
            for account, body in stored.fills:
                acct = state.accounts.setdefault(account, _PersistedAccount())
                acct.executions.append(_fill_decoder.decode(body))
            for account, coid in stored.order_ids:
                acct = state.accounts.setdefault(account, _PersistedAccount())
                acct.order_ids.append(coid)
        except (KeyError, ArithmeticError, ValueError, msgspec.DecodeError) as exc:
            raise ValueError(f"venue store {path}: {exc!r}") from exc
        return state

    def _note_order(self, live: _LiveOrder) -> None:
        """A working order changed (lock held)."""
        if self._store is not None:
            self._dirty_orders[(live.account, live.order.client_order_id)] = live

    def _note_position(self, account: str, symbol: str) -> None:
        if self._store is not None:
            self._dirty_positions[(account, symbol)] = self._accounts[account].positions[symbol]

    def _note_fill(self, account: str, fill: OrderFilled) -> None:
        if self._store is not None:
            self._new_fills.append((account, fill))

    def _note_order_id(self, account: str, client_order_id: str) -> None:
        if self._store is not None:
            self._new_order_ids.append((account, client_order_id))

    def _flush_store(self, batch: StoreBatch | None = None) -> None:
        """Commit the changes noted so far (and ``batch``) in one transaction (lock held).

        A failed write is logged and counted; the next flush then writes the whole state.
        """
        store = self._store
        if store is None:
            return
        if self._rewrite:
            try:
                self._write_all()
            except Exception:
                self.store_errors += 1
                _log.exception("venue %s: writing the store %s failed", self.venue, store.path)
            else:
                self._rewrite = False
            return
        if not (self._dirty_orders or self._dirty_positions or self._new_fills
                or self._new_order_ids or batch):
            return
        out = batch if batch is not None else StoreBatch()
        out.meta = self._meta()
        for (account, coid), live in self._dirty_orders.items():
            if live is None:
                out.orders_removed.append((account, coid))
            else:
                out.orders_put.append((account, coid, _state_encoder.encode(live)))
        out.positions.extend(
            (account, symbol, _state_encoder.encode(pos))
            for (account, symbol), pos in self._dirty_positions.items()
        )
        out.fills_added.extend(
            (fill.fill_id, account, _state_encoder.encode(fill)) for account, fill in self._new_fills
        )
        out.order_ids.extend(self._new_order_ids)
        try:
            store.write(out)
        except Exception:
            self.store_errors += 1
            self._rewrite = True  # the next flush writes the whole state
            _log.exception("venue %s: writing the store %s failed", self.venue, store.path)
            return
        self._dirty_orders.clear()
        self._dirty_positions.clear()
        self._new_fills.clear()
        self._new_order_ids.clear()

    def load(self, path: Path) -> None:
        """Read the state from ``path``; a missing file means a fresh venue."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self._lock:
                self._reset()
            return
        self.load_state(data)

    # ----------------------------------------------------------------- internals

    def _reset(self) -> None:
        """Back to the state of a new engine (listeners kept)."""
        seed = self.config.seed
        self._price_rng = random.Random(seed)
        self._anomaly_rng = random.Random(f"{seed}:anomalies")
        self._reject_rng = random.Random(f"{seed}:rejects")
        self._markets: dict[str, _Market] = {}
        self._by_symbol: dict[str, dict[str, _LiveOrder]] = {}
        for symbol, mid in self.config.symbols.items():
            market = _Market(symbol, float(mid / self._tick), self.config.depth)
            self._reprice(market)
            self._markets[symbol] = market
            self._by_symbol[symbol] = {}
        self._accounts: dict[str, _Account] = {}
        self._next_order_id = 1
        self._next_fill_id = 1
        self._delayed: deque[tuple[float, int, str, SubmitOrder | str | None]] = deque()

    def _market(self, symbol: str) -> _Market:
        """The market of ``symbol``; ``ValueError`` when the venue does not trade it."""
        market = self._markets.get(symbol)
        if market is None:
            raise ValueError(f"symbol: {symbol!r} is not traded at venue {self.venue}")
        return market

    def _account(self, account: str) -> _Account:
        """The record of ``account``, created on first use."""
        acct = self._accounts.get(account)
        if acct is None:
            acct = self._accounts[account] = _Account()
        return acct

    def _reprice(self, market: _Market) -> None:
        """Round the mid to ticks (never letting the bid under one tick) and set the book."""
        if market.mid < self._min_mid_ticks:
            market.mid = float(self._min_mid_ticks)
        ticks = math.floor(market.mid + 0.5)
        if ticks == market.mid_ticks:
            return
        market.mid_ticks = ticks
        market.bid_ticks = bid = ticks - self._half_spread
        market.ask_ticks = ask = bid + self.config.spread_ticks
        market.bid_price = self._tick * bid
        market.ask_price = self._tick * ask

    def _advance(self, ts: int) -> list[Quote]:
        """Move every mid one step and build the quotes to publish."""
        gauss = self._price_rng.gauss
        sigma = self._sigma
        depth = self.config.depth
        anomalies = self.config.anomalies
        venue = self.venue
        quotes: list[Quote] = []
        for market in self._markets.values():
            change = gauss(0.0, sigma)  # drawn even when pinned: paths stay seed-aligned
            if market.pinned:
                market.pinned = False
            else:
                market.mid *= 1.0 + change
            flags = market.pending
            market.pending = 0
            if self._random_anomalies:
                flags |= self._draw_anomalies(anomalies)
            if flags & _SPIKE:
                sign = 1.0 if self._anomaly_rng.random() < 0.5 else -1.0
                market.mid *= 1.0 + sign * self._spike_factor
            self._reprice(market)
            market.bid_avail = depth
            market.ask_avail = depth
            if flags & _STALL:
                market.stall_left = anomalies.stall_steps
            if market.stall_left:
                market.stall_left -= 1
                continue
            bid = market.bid_price
            ask = market.ask_price
            if flags & _CROSSED:
                bid, ask = ask + self._tick, bid
            if flags & _NEGATIVE:
                bid = -bid
            market.seq += 1
            quote = Quote(
                venue=venue,
                symbol=market.symbol,
                bid=bid,
                ask=ask,
                bid_size=depth,
                ask_size=depth,
                seq=market.seq,
                ts_ns=ts,
            )
            market.last_quote = quote
            quotes.append(quote)
        return quotes

    def _draw_anomalies(self, anomalies: AnomalyConfig) -> int:
        """Flags of the random anomalies for one symbol's step (a draw per enabled kind)."""
        rand = self._anomaly_rng.random
        flags = 0
        if anomalies.spike_probability and rand() < anomalies.spike_probability:
            flags |= _SPIKE
        if anomalies.crossed_probability and rand() < anomalies.crossed_probability:
            flags |= _CROSSED
        if anomalies.negative_probability and rand() < anomalies.negative_probability:
            flags |= _NEGATIVE
        if anomalies.stall_probability and rand() < anomalies.stall_probability:
            flags |= _STALL
        return flags

    def _delay(self, kind: int, account: str, arg: SubmitOrder | str | None) -> None:
        """Queue a request to take effect once ``latency_ms`` has passed on the clock."""
        self._delayed.append((self._clock() + self._latency_s, kind, account, arg))

    def _pump(self) -> None:
        """Carry out the queued requests that are due, oldest first."""
        delayed = self._delayed
        if not delayed:
            return
        now = self._clock() + _CLOCK_SLACK_S
        ts = time.time_ns()
        while delayed and delayed[0][0] <= now:
            _, kind, account, arg = delayed.popleft()
            if kind == _DELAYED_SUBMIT:
                assert isinstance(arg, SubmitOrder)
                self._submit(account, arg, ts)
            elif kind == _DELAYED_CANCEL:
                assert isinstance(arg, str)
                self._cancel_one(account, arg, ts)
            else:
                self._cancel_every(account, ts)

    def _emit(self, account: str, event: OrderEvent | TradeAmended) -> None:
        """Queue an event for the order listeners (``_deliver`` hands it over)."""
        self._outbox.append((account, event))

    def _deliver(self) -> None:
        """Hand queued events to the order listeners, oldest first, exactly once each."""
        if self._delivering:
            return  # a listener called back in: the outer loop delivers the rest in order
        outbox = self._outbox
        self._delivering = True
        try:
            while outbox:
                account, event = outbox.popleft()
                self._flush_store()  # durable before anybody hears of it
                if isinstance(event, TradeAmended):
                    for amended in self._amendment_listeners:
                        try:
                            amended(event)
                        except Exception:
                            _log.exception("venue %s: amendment listener failed", self.venue)
                    continue
                for listener in self._order_listeners:
                    try:
                        listener(account, event)
                    except Exception:
                        _log.exception("venue %s: order listener failed", self.venue)
            self._flush_store()  # changes no event reported (a stop order triggered)
        finally:
            self._delivering = False

    def _reject(
        self, account: str, order: SubmitOrder, reason: RejectReason, text: str, ts: int
    ) -> None:
        """Refuse a new order."""
        self._emit(
            account,
            OrderRejected(
                client_order_id=order.client_order_id,
                venue=self.venue,
                reason=reason,
                text=text,
                symbol=order.symbol,
                source=order.source,
                ts_ns=ts,
            ),
        )

    def _submit(self, account: str, order: SubmitOrder, ts: int) -> None:
        """Validate, accept and match a new order; it rests if anything is left working."""
        market = self._markets.get(order.symbol)
        if market is None:
            text = f"{CODE_UNKNOWN_SYMBOL} unknown symbol {order.symbol}"
            self._reject(account, order, RejectReason.UNKNOWN_SYMBOL, text, ts)
            return
        acct = self._account(account)
        coid = order.client_order_id
        if coid in acct.order_ids:
            text = f"{CODE_DUPLICATE_ID} duplicate client order id {coid}"
            self._reject(account, order, RejectReason.DUPLICATE_ID, text, ts)
            return
        rate = self.config.reject_rate
        if rate and self._reject_rng.random() < rate:
            text = f"{CODE_VENUE_REJECT} order refused by the venue"
            self._reject(account, order, RejectReason.VENUE, text, ts)
            return
        if order.reduce_only and self._reduce_room(acct, order) <= 0:
            text = f"{CODE_REDUCE_ONLY} reduce-only order would increase the position"
            self._reject(account, order, RejectReason.REDUCE_ONLY, text, ts)
            return
        live = _LiveOrder(
            account=account,
            order=order,
            venue_order_id=str(self._next_order_id),
            filled=_ZERO,
            leaves=order.quantity,
        )
        if order.time_in_force is TimeInForce.FOK:
            available = self._fillable(live, market)
            if available is not None and available < order.quantity:
                text = (
                    f"{CODE_FILL_OR_KILL} fill-or-kill: {available} of {order.quantity} available"
                )
                self._reject(account, order, RejectReason.VENUE, text, ts)
                return
        self._next_order_id += 1
        acct.order_ids.add(coid)
        self._note_order_id(account, coid)
        self._emit(
            account,
            OrderAccepted(
                client_order_id=coid,
                venue=self.venue,
                symbol=order.symbol,
                venue_order_id=live.venue_order_id,
                ts_ns=ts,
            ),
        )
        self._work(live, market, ts)
        if live.leaves and not live.status.is_done():
            acct.working[coid] = live
            self._by_symbol[order.symbol][live.venue_order_id] = live
            self._note_order(live)

    def _fillable(self, live: _LiveOrder, market: _Market) -> Decimal | None:
        """Quantity the order could take from the book now; ``None`` while a stop waits."""
        order = live.order
        buy = order.side is Side.BUY
        if not live.triggered and order.stop_price is not None:
            touched = (
                market.ask_price >= order.stop_price
                if buy
                else market.bid_price <= order.stop_price
            )
            if not touched:
                return None
        limit = order.limit_price
        if buy:
            if limit is not None and market.ask_price > limit:
                return _ZERO
            available = market.ask_avail
        else:
            if limit is not None and market.bid_price < limit:
                return _ZERO
            available = market.bid_avail
        return live.leaves if live.leaves <= available else available

    def _reduce_room(self, acct: _Account, order: SubmitOrder) -> Decimal:
        """How much a reduce-only order may still trade without growing the position."""
        pos = acct.positions.get(order.symbol)
        if pos is None:
            return _ZERO
        quantity = pos.quantity
        if order.side is Side.BUY:
            return -quantity if quantity < 0 else _ZERO
        return quantity if quantity > 0 else _ZERO

    def _work(self, live: _LiveOrder, market: _Market, ts: int) -> None:
        """Trigger, fill and expire one order against the current book."""
        order = live.order
        if order.reduce_only:
            room = self._reduce_room(self._accounts[live.account], order)
            if room <= 0:
                self._cancel(live, "reduce-only: the position is closed", ts)
                return
        else:
            room = None
        quantity = self._fillable(live, market)
        if quantity is None:
            return
        if order.stop_price is not None and not live.triggered:
            live.triggered = True
            self._note_order(live)
        if room is not None and quantity > room:
            quantity = room
        tif = order.time_in_force
        if tif is TimeInForce.FOK and quantity < live.leaves:
            quantity = _ZERO
        if quantity:
            self._fill(live, market, quantity, ts)
        if live.leaves:
            if tif is TimeInForce.IOC or tif is TimeInForce.FOK:
                self._cancel(live, f"{tif.value}: unfilled quantity cancelled", ts)
            elif room is not None and quantity == room:
                self._cancel(live, "reduce-only: the position is closed", ts)

    def _fill(self, live: _LiveOrder, market: _Market, quantity: Decimal, ts: int) -> None:
        """Execute ``quantity`` at the touch, taking it from the displayed depth."""
        order = live.order
        side = order.side
        if side is Side.BUY:
            price = market.ask_price
            market.ask_avail -= quantity
        else:
            price = market.bid_price
            market.bid_avail -= quantity
        live.filled += quantity
        live.leaves -= quantity
        if live.leaves:
            live.status = OrderStatus.PARTIALLY_FILLED
        else:
            live.status = OrderStatus.FILLED
        fill = OrderFilled(
            client_order_id=order.client_order_id,
            venue=self.venue,
            fill_id=f"{self.venue}-{self._next_fill_id}",
            symbol=order.symbol,
            side=side,
            quantity=quantity,
            price=price,
            leaves_quantity=live.leaves,
            venue_order_id=live.venue_order_id,
            ts_ns=ts,
        )
        self._next_fill_id += 1
        acct = self._accounts[live.account]
        acct.executions.append(fill)
        self._note_fill(live.account, fill)
        self._apply_fill(acct, order.symbol, side, quantity, price)
        self._note_position(live.account, order.symbol)
        if live.leaves:
            self._note_order(live)
        else:
            self._retire(live)
        self._emit(live.account, fill)

    @staticmethod
    def _apply_fill(
        acct: _Account, symbol: str, side: Side, quantity: Decimal, price: Decimal
    ) -> None:
        """Weighted average on opening fills; realise on reduction; a flip opens at ``price``."""
        pos = acct.positions.get(symbol)
        if pos is None:
            pos = acct.positions[symbol] = _Position()
        held = pos.quantity
        signed = quantity if side is Side.BUY else -quantity
        after = held + signed
        if not held or (held > 0) == (signed > 0):
            pos.average_price = (abs(held) * pos.average_price + quantity * price) / abs(after)
        else:
            closed = min(quantity, abs(held))
            direction = 1 if held > 0 else -1
            pos.realized += (price - pos.average_price) * closed * direction
            if not after:
                pos.average_price = _ZERO
            elif (after > 0) != (held > 0):
                pos.average_price = price
        pos.quantity = after

    def _retire(self, live: _LiveOrder) -> None:
        """Forget a done order (it may never have been registered as working)."""
        acct = self._accounts[live.account]
        coid = live.order.client_order_id
        if acct.working.get(coid) is live:
            del acct.working[coid]
        acct.done[coid] = live
        self._note_order(live)
        orders = self._by_symbol.get(live.order.symbol)
        if orders is not None:
            orders.pop(live.venue_order_id, None)

    def _cancel(self, live: _LiveOrder, text: str, ts: int) -> None:
        """End a working order as cancelled, saying why."""
        live.status = OrderStatus.CANCELLED
        self._retire(live)
        self._emit(
            live.account,
            OrderCancelled(
                client_order_id=live.order.client_order_id,
                venue=self.venue,
                symbol=live.order.symbol,
                text=text,
                ts_ns=ts,
            ),
        )

    def _cancel_one(self, account: str, client_order_id: str, ts: int) -> None:
        """Cancel one order on request, or refuse when it is not working."""
        acct = self._accounts.get(account)
        live = acct.working.get(client_order_id) if acct is not None else None
        if live is None:
            self._emit(
                account,
                OrderRejected(
                    client_order_id=client_order_id,
                    venue=self.venue,
                    reason=RejectReason.VENUE,
                    text=f"{CODE_UNKNOWN_ORDER} unknown order {client_order_id}",
                    ts_ns=ts,
                ),
            )
            return
        self._cancel(live, "cancelled on request", ts)

    def _cancel_every(self, account: str, ts: int) -> int:
        """Cancel every working order of ``account``; return how many."""
        acct = self._accounts.get(account)
        if acct is None or not acct.working:
            return 0
        working = list(acct.working.values())
        for live in working:
            self._cancel(live, "mass cancel", ts)
        return len(working)


class EngineRunner:
    """A thread that calls ``engine.step()`` every ``interval_s`` until stopped.

    With ``state_path`` it saves the engine's state (JSON) every ``save_every_s`` and on
    stop. An engine with a store (``VenueEngine.persist``) has its market checkpointed
    every ``save_every_s`` instead (its orders and fills are written as they happen).
    ``max_steps`` (optional) ends the thread after that many steps.
    """

    def __init__(
        self,
        engine: VenueEngine,
        interval_s: float = 0.05,
        state_path: Path | None = None,
        save_every_s: float = 1.0,
        *,
        max_steps: int | None = None,
    ) -> None:
        """Prepare a runner for ``engine``; nothing runs before ``start()``."""
        if interval_s <= 0:
            raise ValueError(f"interval_s: must be positive, got {interval_s}")
        if save_every_s <= 0:
            raise ValueError(f"save_every_s: must be positive, got {save_every_s}")
        self.engine = engine
        self.interval_s = interval_s
        self.state_path = state_path
        self.save_every_s = save_every_s
        self.max_steps = max_steps
        self.steps = 0
        """Steps taken so far."""
        self.errors = 0
        """Steps or saves that raised (logged, then the loop went on)."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; a runner starts once."""
        if self._thread is not None:
            raise RuntimeError("runner: already started")
        self._thread = threading.Thread(
            target=self._run, name=f"venue-engine-{self.engine.venue}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and join it; then save the state when ``state_path`` is set.

        Raises ``TimeoutError`` when the thread does not end within ``timeout`` seconds.
        """
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"runner: {thread.name} did not stop within {timeout} s")
        if self.state_path is not None:
            self.engine.save(self.state_path)

    def _run(self) -> None:
        """The thread: step on a fixed schedule, save now and then, until told to stop."""
        next_step = time.monotonic()
        next_save = next_step + self.save_every_s
        while not self._stopping.is_set():
            try:
                self.engine.step()
            except Exception:
                self.errors += 1
                _log.exception("venue %s: step failed", self.engine.venue)
            self.steps += 1
            if self.max_steps is not None and self.steps >= self.max_steps:
                return
            now = time.monotonic()
            if now >= next_save and (self.state_path is not None or self.engine.persistent):
                next_save = now + self.save_every_s
                try:
                    if self.state_path is not None:
                        self.engine.save(self.state_path)
                    self.engine.checkpoint()
                except Exception:
                    self.errors += 1
                    _log.exception("venue %s: saving state failed", self.engine.venue)
            next_step += self.interval_s
            if next_step < now:
                next_step = now  # fell behind: carry on from now instead of bursting
            self._stopping.wait(next_step - now)


TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
"""Seconds of regular US equity trading in a year: the clock an annual volatility runs on."""


def step_volatility_bps(annual_volatility: float, step_interval_s: float) -> Decimal:
    """The engine's ``volatility_bps`` (standard deviation of one step's return) for a price
    that moves ``annual_volatility`` a year (0.25 is a large US stock) when a step is taken
    every ``step_interval_s`` seconds of trading time.

    At 0.25 and 0.05 s this is about 0.23 bp a step: a $190 stock moves about 0.4 of a
    cent per step, a fraction of a 2-cent spread, the way a liquid stock's quote moves.
    """
    if not math.isfinite(annual_volatility) or not 0 <= annual_volatility <= 10:
        raise ValueError(f"annual_volatility: expected 0..10, got {annual_volatility}")
    if not math.isfinite(step_interval_s) or not 0 < step_interval_s <= 3600:
        raise ValueError(f"step_interval_s: expected a positive number of seconds up to 3600, "
                         f"got {step_interval_s}")
    per_step = annual_volatility / math.sqrt(TRADING_SECONDS_PER_YEAR / step_interval_s)
    return Decimal(f"{per_step * 10_000:.6f}")
