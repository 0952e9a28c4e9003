"""The ZeroMQ venue's misbehaviour switches and its order_status request, over a real DEALER."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
import zmq

from messages import Side
from tests.venues.test_zmq_venue import Client, context, new_order
from venues.engine import EngineConfig, VenueEngine
from venues.zmq_venue import ZmqBehaviour, ZmqVenue

__all__ = ["context"]  # fixture, used by name


@pytest.fixture
def engine() -> VenueEngine:
    return VenueEngine("sim", EngineConfig(depth=Decimal(100)))


@contextmanager
def start(engine: VenueEngine, context: zmq.Context[zmq.Socket[bytes]],
          behaviour: ZmqBehaviour | None = None) -> Iterator[tuple[ZmqVenue, Client]]:
    venue = ZmqVenue(engine, heartbeat_s=0.1, behaviour=behaviour)
    venue.start()
    client = Client(context, venue.order_endpoint)
    try:
        client.send({"type": "ping", "req_id": "hello"})  # the venue knows the client now
        client.expect_type("pong", req_id="hello")
        yield venue, client
    finally:
        client.close()
        venue.stop()


@pytest.fixture
def kind(engine: VenueEngine, context: zmq.Context[zmq.Socket[bytes]]
         ) -> Iterator[tuple[ZmqVenue, Client]]:
    with start(engine, context) as pair:
        yield pair


def test_order_status_is_answered_for_working_done_and_unknown_orders(
    engine: VenueEngine, kind: tuple[ZmqVenue, Client]
) -> None:
    _, client = kind
    engine.step()
    client.send(new_order("f1", "10"))
    fill = client.expect_type("filled", client_order_id="f1")
    client.send(new_order("w1", "150"))  # 90 at the touch, 60 keep working
    client.expect_type("filled", client_order_id="w1")

    client.send({"type": "order_status", "req_id": "s1", "client_order_id": "f1"})
    done = client.expect_type("order_status", req_id="s1")
    assert (done["known"], done["status"], done["filled"], done["leaves"]) == (
        True, "filled", "10", "0")
    assert Decimal(done["average_price"]) == Decimal(fill["price"])
    client.send({"type": "order_status", "req_id": "s2", "client_order_id": "w1"})
    working = client.expect_type("order_status", req_id="s2")
    assert (working["status"], working["filled"], working["leaves"]) == (
        "partially_filled", "90", "60")
    client.send({"type": "order_status", "req_id": "s3", "client_order_id": "never"})
    unknown = client.expect_type("order_status", req_id="s3")
    assert unknown["known"] is False and unknown["status"] is None


def test_orders_dropped_in_flight_get_no_event_and_are_unknown(
    engine: VenueEngine, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    with start(engine, context, ZmqBehaviour(drop_rate=1.0)) as (venue, client):
        engine.step()
        client.send(new_order("d1", "10"))
        client.send({"type": "order_status", "req_id": "s1", "client_order_id": "d1"})
        answer = client.expect_type("order_status", req_id="s1")  # after anything d1 caused
        assert answer["known"] is False
        assert [f for f in client.seen if f.get("client_order_id") == "d1"] == []
        assert venue.dropped == ["d1"] and engine.positions("zmq") == []


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
def test_cancel_all_refused_or_unanswered_cancels_nothing(
    engine: VenueEngine, context: zmq.Context[zmq.Socket[bytes]], mode: str
) -> None:
    with start(engine, context, ZmqBehaviour(cancel_all=mode)) as (venue, client):
        engine.step()
        client.send(new_order("l1", "5", order_type="limit", limit_price="1.00"))
        client.expect_type("accepted", client_order_id="l1")
        client.send({"type": "cancel_all", "req_id": "ca"})
        if mode == "refuse":
            refused = client.expect_type("cancel_all_rejected", req_id="ca")
            assert "refused" in refused["text"]
        client.send({"type": "ping", "req_id": "after"})
        client.expect_type("pong", req_id="after")  # answered after anything cancel_all caused
        assert [f for f in client.seen if f.get("type") in ("cancelled", "cancel_all_done")] == []
        assert [w.order.client_order_id for w in engine.open_orders("zmq")] == ["l1"]
        assert venue.misbehaviours == {f"cancel_all_{mode}d" if mode == "refuse"
                                       else "cancel_all_ignored": 1}


def test_fills_for_orders_no_client_sent_reach_every_client(
    engine: VenueEngine, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    with start(engine, context, ZmqBehaviour(foreign_fill_rate=1.0)) as (venue, client):
        engine.step()  # one fill from elsewhere per step
        frame = client.expect(lambda f: f.get("type") == "filled"
                              and f["client_order_id"].startswith("EXT-"))
        fills = engine.executions("zmq")
        assert frame["fill_id"] == fills[0].fill_id
        direct = venue.foreign_fill("MSFT", Side.BUY, Decimal(2))
        client.expect_type("filled", client_order_id=direct.client_order_id, quantity="2")
        assert venue.misbehaviours["foreign_fill"] >= 1


def test_bad_behaviour_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="cancel_all"):
        ZmqBehaviour(cancel_all="maybe")
    with pytest.raises(ValueError, match="drop_rate"):
        ZmqBehaviour(drop_rate=-0.1)


def test_order_status_of_an_order_still_in_flight_is_pending(
    context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    now = [1000.0]
    slow = VenueEngine("sim", EngineConfig(depth=Decimal(100), latency_ms=500),
                       clock=lambda: now[0])
    with start(slow, context) as (_, client):
        client.send(new_order("p1", "1"))
        client.send({"type": "order_status", "req_id": "s1", "client_order_id": "p1"})
        pending = client.expect_type("order_status", req_id="s1")
        assert (pending["known"], pending["status"]) == (True, "pending")
        now[0] += 1.0
        slow.pump()
        client.expect_type("filled", client_order_id="p1")
        client.send({"type": "order_status", "req_id": "s2", "client_order_id": "p1"})
        assert client.expect_type("order_status", req_id="s2")["status"] == "filled"


def test_a_bad_order_status_request_is_an_error_naming_the_field(
    kind: tuple[ZmqVenue, Client]
) -> None:
    _, client = kind
    client.send({"type": "order_status", "req_id": "bad", "client_order_id": ""})
    error = client.expect_type("error", req_id="bad")
    assert error["code"] == "invalid" and "client_order_id" in error["text"]
    client.send({"type": "order_status", "req_id": "ok", "client_order_id": "x"})
    assert client.expect_type("order_status", req_id="ok")["known"] is False  # still serving
