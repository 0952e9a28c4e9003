"""The ZeroMQ front of the simulated venue: a market data feed and an order gateway.

``ZmqVenue`` binds two real sockets on loopback (or ipc://):

- a PUB socket carrying the engine's quotes, one ``[symbol, quote]`` message per quote with
  a per-topic sequence number, and a heartbeat on its own topic every ``heartbeat_s``;
- a ROUTER socket taking JSON requests from DEALER clients, answering each request to the
  client that asked and sending every order event to every client of the venue's one
  account.

Misbehaviour switches (``ZmqBehaviour``; ``tradeguard venue zmq --help``): orders dropped
in flight (never acknowledged), a refused or unanswered ``cancel_all``, and fills for
orders no client sent, and ``order_status`` requests never answered.

One I/O thread owns both sockets. Engine callbacks (from the engine runner thread or from
a request being handled) only queue outgoing frames and wake the I/O thread, so no socket
is ever touched by two threads. The wire format is in ``messages.zmq_wire`` and
docs/zmq-protocol.md.
"""

from __future__ import annotations

import argparse
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import zmq
from loguru import logger

from messages import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderStatus,
    Quote,
    RejectReason,
    Side,
    SubmitOrder,
)
from messages import zmq_wire as wire
from venues.store import store_path_for

if TYPE_CHECKING:
    from messages import OrderEvent
    from venues.engine import VenueEngine

LOOPBACK_HOSTS = frozenset({"127.0.0.1"})
"""Hosts the venue may bind: it is a local simulator, never reachable from outside."""

CODE_EXPIRED = "SIM-106"
"""The venue's code for an order that arrived at or after its ``expire_ns``."""

DEFAULT_ACCOUNT = "zmq"
"""Engine account the venue trades for."""

_MAX_READS_PER_CYCLE = 256
"""Requests read per I/O cycle before queued output is flushed again."""

_log = logger.bind(channel="main", component="zmq_venue")


CANCEL_ALL_MODES = frozenset({"accept", "refuse", "ignore"})
"""``ZmqBehaviour.cancel_all``: carry out, refuse (``cancel_all_rejected``), or never answer."""


class ZmqBehaviour(msgspec.Struct, frozen=True, kw_only=True):
    """How the ZeroMQ venue behaves where real venues differ from a kind simulator.

    The defaults are the venue as it always was. Rates are probabilities (per order; per
    engine step for fills from elsewhere) drawn from generators seeded by ``seed``.
    """

    drop_rate: float = 0.0
    """Share of ``new_order`` requests dropped in flight: no event ever, never working."""
    answer_status: bool = True
    """Answer ``order_status`` requests. ``False``: they are read and never answered."""
    cancel_all: str = "accept"
    """``accept``, ``refuse`` (reply ``cancel_all_rejected``, nothing cancelled) or
    ``ignore`` (no reply, nothing cancelled)."""
    foreign_fill_rate: float = 0.0
    """Chance per engine step of a fill for an order no client sent."""
    seed: int = 7
    """Seed of every draw above."""

    def __post_init__(self) -> None:
        if self.cancel_all not in CANCEL_ALL_MODES:
            raise ValueError(
                f"cancel_all: expected one of {sorted(CANCEL_ALL_MODES)}, got {self.cancel_all!r}")
        for name in ("drop_rate", "foreign_fill_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: must be within [0, 1], got {value}")


@dataclass
class VenueStats:
    """Counters of one running venue (read them from any thread)."""

    requests: int = 0
    """Requests read, well-formed or not."""
    malformed: int = 0
    """Requests answered with an error reply."""
    published: int = 0
    """Market data messages published (quotes, heartbeats, raw frames)."""
    events_sent: int = 0
    """Order events and replies sent to clients."""
    send_failures: int = 0
    """Sends refused because a client is gone or its queue is full."""


