"""Order commands, order events and venue-reported positions."""

from __future__ import annotations

import enum
from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

from messages._base import (
    PRICE_BOUNDS,
    QUANTITY_BOUNDS,
    Bounds,
    Message,
    MessageError,
    require_above_zero,
    require_not_below_zero,
    require_text,
)


class Side(enum.StrEnum):
    """Direction of an order or fill."""

    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        """The side that closes a position opened by this one."""
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(enum.StrEnum):
    """How an order is priced."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(enum.StrEnum):
    """How long an order works."""

    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class RejectReason(enum.StrEnum):
    """Why an order was refused, by tradeguard's pre-trade checks or by the venue."""

    MALFORMED = "malformed"
    UNKNOWN_VENUE = "unknown_venue"
    UNKNOWN_SYMBOL = "unknown_symbol"
    DUPLICATE_ID = "duplicate_id"
    MAX_QUANTITY = "max_quantity"
    MAX_NOTIONAL = "max_notional"
    MAX_POSITION = "max_position"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_DAILY_NOTIONAL = "max_daily_notional"
    DAILY_LOSS = "daily_loss"
    RATE_LIMIT = "rate_limit"
    PRICE_BAND = "price_band"
    NO_MARKET = "no_market"
    REDUCE_ONLY = "reduce_only"
    MODE = "mode"
    PAUSED = "paused"
    CIRCUIT_OPEN = "circuit_open"
    VENUE_DOWN = "venue_down"
    VENUE_HALTED = "venue_halted"
    """The venue's trading state is HALTED (connected but not reconciled, or a mismatch)."""
    VENUE_REDUCING = "venue_reducing"
    """The venue's trading state is REDUCING and the order would not reduce a position."""
    JOURNAL = "journal"
    """The journal could not record the order, so it was not sent."""
    VENUE = "venue"
    """Refused by the venue itself; the text carries the venue's code and words."""


class OrderStatus(enum.StrEnum):
    """Lifecycle state of an order as tradeguard tracks it."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    """Its time in force ended at the venue with quantity unfilled."""

    def is_done(self) -> bool:
        """True when the order can change no more."""
        return self in DONE_STATES


DONE_STATES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
"""Terminal order states."""

FAILSAFE_SOURCE = "failsafe"
"""The ``source`` of orders sent by the failsafe procedure; the only ones passed in FAILSAFE."""


class SubmitOrder(Message, frozen=True, kw_only=True):
    """A request to place a new order."""

    client_order_id: str
    """Identifier chosen by the order source; unique for the life of the journal."""
    venue: str
    """Name of the connector that should carry the order."""
    symbol: str
    """Instrument symbol."""
    side: Side
    """Buy or sell."""
    quantity: Decimal
    """Order quantity; positive."""
    order_type: OrderType = OrderType.MARKET
    """Market, limit, stop or stop-limit."""
    limit_price: Decimal | None = None
    """Limit price; required for limit and stop-limit orders."""
    stop_price: Decimal | None = None
    """Trigger price; required for stop and stop-limit orders."""
    time_in_force: TimeInForce = TimeInForce.DAY
    """How long the order works."""
    reduce_only: bool = False
    """When true the order may only reduce an existing position."""
    source: str = "unknown"
    """Who sent it: a strategy name, ``operator`` or ``failsafe``."""
    created_ns: int = 0
    """When the source created the order, wall clock nanoseconds."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "limit_price": PRICE_BOUNDS,
        "stop_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("client_order_id", self.client_order_id)
        require_text("venue", self.venue)
        require_text("symbol", self.symbol)
        require_above_zero("quantity", self.quantity)
        require_above_zero("limit_price", self.limit_price)
        require_above_zero("stop_price", self.stop_price)
        if self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and self.limit_price is None:
            raise MessageError(f"limit_price: required for a {self.order_type} order")
        if self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and self.stop_price is None:
            raise MessageError(f"stop_price: required for a {self.order_type} order")

    @property
    def signed_quantity(self) -> Decimal:
        """Quantity with the sign of the side: positive buys, negative sells."""
        return self.quantity if self.side is Side.BUY else -self.quantity


