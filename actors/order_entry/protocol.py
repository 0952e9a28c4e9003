"""What the order-entry actors answer and are asked, shared with the control channel and
the client (no actor lives here): the client API's requests and replies, the fills
socket, and the FIX gateway's state query."""

from __future__ import annotations

from pathlib import Path

import msgspec

from messages import SubmitOrder

__all__ = [
    "API_SOURCE_PREFIX",
    "BEAT_S",
    "BEAT_TOPIC",
    "CLIENT_API_ACTOR",
    "FILLS_SOCKET",
    "FIX_GATEWAY_ACTOR",
    "ApiCancel",
    "ApiFill",
    "ApiOrder",
    "ApiPosition",
    "ApiSubmit",
    "GatewayState",
    "GetApiOrders",
    "GetApiPositions",
    "GetGatewayState",
    "fills_endpoint",
]

CLIENT_API_ACTOR = "client_api"
"""The client API actor's name in the tree."""
FIX_GATEWAY_ACTOR = "fix_gateway"
"""The FIX gateway actor's name in the tree."""
API_SOURCE_PREFIX = "api:"
"""The client API's orders have the source ``api:<user>``."""
FILLS_SOCKET = "fills.pub"
BEAT_TOPIC = b"\x00beat"
"""Topic of the beats on ``fills.pub`` (no source starts with a NUL)."""
BEAT_S = 0.2
"""Time between beats."""
def fills_endpoint(state_dir: Path) -> str:
    """The fills socket's ZeroMQ address."""
    return f"ipc://{Path(state_dir) / FILLS_SOCKET}"


class ApiSubmit(msgspec.Struct, frozen=True, kw_only=True):
    """Ask: send ``order`` (its ``source`` is set here) for ``user``; answers an ``ApiOrder``."""

    order: SubmitOrder
    """The order as the client described it."""
    user: str
    """Who sends it, as the operating system says."""


class ApiCancel(msgspec.Struct, frozen=True, kw_only=True):
    """Ask: cancel one of ``user``'s working orders; answers an ``ApiOrder`` or None."""

    client_order_id: str
    """The order."""
    user: str
    """Who asks; only their own orders can be cancelled."""


class GetApiOrders(msgspec.Struct, frozen=True, kw_only=True):
    """Ask: ``user``'s orders, oldest first (a list of ``ApiOrder``)."""

    user: str
    """Whose orders."""
    working_only: bool = False
    """Only those not yet done."""


class GetApiPositions(msgspec.Struct, frozen=True, kw_only=True):
    """Ask: the positions (a list of ``ApiPosition``): the journal's, from the last
    portfolio snapshot."""


class ApiOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One order as the client API reports it."""

    client_order_id: str
    venue: str
    symbol: str
    side: str
    quantity: str
    status: str
    """pending, accepted, partially_filled, filled, cancelled or rejected."""
    filled_quantity: str
    average_price: str
    leaves_quantity: str
    text: str = ""
    """On a rejection: ``<reason code>: <words>``."""


class ApiFill(msgspec.Struct, frozen=True, kw_only=True):
    """One fill of an API order, as published on ``fills.pub``."""

    client_order_id: str
    venue: str
    symbol: str
    side: str
    quantity: str
    price: str
    leaves_quantity: str
    fill_id: str
    source: str
    ts_ns: int


class ApiPosition(msgspec.Struct, frozen=True, kw_only=True):
    """One position of the journal."""

    venue: str
    symbol: str
    quantity: str
    average_price: str


class GetGatewayState(msgspec.Struct, frozen=True):
    """Ask: the gateway's sessions and counters (a ``GatewayState``)."""


class GatewayState(msgspec.Struct, frozen=True, kw_only=True):
    """What the gateway can say about itself."""

    logged_on: tuple[str, ...]
    """SenderCompIDs logged on now."""
    working: dict[str, int]
    """SenderCompID to the number of its working orders."""
    refused_logons: int
    """Logons refused for bad credentials."""
    received: int
    """Application messages received."""
    rejected_requests: int
    """Application messages answered by a BusinessMessageReject."""
    callback_errors: int
    """Exceptions caught in quickfix callbacks."""