class ZmqVenue:
    """Serve one ``VenueEngine`` over ZeroMQ: PUB for market data, ROUTER for orders."""

    def __init__(
        self,
        engine: VenueEngine,
        host: str = "127.0.0.1",
        market_port: int = 0,
        order_port: int = 0,
        state_path: Path | None = None,
        heartbeat_s: float = 0.5,
        *,
        account: str = DEFAULT_ACCOUNT,
        market_endpoint: str | None = None,
        order_endpoint: str | None = None,
        behaviour: ZmqBehaviour | None = None,
    ) -> None:
        """Prepare the venue; nothing is bound before ``start()``.

        Port 0 binds a free port. ``market_endpoint``/``order_endpoint`` (e.g. an
        ``ipc://`` path) replace host and port when given. With ``state_path`` (a JSON
        file name) the engine keeps its state in the SQLite store beside it
        (``venues.store``) from start to stop, every order event committed before it is
        reported; stop also writes the JSON snapshot.
        """
        if host not in LOOPBACK_HOSTS:
            raise ValueError(f"host: the simulated venue binds loopback only, got {host!r}")
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s: must be positive, got {heartbeat_s}")
        self.engine = engine
        self.account = account
        self.behaviour = behaviour if behaviour is not None else ZmqBehaviour()
        self._drop_draw = random.Random(f"{self.behaviour.seed}:drop")
        self._foreign_draw = random.Random(f"{self.behaviour.seed}:foreign")
        self.dropped: list[str] = []
        """Client order ids of the orders dropped in flight, oldest first."""
        self.expired_on_arrival: list[str] = []
        """Client order ids of the orders refused because they arrived after ``expire_ns``."""
        self.misbehaviours: dict[str, int] = {}
        """How often each switch acted (drop, cancel_all_refused, ...)."""
        self.state_path = state_path
        self.heartbeat_s = heartbeat_s
        self.session = uuid.uuid4().hex[:12]
        """Identifier of this run of the venue, carried by market data frames and pongs."""
        self.stats = VenueStats()
        """Request, error and send counters."""
        self._market_bind = market_endpoint or f"tcp://{host}:{market_port or '*'}"
        self._order_bind = order_endpoint or f"tcp://{host}:{order_port or '*'}"
        self.market_endpoint = ""
        """Where the market data socket is bound (known after ``start()``)."""
        self.order_endpoint = ""
        """Where the order socket is bound (known after ``start()``)."""
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._pub: zmq.Socket[bytes] | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._wake_pull: zmq.Socket[bytes] | None = None
        self._wake_push: zmq.Socket[bytes] | None = None
        self._wake_lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._seq: dict[str, int] = {}
        self._clients: dict[bytes, None] = {}  # insertion-ordered set of DEALER identities
        self._order_states: dict[str, str] = {}  # client_order_id -> new | working | done
        self._cancel_pending: set[str] = set()
        self._state_lock = threading.Lock()
        self._handlers = self._request_handlers()
        self._started_once = False

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> tuple[int, int]:
        """Load state, bind both sockets, start the I/O thread; return (market, order) ports.

        A port is 0 for a non-TCP endpoint.
        """
        if self._thread is not None:
            raise RuntimeError("venue already started")
        if self._started_once:  # a new run is a new session: sequences start again
            self.session = uuid.uuid4().hex[:12]
            self._seq.clear()
            self._clients.clear()
        self._started_once = True
        if self.state_path is not None:
            store = store_path_for(self.state_path)
            if not store.exists() and self.state_path.exists():
                self.engine.load(self.state_path)  # an older version's JSON
            self.engine.persist(store)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._context = context
        try:
            self._pub = context.socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 0)
            self._pub.setsockopt(zmq.SNDHWM, 100_000)
            self._pub.bind(self._market_bind)
            self._router = context.socket(zmq.ROUTER)
            self._router.setsockopt(zmq.LINGER, 0)
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._router.bind(self._order_bind)
            wake = f"inproc://zmq-venue-wake-{id(self)}"
            self._wake_pull = context.socket(zmq.PULL)
            self._wake_pull.setsockopt(zmq.LINGER, 0)
            self._wake_pull.bind(wake)
            self._wake_push = context.socket(zmq.PUSH)
            self._wake_push.setsockopt(zmq.LINGER, 0)
            self._wake_push.setsockopt(zmq.SNDHWM, 1)
            self._wake_push.connect(wake)
        except zmq.ZMQError:
            self._close_sockets()
            if self.state_path is not None:
                self.engine.close_store()
            raise
        self.market_endpoint = _bound(self._pub)
        self.order_endpoint = _bound(self._router)
        self.engine.add_quote_listener(self._on_quotes)
        self.engine.add_order_listener(self._on_order_event)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="zmq-venue-io", daemon=True)
        self._thread.start()
        _log.bind(market=self.market_endpoint, orders=self.order_endpoint).info("zmq venue up")
        return _port_of(self.market_endpoint), _port_of(self.order_endpoint)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the I/O thread, close every socket, save state; idempotent."""
        thread = self._thread
        if thread is None:
            return
        self.engine.remove_quote_listener(self._on_quotes)
        self.engine.remove_order_listener(self._on_order_event)
        self._stopping.set()
        self._wake()
        thread.join(timeout)
        self._thread = None
        if thread.is_alive():
            _log.error("zmq venue I/O thread did not stop in time; its sockets are left open")
        else:
            self._close_sockets()
        if self.state_path is not None:
            self.engine.close_store()
            self.engine.save(self.state_path)  # a readable snapshot of a clean stop
        _log.info("zmq venue down")

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def client_count(self) -> int:
        """DEALER clients currently known to the venue."""
        return len(self._clients)

    # ---- fault hooks -----------------------------------------------------------------------

    def publish_raw(self, frames: Sequence[bytes]) -> None:
        """Publish ``frames`` as one market data message, exactly as given (fault injection)."""
        self._enqueue("raw", [bytes(frame) for frame in frames])

    def skip_sequence(self, topic: str, count: int = 1) -> None:
        """Advance ``topic``'s sequence by ``count`` without publishing (a simulated loss)."""
        self._enqueue("skip", (topic, count))

    # ---- engine callbacks (any thread) -------------------------------------------------------

    def _on_quotes(self, quotes: list[Quote]) -> None:
        rate = self.behaviour.foreign_fill_rate
        if rate and self._foreign_draw.random() < rate:
            draw = self._foreign_draw
            try:
                self.engine.external_fill(
                    self.account, draw.choice(self.engine.symbols),
                    Side.BUY if draw.random() < 0.5 else Side.SELL, Decimal(draw.randint(1, 10)))
                self._count("foreign_fill")
            except ValueError:
                _log.exception("fill from elsewhere failed")
        for quote in quotes:
            self._enqueue("quote", quote)

    def _count(self, switch: str) -> None:
        self.misbehaviours[switch] = self.misbehaviours.get(switch, 0) + 1

    def foreign_fill(self, symbol: str, side: Side, quantity: Decimal,
                     price: Decimal | None = None) -> OrderFilled:
        """A fill on the venue's account for an order no client sent (every client hears it)."""
        return self.engine.external_fill(self.account, symbol, side, quantity, price)

    def _on_order_event(self, account: str, event: OrderEvent) -> None:
        if account != self.account:
            return
        frame = self._event_frame(event)
        self._enqueue("event", wire.encoder.encode(frame))

    def _event_frame(self, event: OrderEvent) -> wire.Frame:
        coid = event.client_order_id
        with self._state_lock:
            if isinstance(event, OrderAccepted):
                self._order_states[coid] = "working"
                return wire.AcceptedEvent(
                    client_order_id=coid,
                    symbol=event.symbol,
                    venue_order_id=event.venue_order_id,
                    ts_ns=event.ts_ns or time.time_ns(),
                )
            if isinstance(event, OrderFilled):
                if event.leaves_quantity == 0:
                    self._order_states[coid] = "done"
                return _filled_frame(event)
            if isinstance(event, OrderCancelled):
                self._order_states[coid] = "done"
                self._cancel_pending.discard(coid)
                return wire.CancelledEvent(
                    client_order_id=coid,
                    symbol=event.symbol,
                    text=event.text,
                    ts_ns=event.ts_ns or time.time_ns(),
                    expired=event.expired,
                )
            # OrderRejected: a refused cancel when a cancel is pending and the order is not
            # waiting for its own acceptance; otherwise the new order was refused.
            state = self._order_states.get(coid)
            if coid in self._cancel_pending and state != "new":
                self._cancel_pending.discard(coid)
                return wire.CancelRejectedEvent(
                    client_order_id=coid, text=event.text, ts_ns=event.ts_ns or time.time_ns()
                )
            self._order_states[coid] = "done"
            return wire.RejectedEvent(
                client_order_id=coid,
                symbol=event.symbol,
                reason=event.reason,
                text=event.text,
                ts_ns=event.ts_ns or time.time_ns(),
            )

    # ---- the I/O thread ------------------------------------------------------------------------

    def _enqueue(self, kind: str, item: Any) -> None:
        self._outbox.put((kind, item))
        if threading.current_thread() is not self._thread:
            self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_push is None:
                return
            try:
                self._wake_push.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # a wake-up is already pending (or the venue is stopping)

    def _run(self) -> None:
        assert self._router is not None and self._wake_pull is not None
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_pull, zmq.POLLIN)
        next_heartbeat = time.monotonic()
        while not self._stopping.is_set():
            try:
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._publish_heartbeat()
                    next_heartbeat = now + self.heartbeat_s
                timeout_ms = max(0, int((next_heartbeat - now) * 1000))
                ready = dict(poller.poll(timeout_ms))
                if self._wake_pull in ready:
                    _drain(self._wake_pull)
                if self._router in ready:
                    self._read_requests()
                self._flush()
            except Exception:  # one bad cycle must not take the venue down
                _log.exception("zmq venue I/O cycle failed")
        self._flush()

    def _flush(self) -> None:
        while True:
            try:
                kind, item = self._outbox.get_nowait()
            except queue.Empty:
                return
            if kind == "quote":
                self._publish_quote(item)
            elif kind == "event":
                self._broadcast(item)
            elif kind == "reply":
                identity, payload = item
                self._send_to(identity, payload)
            elif kind == "raw":
                self._publish(item)
            elif kind == "skip":
                topic, count = item
                self._seq[topic] = self._seq.get(topic, 0) + count

    def _next_seq(self, topic: str) -> int:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        return seq

    def _publish(self, frames: list[bytes]) -> None:
        assert self._pub is not None
        try:
            self._pub.send_multipart(frames, zmq.NOBLOCK)
            self.stats.published += 1
        except zmq.ZMQError as exc:
            self.stats.send_failures += 1
            _log.bind(error=str(exc)).debug("market data frame not sent")

    def _publish_quote(self, quote: Quote) -> None:
        frame = wire.QuoteFrame(
            session=self.session,
            seq=self._next_seq(quote.symbol),
            symbol=quote.symbol,
            bid=quote.bid,
            ask=quote.ask,
            bid_size=quote.bid_size,
            ask_size=quote.ask_size,
            ts_ns=quote.ts_ns or time.time_ns(),
        )
        self._publish([quote.symbol.encode(), wire.encoder.encode(frame)])

    def _publish_heartbeat(self) -> None:
        frame = wire.HeartbeatFrame(
            session=self.session,
            seq=self._next_seq(wire.HEARTBEAT_TOPIC),
            venue=self.engine.venue,
            interval_s=self.heartbeat_s,
            ts_ns=time.time_ns(),
        )
        self._publish([wire.HEARTBEAT_TOPIC.encode(), wire.encoder.encode(frame)])

    def _broadcast(self, payload: bytes) -> None:
        for identity in list(self._clients):
            self._send_to(identity, payload)

    def _send_to(self, identity: bytes, payload: bytes) -> None:
        assert self._router is not None
        try:
            self._router.send_multipart([identity, payload], zmq.NOBLOCK)
            self.stats.events_sent += 1
        except zmq.ZMQError as exc:
            self.stats.send_failures += 1
            if exc.errno == zmq.EHOSTUNREACH:
                self._clients.pop(identity, None)
                _log.bind(client=identity.hex()).info("client gone")
            else:
                _log.bind(client=identity.hex(), error=str(exc)).warning("reply not sent")

    # ---- requests ------------------------------------------------------------------------

    def _read_requests(self) -> None:
        assert self._router is not None
        for _ in range(_MAX_READS_PER_CYCLE):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.stats.requests += 1
            identity = frames[0]
            if identity not in self._clients:
                self._clients[identity] = None
                _log.bind(client=identity.hex()).info("client joined")
            if len(frames) != 2:
                self._error(identity, "", "bad_frames", f"expected 1 frame, got {len(frames) - 1}")
                continue
            self._handle(identity, frames[1])

    def _handle(self, identity: bytes, payload: bytes) -> None:
        try:
            request = wire.request_decoder.decode(payload)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
            self._error(identity, _req_id_of(payload), "invalid", str(exc))
            return
        except msgspec.DecodeError as exc:
            self._error(identity, "", "bad_json", str(exc))
            return
        try:
            reply = self._handlers[type(request)](request)
        except ValueError as exc:
            self._error(identity, request.req_id, "invalid", str(exc))
        except Exception as exc:  # one request must not take the venue down
            _log.exception("request failed")
            self._error(identity, request.req_id, "internal", f"{type(exc).__name__}: {exc}")
        else:
            if reply is not None:
                self._reply(identity, reply)

    def _request_handlers(self) -> dict[type, Callable[[Any], wire.Frame | None]]:
        """Request type -> handler; a handler returns the reply for the asking client."""
        return {
            wire.NewOrderRequest: self._on_new_order,
            wire.CancelRequest: self._on_cancel,
            wire.CancelAllRequest: self._on_cancel_all,
            wire.PositionsRequest: self._on_positions,
            wire.ExecutionsRequest: self._on_executions,
            wire.OpenOrdersRequest: self._on_open_orders,
            wire.PingRequest: self._on_ping,
            wire.OrderStatusRequest: self._on_order_status,
        }

    def _on_new_order(self, request: wire.NewOrderRequest) -> None:
        if request.expire_ns is not None and self._refused_expired(request):
            return
        order = SubmitOrder(
            client_order_id=request.client_order_id,
            venue=self.engine.venue,
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            time_in_force=request.time_in_force,
            reduce_only=request.reduce_only,
            source=request.source or "zmq",
            created_ns=time.time_ns(),
        )
        rate = self.behaviour.drop_rate
        if rate and self._drop_draw.random() < rate:
            self._count("drop")
            self.dropped.append(order.client_order_id)
            _log.bind(client_order_id=order.client_order_id).info("order dropped in flight")
            return
        with self._state_lock:
            self._order_states.setdefault(order.client_order_id, "new")
        self.engine.submit(self.account, order)  # events arrive through the order listener

    def _refused_expired(self, request: wire.NewOrderRequest) -> bool:
        """Refuse an order that arrives at or after its ``expire_ns`` (a ``rejected`` event to
        every client; the venue never knew the order)."""
        now = time.time_ns()
        if request.expire_ns is None or now < request.expire_ns:
            return False
        late_ms = (now - request.expire_ns) // 1_000_000
        self.expired_on_arrival.append(request.client_order_id)
        _log.bind(client_order_id=request.client_order_id).info(
            f"order arrived {late_ms} ms after its expiry")
        self._enqueue("event", wire.encoder.encode(wire.RejectedEvent(
            client_order_id=request.client_order_id, symbol=request.symbol, reason=RejectReason.VENUE,
            text=f"{CODE_EXPIRED} expired {late_ms} ms before it arrived", ts_ns=now,
        )))
        return True

    def _on_cancel(self, request: wire.CancelRequest) -> None:
        with self._state_lock:
            self._cancel_pending.add(request.client_order_id)
        self.engine.cancel(self.account, request.client_order_id)

    def _on_cancel_all(self, request: wire.CancelAllRequest) -> wire.Frame | None:
        mode = self.behaviour.cancel_all
        if mode == "ignore":
            self._count("cancel_all_ignored")
            return None
        if mode == "refuse":
            self._count("cancel_all_refused")
            return wire.CancelAllRejectedReply(req_id=request.req_id, ts_ns=time.time_ns(),
                                               text="cancel_all refused by the venue")
        count = self.engine.cancel_all(self.account)
        return wire.CancelAllDoneReply(req_id=request.req_id, count=count, ts_ns=time.time_ns())

    def _on_positions(self, request: wire.PositionsRequest) -> wire.Frame:
        positions = tuple(
            wire.PositionRecord(symbol=p.symbol, quantity=p.quantity, average_price=p.average_price)
            for p in self.engine.positions(self.account)
        )
        return wire.PositionsReply(req_id=request.req_id, positions=positions, ts_ns=time.time_ns())

    def _on_executions(self, request: wire.ExecutionsRequest) -> wire.Frame:
        fills = tuple(_filled_frame(fill) for fill in self.engine.executions(self.account))
        return wire.ExecutionsReply(req_id=request.req_id, fills=fills, ts_ns=time.time_ns())

    def _on_open_orders(self, request: wire.OpenOrdersRequest) -> wire.Frame:
        orders = tuple(
            wire.OpenOrderRecord(
                client_order_id=w.order.client_order_id,
                venue_order_id=w.venue_order_id,
                symbol=w.order.symbol,
                side=w.order.side,
                quantity=w.order.quantity,
                order_type=w.order.order_type,
                limit_price=w.order.limit_price,
                stop_price=w.order.stop_price,
                time_in_force=w.order.time_in_force,
                filled=w.filled,
                leaves=w.leaves,
                status=w.status,
            )
            for w in self.engine.open_orders(self.account)
        )
        return wire.OpenOrdersReply(req_id=request.req_id, orders=orders, ts_ns=time.time_ns())

    def _on_order_status(self, request: wire.OrderStatusRequest) -> wire.Frame | None:
        if not self.behaviour.answer_status:
            self._count("status_ignored")
            return None
        status = self.engine.order_status(self.account, request.client_order_id)
        if status is None:
            with self._state_lock:  # received, not yet at the book (engine latency)
                pending = self._order_states.get(request.client_order_id) == "new"
            return wire.OrderStatusReply(
                req_id=request.req_id, known=pending, ts_ns=time.time_ns(),
                client_order_id=request.client_order_id,
                status=OrderStatus.PENDING if pending else None)
        return wire.OrderStatusReply(
            req_id=request.req_id,
            client_order_id=request.client_order_id,
            known=True,
            status=status.status,
            venue_order_id=status.venue_order_id,
            symbol=status.order.symbol,
            quantity=status.order.quantity,
            filled=status.filled,
            leaves=status.leaves,
            average_price=status.average_price,
            ts_ns=time.time_ns(),
        )

    def _on_ping(self, request: wire.PingRequest) -> wire.Frame:
        return wire.PongReply(
            req_id=request.req_id,
            ts_ns=request.ts_ns,
            venue_ts_ns=time.time_ns(),
            session=self.session,
            venue=self.engine.venue,
        )

    def _reply(self, identity: bytes, frame: wire.Frame) -> None:
        # Through the outbox, so a reply never overtakes the events queued before it.
        self._enqueue("reply", (identity, wire.encoder.encode(frame)))

    def _error(self, identity: bytes, req_id: str, code: str, text: str) -> None:
        self.stats.malformed += 1
        _log.bind(client=identity.hex(), code=code, text=text).warning("bad request")
        self._reply(identity, wire.ErrorReply(req_id=req_id, code=code, text=text))

    def _close_sockets(self) -> None:
        with self._wake_lock:
            for sock in (self._pub, self._router, self._wake_pull, self._wake_push):
                if sock is not None:
                    sock.close(linger=0)
            self._pub = self._router = self._wake_pull = self._wake_push = None
        if self._context is not None:
            self._context.term()
            self._context = None


