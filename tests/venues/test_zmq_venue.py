"""The ZeroMQ venue on its own, driven by raw pyzmq client sockets over loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import zmq

from messages.zmq_wire import HEARTBEAT_TOPIC
from tests.helpers import wait_for
from venues.engine import EngineConfig, VenueEngine
from venues.zmq_venue import ZmqVenue

ROOT = Path(__file__).resolve().parents[2]

Frame = dict[str, Any]


class Client:
    """A DEALER client that keeps every frame it reads, for matching by predicate."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.seen: list[Frame] = []

    def send(self, payload: Frame | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.sock.send(data)

    def expect(
        self, predicate: Callable[[Frame], bool], timeout_s: float = 3.0, what: str = ""
    ) -> Frame:
        """The first frame (already read or arriving before the deadline) matching."""
        deadline = time.monotonic() + timeout_s
        index = 0
        while True:
            while index < len(self.seen):
                frame = self.seen[index]
                index += 1
                if predicate(frame):
                    self.seen.remove(frame)
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no frame {what}; seen {self.seen}")
            if self.sock.poll(int(remaining * 1000) + 1):
                self.seen.append(json.loads(self.sock.recv()))

    def expect_type(self, kind: str, timeout_s: float = 3.0, **fields: Any) -> Frame:
        """The first frame of type ``kind`` whose fields equal ``fields``."""
        return self.expect(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout_s,
            f"{kind} {fields}",
        )

    def close(self) -> None:
        self.sock.close(linger=0)


class Feed:
    """A SUB client subscribed to everything; frames as (topic, payload bytes)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.sock = context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)

    def read(self, predicate: Callable[[list[bytes]], bool], timeout_s: float = 3.0) -> list[bytes]:
        """The next message matching ``predicate`` before the deadline."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if self.sock.poll(int(remaining * 1000) + 1):
                frames = self.sock.recv_multipart()
                if predicate(frames):
                    return frames
        raise AssertionError("no matching market data message")

    def heartbeat(self, timeout_s: float = 3.0) -> Frame:
        frames = self.read(lambda f: f[0] == HEARTBEAT_TOPIC.encode(), timeout_s)
        frame: Frame = json.loads(frames[1])
        return frame

    def quote(self, symbol: str, timeout_s: float = 3.0) -> Frame:
        frames = self.read(lambda f: f[0] == symbol.encode(), timeout_s)
        assert len(frames) == 2
        frame: Frame = json.loads(frames[1])
        return frame

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def engine() -> VenueEngine:
    return VenueEngine("sim", EngineConfig(depth=Decimal(100)))


@pytest.fixture
def venue(engine: VenueEngine) -> Iterator[ZmqVenue]:
    front = ZmqVenue(engine, heartbeat_s=0.1)
    front.start()
    yield front
    front.stop()


@pytest.fixture
def client(context: zmq.Context[zmq.Socket[bytes]], venue: ZmqVenue) -> Iterator[Client]:
    c = Client(context, venue.order_endpoint)
    yield c
    c.close()


@pytest.fixture
def feed(context: zmq.Context[zmq.Socket[bytes]], venue: ZmqVenue) -> Iterator[Feed]:
    f = Feed(context, venue.market_endpoint)
    f.heartbeat()  # the subscription is in place once a heartbeat arrives
    yield f
    f.close()


def new_order(coid: str, quantity: str, side: str = "buy", **extra: Any) -> Frame:
    return {
        "type": "new_order", "req_id": coid, "client_order_id": coid, "symbol": "AAPL",
        "side": side, "quantity": quantity, **extra,
    }


def test_start_binds_loopback_ports(venue: ZmqVenue) -> None:
    assert venue.market_endpoint.startswith("tcp://127.0.0.1:")
    assert venue.order_endpoint.startswith("tcp://127.0.0.1:")
    assert venue.market_endpoint != venue.order_endpoint


def test_non_loopback_host_is_refused(engine: VenueEngine) -> None:
    with pytest.raises(ValueError, match="loopback"):
        ZmqVenue(engine, host="0.0.0.0")


def test_heartbeats_are_periodic_and_sequenced(venue: ZmqVenue, feed: Feed) -> None:
    first = feed.heartbeat()
    second = feed.heartbeat()
    assert second["seq"] == first["seq"] + 1
    assert first["session"] == venue.session
    assert first["venue"] == "sim"
    assert first["interval_s"] == pytest.approx(0.1)


def test_quotes_carry_per_topic_sequence_numbers(engine: VenueEngine, feed: Feed) -> None:
    engine.step()
    engine.step()
    first = feed.quote("AAPL")
    msft = feed.quote("MSFT")
    second = feed.quote("AAPL")
    assert (first["seq"], second["seq"], msft["seq"]) == (1, 2, 1)
    assert first["symbol"] == "AAPL"
    assert Decimal(second["bid"]) < Decimal(second["ask"])
    assert Decimal(second["bid_size"]) == Decimal(100)
    assert set(first) == {
        "type", "session", "seq", "symbol", "bid", "ask", "bid_size", "ask_size", "ts_ns",
    }


def test_market_order_fills_and_updates_positions(client: Client, engine: VenueEngine) -> None:
    client.send(new_order("o1", "10"))
    accepted = client.expect_type("accepted", client_order_id="o1")
    filled = client.expect_type("filled", client_order_id="o1")
    assert accepted["venue_order_id"] == filled["venue_order_id"]
    assert filled["fill_id"].startswith("sim-")
    assert Decimal(filled["quantity"]) == 10
    assert Decimal(filled["leaves"]) == 0
    assert Decimal(filled["price"]) == Decimal("190.01")  # a buy takes the ask

    client.send({"type": "positions", "req_id": "p1"})
    positions = client.expect_type("positions", req_id="p1")["positions"]
    assert [(p["symbol"], Decimal(p["quantity"])) for p in positions] == [("AAPL", Decimal(10))]
    assert Decimal(positions[0]["average_price"]) == Decimal(filled["price"])

    client.send({"type": "executions", "req_id": "e1"})
    fills = client.expect_type("executions", req_id="e1")["fills"]
    assert [f["fill_id"] for f in fills] == [filled["fill_id"]]


def test_partial_fill_completes_on_the_next_step(client: Client, engine: VenueEngine) -> None:
    client.send(new_order("big", "150"))
    first = client.expect_type("filled", client_order_id="big")
    assert (Decimal(first["quantity"]), Decimal(first["leaves"])) == (Decimal(100), Decimal(50))
    client.send({"type": "open_orders", "req_id": "oo"})
    orders = client.expect_type("open_orders", req_id="oo")["orders"]
    assert [(o["client_order_id"], Decimal(o["leaves"]), o["status"]) for o in orders] == [
        ("big", Decimal(50), "partially_filled")
    ]
    engine.step()
    second = client.expect_type("filled", client_order_id="big")
    assert (Decimal(second["quantity"]), Decimal(second["leaves"])) == (Decimal(50), Decimal(0))
    assert second["fill_id"] != first["fill_id"]


def test_cancel_and_cancel_reject(client: Client) -> None:
    client.send(new_order("rest", "5", order_type="limit", limit_price="1"))
    client.expect_type("accepted", client_order_id="rest")
    client.send({"type": "cancel", "req_id": "c1", "client_order_id": "rest"})
    cancelled = client.expect_type("cancelled", client_order_id="rest")
    assert cancelled["symbol"] == "AAPL"
    client.send({"type": "cancel", "req_id": "c2", "client_order_id": "rest"})
    refused = client.expect_type("cancel_rejected", client_order_id="rest")
    assert "SIM-201" in refused["text"]
    client.send({"type": "open_orders", "req_id": "oo"})
    assert client.expect_type("open_orders", req_id="oo")["orders"] == []


def test_cancel_all_cancels_every_working_order(client: Client) -> None:
    for coid in ("l1", "l2", "l3"):
        client.send(new_order(coid, "1", order_type="limit", limit_price="2"))
        client.expect_type("accepted", client_order_id=coid)
    client.send({"type": "cancel_all", "req_id": "all"})
    done = client.expect_type("cancel_all_done", req_id="all")
    assert done["count"] == 3
    # the cancelled events were sent before the confirmation
    cancelled = {f["client_order_id"] for f in client.seen if f["type"] == "cancelled"}
    assert cancelled == {"l1", "l2", "l3"}


def test_venue_rejects_unknown_symbol(client: Client) -> None:
    client.send({**new_order("bad-sym", "1"), "symbol": "NOPE"})
    rejected = client.expect_type("rejected", client_order_id="bad-sym")
    assert rejected["reason"] == "unknown_symbol"
    assert "SIM-101" in rejected["text"]


def test_every_client_of_the_account_sees_its_events(
    context: zmq.Context[zmq.Socket[bytes]], venue: ZmqVenue, client: Client
) -> None:
    other = Client(context, venue.order_endpoint)
    try:
        other.send({"type": "ping", "req_id": "hello"})
        other.expect_type("pong", req_id="hello")
        client.send(new_order("shared", "1"))
        fill = other.expect_type("filled", client_order_id="shared")
        assert client.expect_type("filled", client_order_id="shared") == fill
    finally:
        other.close()


def test_a_gone_client_is_forgotten(
    context: zmq.Context[zmq.Socket[bytes]], venue: ZmqVenue, client: Client
) -> None:
    other = Client(context, venue.order_endpoint)
    other.send({"type": "ping", "req_id": "x"})
    other.expect_type("pong", req_id="x")
    client.send({"type": "ping", "req_id": "y"})
    client.expect_type("pong", req_id="y")
    assert venue.client_count == 2
    other.close()
    orders = iter(range(1, 1000))

    def pruned() -> bool:
        # each order event is offered to the gone client until the venue drops it
        n = next(orders)
        client.send(new_order(f"g{n}", "1"))
        client.expect_type("filled", client_order_id=f"g{n}")
        return venue.client_count == 1

    wait_for(pruned, 5.0, what="gone client dropped")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (b'{"type": "ping", "req_id": "m", "bogus": 1}', "invalid"),
        (b'{"type": "teleport", "req_id": "m"}', "invalid"),
        (b'{"type":"new_order","req_id":"m","client_order_id":"m","symbol":"AAPL",'
         b'"side":"buy","quantity":"NaN"}', "invalid"),
        (b'{"type":"new_order","req_id":"m","client_order_id":"m","symbol":"AAPL",'
         b'"side":"buy","quantity":"-5"}', "invalid"),
        (b'{"type":"new_order","req_id":"m","client_order_id":"m","symbol":"AAPL",'
         b'"side":"buy","quantity":"5","order_type":"limit"}', "invalid"),
        (b'[1, 2, 3]', "invalid"),
    ],
)
def test_malformed_requests_get_an_error_reply(
    client: Client, venue: ZmqVenue, engine: VenueEngine, payload: bytes, code: str
) -> None:
    client.send(payload)
    error = client.expect_type("error")
    assert error["code"] == code
    assert error["text"]
    if code == "invalid" and b'"req_id"' in payload:
        assert error["req_id"] == "m"
    assert venue.stats.malformed == 1
    assert engine.open_orders("zmq") == [] and engine.executions("zmq") == []
    client.send({"type": "ping", "req_id": "after"})
    client.expect_type("pong", req_id="after")


