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

__all__ = [
    "ANOMALY_KINDS",
    "AnomalyConfig",
    "EngineConfig",
    "EngineRunner",
    "OrderListener",
    "QuoteListener",
    "VenueEngine",
    "WorkingOrder",
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
    volatility_bps: Annotated[Decimal, decimal_range(ge=0, le=10_000)] = Decimal(5)
    """Standard deviation of one step's return, in basis points."""
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
    """A snapshot of one order working at the venue."""

    order: SubmitOrder
    """The order as submitted."""
    venue_order_id: str
    """The venue's identifier for the order."""
    filled: Decimal
    """Quantity executed so far."""
    leaves: Decimal
    """Quantity still working."""
    status: OrderStatus
    """``ACCEPTED`` or ``PARTIALLY_FILLED``."""
    triggered: bool = False
    """For stop and stop-limit orders: the stop price has been touched."""


OrderListener = Callable[[str, OrderEvent], None]
"""Receives ``(account, event)`` for every order event."""

QuoteListener = Callable[[list[Quote]], None]
"""Receives the quotes published by one step (never an empty list; do not mutate it)."""


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

    __slots__ = ("executions", "order_ids", "positions", "working")

    def __init__(self) -> None:
        self.positions: dict[str, _Position] = {}
        self.working: dict[str, _LiveOrder] = {}
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


_state_encoder = msgspec.json.Encoder(decimal_format="string")
_state_decoder = msgspec.json.Decoder(_EngineState)


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
        self._outbox: deque[tuple[str, OrderEvent]] = deque()
        self._delivering = False
        self._reset()

    # ----------------------------------------------------------------- listeners

    def add_order_listener(self, listener: OrderListener) -> None:
        """Receive ``(account, event)`` for every order event from now on."""
        with self._lock:
            self._order_listeners = (*self._order_listeners, listener)

    def save_on_every_event(self, path: Path) -> None:
        """Save the state to ``path`` after every order event, ahead of every other listener,
        so a venue process killed with SIGKILL still holds every execution it reported."""

        def save(_account: str, _event: OrderEvent) -> None:
            self.save(path)

        with self._lock:
            self._order_listeners = (save, *self._order_listeners)

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
                for listener in self._quote_listeners:
                    try:
                        listener(quotes)
                    except Exception:
                        _log.exception("venue %s: quote listener failed", self.venue)
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
            for live in state.orders:
                acct = self._account(live.account)
                acct.working[live.order.client_order_id] = live
                acct.order_ids.add(live.order.client_order_id)
                self._by_symbol.setdefault(live.order.symbol, {})[live.venue_order_id] = live

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically (a temporary file, then a rename)."""
        data = self.state_bytes()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

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

    def _emit(self, account: str, event: OrderEvent) -> None:
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
                for listener in self._order_listeners:
                    try:
                        listener(account, event)
                    except Exception:
                        _log.exception("venue %s: order listener failed", self.venue)
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
        live.triggered = order.stop_price is not None
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
        self._apply_fill(acct, order.symbol, side, quantity, price)
        if not live.leaves:
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
        if acct.working.get(live.order.client_order_id) is live:
            del acct.working[live.order.client_order_id]
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

    With ``state_path`` it saves the engine's state every ``save_every_s`` and on stop.
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
            if self.state_path is not None and now >= next_save:
                next_save = now + self.save_every_s
                try:
                    self.engine.save(self.state_path)
                except Exception:
                    self.errors += 1
                    _log.exception("venue %s: saving state failed", self.engine.venue)
            next_step += self.interval_s
            if next_step < now:
                next_step = now  # fell behind: carry on from now instead of bursting
            self._stopping.wait(next_step - now)