def _filled_frame(fill: OrderFilled) -> wire.FilledEvent:
    return wire.FilledEvent(
        client_order_id=fill.client_order_id,
        fill_id=fill.fill_id,
        symbol=fill.symbol,
        side=fill.side,
        quantity=fill.quantity,
        price=fill.price,
        leaves=fill.leaves_quantity,
        venue_order_id=fill.venue_order_id,
        ts_ns=fill.ts_ns or time.time_ns(),
    )


def _req_id_of(payload: bytes) -> str:
    """Best-effort ``req_id`` of a request that failed validation, for the error reply."""
    try:
        raw = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return ""
    value = raw.get("req_id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else ""


def _drain(sock: zmq.Socket[bytes]) -> None:
    while True:
        try:
            sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def _bound(sock: zmq.Socket[bytes]) -> str:
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)


def _port_of(endpoint: str) -> int:
    if not endpoint.startswith("tcp://"):
        return 0
    return int(endpoint.rsplit(":", 1)[1])


# ---- command line: tradeguard venue zmq --port N --state-dir DIR --------------------------------


def _parser() -> argparse.ArgumentParser:
    from venues.process import add_common_options

    parser = argparse.ArgumentParser(
        prog="tradeguard venue zmq",
        description="Run the simulated venue behind a ZeroMQ feed (port N+1) and gateway (N).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_options(parser, port=5600, state_dir=None, state_help="keep the account here",
                       name="zmq-sim", account=DEFAULT_ACCOUNT)
    parser.add_argument("--heartbeat", type=float, default=0.5, help="seconds between heartbeats")
    misbehave = parser.add_argument_group(
        "misbehaviour", "what real venues do that a kind simulator does not (rates are 0..1)")
    misbehave.add_argument("--drop-rate", "--drop-order-rate", dest="drop_rate", type=float,
                           default=0.0,
                           help="share of orders dropped in flight (never acknowledged)")
    misbehave.add_argument("--no-status-answers", action="store_true",
                           help="read order_status requests and never answer them")
    misbehave.add_argument("--cancel-all", choices=sorted(CANCEL_ALL_MODES), default="accept",
                           help="carry out, refuse or ignore cancel_all requests")
    misbehave.add_argument("--foreign-fill-rate", type=float, default=0.0,
                           help="chance per step of a fill for an order no client sent")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run engine, engine runner and ZeroMQ front until SIGTERM or SIGINT."""
    from venues.engine import EngineConfig, VenueEngine, step_volatility_bps
    from venues.process import serve_until_signalled, venue_argv

    parser = _parser()
    args = parser.parse_args(venue_argv(argv))
    state_path = args.state_dir / "zmq-venue.json" if args.state_dir is not None else None
    try:
        behaviour = ZmqBehaviour(drop_rate=args.drop_rate, answer_status=not args.no_status_answers,
                                 cancel_all=args.cancel_all,
                                 foreign_fill_rate=args.foreign_fill_rate, seed=args.seed)
        engine = VenueEngine(args.name, EngineConfig(
            seed=args.seed, volatility_bps=step_volatility_bps(args.annual_volatility, args.interval)))
        venue = ZmqVenue(
            engine,
            host=args.host,
            market_port=args.port + 1,
            order_port=args.port,
            heartbeat_s=args.heartbeat,
            account=args.account,
            behaviour=behaviour,
        )  # the state is kept by serve_until_signalled, event by event
    except ValueError as exc:
        parser.error(str(exc))

    def start_front() -> str:
        venue.start()
        return f"zmq venue {args.name}: orders {venue.order_endpoint} market {venue.market_endpoint}"

    return serve_until_signalled(engine, interval_s=args.interval, state_path=state_path,
                                 start_front=start_front, stop_front=venue.stop)

if __name__ == "__main__":
    raise SystemExit(main())