def test_multi_frame_request_is_refused(client: Client, venue: ZmqVenue) -> None:
    client.sock.send_multipart([b"", b'{"type": "ping"}'])
    assert client.expect_type("error")["code"] == "bad_frames"
    assert venue.stats.malformed == 1


def test_publish_raw_and_skip_sequence(venue: ZmqVenue, engine: VenueEngine, feed: Feed) -> None:
    venue.publish_raw([b"AAPL", b"\xffgarbage"])
    assert feed.read(lambda f: f[0] == b"AAPL") == [b"AAPL", b"\xffgarbage"]
    venue.publish_raw([b"lonely"])
    assert feed.read(lambda f: f[0] == b"lonely") == [b"lonely"]
    engine.step()
    assert feed.quote("AAPL")["seq"] == 1
    venue.skip_sequence("AAPL", 3)
    engine.step()
    assert feed.quote("AAPL")["seq"] == 5


def test_ipc_endpoints(tmp_path: Path, engine: VenueEngine) -> None:
    front = ZmqVenue(
        engine,
        heartbeat_s=0.1,
        market_endpoint=f"ipc://{tmp_path}/market",
        order_endpoint=f"ipc://{tmp_path}/orders",
    )
    assert front.start() == (0, 0)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        client = Client(context, front.order_endpoint)
        feed = Feed(context, front.market_endpoint)
        client.send({"type": "ping", "req_id": "ipc", "ts_ns": 42})
        pong = client.expect_type("pong", req_id="ipc")
        assert pong["ts_ns"] == 42 and pong["session"] == front.session
        assert feed.heartbeat()["venue"] == "sim"
    finally:
        context.destroy(linger=0)
        front.stop()


