"""The base of every in-process strategy: a supervised actor that trades one venue.

A strategy is an order source like any other: what it submits goes to the risk governor,
which may refuse it; what the venue says comes back on the bus. The base does the
plumbing, so that a strategy is a handful of hooks:

- at start it asks the position keeper for its book (its own positions and working
  orders, from the journal) and trades only once that has arrived: a restarted strategy
  knows what it holds. Until then no hook runs; events that arrive meanwhile are kept
  and applied after the book;
- it tracks its orders (by client order id) and its own position per symbol from their
  fills, each fill applied once (by fill id) however often a venue re-delivers it;
- timers are scheduler callbacks that tell the actor, never a sleep in a handler.

Hooks to override: ``on_strategy_start``, ``on_strategy_stop``, ``on_quotes``,
``on_order_event``, ``on_fill``, ``on_timer``. Actions: ``submit``, ``cancel``,
``cancel_all_mine``, ``call_later``, ``call_every``, ``cancel_timer``.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, ClassVar

import msgspec
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.errors import TradeguardError
from core.exposure import is_valid_quote, mid_of
from messages import (
    GetSourceBook,
    GetStrategyState,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    OrderType,
    Quote,
    QuoteBatch,
    RejectReason,
    Side,
    SourceBook,
    StrategyState,
    SubmitOrder,
    TimeInForce,
    now_ns,
)
from messages.bounds import Interval, Name, Symbol
from messages.orders import CancelOrder
from supervision import SupervisedActor, TimerHandle, bus, registry, scheduler

ZERO = Decimal(0)

DEFAULT_KIND = "sample"
"""The kind of a ``[[strategies]]`` section that names none."""

OrderEvent = OrderAccepted | OrderRejected | OrderCancelled
"""The order events a strategy hears about its own orders (fills have their own hook)."""

MAX_PENDING_EVENTS = 10_000
"""Events kept while the book is awaited; beyond this the oldest are dropped (logged)."""
DONE_ORDERS_KEPT = 2_048
"""Finished orders remembered, so that a late or re-delivered fill of one is applied once."""


class StrategyError(TradeguardError):
    """A strategy used the base wrongly (an order before its book arrived, an unknown order)."""


class StrategyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings every strategy has; each kind extends it with its own fields."""

    name: Name = "sample"
    """Strategy name: its registry name and the ``source`` of its orders; unique."""
    kind: Name = DEFAULT_KIND
    """Which strategy plug-in (an entry point in ``tradeguard.strategies``)."""
    venue: Name = "paper"
    """Connector it trades through."""
    symbols: Annotated[tuple[Symbol, ...], Meta(min_length=1)] = ("AAPL", "MSFT")
    """Symbols it trades (each subscribed by its venue)."""
    book_retry_s: Interval = 1.0
    """How often it asks the position keeper again for its book while none has arrived."""


@dataclass
class OwnOrder:
    """One order of this strategy, as it tracks it."""

    order: SubmitOrder
    """What was submitted."""
    status: OrderStatus = OrderStatus.PENDING
    """Where it stands."""
    filled: Decimal = ZERO
    """Sum of its fills applied."""
    fill_ids: set[str] = field(default_factory=set)
    """Ids of its fills applied (a re-delivered fill is not applied twice)."""

    @property
    def working(self) -> bool:
        """Not in a terminal state."""
        return not self.status.is_done()


class _TimerFired(msgspec.Struct, frozen=True):
    token: int
    name: str


class _AskBook(msgspec.Struct, frozen=True):
    token: int


@dataclass
class _Timer:
    token: int
    handle: TimerHandle
    every_s: float | None


