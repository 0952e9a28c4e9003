"""The client API's verbs on the control channel: decoding a request and asking the
client API's actor, for the dashboard's control thread (outside the actor system).

A request is the control channel's JSON object (``token``, ``verb``, ``operator``) with
the verb's own fields: ``submit`` takes ``order`` (``ClientOrder``), ``cancel`` takes
``client_order_id``, ``orders`` takes ``working_only``, ``positions`` takes nothing. The
answer's ``result`` is a JSON text: an order, a list of orders or a list of positions
(``actors.order_entry.protocol``).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from actors.order_entry.protocol import CLIENT_API_ACTOR, ApiCancel, ApiSubmit, GetApiOrders, GetApiPositions
from messages import MessageError, OrderType, Side, SubmitOrder, TimeInForce

__all__ = ["CLIENT_API_ACTOR", "CLIENT_VERBS", "ClientOrder", "ClientRequest", "handle_client_request"]

CLIENT_VERBS = frozenset({"submit", "cancel", "orders", "positions"})
"""Verbs served by the client API."""


class ClientOrder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An order as a client describes it (``SubmitOrder`` without source and time)."""

    client_order_id: str
    venue: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    reduce_only: bool = False


class ClientRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The client API's fields of a control request (the rest is the control channel's)."""

    verb: str
    order: ClientOrder | None = None
    client_order_id: str | None = None
    working_only: bool = False


def handle_client_request(raw: bytes, user: str, ask: Callable[[str, Any], Any]) -> tuple[bool, str]:
    """Serve one authenticated client request for ``user``; ``(ok, JSON result or error)``.
    ``ask(name, message)`` asks an actor and answers None when it is down or silent."""
    try:
        request = msgspec.json.decode(raw, type=ClientRequest)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError) as exc:
        return False, f"malformed request: {exc}"
    message: Any
    if request.verb == "submit":
        if request.order is None:
            return False, "submit needs an order"
        try:
            order = SubmitOrder(**msgspec.structs.asdict(request.order), source="api")
        except MessageError as exc:
            return False, f"invalid order: {exc}"
        message = ApiSubmit(order=order, user=user)
    elif request.verb == "cancel":
        if not request.client_order_id:
            return False, "cancel needs a client_order_id"
        message = ApiCancel(client_order_id=request.client_order_id, user=user)
    elif request.verb == "orders":
        message = GetApiOrders(user=user, working_only=request.working_only)
    elif request.verb == "positions":
        message = GetApiPositions()
    else:
        return False, f"unknown verb {request.verb!r}"
    answer = ask(CLIENT_API_ACTOR, message)
    if answer is None and request.verb == "cancel":
        return False, f"no working order {request.client_order_id!r} of yours"
    if answer is None:
        return False, "the client API is not running"
    return True, msgspec.json.encode(answer).decode()