def test_restart_on_the_same_ports_keeps_the_account(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = ZmqVenue(VenueEngine("sim"), state_path=state, heartbeat_s=0.1)
    market_port, order_port = first.start()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        client = Client(context, first.order_endpoint)
        client.send(new_order("keep", "7", side="sell"))
        fill = client.expect_type("filled", client_order_id="keep")
        first.stop()
        assert state.exists()

        second = ZmqVenue(
            VenueEngine("sim"),
            market_port=market_port,
            order_port=order_port,
            state_path=state,
            heartbeat_s=0.1,
        )
        assert second.start() == (market_port, order_port)
        try:
            assert second.session != first.session
            client.send({"type": "positions", "req_id": "again"})  # same socket, reconnected
            positions = client.expect_type("positions", req_id="again", timeout_s=5)["positions"]
            assert [(p["symbol"], Decimal(p["quantity"])) for p in positions] == [
                ("AAPL", Decimal(-7))
            ]
            client.send({"type": "executions", "req_id": "ex"})
            fills = client.expect_type("executions", req_id="ex")["fills"]
            assert [f["fill_id"] for f in fills] == [fill["fill_id"]]
        finally:
            second.stop()
    finally:
        context.destroy(linger=0)
        first.stop()


def _free_port_pair() -> int:
    """A port N with N and N+1 both free on loopback (bounded attempts)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair")


def _run_venue_process(port: int, state_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "venues.zmq_venue", "--port", str(port),
         "--state-dir", str(state_dir), "--heartbeat", "0.1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the ready line, printed once both sockets are bound
    assert f"tcp://127.0.0.1:{port}" in line, (line, proc.stderr.read() if proc.stderr else "")
    return proc


def test_main_saves_the_account_on_sigterm(tmp_path: Path) -> None:
    port = _free_port_pair()
    endpoint = f"tcp://127.0.0.1:{port}"
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    proc = _run_venue_process(port, tmp_path)
    try:
        feed = Feed(context, f"tcp://127.0.0.1:{port + 1}")
        assert feed.heartbeat()["venue"] == "zmq-sim"
        assert feed.quote("AAPL")["seq"] >= 1  # the engine runner is stepping
        client = Client(context, endpoint)
        client.send(new_order("cli", "3"))
        client.expect_type("filled", client_order_id="cli")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert (tmp_path / "zmq-venue.json").exists()

        proc = _run_venue_process(port, tmp_path)
        client.send({"type": "positions", "req_id": "after-restart"})
        positions = client.expect_type("positions", req_id="after-restart", timeout_s=5)
        assert [(p["symbol"], Decimal(p["quantity"])) for p in positions["positions"]] == [
            ("AAPL", Decimal(3))
        ]
    finally:
        context.destroy(linger=0)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def test_stop_is_idempotent_and_releases_the_ports(engine: VenueEngine) -> None:
    front = ZmqVenue(engine)
    market_port, order_port = front.start()
    first_session = front.session
    front.stop()
    front.stop()
    front.start()  # the same object can run again, as a new session
    assert front.session != first_session
    front.stop()
    again = ZmqVenue(engine, market_port=market_port, order_port=order_port)
    assert again.start() == (market_port, order_port)
    assert again.running
    again.stop()
    assert not again.running
