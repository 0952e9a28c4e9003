"""Gateways for order sources outside the process: the FIX order-entry acceptor
(``fix_gateway``) and the client API (``api``, served over the control channel by
``client_verbs``). The actor modules are imported by the application only; what others
need is re-exported here."""

from __future__ import annotations

from actors.order_entry.config import FixGatewayConfig, FixSessionConfig, OrderEntryConfig, check_order_entry
from actors.order_entry.protocol import CLIENT_API_ACTOR, FIX_GATEWAY_ACTOR, GatewayState, GetGatewayState

__all__ = [
    "CLIENT_API_ACTOR",
    "FIX_GATEWAY_ACTOR",
    "FixGatewayConfig",
    "FixSessionConfig",
    "GatewayState",
    "GetGatewayState",
    "OrderEntryConfig",
    "check_order_entry",
]
