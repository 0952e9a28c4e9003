"""How the fake TWS behaves: the switches for what real TWS / IB Gateway does that a client
must survive, and the account it reports.

Every switch is off (or kind) by default except where noted; each can also be changed on a
running venue through ``TwsVenue``'s test hooks, and most have a CLI option on
``tradeguard venue tws`` (see docs/tws-venue.md).
"""

from __future__ import annotations

import math
from decimal import Decimal

import msgspec

__all__ = ["TRADING_SECONDS_PER_YEAR", "TwsBehaviour", "step_volatility_bps"]

TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
"""Seconds of regular US equity trading in a year: the clock an annual volatility runs on."""


class TwsBehaviour(msgspec.Struct, frozen=True, kw_only=True):
    """The fake TWS's switches, validated at construction (a bad value names its field)."""

    coalesce_quotes: bool = False
    """Write a quote's bid and ask ticks in one write (a client reads them together).
    False (the default) is what TWS does: each tickPrice / tickSize is its own write, bid
    side first."""
    quote_split_delay_s: float = 0.0
    """With ``coalesce_quotes`` off: how long after the bid side the ask side is written, so
    that a client sees a new bid beside the old ask for that long (0: right after)."""
    drop_order_rate: float = 0.0
    """Probability that a placeOrder is lost in flight: read, never acknowledged, never
    worked, and never reported by any later request."""
    ignore_global_cancel: bool = False
    """reqGlobalCancel is read and ignored: no order is cancelled and nothing is answered."""
    master_client_id: int | None = None
    """TWS's "Master API client ID": the session with this client id also receives the
    order status and executions of every other client's orders and of orders placed
    elsewhere. Client id 0 always receives those of orders placed elsewhere."""
    initial_cash: Decimal = Decimal(1_000_000)
    """The account's cash before its first execution, in USD."""
    seed: int = 11
    """Seed of the venue's own random draws (dropped orders)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.quote_split_delay_s) or not 0 <= self.quote_split_delay_s <= 5:
            raise ValueError(
                f"quote_split_delay_s: expected 0..5 seconds, got {self.quote_split_delay_s}")
        if not math.isfinite(self.drop_order_rate) or not 0 <= self.drop_order_rate <= 1:
            raise ValueError(f"drop_order_rate: expected 0..1, got {self.drop_order_rate}")
        if self.master_client_id is not None and self.master_client_id < 0:
            raise ValueError(f"master_client_id: must not be negative, got {self.master_client_id}")
        if not self.initial_cash.is_finite() or self.initial_cash < 0:
            raise ValueError(f"initial_cash: must be a non-negative amount, got {self.initial_cash}")


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
