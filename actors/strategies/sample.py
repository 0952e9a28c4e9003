"""A sample strategy that keeps the paper venue busy.

Every ``interval_s`` it sends one order for a symbol in turn: a market order that moves
its position toward a target which swings between ``+max_position`` and
``-max_position``, or now and then a marketable limit order (immediate-or-cancel, a few ticks through the
mid), so it leaves no order resting. It is an
order source like any other: everything it sends goes through the risk governor.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from loguru import logger
from msgspec import Meta

from actors import topics
from messages import (
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteBatch,
    Side,
    SubmitOrder,
    TimeInForce,
    now_ns,
)
from messages.bounds import Amount, Interval, Name, PositiveAmount, Probability, Symbol
from supervision import SupervisedActor, TimerHandle, bus, registry, scheduler


class SampleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the sample strategy trades."""

    name: Name = "sample"
    """Strategy name; also the ``source`` of its orders."""
    kind: Literal["sample"] = "sample"
    """Strategy kind."""
    venue: Name = "paper"
    """Connector it trades through."""
    symbols: Annotated[tuple[Symbol, ...], Meta(min_length=1)] = ("AAPL", "MSFT")
    """Symbols it trades, in turn."""
    interval_s: Interval = 0.5
    """Time between orders."""
    quantity: PositiveAmount = Decimal(10)
    """Size of each order."""
    max_position: Amount = Decimal(50)
    """Target position swings between plus and minus this."""
    limit_ratio: Probability = 0.2
    """Share of orders sent as immediate-or-cancel limit orders a few ticks through the mid."""
    seed: int = 11
    """Seed of its random choices."""


class _Act(msgspec.Struct, frozen=True):
    pass


class SampleStrategy(SupervisedActor):
    """Sends a steady trickle of orders to the governor."""

    def __init__(self, config: SampleConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config
        self._rng = random.Random(config.seed)
        self._ids = itertools.count(1)
        self._run = f"{int(clock() * 1000):x}"
        self._symbols = itertools.cycle(config.symbols)
        self._mids: dict[str, Decimal] = {}
        self._positions: dict[str, Decimal] = {}
        self._direction: dict[str, int] = {}
        self._fill_ids: set[str] = set()
        self._timer: TimerHandle | None = None
        self.sent = 0
        self.rejected = 0
        self.log = logger.bind(channel="main", strategy=config.name)

    def setup(self) -> None:
        bus.subscribe(topics.MARKET, self.name)
        bus.subscribe(topics.ORDERS, self.name)
        self._schedule()

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            QuoteBatch: self._on_quotes,
            OrderFilled: self._on_fill,
            OrderRejected: self._on_rejected,
            _Act: self._act,
        }

    def _on_quotes(self, batch: QuoteBatch) -> None:
        if batch.venue != self.config.venue:
            return
        for quote in batch.quotes:
            if quote.bid > 0 and quote.ask > quote.bid:
                self._mids[quote.symbol] = quote.mid

    def _on_fill(self, fill: OrderFilled) -> None:
        if fill.venue != self.config.venue or not fill.client_order_id.startswith(f"{self.config.name}-"):
            return
        if fill.fill_id in self._fill_ids:
            return  # a connector resynchronising after a restart publishes its executions again
        self._fill_ids.add(fill.fill_id)
        self._positions[fill.symbol] = self._positions.get(fill.symbol, Decimal(0)) + fill.signed_quantity

    def _on_rejected(self, event: OrderRejected) -> None:
        if event.source == self.config.name:
            self.rejected += 1

    def _act(self, _message: _Act) -> None:
        self._schedule()
        symbol = next(self._symbols)
        mid = self._mids.get(symbol)
        if mid is None:
            return
        cfg = self.config
        position = self._positions.get(symbol, Decimal(0))
        direction = self._direction.get(symbol, 1)
        if direction > 0 and position >= cfg.max_position:
            direction = -1
        elif direction < 0 and position <= -cfg.max_position:
            direction = 1
        self._direction[symbol] = direction
        side = Side.BUY if direction > 0 else Side.SELL
        order_type, limit, tif = OrderType.MARKET, None, TimeInForce.DAY
        if self._rng.random() < cfg.limit_ratio:
            ticks = Decimal(self._rng.randint(1, 5)) * Decimal("0.01")
            order_type, tif = OrderType.LIMIT, TimeInForce.IOC
            limit = (mid + ticks if side is Side.BUY else mid - ticks).quantize(Decimal("0.01"))
        order = SubmitOrder(
            client_order_id=f"{cfg.name}-{self._run}-{next(self._ids)}",
            venue=cfg.venue, symbol=symbol, side=side, quantity=cfg.quantity,
            order_type=order_type, limit_price=limit, time_in_force=tif, source=cfg.name,
            created_ns=now_ns(),
        )
        self.sent += 1
        registry.tell(topics.RISK_GOVERNOR, order)

    def _schedule(self) -> None:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(_Act())
            except Exception:
                pass

        self._timer = scheduler.call_later(self.config.interval_s, tell)
