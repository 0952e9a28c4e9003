"""The client API end to end: ``tradeguard.client`` over the real control socket of a
running service on the paper venue."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import pytest
import zmq

from actors.dashboard import control_endpoint
from tests.helpers import wait_for
from tradeguard.app import Service
from tradeguard.client import Client, ControlError
from tradeguard.settings import parse_settings
from venues.paper import paper_venue

ACCOUNT = "PAPER-1"


def api_settings() -> object:
    return parse_settings({
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 20.0},
        "risk": {"max_orders_per_s": 1000, "max_order_quantity": "100"},
        "connectors": [{"name": "paper", "kind": "paper", "symbols": ["AAPL", "MSFT"],
                        "quote_interval_s": 0.02, "persist": False, "health_interval_s": 0.2}],
        "order_entry": {"api": True},
    }, environ={})


def started(service: Callable[..., Service]) -> Service:
    svc = service(api_settings())
    wait_for(lambda: paper_venue("paper").engine.quote("AAPL") is not None, timeout_s=10, what="quotes")
    return svc


@pytest.mark.timeout(60)
def test_the_client_submits_an_order_and_sees_its_fill(service: Callable[..., Service]) -> None:
    svc = started(service)
    with Client(svc.state_dir) as client, client.fills() as fills:
        # A PUB socket drops what goes out before the subscription reaches it: the first
        # order goes only once the subscriber is surely connected.
        wait_for(lambda: (svc.state_dir / "fills.pub").exists(), what="the fills socket")
        order = client.submit("AAPL", "buy", 7)
        assert order.status in ("pending", "accepted", "filled") and order.symbol == "AAPL"
        fill = fills.next(timeout_s=10.0)
        assert fill is not None, "no fill published"
        assert fill.client_order_id == order.client_order_id
        assert Decimal(fill.quantity) == 7 and Decimal(fill.price) > 0
        assert fill.source == client.source
        mine = wait_for(lambda: (o := client.order(order.client_order_id)) and o.status == "filled" and o,
                        what="the order filled")
        assert Decimal(mine.filled_quantity) == 7  # type: ignore[union-attr]
        positions = wait_for(lambda: [p for p in client.positions() if p.symbol == "AAPL"],
                             what="the position in the journal")
        assert Decimal(positions[0].quantity) == 7  # type: ignore[index]
    venue_positions = {p.symbol: p.quantity for p in paper_venue("paper").engine.positions(ACCOUNT)}
    assert venue_positions == {"AAPL": Decimal(7)}


@pytest.mark.timeout(60)
def test_the_client_cancels_a_resting_order_and_sees_refusals(service: Callable[..., Service]) -> None:
    svc = started(service)
    quote = paper_venue("paper").engine.quote("MSFT")
    assert quote is not None
    price = (quote.mid * Decimal("0.97")).quantize(Decimal("0.01"))
    client = Client(svc.state_dir)
    resting = client.submit("MSFT", "buy", 3, order_type="limit", limit_price=price)
    wait_for(lambda: client.orders(working_only=True) and
             client.orders(working_only=True)[0].status == "accepted", what="the order working")
    client.cancel(resting.client_order_id)
    wait_for(lambda: (o := client.order(resting.client_order_id)) and o.status == "cancelled",
             what="the order cancelled")
    assert paper_venue("paper").engine.open_orders(ACCOUNT) == []
    # The governor's checks apply: too large an order is refused with its reason.
    big = client.submit("AAPL", "buy", 500)
    refused = wait_for(lambda: (o := client.order(big.client_order_id)) and o.status == "rejected" and o,
                       what="the large order refused")
    assert refused.text.startswith("max_quantity:")  # type: ignore[union-attr]
    # An order that is no order is refused at once, naming the field.
    with pytest.raises(ControlError, match="quantity"):
        client.submit("AAPL", "buy", -1)
    # Someone else's order id cannot be cancelled.
    with pytest.raises(ControlError, match="no working order"):
        client.cancel("not-mine")


@pytest.mark.timeout(60)
def test_without_the_client_api_the_verbs_are_refused(service: Callable[..., Service]) -> None:
    svc = service(parse_settings({
        "service": {"on_shutdown": "leave", "shutdown_timeout_s": 5.0, "start_timeout_s": 20.0},
        "connectors": [{"name": "paper", "kind": "paper", "symbols": ["AAPL"], "persist": False}],
    }, environ={}))
    with pytest.raises(ControlError, match="not running"):
        Client(svc.state_dir).submit("AAPL", "buy", 1)
    assert paper_venue("paper").engine.positions(ACCOUNT) == []


@pytest.mark.timeout(60)
def test_a_client_verb_without_the_credential_is_refused(service: Callable[..., Service]) -> None:
    svc = started(service)
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        sock.connect(control_endpoint(svc.state_dir))
        sock.send(json.dumps({"token": "wrong", "verb": "submit", "order": {
            "client_order_id": "x-1", "venue": "paper", "symbol": "AAPL", "side": "buy",
            "quantity": "1"}}).encode())
        reply = json.loads(sock.recv())
    finally:
        sock.close(linger=0)
    assert reply["ok"] is False and "credential" in reply["error"]
    assert paper_venue("paper").engine.positions(ACCOUNT) == []
    with pytest.raises(ControlError, match="credential"):
        Client(svc.state_dir, token="wrong").orders()
