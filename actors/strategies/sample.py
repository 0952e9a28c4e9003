"""A sample strategy that keeps the paper venue busy.

Every ``interval_s`` it sends one order for a symbol in turn: a market order that moves
its position toward a target which swings between ``+max_position`` and
``-max_position``, or now and then a marketable limit order (immediate-or-cancel, a few
ticks through the mid), so it leaves no order resting. It is an order source like any
other: everything it sends goes through the risk governor. It steers by its own position,
which it learns from the position keeper at start, so a restart continues the swing where
it was.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from decimal import Decimal

from actors.strategies.base import Strategy, StrategyConfig
from messages import OrderAccepted, OrderCancelled, OrderRejected, OrderType, Side, TimeInForce
from messages.bounds import Amount, Interval, PositiveAmount, Probability


class SampleConfig(StrategyConfig, frozen=True, kw_only=True):
    """How the sample strategy trades."""

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


class SampleStrategy(Strategy):
    """Sends a steady trickle of orders to the governor."""

    config_type = SampleConfig

    def __init__(self, config: SampleConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(config, clock=clock)
        self.config: SampleConfig = config
        self._rng = random.Random(config.seed)
        self._symbols = itertools.cycle(config.symbols)
        self._direction: dict[str, int] = {}

    def on_strategy_start(self) -> None:
        self.call_every(self.config.interval_s, "act")

    def on_order_event(self, event: OrderAccepted | OrderRejected | OrderCancelled) -> None:
        if isinstance(event, OrderRejected):
            self.log.bind(reason=str(event.reason)).debug(f"order refused: {event.text}")

    def on_timer(self, name: str) -> None:
        symbol = next(self._symbols)
        mid = self.mid(symbol)
        if mid is None:
            return
        cfg = self.config
        position = self.position(symbol)
        direction = self._direction.get(symbol, 1)
        if direction > 0 and position >= cfg.max_position:
            direction = -1
        elif direction < 0 and position <= -cfg.max_position:
            direction = 1
        self._direction[symbol] = direction
        side = Side.BUY if direction > 0 else Side.SELL
        if self._rng.random() < cfg.limit_ratio:
            ticks = Decimal(self._rng.randint(1, 5)) * Decimal("0.01")
            limit = (mid + ticks if side is Side.BUY else mid - ticks).quantize(Decimal("0.01"))
            self.submit(symbol, side, cfg.quantity, order_type=OrderType.LIMIT, limit_price=limit,
                        time_in_force=TimeInForce.IOC)
        else:
            self.submit(symbol, side, cfg.quantity)