class Strategy(SupervisedActor):
    """Base of in-process strategies; subclass it, set ``config_type``, override the hooks."""

    config_type: ClassVar[type[StrategyConfig]] = StrategyConfig
    """The config struct of this kind (its ``[[strategies]]`` section is decoded with it)."""

    def __init__(self, config: StrategyConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config
        self.log = logger.bind(channel="main", strategy=config.name)
        self._run = f"{int(clock() * 1000):x}"
        self._ids = itertools.count(1)
        self._ready = False
        self._quiet = False
        self._book_token = 0
        self._book_timer: TimerHandle | None = None
        self._pending: deque[QuoteBatch | OrderFilled | OrderEvent] = deque()
        self._orders: dict[str, OwnOrder] = {}
        self._done: deque[str] = deque()
        self._positions: dict[str, Decimal] = {}
        self._quotes: dict[str, Quote] = {}
        self._timers: dict[str, _Timer] = {}
        self._timer_tokens = itertools.count(1)
        self.submitted = 0
        """Orders sent since this start."""
        self.rejected = 0
        """Of them, refused by the governor or the venue."""
        self.fills = 0
        """Fills of its orders applied since this start."""
        self.book_fills = 0
        """Fills of its orders the journal held when its book was read."""

    # ---- hooks for subclasses ---------------------------------------------------------

    def on_strategy_start(self) -> None:
        """The book has arrived: positions and working orders are known; trading may begin."""

    def on_strategy_stop(self) -> None:
        """The strategy is stopping (its timers are cancelled after this returns)."""

    def on_quotes(self, batch: QuoteBatch) -> None:
        """Quotes of its venue (``mid``/``quote`` already hold them)."""

    def on_order_event(self, event: OrderAccepted | OrderRejected | OrderCancelled) -> None:
        """One of its orders was accepted, rejected (by the governor or the venue) or cancelled."""

    def on_fill(self, fill: OrderFilled) -> None:
        """One of its orders filled (``position`` already includes it)."""

    def on_timer(self, name: str) -> None:
        """The timer ``name`` (``call_later``/``call_every``) is due."""

    # ---- what a strategy knows ----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Its book has arrived and it may submit."""
        return self._ready

    def position(self, symbol: str) -> Decimal:
        """Its own net position in ``symbol`` at its venue (from its orders' fills)."""
        return self._positions.get(symbol, ZERO)

    @property
    def positions(self) -> dict[str, Decimal]:
        """Its non-flat positions per symbol (a copy)."""
        return {symbol: quantity for symbol, quantity in self._positions.items() if quantity}

    @property
    def working_orders(self) -> dict[str, OwnOrder]:
        """Its orders not yet in a terminal state, by client order id (a copy)."""
        return {cid: own for cid, own in self._orders.items() if own.working}

    def quote(self, symbol: str) -> Quote | None:
        """The last valid quote of ``symbol`` at its venue."""
        return self._quotes.get(symbol)

    def mid(self, symbol: str) -> Decimal | None:
        """The mid of the last valid quote of ``symbol`` at its venue."""
        quote = self._quotes.get(symbol)
        return mid_of(quote) if quote is not None else None

    def state(self) -> StrategyState:
        """What it knows about itself (answers ``GetStrategyState``)."""
        return StrategyState(
            name=self.config.name, kind=self.config.kind, venue=self.config.venue, ready=self._ready,
            positions=self.positions, working=tuple(self.working_orders), submitted=self.submitted,
            rejected=self.rejected, fills=self.fills, book_fills=self.book_fills,
        )

    # ---- actions ----------------------------------------------------------------------

    def submit(self, symbol: str, side: Side, quantity: Decimal, *, order_type: OrderType = OrderType.MARKET,
               limit_price: Decimal | None = None, time_in_force: TimeInForce = TimeInForce.DAY,
               reduce_only: bool = False) -> str:
        """Send an order to the risk governor; returns its client order id. Its fate comes
        back through ``on_order_event`` / ``on_fill``."""
        if not self._ready:
            raise StrategyError(f"{self.name}: no order before on_strategy_start (its book is not known yet)")
        cfg = self.config
        order = SubmitOrder(
            client_order_id=f"{cfg.name}-{self._run}-{next(self._ids)}", venue=cfg.venue, symbol=symbol,
            side=side, quantity=quantity, order_type=order_type, limit_price=limit_price,
            time_in_force=time_in_force, reduce_only=reduce_only, source=cfg.name, created_ns=now_ns(),
        )
        self._orders[order.client_order_id] = OwnOrder(order=order)
        self.submitted += 1
        if not registry.tell(topics.RISK_GOVERNOR, order):
            # Nobody will answer: refuse it here, as the governor would.
            self._on_event(OrderRejected(client_order_id=order.client_order_id, venue=cfg.venue,
                                         reason=RejectReason.MODE, text="the risk governor is down",
                                         symbol=symbol, source=cfg.name, ts_ns=now_ns()))
        return order.client_order_id

    def cancel(self, client_order_id: str) -> bool:
        """Ask its venue to cancel one of its working orders; False when it is not one."""
        own = self._orders.get(client_order_id)
        if own is None or not own.working:
            return False
        registry.tell(self.config.venue, CancelOrder(client_order_id=client_order_id,
                                                     venue=self.config.venue, source=self.config.name))
        return True

    def cancel_all_mine(self) -> int:
        """Cancel every working order of this strategy (and no other source's); how many."""
        return sum(self.cancel(cid) for cid in list(self.working_orders))

    def call_later(self, delay_s: float, name: str) -> None:
        """``on_timer(name)`` once, ``delay_s`` from now (replaces a timer of that name)."""
        self._arm(name, delay_s, None)

    def call_every(self, interval_s: float, name: str, *, first_s: float | None = None) -> None:
        """``on_timer(name)`` every ``interval_s`` (first after ``first_s``, default one
        interval), until ``cancel_timer(name)`` or the stop."""
        self._arm(name, interval_s if first_s is None else first_s, interval_s)

    def cancel_timer(self, name: str) -> bool:
        """Cancel the timer ``name``; False when there is none."""
        timer = self._timers.pop(name, None)
        if timer is None:
            return False
        timer.handle.cancel()
        return True

    # ---- the plumbing -------------------------------------------------------------------

    def setup(self) -> None:
        bus.subscribe(topics.MARKET, self.name)
        bus.subscribe(topics.ORDERS, self.name)
        self._ask_book(_AskBook(0))

    def teardown(self) -> None:
        try:
            if self._ready:
                self.on_strategy_stop()
        finally:
            if self._book_timer is not None:
                self._book_timer.cancel()
            for timer in self._timers.values():
                timer.handle.cancel()
            self._timers.clear()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            QuoteBatch: self._on_quotes,
            OrderFilled: self._on_fill,
            OrderAccepted: self._on_event,
            OrderRejected: self._on_event,
            OrderCancelled: self._on_event,
            SourceBook: self._on_book,
            _AskBook: self._ask_book,
            _TimerFired: self._on_timer,
            GetStrategyState: lambda _m: self.state(),
        }

    @property
    def _book_prefix(self) -> str:
        return f"{self._run}.{self.context.generation}-"

    def _ask_book(self, message: _AskBook) -> None:
        if self._ready or message.token != self._book_token:
            return
        self._book_token += 1
        token = self._book_token
        request = GetSourceBook(source=self.config.name, reply_to=self.name,
                                request_id=f"{self._book_prefix}{token}")
        delivered = registry.tell(topics.POSITION_KEEPER, request)
        if (not delivered or token > 1) and (token <= 2 or token % 30 == 0):  # said, not every retry
            self.log.warning(f"no book from the position keeper yet (request {token}); not trading")
        self._book_timer = scheduler.call_later(self.config.book_retry_s, self._teller(_AskBook(token)))

    def _on_book(self, book: SourceBook) -> None:
        if (self._ready or book.source != self.config.name
                or not book.request_id.startswith(self._book_prefix)):
            return  # a second answer, or one to a former generation
        if self._book_timer is not None:
            self._book_timer.cancel()
            self._book_timer = None
        venue = self.config.venue
        for position in book.positions:
            if position.venue == venue:
                self._positions[position.symbol] = position.quantity
            else:
                self.log.warning(f"{position.quantity} {position.symbol} at {position.venue}: a position "
                                 f"of this source at a venue it no longer trades")
        for working in book.working:
            if working.order.venue == venue:
                self._orders[working.order.client_order_id] = OwnOrder(
                    order=working.order, status=working.status, filled=working.filled_quantity,
                    fill_ids=set(working.fill_ids))
        self.book_fills = book.fills
        self._ready = True
        self.log.bind(positions={s: str(q) for s, q in self.positions.items()},
                      working=len(self.working_orders)).info(
            f"strategy {self.name} ({self.config.kind}) starts: book of {book.fills} fills, "
            f"{len(self.working_orders)} working orders")
        # What arrived meanwhile is applied before the start hook (silently: those are orders
        # of a former generation), so that the hook sees the positions as they are now.
        self._quiet = True
        try:
            while self._pending:
                event = self._pending.popleft()
                if isinstance(event, OrderFilled):
                    self._on_fill(event)
                elif not isinstance(event, QuoteBatch):
                    self._on_event(event)
        finally:
            self._quiet = False
        self.on_strategy_start()

    def _hold(self, event: QuoteBatch | OrderFilled | OrderEvent) -> None:
        if isinstance(event, QuoteBatch):
            return  # only the latest quotes matter, and they are kept already
        if len(self._pending) >= MAX_PENDING_EVENTS:
            self._pending.popleft()
            self.log.warning("events held while the book is awaited overflow; the oldest is dropped")
        self._pending.append(event)

    def _on_quotes(self, batch: QuoteBatch) -> None:
        if batch.venue != self.config.venue:
            return
        for quote in batch.quotes:
            if is_valid_quote(quote):
                self._quotes[quote.symbol] = quote
        if self._ready:
            self.on_quotes(batch)

    def _on_fill(self, fill: OrderFilled) -> None:
        if fill.venue != self.config.venue:
            return
        if not self._ready:
            self._hold(fill)
            return
        own = self._orders.get(fill.client_order_id)
        if own is None or fill.fill_id in own.fill_ids:
            return  # not ours (or finished before this start: in the book), or applied already
        own.fill_ids.add(fill.fill_id)
        own.filled += fill.quantity
        self._positions[fill.symbol] = self._positions.get(fill.symbol, ZERO) + fill.signed_quantity
        self.fills += 1
        if fill.leaves_quantity <= 0 or own.filled >= own.order.quantity:
            self._finish(own, OrderStatus.FILLED)
        elif own.working:
            own.status = OrderStatus.PARTIALLY_FILLED
        if not self._quiet:
            self.on_fill(fill)

    def _on_event(self, event: OrderEvent) -> None:
        if event.venue != self.config.venue:
            return
        if not self._ready:
            self._hold(event)
            return
        own = self._orders.get(event.client_order_id)
        if own is None:
            return
        if isinstance(event, OrderAccepted):
            if own.status is OrderStatus.PENDING:
                own.status = OrderStatus.ACCEPTED
        elif not own.working:
            return  # an echo after its end (a cancel after the last fill, say)
        elif isinstance(event, OrderRejected):
            self.rejected += 1
            self._finish(own, OrderStatus.REJECTED)
        else:
            self._finish(own, OrderStatus.CANCELLED)
        if not self._quiet:
            self.on_order_event(event)

    def _finish(self, own: OwnOrder, status: OrderStatus) -> None:
        own.status = status
        self._done.append(own.order.client_order_id)
        while len(self._done) > DONE_ORDERS_KEPT:
            self._orders.pop(self._done.popleft(), None)

    def _arm(self, name: str, delay_s: float, every_s: float | None) -> None:
        self.cancel_timer(name)
        token = next(self._timer_tokens)
        handle = scheduler.call_later(delay_s, self._teller(_TimerFired(token, name)))
        self._timers[name] = _Timer(token=token, handle=handle, every_s=every_s)

    def _on_timer(self, fired: _TimerFired) -> None:
        timer = self._timers.get(fired.name)
        if timer is None or timer.token != fired.token:
            return  # cancelled or re-armed since
        if timer.every_s is None:
            del self._timers[fired.name]
        else:
            self._arm(fired.name, timer.every_s, timer.every_s)
        self.on_timer(fired.name)

    def _teller(self, message: Any) -> Callable[[], None]:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(message)
            except Exception:  # the strategy stopped in the meantime
                pass

        return tell