class CancelOrder(Message, frozen=True, kw_only=True):
    """A request to cancel one working order."""

    client_order_id: str
    """The order to cancel."""
    venue: str
    """Connector carrying the order."""
    source: str = "unknown"
    """Who asked for the cancel."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("client_order_id", self.client_order_id)
        require_text("venue", self.venue)


class CancelAll(Message, frozen=True, kw_only=True):
    """A request to cancel every working order at a venue (a mass cancel)."""

    venue: str
    """Connector whose venue should cancel everything."""
    source: str = "unknown"
    """Who asked for the mass cancel."""
    request_id: str = ""
    """Correlates the acknowledgement (``CancelAllDone``) with the request."""


class CancelAllDone(Message, frozen=True, kw_only=True):
    """A connector's acknowledgement that its venue processed a mass cancel."""

    venue: str
    """Connector that carried the mass cancel."""
    request_id: str = ""
    """The ``CancelAll.request_id`` this answers."""
    ts_ns: int = 0
    """When the venue confirmed, wall clock nanoseconds."""


class RequestPositions(Message, frozen=True, kw_only=True):
    """Ask a connector for the positions its venue reports."""

    venue: str
    """Connector to ask."""
    request_id: str = ""
    """Correlates the ``VenuePositions`` answer with the request."""


class OrderAccepted(Message, frozen=True, kw_only=True):
    """The venue acknowledged a new order."""

    client_order_id: str
    """The order acknowledged."""
    venue: str
    """Connector that carried it."""
    symbol: str
    """Instrument symbol."""
    venue_order_id: str = ""
    """The venue's own identifier for the order."""
    ts_ns: int = 0
    """When the venue acknowledged, wall clock nanoseconds."""


class OrderRejected(Message, frozen=True, kw_only=True):
    """An order was refused, before the venue (pre-trade check) or by it."""

    client_order_id: str
    """The order refused."""
    venue: str
    """Connector the order was meant for."""
    reason: RejectReason
    """Reason code."""
    text: str = ""
    """Human-readable explanation; for venue rejects, the venue's own code and text."""
    symbol: str = ""
    """Instrument symbol, when known."""
    source: str = ""
    """Source of the refused order, when known."""
    ts_ns: int = 0
    """When the order was refused, wall clock nanoseconds."""


class OrderFilled(Message, frozen=True, kw_only=True):
    """An execution: some or all of an order traded."""

    client_order_id: str
    """The order that traded."""
    venue: str
    """Connector that carried it."""
    fill_id: str
    """The venue's execution identifier; unique per venue, used to drop duplicates."""
    symbol: str
    """Instrument symbol."""
    side: Side
    """Side of the order that traded."""
    quantity: Decimal
    """Quantity of this execution; positive."""
    price: Decimal
    """Price of this execution; positive."""
    leaves_quantity: Decimal
    """Quantity still working after this execution; zero when the order is complete."""
    venue_order_id: str = ""
    """The venue's own identifier for the order."""
    ts_ns: int = 0
    """When the venue executed, wall clock nanoseconds."""
    inferred: bool = False
    """True when no execution report carried this fill: the connector inferred it from the
    venue's order status (its cumulative quantity ahead of the fills already published).
    ``fill_id`` is then made by the connector, deterministic for the order and cumulative
    quantity (FIX: ``inferred:<ClOrdID>:<CumQty>``), so a second recovery cannot count it
    again, and ``price`` is derived from the venue's average price and the known fills."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "price": PRICE_BOUNDS,
        "leaves_quantity": QUANTITY_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("fill_id", self.fill_id)
        require_text("symbol", self.symbol)
        require_above_zero("quantity", self.quantity)
        require_above_zero("price", self.price)
        require_not_below_zero("leaves_quantity", self.leaves_quantity)

    @property
    def is_partial(self) -> bool:
        """True when the order still has quantity working after this fill."""
        return self.leaves_quantity > 0

    @property
    def signed_quantity(self) -> Decimal:
        """Quantity with the sign of the side."""
        return self.quantity if self.side is Side.BUY else -self.quantity


class OrderCancelled(Message, frozen=True, kw_only=True):
    """A working order was cancelled (on request, by a mass cancel, or by the venue)."""

    client_order_id: str
    """The order cancelled."""
    venue: str
    """Connector that carried it."""
    symbol: str = ""
    """Instrument symbol, when known."""
    text: str = ""
    """Why, in words."""
    ts_ns: int = 0
    """When the venue cancelled, wall clock nanoseconds."""
    expired: bool = False
    """True when the venue ended the order because its time in force ran out (FIX
    ExecType / OrdStatus ``C``): the order is *expired*, not cancelled (``OrderStatus.EXPIRED``);
    everything that only needs to know that the order stopped working treats it as a cancel."""


class VenuePosition(Message, frozen=True, kw_only=True):
    """One position as the venue reports it."""

    venue: str
    """Connector that reported it."""
    symbol: str
    """Instrument symbol."""
    quantity: Decimal
    """Signed quantity: positive long, negative short."""
    average_price: Decimal = Decimal(0)
    """Average entry price as the venue computes it; zero when flat or unknown."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "average_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("symbol", self.symbol)
        require_not_below_zero("average_price", self.average_price)


