"""Gateways for order sources outside the process: the FIX order-entry acceptor and the
programmatic client API over the control channel."""

from __future__ import annotations

from actors.order_entry.api import ClientApi
from actors.order_entry.client_verbs import CLIENT_API_ACTOR
from actors.order_entry.config import FixGatewayConfig, FixSessionConfig, OrderEntryConfig, check_order_entry
from actors.order_entry.fix_gateway import FixGateway, GatewayState, GetGatewayState

__all__ = [
    "CLIENT_API_ACTOR",
    "ClientApi",
    "FixGateway",
    "FixGatewayConfig",
    "FixSessionConfig",
    "GatewayState",
    "GetGatewayState",
    "OrderEntryConfig",
    "check_order_entry",
]
