"""Wire frames of the ZeroMQ venue protocol, shared by the venue and the ``zmq`` connector.

Two channels (docs/zmq-protocol.md is the full description):

- market data on a PUB socket: two-frame messages ``[topic, payload]``; the topic is the
  symbol (UTF-8) for quotes and ``HEARTBEAT_TOPIC`` for heartbeats;
- orders on a ROUTER socket: one JSON object per message from each DEALER client;
  replies go back to the asking client, order events to every client of the account.

Every payload is a JSON object whose ``type`` field names the frame. Decimals travel as
strings. Every frame is decoded with unknown fields refused, so a misspelt field is an
error, never a silent default; a quote with a NaN or absurdly large price, a negative size,
an empty symbol or a sequence number below 1 does not decode either (every number is held
to the bounds of ``messages._base``).
"""

from __future__ import annotations

from decimal import Decimal
from types import MappingProxyType
from typing import ClassVar

import msgspec

from messages._base import (
    PRICE_BOUNDS,
    QUANTITY_BOUNDS,
    Bounds,
    MessageError,
    check_fields,
    require_above_zero,
    require_not_below_zero,
    require_text,
)
from messages.orders import OrderStatus, OrderType, RejectReason, Side, TimeInForce

HEARTBEAT_TOPIC = "_heartbeat"
"""Topic of the venue heartbeat on the market data channel."""