class VenuePositions(Message, frozen=True, kw_only=True):
    """Every non-flat position a venue reports, in answer to ``RequestPositions`` or after
    a (re)connect."""

    venue: str
    """Connector that reported them."""
    positions: tuple[VenuePosition, ...] = ()
    """The non-flat positions; a symbol that is absent is flat."""
    request_id: str = ""
    """The ``RequestPositions.request_id`` this answers; empty when unsolicited."""
    ts_ns: int = 0
    """When the venue reported, wall clock nanoseconds."""
    open_orders: tuple[str, ...] | None = None
    """The client order ids of the orders working at the venue when it reported (the
    venue's own list, read with the positions); None when the connector cannot list them
    (the position keeper then compares positions only)."""


class FillBusted(Message, frozen=True, kw_only=True):
    """The venue cancelled (busted) an execution it had reported: the trade never happened.

    The position keeper removes the fill ``fill_id`` from the positions (and marks the
    venue unreconciled until the venue's positions agree again)."""

    client_order_id: str
    """The order the busted execution belonged to."""
    venue: str
    """Connector that carried it."""
    fill_id: str
    """The venue's identifier of the busted execution (FIX ExecRefID)."""
    bust_id: str
    """The venue's identifier of the bust itself (FIX ExecID of the report)."""
    symbol: str
    """Instrument symbol."""
    side: Side
    """Side of the order."""
    quantity: Decimal
    """Quantity of the busted execution, as the venue reports it; positive."""
    price: Decimal
    """Price of the busted execution, as the venue reports it; positive."""
    cumulative_quantity: Decimal
    """The order's filled quantity at the venue after the bust."""
    average_price: Decimal = Decimal(0)
    """The order's average fill price at the venue after the bust; zero when nothing is filled."""
    venue_order_id: str = ""
    """The venue's own identifier for the order."""
    text: str = ""
    """The venue's words."""
    ts_ns: int = 0
    """When the venue busted the trade, wall clock nanoseconds."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "price": PRICE_BOUNDS,
        "cumulative_quantity": QUANTITY_BOUNDS,
        "average_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("fill_id", self.fill_id)
        require_text("bust_id", self.bust_id)
        require_text("symbol", self.symbol)
        require_above_zero("quantity", self.quantity)
        require_above_zero("price", self.price)
        require_not_below_zero("cumulative_quantity", self.cumulative_quantity)
        require_not_below_zero("average_price", self.average_price)


class FillCorrected(Message, frozen=True, kw_only=True):
    """The venue corrected the quantity or price of an execution it had reported.

    The position keeper replaces the fill ``fill_id`` by one of ``quantity`` at ``price``
    (identified from now on by ``correction_id``), and marks the venue unreconciled until
    the venue's positions agree again."""

    client_order_id: str
    """The order the corrected execution belongs to."""
    venue: str
    """Connector that carried it."""
    fill_id: str
    """The venue's identifier of the execution corrected (FIX ExecRefID)."""
    correction_id: str
    """The venue's identifier of the corrected execution (FIX ExecID of the report)."""
    symbol: str
    """Instrument symbol."""
    side: Side
    """Side of the order."""
    quantity: Decimal
    """The execution's quantity after the correction; positive."""
    price: Decimal
    """The execution's price after the correction; positive."""
    cumulative_quantity: Decimal
    """The order's filled quantity at the venue after the correction."""
    average_price: Decimal = Decimal(0)
    """The order's average fill price at the venue after the correction."""
    venue_order_id: str = ""
    """The venue's own identifier for the order."""
    text: str = ""
    """The venue's words."""
    ts_ns: int = 0
    """When the venue corrected the trade, wall clock nanoseconds."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "price": PRICE_BOUNDS,
        "cumulative_quantity": QUANTITY_BOUNDS,
        "average_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("fill_id", self.fill_id)
        require_text("correction_id", self.correction_id)
        require_text("symbol", self.symbol)
        require_above_zero("quantity", self.quantity)
        require_above_zero("price", self.price)
        require_not_below_zero("cumulative_quantity", self.cumulative_quantity)
        require_not_below_zero("average_price", self.average_price)


OrderEvent = OrderAccepted | OrderRejected | OrderFilled | OrderCancelled
"""Any event in the life of an order."""

OrderCommand = SubmitOrder | CancelOrder | CancelAll | RequestPositions
"""Any command a connector carries to its venue."""
