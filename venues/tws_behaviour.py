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

from venues.engine import TRADING_SECONDS_PER_YEAR, step_volatility_bps

__all__ = ["TRADING_SECONDS_PER_YEAR", "TwsBehaviour", "step_volatility_bps"]

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
    ignore_completed_orders: bool = False
    """reqCompletedOrders for API orders only (``apiOnly``, what a client asks about its own
    orders) is read and never answered: a client waiting for the end marker times out. The
    request for all completed orders (ib_insync's, at connect) is still answered."""
    master_client_id: int | None = None
    """TWS's "Master API client ID": the session with this client id also receives the
    order status and executions of every other client's orders and of orders placed
    elsewhere. Client id 0 always receives those of orders placed elsewhere."""
    cancel_after_s: float = 0.0
    """The venue itself cancels every order still working this long after it was accepted
    (an exchange ending orders on its own: a session close, a halt, an IOC remainder), told
    to the order's connected clients as TWS tells a cancel; a client that is disconnected
    then learns it only from open and completed orders. 0 (the default): never."""
    silent_cancels: bool = False
    """The venue's own cancels (``cancel_after_s``) reach no client, even a connected one:
    only later requests show them (open orders no longer list the order, completed orders
    do)."""
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
        if not math.isfinite(self.cancel_after_s) or not 0 <= self.cancel_after_s <= 86_400:
            raise ValueError(f"cancel_after_s: expected 0..86400 seconds, got {self.cancel_after_s}")
        if self.master_client_id is not None and self.master_client_id < 0:
            raise ValueError(f"master_client_id: must not be negative, got {self.master_client_id}")
        if not self.initial_cash.is_finite() or self.initial_cash < 0:
            raise ValueError(f"initial_cash: must be a non-negative amount, got {self.initial_cash}")
