"""The flip strategy: hold ``target`` of each symbol, long, then short, then long again.

Every ``interval_s`` it compares its own position in each symbol with the target and,
unless an order of its own is still working there, sends the difference (at most
``clip``) as an immediate-or-cancel limit order ``slippage`` through the touch. Every
``flip_s`` the target changes sign. On stop it cancels whatever of its own still works.
"""

from __future__ import annotations

from decimal import Decimal

from actors.strategies import Strategy, StrategyConfig
from messages import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    Side,
    TimeInForce,
)
from messages.bounds import Amount, Interval, PositiveAmount


class FlipConfig(StrategyConfig, frozen=True, kw_only=True):
    """The section ``[[strategies]] kind = "flip"``: the common fields plus these."""

    target: PositiveAmount = Decimal(20)
    """Position it holds in each symbol: +target, then -target."""
    clip: PositiveAmount = Decimal(10)
    """Largest single order."""
    flip_s: Interval = 2.0
    """Time between two flips of the target's sign."""
    interval_s: Interval = 0.25
    """How often it compares its positions with the target."""
    slippage: Amount = Decimal("0.05")
    """How far through the touch its limit price goes."""


class FlipStrategy(Strategy):
    """Holds +target or -target of each symbol, flipping every ``flip_s``."""

    config_type = FlipConfig

    def __init__(self, config: FlipConfig) -> None:
        super().__init__(config)
        self.config: FlipConfig = config
        self.sign = 1
        self.refused = 0

    def on_strategy_start(self) -> None:
        # The base asked the position keeper first: self.position() is what the journal
        # holds for this strategy, so a restart does not start again from flat.
        self.log.info(f"starting with positions {self.positions}")
        self.call_every(self.config.interval_s, "rebalance", first_s=0.0)
        self.call_every(self.config.flip_s, "flip")

    def on_strategy_stop(self) -> None:
        self.cancel_all_mine()

    def on_timer(self, name: str) -> None:
        if name == "flip":
            self.sign = -self.sign
            return
        busy = {own.order.symbol for own in self.working_orders.values()}
        for symbol in self.config.symbols:
            if symbol not in busy:
                self.rebalance(symbol)

    def rebalance(self, symbol: str) -> None:
        quote = self.quote(symbol)
        if quote is None:
            return  # no market yet
        gap = self.sign * self.config.target - self.position(symbol)
        if gap == 0:
            return
        side = Side.BUY if gap > 0 else Side.SELL
        price = quote.ask + self.config.slippage if side is Side.BUY else quote.bid - self.config.slippage
        self.submit(symbol, side, min(abs(gap), self.config.clip), order_type=OrderType.LIMIT,
                    limit_price=price, time_in_force=TimeInForce.IOC)

    def on_fill(self, fill: OrderFilled) -> None:
        self.log.debug(f"{fill.side} {fill.quantity} {fill.symbol} @ {fill.price}: "
                       f"position {self.position(fill.symbol)}")

    def on_order_event(self, event: OrderAccepted | OrderRejected | OrderCancelled) -> None:
        if isinstance(event, OrderRejected):
            self.refused += 1
            self.log.info(f"order refused ({event.reason}): {event.text}")