class Frame(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """A JSON object on the wire; ``type`` names it and unknown fields are refused.

    Every field is checked as a message's is (``messages._base``: finite, bounded decimals,
    64-bit integers, valid text); a frame with rules of its own calls
    ``super().__post_init__()`` first.
    """

    field_bounds: ClassVar[Bounds] = MappingProxyType({})
    """Decimal fields held tighter than any decimal: prices and quantities."""

    def __post_init__(self) -> None:
        check_fields(self, self.field_bounds)


# ---- market data (PUB) ----------------------------------------------------------------


class QuoteFrame(Frame, frozen=True, kw_only=True, tag="quote"):
    """Top of book for one symbol; published on the symbol's topic."""

    session: str
    """Identifier of this run of the venue; changes when the venue restarts."""
    seq: int
    """Sequence number on this topic, 1 for the first frame of a session, +1 per frame."""
    symbol: str
    """Instrument symbol; equal to the topic."""
    bid: Decimal
    """Best bid."""
    ask: Decimal
    """Best ask."""
    bid_size: Decimal
    """Quantity at the bid; never negative."""
    ask_size: Decimal
    """Quantity at the ask; never negative."""
    ts_ns: int
    """When the venue published it, wall clock nanoseconds."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "bid": PRICE_BOUNDS,
        "ask": PRICE_BOUNDS,
        "bid_size": QUANTITY_BOUNDS,
        "ask_size": QUANTITY_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq < 1:
            raise MessageError(f"seq: must be at least 1, got {self.seq}")
        require_text("symbol", self.symbol)
        require_not_below_zero("bid_size", self.bid_size)
        require_not_below_zero("ask_size", self.ask_size)


class HeartbeatFrame(Frame, frozen=True, kw_only=True, tag="heartbeat"):
    """Venue liveness, published every ``interval_s`` on ``HEARTBEAT_TOPIC``."""

    session: str
    """Identifier of this run of the venue."""
    seq: int
    """Sequence number on the heartbeat topic."""
    venue: str
    """The venue's name."""
    interval_s: float
    """Seconds between heartbeats."""
    ts_ns: int
    """When the venue published it, wall clock nanoseconds."""


# ---- requests (DEALER -> ROUTER) -----------------------------------------------------------


class NewOrderRequest(Frame, frozen=True, kw_only=True, tag="new_order"):
    """Place an order for the account."""

    req_id: str = ""
    """Echoed in an error reply; order events carry the client order id instead."""
    client_order_id: str
    """Client-chosen identifier, unique for the account."""
    symbol: str
    """Instrument symbol."""
    side: Side
    """``buy`` or ``sell``."""
    quantity: Decimal
    """Positive quantity."""
    order_type: OrderType = OrderType.MARKET
    """``market``, ``limit``, ``stop`` or ``stop_limit``."""
    limit_price: Decimal | None = None
    """Limit price for limit and stop-limit orders."""
    stop_price: Decimal | None = None
    """Trigger price for stop and stop-limit orders."""
    time_in_force: TimeInForce = TimeInForce.DAY
    """``day``, ``gtc``, ``ioc`` or ``fok``."""
    reduce_only: bool = False
    """When true the order may only reduce the account's position."""
    source: str = ""
    """Free text: who sent the order."""
    expire_ns: int | None = None
    """When present, the venue refuses the order if it arrives at or after this wall-clock
    time (nanoseconds since the epoch): an arrival deadline, so a late order never trades."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "limit_price": PRICE_BOUNDS,
        "stop_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("client_order_id", self.client_order_id)
        require_text("symbol", self.symbol)
        require_above_zero("quantity", self.quantity)
        require_above_zero("limit_price", self.limit_price)
        require_above_zero("stop_price", self.stop_price)
        if self.expire_ns is not None and self.expire_ns <= 0:
            raise ValueError(f"expire_ns: must be positive, got {self.expire_ns}")


class CancelRequest(Frame, frozen=True, kw_only=True, tag="cancel"):
    """Cancel one working order."""

    req_id: str = ""
    """Echoed in an error reply."""
    client_order_id: str
    """The order to cancel."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("client_order_id", self.client_order_id)


class CancelAllRequest(Frame, frozen=True, kw_only=True, tag="cancel_all"):
    """Cancel every working order of the account; answered by ``CancelAllDoneReply``."""

    req_id: str = ""
    """Echoed in the reply."""


class PositionsRequest(Frame, frozen=True, kw_only=True, tag="positions"):
    """Ask for the account's non-flat positions; answered by ``PositionsReply``."""

    req_id: str = ""
    """Echoed in the reply."""


class ExecutionsRequest(Frame, frozen=True, kw_only=True, tag="executions"):
    """Ask for every fill of the account; answered by ``ExecutionsReply``."""

    req_id: str = ""
    """Echoed in the reply."""


class OpenOrdersRequest(Frame, frozen=True, kw_only=True, tag="open_orders"):
    """Ask for the account's working orders; answered by ``OpenOrdersReply``."""

    req_id: str = ""
    """Echoed in the reply."""


class PingRequest(Frame, frozen=True, kw_only=True, tag="ping"):
    """Liveness and round-trip probe; answered by ``PongReply``."""

    req_id: str = ""
    """Echoed in the reply."""
    ts_ns: int = 0
    """Client timestamp, echoed in the reply."""


class OrderStatusRequest(Frame, frozen=True, kw_only=True, tag="order_status"):
    """Ask for one order's state, working or done; answered by ``OrderStatusReply``."""

    req_id: str = ""
    """Echoed in the reply."""
    client_order_id: str
    """The order."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require_text("client_order_id", self.client_order_id)


Request = (
    NewOrderRequest
    | CancelRequest
    | CancelAllRequest
    | PositionsRequest
    | ExecutionsRequest
    | OpenOrdersRequest
    | PingRequest
    | OrderStatusRequest
)
"""Any request a client may send."""


# ---- order events (ROUTER -> every client of the account) -----------------------------------


class AcceptedEvent(Frame, frozen=True, kw_only=True, tag="accepted"):
    """The venue accepted a new order."""

    client_order_id: str
    """The order."""
    symbol: str
    """Instrument symbol."""
    venue_order_id: str
    """The venue's identifier for the order."""
    ts_ns: int
    """When, wall clock nanoseconds."""


class RejectedEvent(Frame, frozen=True, kw_only=True, tag="rejected"):
    """The venue refused a new order."""

    client_order_id: str
    """The order."""
    symbol: str
    """Instrument symbol, when known."""
    reason: RejectReason
    """``venue``, ``unknown_symbol`` or ``duplicate_id``."""
    text: str
    """The venue's code and words."""
    ts_ns: int
    """When, wall clock nanoseconds."""


class FilledEvent(Frame, frozen=True, kw_only=True, tag="filled"):
    """An execution."""

    client_order_id: str
    """The order that traded."""
    fill_id: str
    """Execution identifier, unique and increasing per venue."""
    symbol: str
    """Instrument symbol."""
    side: Side
    """Side of the order."""
    quantity: Decimal
    """Quantity of this execution."""
    price: Decimal
    """Price of this execution."""
    leaves: Decimal
    """Quantity still working after this execution; 0 when the order is complete."""
    venue_order_id: str
    """The venue's identifier for the order."""
    ts_ns: int
    """When, wall clock nanoseconds."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "price": PRICE_BOUNDS,
        "leaves": QUANTITY_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        require_above_zero("quantity", self.quantity)
        require_above_zero("price", self.price)
        require_not_below_zero("leaves", self.leaves)


class CancelledEvent(Frame, frozen=True, kw_only=True, tag="cancelled"):
    """A working order was cancelled."""

    client_order_id: str
    """The order."""
    symbol: str
    """Instrument symbol."""
    text: str
    """Why."""
    ts_ns: int
    """When, wall clock nanoseconds."""
    expired: bool = False
    """True when the venue ended the order because its time in force ran out (the order
    is expired, not cancelled); absent means false."""


class CancelRejectedEvent(Frame, frozen=True, kw_only=True, tag="cancel_rejected"):
    """A cancel was refused (the order is not working: unknown, filled or already done)."""

    client_order_id: str
    """The order the cancel named."""
    text: str
    """The venue's code and words."""
    ts_ns: int
    """When, wall clock nanoseconds."""


# ---- replies (ROUTER -> the asking client) --------------------------------------------------


class PositionRecord(Frame, frozen=True, kw_only=True, tag="position"):
    """One non-flat position."""

    symbol: str
    """Instrument symbol."""
    quantity: Decimal
    """Signed quantity: positive long, negative short."""
    average_price: Decimal
    """Average entry price."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "average_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()


class OpenOrderRecord(Frame, frozen=True, kw_only=True, tag="open_order"):
    """One working order."""

    client_order_id: str
    """The order."""
    venue_order_id: str
    """The venue's identifier."""
    symbol: str
    """Instrument symbol."""
    side: Side
    """``buy`` or ``sell``."""
    quantity: Decimal
    """Original quantity."""
    order_type: OrderType
    """Order type."""
    limit_price: Decimal | None
    """Limit price, when any."""
    stop_price: Decimal | None
    """Stop price, when any."""
    time_in_force: TimeInForce
    """Time in force."""
    filled: Decimal
    """Quantity executed so far."""
    leaves: Decimal
    """Quantity still working."""
    status: OrderStatus
    """``accepted`` or ``partially_filled``."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "filled": QUANTITY_BOUNDS,
        "leaves": QUANTITY_BOUNDS,
        "limit_price": PRICE_BOUNDS,
        "stop_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("quantity", "filled", "leaves"):
            require_not_below_zero(name, getattr(self, name))


class PositionsReply(Frame, frozen=True, kw_only=True, tag="positions"):
    """Answer to ``PositionsRequest``."""

    req_id: str
    """The request's ``req_id``."""
    positions: tuple[PositionRecord, ...]
    """Every non-flat position; an absent symbol is flat."""
    ts_ns: int
    """When, wall clock nanoseconds."""


class ExecutionsReply(Frame, frozen=True, kw_only=True, tag="executions"):
    """Answer to ``ExecutionsRequest``."""

    req_id: str
    """The request's ``req_id``."""
    fills: tuple[FilledEvent, ...]
    """Every fill of the account, oldest first."""
    ts_ns: int
    """When, wall clock nanoseconds."""


class OpenOrdersReply(Frame, frozen=True, kw_only=True, tag="open_orders"):
    """Answer to ``OpenOrdersRequest``."""

    req_id: str
    """The request's ``req_id``."""
    orders: tuple[OpenOrderRecord, ...]
    """Every working order."""
    ts_ns: int
    """When, wall clock nanoseconds."""


class CancelAllDoneReply(Frame, frozen=True, kw_only=True, tag="cancel_all_done"):
    """Answer to ``CancelAllRequest``, sent after the ``cancelled`` events it caused."""

    req_id: str
    """The request's ``req_id``."""
    count: int
    """How many orders were cancelled."""
    ts_ns: int
    """When, wall clock nanoseconds."""


class OrderStatusReply(Frame, frozen=True, kw_only=True, tag="order_status"):
    """Answer to ``OrderStatusRequest``."""

    req_id: str
    """The request's ``req_id``."""
    client_order_id: str
    """The order asked about."""
    known: bool
    """False when the venue never accepted an order with this id (the fields below are then
    empty or zero)."""
    status: OrderStatus | None = None
    """``pending`` (received, not yet at the book), ``accepted``, ``partially_filled``,
    ``filled`` or ``cancelled``."""
    venue_order_id: str = ""
    """The venue's identifier."""
    symbol: str = ""
    """Instrument symbol."""
    quantity: Decimal = Decimal(0)
    """Original quantity."""
    filled: Decimal = Decimal(0)
    """Quantity executed (the venue's cumulative quantity)."""
    leaves: Decimal = Decimal(0)
    """Quantity still working (zero once done)."""
    average_price: Decimal = Decimal(0)
    """Average price of the executions (zero before the first)."""
    ts_ns: int = 0
    """When, wall clock nanoseconds."""

    field_bounds: ClassVar[Bounds] = MappingProxyType({
        "quantity": QUANTITY_BOUNDS,
        "filled": QUANTITY_BOUNDS,
        "leaves": QUANTITY_BOUNDS,
        "average_price": PRICE_BOUNDS,
    })

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("quantity", "filled", "leaves", "average_price"):
            require_not_below_zero(name, getattr(self, name))


class CancelAllRejectedReply(Frame, frozen=True, kw_only=True, tag="cancel_all_rejected"):
    """The venue refused a ``CancelAllRequest``: nothing was cancelled."""

    req_id: str
    """The request's ``req_id``."""
    text: str
    """Why, in the venue's words."""
    ts_ns: int = 0
    """When, wall clock nanoseconds."""


class PongReply(Frame, frozen=True, kw_only=True, tag="pong"):
    """Answer to ``PingRequest``."""

    req_id: str
    """The request's ``req_id``."""
    ts_ns: int
    """The ping's ``ts_ns``, echoed."""
    venue_ts_ns: int
    """When the venue answered, wall clock nanoseconds."""
    session: str
    """Identifier of this run of the venue (as in market data frames)."""
    venue: str
    """The venue's name."""


class ErrorReply(Frame, frozen=True, kw_only=True, tag="error"):
    """A request could not be read or carried out."""

    req_id: str
    """The request's ``req_id`` when it could be read, else empty."""
    code: str
    """``bad_frames``, ``bad_json``, ``invalid`` or ``internal``."""
    text: str
    """What was wrong, naming the field where there is one."""


MarketFrame = QuoteFrame | HeartbeatFrame
"""Any payload on the market data channel."""

OrderChannelFrame = (
    AcceptedEvent
    | RejectedEvent
    | FilledEvent
    | CancelledEvent
    | CancelRejectedEvent
    | PositionsReply
    | ExecutionsReply
    | OpenOrdersReply
    | CancelAllDoneReply
    | PongReply
    | ErrorReply
    | OrderStatusReply
    | CancelAllRejectedReply
)
"""Any frame the venue sends a client on the order channel: an order event or a reply."""

encoder = msgspec.json.Encoder(decimal_format="string")
"""Encoder for every frame (decimals as strings)."""

request_decoder: msgspec.json.Decoder[Request] = msgspec.json.Decoder(Request)
"""Decoder for client requests (the venue's side of the order channel)."""

market_decoder: msgspec.json.Decoder[MarketFrame] = msgspec.json.Decoder(MarketFrame)
"""Decoder for market data payloads (the client's side)."""

order_channel_decoder: msgspec.json.Decoder[OrderChannelFrame] = msgspec.json.Decoder(OrderChannelFrame)
"""Decoder for order events and replies (the client's side of the order channel)."""
